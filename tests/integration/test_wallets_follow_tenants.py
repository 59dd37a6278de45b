"""The wallet side follows the tenants document, on the real broker and PostgreSQL: after
``aggregator config apply`` adds a Kafka-wallet operator and an HTTP-wallet operator, the
running reference wallet serves the first and the running bridge (in front of the running
reference HTTP wallet) the second, with no restart; applied without them, both stop their
loops. Topics of a prefix of this module's own (its config topic is its own)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import TopicPartition

from agg_avro import AvroCodec
from agg_config.paths import repo_root
from agg_config.settings import Settings
from agg_kafka.admin import ensure_topics
from agg_kafka.clients import make_consumer, make_producer, player_key
from agg_kafka.topics import TopicNames, catalogue
from tests.integration.test_reference_wallet import STARTING_BALANCE, _free_port, command

CODEC = AvroCodec()
DEV: dict[str, Any] = yaml.safe_load(
    (repo_root() / "deploy" / "local" / "aggregator.yaml").read_text()
)
KAFKA_OP, HTTP_OP = "op-knew", "op-hnew"
NEW_BALANCE = 4_321


def _tenants(wallet_port: int, *, with_new: bool) -> dict[str, Any]:
    data = copy.deepcopy(DEV)
    gamma = next(o for o in data["operators"] if o["id"] == "op-gamma")
    gamma["wallet"]["url"] = f"http://127.0.0.1:{wallet_port}/op-gamma"
    if with_new:
        kafka_op = copy.deepcopy(next(o for o in data["operators"] if o["id"] == "op-beta"))
        kafka_op.update(id=KAFKA_OP, name="New Kafka")
        kafka_op["wallet"] = {"mode": "kafka", "starting_balance": NEW_BALANCE}
        http_op = copy.deepcopy(gamma)
        http_op.update(id=HTTP_OP, name="New HTTP")
        http_op["wallet"].update(url=f"http://127.0.0.1:{wallet_port}/{HTTP_OP}",
                                 starting_balance=NEW_BALANCE)  # fmt: skip
        data["operators"] += [kafka_op, http_op]
    return data


def _events(log: Path, name: str) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if event.get("event") == name:
                found.append(event)
    return found


def _until(check: Any, timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not in {timeout_s}s\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


@dataclass
class Side:
    settings: Settings
    env: dict[str, str]
    root: Path
    wallet_port: int
    processes: dict[str, subprocess.Popen[bytes]]

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def apply(self, with_new: bool, actor: str) -> None:
        path = self.root / f"tenants-{with_new}.yaml"
        path.write_text(yaml.safe_dump(_tenants(self.wallet_port, with_new=with_new)))
        done = subprocess.run(
            [sys.executable, "-m", "agg_cli.main", "config", "apply", str(path), "--actor", actor],
            env=self.env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def side(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Side]:
    root = tmp_path_factory.mktemp("wallets-follow")
    prefix = f"follow-{uuid.uuid4().hex[:8]}"
    ours = settings.model_copy(update={"topic_prefix": prefix})
    specs = catalogue([o["id"] for o in DEV["operators"]], partitions=ours.partition_count,
                      replication_factor=1, min_insync_replicas=1, prefix=prefix)  # fmt: skip
    assert asyncio.run(ensure_topics(ours.kafka_bootstrap, specs)).ok
    wallet_port, control_port = _free_port(), _free_port()
    tenants_file = root / "tenants.yaml"
    tenants_file.write_text(yaml.safe_dump(_tenants(wallet_port, with_new=False)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGG_")}
    env.update({
        "AGG_STATE_DIR": str(root), "AGG_KAFKA_BOOTSTRAP": ours.kafka_bootstrap,
        "AGG_DATABASE_URL": ours.database_url, "AGG_TOPIC_PREFIX": prefix,
        "AGG_TENANTS_FILE": str(tenants_file), "AGG_HTTPWALLET_PORT": str(wallet_port),
        "AGG_WALLET_METRICS_PORT": str(control_port),
        "AGG_BRIDGE_METRICS_PORT": str(_free_port()),
    })  # fmt: skip
    s = Side(ours, env, root, wallet_port, {})
    for name, module in (("wallet", "agg_wallet"), ("httpwallet", "agg_httpwallet"),
                         ("bridge", "agg_bridge")):  # fmt: skip
        s.processes[name] = subprocess.Popen(
            [sys.executable, "-m", module, *(["--client-id", f"follow-{name}"]
                                             if name != "httpwallet" else [])],
            env=env, stdout=subprocess.DEVNULL, stderr=s.log(name).open("ab"),
        )  # fmt: skip
    try:
        for name in ("wallet", "bridge"):
            _until(lambda n=name: bool(_events(s.log(n), "partitions_assigned")), 90,
                   f"{name} assigned", s.log(name))  # fmt: skip
        _until(lambda: bool(_events(s.log("httpwallet"), "httpwallet_started")), 60,
               "httpwallet started", s.log("httpwallet"))  # fmt: skip
        yield s
    finally:
        codes = {}
        for name, proc in s.processes.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            codes[name] = proc.wait(timeout=60)
        assert codes == dict.fromkeys(s.processes, 0), {
            n: s.log(n).read_text()[-2000:] for n in s.processes}  # fmt: skip


async def _balance(settings: Settings, operator: str, timeout_s: float) -> dict[str, Any]:
    """Ask ``operator``'s wallet for a new player's balance until it answers (its loop may
    still be joining its group); every ask has its own command id."""
    names = TopicNames(settings.topic_prefix)
    replies = names.wallet_replies(operator)
    producer = make_producer(settings, client_id="follow-test")
    reader = make_consumer(settings, group_id=None, client_id="follow-test-reader")
    await producer.start()
    await reader.start()
    try:
        tps = [TopicPartition(replies, p) for p in range(settings.partition_count)]
        reader.assign(tps)
        await reader.seek_to_end(*tps)
        for tp in tps:
            await reader.position(tp)
        player = f"follow-{uuid.uuid4().hex[:8]}"
        wanted = command(operator, player, "BALANCE")
        await producer.send_and_wait(names.wallet_commands(operator),
                                     CODEC.encode("casino.agg.WalletCommand", wanted),
                                     key=player_key(operator, player))  # fmt: skip
        async with asyncio.timeout(timeout_s):
            while True:
                for records in (await reader.getmany(timeout_ms=200)).values():
                    for record in records:
                        datum = CODEC.decode(record.value or b"").datum
                        if datum["command_id"] == wanted["command_id"]:
                            return dict(datum)
    finally:
        await reader.stop()
        await producer.stop()


def test_new_operators_are_served_and_removed_ones_stopped(side: Side) -> None:
    # before: op-alpha answers with the dev starting balance; the new ones are nobody's
    before = asyncio.run(_balance(side.settings, "op-alpha", 60))
    assert (before["status"], before["balance"]) == ("OK", STARTING_BALANCE)

    side.apply(True, "follow-alice")
    for operator in (KAFKA_OP, HTTP_OP):  # the first may wait for a new group's join
        reply = asyncio.run(_balance(side.settings, operator, 90))
        assert (reply["status"], reply["balance"], reply["operator_id"]) == (
            "OK", NEW_BALANCE, operator)  # fmt: skip
    changed = _events(side.log("bridge"), "bridge_operators_changed")
    assert changed and changed[-1]["started"] == [HTTP_OP]
    assert _events(side.log("wallet"), "wallet_operators_changed")[-1]["started"] == [KAFKA_OP]
    applied = _events(side.log("httpwallet"), "tenants_applied")
    assert applied and applied[-1]["actor"] == "follow-alice"

    side.apply(False, "follow-bob")

    def stopped(log: str, event: str, operator: str) -> bool:
        return any(e.get("operator_id") == operator for e in _events(side.log(log), event))

    _until(lambda: stopped("bridge", "bridge_stopped", HTTP_OP), 60, "bridge loop stopped",
           side.log("bridge"))  # fmt: skip
    _until(lambda: stopped("wallet", "wallet_stopped", KAFKA_OP), 60, "wallet loop stopped",
           side.log("wallet"))  # fmt: skip
    # the others keep being served
    after = asyncio.run(_balance(side.settings, "op-alpha", 60))
    assert after["status"] == "OK"
