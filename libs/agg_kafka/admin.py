"""``aggregator topics ensure``: create the catalogue's missing topics and report, never
silently change, the ones that differ (partition count, replication factor, configs).

Changing a live topic's partition count re-keys players onto other partitions, and changing
retention can destroy the journal, so differences are for a person to decide on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, for_code

from agg_kafka.topics import TopicSpec


@dataclass
class EnsureReport:
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    differences: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.differences

    def lines(self) -> list[str]:
        out = [f"created   {name}" for name in self.created]
        out += [f"ok        {name}" for name in self.unchanged]
        for name, diffs in sorted(self.differences.items()):
            out += [f"DIFFERS   {name}: {d}" for d in diffs]
        return out


async def describe(
    admin: AIOKafkaAdminClient, names: Sequence[str]
) -> dict[str, dict[str, object]]:
    """Partition count, replication factor and the catalogue's configs of existing topics."""
    existing = set(await admin.list_topics())
    wanted = [n for n in names if n in existing]
    if not wanted:
        return {}
    out: dict[str, dict[str, object]] = {}
    for meta in await admin.describe_topics(wanted):
        partitions = meta["partitions"]
        rf = max((len(p["replicas"]) for p in partitions), default=0)
        out[meta["topic"]] = {
            "partitions": len(partitions),
            "replication_factor": rf,
            "configs": {},
        }
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, n) for n in wanted]
    )
    for response in responses:
        for resource in response.resources:
            error_code, _msg, _type, name, entries = resource[:5]
            if error_code:
                raise for_code(error_code)(f"describe configs of {name}")
            if name in out:
                out[name]["configs"] = {e[0]: e[1] for e in entries}
    return out


def compare(spec: TopicSpec, actual: dict[str, object]) -> list[str]:
    diffs = []
    if actual["partitions"] != spec.partitions:
        diffs.append(f"partitions {actual['partitions']} (catalogue: {spec.partitions})")
    if actual["replication_factor"] != spec.replication_factor:
        diffs.append(
            f"replication factor {actual['replication_factor']} "
            f"(catalogue: {spec.replication_factor})"
        )
    configs = actual["configs"]
    assert isinstance(configs, dict)
    for key, value in sorted(spec.configs.items()):
        if configs.get(key) != value:
            diffs.append(f"{key}={configs.get(key)} (catalogue: {value})")
    return diffs


async def ensure_topics(
    bootstrap: str, specs: Sequence[TopicSpec], timeout_ms: int = 30_000
) -> EnsureReport:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        report = EnsureReport()
        before = await describe(admin, [s.name for s in specs])
        missing = [s for s in specs if s.name not in before]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        s.name, s.partitions, s.replication_factor, topic_configs=dict(s.configs)
                    )
                    for s in missing
                ],
                timeout_ms=timeout_ms,
            )
            for topic_error in response.topic_errors:
                name, code = topic_error[0], topic_error[1]
                if code and for_code(code) is not TopicAlreadyExistsError:
                    raise for_code(code)(f"create topic {name}: {topic_error[-1]}")
        # new topics reach the metadata a moment after the controller accepted them
        deadline = asyncio.get_running_loop().time() + timeout_ms / 1000
        after = await describe(admin, [s.name for s in specs])
        while len(after) < len(specs) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
            after = await describe(admin, [s.name for s in specs])
        for spec in specs:
            if spec.name not in after:
                raise RuntimeError(f"topic {spec.name} still missing after creation")
            diffs = compare(spec, after[spec.name])
            if diffs:
                report.differences[spec.name] = diffs
            elif spec.name in before:
                report.unchanged.append(spec.name)
            else:
                report.created.append(spec.name)
        return report
    finally:
        await admin.close()


class TopicMissingError(LookupError):
    """The topic does not exist on the cluster."""


async def topic_partitions(bootstrap: str, topic: str, timeout_ms: int = 30_000) -> list[int]:
    """The partition numbers of ``topic``, sorted. A consumer without a subscription does not
    learn a topic's partitions from ``topics()``; the admin client's metadata does."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    try:
        await admin.start()
        [meta] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = sorted(p["partition"] for p in meta.get("partitions", []))
    if meta.get("error_code") or not partitions:
        raise TopicMissingError(f"topic {topic} does not exist on {bootstrap}")
    return partitions
