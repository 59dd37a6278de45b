"""A harness for saga tests on the real broker: the worker in-process or as a process, a
scripted operator wallet answering wallet commands, and readers of every output topic."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agg_avro import AvroCodec
from agg_config.settings import Settings
from agg_kafka.clients import make_consumer, make_producer, player_key
from agg_saga.worker import SagaWorker

OPERATOR = "op-alpha"
PROVIDER = "prov-nova"
REPLY_PARTITION = 7
CODEC = AvroCodec()
_request_numbers = itertools.count()

Policy = Callable[[dict[str, Any]], dict[str, Any] | None]
"""Given a wallet command, the reply fields (status, balance) or None to stay silent."""


def ok_wallet(balance: int = 100_000) -> Policy:
    def answer(command: dict[str, Any]) -> dict[str, Any]:
        return {"status": "OK", "balance": balance}

    return answer


def request(
    player: str, action: str, txn: str | None = None, amount: int | None = None, **extra: Any
) -> dict[str, Any]:
    n = next(_request_numbers)
    return {
        "request_id": extra.pop("request_id", f"rq-{n}"),
        "correlation_id": f"corr-{n}",
        "provider_id": PROVIDER,
        "operator_id": OPERATOR,
        "player_id": player,
        "action": action,
        "session_token": "verified-by-ingress",
        "transaction_id": txn,
        "reference_transaction_id": extra.pop("reference", None),
        "round_id": extra.pop("round_id", "round-1"),
        "game_id": "nova-starfall",
        "amount": amount,
        "currency": "EUR",
        "round_closed": extra.pop("round_closed", False),
        "received_at": datetime.now(UTC),
        "reply_to": "harness",
        "reply_partition": REPLY_PARTITION,
    }


class LedgerWallet:
    """A minimal operator wallet for saga tests: applies each command id once (a repeat gets
    the same reply), a CANCEL refunds the debit it names once, and it keeps the net amount
    moved per provider transaction."""

    def __init__(self, balance: int = 1_000_000):
        self.balance = balance
        self.replies: dict[str, dict[str, Any]] = {}
        self.applied_debits: dict[str, dict[str, Any]] = {}
        self.cancelled: set[str] = set()
        self.net: Counter[str] = Counter()

    def __call__(self, command: dict[str, Any]) -> dict[str, Any]:
        cid = command["command_id"]
        if cid not in self.replies:
            kind, amount, txn = command["kind"], command["amount"], command["transaction_id"]
            if kind == "DEBIT" and cid not in self.cancelled:
                self.balance -= amount
                self.net[txn] -= amount
                self.applied_debits[cid] = command
            elif kind == "CREDIT":
                self.balance += amount
                self.net[txn] += amount
            elif kind == "CANCEL":
                ref = command["reference_command_id"]
                if ref in self.applied_debits and ref not in self.cancelled:
                    self.balance += amount
                    self.net[txn] += amount
                self.cancelled.add(ref)
            self.replies[cid] = {"status": "OK", "balance": self.balance}
        return self.replies[cid]


class Harness:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.producer: AIOKafkaProducer = make_producer(settings, client_id="harness")
        self.outcomes: dict[str, list[dict[str, Any]]] = {}
        self.commands: list[dict[str, Any]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.policy: Policy = ok_wallet()
        self._tasks: list[asyncio.Task[None]] = []
        self._readers: list[AIOKafkaConsumer] = []

    async def start(self) -> None:
        await self.producer.start()
        for topic, handler in (
            ("agg.outcomes", self._on_outcome),
            (f"agg.wallet.commands.{OPERATOR}", self._on_command),
            ("agg.events", self._on_event),
        ):
            reader = make_consumer(self.settings, group_id=None, client_id=f"harness-{topic}")
            await reader.start()
            tps = [TopicPartition(topic, p) for p in range(self.settings.partition_count)]
            reader.assign(tps)
            await reader.seek_to_end(*tps)
            for tp in tps:  # resolve the end positions now, before anything is sent
                await reader.position(tp)
            self._readers.append(reader)
            self._tasks.append(asyncio.create_task(self._read(reader, handler)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for reader in self._readers:
            await reader.stop()
        await self.producer.stop()

    async def _read(self, reader: AIOKafkaConsumer, handler: Callable[[Any], Any]) -> None:
        while True:
            batch = await reader.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    await handler(record)

    async def _on_outcome(self, record: Any) -> None:
        datum = CODEC.decode(record.value).datum
        self.outcomes.setdefault(datum["request_id"], []).append(datum)

    async def _on_event(self, record: Any) -> None:
        decoded = CODEC.decode(record.value)
        self.events.append((decoded.name.rsplit(".", 1)[-1], decoded.datum))

    async def _on_command(self, record: Any) -> None:
        command = CODEC.decode(record.value).datum
        self.commands.append(command)
        answer = self.policy(command)
        if answer is None:
            return
        await self._on_command_reply(command, answer)

    async def _on_command_reply(self, command: dict[str, Any], answer: dict[str, Any]) -> None:
        """Reply to ``command`` (also for a test that answers a held command late)."""
        reply = {
            "command_id": command["command_id"],
            "operator_id": command["operator_id"],
            "player_id": command["player_id"],
            "currency": command["currency"],
            "replied_at": datetime.now(UTC),
            "correlation_id": command["correlation_id"],
            **answer,
        }
        await self.producer.send_and_wait(
            f"agg.wallet.replies.{OPERATOR}",
            CODEC.encode("casino.agg.WalletReply", reply),
            key=player_key(command["operator_id"], command["player_id"]),
        )

    async def send(self, req: dict[str, Any]) -> str:
        await self.producer.send_and_wait(
            "agg.requests",
            CODEC.encode("casino.agg.ProviderRequest", req),
            key=player_key(req["operator_id"], req["player_id"]),
        )
        return str(req["request_id"])

    async def outcome(self, request_id: str, timeout_s: float = 15) -> dict[str, Any]:
        async def wait() -> dict[str, Any]:
            while request_id not in self.outcomes:
                await asyncio.sleep(0.01)
            return self.outcomes[request_id][0]

        return await asyncio.wait_for(wait(), timeout_s)

    async def until(self, check: Callable[[], bool], timeout_s: float = 20) -> None:
        async def wait() -> None:
            while not check():
                await asyncio.sleep(0.02)

        await asyncio.wait_for(wait(), timeout_s)

    async def until_answered(
        self, player: str, action: str, txn: str, amount: int, attempts_max: int = 60
    ) -> dict[str, Any]:
        """Like a provider: send the callback, and on RETRY_LATER or no answer in 3 s send it
        again with the same transaction id, until a final answer comes."""
        for _ in range(attempts_max):
            rid = await self.send(request(player, action, txn, amount))
            try:
                outcome = await self.outcome(rid, timeout_s=3)
            except TimeoutError:
                continue
            if outcome["status"] != "RETRY_LATER":
                return outcome
            await asyncio.sleep(0.2)
        raise AssertionError(f"{action} {txn} got no final answer in {attempts_max} attempts")

    def commands_for(self, txn: str, kind: str | None = None) -> list[dict[str, Any]]:
        return [
            c for c in self.commands
            if c["transaction_id"] == txn and (kind is None or c["kind"] == kind)
        ]  # fmt: skip

    def events_for(self, txn: str, name: str) -> list[dict[str, Any]]:
        return [e for n, e in self.events if n == name and e.get("transaction_id") == txn]


@contextlib.asynccontextmanager
async def saga_in_process(settings: Settings) -> AsyncIterator[SagaWorker]:
    worker = SagaWorker(settings, ["op-alpha", "op-beta"], client_id="saga-test")
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(worker.ready.wait(), 60)
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def saga_process(settings: Settings, name: str, log_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "AGG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "AGG_DATABASE_URL": settings.database_url,
        "AGG_WALLET_TIMEOUT_MS": str(settings.wallet_timeout_ms),
        "AGG_KAFKA_CLIENT": settings.kafka_client,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "agg_saga", "--client-id", name, "--metrics-port", "0"],
        env=env, stdout=subprocess.DEVNULL, stderr=log_path.open("ab"),
    )  # fmt: skip
