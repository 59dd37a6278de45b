"""Typed settings of every service and tool.

Each setting has an environment variable (``AGG_`` + its name in upper case), a default and
the reason for that default in its description. Limits carry their unit last in the name
(``..._ms``, ``..._bytes``, ``..._count_max``). Values are read, in order of precedence,
from the environment, then from the connection file that ``aggregator dev up`` writes
(``var/stack.env``), then from the defaults below.

Secrets stay out of what is printed: ``session_secret`` is a ``SecretStr`` (shown as
``**********``; read it with ``get_secret_value()``), the password of ``database_url`` is
masked in the settings' repr and in :meth:`Settings.shown`, and validation errors do not
echo the value they refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agg_config.paths import repo_root, stack_env_file
from agg_config.redact import redact_url

DEV_SESSION_SECRET = "dev-session-secret-change-me-0000"
"""The built-in default of ``session_secret``: public (it is in the source), so the ingress
refuses to start with it."""
SESSION_SECRET_BYTES_MIN = 32
"""Shortest session secret the ingress starts with: 256 bits, the HMAC-SHA256 key size."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AGG_",
        env_file=None,
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,  # a refused secret is not echoed in the error
    )

    # --- where things are -------------------------------------------------------------
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092",
        description="Kafka bootstrap servers, comma-separated. Written by `aggregator dev up`.",
    )
    database_url: str = Field(
        "postgresql://aggregator@127.0.0.1:5432/aggregator",
        description="PostgreSQL connection URL (libpq form). Written by `aggregator dev up`.",
    )
    tenants_file: Path = Field(
        default_factory=lambda: repo_root() / "deploy" / "local" / "aggregator.yaml",
        description="YAML file with operators, providers and games.",
    )

    # --- topics ---------------------------------------------------------------------------
    partition_count: int = Field(
        12,
        ge=1,
        le=10_000,
        description="Partitions of every co-partitioned topic. 12 divides evenly among 1, 2, 3, "
        "4, 6 and 12 saga workers; it can only grow, and growing it re-keys players.",
    )
    replication_factor: int = Field(
        1,
        ge=1,
        le=7,
        description="Replicas of every topic. 1 on the single-broker local stack; 3 in production.",
    )
    min_insync_replicas: int = Field(
        1,
        ge=1,
        le=7,
        description="min.insync.replicas of every topic. 1 locally; 2 in production so that an "
        "acks=all write survives the loss of one broker.",
    )
    topic_prefix: str = Field(
        "agg",
        pattern=r"^[a-z][a-z0-9_-]{0,31}$",
        description="First segment of every topic name; lets several deployments share a cluster.",
    )

    # --- producers and consumers ----------------------------------------------------------
    kafka_client: Literal["aiokafka", "librdkafka"] = Field(
        "librdkafka",
        description="Kafka client of the transport (saga worker, reference wallet, projector) "
        "and of the ingress's producer and outcome consumer: librdkafka through confluent-kafka "
        "(half the saga's hop latency of aiokafka, docs/transport.md) or aiokafka (pure Python).",
    )
    producer_linger_ms: int = Field(
        1,
        ge=0,
        le=1000,
        description="Producer batching delay. 1 ms keeps callback latency low while still batching "
        "under load.",
    )
    producer_request_timeout_ms: int = Field(
        30_000,
        ge=1000,
        le=300_000,
        description="How long a produce request may wait for acks=all before it is retried.",
    )
    consumer_session_timeout_ms: int = Field(
        10_000,
        ge=1000,
        le=300_000,
        description="Consumer group session timeout: how fast a dead worker's partitions move.",
    )
    admin_timeout_ms: int = Field(
        30_000,
        ge=1000,
        le=300_000,
        description="Bound on every admin (topic) request.",
    )

    # --- ingress -------------------------------------------------------------------------
    ingress_host: str = Field("127.0.0.1", description="Address the ingress HTTP server binds.")
    ingress_port: int = Field(
        8080, ge=1, le=65535, description="Port of the ingress HTTP server (providers, operators)."
    )
    ingress_outcome_wait_ms: int = Field(
        2_000,
        ge=100,
        le=30_000,
        description="How long a callback waits for the saga's outcome before 503 RETRY_LATER; "
        "providers commonly time out at 3-5 s.",
    )
    ingress_pending_count_max: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="Callbacks one ingress instance may have waiting at once; beyond it, 503.",
    )
    request_body_bytes_max: int = Field(
        16_384,
        ge=1_024,
        le=1_048_576,
        description="Largest callback body accepted (413 above); canonical bodies are < 1 KiB.",
    )
    signature_window_s: int = Field(
        300,
        ge=1,
        le=3_600,
        description="Largest distance between X-Agg-Timestamp and the server clock "
        "(contract: 300).",
    )
    session_ttl_s: int = Field(
        4 * 3600,
        ge=5,
        le=7 * 24 * 3600,
        description="Lifetime of a game session token for play (bets, balance); a casino "
        "session rarely exceeds hours. Seconds are allowed for tests of expiry.",
    )
    session_settle_window_s: int = Field(
        7 * 24 * 3600,
        ge=0,
        le=21 * 24 * 3600,
        description="How long after a session expires its wins and rollbacks (owed money) "
        "are still accepted: providers settle rounds hours or days late. At most 21 days, so "
        "that with a session of at most 7 days the saga (30 days of memory) still knows the "
        "bet a late rollback names.",
    )
    session_secret: SecretStr = Field(
        SecretStr(DEV_SESSION_SECRET),
        min_length=16,
        description="HMAC key of session tokens: whoever holds it can mint a session for any "
        "operator's player. The ingress refuses to start with this default or with fewer "
        "than 32 bytes; `aggregator dev up` generates a random one per local stack.",
    )

    # --- saga ------------------------------------------------------------------------------
    wallet_timeout_ms: int = Field(
        1_500,
        ge=50,
        le=60_000,
        description="A debit without a wallet reply this long is compensated; below "
        "ingress_outcome_wait_ms so the provider hears RETRY_LATER from a decided state.",
    )
    retry_backoff_initial_ms: int = Field(
        500, ge=10, le=60_000, description="First resend delay of an unacknowledged credit/cancel."
    )
    retry_backoff_max_ms: int = Field(
        30_000,
        ge=100,
        le=3_600_000,
        description="Cap of the doubling resend delay: owed money is retried at least this often.",
    )
    saga_batch_count_max: int = Field(
        500,
        ge=1,
        le=100_000,
        description="Messages the saga worker decides, publishes and persists as one batch.",
    )
    tick_interval_ms: int = Field(
        100,
        ge=10,
        le=10_000,
        description="How often the saga worker checks deadlines and resends; bounds "
        "their lateness.",
    )
    projector_batch_wait_ms: int = Field(
        100,
        ge=0,
        le=5_000,
        description="How long the projector gathers journal events into one PostgreSQL "
        "transaction when fewer than a full batch are waiting: fewer, larger transactions "
        "under light load, projections at most this much later.",
    )

    demo_starting_balance_minor: int = Field(
        100_000,
        ge=0,
        le=10**15,
        description="Demo balance, in minor units, of a player's first demo play in a "
        "currency: demo sessions play against balances the saga holds, never the operator's "
        "wallet. The reference wallet's dev starting balance, so demo and real feel alike.",
    )

    # --- reference wallet ----------------------------------------------------------------------
    wallet_batch_count_max: int = Field(
        500,
        ge=1,
        le=100_000,
        description="Commands the reference wallet applies in one database transaction.",
    )
    wallet_broken: str = Field(
        "",
        pattern=r"^[a-z_]*(,[a-z_]+)*$",
        description="TEST ONLY: deliberate defects of the reference wallet, comma-separated "
        "(no_dedupe, negative_balance, double_rollback, wrong_currency, slow; "
        "no_signature_check for the HTTP wallet), so that the "
        "certification kit's tests can show it catches each; refused unless "
        "wallet_broken_enabled. Empty: the real rules.",
    )
    wallet_broken_enabled: bool = Field(
        False,
        description="TEST ONLY: lets the reference wallet start with wallet_broken defects; "
        "two settings, so that one stray variable never breaks a wallet.",
    )

    # --- metrics ports (0 disables) ------------------------------------------------------------
    ingress_metrics_port: int = Field(
        9181, ge=0, le=65535, description="Port of the ingress's /metrics (also on its HTTP port)."
    )
    saga_metrics_port: int = Field(9182, ge=0, le=65535, description="Port of the saga's /metrics.")
    wallet_metrics_port: int = Field(
        9183, ge=0, le=65535, description="Port of the reference wallet's /metrics."
    )
    projector_metrics_port: int = Field(
        9184, ge=0, le=65535, description="Port of the projector's /metrics."
    )
    bridge_metrics_port: int = Field(
        9185, ge=0, le=65535, description="Port of the HTTP wallet bridge's /metrics."
    )

    # --- reference HTTP operator wallet -------------------------------------------------------
    httpwallet_host: str = Field(
        "127.0.0.1", description="Bind address of the reference HTTP wallet (dev and tests)."
    )
    httpwallet_port: int = Field(
        9186,
        ge=0,
        le=65535,
        description="HTTP port of the reference HTTP wallet (also its /metrics); the dev "
        "tenants file's HTTP operators point at it.",
    )
    httpwallet_connection_count_max: int = Field(
        8,
        ge=1,
        le=256,
        description="PostgreSQL connections of the reference HTTP wallet: one call is one "
        "transaction on one connection, so this bounds the calls applied at once.",
    )

    # --- local stack ----------------------------------------------------------------------
    kafka_version: str = Field(
        "4.1.1",
        pattern=r"^4\.\d+\.\d+$",
        description="Apache Kafka release the local stack resolves from Maven Central "
        "(4.x, KRaft).",
    )
    dev_kafka_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Broker port of the local stack; 0 picks a free port on first start "
        "and keeps it.",
    )
    dev_postgres_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="PostgreSQL port of the local stack; 0 picks a free port on first "
        "start and keeps it.",
    )
    dev_kafka_heap_mb: int = Field(
        768,
        ge=256,
        le=16_384,
        description="Java heap of the local broker; enough for the benchmark on a 2-core machine.",
    )
    dev_start_timeout_ms: int = Field(
        120_000,
        ge=5_000,
        le=900_000,
        description="How long `dev up` waits for both servers to answer before giving up.",
    )

    @model_validator(mode="after")
    def _durability_is_reachable(self) -> Settings:
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"min_insync_replicas ({self.min_insync_replicas}) exceeds replication_factor "
                f"({self.replication_factor}): no acks=all write could ever succeed"
            )
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name == "database_url" and isinstance(value, str):
                value = redact_url(value)
            yield name, value

    def shown(self, name: str) -> str:
        """Setting ``name``'s value as it may be printed: secrets masked."""
        value = getattr(self, name)
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            if name == "session_secret" and secret == DEV_SESSION_SECRET:
                return f"{value} (the built-in default: the ingress refuses it)"
            return f"{value} ({len(secret.encode())} bytes)"
        if name == "database_url":
            return redact_url(str(value))
        return str(value)


