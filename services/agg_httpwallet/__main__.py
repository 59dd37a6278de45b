"""``python -m agg_httpwallet`` (also ``aggregator httpwallet``): run the reference HTTP
operator wallet for the tenants file's HTTP operators (or the ones given with
``--operator``), on ``AGG_HTTPWALLET_HOST``:``AGG_HTTPWALLET_PORT`` (127.0.0.1:9186).
One uvicorn worker on uvloop; ``/metrics`` and ``/healthz`` on the same port. The deliberate
defects of the certification kit's tests (``AGG_WALLET_BROKEN``) start only with
``AGG_WALLET_BROKEN_ENABLED=true`` (docs/certification.md); a refused start exits 2. SIGTERM
finishes the calls in flight and exits 0."""

from __future__ import annotations

import argparse
import signal
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="bind address (AGG_HTTPWALLET_HOST)")
    parser.add_argument("--port", type=int, default=None, help="port (AGG_HTTPWALLET_PORT)")
    parser.add_argument(
        "--operator",
        action="append",
        dest="operators",
        metavar="ID",
        help="serve this operator only (repeatable; default: every operator with an HTTP wallet)",
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from agg_config.settings import load_settings
    from agg_config.tenants import load_tenants
    from agg_httpwallet.app import build_app
    from agg_obs.logs import configure_logging, get_logger

    configure_logging()
    settings = load_settings()
    tenants = load_tenants(settings.tenants_file)
    try:
        app = build_app(settings, tenants, args.operators)
    except ValueError as exc:
        get_logger("httpwallet").error("httpwallet_refused", reason=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # uvicorn finishes the calls in flight on SIGTERM, then re-raises the signal to the
    # handler it found: a no-op one, so that a requested stop exits 0
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(
        app,
        host=args.host or settings.httpwallet_host,
        port=settings.httpwallet_port if args.port is None else args.port,
        loop="uvloop",
        http="httptools",
        workers=1,
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=75,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aggregator httpwallet", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
