"""Replay: rebuild every projection from the journal into a fresh schema, then compare it
with the live one, table by table.

The replay reads ``agg.events`` without a consumer group, from the beginning (or from the
offsets of a timestamp) up to the end offsets taken when it starts, through the same code
the projector runs (same migrations, same batch fold and set-based writes, same dedupe by
event id). Compared with a live schema that has projected exactly those offsets, any
differing row is a defect: in the projector, or in the live data. A partial replay
(``--since``) builds a schema but is not compared: its derived tables cannot equal the live
ones.

How it goes fast (``bench/replay.py`` measures it):

- **Partitions in parallel.** The journal is keyed ``operator:player``, and every table's
  rows but one are a single player's (``journal``, ``transaction_changes`` by event id, whose
  id derives from the player; ``transactions``, ``rounds`` keyed with the player;
  ``balances``, ``demo_balances`` by operator, player, currency; ``sessions`` by a session of
  one player). So each partition's rows depend on that partition alone, and ``workers``
  processes each replay a share of the partitions, with a consumer and a database session of
  their own, in any order. The exception is ``revenue_daily`` (per operator, provider, game,
  currency, day: many players): sums, which each worker gathers in memory and the replay
  merges once at the end, so no two workers ever write one row.
- **What a worker wrote, in memory.** A worker dedupes by the ids of the events it projected
  (an event is republished on its player's partition, so on the worker's own), not by a
  query per batch; and it knows the keys of the ``transactions`` and ``rounds`` rows it
  wrote, so a batch's rows of other keys are new and copied straight into their tables, only
  the rest merged (``agg_projector.batch.Written``). Should two partitions ever hold one
  event id or one player's key (a partition count changed under a live journal), the second
  writer's batch meets a primary key, and is run again deduped against the table and merged.
- **Big batches, set-based:** one transaction per ``batch_count_max`` events, written as the
  projector writes a batch (``agg_projector.batch``: binary ``COPY``, one merge per table);
  the next batch is read and decoded while the last is written.
- **Indexes after the rows.** The fresh schema's secondary indexes (not the primary keys,
  which the merges need) are dropped before the load and built again from their own
  definitions at the end, as ``pg_restore`` does.
- **No WAL.** The fresh schema's tables are ``UNLOGGED``: the rebuilt schema is an audit's
  disposable copy (dropped after the compare unless kept), so it is not crash-safe nor
  replicated, and a crashed replay is simply run again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

import psycopg
from aiokafka import TopicPartition
from psycopg import sql

from agg_avro import AvroDecodeError
from agg_config.settings import Settings
from agg_kafka.admin import topic_partitions
from agg_kafka.clients import make_consumer
from agg_projector.apply import JournalEvent
from agg_projector.batch import Revenue, Written
from agg_projector.migrate import migrate
from agg_projector.projector import Projector, journal_event

COMPARED_TABLES = {
    "journal": "event_id",
    "transactions": "operator_id, provider_id, player_id, transaction_id",
    "transaction_changes": "event_id",
    "rounds": "operator_id, provider_id, player_id, round_id",
    "balances": "operator_id, player_id, currency",
    "demo_balances": "operator_id, player_id, currency",
    "sessions": "session_id",
    "campaigns": "operator_id, player_id, campaign_id",
    "revenue_daily": "operator_id, provider_id, game_id, currency, day",
}
"""Every projection table and its key; positions and migrations are not compared."""

BATCH_COUNT_MAX = 20_000
"""Events per transaction of a replay's worker."""
FETCH_BYTES_MAX = 64 * 1024 * 1024
PARTITION_FETCH_BYTES_MAX = 8 * 1024 * 1024
"""Kafka fetches: a partition's records come in a few large responses."""
UNDECODABLE_SHOWN_MAX = 100


def default_workers(partitions: int) -> int:
    """One worker per core, at least two (a worker waits on PostgreSQL half its time), at
    most one per partition."""
    return max(1, min(partitions, max(2, os.cpu_count() or 1)))


