"""The operator SDK's two example wallets (``sdk/python/examples``) and its ledger, against the
real broker and PostgreSQL.

Every test runs each example as a process for an operator of its own (topics created for the
test, three partitions each), feeds it commands encoded by the aggregator's own codec
(:class:`agg_avro.AvroCodec`) through the aggregator's producer (murmur2 partitioner), and reads
the replies back with that codec: the SDK's bytes must be the aggregator's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
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
from agg_operator_sdk import (
    CommandKind,
    Effect,
    Facts,
    Outcome,
    ReplyStatus,
    WalletCommand,
    decide,
    decode_command,
)
from agg_operator_sdk.ledger import Ledger, LedgerError, Resolution
from tests.integration.helpers import create_topic

CODEC = AvroCodec()
EXAMPLES = Path(__file__).resolve().parents[2] / "sdk" / "python" / "examples"
STARTING_BALANCE = 100_000
PARTITIONS = 3
SCHEMA = "operator_wallet"


# --- the example as a process ---------------------------------------------------------------------


@dataclass
class Example:
    name: str
    operator: str
    settings: Settings
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        assert self.proc is None or self.proc.poll() is not None
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "OPERATOR_ID": self.operator,
            "KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap,
            "DATABASE_URL": self.settings.database_url,
            "STARTING_BALANCE": str(STARTING_BALANCE),
            # a restarted faust worker waits for its killed predecessor to leave the group
            "SESSION_TIMEOUT_S": "6",
        }
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / f"{self.name}_wallet.py"), *extra],
            env=env, stdout=subprocess.DEVNULL, stderr=self.log_path.open("ab"),
        )  # fmt: skip

    def metric(self, port: int, name: str, **labels: str) -> float:
        """The value of one sample on the example's metrics endpoint (0 if not there yet)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        wanted = {f'{k}="{v}"' for k, v in labels.items()}
        for line in text.splitlines():
            if line.startswith(name + "{"):
                found = set(line[len(name) + 1 : line.index("}")].split(","))
                if found == wanted:
                    return float(line.rsplit(" ", 1)[1])
        return 0.0

    def log(self) -> str:
        return self.log_path.read_text()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture(params=["plain", "faust"])
def example(
    request: pytest.FixtureRequest, settings: Settings, tmp_path: Path
) -> Iterator[Example]:
    """An example wallet (not started) for a fresh operator with topics of its own."""
    name = str(request.param)
    operator = f"op-sdk-{name}-{uuid.uuid4().hex[:8]}"
    for kind in ("commands", "replies"):
        create_topic(settings.kafka_bootstrap, f"agg.wallet.{kind}.{operator}", PARTITIONS)
    ex = Example(name, operator, settings, tmp_path / f"{name}.log")
    try:
        yield ex
    finally:
        if ex.proc is not None and ex.proc.poll() is None:
            ex.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- a client: sends commands as the saga does, collects replies ----------------------------------


