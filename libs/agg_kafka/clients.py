"""Kafka clients configured the one way the money path allows.

Producers: ``acks=all`` with idempotence, so a retried send is written once and only after
every in-sync replica has it. Consumers: no auto-commit; offsets are committed by the code
that has finished with a message (or stored with its results, for projections).
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

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
