"""The benchmark's floors, the relay floor (``python -m bench.floor``) and the physical floor
(``python -m bench.physical``), each as three real processes on the session's broker: every
callback comes back 200 OK through the four hops, answered with its own outcome."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agg_config.settings import Settings
from agg_devstack.process import free_port
from agg_devstack.services import ServiceProcess
from agg_ingress.client import signed_headers

REPO_ROOT = Path(__file__).resolve().parents[2]
PROVIDER = "prov-floor"
PLAYERS = 20
CALLBACKS = 100


@pytest.fixture(scope="module", params=["bench.floor", "bench.physical"])
def front_url(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[str]:
    module = request.param
    root = tmp_path_factory.mktemp(module.replace(".", "-"))
    port = free_port()
    python_path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {"AGG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "PYTHONPATH": python_path}
    assigned = '"event":"partitions_assigned"'
    processes = [
        ServiceProcess("saga", root, module, ["saga"], ready_log_text=assigned),
        ServiceProcess("wallet", root, module, ["wallet"], ready_log_text=assigned),
        ServiceProcess(
            "front", root, module, ["front", "--port", str(port)],
            ready_url=f"http://127.0.0.1:{port}/healthz",
        ),
    ]  # fmt: skip
    try:
        for process in processes:
            process.start(env, 90)
        yield f"http://127.0.0.1:{port}"
    finally:
        for process in reversed(processes):
            process.stop()


async def _send(front_url: str) -> list[httpx.Response]:
    """Every callback at once, so outcomes of many players cross on the way back."""
    path = f"/v1/providers/{PROVIDER}/wallet/bet"
    async with httpx.AsyncClient(base_url=front_url, timeout=10) as client:

        async def one(i: int) -> httpx.Response:
            fields = {"request_id": f"floor-{i}", "player_id": f"player-{i % PLAYERS}",
                      "transaction_id": f"txn-{i}", "round_id": f"rnd-{i}", "amount": 100,
                      "currency": "EUR", "round_closed": True}  # fmt: skip
            body = json.dumps(fields).encode()
            headers = signed_headers(b"floor-secret", "POST", path, body)
            return await client.post(path, content=body, headers=headers)

        return await asyncio.gather(*(one(i) for i in range(CALLBACKS)))


def test_every_callback_is_answered_with_its_own_outcome(front_url: str) -> None:
    answers = asyncio.run(_send(front_url))
    for i, answer in enumerate(answers):
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "OK"
        assert answer.json()["request_id"] == f"floor-{i}"
    assert len({answer.json()["corr"] for answer in answers}) == CALLBACKS


def test_a_body_without_player_is_refused(front_url: str) -> None:
    answer = httpx.post(f"{front_url}/v1/providers/{PROVIDER}/wallet/bet", content=b"{}")
    assert answer.status_code == 400
    assert answer.json() == {"status": "INVALID_REQUEST"}