@dataclass
class ReplayResult:
    schema: str
    events: int
    """Events projected (each event id once)."""
    undecodable: int
    seconds: float
    differences: dict[str, list[str]] = field(default_factory=dict)
    records: int = 0
    """Journal records read (republished events included)."""
    partitions: int = 0
    workers: int = 1

    @property
    def identical(self) -> bool:
        return not any(self.differences.values())


@dataclass
class _ShareResult:
    events: int = 0
    records: int = 0
    undecodable: list[str] = field(default_factory=list)
    undecodable_count: int = 0
    revenue: Revenue = field(default_factory=Revenue)


_PROGRESS: Any = None
"""A worker process's view of the records-read counters (a shared array, one per share)."""


def _init_worker(progress: Any) -> None:
    global _PROGRESS
    _PROGRESS = progress


def _replay_share(settings: Settings, target: str, share: Mapping[int, tuple[int, int]],
                  batch_count_max: int, slot: int) -> _ShareResult:  # fmt: skip
    """A worker: replay the partitions of ``share`` ({partition: (start, end)}), counting the
    records read in slot ``slot`` of the progress counters."""
    return asyncio.run(_replay_share_async(settings, target, share, batch_count_max, slot))


async def _replay_share_async(settings: Settings, target: str,
                              share: Mapping[int, tuple[int, int]], batch_count_max: int,
                              slot: int) -> _ShareResult:  # fmt: skip
    out = _ShareResult()
    projector = Projector(settings, schema=target, group_id=f"replay:{target}",
                          client_id="replay")  # fmt: skip
    conn: psycopg.Connection[Any] = await asyncio.to_thread(
        lambda: psycopg.connect(settings.database_url, autocommit=True)
    )
    conn.execute("set synchronous_commit = off")
    projector.conn = conn
    consumer = make_consumer(settings, group_id=None, client_id="replay",
                             max_poll_records=batch_count_max, fetch_max_bytes=FETCH_BYTES_MAX,
                             max_partition_fetch_bytes=PARTITION_FETCH_BYTES_MAX)  # fmt: skip
    await consumer.start()
    seen: set[str] = set()
    written = Written()
    writing: asyncio.Future[list[JournalEvent]] | None = None

    def write(events: list[JournalEvent], last: dict[int, int]) -> list[JournalEvent]:
        try:
            return projector._write_sync(events, last, out.revenue, seen, written)
        except psycopg.errors.UniqueViolation:
            # an event id (or a player's key) on two partitions: this batch again, deduped
            # against the table and merged
            return projector._write_sync(events, last, out.revenue)

    try:
        tps = {TopicPartition(projector.topic, p): span for p, span in share.items()}
        consumer.assign(list(tps))
        for tp, (start, _) in tps.items():
            consumer.seek(tp, start)
        remaining = {tp for tp, (start, end) in tps.items() if end > start}
        while remaining or writing is not None:
            events: list[JournalEvent] = []
            last: dict[int, int] = {}
            while remaining and len(events) < batch_count_max:
                wanted = batch_count_max - len(events)
                batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=wanted)
                for tp, records in batch.items():
                    end = tps[tp][1]
                    for record in records:
                        if record.offset >= end:
                            break
                        out.records += 1
                        last[tp.partition] = record.offset
                        try:
                            events.append(journal_event(projector.codec, record))
                        except AvroDecodeError as exc:
                            if exc.reason == "unknown_reader":
                                continue  # decodes, but is not a journal event: not projected
                            out.undecodable_count += 1
                            if len(out.undecodable) < UNDECODABLE_SHOWN_MAX:
                                out.undecodable.append(f"partition {tp.partition} offset "
                                                       f"{record.offset}: {exc}")  # fmt: skip
                # done by position, not by the last record seen: a partition may end in
                # records a consumer never sees (transaction markers)
                for tp in list(remaining):
                    if await consumer.position(tp) >= tps[tp][1]:
                        remaining.discard(tp)
                if not batch:
                    break
            if writing is not None:
                out.events += len(await writing)
                writing = None
            if last:
                writing = asyncio.ensure_future(asyncio.to_thread(write, events, last))
            if _PROGRESS is not None:
                _PROGRESS[slot] = out.records
    finally:
        if writing is not None:
            await asyncio.gather(writing, return_exceptions=True)
        await consumer.stop()
        conn.close()
    return out