def command(
    operator: str,
    player_id: str,
    kind: str,
    amount: int = 0,
    *,
    reference: str | None = None,
    currency: str = "EUR",
) -> dict[str, Any]:
    cid = f"cmd-{uuid.uuid4().hex}"
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
    operator: str
    replies: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    partitions: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    """Partitions each command was sent to, and (under ``reply:<id>``) its replies came on."""
    keys: dict[str, set[bytes]] = field(default_factory=lambda: defaultdict(set))
    """The same for the message keys."""
    producer: Any = None

    async def send(self, *commands: dict[str, Any], key: bytes | None = None) -> None:
        futures = []
        for c in commands:
            message_key = key or player_key(c["operator_id"], c["player_id"])
            self.keys[c["command_id"]].add(message_key)
            value = CODEC.encode("casino.agg.WalletCommand", c)
            topic = f"agg.wallet.commands.{self.operator}"
            futures.append(await self.producer.send(topic, value, key=message_key))
        for c, meta in zip(commands, await asyncio.gather(*futures), strict=True):
            self.partitions[c["command_id"]].add(meta.partition)

    async def send_raw(self, key: bytes, value: bytes) -> None:
        await self.producer.send_and_wait(f"agg.wallet.commands.{self.operator}", value, key=key)

    async def reply(self, command_id: str, count: int = 1) -> dict[str, Any]:
        await self.until(lambda: len(self.replies.get(command_id, ())) >= count)
        return self.replies[command_id][count - 1]

    async def ask(self, *commands: dict[str, Any]) -> list[dict[str, Any]]:
        """Send commands and return their first replies."""
        await self.send(*commands)
        return [await self.reply(c["command_id"]) for c in commands]

    @staticmethod
    async def until(check: Any, timeout_s: float = 90) -> None:
        """Wait for ``check`` (the timeout only ends a hung test; nothing is asserted on time:
        a faust worker takes a few seconds to join its group)."""

        async def wait() -> None:
            while not check():
                await asyncio.sleep(0.02)

        await asyncio.wait_for(wait(), timeout_s)

    async def _read(self, reader: AIOKafkaConsumer) -> None:
        while True:
            batch = await reader.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    decoded = CODEC.decode(record.value, reader="casino.agg.WalletReply")
                    assert decoded.writer.name == "casino.agg.WalletReply"
                    cid = decoded.datum["command_id"]
                    self.replies[cid].append(decoded.datum)
                    self.partitions[f"reply:{cid}"].add(record.partition)
                    self.keys[f"reply:{cid}"].add(record.key)


@contextlib.asynccontextmanager
async def client(settings: Settings, operator: str) -> AsyncIterator[Client]:
    c = Client(operator)
    c.producer = make_producer(settings, client_id="sdk-test-client")
    await c.producer.start()
    reader = make_consumer(settings, group_id=None, client_id="sdk-test-reader")
    await reader.start()
    tps = [TopicPartition(f"agg.wallet.replies.{operator}", p) for p in range(PARTITIONS)]
    reader.assign(tps)
    await reader.seek_to_beginning(*tps)
    task = asyncio.create_task(c._read(reader))
    try:
        yield c
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await reader.stop()
        await c.producer.stop()


def run(scenario: Any, timeout_s: float = 240) -> None:
    asyncio.run(asyncio.wait_for(scenario, timeout_s))


def db_balance(settings: Settings, operator: str, player_id: str) -> int | None:
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            f"select balance from {SCHEMA}.accounts "
            "where operator_id = %s and player_id = %s and currency = 'EUR'",
            (operator, player_id),
        ).fetchone()
    return None if row is None else int(row[0])


def effects(settings: Settings, operator: str, player_id: str) -> list[str]:
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            f"select effect from {SCHEMA}.commands where operator_id = %s and player_id = %s "
            "order by seq",
            (operator, player_id),
        ).fetchall()
    return [r[0] for r in rows]


def status_balance(reply: dict[str, Any]) -> tuple[str, int | None]:
    return reply["status"], reply["balance"]


# --- the rules, duplicates and refusals, end to end -----------------------------------------------


