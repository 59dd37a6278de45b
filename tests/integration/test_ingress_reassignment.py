"""The ingress's outcome consumer across rebalances, on the real broker, on both Kafka clients:
two :class:`OutcomeRouter` instances, one on each client, in one consumer group (their own
group id, so the ingress of other tests is not rebalanced), outcomes produced by hand.

- an outcome produced before a partition was offered to an instance is never handed to it,
  at start-up and after a reassignment, while one produced after is;
- a revocation ends the waits on the revoked partitions at once;
- instances on aiokafka and on librdkafka share the group (one assignor in common).

The module runs on its own copy of the topic catalogue (``topic_prefix`` TOPIC_PREFIX)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from agg_avro import AvroCodec
from agg_config.settings import Settings
from agg_ingress.routing import OutcomeRouter, ReplyPartitionRevoked, WaitKey
from agg_kafka.admin import ensure_topics
from agg_kafka.clients import make_producer
from agg_kafka.topics import TopicNames, catalogue
from agg_ports.transport import InRecord

CODEC = AvroCodec()
TOPIC_PREFIX = "agg-ingress-rb-it"
TOPICS = TopicNames(TOPIC_PREFIX)
CLIENTS = ["librdkafka", "aiokafka"]
WAIT_S = 60.0
"""Longest wait for a rebalance to settle (a member rejoins within its heartbeat interval)."""


@pytest.fixture(scope="module")
def rb_settings(settings: Settings) -> Settings:
    test_settings = settings.model_copy(update={"topic_prefix": TOPIC_PREFIX})
    specs = catalogue(
        ["op-alpha"],
        partitions=test_settings.partition_count,
        replication_factor=test_settings.replication_factor,
        min_insync_replicas=test_settings.min_insync_replicas,
        prefix=TOPIC_PREFIX,
    )
    report = asyncio.run(ensure_topics(test_settings.kafka_bootstrap, specs))
    assert report.ok, report.lines()
    return test_settings


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_key() -> WaitKey:
    return ("prov-nova", "op-alpha", unique("pl"), unique("rq"), unique("corr"))


def outcome(key: WaitKey, reply_to: str, partition: int, status: str) -> bytes:
    provider_id, operator_id, player_id, request_id, corr = key
    return CODEC.encode(
        "casino.agg.ProviderOutcome",
        {
            "request_id": request_id, "correlation_id": corr, "provider_id": provider_id,
            "operator_id": operator_id, "player_id": player_id, "action": "BET",
            "status": status, "balance": 100, "currency": "EUR", "transaction_id": None,
            "decided_at": datetime.now(UTC), "reply_to": reply_to, "reply_partition": partition,
        },
    )  # fmt: skip


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.05)


class Spy:
    """Every record the clients hand to a router."""

    def __init__(self, router: OutcomeRouter):
        self.records: list[InRecord] = []
        deliver = router.on_records

        def on_records(records: list[InRecord]) -> None:
            self.records.extend(records)
            deliver(records)

        router.on_records = on_records  # type: ignore[method-assign]

    def offsets(self, partition: int) -> set[int]:
        return {r.offset for r in self.records if r.partition == partition}


@pytest.mark.parametrize("first", CLIENTS)
def test_outcomes_from_before_an_assignment_never_reach_the_router(
    rb_settings: Settings, first: str
) -> None:
    second = next(c for c in CLIENTS if c != first)
    asyncio.run(reassignment(rb_settings, first, second))


async def reassignment(settings: Settings, first: str, second: str) -> None:
    group = unique("agg-ingress-outcomes-it")
    a = OutcomeRouter(settings.model_copy(update={"kafka_client": first}), unique("a"),
                      group_id=group)  # fmt: skip
    b = OutcomeRouter(settings.model_copy(update={"kafka_client": second}), unique("b"),
                      group_id=group)  # fmt: skip
    spy = Spy(a)
    partitions = set(range(settings.partition_count))
    producer = make_producer(settings, client_id="outcomes-by-hand")
    await producer.start()

    async def produce(key: WaitKey, partition: int, status: str) -> int:
        value = outcome(key, a.instance_id, partition, status)
        sent = await producer.send_and_wait(TOPICS.outcomes, value, partition=partition)
        return int(sent.offset)

    stops: list[Callable[[], Awaitable[None]]] = [producer.stop]
    try:
        # before a starts: outcomes addressed to it, for a key it will wait on
        early = wait_key()
        early_offsets = {p: await produce(early, p, "PLAYER_BLOCKED") for p in sorted(partitions)}
        await a.start()
        stops.append(a.stop)
        waits = {p: a.wait_for(early, p) for p in sorted(partitions)}
        await until(lambda: a.ready and a.owned == partitions, "a owns every partition")
        await asyncio.sleep(0.5)
        assert not any(f.done() for f in waits.values())
        assert all(early_offsets[p] not in spy.offsets(p) for p in partitions)

        # b joins: a's partitions are revoked (its waits end at once), then shared
        await b.start()
        stops.append(b.stop)
        for fut in waits.values():
            with pytest.raises(ReplyPartitionRevoked):
                await asyncio.wait_for(fut, WAIT_S)
        for fut in waits.values():
            a.forget(early, fut)
        await until(
            lambda: a.ready and b.ready and a.owned | b.owned == partitions
            and not a.owned & b.owned,
            "a and b share the partitions",
        )  # fmt: skip
        assert a.pending_count == 0

        # while b owns q: an outcome addressed to a, on q
        q = min(b.owned)
        late = wait_key()
        late_offset = await produce(late, q, "PLAYER_BLOCKED")

        # b leaves: a is assigned q, and reads it from its end
        stops.remove(b.stop)
        await b.stop()
        await until(lambda: a.ready and a.owned == partitions, "a owns every partition again")
        fut = a.wait_for(late, q)
        assert fut is not None
        await asyncio.sleep(0.5)
        assert not fut.done()
        assert late_offset not in spy.offsets(q)
        answered_offset = await produce(late, q, "OK")
        got = await asyncio.wait_for(fut, WAIT_S)
        assert got.status.value == "OK"
        a.forget(late, fut)
        assert spy.offsets(q) == {answered_offset}
    finally:
        for stop in reversed(stops):
            await stop()
