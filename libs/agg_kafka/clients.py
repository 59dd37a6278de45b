"""Kafka clients configured the one way the money path allows.

Producers: ``acks=all`` with idempotence, so a retried send is written once and only after
every in-sync replica has it. Consumers: no auto-commit; offsets are committed by the code
that has finished with a message (or stored with its results, for projections).
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError
from aiokafka.partitioner import DefaultPartitioner, murmur2

from agg_config.settings import Settings


def player_key(operator_id: str, player_id: str) -> bytes:
    """The key of every topic: one player of one operator is one ordering domain."""
    return f"{operator_id}:{player_id}".encode()


class KeyPartitioner:
    """aiokafka's default partitioner (the Java client's murmur2, so that every producer in any
    language puts a key on the same partition) with the hashes of recent keys remembered: the
    hash is pure Python, some 8 us a key, and the same players' keys come again and again.

    The masked hash is kept, not the partition, so it stays right if the partition count grows.
    At most ``key_count_max`` keys are remembered; then the memory starts afresh.
    """

    def __init__(self, key_count_max: int = 100_000):
        self.key_count_max = key_count_max
        self._hashes: dict[bytes, int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            partition: int = DefaultPartitioner()(key, all_partitions, available)
            return partition
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self.key_count_max:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]


def make_producer(settings: Settings, *, client_id: str, **overrides: Any) -> AIOKafkaProducer:
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": settings.producer_linger_ms,
        "request_timeout_ms": settings.producer_request_timeout_ms,
        "partitioner": KeyPartitioner(),
    }
    config.update(overrides)
    if config["acks"] != "all" or not config["enable_idempotence"]:
        raise ValueError("producers on the money path must use acks=all with idempotence")
    return AIOKafkaProducer(**config)


def make_consumer(
    settings: Settings, *topics: str, group_id: str | None, client_id: str, **overrides: Any
) -> AIOKafkaConsumer:
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": client_id,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.consumer_session_timeout_ms,
        "isolation_level": "read_committed",
    }
    config.update(overrides)
    return AIOKafkaConsumer(*topics, **config)


async def dead_letter(
    producer: AIOKafkaProducer,
    topic: str,
    record: ConsumerRecord[Any, Any],
    *,
    reason: str,
    consumer_group: str,
) -> None:
    """Set a message aside on the dead-letter topic, with where it came from and why.

    Awaited before the caller commits the source offset, so a set-aside message is never lost.
    """
    headers = [
        ("reason", reason.encode()),
        ("source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ("consumer", consumer_group.encode()),
    ]
    await producer.send_and_wait(topic, record.value or b"", key=record.key, headers=headers)


async def consumer_lag(consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
    """Messages between the consumer's position and the end of each assigned partition."""
    lag = {}
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        if highwater is None:
            continue
        try:
            position = await consumer.position(tp)
        except IllegalStateError:
            continue  # revoked meanwhile
        lag[tp] = max(0, highwater - position)
    return lag