def test_the_rule_table_duplicates_and_refusals(example: Example, settings: Settings) -> None:
    op = example.operator
    alice, bob, carol, dave = (
        f"{n}-{uuid.uuid4().hex[:6]}" for n in ("alice", "bob", "carol", "dave")
    )
    debit = command(op, alice, "DEBIT", 1_250)
    late = command(op, carol, "DEBIT", 3_000)
    port = _free_port()
    example.start("--metrics-port", str(port))

    async def scenario() -> None:
        async with client(settings, op) as c:
            answers = await c.ask(
                command(op, alice, "BALANCE"),
                debit,
                command(op, alice, "DEBIT", STARTING_BALANCE),  # above the balance
                command(op, alice, "CREDIT", 250),
                command(op, alice, "CANCEL", 0, reference=debit["command_id"]),
                command(op, alice, "CANCEL", 0, reference=debit["command_id"]),
                command(op, carol, "CANCEL", 0, reference=late["command_id"]),  # unknown debit
                late,  # arrives after its cancel
            )
            assert [status_balance(a) for a in answers] == [
                ("OK", STARTING_BALANCE),
                ("OK", STARTING_BALANCE - 1_250),
                ("INSUFFICIENT_FUNDS", STARTING_BALANCE - 1_250),
                ("OK", STARTING_BALANCE - 1_000),
                ("OK", STARTING_BALANCE + 250),  # refunded
                ("OK", STARTING_BALANCE + 250),  # refunded once only
                ("OK", STARTING_BALANCE),  # tombstone
                ("ERROR", STARTING_BALANCE),  # the debit refused
            ]
            first = answers[1]
            assert first["currency"] == "EUR"
            assert first["correlation_id"] == debit["correlation_id"]
            assert first["operator_id"] == op and first["player_id"] == alice

            # exact duplicates, at once and one by one: the stored reply, nothing moves
            await c.send(*[debit] * 10)
            for _ in range(3):
                await c.send(debit)
            assert await c.reply(debit["command_id"], count=14) == first
            assert all(r == first for r in c.replies[debit["command_id"]])

            # the id of alice's debit for bob, and for alice with another amount: refused
            await c.send({**command(op, bob, "DEBIT", 1_250), "command_id": debit["command_id"]})
            assert status_balance(await c.reply(debit["command_id"], count=15)) == (
                "ERROR", None)  # fmt: skip
            await c.send({**debit, "amount": 9_999})
            assert status_balance(await c.reply(debit["command_id"], count=16)) == (
                "ERROR", None)  # fmt: skip
            await c.send(debit)  # the owner's repeat still gets its own reply
            assert await c.reply(debit["command_id"], count=17) == first

            # malformed commands and undecodable bytes: ERROR or skipped, nothing moves
            key = player_key(op, alice)
            await c.send_raw(key, b"\xc3\x01not-a-fingerprint-nor-a-body")
            await c.send_raw(key, b"plain text")
            bad = [
                command(op, alice, "DEBIT", -5),
                command(op, alice, "DEBIT", 0),
                command(op, alice, "DEBIT", 10, currency="eur"),
                command(op, alice, "CANCEL", 10),  # no reference
                command(op, alice, "UNKNOWN", 10),
                command(op, alice, "CREDIT", 2**63 - 1),  # the balance would overflow
            ]
            answers = await c.ask(*bad)
            assert [a["status"] for a in answers] == ["ERROR"] * len(bad)
            wrong_key = command(op, alice, "CREDIT", 10)
            await c.send(wrong_key, key=player_key(op, bob))
            assert (await c.reply(wrong_key["command_id"]))["status"] == "ERROR"
            (balance,) = await c.ask(command(op, alice, "BALANCE"))
            assert status_balance(balance) == ("OK", STARTING_BALANCE + 250)
            # a malformed CANCEL cancels nothing: the debit it names is applied when it comes
            later = command(op, dave, "DEBIT", 700)
            malformed = command(op, dave, "CANCEL", reference=later["command_id"], currency="eur")
            answers = await c.ask(malformed, later)
            assert [status_balance(a) for a in answers] == [
                ("ERROR", None), ("OK", STARTING_BALANCE - 700)]  # fmt: skip

            # the metrics count what the replies say
            def count(resolution: str) -> float:
                return example.metric(port, "operator_wallet_commands_total", operator=op,
                                      kind="DEBIT", status="OK" if resolution == "repeat"
                                      else "ERROR", resolution=resolution)  # fmt: skip

            await c.until(lambda: (count("repeat"), count("foreign"), count("conflict"))
                          == (14, 1, 1))  # fmt: skip

            # every reply with its command's key, on the partition its command came from:
            # the one the saga reads
            for cid, parts in list(c.partitions.items()):
                if not cid.startswith("reply:"):
                    assert c.partitions[f"reply:{cid}"] <= parts, cid
                    assert c.keys[f"reply:{cid}"] <= c.keys[cid], cid
            assert c.keys[wrong_key["command_id"]] == {player_key(op, bob)}

    try:
        run(scenario())
    finally:
        assert example.stop() == 0, example.log()[-3000:]
    # and the offsets were committed: up to the end of every partition
    committed, ends = asyncio.run(_committed_and_end(settings, op))
    assert committed == ends
    assert db_balance(settings, op, alice) == STARTING_BALANCE + 250
    assert db_balance(settings, op, carol) == STARTING_BALANCE
    assert db_balance(settings, op, bob) is None  # refused before an account was opened
    assert effects(settings, op, bob) == []
    assert effects(settings, op, carol) == ["tombstone", "refused"]
    assert effects(settings, op, dave) == ["invalid", "debited"]
    assert sorted(effects(settings, op, alice)) == sorted(
        ["balance", "debited", "insufficient", "credited", "refunded", "noop"]
        + ["invalid"] * 7
        + ["balance"]
    )
    log = example.log()
    assert log.count('"event":"undecodable"') == 2
    assert log.count('"event":"command_id_refused"') == 2


