"""Replay: rebuild every projection from the journal into a fresh schema, then compare it
with the live one, table by table.

The replay reads ``agg.events`` without a consumer group, from the beginning (or from the
offsets of a timestamp) up to the end offsets taken when it starts, through the same code
the projector runs (same migrations, same per-event SQL, same dedupe by event id). Compared
with a live schema that has projected exactly those offsets, any differing row is a defect:
in the projector, or in the live data. A partial replay (``--since``) builds a schema but is
not compared: its derived tables cannot equal the live ones.
"""

from __future__ import annotations

import asyncio
import sys
import time
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
    "revenue_daily": "operator_id, provider_id, game_id, currency, day",
}
"""Every projection table and its key; positions and migrations are not compared."""


@dataclass
class ReplayResult:
    schema: str
    events: int
    undecodable: int
    seconds: float
    differences: dict[str, list[str]] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return not any(self.differences.values())


async def replay(
    settings: Settings,
    target: str,
    *,
    since: datetime | None = None,
    progress: TextIO | None = sys.stderr,
    batch_count_max: int = 5_000,
) -> ReplayResult:
    projector = Projector(settings, schema=target, group_id=f"replay:{target}",
                          client_id="replay")  # fmt: skip
    started = time.monotonic()
    conn: psycopg.Connection[Any] = await asyncio.to_thread(
        lambda: psycopg.connect(settings.database_url, autocommit=True)
    )
    projector.conn = conn
    await asyncio.to_thread(migrate, conn, target)
    consumer = make_consumer(settings, group_id=None, client_id="replay",
                             max_poll_records=batch_count_max)  # fmt: skip
    await consumer.start()
    events_total = 0
    undecodable = 0
    try:
        partitions = await topic_partitions(settings.kafka_bootstrap, projector.topic)
        tps = [TopicPartition(projector.topic, p) for p in partitions]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        if since is None:
            await consumer.seek_to_beginning(*tps)
            starts = await consumer.beginning_offsets(tps)
        else:
            found = await consumer.offsets_for_times(
                {tp: int(since.timestamp() * 1000) for tp in tps}
            )
            starts = {tp: (found[tp].offset if found[tp] else ends[tp]) for tp in tps}
            for tp in tps:
                consumer.seek(tp, starts[tp])
        total = sum(ends[tp] - starts[tp] for tp in tps)
        remaining = {tp for tp in tps if ends[tp] > starts[tp]}
        read = 0
        shown = 0.0
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            events: list[JournalEvent] = []
            last: dict[int, int] = {}
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    read += 1
                    last[tp.partition] = record.offset
                    try:
                        events.append(journal_event(projector.codec, record))
                    except AvroDecodeError as exc:
                        if exc.reason == "unknown_reader":
                            continue  # decodes, but is not a journal event: not projected
                        undecodable += 1
                        if progress is not None:
                            progress.write(f"\nundecodable: partition {tp.partition} offset "
                                           f"{record.offset}: {exc}\n")  # fmt: skip
                        continue
            # done by position, not by the last record seen: a partition may end in records
            # a consumer never sees (transaction markers)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
            if last:
                fresh = await asyncio.to_thread(projector._write_sync, events, last)
                events_total += len(fresh)
            if progress is not None and (time.monotonic() - shown > 0.5 or not remaining):
                shown = time.monotonic()
                elapsed = max(0.001, shown - started)
                pct = 100 * read / total if total else 100.0
                bar = "#" * int(pct / 4)
                progress.write(f"\rreplay [{bar:<25}] {pct:5.1f}%  {read}/{total} events"
                               f"  {read / elapsed:,.0f}/s")  # fmt: skip
                progress.flush()
        if progress is not None:
            progress.write("\n")
    finally:
        await consumer.stop()
        conn.close()
    return ReplayResult(target, events_total, undecodable, time.monotonic() - started)


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