def _defer_indexes(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    """Drop the secondary indexes of ``schema`` (none backs a constraint); their
    definitions, to build them again."""
    rows = conn.execute(
        "select c.relname, pg_get_indexdef(i.indexrelid) from pg_index i"
        " join pg_class c on c.oid = i.indexrelid join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %s and not exists"
        " (select 1 from pg_constraint k where k.conindid = i.indexrelid) order by c.relname",
        (schema,),
    ).fetchall()
    for name, _ in rows:
        conn.execute(sql.SQL("drop index {}.{}").format(sql.Identifier(schema),
                                                         sql.Identifier(name)))  # fmt: skip
    return [definition for _, definition in rows]


def _unlog(conn: psycopg.Connection[Any], schema: str) -> None:
    """Make the tables of the fresh ``schema`` unlogged: a disposable rebuild spends nothing
    on WAL (nor on the checkpoints a gigabyte of it would force)."""
    tables = conn.execute(
        "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relkind = 'r' and c.relpersistence = 'p'",
        (schema,),
    ).fetchall()
    for (name,) in tables:
        table = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))
        conn.execute(sql.SQL("alter table {} set unlogged").format(table))


def _build_indexes(database_url: str, definitions: list[str], parallel: int) -> None:
    def build(definition: str) -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("set maintenance_work_mem = '256MB'")
            conn.execute(definition.encode())

    with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
        list(pool.map(build, definitions))


async def replay(
    settings: Settings,
    target: str,
    *,
    since: datetime | None = None,
    progress: TextIO | None = sys.stderr,
    batch_count_max: int = BATCH_COUNT_MAX,
    workers: int | None = None,
) -> ReplayResult:
    """Rebuild the projections into the fresh schema ``target``, ``workers`` processes in
    parallel (default :func:`default_workers`; 1: in this process)."""
    projector = Projector(settings, schema=target, group_id=f"replay:{target}",
                          client_id="replay")  # fmt: skip
    started = time.monotonic()
    conn: psycopg.Connection[Any] = await asyncio.to_thread(
        lambda: psycopg.connect(settings.database_url, autocommit=True)
    )
    with conn:
        fresh_schema = await asyncio.to_thread(
            lambda: (
                conn.execute("select to_regnamespace(%s) is null", (target,)).fetchone() == (True,)
            )
        )
        await asyncio.to_thread(migrate, conn, target)
        deferred: list[str] = []
        if fresh_schema:
            deferred = await asyncio.to_thread(_defer_indexes, conn, target)
            await asyncio.to_thread(_unlog, conn, target)
    consumer = make_consumer(settings, group_id=None, client_id="replay")
    await consumer.start()
    try:
        partitions = await topic_partitions(settings.kafka_bootstrap, projector.topic)
        tps = [TopicPartition(projector.topic, p) for p in partitions]
        ends = await consumer.end_offsets(tps)
        if since is None:
            starts = await consumer.beginning_offsets(tps)
        else:
            found = await consumer.offsets_for_times(
                {tp: int(since.timestamp() * 1000) for tp in tps}
            )
            starts = {tp: (found[tp].offset if found[tp] else ends[tp]) for tp in tps}
    finally:
        await consumer.stop()
    total = sum(ends[tp] - starts[tp] for tp in tps)
    count = workers or default_workers(len(tps))
    count = max(1, min(count, len(tps)))
    shares: list[dict[int, tuple[int, int]]] = [{} for _ in range(count)]
    for i, tp in enumerate(sorted(tps, key=lambda t: t.partition)):
        shares[i % count][tp.partition] = (starts[tp], ends[tp])
    context = multiprocessing.get_context("spawn")
    counters = context.Array("q", count, lock=False)
    loop = asyncio.get_running_loop()
    pool: concurrent.futures.Executor
    if count == 1:
        pool = concurrent.futures.ThreadPoolExecutor(1, initializer=_init_worker,
                                                     initargs=(counters,))  # fmt: skip
    else:
        pool = concurrent.futures.ProcessPoolExecutor(count, mp_context=context,
                                                      initializer=_init_worker,
                                                      initargs=(counters,))  # fmt: skip
    with pool:
        jobs = [
            loop.run_in_executor(
                pool, _replay_share, settings, target, share, batch_count_max, slot
            )
            for slot, share in enumerate(shares)
        ]
        done = asyncio.gather(*jobs)
        while not done.done():
            await asyncio.wait([done], timeout=0.5)
            if progress is not None:
                read = sum(counters)
                elapsed = max(0.001, time.monotonic() - started)
                pct = 100 * read / total if total else 100.0
                bar = "#" * int(pct / 4)
                progress.write(f"\rreplay [{bar:<25}] {pct:5.1f}%  {read}/{total} events"
                               f"  {read / elapsed:,.0f}/s")  # fmt: skip
                progress.flush()
        results: list[_ShareResult] = await done
    revenue = Revenue()
    for result in results:
        revenue.merge(result.revenue)

    loaded = time.monotonic()

    def finish() -> None:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            with conn.transaction(), conn.cursor() as cur:
                projector.batch.write_revenue(cur, revenue)
        _build_indexes(settings.database_url, deferred, count)

    if progress is not None:
        progress.write("\n")
        for result in results:
            for line in result.undecodable:
                progress.write(f"undecodable: {line}\n")
        if deferred:
            progress.write(f"replay: rows in {loaded - started:.1f}s;"
                           f" building {len(deferred)} indexes\n")  # fmt: skip
    await asyncio.to_thread(finish)
    if progress is not None and deferred:
        progress.write(f"replay: indexes built in {time.monotonic() - loaded:.1f}s\n")
    return ReplayResult(
        target,
        events=sum(r.events for r in results),
        undecodable=sum(r.undecodable_count for r in results),
        seconds=time.monotonic() - started,
        records=sum(r.records for r in results),
        partitions=len(tps),
        workers=count,
    )


