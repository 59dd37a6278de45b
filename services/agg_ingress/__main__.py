"""``python -m agg_ingress`` (also ``aggregator ingress``): run one ingress instance.

One uvicorn worker on uvloop with the httptools parser; scale by running more instances
(each joins the outcome consumer group and owns its own reply partitions)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="bind address (AGG_INGRESS_HOST)")
    parser.add_argument("--port", type=int, default=None, help="HTTP port (AGG_INGRESS_PORT)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="extra /metrics port (AGG_INGRESS_METRICS_PORT; 0 disables; /metrics is always "
        "served on the HTTP port too)",
    )
    parser.add_argument("--instance-id", default=None, help="reply_to name (default: random)")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from agg_config.settings import InsecureSecretError, load_settings
    from agg_config.tenants import load_tenants
    from agg_ingress.app import build_app
    from agg_obs.logs import configure_logging, get_logger
    from agg_obs.metrics import serve_metrics

    configure_logging()
    settings = load_settings()
    tenants = load_tenants(settings.tenants_file)
    try:
        app = build_app(settings, tenants, args.instance_id)
    except InsecureSecretError as exc:
        get_logger("ingress").error("ingress_refused", reason=str(exc))
        print(f"error: the ingress does not start: {exc}", file=sys.stderr)
        return 2
    metrics_port = settings.ingress_metrics_port if args.metrics_port is None else args.metrics_port
    serve_metrics(metrics_port, addr=settings.ingress_host)
    uvicorn.run(
        app,
        host=args.host or settings.ingress_host,
        port=args.port or settings.ingress_port,
        loop="uvloop",
        http="httptools",
        workers=1,
        lifespan="on",
        access_log=False,
        log_level="warning",
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aggregator ingress", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