async def _committed_and_end(settings: Settings, operator: str) -> tuple[list[int], list[int]]:
    """The example's committed offsets and the end offsets of its commands topic."""
    consumer = make_consumer(settings, group_id=f"operator-wallet-{operator}",
                             client_id="sdk-test-offsets")  # fmt: skip
    await consumer.start()
    try:
        tps = [TopicPartition(f"agg.wallet.commands.{operator}", p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(tps)
        return [await consumer.committed(tp) or 0 for tp in tps], [ends[tp] for tp in tps]
    finally:
        await consumer.stop()


# --- a crash mid-stream ---------------------------------------------------------------------------


def test_sigkill_mid_stream_then_restart_answers_every_command_once_in_effect(
    example: Example, settings: Settings
) -> None:
    """The wallet is killed between a database commit and the replies (the reply delay
    widens that window); restarted, it reads the uncommitted commands again, finds them in
    the ledger and sends the stored replies. Every command is answered, every answer to an id
    is the same, each id is recorded once, and the balances are the model's."""
    op = example.operator
    rng = random.Random(11)
    players = [f"kill{i}-{uuid.uuid4().hex[:6]}" for i in range(12)]
    stream: list[dict[str, Any]] = []
    debits: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for _ in range(600):
        p = rng.choice(players)
        roll = rng.random()
        if roll < 0.1 and stream:
            stream.append(rng.choice(stream))  # a resend of an earlier command
        elif roll < 0.16 and debits[p]:
            ref = rng.choice(debits[p])["command_id"]
            stream.append(command(op, p, "CANCEL", 0, reference=ref))
        elif roll < 0.45:
            stream.append(command(op, p, "CREDIT", rng.randint(0, 20_000)))
        else:
            stream.append(command(op, p, "DEBIT", rng.randint(1, 30_000)))
            debits[p].append(stream[-1])
    expected = _model(stream)
    distinct = {c["command_id"] for c in stream}
    sends: dict[str, int] = defaultdict(int)
    for c in stream:
        sends[c["command_id"]] += 1

    async def scenario() -> None:
        async with client(settings, op) as c:
            example.start("--reply-delay-ms", "150")
            sending = asyncio.create_task(_send_paced(c, stream))
            try:
                await c.until(lambda: len(c.replies) >= 60)
                applied = _recorded(settings, op, distinct)
                await c.until(lambda: len(_recorded(settings, op, distinct)) > len(applied))
            finally:
                example.kill()
            answered_at_kill = set(c.replies)
            in_flight = _recorded(settings, op, distinct) - answered_at_kill
            assert in_flight, "the kill should land between a commit and its replies"
            example.start()
            await sending
            await c.until(lambda: distinct <= set(c.replies))
            assert example.stop() == 0, example.log()[-3000:]
            assert len(answered_at_kill) < len(distinct)
            for cid in in_flight:
                assert c.replies[cid], cid  # answered after the restart, from the ledger
            for cid, replies in c.replies.items():
                assert len(replies) >= sends[cid], cid
                assert all(r == replies[0] for r in replies), cid

    run(scenario())
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            f"select command_id from {SCHEMA}.commands where operator_id = %s",
            (op,),
        ).fetchall()
        assert sorted(r[0] for r in rows) == sorted(distinct)  # each once: the primary key
        balances: dict[str, int] = dict(
            conn.execute(
                f"select player_id, balance from {SCHEMA}.accounts where operator_id = %s",
                (op,),
            ).fetchall()
        )
        folded: dict[str, int] = dict(
            conn.execute(
                f"select a.player_id, a.opening_balance + coalesce(sum(c.delta), 0) "
                f"from {SCHEMA}.accounts a left join {SCHEMA}.commands c on c.operator_id = "
                "a.operator_id and c.player_id = a.player_id and c.currency = a.currency "
                "where a.operator_id = %s group by a.player_id, a.opening_balance",
                (op,),
            ).fetchall()
        )
    assert balances == expected
    assert folded == expected


def test_a_database_failure_stops_the_wallet_before_the_command_is_acknowledged(
    example: Example, settings: Settings
) -> None:
    """The wallet's PostgreSQL connection is cut while commands flow. The command whose
    transaction fails is neither answered nor acknowledged (faust would acknowledge it if the
    agent simply raised) and nothing after it is processed: the wallet exits non-zero.
    Restarted, it answers every command, and the balances are the model's."""
    op = example.operator
    players = [f"dbdown{i}-{uuid.uuid4().hex[:6]}" for i in range(4)]
    first = [command(op, p, "DEBIT", 100 + i) for i, p in enumerate(players * 5)]
    second = [command(op, p, "CREDIT", 50 + i) for i, p in enumerate(players * 5)]
    distinct = {c["command_id"] for c in first + second}

    async def scenario() -> None:
        async with client(settings, op) as c:
            example.start()
            await c.ask(*first)
            with psycopg.connect(settings.database_url, autocommit=True) as conn:
                cut = conn.execute(
                    "select pg_terminate_backend(pid) from pg_stat_activity "
                    "where application_name = %s",
                    (f"operator-wallet-{op}",),
                ).fetchall()
            assert cut == [(True,)]
            await c.send(*second)
            assert example.proc is not None
            status = await asyncio.to_thread(example.proc.wait, 60)
            assert status == {"faust": 70, "plain": 1}[example.name]  # stopped, not skipped
            assert '"event":"wallet_failed"' in example.log()
            assert not distinct <= set(c.replies)  # what failed was not answered
            example.start()
            await c.until(lambda: distinct <= set(c.replies))
            assert example.stop() == 0, example.log()[-3000:]
            for cid, replies in c.replies.items():
                assert all(r == replies[0] for r in replies), cid

    run(scenario())
    assert sorted(_recorded(settings, op, distinct)) == sorted(distinct)
    assert {p: db_balance(settings, op, p) for p in players} == _model(first + second)


def _recorded(settings: Settings, operator: str, ids: set[str]) -> set[str]:
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            f"select command_id from {SCHEMA}.commands "
            "where operator_id = %s and command_id = any(%s)",
            (operator, sorted(ids)),
        ).fetchall()
    return {r[0] for r in rows}


