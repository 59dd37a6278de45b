"""Where the test servers come from: the environment, a Docker engine, or the local stack.

``choose`` is given the environment and a ping; each row states which source each server
gets and whether the ping may be consulted at all (asking Docker when the answer cannot
matter would slow every run on machines without an engine).
"""

from __future__ import annotations

import gc
import time
from typing import Any

import pytest

from agg_testkit.servers import Choice, choose, docker_available, provide

KAFKA = {"AGG_KAFKA_BOOTSTRAP": "broker:9092"}
POSTGRES = {"AGG_DATABASE_URL": "postgresql://u@db:5432/x"}
BOTH = {**KAFKA, **POSTGRES}


class Ping:
    """A docker ping with a fixed answer, or one that must not be asked (answer None)."""

    def __init__(self, answer: bool | None) -> None:
        self.answer = answer
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        if self.answer is None:
            raise AssertionError("docker was pinged although the answer cannot matter")
        return self.answer


# (env, ping answer or None if it must not be asked, kafka source, postgres source)
ROWS: list[Any] = [
    pytest.param(BOTH, None, "environment", "environment", id="both named"),
    pytest.param(
        {**BOTH, "AGG_TEST_SERVERS": "docker"},
        None,
        "environment",
        "environment",
        id="both named beat a forced provider",
    ),
    pytest.param(KAFKA, True, "environment", "docker", id="kafka named, docker answers"),
    pytest.param(KAFKA, False, "environment", "local", id="kafka named, no docker"),
    pytest.param(POSTGRES, True, "docker", "environment", id="postgres named, docker answers"),
    pytest.param(POSTGRES, False, "local", "environment", id="postgres named, no docker"),
    pytest.param({}, True, "docker", "docker", id="none named, docker answers"),
    pytest.param({}, False, "local", "local", id="none named, no docker"),
    pytest.param(
        {"AGG_TEST_SERVERS": "local"}, None, "local", "local", id="forced local despite docker"
    ),
    pytest.param(
        {"AGG_TEST_SERVERS": "docker"}, None, "docker", "docker", id="forced docker without ping"
    ),
    pytest.param(
        {"AGG_TEST_SERVERS": "  Local "}, None, "local", "local", id="forced, case and spaces"
    ),
    pytest.param(
        {**KAFKA, "AGG_TEST_SERVERS": "local"},
        None,
        "environment",
        "local",
        id="kafka named, postgres forced local",
    ),
    pytest.param(
        {**POSTGRES, "AGG_TEST_SERVERS": "docker"},
        None,
        "docker",
        "environment",
        id="postgres named, kafka forced docker",
    ),
    pytest.param(
        {"AGG_KAFKA_BOOTSTRAP": "", "AGG_DATABASE_URL": "   "},
        True,
        "docker",
        "docker",
        id="blank values are unset",
    ),
    pytest.param(
        {"AGG_KAFKA_BOOTSTRAP": " \t", **POSTGRES},
        False,
        "local",
        "environment",
        id="whitespace kafka is unset",
    ),
    pytest.param({"AGG_TEST_SERVERS": ""}, False, "local", "local", id="blank force is unset"),
    pytest.param({"AGG_TEST_SERVERS": "  "}, True, "docker", "docker", id="spaces force unset"),
]


@pytest.mark.parametrize(("env", "answer", "kafka", "postgres"), ROWS)
def test_choose(env: dict[str, str], answer: bool | None, kafka: str, postgres: str) -> None:
    ping = Ping(answer)
    choice = choose(env, ping)
    assert (choice.kafka, choice.postgres) == (kafka, postgres)
    assert choice.reason.strip()
    assert ping.calls == (0 if answer is None else 1)


@pytest.mark.parametrize("forced", ["podman", "LOCALS", "env", "none"])
def test_invalid_forced_provider_is_refused(forced: str) -> None:
    ping = Ping(None)
    with pytest.raises(ValueError, match="AGG_TEST_SERVERS"):
        choose({"AGG_TEST_SERVERS": forced}, ping)
    with pytest.raises(ValueError, match="expected 'local' or 'docker'"):
        choose({**BOTH, "AGG_TEST_SERVERS": forced}, ping)
    assert ping.calls == 0


def test_reasons_tell_the_cases_apart() -> None:
    reasons = {
        choose(BOTH, Ping(None)).reason,
        choose({"AGG_TEST_SERVERS": "local"}, Ping(None)).reason,
        choose({}, Ping(True)).reason,
        choose({}, Ping(False)).reason,
    }
    assert len(reasons) == 4


def test_servers_named_in_the_environment_are_used_as_given() -> None:
    env = {"AGG_KAFKA_BOOTSTRAP": " broker:9092 ", "AGG_DATABASE_URL": "postgresql://u@db/x"}
    with provide(env=env, docker_ping=Ping(None)) as servers:
        assert servers.kafka_bootstrap == "broker:9092"
        assert servers.database_url == "postgresql://u@db/x"
        assert servers.choice == Choice("environment", "environment", servers.choice.reason)


# --- the docker ping ----------------------------------------------------------------------------

# docker-py's unix-socket connection does not close its socket when connect() fails; the
# socket sits in a reference cycle, so it is collected here and its warning ignored here
LEAKED_SOCKET = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)


def ask_docker(timeout_s: float) -> tuple[bool, float]:
    started = time.monotonic()
    answer = docker_available(timeout_s=timeout_s)
    elapsed_s = time.monotonic() - started
    gc.collect()
    return answer, elapsed_s


@LEAKED_SOCKET
def test_docker_available_answers_a_bool_quickly() -> None:
    answer, elapsed_s = ask_docker(2.0)
    assert isinstance(answer, bool)
    assert elapsed_s < 5.0


@pytest.mark.parametrize(
    "docker_host",
    ["unix:///nonexistent/agg-test/docker.sock", "no-such-scheme://x", "tcp://"],
)
@LEAKED_SOCKET
def test_docker_available_is_false_when_no_engine_can_answer(
    monkeypatch: pytest.MonkeyPatch, docker_host: str
) -> None:
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    answer, elapsed_s = ask_docker(2.0)
    assert answer is False
    assert elapsed_s < 5.0
