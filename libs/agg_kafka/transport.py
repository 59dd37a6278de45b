"""The production adapters of :class:`agg_ports.Transport`, on aiokafka and on librdkafka:
one consumer-group member (range assignor, so co-partitioned topics move together), one
idempotent producer with ``acks=all``, and a throw-away reader for reading a partition to
its end.

Beyond the port, both adapters offer ``send``: it enqueues the records at once, in call
order, and returns an awaitable that is done when every one is acknowledged, so that a
consumer can go on with its next batch while the previous one's records are on their way
(the wallet does), and ``start_at``: where newly assigned partitions are to be read from
instead of the committed offsets, applied before the listener hears of the assignment (the
projector's positions, stored with its rows)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, IllegalStateError

from agg_config.settings import Settings
from agg_kafka.clients import consumer_lag, make_consumer, make_producer
from agg_ports.transport import OFFSET_BEGINNING, InRecord, OutRecord, RebalanceListener, StartAt


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic_s(self) -> float:
        return time.monotonic()


def _tps(tps: Any) -> set[tuple[str, int]]:
    return {(tp.topic, tp.partition) for tp in tps}


class KafkaTransport:
    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str,
        client_id: str,
        batch_max: int | None = None,
        instance_id: str | None = None,
        start_at: StartAt | None = None,
    ):
        self.settings = settings
        self.group_id = group_id
        self.client_id = client_id
        self.batch_max = batch_max or settings.saga_batch_count_max
        self.instance_id = instance_id
        self.producer: AIOKafkaProducer = make_producer(settings, client_id=f"{client_id}-producer")
        self.start_at = start_at
        """Where newly assigned partitions are read from, sought before the listener hears
        of them (``OFFSET_BEGINNING``: ``seek_to_beginning``)."""
        self.consumer: AIOKafkaConsumer | None = None
        self._enqueue = asyncio.Lock()
        """Held while one ``send`` enqueues: tasks take an asyncio lock in the order they
        asked for it, so records reach the producer in call order."""

    async def start(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        transport = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                await listener.on_revoked(_tps(revoked))

            async def on_partitions_assigned(self, assigned: Any) -> None:
                if transport.start_at is not None:
                    await transport._position(_tps(assigned))
                await listener.on_assigned(_tps(assigned))

        self.consumer = make_consumer(
            self.settings,
            group_id=self.group_id,
            client_id=self.client_id,
            partition_assignment_strategy=(RangePartitionAssignor,),
            max_poll_records=self.batch_max,
            **({"group_instance_id": self.instance_id} if self.instance_id else {}),
        )
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe(list(topics), listener=Listener())

    async def stop(self) -> None:
        try:
            if self.consumer is not None:
                await self.consumer.stop()
        finally:
            await self.producer.stop()

    def _consumer(self) -> AIOKafkaConsumer:
        assert self.consumer is not None, "start() first"
        return self.consumer

    async def _position(self, partitions: set[tuple[str, int]]) -> None:
        """Newly assigned ``partitions`` at ``start_at``'s offsets. aiokafka fetches while its
        listener runs: the partitions are paused meanwhile (before the first await), so that
        nothing fetched from the committed offsets is returned, and resumed once sought."""
        assert self.start_at is not None
        consumer = self._consumer()
        tps = [TopicPartition(t, p) for t, p in sorted(partitions)]
        if not tps:
            return
        consumer.pause(*tps)
        offsets = await self.start_at(partitions)
        beginning = []
        for tp in tps:
            offset = offsets.get((tp.topic, tp.partition))
            if offset == OFFSET_BEGINNING:
                beginning.append(tp)
            elif offset is not None:
                consumer.seek(tp, offset)
        if beginning:
            await consumer.seek_to_beginning(*beginning)
        consumer.resume(*tps)

    async def poll(self, timeout_ms: int, max_records: int) -> list[InRecord]:
        batch = await self._consumer().getmany(timeout_ms=timeout_ms, max_records=max_records)
        return [
            InRecord(tp.topic, tp.partition, r.offset, r.key, r.value, r.timestamp)
            for tp, records in batch.items()
            for r in records
        ]

    def assignment(self) -> set[tuple[str, int]]:
        return _tps(self._consumer().assignment())

    def pause(self, partitions: set[tuple[str, int]]) -> None:
        self._consumer().pause(*(TopicPartition(t, p) for t, p in partitions))

    def resume(self, partitions: set[tuple[str, int]]) -> None:
        self._consumer().resume(*(TopicPartition(t, p) for t, p in partitions))

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self._consumer().seek(TopicPartition(topic, partition), offset)

    async def produce(self, records: Sequence[OutRecord]) -> None:
        await self.send(records)

    def send(self, records: Sequence[OutRecord]) -> asyncio.Future[None]:
        """``produce`` without waiting: enqueued in call order, done when acknowledged."""

        async def enqueue_then_wait() -> None:
            send = self.producer.send
            async with self._enqueue:
                futures = []
                for r in records:
                    headers = list(r.headers) or None
                    sent = await send(r.topic, r.value, key=r.key, partition=r.partition,
                                      headers=headers)  # fmt: skip
                    futures.append(sent)
            if futures:
                await asyncio.gather(*futures)

        return asyncio.ensure_future(enqueue_then_wait())

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> bool:
        consumer = self._consumer()
        assigned = self.assignment()
        wanted = {TopicPartition(t, p): o for (t, p), o in offsets.items() if (t, p) in assigned}
        if not wanted:
            return True
        try:
            await consumer.commit(wanted)
        except (CommitFailedError, IllegalStateError):
            return False
        return True

    async def read_to_end(self, topic: str, partitions: set[int]) -> list[InRecord]:
        if not partitions:
            return []
        reader = make_consumer(
            self.settings, group_id=None, client_id=f"{self.client_id}-restore",
            isolation_level="read_uncommitted",
        )  # fmt: skip
        await reader.start()
        out: list[InRecord] = []
        try:
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            ends = await reader.end_offsets(tps)
            remaining = {tp for tp in tps if ends[tp] > 0}
            while remaining:
                batch = await reader.getmany(*remaining, timeout_ms=1000)
                for tp, records in batch.items():
                    for r in records:
                        if r.offset < ends[tp]:
                            out.append(
                                InRecord(
                                    tp.topic, tp.partition, r.offset, r.key, r.value, r.timestamp
                                )
                            )
                        if r.offset + 1 >= ends[tp]:
                            remaining.discard(tp)
        finally:
            await reader.stop()
        return out

    async def lag(self) -> dict[tuple[str, int], int]:
        lag = await consumer_lag(self._consumer())
        return {(tp.topic, tp.partition): n for tp, n in lag.items()}


class RdKafkaTransport:
    """The same port on librdkafka (:mod:`agg_kafka.rdkafka`): fetched batches and delivery
    reports reach the loop as they happen, commits run off the loop."""

    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str,
        client_id: str,
        batch_max: int | None = None,
        instance_id: str | None = None,
        start_at: StartAt | None = None,
    ):
        from agg_kafka.rdkafka import RdProducer, producer_config

        self.settings = settings
        self.group_id = group_id
        self.client_id = client_id
        self.batch_max = batch_max or settings.saga_batch_count_max
        self.instance_id = instance_id
        self.producer = RdProducer(producer_config(settings, client_id=f"{client_id}-producer"))
        self.start_at = start_at
        self.consumer: Any = None

    async def start(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        from agg_kafka.rdkafka import RdConsumer, consumer_config

        self.producer.start()
        overrides = {"group.instance.id": self.instance_id} if self.instance_id else {}
        config = consumer_config(
            self.settings, group_id=self.group_id, client_id=self.client_id, **overrides
        )
        self.consumer = RdConsumer(
            config, topics, listener, batch_max=self.batch_max, start_at=self.start_at
        )
        self.consumer.start()

    async def stop(self) -> None:
        try:
            if self.consumer is not None:
                await self.consumer.stop()
        finally:
            await self.producer.stop()

    async def poll(self, timeout_ms: int, max_records: int) -> list[InRecord]:
        records: list[InRecord] = await self.consumer.getmany(timeout_ms)
        return records

    def assignment(self) -> set[tuple[str, int]]:
        return set(self.consumer.assigned)

    def pause(self, partitions: set[tuple[str, int]]) -> None:
        self.consumer.pause(partitions)

    def resume(self, partitions: set[tuple[str, int]]) -> None:
        self.consumer.resume(partitions)

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self.consumer.seek(topic, partition, offset)

    async def produce(self, records: Sequence[OutRecord]) -> None:
        await self.producer.send(records)

    def send(self, records: Sequence[OutRecord]) -> asyncio.Future[None]:
        """``produce`` without waiting: enqueued now, done when acknowledged."""
        return self.producer.send_nowait(records)

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> bool:
        assigned = self.assignment()
        ok: bool = await self.consumer.commit(
            {tp: o for tp, o in offsets.items() if tp in assigned}
        )
        return ok

    async def read_to_end(self, topic: str, partitions: set[int]) -> list[InRecord]:
        from agg_kafka.rdkafka import consumer_config, read_to_end

        config = consumer_config(
            self.settings, group_id=f"{self.group_id}-restore",
            client_id=f"{self.client_id}-restore", **{"isolation.level": "read_uncommitted"},
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, read_to_end, config, topic, partitions)

    async def lag(self) -> dict[tuple[str, int], int]:
        lag: dict[tuple[str, int], int] = await self.consumer.lag()
        return lag


def make_transport(
    settings: Settings,
    *,
    group_id: str,
    client_id: str,
    batch_max: int | None = None,
    instance_id: str | None = None,
    start_at: StartAt | None = None,
) -> Any:
    """The port on the client ``settings.kafka_client`` names; ``batch_max`` records per poll
    at most (default the saga's), ``instance_id`` for static group membership, ``start_at``
    where newly assigned partitions are read from (default: after the committed offsets),
    applied before the listener's ``on_assigned``."""
    kind = RdKafkaTransport if settings.kafka_client == "librdkafka" else KafkaTransport
    return kind(
        settings, group_id=group_id, client_id=client_id, batch_max=batch_max,
        instance_id=instance_id, start_at=start_at,
    )  # fmt: skip