def compare(database_url: str, live: str, rebuilt: str, sample: int = 5) -> dict[str, list[str]]:
    """Rows in one schema and not the other, per table (a few of each shown)."""
    out: dict[str, list[str]] = {}
    with psycopg.connect(database_url) as conn:
        for table, key in COMPARED_TABLES.items():
            lines: list[str] = []
            for a, b, label in ((live, rebuilt, "only live"), (rebuilt, live, "only rebuilt")):
                query = sql.SQL(
                    "select * from (select * from {a}.{t} except select * from {b}.{t}) d"
                    " order by {k} limit %s"
                ).format(
                    a=sql.Identifier(a), b=sql.Identifier(b), t=sql.Identifier(table),
                    k=sql.SQL(key),
                )  # fmt: skip
                count_query = sql.SQL(
                    "select count(*) from (select * from {a}.{t} except select * from {b}.{t}) d"
                ).format(a=sql.Identifier(a), b=sql.Identifier(b), t=sql.Identifier(table))
                count = conn.execute(count_query).fetchone()
                n = int(count[0]) if count else 0
                if n:
                    lines.append(f"{n} rows {label}")
                    lines += [f"  {label}: {row}" for row in conn.execute(query, (sample,))]
            out[table] = lines
    return out


async def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = make_consumer(settings, group_id=None, client_id="replay-ends")
    await consumer.start()
    try:
        partitions = await topic_partitions(settings.kafka_bootstrap, topic)
        tps = [TopicPartition(topic, p) for p in partitions]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


def behind(database_url: str, schema: str, group: str, topic: str, ends: dict[int, int]) -> int:
    """Journal records the projector of ``schema`` has yet to read to reach ``ends``."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            sql.SQL(
                "select partition, next_offset from {}.consumer_offsets"
                " where consumer_group = %s and topic = %s"
            ).format(sql.Identifier(schema)),
            (group, topic),
        ).fetchall()
    positions = {int(p): int(o) for p, o in rows}
    return sum(max(0, end - positions.get(p, 0)) for p, end in ends.items())
