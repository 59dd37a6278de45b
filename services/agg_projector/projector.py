"""The projector: consumes ``agg.events`` and writes the projections exactly once.

The rows an event produces and the consumer position after it are written in ONE PostgreSQL
transaction; when partitions are assigned they are read from the positions stored there,
never from Kafka's committed offsets (nothing is committed to Kafka), or from the beginning.
A crash at any instant either kept the whole batch (rows and position) or none of it. The
position rows of the batch's partitions are locked first (``FOR UPDATE``), so two projectors
briefly owning one partition during a rebalance cannot both apply a record: the second
waits, then sees the advanced position and skips what was done. An event the saga
republished after a crash (same event id, new offset) is recognised by its id and skipped.
The batch itself is written set-based, a dozen statements whatever its size
(:mod:`agg_projector.batch`, ``docs/projections.md``).

Kafka is reached through the transport port (:mod:`agg_ports.transport`) on the client
``kafka_client`` names (librdkafka by default, or aiokafka): one consumer-group member and
the producer of dead letters. The transport puts newly assigned partitions at the stored
positions itself (its ``start_at``), before the listener hears of them; a seek from the
listener would not do on librdkafka, which refuses to seek a partition it has not started
fetching. Rebalances happen between batches: the listener waits for the batch being written,
and what was gathered before a rebalance is not written after it (it is read again from the
stored positions); nor is a record of a partition not assigned.

A batch is what the first poll returns, filled by more polls for up to
``projector_batch_wait_ms`` or until ``batch_count_max`` records; every poll returns as soon
as records are there (records beyond a full batch start the next one). An undecodable record
goes to the dead-letter topic, acknowledged before the batch that skips it is written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from aiokafka import ConsumerRecord
from prometheus_client import Counter, Gauge, Histogram

from agg_avro import AvroCodec, AvroDecodeError
from agg_config.settings import Settings
from agg_kafka.topics import TopicNames
from agg_kafka.transport import make_transport
from agg_obs.logs import get_logger
from agg_obs.metrics import LATENCY_BUCKETS_S
from agg_ports.transport import OFFSET_BEGINNING, InRecord, OutRecord, Transport, dead_letter_record
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
POLL_TIMEOUT_MS = 200
"""Longest wait for the first records of a batch; also bounds how late a stop is noticed."""
LAG_INTERVAL_S = 1.0
"""How often the lag gauges are measured."""


def journal_event(
    codec: AvroCodec, record: InRecord | ConsumerRecord[bytes, bytes]
) -> JournalEvent:
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
        self.transport: Transport | None = None
        """Made in :meth:`run`, inside the running loop its clients belong to."""
        self.lock = asyncio.Lock()
        """Held while a batch is written and while the positions of an assignment are read:
        the connection serves one of them at a time, and a rebalance waits for the batch."""
        self._assigned: set[int] = set()
        """Partitions of the journal assigned (as the listener last heard)."""
        self._epoch = 0
        """Rebalances so far: records gathered before one are not written after it."""
        self._held: list[InRecord] = []
        """Records polled beyond a full batch: the start of the next one (cleared on a
        rebalance)."""
        self._restored: dict[int, int] = {}
        """The stored positions the last assignment started from (for its log line)."""
        self._failure: BaseException | None = None
        """Why the positions of an assignment could not be read: the projector stops."""

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

    async def _start_at(self, partitions: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The transport's ``start_at``: newly assigned partitions are read from the positions
        stored with the rows, or from the beginning."""
        numbers = sorted(p for t, p in partitions if t == self.topic)
        try:
            async with self.lock:  # after the batch being written, which may move them
                stored = await asyncio.to_thread(self._stored_positions, numbers)
        except BaseException as exc:
            # raised by the loop too: aiokafka only logs what its listener raises
            self._failure = exc
            raise
        self._restored = stored
        return {(self.topic, p): stored.get(p, OFFSET_BEGINNING) for p in numbers}

    # --- the rebalance listener (the transport calls it) -------------------------------------

    async def on_revoked(self, partitions: set[tuple[str, int]]) -> None:
        async with self.lock:  # the batch being written is finished first
            self._epoch += 1
            self._assigned -= {p for t, p in partitions if t == self.topic}
            self._held = []
        log.event("partitions_revoked", partitions=sorted(p for _, p in partitions))

    async def on_assigned(self, partitions: set[tuple[str, int]]) -> None:
        # the transport has put them at the positions _start_at gave
        mine = {p for t, p in partitions if t == self.topic}
        self._epoch += 1
        self._assigned |= mine
        self._held = []
        log.event("positions_restored", partitions=sorted(mine), stored=self._restored)
        self.ready.set()

    # --- the loop ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        # the database work of a batch runs in a thread, on this one connection, in order
        self.conn = psycopg.connect(self.settings.database_url, autocommit=True)
        applied = migrate(self.conn, self.schema)
        if applied:
            log.event("migrated", schema=self.schema, migrations=applied)
        transport: Transport = make_transport(
            self.settings, group_id=self.group_id, client_id=self.client_id,
            batch_max=self.batch_count_max, start_at=self._start_at,
        )  # fmt: skip
        self.transport = transport
        try:
            await transport.start([self.topic], self)
            log.event("projector_started", schema=self.schema, topic=self.topic,
                      group=self.group_id, client=self.settings.kafka_client)  # fmt: skip
            next_lag = 0.0
            while not stop.is_set():
                if self._failure is not None:
                    raise self._failure
                records, epoch = await self._gather()
                if records:
                    async with self.lock:
                        if epoch == self._epoch:  # else read again from the stored positions
                            await self._write(records)
                if time.monotonic() >= next_lag:
                    next_lag = time.monotonic() + LAG_INTERVAL_S
                    for (_, partition), lag in (await transport.lag()).items():
                        LAG.labels(str(partition)).set(lag)
        finally:
            try:
                await transport.stop()
            finally:
                self.conn.close()
                log.event("projector_stopped")

    def _fresh(self, records: list[InRecord]) -> list[InRecord]:
        """The records of partitions assigned now."""
        assigned, topic = self._assigned, self.topic
        return [r for r in records if r.partition in assigned and r.topic == topic]

    async def _gather(self) -> tuple[list[InRecord], int]:
        """A batch of records, and the epoch it was gathered in: the records held over or
        the first that arrive, then more for up to ``projector_batch_wait_ms`` or until a full
        batch (one transaction per batch). Each poll returns as soon as records are there;
        once the time is up, what is already there is still taken."""
        transport = self.transport
        assert transport is not None
        epoch = self._epoch
        batch, self._held = self._held, []
        if not batch:
            batch = self._fresh(await transport.poll(POLL_TIMEOUT_MS, self.batch_count_max))
            if epoch != self._epoch:  # a rebalance during the poll: what it returned is new
                epoch = self._epoch
            if not batch:
                return [], epoch
        deadline = time.monotonic() + self.settings.projector_batch_wait_ms / 1000
        while len(batch) < self.batch_count_max:
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            more = await transport.poll(remaining_ms, self.batch_count_max - len(batch))
            if epoch != self._epoch:
                # a rebalance during the poll: what was gathered before it is read again
                # from the stored positions; what the poll returned came after it
                epoch, batch = self._epoch, []
            if more:
                batch += self._fresh(more)
            elif remaining_ms == 0:
                break
        if len(batch) > self.batch_count_max:  # librdkafka's polls return whole batches
            batch, self._held = batch[: self.batch_count_max], batch[self.batch_count_max :]
        return batch, epoch

    async def _write(self, records: list[InRecord]) -> None:
        assert self.conn is not None and self.transport is not None
        started = time.perf_counter()
        events: list[JournalEvent] = []
        last: dict[int, int] = {}
        dead: list[OutRecord] = []
        for record in records:
            last[record.partition] = record.offset
            try:
                event = journal_event(self.codec, record)
            except AvroDecodeError as exc:
                DEAD_LETTERS.inc()
                log.error("dead_letter", partition=record.partition, offset=record.offset,
                          reason=str(exc))  # fmt: skip
                dead.append(dead_letter_record(self.dead_letters, record, str(exc),
                                               self.group_id))  # fmt: skip
                continue
            events.append(event)
        if dead:
            # acknowledged before the positions past them are stored
            await self.transport.send(dead)
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
