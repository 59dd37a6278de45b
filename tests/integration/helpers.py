"""Small helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import uuid

from agg_kafka.admin import ensure_topics
from agg_kafka.topics import TopicSpec


def unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


def create_topic(bootstrap: str, name: str, partitions: int = 3) -> TopicSpec:
    spec = TopicSpec(name, partitions, 1, {"min.insync.replicas": "1"})
    report = asyncio.run(ensure_topics(bootstrap, [spec]))
    assert report.created == [name], report.lines()
    return spec
