"""Request-reply over Kafka: publish a callback to ``agg.requests`` and wait for its outcome.

Routing. Every ingress instance has an ``instance_id`` (fresh per process) and joins the
consumer group ``agg-ingress-outcomes`` on ``agg.outcomes``; the group spreads the topic's
partitions over the live instances. An instance names in each request it publishes
``reply_to = instance_id`` and ``reply_partition =`` the lowest partition it owns, and the saga
produces the outcome to exactly that partition. So the outcome reaches the one consumer that
waits for it, with no broadcast, no shared store and no per-request topic. Outcomes are read
from the end of each assigned partition (the instance positions its consumer at the end a
partition has when it is assigned, and only once that has taken effect offers it as a reply
partition; nothing fetched before is handed over); offsets are never committed, since
nothing is replayed after a restart: a new process has a new ``instance_id``.

The Kafka clients are those ``AGG_KAFKA_CLIENT`` names, librdkafka (the default) or aiokafka,
behind :mod:`agg_kafka.reply`: the request is acknowledged with ``acks=all`` and idempotence;
on librdkafka an outcome reaches its waiting callback with one wake-up of the event loop (the
consumer thread hands each fetched batch over in one ``call_soon_threadsafe``, which resolves
the waiters' futures), on aiokafka through the task awaiting ``getmany``.

While an instance owns no partition (start-up, more instances than partitions), it refuses
callbacks with 503 RETRY_LATER and ``/healthz`` is not ready. When a partition is revoked,
the callbacks waiting on it time out at once (503 RETRY_LATER, safe to retry: the saga dedupes
by provider transaction id and answers a retry with the original outcome); their outcomes go
to the partition's next owner.

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
from dataclasses import dataclass
from typing import Any

from prometheus_client import Gauge

from agg_avro import AvroCodec, AvroDecodeError
from agg_config.settings import Settings
from agg_domain.ids import derive_id
from agg_domain.statuses import Status
from agg_ingress.protocol import Callback
from agg_kafka.reply import ReplyClients, make_reply_clients
from agg_kafka.topics import TopicNames
from agg_obs.logs import get_logger
from agg_ports.transport import InRecord

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
    amount: int | None = None
    """For a transfer: the amount moved."""


class ReplyPartitionRevoked(TimeoutError):
    """The partition a callback waits on was revoked: its outcome will not come here."""


class OutcomeRouter:
    """The ingress's Kafka side: the clients (one idempotent producer, one outcome consumer, on
    the client ``settings.kafka_client`` names, :mod:`agg_kafka.reply`) and the waiters. The
    clients call its ``on_assigned``, ``on_revoked`` and ``on_records`` on the loop."""

    def __init__(self, settings: Settings, instance_id: str, *, group_id: str = GROUP_ID):
        self.settings = settings
        self.instance_id = instance_id
        self.group_id = group_id
        self.names = TopicNames(settings.topic_prefix)
        self.codec = AvroCodec()
        self.clients: ReplyClients = make_reply_clients(
            settings, group_id=group_id, client_id=instance_id
        )
        self.owned: set[int] = set()
        self.waiting: dict[WaitKey, list[asyncio.Future[Outcome]]] = {}
        self.waiting_on: dict[asyncio.Future[Outcome], int] = {}
        """The reply partition each waiting future named."""
        self.pending_count = 0

    # --- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        await self.clients.start(self.names.outcomes, self)
        log.event("ingress_kafka_started", instance_id=self.instance_id, group=self.group_id,
                  kafka_client=self.settings.kafka_client)  # fmt: skip

    async def stop(self) -> None:
        self._set_owned(set())
        await self.clients.stop()
        for futures in self.waiting.values():
            for fut in futures:
                fut.cancel()
        self.waiting.clear()
        self.waiting_on.clear()

    @property
    def producer_started(self) -> bool:
        return self.clients.producing

    @property
    def reply_partition(self) -> int | None:
        return min(self.owned) if self.owned else None

    @property
    def ready(self) -> bool:
        return self.producer_started and self.reply_partition is not None and self.clients.consuming

    def _set_owned(self, partitions: set[int]) -> None:
        self.owned = partitions
        OWNED.set(len(partitions))

    def on_assigned(self, partitions: set[int]) -> None:
        """The clients read these partitions from the end they had when assigned: an outcome to
        a request published from now on is never before the position, so they are offered."""
        if not partitions:
            return
        self._set_owned(self.owned | partitions)
        log.event(
            "outcome_partitions_assigned",
            instance_id=self.instance_id,
            partitions=sorted(self.owned),
            reply_partition=self.reply_partition,
        )

    def on_revoked(self, partitions: set[int]) -> None:
        """No longer offered; the callbacks waiting on them time out now (their outcomes go to
        the partitions' next owner, which is not waiting for them)."""
        self._set_owned(self.owned - partitions)
        ended = 0
        for fut, partition in self.waiting_on.items():
            if partition in partitions and not fut.done():
                fut.set_exception(ReplyPartitionRevoked(partition))
                ended += 1
        if partitions:
            log.event("outcome_partitions_revoked", instance_id=self.instance_id,
                      partitions=sorted(partitions), waits_ended=ended)  # fmt: skip

    # --- waiting --------------------------------------------------------------------------

    def wait_for(self, key: WaitKey, partition: int) -> asyncio.Future[Outcome] | None:
        """A future for the outcome under ``key``, to come on reply partition ``partition``, or
        None when too many already wait. It raises :class:`ReplyPartitionRevoked` (a
        ``TimeoutError``) if that partition is revoked first."""
        if self.pending_count >= self.settings.ingress_pending_count_max:
            return None
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(key, []).append(fut)
        self.waiting_on[fut] = partition
        self.pending_count += 1
        PENDING.set(self.pending_count)
        return fut

    def forget(self, key: WaitKey, fut: asyncio.Future[Outcome]) -> None:
        futures = self.waiting.get(key)
        if futures is not None and fut in futures:
            futures.remove(fut)
            if not futures:
                del self.waiting[key]
        self.waiting_on.pop(fut, None)
        if fut.done() and not fut.cancelled():
            fut.exception()  # seen: a revocation may end a wait whose publish then failed
        self.pending_count -= 1
        PENDING.set(self.pending_count)

    async def publish(
        self, topic: str, key: bytes, value: bytes, partition: int | None = None
    ) -> None:
        """Send and wait for the acks=all acknowledgement (:class:`PublishError` if refused)."""
        await self.clients.publish(topic, key, value, partition)

    # --- outcomes -------------------------------------------------------------------------

    def on_records(self, records: list[InRecord]) -> None:
        for record in records:
            self._deliver(record)

    def _deliver(self, record: InRecord) -> None:
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
            amount=datum.get("amount"),
        )
        for fut in futures:
            if not fut.done():
                fut.set_result(outcome)
