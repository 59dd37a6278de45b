"""asyncio on librdkafka (``confluent-kafka``), configured the one way the money path allows.

librdkafka does its network I/O on its own threads; what Python must do is hand its results
to the event loop without waiting on a timer:

- **Producing** happens on the loop thread (``produce`` only enqueues). One thread per
  producer serves delivery reports with ``poll(timeout)``, which returns as soon as there is
  one; each report settles its batch, and the batches settled in one ``poll`` reach the loop
  in one ``call_soon_threadsafe``.
- **Consuming** happens on one thread per consumer: ``poll(timeout)`` for the first message
  (it returns as soon as one is there), then ``consume(n, 0)`` to drain what is already
  fetched, never ``consume(n, timeout)``, which waits for n. Each batch reaches the loop in
  one wake-up, at most ``depth`` batches ahead of the loop (back-pressure). Rebalance
  callbacks run on that thread, inside ``poll``: they run the listener's coroutine on the loop
  and wait for it, so what the listener does (commit, pause) is done before partitions move.
- The consumer is driven from its own thread only: pause, resume, seek, commit and the lag
  measurement asked for by the loop are applied there before its next poll; the loop does
  not wait for a commit. Reading a partition to its end blocks: it runs on the loop's
  executor.

Producers: ``acks=all`` with idempotence and the Java client's murmur2 partitioner, so a key
lands on the partition every other producer of the project (aiokafka's default partitioner is
the same murmur2) puts it on. Consumers: no auto-commit, ``read_committed``, the range
assignor (co-partitioned topics move together). confluent-kafka's bundled ``aio`` classes are
not used: they hand messages over in Python batches on a 100 ms timer.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from agg_config.settings import Settings
from agg_obs.logs import get_logger
from agg_ports.transport import InRecord, OutRecord, RebalanceListener, StartAt

log = get_logger("kafka")

POLL_S = 0.1
"""Longest the delivery thread blocks: bounds how late it notices a stop."""
CONSUMER_POLL_S = 0.01
"""Longest the consumer thread blocks in a poll: bounds how late a pause, resume, seek or
commit asked for by the loop is applied (librdkafka's poll cannot be woken from Python)."""


class DeliveryError(RuntimeError):
    """The broker did not take a record (after librdkafka's own retries)."""


def producer_config(settings: Settings, *, client_id: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "client.id": client_id,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": settings.producer_linger_ms,
        "request.timeout.ms": settings.producer_request_timeout_ms,
        "partitioner": "murmur2_random",
    }
    config.update(overrides)
    if str(config["acks"]) not in ("all", "-1") or not config["enable.idempotence"]:
        raise ValueError("producers on the money path must use acks=all with idempotence")
    return config


def consumer_config(
    settings: Settings, *, group_id: str, client_id: str, **overrides: Any
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "client.id": client_id,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.consumer_session_timeout_ms,
        "isolation.level": "read_committed",
        "partition.assignment.strategy": "range",
        "enable.partition.eof": False,
    }
    config.update(overrides)
    return config


class _Batch:
    """One ``send``: settled when the last of its records is reported (on the poll thread)."""

    __slots__ = ("error", "future", "left", "owner")

    def __init__(self, owner: RdProducer, future: asyncio.Future[None], count: int):
        self.owner, self.future, self.left = owner, future, count
        self.error: str | None = None

    def delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None and self.error is None:
            self.error = f"{msg.topic()}[{msg.partition()}]: {err.str()}"
        self.left -= 1
        if self.left == 0:
            self.owner._settled.append(self)


class RdProducer:
    def __init__(self, config: Mapping[str, Any]):
        self._producer = Producer(dict(config))
        self._settled: list[_Batch] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._serve, name="rdkafka-delivery", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        loop = self._loop
        assert loop is not None
        while not self._stop.is_set():
            self._producer.poll(POLL_S)
            if self._settled:
                settled, self._settled = self._settled, []
                loop.call_soon_threadsafe(_settle, settled)

    def send_nowait(self, records: Sequence[OutRecord]) -> asyncio.Future[None]:
        """Enqueue ``records`` in order; the future is done when every one is acknowledged
        (or failed: :class:`DeliveryError`)."""
        assert self._loop is not None, "start() first"
        future: asyncio.Future[None] = self._loop.create_future()
        if not records:
            future.set_result(None)
            return future
        batch = _Batch(self, future, len(records))
        produce = self._producer.produce
        for r in records:
            kwargs: dict[str, Any] = {"key": r.key, "on_delivery": batch.delivered}
            if r.partition is not None:
                kwargs["partition"] = r.partition
            if r.headers:
                kwargs["headers"] = list(r.headers)
            while True:
                try:
                    produce(r.topic, r.value, **kwargs)
                    break
                except BufferError:
                    # the local queue is full: the delivery thread drains it (only that
                    # thread serves delivery reports, so this one waits instead of polling)
                    time.sleep(0.001)
        return future

    async def send(self, records: Sequence[OutRecord]) -> None:
        await self.send_nowait(records)

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        await asyncio.get_running_loop().run_in_executor(None, self._producer.flush, 10.0)
        if self._settled:
            settled, self._settled = self._settled, []
            _settle(settled)


def _settle(batches: list[_Batch]) -> None:
    for batch in batches:
        if batch.future.done():
            continue
        if batch.error is None:
            batch.future.set_result(None)
        else:
            batch.future.set_exception(DeliveryError(batch.error))


def _commit(consumer: Consumer, tps: list[TopicPartition]) -> None:
    try:
        consumer.commit(offsets=tps, asynchronous=False)
    except KafkaException as exc:
        log.warning("commit_failed", error=str(exc))


def _record(msg: Message) -> InRecord:
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return InRecord(topic, partition, offset, msg.key(), msg.value(), msg.timestamp()[1])


class RdConsumer:
    """A consumer-group member whose fetched batches reach the loop as they arrive."""

    def __init__(
        self,
        config: Mapping[str, Any],
        topics: Sequence[str],
        listener: RebalanceListener | None = None,
        *,
        batch_max: int = 500,
        depth: int = 2,
        on_batch: Callable[[list[InRecord]], None] | None = None,
        start_at: StartAt | None = None,
    ):
        self._consumer = Consumer(dict(config))
        self._topics = list(topics)
        self._listener = listener
        self._batch_max = batch_max
        self._slots = threading.Semaphore(depth)
        self._queue: asyncio.Queue[tuple[int, list[InRecord]] | BaseException] = asyncio.Queue()
        self._on_batch = on_batch
        self._hand_off: Callable[[tuple[int, list[InRecord]] | BaseException], None] = (
            self._queue.put_nowait if on_batch is None else self._handed
        )
        """How the consumer thread's batches and failures reach the loop: queued for
        :meth:`getmany`, or (``on_batch`` given) handed to ``on_batch`` by :meth:`_handed`."""
        self.failure: BaseException | None = None
        """With ``on_batch``: what stopped the consumer thread, if anything did."""
        self._start_at = start_at
        """Asked on the loop, when partitions are assigned, where to read them from: they are
        assigned at those offsets (:meth:`_positioned`). A seek from the listener cannot do it:
        librdkafka refuses to seek a partition whose fetching has not started (``_STATE``)."""
        self._assign_gen = 0
        """Consumer thread: the generation of the last assignment at ``start_at``'s offsets;
        every batch polled after it is stamped with at least this generation."""
        self._ops_lock = threading.Lock()
        self._ops: list[Callable[[Consumer], None]] = []
        """pause, resume and seek asked for by the loop: librdkafka's consumer is driven from
        its own thread only, which applies them before its next poll (and right after a
        rebalance callback's listener, which asks for them)."""
        self._op_gen = 0
        """Generation of the last operation asked for (loop side)."""
        self._seek_gens: dict[tuple[str, int], int] = {}
        """Per partition, the generation of its last seek: records of it in a batch stamped
        with an older generation were fetched before the seek, and are dropped."""
        self._lag: dict[tuple[str, int], int] = {}
        self._paused: set[tuple[str, int]] = set()
        """Paused partitions (loop side): whatever was fetched of them before is dropped."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self.assigned: set[tuple[str, int]] = set()

    # --- the consumer thread ----------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._consumer.subscribe(
            self._topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )  # fmt: skip
        self._thread = threading.Thread(target=self._serve, name="rdkafka-consume", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        loop = self._loop
        assert loop is not None
        consumer = self._consumer
        hand_off = self._hand_off
        while not self._stop.is_set():
            try:
                # before waiting for room: a loop awaiting a commit takes no batch meanwhile
                stamp = self._apply_ops()
            except Exception as exc:  # noqa: BLE001 - handed to the loop, which raises it
                loop.call_soon_threadsafe(hand_off, exc)
                return
            if not self._slots.acquire(timeout=CONSUMER_POLL_S):
                continue
            try:
                first = consumer.poll(CONSUMER_POLL_S)
            except Exception as exc:  # noqa: BLE001 - handed to the loop, which raises it
                loop.call_soon_threadsafe(hand_off, exc)
                return
            if first is None:
                self._slots.release()
                continue
            messages = [first]
            if self._batch_max > 1:
                messages += consumer.consume(self._batch_max - 1, 0)
            if self._assign_gen > stamp:
                # assigned at start_at's offsets during this poll: what it returned comes
                # after the assignment (the range assignor's protocol is eager: nothing was
                # assigned just before), from those offsets
                stamp = self._assign_gen
            batch: list[InRecord] = []
            for msg in messages:
                err = msg.error()
                if err is None:
                    batch.append(_record(msg))
                elif err.fatal():
                    loop.call_soon_threadsafe(hand_off, KafkaException(err))
                    return
                else:
                    log.warning("consumer_error", error=err.str(), code=err.code())
            if batch:
                loop.call_soon_threadsafe(hand_off, (stamp, batch))
            else:
                self._slots.release()

    def _apply_ops(self) -> int:
        """Apply the operations asked for so far (on the consumer thread); the generation
        every later batch is stamped with. librdkafka drops what it fetched before a seek or a
        pause, so a poll begun after them returns only records from the new position."""
        with self._ops_lock:
            ops, self._ops = self._ops, []
            gen = self._op_gen
        for op in ops:
            op(self._consumer)
        return gen

    def _ask(self, op: Callable[[Consumer], None]) -> int:
        with self._ops_lock:
            self._op_gen += 1
            self._ops.append(op)
            return self._op_gen

    def _run_listener(self, method: str, partitions: list[TopicPartition]) -> None:
        if self._listener is None or self._closing or self._loop is None:
            return
        tps = {(tp.topic, tp.partition) for tp in partitions}
        coroutine = getattr(self._listener, method)(tps)
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()
        self._apply_ops()  # what the listener asked for (pauses) before any fetch

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._start_at is not None:
            partitions = self._positioned(partitions)
        consumer.assign(partitions)  # assigned now, so that the listener may pause them
        self.assigned = {(tp.topic, tp.partition) for tp in partitions}
        self._run_listener("on_assigned", partitions)

    def _positioned(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """``partitions`` at the offsets ``start_at`` gives (asked on the loop, on the consumer
        thread's behalf). Whatever was fetched of them before (by an earlier assignment) is
        dropped on the loop's side, as for a seek: the new generation is recorded there
        before the listener hears of the assignment, and batches polled from now on carry
        it."""
        loop = self._loop
        if self._closing or loop is None or self._start_at is None:
            return partitions
        start_at = self._start_at
        tps = {(tp.topic, tp.partition) for tp in partitions}

        async def ask() -> Mapping[tuple[str, int], int]:
            return await start_at(tps)

        offsets = asyncio.run_coroutine_threadsafe(ask(), loop).result()
        with self._ops_lock:
            self._op_gen += 1
            gen = self._op_gen
        self._assign_gen = gen
        loop.call_soon_threadsafe(self._seek_gens.update, dict.fromkeys(tps, gen))
        return [
            TopicPartition(tp.topic, tp.partition, offsets.get((tp.topic, tp.partition), tp.offset))
            for tp in partitions
        ]

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._run_listener("on_revoked", partitions)
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self.assigned -= gone
        self._paused -= gone  # a partition assigned again starts unpaused
        consumer.unassign()  # the range assignor's protocol is eager: all of it goes

    # --- the loop's side --------------------------------------------------------------------

    async def getmany(self, timeout_ms: int) -> list[InRecord]:
        """The next fetched batch, or [] when none came within ``timeout_ms``."""
        try:
            got = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            try:
                got = await asyncio.wait_for(self._queue.get(), timeout_ms / 1000)
            except TimeoutError:
                return []
        if isinstance(got, BaseException):
            raise got
        self._slots.release()
        batch = self._current(*got)
        return batch

    def _current(self, stamp: int, batch: list[InRecord]) -> list[InRecord]:
        """``batch`` without the records fetched before a later seek of their partition, or
        of a partition paused since."""
        if not (self._seek_gens or self._paused):
            return batch
        gens, paused = self._seek_gens, self._paused
        return [
            r for r in batch
            if gens.get((r.topic, r.partition), 0) <= stamp
            and (r.topic, r.partition) not in paused
        ]  # fmt: skip

    def _handed(self, got: tuple[int, list[InRecord]] | BaseException) -> None:
        """One batch (or the consumer thread's failure) to ``on_batch``, on the loop: called
        by ``call_soon_threadsafe``, so a batch reaches it in one wake-up, with no queue and
        no task in between; the same records as :meth:`getmany` would return."""
        if isinstance(got, BaseException):
            self.failure = got
            log.error("consumer_failed", error=str(got))
            return
        self._slots.release()
        batch = self._current(*got)
        if batch and self._on_batch is not None:
            self._on_batch(batch)

    def pause(self, partitions: set[tuple[str, int]]) -> None:
        if partitions:
            self._paused |= partitions
            tps = [TopicPartition(t, p) for t, p in sorted(partitions)]
            self._ask(lambda c: c.pause(tps))

    def resume(self, partitions: set[tuple[str, int]]) -> None:
        if partitions:
            self._paused -= partitions
            tps = [TopicPartition(t, p) for t, p in sorted(partitions)]
            self._ask(lambda c: c.resume(tps))

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Fetch ``partition`` from ``offset`` on; nothing fetched before is returned after."""
        tp = TopicPartition(topic, partition, offset)
        self._seek_gens[(topic, partition)] = self._ask(lambda c: c.seek(tp))

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> bool:
        """Commit off the loop: the consumer thread commits before its next poll (and, on a
        revocation, before the partitions go), and the loop does not wait for it. A failed
        commit only means redelivery, which every consumer dedupes; it is logged."""
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        if tps:
            self._ask(lambda c: _commit(c, tps))
        return True

    async def lag(self) -> dict[tuple[str, int], int]:
        """The lag measured when last asked (the consumer thread measures it anew)."""
        tps = [TopicPartition(t, p) for t, p in sorted(self.assigned)]

        def measure(consumer: Consumer) -> None:
            out: dict[tuple[str, int], int] = {}
            for tp in consumer.position(tps) if tps else []:
                if tp.offset < 0:
                    continue
                _, high = consumer.get_watermark_offsets(tp, cached=True)
                if high is not None and high >= 0:
                    out[(tp.topic, tp.partition)] = max(0, high - tp.offset)
            self._lag = out

        self._ask(measure)
        return dict(self._lag)

    async def stop(self) -> None:
        self._closing = True
        self._stop.set()
        loop = asyncio.get_running_loop()
        if self._thread is not None:
            self._slots.release()
            await loop.run_in_executor(None, self._thread.join)
        await loop.run_in_executor(None, self._consumer.close)


WATERMARK_ATTEMPTS_MAX = 8
"""Tries of a watermark query that fails retriably (no leader yet on a topic just created, a
leader moving): 0.1 s, then doubling to 2 s between them, about 10 s in all."""


_WATERMARK_RETRIABLE = frozenset({
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.REQUEST_TIMED_OUT, KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
})  # fmt: skip


def _watermarks(reader: Any, tp: TopicPartition) -> tuple[int, int]:
    for attempt in range(1, WATERMARK_ATTEMPTS_MAX + 1):
        try:
            marks = reader.get_watermark_offsets(tp, timeout=10)
            if marks is None:
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT))
            low, high = marks
            return int(low), int(high)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            retriable = isinstance(err, KafkaError) and (
                err.retriable() or err.code() in _WATERMARK_RETRIABLE
            )
            if not retriable or attempt == WATERMARK_ATTEMPTS_MAX:
                raise
            time.sleep(min(2.0, 0.1 * 2 ** (attempt - 1)))
    raise AssertionError("unreachable")


def read_to_end(
    config: Mapping[str, Any], topic: str, partitions: set[int], batch_max: int = 5000
) -> list[InRecord]:
    """Every record of ``partitions`` from the beginning to the end they had when asked
    (blocking: run it on an executor)."""
    if not partitions:
        return []
    reader = Consumer({**config, "enable.auto.commit": False})
    out: list[InRecord] = []
    try:
        ends: dict[int, int] = {}
        for p in sorted(partitions):
            low, high = _watermarks(reader, TopicPartition(topic, p))
            if high > low:
                ends[p] = high
        if not ends:
            return out
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(ends)])
        while ends:
            for msg in reader.consume(batch_max, POLL_S):
                err = msg.error()
                if err is not None:
                    if err.fatal():
                        raise KafkaException(err)
                    continue
                part, offset = msg.partition(), msg.offset()
                assert part is not None and offset is not None
                if part not in ends:
                    continue
                end = ends[part]
                if offset < end:
                    out.append(_record(msg))
                if offset + 1 >= end:
                    del ends[part]
    finally:
        reader.close()
    return out


