"""Kafka clients configured the one way the money path allows.

Producers: ``acks=all`` with idempotence, so a retried send is written once and only after
every in-sync replica has it. Consumers: no auto-commit; offsets are committed by the code
that has finished with a message (or stored with its results, for projections).
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError

from agg_config.settings import Settings


def player_key(operator_id: str, player_id: str) -> bytes:
    """The key of every topic: one player of one operator is one ordering domain."""
    return f"{operator_id}:{player_id}".encode()


def make_producer(settings: Settings, *, client_id: str, **overrides: Any) -> AIOKafkaProducer:
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": settings.producer_linger_ms,
        "request_timeout_ms": settings.producer_request_timeout_ms,
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
