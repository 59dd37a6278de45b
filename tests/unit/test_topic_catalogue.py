"""The topic catalogue, the comparison of a topic with its catalogue entry, and the client
factories' refusals. No broker: clients are constructed and closed, never started.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaProducer

from agg_config.settings import Settings
from agg_config.tenants import ID_PATTERN, load_tenants
from agg_kafka.admin import compare
from agg_kafka.clients import make_producer, player_key
from agg_kafka.topics import DAY_MS, TopicNames, TopicSpec, catalogue, catalogue_from_settings

OPERATORS = ["op-alpha", "op-beta"]


@pytest.fixture(autouse=True)
def defaults_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings() gives its defaults whatever AGG_* variables the shell has."""
    for name in list(os.environ):
        if name.upper().startswith("AGG_"):
            monkeypatch.delenv(name)


def brief_topics(prefix: str, operators: list[str]) -> set[str]:
    """The topics of the design brief, written out independently of TopicNames."""
    names = {
        f"{prefix}.requests",
        f"{prefix}.outcomes",
        f"{prefix}.events",
        f"{prefix}.deadletters",
        f"{prefix}.saga.state",
        f"{prefix}.config",
    }
    for op in operators:
        names |= {f"{prefix}.wallet.commands.{op}", f"{prefix}.wallet.replies.{op}"}
    return names


def build(
    operators: list[str] = OPERATORS,
    *,
    partitions: int = 12,
    replication_factor: int = 3,
    min_insync_replicas: int = 2,
    prefix: str = "agg",
) -> dict[str, TopicSpec]:
    specs = catalogue(
        operators,
        partitions=partitions,
        replication_factor=replication_factor,
        min_insync_replicas=min_insync_replicas,
        prefix=prefix,
    )
    counts = Counter(s.name for s in specs)
    assert all(n == 1 for n in counts.values()), counts
    return {s.name: s for s in specs}


# --- the catalogue ----------------------------------------------------------------------------


def test_every_topic_of_the_brief_exactly_once() -> None:
    assert set(build()) == brief_topics("agg", OPERATORS)


def test_without_operators_only_the_shared_topics() -> None:
    assert set(build([])) == brief_topics("agg", [])


def test_one_partition_count_and_replication_factor_for_all() -> None:
    specs = build(partitions=7, replication_factor=3).values()
    assert {s.partitions for s in specs if s.co_partitioned} == {7}
    assert {s.replication_factor for s in specs} == {3}
    assert [s.name for s in specs if not s.co_partitioned] == ["agg.config"]


def test_the_config_topic_is_one_compacted_partition() -> None:
    # one document, read whole by every instance, kept whatever its age
    spec = build(partitions=7)["agg.config"]
    assert spec.partitions == 1
    assert spec.configs["cleanup.policy"] == "compact"
    assert "retention.ms" not in spec.configs


def test_journal_and_dead_letters_are_kept_forever() -> None:
    specs = build()
    assert specs["agg.events"].configs["retention.ms"] == "-1"
    assert specs["agg.deadletters"].configs["retention.ms"] == "-1"


def test_retention_of_the_other_topics() -> None:
    specs = build()
    assert specs["agg.requests"].configs["retention.ms"] == str(7 * DAY_MS)
    assert specs["agg.outcomes"].configs["retention.ms"] == str(DAY_MS)
    for op in OPERATORS:
        assert specs[f"agg.wallet.commands.{op}"].configs["retention.ms"] == str(7 * DAY_MS)
        assert specs[f"agg.wallet.replies.{op}"].configs["retention.ms"] == str(7 * DAY_MS)


@pytest.mark.parametrize("min_isr", [1, 2, 3])
def test_min_insync_replicas_on_every_topic(min_isr: int) -> None:
    for spec in build(replication_factor=3, min_insync_replicas=min_isr).values():
        assert spec.configs["min.insync.replicas"] == str(min_isr), spec.name


