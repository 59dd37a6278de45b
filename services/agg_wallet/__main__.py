"""``python -m agg_wallet`` (also ``aggregator wallet``): run the reference operator wallet.

Serves every operator of the tenants whose wallet mode is ``kafka`` (or the ones given with
``--operator``): the tenants file's, then the config topic's document, which it follows
without a restart (``docs/configuration.md``). Connection settings come from the ``AGG_*``
environment and ``var/stack.env`` like every service; the fault-test switches from ``--mode`` /
``--delay-ms`` or ``AGG_WALLET_MODE`` / ``AGG_WALLET_DELAY_MS``, and at runtime from the
control endpoint (see :mod:`agg_wallet.control`). The deliberate defects of the certification
kit's tests (``AGG_WALLET_BROKEN``) start only with ``AGG_WALLET_BROKEN_ENABLED=true``
(docs/certification.md); a refused start exits 2. SIGTERM or SIGINT finishes the current
batch, commits it and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys

import uvloop

from agg_wallet.service import DELAY_MS_MAX, Mode


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--operator",
        action="append",
        dest="operators",
        metavar="ID",
        help="serve this operator only (repeatable; default: every operator with a Kafka wallet)",
    )
    parser.add_argument(
        "--mode",
        choices=[m.value for m in Mode],
        default=os.environ.get("AGG_WALLET_MODE", Mode.NORMAL.value),
        help="fault-test mode at start (AGG_WALLET_MODE; default normal)",
    )
    parser.add_argument(
        "--delay-ms",
        type=int,
        default=int(os.environ.get("AGG_WALLET_DELAY_MS", "0")),
        help=f"reply delay of the slow mode, 0..{DELAY_MS_MAX} (AGG_WALLET_DELAY_MS)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="port of /metrics, /healthz and /mode (AGG_WALLET_METRICS_PORT; 0 disables)",
    )
    parser.add_argument(
        "--metrics-host", default="127.0.0.1", help="address of that port (default 127.0.0.1)"
    )
    parser.add_argument("--client-id", default=f"wallet-{os.getpid()}", help="Kafka client id")
    parser.add_argument(
        "--instance-id",
        default=None,
        help="static group membership id: a restarted process with the same id takes its "
        "partitions back at once instead of after the session timeout",
    )


def run(args: argparse.Namespace) -> int:
    from agg_config.settings import load_settings
    from agg_config.tenants import load_tenants
    from agg_obs.logs import configure_logging, get_logger
    from agg_wallet.control import ControlServer
    from agg_wallet.service import Switches, WalletService

    configure_logging()
    log = get_logger("wallet")
    settings = load_settings()
    tenants = load_tenants(settings.tenants_file)
    port = settings.wallet_metrics_port if args.metrics_port is None else args.metrics_port

    async def serve() -> None:
        # the Kafka clients belong to the running loop: build the service inside it
        switches = Switches(Mode(args.mode), args.delay_ms)
        service = WalletService(
            settings, tenants, args.operators, switches=switches,
            client_id=args.client_id, instance_id=args.instance_id,
        )  # fmt: skip
        control = None
        if port:
            control = ControlServer(switches, service.ready, host=args.metrics_host, port=port)
            await control.start()
            log.event("control_listening", host=args.metrics_host, port=control.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await service.run(stop)
        finally:
            if control is not None:
                await control.stop()

    try:
        uvloop.run(serve())
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception:
        log.error("wallet_failed", exc_info=True)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aggregator wallet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    if not 0 <= args.delay_ms <= DELAY_MS_MAX:
        parser.error(f"--delay-ms must be within 0..{DELAY_MS_MAX}")
    return run(args)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
