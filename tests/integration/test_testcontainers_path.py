"""The Docker path of the fixture API: testcontainers' Kafka (KRaft) and PostgreSQL answer
like the local servers do. Runs only where a Docker engine answers."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from agg_testkit.servers import docker_available, provide

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(
        not docker_available(),
        reason="no Docker engine answers here (the docker CLI alone is not enough); "
        "the same tests run against local servers instead",
    ),
]


def test_testcontainers_servers_answer() -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    with provide(env={"AGG_TEST_SERVERS": "docker"}) as servers:
        assert (servers.choice.kafka, servers.choice.postgres) == ("docker", "docker")
        with psycopg.connect(servers.database_url) as conn:
            assert conn.execute("select 1").fetchone() == (1,)

        async def brokers() -> list[object]:
            admin = AIOKafkaAdminClient(bootstrap_servers=servers.kafka_bootstrap)
            await admin.start()
            try:
                return list((await admin.describe_cluster())["brokers"])
            finally:
                await admin.close()

        assert len(asyncio.run(brokers())) == 1
