"""Typed settings: defaults, environment overrides, the local stack's connection file, bounds,
and a guard on the shape of every setting (a reason, a unit-last name, a bound on each limit).

Every test runs with all ``AGG_*`` variables removed and ``AGG_STATE_DIR`` pointing at an
empty temporary directory, so neither the developer's shell nor their ``var/stack.env`` can
change an outcome.
"""

from __future__ import annotations

import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
import pytest
from pydantic import Field, SecretStr, ValidationError

from agg_config.paths import repo_root, stack_env_file
from agg_config.settings import Settings, load_settings

DEFAULTS: dict[str, Any] = {
    "kafka_bootstrap": "127.0.0.1:9092",
    "database_url": "postgresql://aggregator@127.0.0.1:5432/aggregator",
    "partition_count": 12,
    "replication_factor": 1,
    "min_insync_replicas": 1,
    "topic_prefix": "agg",
    "kafka_client": "librdkafka",
    "producer_linger_ms": 1,
    "producer_request_timeout_ms": 30_000,
    "consumer_session_timeout_ms": 10_000,
    "admin_timeout_ms": 30_000,
    "kafka_version": "4.1.1",
    "dev_kafka_port": 0,
    "dev_postgres_port": 0,
    "dev_kafka_heap_mb": 768,
    "dev_start_timeout_ms": 120_000,
    "ingress_host": "127.0.0.1",
    "ingress_port": 8080,
    "ingress_outcome_wait_ms": 2000,
    "ingress_pending_count_max": 10000,
    "request_body_bytes_max": 16384,
    "signature_window_s": 300,
    "session_ttl_s": 14400,
    "session_settle_window_s": 604800,
    "session_secret": SecretStr("dev-session-secret-change-me-0000"),
    "wallet_timeout_ms": 1500,
    "retry_backoff_initial_ms": 500,
    "retry_backoff_max_ms": 30000,
    "tick_interval_ms": 100,
    "wallet_batch_count_max": 500,
    "wallet_broken": "",
    "wallet_broken_enabled": False,
    "ingress_metrics_port": 9181,
    "saga_metrics_port": 9182,
    "wallet_metrics_port": 9183,
    "projector_metrics_port": 9184,
    "bridge_metrics_port": 9185,
    "httpwallet_host": "127.0.0.1",
    "httpwallet_port": 9186,
    "httpwallet_connection_count_max": 8,
    "saga_batch_count_max": 500,
    "projector_batch_wait_ms": 100,
    "demo_starting_balance_minor": 100_000,
}

# field -> (value of AGG_<FIELD>, parsed value); one row per field, checked to cover them all
OVERRIDES: dict[str, tuple[str, Any]] = {
    "kafka_bootstrap": ("broker-1:9093,broker-2:9093", "broker-1:9093,broker-2:9093"),
    "database_url": ("postgresql://u@db:6543/x", "postgresql://u@db:6543/x"),
    "tenants_file": ("/etc/aggregator/tenants.yaml", Path("/etc/aggregator/tenants.yaml")),
    "partition_count": ("24", 24),
    "replication_factor": ("3", 3),
    "min_insync_replicas": ("2", 2),
    "topic_prefix": ("staging-2", "staging-2"),
    "kafka_client": ("aiokafka", "aiokafka"),
    "producer_linger_ms": ("0", 0),
    "producer_request_timeout_ms": ("60000", 60_000),
    "consumer_session_timeout_ms": ("45000", 45_000),
    "admin_timeout_ms": ("5000", 5_000),
    "kafka_version": ("4.0.0", "4.0.0"),
    "dev_kafka_port": ("19092", 19_092),
    "dev_postgres_port": ("15432", 15_432),
    "dev_kafka_heap_mb": ("1024", 1024),
    "dev_start_timeout_ms": ("300000", 300_000),
    "ingress_host": ("0.0.0.0", "0.0.0.0"),
    "ingress_port": ("18080", 18080),
    "ingress_outcome_wait_ms": ("3000", 3000),
    "ingress_pending_count_max": ("500", 500),
    "request_body_bytes_max": ("4096", 4096),
    "signature_window_s": ("60", 60),
    "session_ttl_s": ("600", 600),
    "session_settle_window_s": ("86400", 86400),
    "session_secret": ("another-long-secret-0001", SecretStr("another-long-secret-0001")),
    "wallet_timeout_ms": ("800", 800),
    "retry_backoff_initial_ms": ("250", 250),
    "retry_backoff_max_ms": ("60000", 60000),
    "tick_interval_ms": ("50", 50),
    "wallet_batch_count_max": ("100", 100),
    "wallet_broken": ("no_dedupe,slow", "no_dedupe,slow"),
    "wallet_broken_enabled": ("true", True),
    "ingress_metrics_port": ("0", 0),
    "saga_metrics_port": ("0", 0),
    "wallet_metrics_port": ("0", 0),
    "projector_metrics_port": ("0", 0),
    "bridge_metrics_port": ("0", 0),
    "httpwallet_host": ("0.0.0.0", "0.0.0.0"),
    "httpwallet_port": ("19186", 19186),
    "httpwallet_connection_count_max": ("2", 2),
    "saga_batch_count_max": ("100", 100),
    "projector_batch_wait_ms": ("250", 250),
    "demo_starting_balance_minor": ("5000", 5000),
}

