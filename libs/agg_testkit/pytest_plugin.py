"""pytest fixtures over :mod:`agg_testkit.servers`: ``servers``, ``kafka_bootstrap``,
``database_url`` (session-scoped, real servers), ``catalogue_topics`` and ``settings``."""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agg_config.settings import Settings
from agg_testkit.servers import Servers, provide


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    workdir: Path = tmp_path_factory.mktemp("stack")
    with provide(workdir=workdir) as found:
        print(
            f"\n[servers] kafka={found.kafka_bootstrap} ({found.choice.kafka}), "
            f"postgres ({found.choice.postgres}); {found.choice.reason}",
            file=sys.stderr,
        )
        yield found


@pytest.fixture(scope="session")
def kafka_bootstrap(servers: Servers) -> str:
    return servers.kafka_bootstrap


@pytest.fixture(scope="session")
def database_url(servers: Servers) -> str:
    return servers.database_url


@pytest.fixture(scope="session")
def settings(servers: Servers) -> Settings:
    """Settings pointing at the test servers (nothing read from var/stack.env), with a
    random session secret of the test session (the ingress refuses the public default)."""
    return Settings(
        kafka_bootstrap=servers.kafka_bootstrap,
        database_url=servers.database_url,
        session_secret=secrets.token_hex(32),
    )


@pytest.fixture(scope="session")
def catalogue_topics(settings: Settings) -> list[str]:
    """Every topic of the catalogue for the dev tenants, created on the test broker."""
    from agg_kafka.admin import ensure_topics
    from agg_kafka.topics import catalogue_from_settings

    specs = catalogue_from_settings(settings)
    report = asyncio.run(ensure_topics(settings.kafka_bootstrap, specs))
    assert report.ok, report.lines()
    return [s.name for s in specs]