def test_only_the_saga_state_and_the_config_are_compacted() -> None:
    # compaction keeps only the last record per key: the journal would lose events; the
    # saga's state changelog and the tenants document need exactly that, and must never
    # delete by age
    for spec in build().values():
        expected = "compact" if spec.name in ("agg.saga.state", "agg.config") else "delete"
        assert spec.configs["cleanup.policy"] == expected, spec.name
    assert "retention.ms" not in build()["agg.saga.state"].configs


def test_every_topic_has_a_purpose() -> None:
    assert all(s.purpose for s in build().values())


def test_configs_are_read_only() -> None:
    spec = build()["agg.events"]
    with pytest.raises(TypeError):
        spec.configs["retention.ms"] = "1"  # type: ignore[index]


@pytest.mark.parametrize(("replication_factor", "min_isr"), [(1, 2), (3, 4), (2, 7)])
def test_min_insync_replicas_above_replication_factor_is_refused(
    replication_factor: int, min_isr: int
) -> None:
    with pytest.raises(ValueError, match="exceeds replication factor"):
        catalogue(
            OPERATORS,
            partitions=12,
            replication_factor=replication_factor,
            min_insync_replicas=min_isr,
        )


@pytest.mark.parametrize("prefix", ["agg", "staging", "team-a_2"])
def test_prefix_is_honoured(prefix: str) -> None:
    specs = build(prefix=prefix)
    assert set(specs) == brief_topics(prefix, OPERATORS)


def test_topic_names_match_the_catalogue() -> None:
    names = TopicNames("x")
    specs = build(prefix="x")
    for name in (names.requests, names.outcomes, names.events, names.dead_letters):
        assert name in specs
    assert names.wallet_commands("op-alpha") in specs
    assert names.wallet_replies("op-beta") in specs
    assert TopicNames().requests == "agg.requests"


def test_duplicate_operator_ids_collapse() -> None:
    specs = build(["op-beta", "op-alpha", "op-beta", "op-alpha"])
    assert set(specs) == brief_topics("agg", OPERATORS)


def test_order_is_stable_whatever_the_order_of_operators() -> None:
    def names(ops: list[str]) -> list[str]:
        specs = catalogue(ops, partitions=1, replication_factor=1, min_insync_replicas=1)
        return [s.name for s in specs]

    assert names(["op-b", "op-a"]) == names(["op-a", "op-b"])


def test_catalogue_from_default_settings_and_the_dev_tenants() -> None:
    defaults = Settings()
    operators = [o.id for o in load_tenants(defaults.tenants_file).operators]
    specs = catalogue_from_settings(defaults)
    assert {s.name for s in specs} == brief_topics("agg", operators)
    assert {s.partitions for s in specs if s.co_partitioned} == {defaults.partition_count}
    assert {s.replication_factor for s in specs} == {defaults.replication_factor}


def test_catalogue_from_settings_follows_them(tmp_path: Path) -> None:
    tenants = yaml.safe_load(Settings().tenants_file.read_text())
    tenants["operators"] = tenants["operators"][:1]
    tenants["operators"][0]["id"] = "op-solo"
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump(tenants))
    chosen = Settings(
        tenants_file=path,
        topic_prefix="stage",
        partition_count=3,
        replication_factor=3,
        min_insync_replicas=2,
    )
    specs = catalogue_from_settings(chosen)
    assert {s.name for s in specs} == brief_topics("stage", ["op-solo"])
    assert {s.partitions for s in specs if s.co_partitioned} == {3}
    assert {s.configs["min.insync.replicas"] for s in specs} == {"2"}


def test_settings_refuse_min_insync_above_replication_before_any_catalogue() -> None:
    with pytest.raises(ValueError, match="exceeds replication_factor"):
        catalogue_from_settings(Settings(replication_factor=1, min_insync_replicas=2))


# --- comparing a topic with the catalogue ----------------------------------------------------

SPEC = TopicSpec(
    "agg.events",
    12,
    3,
    {"cleanup.policy": "delete", "min.insync.replicas": "2", "retention.ms": "-1"},
)


def actual(**changes: Any) -> dict[str, object]:
    configs = dict(SPEC.configs)
    configs.update(changes.pop("configs", {}))
    for key in changes.pop("without", ()):
        del configs[key]
    return {"partitions": 12, "replication_factor": 3, "configs": configs, **changes}


