"""The ingress's Kafka clients, on the client ``settings.kafka_client`` names, behind one
interface (:class:`ReplyClients`):

- ``publish``: one record to a topic, returned once acknowledged (``acks=all``, idempotence);
  :class:`PublishError` when the broker did not take it.
- one member of a consumer group on one topic that reads every partition it is assigned from
  the end the partition had at the assignment and never commits. Its
  :class:`ReplyListener` hears, on the loop: ``on_assigned`` once the partitions are
  positioned at their ends, ``on_revoked`` before they go, and ``on_records`` with the
  fetched records, none of them from before its partition's end at the assignment.

:class:`RdReplyClients` (librdkafka, :mod:`agg_kafka.rdkafka`): the request is enqueued on the
loop's thread and its acknowledgement comes back with the delivery thread's one wake-up; the
consumer thread hands each fetched batch to ``on_records`` in one ``call_soon_threadsafe``
(no queue, no task in between, no timer). :class:`AioReplyClients` (aiokafka): a task
awaiting ``getmany``, and ``seek_to_end`` then ``position`` in the rebalance listener.

Both consumers use the round-robin assignor (aiokafka's default), so instances on either
client can be members of one group at once (while instances are switched over, say): members
without an assignor in common are refused by the group coordinator.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from confluent_kafka import KafkaException

from agg_config.settings import Settings
from agg_kafka.clients import make_consumer, make_producer
from agg_kafka.rdkafka import (
    DeliveryError,
    RdProducer,
    RdTailConsumer,
    consumer_config,
    producer_config,
)
from agg_ports.transport import InRecord, OutRecord

ASSIGNOR = "roundrobin"
"""librdkafka's name of the assignor aiokafka's consumers use by default."""


class PublishError(Exception):
    """The broker did not take a record (after the client's own retries)."""


class ReplyListener(Protocol):
    """What the clients tell their user, always on the event loop."""

    def on_assigned(self, partitions: set[int]) -> None:
        """Assigned, and read from the end they had at the assignment."""
        ...

    def on_revoked(self, partitions: set[int]) -> None:
        """About to go: nothing more of them is handed over until assigned again."""
        ...

    def on_records(self, records: list[InRecord]) -> None: ...


class ReplyClients(Protocol):
    async def start(self, topic: str, listener: ReplyListener) -> None: ...

    async def stop(self) -> None: ...

    async def publish(
        self, topic: str, key: bytes, value: bytes, partition: int | None = None
    ) -> None: ...

    @property
    def producing(self) -> bool:
        """The producer runs."""
        ...

    @property
    def consuming(self) -> bool:
        """The consumer runs (it has not stopped or failed)."""
        ...


class AioReplyClients:
    def __init__(self, settings: Settings, *, group_id: str, client_id: str):
        self.settings = settings
        self.group_id = group_id
        self.client_id = client_id
        self.producer = make_producer(settings, client_id=f"{client_id}-producer")
        self.consumer: AIOKafkaConsumer | None = None
        self._producing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def producing(self) -> bool:
        return self._producing

    @property
    def consuming(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self, topic: str, listener: ReplyListener) -> None:
        consumer = make_consumer(
            self.settings,
            group_id=self.group_id,
            client_id=self.client_id,
            auto_offset_reset="latest",
        )

        class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                listener.on_revoked({tp.partition for tp in revoked})

            async def on_partitions_assigned(self, assigned: Any) -> None:
                tps = list(assigned)
                if tps:
                    await consumer.seek_to_end(*tps)
                    for tp in tps:
                        await consumer.position(tp)  # the end, resolved
                listener.on_assigned({tp.partition for tp in tps})

        await self.producer.start()
        self._producing = True
        self.consumer = consumer
        await consumer.start()
        consumer.subscribe([topic], listener=Rebalance())
        self._task = asyncio.create_task(self._consume(consumer, listener), name="reply-consumer")

    async def _consume(self, consumer: AIOKafkaConsumer, listener: ReplyListener) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=1_000)
            records = [
                InRecord(tp.topic, tp.partition, r.offset, r.key, r.value, r.timestamp)
                for tp, rs in batch.items()
                for r in rs
            ]
            if records:
                listener.on_records(records)

    async def publish(
        self, topic: str, key: bytes, value: bytes, partition: int | None = None
    ) -> None:
        try:
            await self.producer.send_and_wait(topic, value, key=key, partition=partition)
        except KafkaError as exc:
            raise PublishError(str(exc)) from exc

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            if self.consumer is not None:
                await self.consumer.stop()
        finally:
            self._producing = False
            await self.producer.stop()


class _Rebalance:
    """The port's rebalance listener over a :class:`ReplyListener` (run on the loop)."""

    def __init__(self, listener: ReplyListener):
        self.listener = listener

    async def on_revoked(self, partitions: set[tuple[str, int]]) -> None:
        self.listener.on_revoked({p for _, p in partitions})

    async def on_assigned(self, partitions: set[tuple[str, int]]) -> None:
        self.listener.on_assigned({p for _, p in partitions})


class RdReplyClients:
    def __init__(self, settings: Settings, *, group_id: str, client_id: str):
        self.settings = settings
        self.group_id = group_id
        self.client_id = client_id
        self.producer = RdProducer(producer_config(settings, client_id=f"{client_id}-producer"))
        self.consumer: RdTailConsumer | None = None
        self._producing = False

    @property
    def producing(self) -> bool:
        return self._producing

    @property
    def consuming(self) -> bool:
        return self.consumer is not None and self.consumer.running

    async def start(self, topic: str, listener: ReplyListener) -> None:
        self.producer.start()
        self._producing = True
        config = consumer_config(
            self.settings, group_id=self.group_id, client_id=self.client_id,
            **{"partition.assignment.strategy": ASSIGNOR},
        )  # fmt: skip
        self.consumer = RdTailConsumer(
            config, [topic], _Rebalance(listener), on_batch=listener.on_records
        )
        self.consumer.start()

    async def publish(
        self, topic: str, key: bytes, value: bytes, partition: int | None = None
    ) -> None:
        try:
            await self.producer.send_nowait((OutRecord(topic, key, value, partition),))
        except (DeliveryError, KafkaException) as exc:
            raise PublishError(str(exc)) from exc

    async def stop(self) -> None:
        try:
            if self.consumer is not None:
                await self.consumer.stop()
        finally:
            self._producing = False
            await self.producer.stop()


def make_reply_clients(settings: Settings, *, group_id: str, client_id: str) -> ReplyClients:
    """The clients on ``settings.kafka_client``."""
    if settings.kafka_client == "librdkafka":
        return RdReplyClients(settings, group_id=group_id, client_id=client_id)
    return AioReplyClients(settings, group_id=group_id, client_id=client_id)