# (field, value of AGG_<FIELD>): each just outside its bound, or not of the field's type
OUT_OF_RANGE: list[tuple[str, str]] = [
    ("partition_count", "0"),
    ("partition_count", "10001"),
    ("partition_count", "twelve"),
    ("replication_factor", "0"),
    ("replication_factor", "8"),
    ("min_insync_replicas", "0"),
    ("min_insync_replicas", "8"),
    ("topic_prefix", "Agg"),
    ("topic_prefix", ""),
    ("topic_prefix", "agg.prod"),
    ("topic_prefix", "a" * 33),
    ("kafka_client", "kafka-python"),
    ("producer_linger_ms", "-1"),
    ("producer_linger_ms", "1001"),
    ("producer_request_timeout_ms", "999"),
    ("producer_request_timeout_ms", "300001"),
    ("consumer_session_timeout_ms", "999"),
    ("consumer_session_timeout_ms", "300001"),
    ("admin_timeout_ms", "999"),
    ("admin_timeout_ms", "300001"),
    ("kafka_version", "3.9.0"),
    ("kafka_version", "4.1"),
    ("dev_kafka_port", "-1"),
    ("dev_kafka_port", "65536"),
    ("dev_postgres_port", "-1"),
    ("dev_postgres_port", "65536"),
    ("dev_kafka_heap_mb", "255"),
    ("dev_kafka_heap_mb", "16385"),
    ("dev_start_timeout_ms", "4999"),
    ("dev_start_timeout_ms", "900001"),
    ("ingress_port", "0"),
    ("ingress_port", "65536"),
    ("ingress_outcome_wait_ms", "99"),
    ("ingress_outcome_wait_ms", "30001"),
    ("ingress_pending_count_max", "0"),
    ("ingress_pending_count_max", "1000001"),
    ("request_body_bytes_max", "1023"),
    ("request_body_bytes_max", "1048577"),
    ("signature_window_s", "0"),
    ("signature_window_s", "3601"),
    ("session_ttl_s", "4"),
    ("session_ttl_s", "604801"),
    ("session_settle_window_s", "-1"),
    ("session_settle_window_s", "1814401"),
    ("session_secret", "short"),
    ("wallet_timeout_ms", "49"),
    ("wallet_timeout_ms", "60001"),
    ("retry_backoff_initial_ms", "9"),
    ("retry_backoff_initial_ms", "60001"),
    ("retry_backoff_max_ms", "99"),
    ("retry_backoff_max_ms", "3600001"),
    ("tick_interval_ms", "9"),
    ("tick_interval_ms", "10001"),
    ("wallet_batch_count_max", "0"),
    ("wallet_batch_count_max", "100001"),
    ("wallet_broken", "No Dedupe"),
    ("ingress_metrics_port", "-1"),
    ("ingress_metrics_port", "65536"),
    ("saga_metrics_port", "-1"),
    ("saga_metrics_port", "65536"),
    ("wallet_metrics_port", "-1"),
    ("wallet_metrics_port", "65536"),
    ("projector_metrics_port", "-1"),
    ("bridge_metrics_port", "65536"),
    ("httpwallet_port", "-1"),
    ("httpwallet_connection_count_max", "0"),
    ("httpwallet_connection_count_max", "257"),
    ("projector_metrics_port", "65536"),
    ("saga_batch_count_max", "0"),
    ("saga_batch_count_max", "100001"),
    ("projector_batch_wait_ms", "-1"),
    ("projector_batch_wait_ms", "5001"),
    ("demo_starting_balance_minor", "-1"),
    ("demo_starting_balance_minor", "1000000000000001"),
    ("demo_starting_balance_minor", "1.5"),
]

