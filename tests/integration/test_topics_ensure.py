"""``topics ensure`` against the real broker: creates what is missing with the catalogue's
settings, is a no-op the second time, and reports (never changes) a topic that differs."""

from __future__ import annotations

import asyncio

from agg_kafka.admin import describe, ensure_topics
from agg_kafka.topics import catalogue
from tests.integration.helpers import unique


def _describe(bootstrap: str, names: list[str]) -> dict:
    from aiokafka.admin import AIOKafkaAdminClient

    async def run() -> dict:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return await describe(admin, names)
        finally:
            await admin.close()

    return asyncio.run(run())


def test_ensure_creates_then_is_idempotent_then_reports_differences(kafka_bootstrap: str) -> None:
    prefix = unique("ensure").replace(".", "-")
    specs = catalogue(["op-x", "op-y"], partitions=4, replication_factor=1,
                      min_insync_replicas=1, prefix=prefix)  # fmt: skip
    names = [s.name for s in specs]
    keyed = [s.name for s in specs if s.co_partitioned]

    first = asyncio.run(ensure_topics(kafka_bootstrap, specs))
    assert sorted(first.created) == sorted(names)
    assert first.ok
    actual = _describe(kafka_bootstrap, names)
    assert actual[f"{prefix}.events"]["configs"]["retention.ms"] == "-1"
    assert {actual[n]["partitions"] for n in keyed} == {4}
    assert actual[f"{prefix}.config"]["partitions"] == 1
    assert actual[f"{prefix}.config"]["configs"]["cleanup.policy"] == "compact"

    second = asyncio.run(ensure_topics(kafka_bootstrap, specs))
    assert second.created == []
    assert sorted(second.unchanged) == sorted(names)

    # the same topics wanted with other settings: reported, not changed
    other = catalogue(["op-x", "op-y"], partitions=8, replication_factor=1,
                      min_insync_replicas=1, prefix=prefix)  # fmt: skip
    third = asyncio.run(ensure_topics(kafka_bootstrap, other))
    assert not third.ok
    assert set(third.differences) == set(keyed)  # the config topic has one partition anyway
    assert all("partitions 4 (catalogue: 8)" in d[0] for d in third.differences.values())
    assert {a["partitions"] for a in _describe(kafka_bootstrap, keyed).values()} == {4}
