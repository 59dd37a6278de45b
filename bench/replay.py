"""``python -m bench.replay`` (``make bench-replay``): how fast ``aggregator audit replay``
rebuilds the projections from a journal of N events.

1. Servers: those named by ``AGG_KAFKA_BOOTSTRAP``/``AGG_DATABASE_URL``, else a fresh local
   stack in ``var/bench-replay/stack`` (stopped at the end).
2. The journal: N events decided by the saga's domain code (:mod:`bench.journal`), Avro
   single-object encoded, keyed ``operator:player``, on the events topic of a topic prefix of
   their own (``benchreplay<N>s<seed>p<partitions>``). A topic of that prefix that already
   holds the N records is read again, not rewritten.
3. The replay into a fresh schema, timed from start to the last batch committed, with its
   progress on stderr.
4. ``--check``: the live projector (consumer group, batches as it runs in production) also
   projects the journal, into a schema of its own, and the two are compared table by table;
   any difference fails the run (exit 1).
5. Results: ``bench/results/replay-<UTC>.json`` with a top-level ``replay`` object
   ``{"events", "seconds", "events_per_s", "partitions", "workers"}``; besides, the CPU
   seconds the replay's processes, PostgreSQL and the broker spent (per event too: on a
   shared machine the rate depends on what else runs, the CPU per event much less) and the
   load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from aiokafka import TopicPartition
from psycopg import sql

from agg_avro import AvroCodec
from agg_config.paths import repo_root
from agg_config.settings import Settings
from agg_kafka.admin import ensure_topics
from agg_kafka.clients import make_consumer, make_producer, player_key
from agg_kafka.topics import TopicNames, catalogue
from agg_testkit.servers import provide
from bench.journal import JournalWriter
from bench.procs import CpuMeter, machine_facts
from bench.run import git_facts


def log(text: str) -> None:
    print(f"[bench-replay] {text}", file=sys.stderr, flush=True)


async def _journal_size(settings: Settings, topic: str, partitions: int) -> int:
    consumer = make_consumer(settings, group_id=None, client_id="bench-replay-size")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        return sum(ends.values())
    finally:
        await consumer.stop()


async def write_journal(settings: Settings, events: int, seed: int) -> int:
    """Publish ``events`` journal records on the events topic of ``settings``; the count."""
    codec = AvroCodec()
    topic = TopicNames(settings.topic_prefix).events
    producer = make_producer(settings, client_id="bench-replay-writer", linger_ms=20,
                             max_batch_size=512 * 1024)  # fmt: skip
    await producer.start()
    written = 0
    started = time.monotonic()
    shown = 0.0
    try:
        pending: list[asyncio.Future[Any]] = []
        for name, datum in JournalWriter(events, seed=seed):
            value = codec.encode(name, datum)
            key = player_key(datum["operator_id"], datum["player_id"])
            pending.append(await producer.send(topic, value, key=key))
            written += 1
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
            if time.monotonic() - shown > 1:
                shown = time.monotonic()
                rate = written / max(0.001, shown - started)
                print(f"\rjournal {written}/{events} events  {rate:,.0f}/s", end="",
                      file=sys.stderr, flush=True)  # fmt: skip
        await asyncio.gather(*pending)
        print(file=sys.stderr)
    finally:
        await producer.stop()
    return written


def server_pids(settings: Settings) -> dict[str, int | None]:
    """PostgreSQL's postmaster (the parent of a backend) and the broker (the process
    listening on the bootstrap port), when they run on this machine."""
    pids: dict[str, int | None] = {"postgres": None, "broker": None}
    try:
        with psycopg.connect(settings.database_url) as conn:
            row = conn.execute("select pg_backend_pid()").fetchone()
        if row is not None:
            stat = Path(f"/proc/{row[0]}/stat").read_text()
            pids["postgres"] = int(stat[stat.rfind(")") + 2 :].split()[1])
    except (OSError, psycopg.Error, ValueError):
        pass
    port = settings.kafka_bootstrap.split(",")[0].rsplit(":", 1)[-1]
    try:
        done = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True,
                              text=True, timeout=10)  # fmt: skip
        found = re.search(r"pid=(\d+)", done.stdout)
        pids["broker"] = int(found.group(1)) if found else None
    except (OSError, subprocess.TimeoutExpired):
        pass
    return pids


def drop_schema(database_url: str, schema: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.replay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=12, help="of the events topic")
    parser.add_argument("--workers", type=int, default=0,
                        help="replay worker processes (0: the replay's default)")  # fmt: skip
    parser.add_argument("--check", action="store_true",
                        help="also project the journal live and compare the tables")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the rebuilt schema")
    parser.add_argument("--work-dir", type=Path, default=repo_root() / "var" / "bench-replay")
    parser.add_argument("--out-dir", type=Path, default=repo_root() / "bench" / "results")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, base: Settings) -> dict[str, Any]:
    from agg_projector.replay import compare, replay

    prefix = f"benchreplay{args.events}s{args.seed}p{args.partitions}"
    settings = base.model_copy(update={"topic_prefix": prefix,
                                       "partition_count": args.partitions})  # fmt: skip
    topic = TopicNames(prefix).events
    every = catalogue([], partitions=args.partitions, replication_factor=1,
                      min_insync_replicas=1, prefix=prefix)  # fmt: skip
    specs = [s for s in every if s.name == topic]
    report = asyncio.run(ensure_topics(settings.kafka_bootstrap, specs))
    if not report.ok:
        raise SystemExit("\n".join(report.lines()))
    size = asyncio.run(_journal_size(settings, topic, args.partitions))
    if size == 0:
        log(f"writing a journal of {args.events:,} events to {topic} ...")
        started = time.monotonic()
        asyncio.run(write_journal(settings, args.events, args.seed))
        log(f"journal written in {time.monotonic() - started:.1f}s")
    elif size == args.events:
        log(f"reusing the journal on {topic} ({size:,} records)")
    else:
        raise SystemExit(f"{topic} holds {size} records, not {args.events}: delete the topic")

    target = f"bench_replay_{uuid.uuid4().hex[:8]}"
    log(f"replaying into {target} ...")
    kwargs: dict[str, Any] = {"workers": args.workers} if args.workers else {}
    pids = server_pids(settings)
    meter = CpuMeter({"replay": os.getpid, "postgres": lambda: pids["postgres"],
                      "broker": lambda: pids["broker"]})  # fmt: skip
    load_before = os.getloadavg()
    cpu_before = meter.sample()
    result = asyncio.run(replay(settings, target, **kwargs))
    cpu = CpuMeter.delta(cpu_before, meter.sample())
    seconds = result.seconds
    rate = result.records / max(seconds, 0.001)
    log(f"replayed {result.records:,} events in {seconds:.1f}s: {rate:,.0f} events/s")
    out: dict[str, Any] = {
        "replay": {
            "events": result.records,
            "seconds": round(seconds, 3),
            "events_per_s": round(rate, 1),
            "partitions": result.partitions,
            "workers": result.workers,
        },
        "cpu_seconds": cpu,
        "cpu_us_per_event": {
            name: None if s is None else round(1e6 * s / max(1, result.records), 1)
            for name, s in cpu.items()
        },
        "load_average": {
            "before": round(load_before[0], 2),
            "after": round(os.getloadavg()[0], 2),
        },
        "journal": {
            "records": args.events,
            "projected": result.events,
            "seed": args.seed,
            "topic": topic,
            "topic_prefix": prefix,
            "undecodable": result.undecodable,
        },
    }
    if args.check:
        live = f"bench_live_{uuid.uuid4().hex[:8]}"
        log(f"projecting the journal live into {live} ...")
        started = time.monotonic()
        asyncio.run(project_live(settings, live, result.events))
        log(f"live projection in {time.monotonic() - started:.1f}s; comparing ...")
        differences = compare(settings.database_url, live, target)
        found = {t: lines for t, lines in differences.items() if lines}
        out["check"] = {"identical": not found, "differences": found}
        drop_schema(settings.database_url, live)
    if args.keep:
        out["schema"] = target
    else:
        drop_schema(settings.database_url, target)
    return out


async def project_live(settings: Settings, schema: str, events: int) -> None:
    """The live projector over the whole journal, until its journal table holds ``events``."""
    from agg_projector.projector import Projector

    projector = Projector(settings, schema=schema, group_id=f"bench-live-{schema}",
                          client_id="bench-live")  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(projector.run(stop))
    query = sql.SQL("select count(*) from {}.journal").format(sql.Identifier(schema))
    async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                     autocommit=True) as conn:  # fmt: skip
        while not task.done():
            await asyncio.sleep(1)
            try:
                row = await (await conn.execute(query)).fetchone()
            except psycopg.errors.UndefinedTable:
                continue
            if row is not None and row[0] >= events:
                break
    stop.set()
    await task


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    started_utc = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    external = bool(os.environ.get("AGG_KAFKA_BOOTSTRAP") and os.environ.get("AGG_DATABASE_URL"))
    log("using the servers of the environment" if external else "starting the servers ...")
    with provide(workdir=args.work_dir / "stack") as servers:
        settings = Settings(kafka_bootstrap=servers.kafka_bootstrap,
                            database_url=servers.database_url)  # fmt: skip
        result = run(args, settings)
    result = {"started_utc": started_utc, **result, "git": git_facts(),
              "machine": machine_facts()}  # fmt: skip
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = started_utc.replace(":", "").replace("-", "")
    path = args.out_dir / f"replay-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    r = result["replay"]
    print(f"replay: {r['events']:,} events in {r['seconds']:.1f}s = {r['events_per_s']:,.0f} "
          f"events/s ({r['partitions']} partitions, {r['workers']} workers) -> {path}")  # fmt: skip
    per_event = result["cpu_us_per_event"]
    print("cpu per event (us): " + ", ".join(f"{k} {v}" for k, v in per_event.items())
          + f"; load average {result['load_average']}")  # fmt: skip
    if "check" in result:
        print("check: " + ("identical" if result["check"]["identical"] else "DIFFERENT"))
        if not result["check"]["identical"]:
            print(json.dumps(result["check"]["differences"], indent=2))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