__all__ = [
    "DeliveryError",
    "RdConsumer",
    "RdProducer",
    "consumer_config",
    "producer_config",
    "read_to_end",
]


END_OFFSET_WAIT_S = 30.0
"""Longest the end offsets of an assignment's partitions are asked for (a topic just created
has no leader for a moment); a partition whose end is not known by then is not read."""
_UNREAD = 1 << 63
"""The floor of a partition not read from a known end: every record of it is dropped."""


class RdTailConsumer(RdConsumer):
    """A consumer-group member that reads every partition it is assigned from the end that
    partition had at the assignment, hands each fetched batch to ``on_batch`` on the loop in
    one wake-up, and never commits (the ingress's outcome consumer).

    On an assignment, the consumer thread reads each partition's end offset (its high
    watermark, from the partition's leader) and assigns the partition at that offset, then
    runs the listener's ``on_assigned``: when it runs, the partitions are positioned at their
    ends. On the loop's side each partition has a floor, that end offset, set before
    ``on_assigned`` runs and removed before ``on_revoked`` runs: a record below its
    partition's floor, or of a partition without one, is dropped, so nothing fetched before
    an assignment (of an earlier one, or from another position) is handed over after it. The
    listener's calls and the batches reach the loop in the order the thread sends them.

    ``pause``, ``seek`` and ``commit`` are not for it."""

    def __init__(
        self,
        config: Mapping[str, Any],
        topics: Sequence[str],
        listener: RebalanceListener | None,
        *,
        on_batch: Callable[[list[InRecord]], None],
        batch_max: int = 500,
        depth: int = 2,
        end_wait_s: float = END_OFFSET_WAIT_S,
    ):
        super().__init__(
            config, topics, listener, batch_max=batch_max, depth=depth, on_batch=self._fresh
        )
        self._deliver = on_batch
        self._end_wait_s = end_wait_s
        self._floors: dict[tuple[str, int], int] = {}
        """Loop side: per partition read, the offset it is read from."""

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive() and self.failure is None

    def _fresh(self, batch: list[InRecord]) -> None:
        floors = self._floors
        fresh = [r for r in batch if r.offset >= floors.get((r.topic, r.partition), _UNREAD)]
        if fresh:
            self._deliver(fresh)

    def _end_of(
        self, consumer: Consumer, topic: str, partition: int, deadline: float
    ) -> int | None:
        """The partition's end offset, asked of its leader (on the consumer thread)."""
        error = "timed out"
        while not self._stop.is_set():
            try:
                marks = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=5.0, cached=False
                )
                if marks is not None:
                    return int(marks[1])
            except KafkaException as exc:
                error = str(exc)
            if time.monotonic() >= deadline:
                break
            self._stop.wait(0.2)
        log.error("end_offset_unknown", topic=topic, partition=partition, error=error)
        return None

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        ends: dict[tuple[str, int], int] = {}
        deadline = time.monotonic() + self._end_wait_s
        for tp in partitions:
            end = self._end_of(consumer, tp.topic, tp.partition, deadline)
            if end is not None:
                ends[(tp.topic, tp.partition)] = end
        read = [TopicPartition(t, p, offset) for (t, p), offset in sorted(ends.items())]
        consumer.assign(read)
        self.assigned = set(ends)
        loop = self._loop
        assert loop is not None
        loop.call_soon_threadsafe(self._floors.update, ends)  # before the listener hears
        self._run_listener("on_assigned", read)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            gone = [(tp.topic, tp.partition) for tp in partitions]
            loop.call_soon_threadsafe(self._unread, gone)  # before the listener hears
        super()._on_revoke(consumer, partitions)

    def _unread(self, partitions: list[tuple[str, int]]) -> None:
        for tp in partitions:
            self._floors.pop(tp, None)


__all__ += ["RdTailConsumer"]