# (field, value of AGG_<FIELD>): each exactly on its bound, so accepted
ON_THE_BOUND: list[tuple[str, str]] = [
    ("partition_count", "1"),
    ("partition_count", "10000"),
    ("replication_factor", "7"),
    ("min_insync_replicas", "7"),
    ("topic_prefix", "a"),
    ("topic_prefix", "a" * 32),
    ("producer_linger_ms", "1000"),
    ("producer_request_timeout_ms", "1000"),
    ("consumer_session_timeout_ms", "300000"),
    ("admin_timeout_ms", "300000"),
    ("dev_kafka_port", "65535"),
    ("dev_kafka_heap_mb", "256"),
    ("dev_kafka_heap_mb", "16384"),
    ("dev_start_timeout_ms", "5000"),
    ("dev_start_timeout_ms", "900000"),
    ("ingress_port", "1"),
    ("ingress_port", "65535"),
    ("ingress_outcome_wait_ms", "100"),
    ("ingress_outcome_wait_ms", "30000"),
    ("ingress_pending_count_max", "1"),
    ("ingress_pending_count_max", "1000000"),
    ("request_body_bytes_max", "1024"),
    ("request_body_bytes_max", "1048576"),
    ("signature_window_s", "1"),
    ("signature_window_s", "3600"),
    ("session_ttl_s", "5"),
    ("session_ttl_s", "604800"),
    ("session_settle_window_s", "0"),
    ("session_settle_window_s", "1814400"),
    ("wallet_timeout_ms", "50"),
    ("wallet_timeout_ms", "60000"),
    ("retry_backoff_initial_ms", "10"),
    ("retry_backoff_initial_ms", "60000"),
    ("retry_backoff_max_ms", "100"),
    ("retry_backoff_max_ms", "3600000"),
    ("tick_interval_ms", "10"),
    ("tick_interval_ms", "10000"),
    ("wallet_batch_count_max", "1"),
    ("wallet_batch_count_max", "100000"),
    ("ingress_metrics_port", "65535"),
    ("saga_metrics_port", "65535"),
    ("wallet_metrics_port", "65535"),
    ("projector_metrics_port", "65535"),
    ("bridge_metrics_port", "65535"),
    ("httpwallet_connection_count_max", "256"),
    ("saga_batch_count_max", "1"),
    ("saga_batch_count_max", "100000"),
    ("projector_batch_wait_ms", "0"),
    ("projector_batch_wait_ms", "5000"),
    ("demo_starting_balance_minor", "0"),
    ("demo_starting_balance_minor", "1000000000000000"),
]


