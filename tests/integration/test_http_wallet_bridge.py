"""The HTTP wallet bridge on the real broker, against the reference HTTP wallet over real HTTP
and its real PostgreSQL ledger, for both operator-wallet protocols.

A tenants file of the module's own declares two HTTP operators, ``op-hcan`` (canonical-v1,
HMAC) and ``op-hhub`` (hub88-v1, a generated RSA key); ``python -m agg_httpwallet`` serves
both and ``python -m agg_bridge`` bridges both, as processes. Commands go on the operators'
command topics as the saga writes them, replies are read from the reply topics. Every test
uses players of its own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from agg_config.settings import Settings
from agg_kafka.admin import ensure_topics
from agg_kafka.topics import catalogue
from tests.integration.test_reference_wallet import (
    STARTING_BALANCE,
    _free_port,
    _model,
    client,
    command,
    db_balance,
    ledger,
    player,
    status_balance,
)

CANONICAL, HUB88 = "op-hcan", "op-hhub"
OPERATORS = {CANONICAL: "canonical-v1", HUB88: "hub88-v1"}
BREAKER_OPEN_MS = 400
REPO = Path(__file__).resolve().parents[2]


def _pem_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _tenants(wallet_port: int) -> dict[str, Any]:
    dev = yaml.safe_load((REPO / "deploy" / "local" / "aggregator.yaml").read_text())
    # 650 ms a call, one resend: 1,320 ms, within the saga's 1,500 minus the bridge's margin,
    # and room for a loaded test machine
    common = {"timeout_ms": 650, "retry_count_max": 1, "retry_backoff_ms": 20,
              "concurrency_max": 8, "breaker_failure_count": 3,
              "breaker_open_ms": BREAKER_OPEN_MS, "starting_balance": STARTING_BALANCE}  # fmt: skip
    operators = [
        {"id": CANONICAL, "name": "HTTP canonical", "secret": {"value": "op-hcan-api-secret-01"},
         "currencies": ["EUR", "JPY"], "providers": ["prov-nova"],
         "wallet": {"mode": "http", "url": f"http://127.0.0.1:{wallet_port}/wallets/{CANONICAL}",
                    "protocol": "canonical-v1",
                    "secret": {"value": "op-hcan-wallet-secret-0001"}, **common}},
        {"id": HUB88, "name": "HTTP hub88", "secret": {"value": "op-hhub-api-secret-01"},
         "currencies": ["EUR", "JPY"], "providers": ["prov-nova"],
         "wallet": {"mode": "http", "url": f"http://127.0.0.1:{wallet_port}/{HUB88}",
                    "protocol": "hub88-v1", "signing_key": {"value": _pem_key()}, **common}},
    ]  # fmt: skip
    return {"operators": operators, "providers": dev["providers"], "games": dev["games"]}


def _http(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _until(check: Any, timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not in {timeout_s}s\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


@dataclass
class Stack:
    """The reference HTTP wallet and the bridge as processes, restartable."""

    settings: Settings
    env: dict[str, str]
    wallet_port: int
    metrics_port: int
    logs: Path
    secrets: tuple[str, ...] = ()
    wallet: subprocess.Popen[bytes] | None = None
    bridge: subprocess.Popen[bytes] | None = None

    @property
    def wallet_log(self) -> Path:
        return self.logs / "httpwallet.log"

    @property
    def bridge_log(self) -> Path:
        return self.logs / "bridge.log"

    def start_wallet(self) -> None:
        self.wallet = subprocess.Popen(
            [sys.executable, "-m", "agg_httpwallet", "--port", str(self.wallet_port)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=self.wallet_log.open("ab"),
        )  # fmt: skip
        url = f"http://127.0.0.1:{self.wallet_port}/healthz"

        def ready() -> bool:
            assert self.wallet is not None and self.wallet.poll() is None, "wallet exited"
            with contextlib.suppress(OSError):
                return _http(url)[0] == 200
            return False

        _until(ready, 60, "http wallet ready", self.wallet_log)

    def stop_wallet(self) -> int:
        assert self.wallet is not None
        self.wallet.send_signal(signal.SIGTERM)
        return self.wallet.wait(timeout=30)

    def _assigned_count(self) -> int:
        count = 0
        for line in self.bridge_log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event.get("event") == "partitions_assigned" and event.get("partitions"):
                    count += 1
        return count

    def start_bridge(self) -> None:
        before = self._assigned_count() if self.bridge_log.exists() else 0
        self.bridge = subprocess.Popen(
            [sys.executable, "-m", "agg_bridge", "--metrics-port", str(self.metrics_port),
             "--instance-id", "bridge-test", "--client-id", "bridge-test"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=self.bridge_log.open("ab"),
        )  # fmt: skip

        def ready() -> bool:
            assert self.bridge is not None and self.bridge.poll() is None, "bridge exited"
            return self._assigned_count() >= before + len(OPERATORS)

        _until(ready, 90, "bridge assigned", self.bridge_log)

    def stop_bridge(self) -> int:
        assert self.bridge is not None
        self.bridge.send_signal(signal.SIGTERM)
        return self.bridge.wait(timeout=30)

    def metric(self, name: str, operator: str) -> float:
        status, text = _http(f"http://127.0.0.1:{self.metrics_port}/metrics")
        assert status == 200
        prefix = f'{name}{{operator="{operator}"}}'
        values = [line.split()[-1] for line in text.splitlines() if line.startswith(prefix)]
        return float(values[0]) if values else 0.0


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("bridge")
    wallet_port, metrics_port = _free_port(), _free_port()
    tenants_file = logs / "tenants.yaml"
    tenants = _tenants(wallet_port)
    tenants_file.write_text(yaml.safe_dump(tenants))
    secrets = tuple(
        str(o["wallet"][name]["value"])
        for o in tenants["operators"]
        for name in ("secret", "signing_key")
        if name in o["wallet"]
    )
    specs = catalogue(OPERATORS, partitions=settings.partition_count,
                      replication_factor=settings.replication_factor,
                      min_insync_replicas=settings.min_insync_replicas)  # fmt: skip
    report = asyncio.run(ensure_topics(settings.kafka_bootstrap, specs))
    assert report.ok, report.lines()
    env = {
        **os.environ,
        "AGG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "AGG_DATABASE_URL": settings.database_url,
        "AGG_TENANTS_FILE": str(tenants_file),
        "AGG_WALLET_BATCH_COUNT_MAX": "50",
    }
    s = Stack(settings, env, wallet_port, metrics_port, logs, secrets)
    s.start_wallet()
    s.start_bridge()
    try:
        yield s
    finally:
        bridge_rc = s.stop_bridge() if s.bridge and s.bridge.poll() is None else 0
        wallet_rc = s.stop_wallet() if s.wallet and s.wallet.poll() is None else 0
        assert (bridge_rc, wallet_rc) == (0, 0), s.bridge_log.read_text()[-3000:]


def run(scenario: Any, timeout_s: float = 120) -> None:
    asyncio.run(asyncio.wait_for(scenario, timeout_s))


def statuses(replies: list[dict[str, Any]]) -> list[tuple[str, int | None]]:
    return [status_balance(r) for r in replies]


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("op", list(OPERATORS))
def test_debit_credit_cancel_balance_round_trip(stack: Stack, settings: Settings, op: str) -> None:
    p = player("trip")
    debit = command(op, p, "DEBIT", 1_250)
    cancelled = command(op, p, "DEBIT", 300)

    async def scenario() -> None:
        async with client(settings, op) as c:
            answers = await c.ask(
                debit,
                command(op, p, "CREDIT", 500),
                cancelled,
                command(op, p, "CANCEL", 300, reference=cancelled["command_id"]),
                command(op, p, "BALANCE"),
                command(op, p, "BALANCE", currency="JPY"),
            )
            assert statuses(answers) == [
                ("OK", STARTING_BALANCE - 1_250),
                ("OK", STARTING_BALANCE - 750),
                ("OK", STARTING_BALANCE - 1_050),
                ("OK", STARTING_BALANCE - 750),  # refunded
                ("OK", STARTING_BALANCE - 750),
                ("OK", STARTING_BALANCE),  # a balance per currency
            ]
            assert [a["currency"] for a in answers] == ["EUR"] * 5 + ["JPY"]
            assert all(a["operator_id"] == op and a["player_id"] == p for a in answers)
            assert answers[0]["correlation_id"] == debit["correlation_id"]

    run(scenario())
    assert db_balance(settings, op, p) == STARTING_BALANCE - 750
    assert [(r[1], r[2]) for r in ledger(settings, op, p)] == [
        ("DEBIT", "debited"), ("CREDIT", "credited"), ("DEBIT", "debited"),
        ("CANCEL", "refunded"), ("BALANCE", "balance"), ("BALANCE", "balance"),
    ]  # fmt: skip


@pytest.mark.parametrize("op", list(OPERATORS))
def test_duplicates_are_answered_from_the_wallets_dedupe(
    stack: Stack, settings: Settings, op: str
) -> None:
    p = player("dup")
    debit = command(op, p, "DEBIT", 100)
    cid = debit["command_id"]

    async def scenario() -> None:
        async with client(settings, op) as c:
            await c.ask(debit)
            await c.send(*[debit] * 6)  # a batch of copies, and the same player in order
            await c.reply(cid, count=7)
            assert statuses(c.replies[cid]) == [("OK", STARTING_BALANCE - 100)] * 7
            (after,) = await c.ask(command(op, p, "BALANCE"))
            assert status_balance(after) == ("OK", STARTING_BALANCE - 100)

    run(scenario())
    assert db_balance(settings, op, p) == STARTING_BALANCE - 100
    assert [r[0] for r in ledger(settings, op, p) if r[1] == "DEBIT"] == [cid]


@pytest.mark.parametrize("op", list(OPERATORS))
def test_insufficient_funds_and_a_cancel_before_its_debit(
    stack: Stack, settings: Settings, op: str
) -> None:
    p = player("poor")
    late = command(op, p, "DEBIT", 10)

    async def scenario() -> None:
        async with client(settings, op) as c:
            answers = await c.ask(
                command(op, p, "DEBIT", STARTING_BALANCE + 1),
                command(op, p, "CANCEL", 10, reference=late["command_id"]),
                late,
                command(op, p, "DEBIT", STARTING_BALANCE),
            )
            assert statuses(answers) == [
                ("INSUFFICIENT_FUNDS", STARTING_BALANCE),
                ("OK", STARTING_BALANCE),  # the tombstone
                ("ERROR", STARTING_BALANCE),  # refused: its cancel came first
                ("OK", 0),
            ]

    run(scenario())
    assert db_balance(settings, op, p) == 0
    assert [r[2] for r in ledger(settings, op, p)] == [
        "insufficient", "tombstone", "refused", "debited"
    ]  # fmt: skip


@pytest.mark.parametrize("op", list(OPERATORS))
def test_malformed_commands_are_answered_error_without_a_call(
    stack: Stack, settings: Settings, op: str
) -> None:
    p = player("bad")
    other = command(op, p, "DEBIT", 10)
    other["operator_id"] = "op-alpha"  # on this operator's topic

    async def scenario() -> None:
        async with client(settings, op) as c:
            answers = await c.ask(
                command(op, p, "DEBIT", -5), command(op, p, "DEBIT", 0),
                command(op, p, "CANCEL", 10), command(op, p, "UNKNOWN", 10), other,
                command(op, p, "BALANCE"),
            )  # fmt: skip
            assert statuses(answers) == [("ERROR", None)] * 5 + [("OK", STARTING_BALANCE)]

    run(scenario())
    assert [r[1] for r in ledger(settings, op, p)] == ["BALANCE"]


def test_the_wallets_http_answers_refuse_unsigned_calls(stack: Stack) -> None:
    base = f"http://127.0.0.1:{stack.wallet_port}"
    body = json.dumps({"command_id": "x", "operator": CANONICAL, "player": "p",
                       "currency": "EUR", "amount": 1}).encode()  # fmt: skip
    for path, expected in ((f"/wallets/{CANONICAL}/v1/debit", (401, "INVALID_SIGNATURE")),
                           (f"/{HUB88}/transaction/bet", (200, "RS_ERROR_INVALID_SIGNATURE")),
                           ("/nobody/v1/debit", (404, "UNKNOWN_OPERATOR"))):  # fmt: skip
        request = urllib.request.Request(base + path, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                got = resp.status, json.loads(resp.read())["status"]
        except urllib.error.HTTPError as exc:
            got = exc.code, json.loads(exc.read())["status"]
        assert got == expected, path


# --- faults -----------------------------------------------------------------------------------


def test_wallet_down_answers_error_opens_the_breaker_then_closes_it(
    stack: Stack, settings: Settings
) -> None:
    """With the wallet stopped every command is replied ERROR (nothing is applied); after
    ``breaker_failure_count`` failures the breaker opens and commands are answered without a
    call; once the wallet is back, the half-open probe succeeds and the breaker closes."""
    op = CANONICAL
    p = player("down")
    opened_before = stack.metric("agg_bridge_breaker_opened_total", op)
    assert stack.stop_wallet() == 0
    down = [command(op, p, "DEBIT", 100) for _ in range(8)]

    async def scenario() -> None:
        async with client(settings, op) as c:
            answers = await c.ask(*down, timeout_s=30)
            assert statuses(answers) == [("ERROR", None)] * len(down)
            assert stack.metric("agg_bridge_breaker_state", op) == 2  # open
            assert stack.metric("agg_bridge_breaker_opened_total", op) > opened_before
            assert stack.metric("agg_bridge_short_circuits_total", op) > 0
            stack.start_wallet()
            # commands until one gets through: answered ERROR while the breaker is still open,
            # then the probe after breaker_open_ms reaches the wallet again
            for _ in range(200):
                (reply,) = await c.ask(command(op, p, "BALANCE"), timeout_s=30)
                if reply["status"] == "OK":
                    break
                await asyncio.sleep(BREAKER_OPEN_MS / 4000)
            assert status_balance(reply) == ("OK", STARTING_BALANCE)
            assert stack.metric("agg_bridge_breaker_state", op) == 0  # closed
            # a debit once more, resent (same id) while a busy machine makes it time out
            debit = command(op, p, "DEBIT", 100)
            for _ in range(20):
                (reply,) = await c.ask(debit, timeout_s=30)
                if reply["status"] == "OK":
                    break
            assert status_balance(reply) == ("OK", STARTING_BALANCE - 100)

    run(scenario())
    # none of the commands answered ERROR while the wallet was down reached its ledger
    kinds = [r[1] for r in ledger(settings, op, p)]
    assert kinds.count("DEBIT") == 1 and db_balance(settings, op, p) == STARTING_BALANCE - 100
    assert '"event":"breaker_changed"' in stack.bridge_log.read_text()


def test_a_bridge_killed_mid_batch_loses_nothing_and_applies_nothing_twice(
    stack: Stack, settings: Settings
) -> None:
    """SIGKILL while commands are being called, restart: every command is answered, the
    repeats (the redelivered batch) get the same status and balance, and each command is in
    the wallet's ledger once, the balances those of a model of the wallet's rules."""
    rng = random.Random(11)
    stream: list[dict[str, Any]] = []
    by_op: dict[str, list[str]] = {op: [player(f"kill-{op}-{i}") for i in range(6)]
                                   for op in OPERATORS}  # fmt: skip
    debits: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for _ in range(400):
        op = rng.choice(list(OPERATORS))
        p = rng.choice(by_op[op])
        roll = rng.random()
        if roll < 0.08 and stream:
            stream.append(rng.choice(stream))
        elif roll < 0.14 and debits[p]:
            debit = rng.choice(debits[p])
            stream.append(command(op, p, "CANCEL", debit["amount"],
                                  reference=debit["command_id"]))  # fmt: skip
        elif roll < 0.45:
            stream.append(command(op, p, "CREDIT", rng.randint(0, 20_000)))
        else:
            stream.append(command(op, p, "DEBIT", rng.randint(1, 30_000)))
            debits[p].append(stream[-1])
    expected = _model(stream)

    async def scenario() -> None:
        async with client(settings, CANONICAL) as can, client(settings, HUB88) as hub:
            clients = {CANONICAL: can, HUB88: hub}
            for i in range(0, len(stream), 40):
                for op, c in clients.items():
                    part = [x for x in stream[i : i + 40] if x["operator_id"] == op]
                    if part:
                        await c.send(*part)
            await can.until(lambda: len(can.replies) + len(hub.replies) >= 20, timeout_s=30)
            assert stack.bridge is not None
            stack.bridge.send_signal(signal.SIGKILL)
            stack.bridge.wait(timeout=10)
            stack.start_bridge()
            for op, c in clients.items():
                wanted = {x["command_id"] for x in stream if x["operator_id"] == op}
                await c.until(lambda c=c, w=wanted: w <= set(c.replies), timeout_s=60)
                for cid, replies in c.replies.items():
                    # a call that failed (a timeout on a busy machine) is replied ERROR, which
                    # the saga treats as transient; every answer the wallet gave is the same
                    answered = {status_balance(r) for r in replies if r["status"] != "ERROR"}
                    assert len(answered) <= 1, (op, cid, replies)

    run(scenario(), timeout_s=240)
    distinct = {x["command_id"] for x in stream}
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "select command_id, count(*) from wallet.commands "
            "where operator_id = any(%s) and command_id = any(%s) group by command_id",
            (list(OPERATORS), sorted(distinct)),
        ).fetchall()
    assert len(rows) == len(distinct) and all(n == 1 for _, n in rows)
    for op, players in by_op.items():
        for p in players:
            if p in expected:
                assert db_balance(settings, op, p) == expected[p], (op, p)


def test_no_secret_reaches_the_logs(stack: Stack) -> None:
    """After every call above: neither the wallet secret, nor a line of the signing key, nor
    a signature header is in the bridge's or the wallet's log lines."""
    text = stack.bridge_log.read_text() + stack.wallet_log.read_text()
    assert '"event":"wallet_call"' in text and '"event":"call_answered"' in text
    for secret in stack.secrets:
        for line in secret.splitlines():
            if "-----" not in line:
                assert line not in text
    assert "X-Agg-Signature" not in text and "X-Hub88-Signature" not in text
