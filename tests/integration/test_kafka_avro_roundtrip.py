"""Avro events through a real broker: produced with acks=all and idempotence, consumed in a
consumer group that commits its offsets; a restarted member resumes exactly after them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aiokafka import TopicPartition

from agg_avro import AvroCodec
from agg_config.settings import Settings
from agg_kafka.clients import make_consumer, make_producer, player_key
from tests.integration.helpers import create_topic, unique

COMMAND = "casino.agg.WalletCommand"


def _command(i: int) -> dict[str, object]:
    return {
        "command_id": f"cmd-{i:05d}",
        "correlation_id": f"corr-{i:05d}",
        "operator_id": "op-alpha",
        "player_id": f"player-{i % 7}",
        "kind": "DEBIT",
        "amount": 100 + i,
        "currency": "EUR",
        "provider_id": "prov-nova",
        "transaction_id": f"tx-{i:05d}",
        "round_id": f"round-{i // 3}",
        "game_id": "nova-starfall",
        "reference_command_id": None,
        "issued_at": datetime(2026, 1, 2, 3, 4, 5, i * 1000 % 1_000_000, tzinfo=UTC),
        "win_kind": "REGULAR",
    }


async def _consume(settings: Settings, topic: str, group: str, count: int) -> list[dict]:
    """Read ``count`` records, committing after each is handled; return them."""
    codec = AvroCodec()
    consumer = make_consumer(settings, topic, group_id=group, client_id="test-consumer")
    await consumer.start()
    got: list[dict] = []
    try:
        while len(got) < count:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=500), 30)
            for tp, messages in batch.items():
                for message in messages:
                    if len(got) == count:
                        break
                    decoded = codec.decode(message.value, reader=COMMAND)
                    assert message.key == player_key("op-alpha", decoded.datum["player_id"])
                    got.append(decoded.datum)
                    await consumer.commit({tp: message.offset + 1})
        return got
    finally:
        await consumer.stop()


async def _committed(settings: Settings, topic: str, group: str, partitions: int) -> int:
    consumer = make_consumer(settings, group_id=group, client_id="test-offsets")
    await consumer.start()
    try:
        total = 0
        for p in range(partitions):
            committed = await consumer.committed(TopicPartition(topic, p))
            total += committed or 0
        return total
    finally:
        await consumer.stop()


def test_avro_events_produced_with_acks_all_and_consumed_with_committed_offsets(
    settings: Settings,
) -> None:
    topic = unique("it.commands")
    create_topic(settings.kafka_bootstrap, topic, partitions=3)
    codec = AvroCodec()
    sent = [_command(i) for i in range(60)]

    async def produce() -> None:
        producer = make_producer(settings, client_id="test-producer")
        await producer.start()
        try:
            futures = [
                await producer.send(
                    topic,
                    codec.encode(COMMAND, c),
                    key=player_key("op-alpha", str(c["player_id"])),
                )
                for c in sent
            ]
            metadata = await asyncio.gather(*futures)
            assert all(m.offset >= 0 for m in metadata)
            # idempotence is on: the broker gave this producer an id to sequence its batches
            assert producer._txn_manager is not None
            assert producer._txn_manager.producer_id >= 0
        finally:
            await producer.stop()

    asyncio.run(produce())
    group = unique("it-group")
    first = asyncio.run(_consume(settings, topic, group, 25))
    assert asyncio.run(_committed(settings, topic, group, 3)) == 25
    # a new member of the same group starts after the committed offsets: nothing twice
    rest = asyncio.run(_consume(settings, topic, group, 35))
    assert asyncio.run(_committed(settings, topic, group, 3)) == 60

    received = first + rest
    assert sorted(r["command_id"] for r in received) == [c["command_id"] for c in sent]
    by_id = {r["command_id"]: r for r in received}
    for c in sent:
        assert by_id[c["command_id"]] == c
    # per key, order is kept (one player's commands stay in sequence)
    for player in {c["player_id"] for c in sent}:
        seen = [r["command_id"] for r in first if r["player_id"] == player] + [
            r["command_id"] for r in rest if r["player_id"] == player
        ]
        assert seen == sorted(seen)