async def _send_paced(c: Client, commands: list[dict[str, Any]]) -> None:
    for i in range(0, len(commands), 20):
        await c.send(*commands[i : i + 20])
        await asyncio.sleep(0.05)


def _model(stream: list[dict[str, Any]]) -> dict[str, int]:
    """The expected balances: a tiny reference model of the rules, per player in send order
    (which is partition order)."""
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


# --- the ledger on its own ------------------------------------------------------------------------


def sdk_command(operator: str, player_id: str, kind: str, amount: int) -> WalletCommand:
    return decode_command(CODEC.encode("casino.agg.WalletCommand",
                                       command(operator, player_id, kind, amount)))  # fmt: skip


def test_two_wallets_racing_on_one_batch_apply_it_once(settings: Settings) -> None:
    """Two processes of one operator (both owning a partition for a moment during a
    rebalance) handle the same batch at the same time: one applies it, the other waits for
    its locks and finds every command recorded."""
    op = f"op-sdk-race-{uuid.uuid4().hex[:8]}"
    p = f"race-{uuid.uuid4().hex[:6]}"
    batch = [sdk_command(op, p, "DEBIT", 1_000) for _ in range(30)]
    items = [(c, c.key) for c in batch]

    async def one(ledger: Ledger) -> list[Any]:
        conn = await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True)
        try:
            async with conn.transaction():
                return await ledger.handle_batch(conn, items)
        finally:
            await conn.close()

    async def scenario() -> None:
        ledger = Ledger(op, starting_balance=STARTING_BALANCE)
        conn = await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True)
        try:
            await ledger.ensure_schema(conn)
            with pytest.raises(LedgerError):  # outside a transaction: refused
                await ledger.handle(conn, batch[0], key=batch[0].key)
        finally:
            await conn.close()
        first, second = await asyncio.gather(one(ledger), one(ledger))
        assert [h.reply for h in first] == [h.reply for h in second]
        resolutions = sorted({h.resolution for h in first} | {h.resolution for h in second})
        assert resolutions == [Resolution.APPLIED, Resolution.REPEAT]
        assert {h.resolution for h in first} != {h.resolution for h in second}

    run(scenario())
    assert db_balance(settings, op, p) == STARTING_BALANCE - 30 * 1_000


