"""The projector: consumes ``agg.events`` and writes the projections exactly once.

The rows an event produces and the consumer position after it are written in ONE PostgreSQL
transaction; on assignment the projector seeks to the positions stored there, never to Kafka's
committed offsets. A crash at any instant either kept the whole batch (rows and position) or
none of it. The position rows of the batch's partitions are locked first (``FOR UPDATE``), so
two projectors briefly owning one partition during a rebalance cannot both apply a record: the
second waits, then sees the advanced position and skips what was done. An event the saga
republished after a crash (same event id, new offset) is recognised by its id and skipped.
The batch itself is written set-based, a dozen statements whatever its size
(:mod:`agg_projector.batch`, ``docs/projections.md``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from prometheus_client import Counter, Gauge, Histogram

from agg_avro import AvroCodec, AvroDecodeError
from agg_config.settings import Settings
from agg_kafka.clients import consumer_lag, dead_letter, make_consumer, make_producer
from agg_kafka.topics import TopicNames
from agg_obs.logs import get_logger
from agg_obs.metrics import LATENCY_BUCKETS_S
from agg_projector.apply import Applier, JournalEvent
from agg_projector.batch import BatchRows, BatchWriter, Revenue, Written
from agg_projector.migrate import migrate

log = get_logger("projector")

EVENTS = Counter("agg_projector_events_total", "Journal events projected", ["event"])
DUPLICATES = Counter("agg_projector_duplicates_total", "Events skipped as already projected")
BATCH_SECONDS = Histogram(
    "agg_projector_batch_seconds", "Time to write one batch", buckets=LATENCY_BUCKETS_S
)
LAG = Gauge("agg_projector_lag", "Journal events not yet projected", ["partition"])
DEAD_LETTERS = Counter("agg_projector_dead_letters_total", "Undecodable journal records")

GROUP_ID = "agg-projector"
EVENT_PREFIX = "casino.agg.events."


def journal_event(codec: AvroCodec, record: ConsumerRecord[bytes, bytes]) -> JournalEvent:
    """The journal event in ``record``. Raises AvroDecodeError: for bytes that do not decode,
    and with reason ``unknown_reader`` for a record that decodes but is not a journal event."""
    decoded = codec.decode(record.value or b"")
    if not decoded.name.startswith(EVENT_PREFIX):
        raise AvroDecodeError("unknown_reader", f"{decoded.name} on the journal")
    name = decoded.name[len(EVENT_PREFIX) :]
    return JournalEvent(name, decoded.datum, record.partition, record.offset)


class Projector:
    def __init__(self, settings: Settings, *, schema: str = "projection", group_id: str = GROUP_ID,
                 client_id: str = "projector", batch_count_max: int = 2_000):  # fmt: skip
        self.settings = settings
        self.schema = schema
        self.group_id = group_id
        self.client_id = client_id
        self.topic = TopicNames(settings.topic_prefix).events
        self.dead_letters = TopicNames(settings.topic_prefix).dead_letters
        self.batch_count_max = batch_count_max
        self.codec = AvroCodec()
        self.applier = Applier(schema)
        self.batch = BatchWriter(schema)
        self.ready = asyncio.Event()
        self.conn: psycopg.Connection[Any] | None = None
        self.consumer: AIOKafkaConsumer | None = None

    # --- positions ---------------------------------------------------------------------------

    def _stored_positions(self, partitions: Sequence[int]) -> dict[int, int]:
        assert self.conn is not None
        with self.conn.transaction():
            rows = self.conn.execute(
                self.applier.q(
                    "select partition, next_offset from {s}.consumer_offsets"
                    " where consumer_group = %s and topic = %s and partition = any(%s)"
                ),
                (self.group_id, self.topic, list(partitions)),
            ).fetchall()
        return {int(p): int(o) for p, o in rows}

    async def _seek(self, partitions: Sequence[int]) -> None:
        assert self.consumer is not None
        stored = await asyncio.to_thread(self._stored_positions, partitions)
        for p in partitions:
            tp = TopicPartition(self.topic, p)
            if p in stored:
                self.consumer.seek(tp, stored[p])
            else:
                await self.consumer.seek_to_beginning(tp)
        log.event("positions_restored", partitions=sorted(partitions), stored=stored)

    # --- the loop ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        projector = self
        # the database work of a batch runs in a thread, on this one connection, in order
        self.conn = psycopg.connect(self.settings.database_url, autocommit=True)
        applied = migrate(self.conn, self.schema)
        if applied:
            log.event("migrated", schema=self.schema, migrations=applied)

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                log.event("partitions_revoked", partitions=sorted(tp.partition for tp in revoked))

            async def on_partitions_assigned(self, assigned: Any) -> None:
                await projector._seek([tp.partition for tp in assigned])
                projector.ready.set()

        self.consumer = make_consumer(
            self.settings, group_id=self.group_id, client_id=self.client_id,
            max_poll_records=self.batch_count_max,
        )  # fmt: skip
        producer = make_producer(self.settings, client_id=f"{self.client_id}-deadletters")
        await producer.start()
        await self.consumer.start()
        self.consumer.subscribe([self.topic], listener=Listener())
        log.event("projector_started", schema=self.schema, topic=self.topic, group=self.group_id)
        try:
            next_lag = 0.0
            while not stop.is_set():
                batch = await self._gather()
                if batch:
                    await self._write(batch, producer)
                if time.monotonic() >= next_lag:
                    next_lag = time.monotonic() + 1
                    for tp, lag in (await consumer_lag(self.consumer)).items():
                        LAG.labels(str(tp.partition)).set(lag)
        finally:
            await self.consumer.stop()
            await producer.stop()
            self.conn.close()
            log.event("projector_stopped")

    async def _gather(self) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """A batch of records: once the first arrive, more are gathered for up to
        ``projector_batch_wait_ms`` or until a full batch (one transaction per batch)."""
        assert self.consumer is not None
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
        batch = await self.consumer.getmany(timeout_ms=200)
        count = sum(len(records) for records in batch.values())
        deadline = time.monotonic() + self.settings.projector_batch_wait_ms / 1000
        while batch and count < self.batch_count_max:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                break
            more = await self.consumer.getmany(
                timeout_ms=remaining_ms, max_records=self.batch_count_max - count
            )
            for tp, records in more.items():
                batch.setdefault(tp, []).extend(records)
                count += len(records)
        return batch

    async def _write(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
                     producer: Any) -> None:  # fmt: skip
        assert self.conn is not None
        started = time.perf_counter()
        events: list[JournalEvent] = []
        last: dict[int, int] = {}
        for tp, records in batch.items():
            for record in records:
                last[tp.partition] = record.offset
                try:
                    event = journal_event(self.codec, record)
                except AvroDecodeError as exc:
                    DEAD_LETTERS.inc()
                    log.error("dead_letter", partition=tp.partition, offset=record.offset,
                              reason=str(exc))  # fmt: skip
                    await dead_letter(producer, self.dead_letters, record, reason=str(exc),
                                      consumer_group=self.group_id)  # fmt: skip
                    continue
                events.append(event)
        fresh = await asyncio.to_thread(self._write_sync, events, last)
        for e in fresh:
            EVENTS.labels(e.name).inc()
        BATCH_SECONDS.observe(time.perf_counter() - started)
        log.debug("batch_projected", events=len(fresh), partitions=sorted(last))

    def _write_sync(self, events: list[JournalEvent], last: dict[int, int],
                    revenue: Revenue | None = None, seen: set[str] | None = None,
                    written: Written | None = None) -> list[JournalEvent]:  # fmt: skip
        """One transaction: lock the positions, apply what is new, store the new positions.

        For a replay's worker (:mod:`agg_projector.replay`), which alone writes its partitions
        into a fresh schema: ``revenue`` gathers the batch's revenue there instead of writing
        it (merged once at the end); ``seen`` holds the ids of the events it has projected
        (updated here), so that events are deduped against it rather than the journal table;
        ``written``, the keys it has written (updated here, see
        :class:`agg_projector.batch.Written`).
        """
        assert self.conn is not None
        with self.conn.transaction(), self.conn.cursor() as cur:
            # a second owner of one of these partitions waits here, then skips what is done
            positions = {
                int(p): int(o)
                for p, o in cur.execute(
                    self.applier.q(
                        "select partition, next_offset from {s}.consumer_offsets where"
                        " consumer_group = %s and topic = %s and partition = any(%s) for update"
                    ),
                    (self.group_id, self.topic, sorted(last)),
                ).fetchall()
            }
            events = [e for e in events if e.offset >= positions.get(e.partition, 0)]
            if seen is None:
                ids = [e.datum["event_id"] for e in events]
                known = {
                    row[0]
                    for row in cur.execute(
                        self.applier.q("select event_id from {s}.journal where event_id = any(%s)"),
                        (ids,),
                    )
                }
            else:
                known = set()
            fresh = []
            fresh_ids: set[str] = set()
            for e in events:
                event_id = e.datum["event_id"]
                if event_id in known or event_id in fresh_ids or (seen and event_id in seen):
                    DUPLICATES.inc()
                    continue
                fresh_ids.add(event_id)
                fresh.append(e)
            # the batch set-based: a dozen statements, whatever its size (agg_projector.batch)
            batch_revenue = None if revenue is None else Revenue()
            added = self.batch.write(cur, BatchRows(batch_revenue).add_all(fresh),
                                     revenue=revenue is None, written=written)  # fmt: skip
            cur.executemany(
                self.applier.q(
                    "insert into {s}.consumer_offsets (consumer_group, topic, partition,"
                    " next_offset) values (%s, %s, %s, %s)"
                    " on conflict (consumer_group, topic, partition) do update set"
                    " next_offset = excluded.next_offset, updated_at = now()"
                ),
                [(self.group_id, self.topic, p, o + 1) for p, o in sorted(last.items())],
            )
        # committed: the batch now counts
        if seen is not None:
            seen |= fresh_ids
        if revenue is not None and batch_revenue is not None:
            revenue.merge(batch_revenue)
        if written is not None and added is not None:
            written.add(added)
        return fresh
