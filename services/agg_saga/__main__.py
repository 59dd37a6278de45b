"""``python -m agg_saga`` (also ``aggregator saga``): run one saga worker.

The worker reads the wallet replies of the operators of the tenants document in use at its
start (the config topic's, else the tenants file's). It follows the document: the
providers' round auto-close idle times (``round_auto_close_s``) of each document applied are
used from then on, without a restart (logged ``round_auto_close_applied``); an operator added
later is logged ``operator_not_consumed`` (error, ``agg_saga_operators_not_consumed``) until
the worker is restarted, since its replies are on a topic the worker does not read yet."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import uvloop
from prometheus_client import Gauge

from agg_config.settings import load_settings
from agg_config.tenants import Tenants, load_tenants
from agg_kafka.tenants_watch import Applied, TenantsHolder, TenantsWatcher
from agg_obs.logs import configure_logging, get_logger
from agg_obs.metrics import serve_metrics
from agg_saga.worker import SagaWorker

log = get_logger("saga")
NOT_CONSUMED = Gauge(
    "agg_saga_operators_not_consumed",
    "Operators of the tenants document in use whose wallet replies this worker does not read",
)


def auto_close_ms(tenants: Tenants) -> dict[str, int]:
    """Each provider's round auto-close idle time in the tenants, in ms."""
    return {p.id: p.round_auto_close_s * 1000 for p in tenants.providers}


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
        holder = TenantsHolder("saga", lambda t: frozenset(o.id for o in t.operators), tenants)
        watcher = TenantsWatcher(settings, holder, client_id=f"{args.client_id}-config")
        await watcher.start()
        consumed = holder.view

        def check(old: Applied[frozenset[str]], new: Applied[frozenset[str]]) -> None:
            missing = sorted(new.view - consumed)
            NOT_CONSUMED.set(len(missing))
            if missing:
                log.error("operator_not_consumed", operators=missing,
                          sequence=new.document.sequence,
                          detail="restart the saga workers to read these operators' "
                          "wallet replies")  # fmt: skip

        holder.listeners.append(check)
        # aiokafka clients belong to the running loop: build the worker inside it
        worker = SagaWorker(
            settings,
            sorted(consumed),
            client_id=args.client_id,
            round_auto_close_ms=auto_close_ms(holder.tenants),
        )

        def follow_auto_close(old: Applied[frozenset[str]], new: Applied[frozenset[str]]) -> None:
            times = auto_close_ms(new.tenants)
            if worker.set_round_auto_close(times):
                log.event("round_auto_close_applied", sequence=new.document.sequence,
                          providers={p: ms // 1000 for p, ms in sorted(times.items())})  # fmt: skip

        holder.listeners.append(follow_auto_close)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        following = asyncio.create_task(watcher.follow(stop))
        try:
            await worker.run(stop)
        finally:
            stop.set()
            await following

    uvloop.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
