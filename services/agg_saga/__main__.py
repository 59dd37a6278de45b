"""``python -m agg_saga`` (also ``aggregator saga``): run one saga worker."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import uvloop

from agg_config.settings import load_settings
from agg_config.tenants import load_tenants
from agg_obs.logs import configure_logging
from agg_obs.metrics import serve_metrics
from agg_saga.worker import SagaWorker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aggregator saga", description=__doc__)
    parser.add_argument("--client-id", default=f"saga-{os.getpid()}")
    parser.add_argument("--metrics-port", type=int, default=None, help="0 disables /metrics")
    args = parser.parse_args(argv)
    configure_logging()
    settings = load_settings()
    tenants = load_tenants(settings.tenants_file)
    port = settings.saga_metrics_port if args.metrics_port is None else args.metrics_port
    serve_metrics(port)

    async def run() -> None:
        # aiokafka clients belong to the running loop: build the worker inside it
        worker = SagaWorker(
            settings,
            [o.id for o in tenants.operators],
            client_id=args.client_id,
            round_auto_close_ms={p.id: p.round_auto_close_s * 1000 for p in tenants.providers},
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await worker.run(stop)

    uvloop.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