def test_unknown_players_without_a_starting_balance_are_unknown(settings: Settings) -> None:
    op = f"op-sdk-strict-{uuid.uuid4().hex[:8]}"
    p = f"nobody-{uuid.uuid4().hex[:6]}"
    debit = sdk_command(op, p, "DEBIT", 10)
    assert debit.kind is CommandKind.DEBIT

    async def scenario() -> None:
        ledger = Ledger(op)  # no starting balance: players must exist
        conn = await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True)
        try:
            await ledger.ensure_schema(conn)
            async with conn.transaction():
                (handled,) = await ledger.handle_batch(conn, [(debit, debit.key)])
            assert (handled.reply.status.value, handled.reply.balance) == ("UNKNOWN_PLAYER", None)
            async with conn.transaction():
                again = await ledger.handle(conn, debit, key=debit.key)
            assert again.resolution is Resolution.REPEAT and again.reply == handled.reply
        finally:
            await conn.close()

    run(scenario())
    assert db_balance(settings, op, p) is None
    assert effects(settings, op, p) == ["unknown"]


def test_replaced_rules_are_used_and_checked_before_anything_is_written(
    settings: Settings,
) -> None:
    """An operator's own rule table (a per-debit limit here) decides; one that would take a
    balance below zero is refused by the ledger, and its transaction leaves nothing."""
    op = f"op-sdk-rules-{uuid.uuid4().hex[:8]}"
    p = f"limited-{uuid.uuid4().hex[:6]}"
    small, large = sdk_command(op, p, "DEBIT", 500), sdk_command(op, p, "DEBIT", 501)

    def limited(c: WalletCommand, facts: Facts) -> Outcome:
        if c.kind is CommandKind.DEBIT and c.amount > 500:
            return Outcome(Effect.REFUSED, ReplyStatus.LIMIT_REACHED, 0, facts.balance, "limit")
        return decide(c, facts)

    def broken(c: WalletCommand, facts: Facts) -> Outcome:
        assert facts.balance is not None
        return Outcome(Effect.DEBITED, ReplyStatus.OK, -(facts.balance + 1), -1)

    async def scenario() -> None:
        conn = await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True)
        try:
            ledger = Ledger(op, starting_balance=STARTING_BALANCE, rules=limited)
            await ledger.ensure_schema(conn)
            async with conn.transaction():
                handled = await ledger.handle_batch(conn, [(small, small.key), (large, large.key)])
            assert [(h.reply.status, h.reply.balance) for h in handled] == [
                (ReplyStatus.OK, STARTING_BALANCE - 500),
                (ReplyStatus.LIMIT_REACHED, STARTING_BALANCE - 500),
            ]
            other = f"broken-{uuid.uuid4().hex[:6]}"
            debit = sdk_command(op, other, "DEBIT", 1)
            with pytest.raises(LedgerError, match=r"leaves 0\.\.2\^63-1"):
                async with conn.transaction():
                    await Ledger(op, starting_balance=10, rules=broken).handle(
                        conn, debit, key=debit.key
                    )
            assert db_balance(settings, op, other) is None
            assert effects(settings, op, other) == []
        finally:
            await conn.close()

    run(scenario())
    assert db_balance(settings, op, p) == STARTING_BALANCE - 500
    assert effects(settings, op, p) == ["debited", "refused"]
