"""Real Kafka and PostgreSQL servers for tests, behind one API whatever provides them.

Per server, in order:
1. the environment names it (``AGG_KAFKA_BOOTSTRAP``, ``AGG_DATABASE_URL``): use it;
2. a Docker engine answers: testcontainers (Kafka 4.x in KRaft mode, PostgreSQL);
3. otherwise: the local stack (``agg_devstack``) started in a throw-away directory.

``AGG_TEST_SERVERS=local|docker`` forces a provider for the servers not named in the
environment (e.g. to test the local stack on a machine that has Docker).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Source = Literal["environment", "docker", "local"]

KAFKA_IMAGE = "confluentinc/cp-kafka:8.0.0"  # Apache Kafka 4.0, KRaft
POSTGRES_IMAGE = "postgres:16-alpine"


@dataclass(frozen=True)
class Choice:
    kafka: Source
    postgres: Source
    reason: str


def docker_available(timeout_s: float = 3.0) -> bool:
    """True if a Docker engine answers a ping (the CLI alone is not enough)."""
    try:
        import docker  # testcontainers' own dependency

        client = docker.from_env(timeout=int(timeout_s))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure to reach an engine means "no engine"
        return False


def choose(env: Mapping[str, str], docker_ping: Callable[[], bool]) -> Choice:
    """Decide where each server comes from. Pure apart from ``docker_ping``, which is
    called only when a server is not named in the environment and no provider is forced."""
    forced = env.get("AGG_TEST_SERVERS", "").strip().lower()
    if forced not in ("", "local", "docker"):
        raise ValueError(f"AGG_TEST_SERVERS={forced!r}: expected 'local' or 'docker'")
    kafka_env = bool(env.get("AGG_KAFKA_BOOTSTRAP", "").strip())
    pg_env = bool(env.get("AGG_DATABASE_URL", "").strip())
    if kafka_env and pg_env:
        return Choice("environment", "environment", "both servers named in the environment")
    if forced:
        other: Source = "local" if forced == "local" else "docker"
        reason = f"AGG_TEST_SERVERS={forced}"
    elif docker_ping():
        other, reason = "docker", "a Docker engine answers"
    else:
        other, reason = "local", "no Docker engine answers: local servers"
    return Choice(
        "environment" if kafka_env else other,
        "environment" if pg_env else other,
        reason,
    )


@dataclass(frozen=True)
class Servers:
    kafka_bootstrap: str
    database_url: str
    choice: Choice


@contextlib.contextmanager
def _docker_kafka() -> Iterator[str]:
    from testcontainers.community.kafka import KafkaContainer

    container = KafkaContainer(KAFKA_IMAGE).with_kraft()
    container.with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
    with container:
        yield container.get_bootstrap_server()


@contextlib.contextmanager
def _docker_postgres() -> Iterator[str]:
    from testcontainers.community.postgres import PostgresContainer

    with PostgresContainer(POSTGRES_IMAGE, driver=None) as pg:
        yield pg.get_connection_url()


@contextlib.contextmanager
def _local_stack(root: Path) -> Iterator[tuple[str, str]]:
    from agg_config.settings import Settings
    from agg_devstack.stack import LocalStack

    # defaults only: the developer's var/stack.env must not leak into a test stack
    stack = LocalStack(root, Settings(), create_topics=False)
    try:
        info = stack.up()
        yield info.kafka_bootstrap, info.database_url
    finally:
        stack.down()


@contextlib.contextmanager
def provide(
    env: Mapping[str, str] | None = None,
    docker_ping: Callable[[], bool] = docker_available,
    workdir: Path | None = None,
) -> Iterator[Servers]:
    """Start (or find) the servers; stop what was started on exit."""
    env = os.environ if env is None else env
    choice = choose(env, docker_ping)
    with contextlib.ExitStack() as stack:
        kafka = env.get("AGG_KAFKA_BOOTSTRAP", "").strip()
        database = env.get("AGG_DATABASE_URL", "").strip()
        if "local" in (choice.kafka, choice.postgres):
            root = workdir or Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="agg-stack-"))
            )
            local_kafka, local_db = stack.enter_context(_local_stack(root))
            kafka = kafka if choice.kafka == "environment" else local_kafka
            database = database if choice.postgres == "environment" else local_db
        if choice.kafka == "docker":
            kafka = stack.enter_context(_docker_kafka())
        if choice.postgres == "docker":
            database = stack.enter_context(_docker_postgres())
        yield Servers(kafka, database, choice)