def env_name(field: str) -> str:
    return f"AGG_{field.upper()}"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No AGG_* variable from the shell; an empty state directory (no stack.env)."""
    for name in list(os.environ):
        if name.upper().startswith("AGG_"):
            monkeypatch.delenv(name)
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("AGG_STATE_DIR", str(state))
    return state


def write_stack_env(state: Path, **values: str) -> Path:
    path = stack_env_file()
    assert path.parent == state
    lines = ["# written by `aggregator dev up`; read by every service and test"]
    lines += [f"{env_name(k)}={v}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- defaults -------------------------------------------------------------------------------


def test_defaults() -> None:
    loaded = load_settings()
    for field, value in DEFAULTS.items():
        assert getattr(loaded, field) == value, field
    assert loaded.tenants_file == repo_root() / "deploy" / "local" / "aggregator.yaml"
    assert loaded.tenants_file.is_file()


def test_defaults_table_covers_every_field_but_the_tenants_path() -> None:
    assert set(DEFAULTS) | {"tenants_file"} == set(Settings.model_fields)


def test_default_tenants_file_follows_agg_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AGG_HOME", str(tmp_path))
    assert Settings().tenants_file == tmp_path.resolve() / "deploy" / "local" / "aggregator.yaml"


def test_default_minimum_in_sync_replicas_allows_acks_all_writes() -> None:
    loaded = load_settings()
    assert loaded.min_insync_replicas <= loaded.replication_factor


def test_settings_are_frozen() -> None:
    loaded = load_settings()
    with pytest.raises(ValidationError):
        loaded.partition_count = 6  # type: ignore[misc]


# --- the environment ------------------------------------------------------------------------


def test_override_table_covers_every_field() -> None:
    assert set(OVERRIDES) == set(Settings.model_fields)


@pytest.mark.parametrize(("field", "raw", "expected"), [(f, *v) for f, v in OVERRIDES.items()])
def test_environment_overrides_one_setting(
    monkeypatch: pytest.MonkeyPatch, field: str, raw: str, expected: Any
) -> None:
    monkeypatch.setenv(env_name(field), raw)
    companions = {}
    if field == "min_insync_replicas":
        # reachable only with at least as many replicas
        companions = {"replication_factor": expected}
        monkeypatch.setenv(env_name("replication_factor"), str(expected))
    for loaded in (load_settings(), Settings()):
        assert getattr(loaded, field) == expected
        others = {f: companions.get(f, v) for f, v in DEFAULTS.items() if f != field}
        assert {f: getattr(loaded, f) for f in others} == others


def test_lower_case_variable_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("agg_partition_count", "6")
    assert load_settings().partition_count == 6


def test_non_setting_agg_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    # AGG_HOME, AGG_STATE_DIR and AGG_TEST_SERVERS share the prefix without being settings
    monkeypatch.setenv("AGG_TEST_SERVERS", "local")
    monkeypatch.setenv("AGG_NOT_A_SETTING", "x")
    assert load_settings().partition_count == DEFAULTS["partition_count"]


def test_keyword_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGG_PARTITION_COUNT", "24")
    assert load_settings(partition_count=6).partition_count == 6


# --- the connection file of the local stack --------------------------------------------------


def test_stack_env_file_lives_in_the_state_directory(clean_env: Path) -> None:
    assert stack_env_file() == clean_env / "stack.env"


def test_no_connection_file_means_defaults(clean_env: Path) -> None:
    assert not stack_env_file().exists()
    assert load_settings().kafka_bootstrap == DEFAULTS["kafka_bootstrap"]


def test_connection_file_is_read(clean_env: Path) -> None:
    write_stack_env(
        clean_env,
        kafka_bootstrap="127.0.0.1:40001",
        database_url="postgresql://aggregator@127.0.0.1:40002/aggregator",
    )
    loaded = load_settings()
    assert loaded.kafka_bootstrap == "127.0.0.1:40001"
    assert loaded.database_url == "postgresql://aggregator@127.0.0.1:40002/aggregator"
    assert loaded.partition_count == DEFAULTS["partition_count"]


def test_environment_wins_over_connection_file(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_stack_env(
        clean_env,
        kafka_bootstrap="127.0.0.1:40001",
        database_url="postgresql://aggregator@127.0.0.1:40002/aggregator",
        partition_count="6",
    )
    monkeypatch.setenv("AGG_KAFKA_BOOTSTRAP", "broker:9092")
    monkeypatch.setenv("AGG_PARTITION_COUNT", "24")
    loaded = load_settings()
    assert loaded.kafka_bootstrap == "broker:9092"
    assert loaded.partition_count == 24
    assert loaded.database_url == "postgresql://aggregator@127.0.0.1:40002/aggregator"


def test_keyword_overrides_win_over_connection_file(clean_env: Path) -> None:
    write_stack_env(clean_env, kafka_bootstrap="127.0.0.1:40001")
    assert load_settings(kafka_bootstrap="k:1").kafka_bootstrap == "k:1"


def test_unknown_keys_in_connection_file_are_ignored(clean_env: Path) -> None:
    write_stack_env(clean_env, kafka_bootstrap="127.0.0.1:40001", future_setting="x")
    assert load_settings().kafka_bootstrap == "127.0.0.1:40001"


def test_connection_file_values_are_validated(clean_env: Path) -> None:
    write_stack_env(clean_env, partition_count="0")
    with pytest.raises(ValidationError) as caught:
        load_settings()
    assert [e["loc"] for e in caught.value.errors()] == [("partition_count",)]


def test_plain_settings_do_not_read_the_connection_file(clean_env: Path) -> None:
    # the test fixtures rely on this: Settings() gives defaults whatever `dev up` wrote
    write_stack_env(clean_env, kafka_bootstrap="127.0.0.1:40001")
    assert Settings().kafka_bootstrap == DEFAULTS["kafka_bootstrap"]


# --- bounds -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "raw"), OUT_OF_RANGE)
def test_out_of_range_value_is_refused_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, field: str, raw: str
) -> None:
    monkeypatch.setenv(env_name(field), raw)
    with pytest.raises(ValidationError) as caught:
        load_settings()
    assert [e["loc"] for e in caught.value.errors()] == [(field,)]


@pytest.mark.parametrize(("field", "raw"), OUT_OF_RANGE)
def test_out_of_range_keyword_is_refused_naming_the_field(field: str, raw: str) -> None:
    overrides: dict[str, Any] = {field: raw}
    with pytest.raises(ValidationError) as caught:
        Settings(**overrides)
    assert [e["loc"] for e in caught.value.errors()] == [(field,)]


@pytest.mark.parametrize(("field", "raw"), ON_THE_BOUND)
def test_value_on_the_bound_is_accepted(
    monkeypatch: pytest.MonkeyPatch, field: str, raw: str
) -> None:
    monkeypatch.setenv(env_name(field), raw)
    if field == "min_insync_replicas":
        monkeypatch.setenv(env_name("replication_factor"), "7")
    assert str(getattr(load_settings(), field)) == raw


def test_min_insync_replicas_above_replication_factor_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(env_name("replication_factor"), "1")
    monkeypatch.setenv(env_name("min_insync_replicas"), "2")
    with pytest.raises(ValidationError, match="exceeds replication_factor"):
        load_settings()


def test_every_bounded_field_has_an_out_of_range_row() -> None:
    bounded = {
        name for name, info in Settings.model_fields.items() if bounds(info.metadata) != set()
    }
    assert bounded <= {field for field, _ in OUT_OF_RANGE}


# --- the shape of every setting (a guard for future fields) -----------------------------------

UNIT_LAST = re.compile(r"_(ms|s|bytes|kb|mb|gb|count|port|minor)(_min|_max)?$")
"""Numbers end in their unit, optionally followed by ``_min``/``_max`` (``latency_ms_max``,
``retry_count_max``); a count of things ends in ``_count``, money in minor units in
``_minor``."""

NAMED_AFTER_KAFKA: dict[str, str] = {
    "replication_factor": "Kafka's replication.factor: a count of replicas",
    "min_insync_replicas": "Kafka's min.insync.replicas: a count of replicas",
}
"""Numbers that keep the name of the Kafka setting they become, so they can be looked up."""


def numeric(annotation: Any) -> bool:
    if annotation is bool:
        return False
    if annotation in (int, float):
        return True
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return any(numeric(a) for a in typing.get_args(annotation) if a is not type(None))
    return False


def bounds(metadata: list[Any]) -> set[str]:
    found = set()
    for item in metadata:
        if isinstance(item, annotated_types.Ge | annotated_types.Gt):
            found.add("lower")
        if isinstance(item, annotated_types.Le | annotated_types.Lt):
            found.add("upper")
    return found


def shape_problems(model: type[Settings]) -> list[str]:
    problems = []
    for name, info in model.model_fields.items():
        if not (info.description or "").strip():
            problems.append(f"{name}: no description giving the reason for its default")
        if not numeric(info.annotation):
            continue
        if name not in NAMED_AFTER_KAFKA and not UNIT_LAST.search(name):
            problems.append(f"{name}: a number whose name does not end with its unit")
        if bounds(info.metadata) != {"lower", "upper"}:
            problems.append(f"{name}: a number without both a lower and an upper bound")
    return problems


def test_every_setting_has_a_reason_a_unit_last_name_and_bounds() -> None:
    assert shape_problems(Settings) == []


def test_kafka_named_exceptions_are_still_settings() -> None:
    assert set(NAMED_AFTER_KAFKA) <= set(Settings.model_fields)


def test_shape_guard_catches_a_badly_shaped_field() -> None:
    class Careless(Settings):
        wallet_timeout: int = Field(5_000, ge=1, le=60_000, description="Wallet call bound.")
        retry_count_max: int = Field(3, description="Retries before dead-lettering.")
        backoff_ms: float | None = Field(None, ge=0, le=1)
        debug: bool = Field(False, description="Verbose logs.")

    assert shape_problems(Careless) == [
        "wallet_timeout: a number whose name does not end with its unit",
        "retry_count_max: a number without both a lower and an upper bound",
        "backoff_ms: no description giving the reason for its default",
    ]


@pytest.mark.parametrize(
    ("name", "unit_last"),
    [
        ("wallet_timeout_ms", True),
        ("retry_count_max", True),
        ("latency_ms_max", True),
        ("message_size_bytes", True),
        ("dev_kafka_heap_mb", True),
        ("dev_kafka_port", True),
        ("partition_count", True),
        ("wallet_timeout", False),
        ("retries", False),
        ("max_bytes_per_poll", False),
        ("timeout_msec", False),
    ],
)
def test_unit_last_rule(name: str, unit_last: bool) -> None:
    assert bool(UNIT_LAST.search(name)) is unit_last
