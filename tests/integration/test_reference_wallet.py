"""The reference operator wallet against the real broker and Postgres.

One wallet process serves ``op-alpha`` for the module (``python -m agg_wallet``, switched
through its control endpoint); the crash test runs its own processes for ``op-beta``. Every
test uses players of its own, so tests never see each other's balances."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from agg_avro import AvroCodec
from agg_config.settings import Settings
from agg_kafka.clients import make_consumer, make_producer, player_key
from agg_wallet.rules import Command
from agg_wallet.store import Item, WalletStore

CODEC = AvroCodec()
STARTING_BALANCE = 100_000  # both operators of deploy/local/aggregator.yaml

pytestmark = pytest.mark.usefixtures("catalogue_topics")


# --- the wallet as a process ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class WalletProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def http(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        ctype_json = raw.startswith(b"{")
        return status, json.loads(raw) if ctype_json else raw.decode()

    def set_mode(self, mode: str, delay_ms: int | None = None) -> None:
        body: dict[str, Any] = {"mode": mode}
        if delay_ms is not None:
            body["delay_ms"] = delay_ms
        status, answer = self.http("PUT", "/mode", body)
        assert status == 200 and answer["mode"] == mode, answer

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            with contextlib.suppress(OSError):
                if self.http("GET", "/healthz")[0] == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"wallet not ready in {timeout_s}s:\n{self.log_path.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def start_wallet(
    settings: Settings,
    operator: str,
    log_path: Path,
    *extra: str,
    env: dict[str, str] | None = None,
) -> WalletProcess:
    port = _free_port()
    environment = {
        **os.environ,
        "AGG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "AGG_DATABASE_URL": settings.database_url,
        **(env or {}),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "agg_wallet", "--operator", operator,
         "--metrics-port", str(port), *extra],
        env=environment, stdout=subprocess.DEVNULL, stderr=log_path.open("ab"),
    )  # fmt: skip
    wallet = WalletProcess(proc, port, log_path)
    wallet.wait_ready()
    return wallet


@pytest.fixture(scope="module", params=["librdkafka", "aiokafka"])
def kafka_client(request: pytest.FixtureRequest) -> str:
    """Every test runs the wallet on both clients of the transport."""
    return str(request.param)


@pytest.fixture(scope="module")
def wallet(
    settings: Settings,
    catalogue_topics: list[str],
    tmp_path_factory: pytest.TempPathFactory,
    kafka_client: str,
) -> Iterator[WalletProcess]:
    log_path = tmp_path_factory.mktemp("wallet") / "wallet-alpha.log"
    process = start_wallet(
        settings, "op-alpha", log_path, "--client-id", f"wallet-test-alpha-{kafka_client}",
        env={"AGG_KAFKA_CLIENT": kafka_client},
    )  # fmt: skip
    try:
        yield process
    finally:
        assert process.stop() == 0, log_path.read_text()[-3000:]


@pytest.fixture
def normal_afterwards(wallet: WalletProcess) -> Iterator[WalletProcess]:
    try:
        yield wallet
    finally:
        wallet.set_mode("normal", 0)


# --- a client: sends commands, collects replies ---------------------------------------------


def player(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def command(
    operator: str,
    player_id: str,
    kind: str,
    amount: int = 0,
    *,
    command_id: str | None = None,
    reference: str | None = None,
    currency: str = "EUR",
) -> dict[str, Any]:
    cid = command_id or f"cmd-{uuid.uuid4().hex}"
    return {
        "command_id": cid,
        "correlation_id": f"corr-{cid}",
        "operator_id": operator,
        "player_id": player_id,
        "kind": kind,
        "amount": amount,
        "currency": currency,
        "provider_id": "prov-nova",
        "transaction_id": f"txn-{cid}",
        "round_id": "round-1",
        "game_id": "nova-starfall",
        "reference_command_id": reference,
        "issued_at": datetime.now(UTC),
    }


@dataclass
class Client:
    settings: Settings
    operator: str
    replies: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    by_player: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    dead_letters: list[Any] = field(default_factory=list)
    producer: Any = None

    async def send(self, *commands: dict[str, Any]) -> None:
        futures = [
            await self.producer.send(
                f"agg.wallet.commands.{self.operator}",
                CODEC.encode("casino.agg.WalletCommand", c),
                key=player_key(c["operator_id"], c["player_id"]),
            )
            for c in commands
        ]
        await asyncio.gather(*futures)

    async def send_raw(self, key: bytes, value: bytes) -> None:
        await self.producer.send_and_wait(f"agg.wallet.commands.{self.operator}", value, key=key)

    async def reply(self, command_id: str, count: int = 1, timeout_s: float = 20) -> dict[str, Any]:
        await self.until(lambda: len(self.replies.get(command_id, ())) >= count, timeout_s)
        return self.replies[command_id][0]

    async def ask(self, *commands: dict[str, Any], timeout_s: float = 20) -> list[dict[str, Any]]:
        """Send commands and return their replies (the first one of each)."""
        await self.send(*commands)
        return [await self.reply(c["command_id"], timeout_s=timeout_s) for c in commands]

    @staticmethod
    async def until(check: Any, timeout_s: float = 20) -> None:
        async def wait() -> None:
            while not check():
                await asyncio.sleep(0.02)

        await asyncio.wait_for(wait(), timeout_s)

    async def _read(self, reader: AIOKafkaConsumer, dead: bool) -> None:
        while True:
            batch = await reader.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    if dead:
                        self.dead_letters.append(record)
                        continue
                    datum = CODEC.decode(record.value).datum
                    self.replies[datum["command_id"]].append(datum)
                    self.by_player[datum["player_id"]].append(datum)


@contextlib.asynccontextmanager
async def client(settings: Settings, operator: str) -> AsyncIterator[Client]:
    c = Client(settings, operator)
    c.producer = make_producer(settings, client_id="wallet-test-client")
    await c.producer.start()
    readers: list[AIOKafkaConsumer] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for topic, dead in ((f"agg.wallet.replies.{operator}", False), ("agg.deadletters", True)):
            reader = make_consumer(settings, group_id=None, client_id="wallet-test-reader")
            await reader.start()
            readers.append(reader)
            tps = [TopicPartition(topic, p) for p in range(settings.partition_count)]
            reader.assign(tps)
            await reader.seek_to_end(*tps)
            for tp in tps:  # resolve the end positions now, before anything is sent
                await reader.position(tp)
            tasks.append(asyncio.create_task(c._read(reader, dead)))
        yield c
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for reader in readers:
            await reader.stop()
        await c.producer.stop()


def db_balance(
    settings: Settings, operator: str, player_id: str, currency: str = "EUR"
) -> int | None:
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "select balance from wallet.players "
            "where operator_id = %s and player_id = %s and currency = %s",
            (operator, player_id, currency),
        ).fetchone()
    return None if row is None else int(row[0])


def ledger(settings: Settings, operator: str, player_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(
            "select command_id, kind, effect, status, delta from wallet.commands "
            "where operator_id = %s and player_id = %s order by applied_at, kafka_offset",
            (operator, player_id),
        ).fetchall()


def run(scenario: Any) -> None:
    asyncio.run(asyncio.wait_for(scenario, 60))


def status_balance(reply: dict[str, Any]) -> tuple[str, int | None]:
    return reply["status"], reply["balance"]


# --- the semantics ------------------------------------------------------------------------------


def test_unknown_player_is_created_with_the_starting_balance(
    wallet: WalletProcess, settings: Settings
) -> None:
    p = player("new")

    async def scenario() -> None:
        async with client(settings, "op-alpha") as c:
            (reply,) = await c.ask(command("op-alpha", p, "BALANCE"))
            assert status_balance(reply) == ("OK", STARTING_BALANCE)
            assert reply["currency"] == "EUR" and reply["correlation_id"].startswith("corr-")

    run(scenario())
    assert db_balance(settings, "op-alpha", p) == STARTING_BALANCE


def test_debit_then_balance(wallet: WalletProcess, settings: Settings) -> None:
    p = player("debit")

    async def scenario() -> None:
        async with client(settings, "op-alpha") as c:
            debit, balance = await c.ask(
                command("op-alpha", p, "DEBIT", 1_250), command("op-alpha", p, "BALANCE")
            )
            assert status_balance(debit) == ("OK", STARTING_BALANCE - 1_250)
            assert status_balance(balance) == ("OK", STARTING_BALANCE - 1_250)

    run(scenario())
    assert db_balance(settings, "op-alpha", p) == STARTING_BALANCE - 1_250


def test_insufficient_funds_leaves_the_balance(wallet: WalletProcess, settings: Settings) -> None:
    p = player("poor")

    async def scenario() -> None:
        async with client(settings, "op-alpha") as c:
            too_much, exact = await c.ask(
                command("op-alpha", p, "DEBIT", STARTING_BALANCE + 1),
                command("op-alpha", p, "DEBIT", STARTING_BALANCE),
            )
            assert status_balance(too_much) == ("INSUFFICIENT_FUNDS", STARTING_BALANCE)
            assert status_balance(exact) == ("OK", 0)

    run(scenario())
    assert db_balance(settings, "op-alpha", p) == 0


def test_credit(wallet: WalletProcess, settings: Settings) -> None:
    p = player("credit")

    async def scenario() -> None:
        async with client(settings, "op-alpha") as c:
            (reply,) = await c.ask(command("op-alpha", p, "CREDIT", 777))
            assert status_balance(reply) == ("OK", STARTING_BALANCE + 777)

    run(scenario())
    assert db_balance(settings, "op-alpha", p) == STARTING_BALANCE + 777


def test_a_repeated_command_id_is_applied_once_and_answered_identically(
    wallet: WalletProcess, settings: Settings
) -> None:
    p = player("dup")
    debit = command("op-alpha", p, "DEBIT", 100)
    cid = debit["command_id"]

    async def scenario() -> None:
        async with client(settings, "op-alpha") as c:
            await c.ask(debit)
            await c.send(debit)  # once more, after the first was answered
            await c.reply(cid, count=2)
            await c.send(*[debit] * 20)  # 20 copies at once: one batch
            await c.reply(cid, count=22)
            for _ in range(5):  # and one by one: across batches
                await c.send(debit)
            await c.reply(cid, count=27)
            replies = c.replies[cid]
            assert len(replies) == 27
            assert all(r == replies[0] for r in replies)
            assert status_balance(replies[0]) == ("OK", STARTING_BALANCE - 100)
            (balance,) = await c.ask(command("op-alpha", p, "BALANCE"))
            assert balance["balance"] == STARTING_BALANCE - 100

    run(scenario())
    assert db_balance(settings, "op-alpha", p) == STARTING_BALANCE - 100
    assert [(r[1], r[2]) for r in ledger(settings, "op-alpha", p)] == [
        ("DEBIT", "debited"),
        ("BALANCE", "balance"),
    ]


def test_cancel_of_an_applied_debit_refunds_it_once(
    wallet: WalletProcess, settings: Settings
) -> None:
    p = player("cancel")
    debit = command("op-alpha", p, "DEBIT", 5_000)
    refused = command("op-alpha", p, "DEBIT", 10 * STARTING_BALANCE)

    async def scenario() -> None:
        async with client(settings, "op-alpha") as c:
            answers = await c.ask(
                debit,
                command("op-alpha", p, "CANCEL", 5_000, reference=debit["command_id"]),
                command("op-alpha", p, "CANCEL", 5_000, reference=debit["command_id"]),
                refused,
                command("op-alpha", p, "CANCEL", 0, reference=refused["command_id"]),
            )
            assert [status_balance(a) for a in answers] == [
                ("OK", STARTING_BALANCE - 5_000),
                ("OK", STARTING_BALANCE),  # refunded
                ("OK", STARTING_BALANCE),  # a second cancel: no second refund
                ("INSUFFICIENT_FUNDS", STARTING_BALANCE),
                ("OK", STARTING_BALANCE),  # cancel of a refused debit: no-op
            ]

    run(scenario())
    assert db_balance(settings, "op-alpha", p) == STARTING_BALANCE
    effects = [r[2] for r in ledger(settings, "op-alpha", p)]
    assert effects == ["debited", "refunded", "noop", "insufficient", "noop"]


def test_cancel_of_an_unknown_debit_refuses_that_debit_later(
    wallet: WalletProcess, settings: Settings
) -> None:
    p = player("tomb")
    late = command("op-alpha", p, "DEBIT", 3_000)

    async def scenario() -> None:
        async with client(settings, "op-alpha") as c:
            cancel, debit, again = await c.ask(
                command("op-alpha", p, "CANCEL", 3_000, reference=late["command_id"]),
                late,
                command("op-alpha", p, "CANCEL", 3_000, reference=late["command_id"]),
            )
            assert status_balance(cancel) == ("OK", STARTING_BALANCE)
            assert debit["status"] == "ERROR"
            assert status_balance(again) == ("OK", STARTING_BALANCE)

    run(scenario())
    assert db_balance(settings, "op-alpha", p) == STARTING_BALANCE
    assert [r[2] for r in ledger(settings, "op-alpha", p)] == ["tombstone", "refused", "noop"]


def test_malformed_commands_are_answered_error_and_change_nothing(
    wallet: WalletProcess, settings: Settings
) -> None:
    p = player("bad")

    async def scenario() -> None:
        async with client(settings, "op-alpha") as c:
            other = command("op-alpha", p, "DEBIT", 10)
            other["operator_id"] = "op-beta"  # on op-alpha's topic
            bad = [
                command("op-alpha", p, "DEBIT", -5),
                command("op-alpha", p, "CREDIT", -1),
                command("op-alpha", p, "DEBIT", 0),
                command("op-alpha", p, "DEBIT", 10, currency="eur"),
                command("op-alpha", p, "DEBIT", 10, currency="EURO"),
                command("op-alpha", p, "CANCEL", 10),  # no reference
                command("op-alpha", p, "UNKNOWN", 10),
                other,
            ]
            answers = await c.ask(*bad, command("op-alpha", p, "BALANCE"))
            assert [a["status"] for a in answers[:-1]] == ["ERROR"] * len(bad)
            assert status_balance(answers[-1]) == ("OK", STARTING_BALANCE)
            (max_credit,) = await c.ask(command("op-alpha", p, "CREDIT", 2**63 - 1))
            assert max_credit["status"] == "ERROR"  # the balance would overflow

    run(scenario())
    assert db_balance(settings, "op-alpha", p) == STARTING_BALANCE


def test_an_undecodable_message_is_dead_lettered_and_the_wallet_goes_on(
    wallet: WalletProcess, settings: Settings
) -> None:
    p = player("poison")
    garbage = b"\xc3\x01not-a-fingerprint-nor-a-body"

    async def scenario() -> None:
        async with client(settings, "op-alpha") as c:
            key = player_key("op-alpha", p)
            await c.send_raw(key, garbage)
            await c.send_raw(key, b"plain text")
            (after,) = await c.ask(command("op-alpha", p, "DEBIT", 10))
            assert status_balance(after) == ("OK", STARTING_BALANCE - 10)
            await c.until(lambda: len([d for d in c.dead_letters if d.key == key]) == 2)
            dead = [d for d in c.dead_letters if d.key == key]
            assert [d.value for d in dead] == [garbage, b"plain text"]
            for d in dead:
                headers = dict(d.headers)
                assert headers["reason"]
                assert headers["source"].startswith(b"agg.wallet.commands.op-alpha/")

    run(scenario())


def conflicts_metric(wallet: WalletProcess) -> float:
    status, text = wallet.http("GET", "/metrics")
    assert status == 200
    name = 'agg_wallet_command_id_conflicts_total{operator="op-alpha"}'
    values = [line.split()[-1] for line in text.splitlines() if line.startswith(name)]
    return float(values[0]) if values else 0.0


def test_a_command_id_held_for_another_player_is_refused_and_set_aside(
    wallet: WalletProcess, settings: Settings
) -> None:
    """An id that left its owner out reaches the wallet for a second player: that player is
    answered ERROR without a balance, never with the first player's reply; the command goes
    to the dead-letter topic and the counter counts it; the first player's ledger and
    balance are untouched, and its own repeats still get its reply."""
    alice, bob = player("alice"), player("bob")
    debit = command("op-alpha", alice, "DEBIT", 1_500)
    cid = debit["command_id"]
    before = conflicts_metric(wallet)

    async def scenario() -> None:
        async with client(settings, "op-alpha") as c:
            (first,) = await c.ask(debit)
            assert status_balance(first) == ("OK", STARTING_BALANCE - 1_500)
            kinds = [("DEBIT", 1_500), ("CREDIT", 1_500), ("BALANCE", 0)]
            for n, (kind, amount) in enumerate(kinds, start=2):
                await c.send({**command("op-alpha", bob, kind, amount), "command_id": cid})
                await c.reply(cid, count=n)
            theirs = [r for r in c.replies[cid] if r["player_id"] == bob]
            assert [(r["status"], r["balance"]) for r in theirs] == [("ERROR", None)] * 3
            # another operator's command under that id, on this operator's topic
            beta = {**command("op-alpha", alice, "BALANCE"), "command_id": cid}
            beta["operator_id"] = "op-beta"
            await c.send_raw(player_key("op-beta", alice),
                             CODEC.encode("casino.agg.WalletCommand", beta))  # fmt: skip
            await c.reply(cid, count=5)
            assert status_balance(c.replies[cid][4]) == ("ERROR", None)
            # the owner's repeat: its own reply, byte for byte
            await c.send(debit)
            await c.reply(cid, count=6)
            assert c.replies[cid][5] == first
            await c.until(lambda: len([d for d in c.dead_letters if d.key in (
                player_key("op-alpha", bob), player_key("op-beta", alice))]) == 4)  # fmt: skip
            dead = [d for d in c.dead_letters if d.key == player_key("op-alpha", bob)]
            assert [CODEC.decode(d.value).datum["kind"] for d in dead] == [k for k, _ in kinds]
            for d in dead:
                headers = dict(d.headers)
                assert headers["reason"] == b"command_id already recorded for another player"
                assert headers["source"].startswith(b"agg.wallet.commands.op-alpha/")

    run(scenario())
    assert db_balance(settings, "op-alpha", alice) == STARTING_BALANCE - 1_500
    assert [(r[0], r[1], r[2]) for r in ledger(settings, "op-alpha", alice)] == [
        (cid, "DEBIT", "debited")
    ]
    assert ledger(settings, "op-alpha", bob) == []
    assert db_balance(settings, "op-alpha", bob) is None
    assert conflicts_metric(wallet) == before + 4


def test_silent_mode_answers_only_after_switching_back_in_order(
    normal_afterwards: WalletProcess, settings: Settings
) -> None:
    wallet = normal_afterwards
    p = player("silent")
    debits = [command("op-alpha", p, "DEBIT", 100) for _ in range(8)]

    async def scenario() -> None:
        async with client(settings, "op-alpha") as c:
            wallet.set_mode("silent")
            await c.send(*debits[:4])
            await asyncio.sleep(0.3)
            await c.send(*debits[4:])
            await asyncio.sleep(1.0)
            assert c.by_player[p] == []
            assert db_balance(settings, "op-alpha", p) is None  # nothing applied
            wallet.set_mode("normal")
            await c.until(lambda: len(c.by_player[p]) == len(debits))
            got = c.by_player[p]
            assert [r["command_id"] for r in got] == [d["command_id"] for d in debits]
            assert [r["balance"] for r in got] == [
                STARTING_BALANCE - 100 * (i + 1) for i in range(len(debits))
            ]

    run(scenario())


def test_failing_mode_answers_error_without_applying_then_a_resend_applies(
    normal_afterwards: WalletProcess, settings: Settings
) -> None:
    wallet = normal_afterwards
    p = player("failing")
    debit = command("op-alpha", p, "DEBIT", 400)

    async def scenario() -> None:
        async with client(settings, "op-alpha") as c:
            wallet.set_mode("failing")
            (failed,) = await c.ask(debit)
            assert status_balance(failed) == ("ERROR", None)
            assert db_balance(settings, "op-alpha", p) is None
            assert ledger(settings, "op-alpha", p) == []
            wallet.set_mode("normal")
            await c.send(debit)
            await c.reply(debit["command_id"], count=2)
            assert status_balance(c.replies[debit["command_id"]][1]) == (
                "OK",
                STARTING_BALANCE - 400,
            )

    run(scenario())
    assert db_balance(settings, "op-alpha", p) == STARTING_BALANCE - 400


def test_slow_mode_delays_replies_and_the_control_endpoint(
    normal_afterwards: WalletProcess, settings: Settings
) -> None:
    wallet = normal_afterwards
    p = player("slow")
    assert wallet.http("PUT", "/mode", {"mode": "sleepy"})[0] == 400
    assert wallet.http("PUT", "/mode", {"mode": "slow", "delay_ms": -1})[0] == 400
    assert wallet.http("GET", "/nowhere")[0] == 404
    wallet.set_mode("slow", 400)
    assert wallet.http("GET", "/mode") == (200, {"mode": "slow", "delay_ms": 400})

    async def scenario() -> None:
        async with client(settings, "op-alpha") as c:
            started = time.monotonic()
            (reply,) = await c.ask(command("op-alpha", p, "CREDIT", 1))
            assert reply["status"] == "OK"
            assert time.monotonic() - started >= 0.4

    run(scenario())
    status, metrics = wallet.http("GET", "/metrics")
    assert status == 200
    assert 'agg_wallet_mode{mode="slow"} 1.0' in metrics
    assert 'agg_wallet_commands_total{kind="CREDIT",operator="op-alpha",status="OK"}' in metrics
    assert "agg_wallet_duplicates_total" in metrics and "agg_wallet_apply_seconds" in metrics


# --- concurrency and crashes --------------------------------------------------------------------


def test_two_wallets_racing_on_one_batch_apply_it_once(settings: Settings) -> None:
    """Two stores (two processes of one operator during a rebalance) apply the same batch at
    the same time: one applies it, the other finds every command in the ledger."""
    p = player("race")
    datums = [command("op-alpha", p, "DEBIT", 1_000) for _ in range(30)]
    items = [Item(Command.from_avro(d), None, partition=0, offset=i) for i, d in enumerate(datums)]

    async def scenario() -> None:
        stores = [await WalletStore.connect(settings.database_url) for _ in range(2)]
        try:
            await stores[0].ensure_schema()
            now = datetime.now(UTC).replace(microsecond=0)
            results = await asyncio.gather(
                *(s.apply_batch("op-alpha", STARTING_BALANCE, items, now) for s in stores)
            )
        finally:
            for s in stores:
                await s.close()
        first, second = (r.decisions for r in results)
        assert [d.entry for d in first] == [d.entry for d in second]
        assert sorted([all(d.duplicate for d in first), all(d.duplicate for d in second)]) == [
            False,
            True,
        ]

    run(scenario())
    assert db_balance(settings, "op-alpha", p) == STARTING_BALANCE - 30 * 1_000


def test_sigkill_mid_stream_then_restart_applies_every_command_exactly_once(
    settings: Settings, tmp_path: Path, kafka_client: str
) -> None:
    rng = random.Random(7)
    players = [player(f"kill{i}") for i in range(24)]
    stream: list[dict[str, Any]] = []
    debits: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for _ in range(1_800):
        p = rng.choice(players)
        roll = rng.random()
        if roll < 0.08 and stream:
            stream.append(rng.choice(stream))  # a resend of an earlier command
        elif roll < 0.14 and debits[p]:
            ref = rng.choice(debits[p])["command_id"]
            stream.append(command("op-beta", p, "CANCEL", 0, reference=ref))
        elif roll < 0.45:
            stream.append(command("op-beta", p, "CREDIT", rng.randint(0, 20_000)))
        else:
            stream.append(command("op-beta", p, "DEBIT", rng.randint(1, 30_000)))
            debits[p].append(stream[-1])
    expected = _model(stream)
    distinct = {c["command_id"] for c in stream}
    sends: dict[str, int] = defaultdict(int)
    for c in stream:
        sends[c["command_id"]] += 1
    log_path = tmp_path / "wallet-beta.log"
    env = {"AGG_WALLET_BATCH_COUNT_MAX": "40", "AGG_KAFKA_CLIENT": kafka_client}
    name = f"wallet-kill-test-{kafka_client}"
    extra = ("--instance-id", name, "--client-id", name)

    async def scenario() -> None:
        async with client(settings, "op-beta") as c:
            # slow: each batch is committed to Postgres, then its replies wait 250 ms before
            # they are sent and the offsets committed; the kill lands in that window
            first = start_wallet(
                settings, "op-beta", log_path, *extra, "--mode", "slow", "--delay-ms", "250",
                env=env,
            )  # fmt: skip
            sending = asyncio.create_task(_send_paced(c, stream))
            try:
                await c.until(lambda: len(c.replies) >= 120, timeout_s=30)
                applied_before = log_path.read_text().count('"event":"batch_applied"')
                await c.until(
                    lambda: log_path.read_text().count('"event":"batch_applied"') > applied_before
                )
            finally:
                first.proc.send_signal(signal.SIGKILL)
                first.proc.wait(timeout=10)
            answered_at_kill = set(c.replies)
            in_flight = _ledger_ids(settings, distinct) - answered_at_kill
            assert in_flight, "the kill should land between a batch's commit and its replies"
            second = start_wallet(settings, "op-beta", log_path, *extra, env=env)
            try:
                await sending
                await c.until(lambda: distinct <= set(c.replies), timeout_s=40)
            finally:
                assert second.stop() == 0
            assert len(answered_at_kill) < len(distinct)
            for cid, replies in c.replies.items():
                assert len(replies) >= sends[cid], cid
                assert all(r == replies[0] for r in replies), cid

    run(scenario())
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "select command_id, count(*) from wallet.commands "
            "where operator_id = 'op-beta' and command_id = any(%s) group by command_id",
            (sorted(distinct),),
        ).fetchall()
        assert len(rows) == len(distinct) and all(n == 1 for _, n in rows)
        balances: dict[str, int] = dict(
            conn.execute(
                "select p.player_id, p.balance from wallet.players p "
                "where p.operator_id = 'op-beta' and p.player_id = any(%s)",
                (players,),
            ).fetchall()
        )
        folded: dict[str, int] = dict(
            conn.execute(
                "select p.player_id, p.opening_balance + coalesce(sum(c.delta), 0) "
                "from wallet.players p left join wallet.commands c on c.operator_id = "
                "p.operator_id and c.player_id = p.player_id and c.currency = p.currency "
                "where p.operator_id = 'op-beta' and p.player_id = any(%s) "
                "group by p.player_id, p.opening_balance",
                (players,),
            ).fetchall()
        )
    assert balances == expected
    assert folded == expected
    assert sum(balances.values()) == sum(expected.values())


def _ledger_ids(settings: Settings, ids: set[str]) -> set[str]:
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "select command_id from wallet.commands "
            "where operator_id = 'op-beta' and command_id = any(%s)",
            (sorted(ids),),
        ).fetchall()
    return {r[0] for r in rows}


async def _send_paced(c: Client, commands: list[dict[str, Any]]) -> None:
    for i in range(0, len(commands), 50):
        await c.send(*commands[i : i + 50])
        await asyncio.sleep(0.05)


def _model(stream: list[dict[str, Any]]) -> dict[str, int]:
    """The expected balances: a tiny reference model of the wallet's rules, per player in
    send order (which is partition order)."""
    balances: dict[str, int] = {}
    seen: set[str] = set()
    applied: dict[str, int] = {}
    cancelled: set[str] = set()
    for c in stream:
        cid, p = c["command_id"], c["player_id"]
        if cid in seen:
            continue
        seen.add(cid)
        balance = balances.setdefault(p, STARTING_BALANCE)
        if c["kind"] == "DEBIT" and cid not in cancelled and balance >= c["amount"]:
            balances[p] = balance - c["amount"]
            applied[cid] = c["amount"]
        elif c["kind"] == "CREDIT":
            balances[p] = balance + c["amount"]
        elif c["kind"] == "CANCEL":
            ref = c["reference_command_id"]
            if ref in applied and ref not in cancelled:
                balances[p] = balance + applied[ref]
            cancelled.add(ref)
    return balances
