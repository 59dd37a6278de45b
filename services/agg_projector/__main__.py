"""``python -m agg_projector`` (also ``aggregator projector``): run the projector."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import uvloop

from agg_config.settings import load_settings
from agg_obs.logs import configure_logging
from agg_obs.metrics import serve_metrics
from agg_projector.projector import Projector


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aggregator projector", description=__doc__)
    parser.add_argument("--schema", default="projection", help="target PostgreSQL schema")
    parser.add_argument("--client-id", default=f"projector-{os.getpid()}")
    parser.add_argument("--metrics-port", type=int, default=None, help="0 disables /metrics")
    args = parser.parse_args(argv)
    configure_logging()
    settings = load_settings()
    port = settings.projector_metrics_port if args.metrics_port is None else args.metrics_port
    serve_metrics(port)

    async def run() -> None:
        projector = Projector(settings, schema=args.schema, client_id=args.client_id)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await projector.run(stop)

    uvloop.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
