"""``python -m agg_bridge`` (also ``aggregator bridge``): run the HTTP wallet bridge.

Serves every operator of the tenants whose wallet mode is ``http`` (or the ones given with
``--operator``): the tenants file's, then the config topic's document, which it follows
without a restart (``docs/configuration.md``). Connection settings come from the ``AGG_*``
environment and ``var/stack.env`` like every service; each operator's protocol, credentials,
timeout, retries, concurrency and breaker from its ``wallet`` entry. ``/metrics`` on
``AGG_BRIDGE_METRICS_PORT`` (9185). SIGTERM or SIGINT finishes the current batch, commits it
and exits 0; exit 2 when the configuration is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys

import uvloop


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--operator",
        action="append",
        dest="operators",
        metavar="ID",
        help="bridge this operator only (repeatable; default: every operator with an HTTP wallet)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="port of /metrics (AGG_BRIDGE_METRICS_PORT; 0 disables)",
    )
    parser.add_argument(
        "--metrics-host", default="127.0.0.1", help="address of that port (default 127.0.0.1)"
    )
    parser.add_argument("--client-id", default=f"bridge-{os.getpid()}", help="Kafka client id")
    parser.add_argument(
        "--instance-id",
        default=None,
        help="static group membership id: a restarted process with the same id takes its "
        "partitions back at once instead of after the session timeout",
    )


def run(args: argparse.Namespace) -> int:
    from agg_bridge.service import BridgeService
    from agg_config.settings import load_settings
    from agg_config.tenants import load_tenants
    from agg_obs.logs import configure_logging, get_logger
    from agg_obs.metrics import serve_metrics

    configure_logging()
    log = get_logger("bridge")
    settings = load_settings()
    tenants = load_tenants(settings.tenants_file)
    port = settings.bridge_metrics_port if args.metrics_port is None else args.metrics_port

    async def serve() -> None:
        service = BridgeService(settings, tenants, args.operators,
                                client_id=args.client_id, instance_id=args.instance_id)  # fmt: skip
        serve_metrics(port, addr=args.metrics_host)
        if port:
            log.event("metrics_listening", host=args.metrics_host, port=port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await service.run(stop)

    try:
        uvloop.run(serve())
    except ValueError as exc:
        log.error("bridge_refused", reason=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception:
        log.error("bridge_failed", exc_info=True)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aggregator bridge",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