class InsecureSecretError(ValueError):
    """A secret that must not be used (the public default, or too short)."""


def session_secret_problem(secret: str) -> str | None:
    """Why ``secret`` may not sign session tokens, or None when it may."""
    how = (
        "set AGG_SESSION_SECRET to at least "
        f"{SESSION_SECRET_BYTES_MIN} random bytes (e.g. `openssl rand -hex 32`); "
        "`aggregator dev up` generates one for the local stack"
    )
    if secret == DEV_SESSION_SECRET:
        return (
            "session_secret (AGG_SESSION_SECRET) is the built-in development default, which "
            f"is public: anyone could mint session tokens with it; {how}"
        )
    size = len(secret.encode())
    if size < SESSION_SECRET_BYTES_MIN:
        return (
            f"session_secret (AGG_SESSION_SECRET) is {size} bytes, fewer than "
            f"{SESSION_SECRET_BYTES_MIN}; {how}"
        )
    return None


def require_session_secret(settings: Settings) -> bytes:
    """The session secret as the key of session tokens; raises
    :class:`InsecureSecretError` (naming the setting, never the value) if it is unfit."""
    secret = settings.session_secret.get_secret_value()
    problem = session_secret_problem(secret)
    if problem is not None:
        raise InsecureSecretError(problem)
    return secret.encode()


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment and the local stack's connection file."""
    env_file = stack_env_file()
    kwargs: dict[str, object] = dict(overrides)
    if env_file.is_file():
        kwargs["_env_file"] = env_file
    return Settings(**kwargs)  # type: ignore[arg-type]


@lru_cache(maxsize=1)
def settings() -> Settings:
    return load_settings()
