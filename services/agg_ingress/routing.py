"""Request-reply over Kafka: publish a callback to ``agg.requests`` and wait for its outcome.

Routing. Every ingress instance has an ``instance_id`` (fresh per process) and joins the
consumer group ``agg-ingress-outcomes`` on ``agg.outcomes``; the group spreads the topic's
partitions over the live instances. An instance names in each request it publishes
``reply_to = instance_id`` and ``reply_partition =`` the lowest partition it owns, and the saga
produces the outcome to exactly that partition. So the outcome reaches the one consumer that
waits for it, with no broadcast, no shared store and no per-request topic. Outcomes are read
from the end of each assigned partition (the instance seeks to the end when it is assigned a
partition, and only then offers it as a reply partition); offsets are never committed, since
nothing is replayed after a restart: a new process has a new ``instance_id``.

While an instance owns no partition (start-up, more instances than partitions), it refuses
callbacks with 503 RETRY_LATER and ``/healthz`` is not ready. When a partition is revoked,
the callbacks waiting on it time out (503 RETRY_LATER, safe to retry: the saga dedupes by
provider transaction id and answers a retry with the original outcome).

Matching. A waiting callback registers a future under ``(provider_id, operator_id,
player_id, request_id, correlation_id)``; an outcome resolves every future under its key, and
only outcomes whose ``reply_to`` is this instance are looked at. The correlation id is derived
from the callback's content and its owner (see :func:`correlation_id`), so two concurrent
identical callbacks (a provider retrying before the first answer) wait for the same outcome,
while two different callbacks that reuse a request id, or the same callback for two players
(a provider's request ids are its own, and the same player id may exist at two operators),
are never answered with each other's outcome. The number of futures is bounded by
``ingress_pending_count_max`` (503 beyond).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from prometheus_client import Gauge

from agg_avro import AvroCodec, AvroDecodeError
from agg_config.settings import Settings
from agg_domain.ids import derive_id
from agg_domain.statuses import Status
from agg_ingress.protocol import Callback
from agg_kafka.clients import make_consumer, make_producer
from agg_kafka.topics import TopicNames
from agg_obs.logs import get_logger

log = get_logger("ingress")

GROUP_ID = "agg-ingress-outcomes"
OWNED = Gauge(
    "agg_ingress_owned_outcome_partitions", "Partitions of agg.outcomes this instance owns"
)
PENDING = Gauge("agg_ingress_pending_waits", "Callbacks waiting for their outcome")

WaitKey = tuple[str, str, str, str, str]
"""(provider_id, operator_id, player_id, request_id, correlation_id)"""


def correlation_id(provider_id: str, operator_id: str, callback: Callback) -> str:
    """Deterministic: the same callback sent twice (a retry with the same request id) gets the
    same correlation id, so both copies share one trace and one outcome; a different callback
    under a reused request id, or the same one for another player or operator, gets another
    one. Duplicates of a money movement are caught by the saga by transaction id, never by
    this id."""
    c = callback
    return derive_id(
        "corr", provider_id, operator_id, c.request_id, c.action.value, c.player_id,
        c.transaction_id or "", c.reference_transaction_id or "", c.round_id or "",
        c.game_id or "", "" if c.amount is None else c.amount, c.currency or "",
        int(c.round_closed),
    )  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    status: Status
    balance: int | None
    currency: str
    transaction_id: str | None


class OutcomeRouter:
    """The ingress's Kafka side: one idempotent producer, one outcome consumer, the waiters."""

    def __init__(self, settings: Settings, instance_id: str):
        self.settings = settings
        self.instance_id = instance_id
        self.names = TopicNames(settings.topic_prefix)
        self.codec = AvroCodec()
        self.producer = make_producer(settings, client_id=f"{instance_id}-producer")
        self.consumer: AIOKafkaConsumer | None = None
        self.owned: set[int] = set()
        self.waiting: dict[WaitKey, list[asyncio.Future[Outcome]]] = {}
        self.pending_count = 0
        self.producer_started = False
        self._task: asyncio.Task[None] | None = None

    # --- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        router = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
                router._set_owned(router.owned - {tp.partition for tp in revoked})

            async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
                await router._take(list(assigned))

        await self.producer.start()
        self.producer_started = True
        self.consumer = make_consumer(
            self.settings,
            group_id=GROUP_ID,
            client_id=self.instance_id,
            auto_offset_reset="latest",
        )
        await self.consumer.start()
        self.consumer.subscribe([self.names.outcomes], listener=Listener())
        self._task = asyncio.create_task(self._consume(), name="ingress-outcomes")
        log.event("ingress_kafka_started", instance_id=self.instance_id, group=GROUP_ID)

    async def stop(self) -> None:
        self._set_owned(set())
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.consumer is not None:
            await self.consumer.stop()
        self.producer_started = False
        await self.producer.stop()
        for futures in self.waiting.values():
            for fut in futures:
                fut.cancel()
        self.waiting.clear()

    @property
    def reply_partition(self) -> int | None:
        return min(self.owned) if self.owned else None

    @property
    def ready(self) -> bool:
        return (
            self.producer_started
            and self.reply_partition is not None
            and self._task is not None
            and not self._task.done()
        )

    def _set_owned(self, partitions: set[int]) -> None:
        self.owned = partitions
        OWNED.set(len(partitions))

    async def _take(self, assigned: list[TopicPartition]) -> None:
        """Read newly assigned partitions from their end, then offer them as reply partitions:
        an outcome to a request published afterwards is then never before the position."""
        consumer = self.consumer
        if consumer is None or not assigned:
            self._set_owned(set())
            return
        await consumer.seek_to_end(*assigned)
        for tp in assigned:
            await consumer.position(tp)
        self._set_owned({tp.partition for tp in assigned})
        log.event(
            "outcome_partitions_assigned",
            instance_id=self.instance_id,
            partitions=sorted(self.owned),
            reply_partition=self.reply_partition,
        )

    # --- waiting --------------------------------------------------------------------------

    def wait_for(self, key: WaitKey) -> asyncio.Future[Outcome] | None:
        """A future for the outcome under ``key``, or None when too many already wait."""
        if self.pending_count >= self.settings.ingress_pending_count_max:
            return None
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(key, []).append(fut)
        self.pending_count += 1
        PENDING.set(self.pending_count)
        return fut

    def forget(self, key: WaitKey, fut: asyncio.Future[Outcome]) -> None:
        futures = self.waiting.get(key)
        if futures is not None and fut in futures:
            futures.remove(fut)
            if not futures:
                del self.waiting[key]
        self.pending_count -= 1
        PENDING.set(self.pending_count)

    async def publish(
        self, topic: str, key: bytes, value: bytes, partition: int | None = None
    ) -> None:
        """Send and wait for the acks=all acknowledgement."""
        await self.producer.send_and_wait(topic, value, key=key, partition=partition)

    # --- outcomes -------------------------------------------------------------------------

    async def _consume(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        while True:
            batch = await consumer.getmany(timeout_ms=1_000)
            for records in batch.values():
                for record in records:
                    self._deliver(record)

    def _deliver(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if record.value is None:
            return
        try:
            datum: dict[str, Any] = self.codec.decode(
                record.value, "casino.agg.ProviderOutcome"
            ).datum
        except AvroDecodeError as exc:
            # the waiting callback (if any) times out with RETRY_LATER; the saga's decision
            # itself is in the journal, so nothing is lost by skipping the message
            log.error("outcome_undecodable", partition=record.partition,
                      offset=record.offset, reason=str(exc))  # fmt: skip
            return
        if datum.get("reply_to") != self.instance_id:
            return
        key = (datum["provider_id"], datum["operator_id"], datum["player_id"],
               datum["request_id"], datum["correlation_id"])  # fmt: skip
        futures = self.waiting.pop(key, None)
        if not futures:
            return  # already answered (an earlier copy) or timed out
        outcome = Outcome(
            status=Status(datum["status"]),
            balance=datum["balance"],
            currency=datum["currency"],
            transaction_id=datum["transaction_id"],
        )
        for fut in futures:
            if not fut.done():
                fut.set_result(outcome)