@pytest.mark.parametrize(
    ("found", "differences"),
    [
        pytest.param(actual(), [], id="equal"),
        pytest.param(
            actual(configs={"segment.bytes": "1073741824", "compression.type": "producer"}),
            [],
            id="broker configs the catalogue does not set",
        ),
        pytest.param(actual(partitions=6), ["partitions 6 (catalogue: 12)"], id="partitions"),
        pytest.param(
            actual(replication_factor=1),
            ["replication factor 1 (catalogue: 3)"],
            id="replication factor",
        ),
        pytest.param(
            actual(configs={"retention.ms": "604800000"}),
            ["retention.ms=604800000 (catalogue: -1)"],
            id="config value",
        ),
        pytest.param(
            actual(configs={"cleanup.policy": "compact"}),
            ["cleanup.policy=compact (catalogue: delete)"],
            id="compacted journal",
        ),
        pytest.param(
            actual(without=["min.insync.replicas"]),
            ["min.insync.replicas=None (catalogue: 2)"],
            id="missing config",
        ),
        pytest.param(
            {"partitions": 24, "replication_factor": 1, "configs": {}},
            [
                "partitions 24 (catalogue: 12)",
                "replication factor 1 (catalogue: 3)",
                "cleanup.policy=None (catalogue: delete)",
                "min.insync.replicas=None (catalogue: 2)",
                "retention.ms=None (catalogue: -1)",
            ],
            id="everything, in a fixed order",
        ),
    ],
)
def test_compare(found: dict[str, object], differences: list[str]) -> None:
    assert compare(SPEC, found) == differences


def test_compare_against_the_catalogue() -> None:
    spec = build()["agg.events"]
    found = {"partitions": 12, "replication_factor": 3, "configs": dict(spec.configs)}
    assert compare(spec, found) == []


# --- clients ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operator_id", "player_id", "key"),
    [
        ("op-alpha", "p-1", b"op-alpha:p-1"),
        ("op-beta", "p-1", b"op-beta:p-1"),
        ("op-alpha", "jürgen", "op-alpha:jürgen".encode()),
        ("op-alpha", "a:b", b"op-alpha:a:b"),
    ],
)
def test_player_key(operator_id: str, player_id: str, key: bytes) -> None:
    assert player_key(operator_id, player_id) == key


def test_player_key_is_unambiguous() -> None:
    # operator ids cannot hold ':', so the first ':' always ends the operator id
    assert ":" not in ID_PATTERN
    key = player_key("op-alpha", "a:b").decode()
    assert key.split(":", 1) == ["op-alpha", "a:b"]


def producer_outcome(**overrides: Any) -> type[BaseException] | None:
    """Build a producer inside a running loop (aiokafka 0.14 needs one), close it unstarted."""

    async def attempt() -> type[BaseException] | None:
        try:
            producer = make_producer(Settings(), client_id="unit", **overrides)
        except ValueError as err:
            assert "acks=all with idempotence" in str(err)
            return ValueError
        assert isinstance(producer, AIOKafkaProducer)
        await producer.stop()
        return None

    return asyncio.run(attempt())


def test_producer_needs_a_running_loop() -> None:
    # why producer_outcome runs make_producer inside asyncio.run: a loop that is not running
    # is refused (set explicitly here, so that none is left behind unclosed)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        with pytest.raises(RuntimeError, match="within an async function"):
            make_producer(Settings(), client_id="unit")
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def test_producer_with_the_defaults_is_built() -> None:
    assert producer_outcome() is None


def test_producer_keeps_other_overrides() -> None:
    assert producer_outcome(linger_ms=5, enable_idempotence=True, acks="all") is None


@pytest.mark.parametrize(
    "overrides",
    [
        {"acks": 1},
        {"acks": 0},
        {"acks": "1"},
        {"acks": -1},  # same as "all" to Kafka, but only the spelled-out form is allowed
        {"enable_idempotence": False},
        {"acks": "all", "enable_idempotence": False},
    ],
    ids=repr,
)
def test_producer_refuses_weaker_guarantees(overrides: dict[str, Any]) -> None:
    assert producer_outcome(**overrides) is ValueError
