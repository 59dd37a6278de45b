"""The ingress on the real broker: the app served by uvicorn (httptools) in-process with its
real Kafka producer and outcome consumer, and a tiny "echo saga" (a real consumer of
agg.requests that produces a ProviderOutcome to the reply partition each request names, with a
status the test chooses per transaction id). Refusals are checked to publish nothing by the
end offsets of agg.requests before and after.

The module runs on its own copy of the topic catalogue (``topic_prefix`` TOPIC_PREFIX, so
``agg-ingress-it.requests`` plays ``agg.requests``): the requests published here are never
decided by a saga worker that other tests start on the shared broker, and their events never
reach other tests' readers of ``agg.events``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
import uvloop
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from agg_avro import AvroCodec
from agg_config.settings import Settings
from agg_config.tenants import Tenants, parse_tenants
from agg_domain.ids import derive_id
from agg_domain.statuses import Action
from agg_ingress.adapters import hub88
from agg_ingress.app import build_app
from agg_ingress.client import IngressClient, encode_body, sign
from agg_ingress.protocol import Callback
from agg_ingress.sessions import SessionClaims, issue_token, verify_token
from agg_kafka.admin import ensure_topics
from agg_kafka.clients import make_consumer, make_producer
from agg_kafka.reply import AioReplyClients, RdReplyClients
from agg_kafka.topics import TopicNames, catalogue

T = TypeVar("T")
CODEC = AvroCodec()
OP, OP_SECRET = "op-alpha", "dev-secret-op-alpha-0001"
OP_B, OP_B_SECRET = "op-beta", "dev-secret-op-beta-00002"
NOVA, NOVA_SECRET = "prov-nova", "dev-secret-prov-nova-001"
ORBIT, ORBIT_SECRET = "prov-orbit", "dev-secret-prov-orbit-01"
DORMANT, DORMANT_SECRET = "prov-dormant", "dev-secret-prov-dormant1"
ECHO_BALANCE = 12_345
TOPIC_PREFIX = "agg-ingress-it"
TOPICS = TopicNames(TOPIC_PREFIX)


@dataclass
class Policy:
    status: str = "OK"
    delay_s: float = 0.0
    silent: bool = False
    balance: int = ECHO_BALANCE


class EchoSaga:
    """Answers every request addressed to ``instance_id`` on its reply partition."""

    def __init__(self, settings: Settings, instance_id: str):
        self.settings = settings
        self.instance_id = instance_id
        self.policies: dict[str | tuple[str, str], Policy] = {}
        """By transaction id, or by (operator id, transaction id) first."""
        self.requests: list[tuple[bytes, int, dict[str, Any]]] = []
        self.consumer: AIOKafkaConsumer = make_consumer(
            settings, group_id=None, client_id="echo-saga"
        )
        self.producer: AIOKafkaProducer = make_producer(settings, client_id="echo-saga")
        self.task: asyncio.Task[None] | None = None
        self.answering: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.producer.start()
        await self.consumer.start()
        tps = [TopicPartition(TOPICS.requests, p) for p in range(self.settings.partition_count)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        for tp in tps:
            await self.consumer.position(tp)
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.consumer.stop()
        await self.producer.stop()

    async def _run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    datum = CODEC.decode(record.value or b"", "casino.agg.ProviderRequest").datum
                    if datum["reply_to"] != self.instance_id:
                        continue
                    assert record.key is not None
                    self.requests.append((record.key, record.partition, datum))
                    answering = asyncio.create_task(self._answer(record.key, datum))
                    self.answering.add(answering)
                    answering.add_done_callback(self.answering.discard)

    async def _answer(self, key: bytes, request: dict[str, Any]) -> None:
        txn = request["transaction_id"] or ""
        policy = self.policies.get((request["operator_id"], txn)) or self.policies.get(
            txn, Policy()
        )
        if policy.silent:
            return
        await asyncio.sleep(policy.delay_s)
        outcome = {
            "request_id": request["request_id"],
            "correlation_id": request["correlation_id"],
            "provider_id": request["provider_id"],
            "operator_id": request["operator_id"],
            "player_id": request["player_id"],
            "action": request["action"],
            "status": policy.status,
            "balance": policy.balance,
            "currency": request["currency"],
            "transaction_id": request["transaction_id"],
            "decided_at": datetime.now(UTC),
            "reply_to": request["reply_to"],
            "reply_partition": request["reply_partition"],
        }
        await self.producer.send_and_wait(
            TOPICS.outcomes,
            CODEC.encode("casino.agg.ProviderOutcome", outcome),
            key=key,
            partition=request["reply_partition"],
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


HUB, HUB_GAME = "prov-hub-t", "hub-roulette"
HUB_GAME_URL, HUB_GAME_CODE = "https://games.hub.example/launch?brand=agg", "hub_roulette_01"
HUB_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
"""The hub88-v1 provider's key pair (it signs requests) and ours for it (we sign answers)."""
OUR_HUB_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_public(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _pem_private(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def test_tenants(settings: Settings) -> Tenants:
    data = yaml.safe_load(settings.tenants_file.read_text())
    data["providers"].append(
        {"id": DORMANT, "name": "Dormant", "secret": {"value": DORMANT_SECRET}, "enabled": False}
    )
    data["providers"].append(
        {"id": HUB, "name": "Hub", "protocol": "hub88-v1", "public_key": _pem_public(HUB_KEY),
         "signing_key": {"value": _pem_private(OUR_HUB_KEY)}, "game_url": HUB_GAME_URL}
    )  # fmt: skip
    data["games"].append({"id": "dormant-slots", "provider": DORMANT, "name": "Dormant Slots"})
    data["games"].append(
        {"id": HUB_GAME, "provider": HUB, "name": "Hub Roulette", "code": HUB_GAME_CODE}
    )
    data["operators"][0]["providers"] += [DORMANT, HUB]
    return parse_tenants(data)


test_tenants.__test__ = False  # type: ignore[attr-defined]


class Stack:
    """The ingress and the echo saga on one event loop in a background thread."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.instance_id = f"ingress-test-{uuid.uuid4().hex[:8]}"
        self.app = build_app(settings, test_tenants(settings), self.instance_id)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.echo: EchoSaga | None = None
        self.server: uvicorn.Server | None = None
        self.server_task: concurrent.futures.Future[None] | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def start(self) -> None:
        self.thread.start()

        async def make_echo() -> EchoSaga:
            echo = EchoSaga(self.settings, self.instance_id)
            await echo.start()
            return echo

        self.echo = self.run(make_echo())
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, loop="none", http="httptools",
            lifespan="on", log_level="warning", access_log=False,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.server_task = asyncio.run_coroutine_threadsafe(self.server.serve(), self.loop)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError("ingress did not become healthy (no reply partition?)")

    def stop(self) -> None:
        if self.server is not None and self.server_task is not None:
            self.server.should_exit = True
            self.server_task.result(30)
        if self.echo is not None:
            self.run(self.echo.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @property
    def ingress(self) -> Any:
        return self.app.state.ingress

    def end_offsets(self, topic: str) -> dict[int, int]:
        async def read() -> dict[int, int]:
            consumer = make_consumer(self.settings, group_id=None, client_id="offsets")
            await consumer.start()
            try:
                # a fresh consumer has no metadata for the topic yet; every topic of the
                # catalogue has partition_count partitions
                tps = [TopicPartition(topic, p) for p in range(self.settings.partition_count)]
                ends = await consumer.end_offsets(tps)
                return {tp.partition: off for tp, off in ends.items()}
            finally:
                await consumer.stop()

        return self.run(read())

    def records_since(
        self, topic: str, start: dict[int, int]
    ) -> list[tuple[bytes | None, dict[str, Any], str]]:
        async def read() -> list[tuple[bytes | None, dict[str, Any], str]]:
            consumer = make_consumer(self.settings, group_id=None, client_id="reader")
            await consumer.start()
            out: list[tuple[bytes | None, dict[str, Any], str]] = []
            try:
                tps = [TopicPartition(topic, p) for p in start]
                consumer.assign(tps)
                ends = await consumer.end_offsets(tps)
                for tp in tps:
                    consumer.seek(tp, start[tp.partition])
                remaining = {tp for tp in tps if ends[tp] > start[tp.partition]}
                while remaining:
                    batch = await consumer.getmany(*remaining, timeout_ms=1000)
                    for tp, records in batch.items():
                        for r in records:
                            decoded = CODEC.decode(r.value or b"")
                            out.append((r.key, decoded.datum, decoded.name))
                            if r.offset + 1 >= ends[tp]:
                                remaining.discard(tp)
            finally:
                await consumer.stop()
            return out

        return self.run(read())


CLIENTS = ["librdkafka", "aiokafka"]
"""The Kafka clients the ingress runs on (``kafka_client``): every test runs on both."""


@pytest.fixture(scope="module")
def ingress_settings(settings: Settings) -> Settings:
    """The module's settings, its topics created."""
    test_settings = Settings(
        kafka_bootstrap=settings.kafka_bootstrap,
        database_url=settings.database_url,
        session_secret=settings.session_secret,
        ingress_outcome_wait_ms=1_000,
        topic_prefix=TOPIC_PREFIX,
    )
    specs = catalogue(
        [o.id for o in test_tenants(test_settings).operators],
        partitions=test_settings.partition_count,
        replication_factor=test_settings.replication_factor,
        min_insync_replicas=test_settings.min_insync_replicas,
        prefix=TOPIC_PREFIX,
    )
    report = asyncio.run(ensure_topics(test_settings.kafka_bootstrap, specs))
    assert report.ok, report.lines()
    return test_settings


@pytest.fixture(scope="module", params=CLIENTS)
def stack(ingress_settings: Settings, request: pytest.FixtureRequest) -> Iterator[Stack]:
    s = Stack(ingress_settings.model_copy(update={"kafka_client": request.param}))
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture()
def operator(stack: Stack) -> Iterator[IngressClient]:
    with IngressClient(stack.base_url, OP_SECRET) as client:
        yield client


@pytest.fixture()
def nova(stack: Stack) -> Iterator[IngressClient]:
    with IngressClient(stack.base_url, NOVA_SECRET) as client:
        yield client


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def open_session(
    client: IngressClient, player: str, game: str = "nova-starfall", currency: str = "EUR"
) -> str:
    r = client.open_session(
        OP,
        {"player_id": player, "currency": currency, "country": "DE", "game_id": game,
         "mode": "real"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    return str(r.json()["session_token"])


def bet(player: str, token: str, **changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "request_id": unique("rq"),
        "session_token": token,
        "player_id": player,
        "transaction_id": unique("tx"),
        "round_id": unique("rd"),
        "game_id": "nova-starfall",
        "amount": 250,
        "currency": "EUR",
        "round_closed": False,
    }
    fields.update(changes)
    return fields


def total(offsets: dict[int, int]) -> int:
    return sum(offsets.values())


# --- the happy path --------------------------------------------------------------------------


def test_signed_bet_is_published_and_answered(
    stack: Stack, operator: IngressClient, nova: IngressClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agg.ingress")
    player = unique("pl")
    token = open_session(operator, player)
    fields = bet(player, token, round_closed=True)
    before = stack.end_offsets(TOPICS.requests)
    started = datetime.now(UTC)
    r = nova.callback(NOVA, "bet", fields)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "OK",
        "balance": ECHO_BALANCE,
        "currency": "EUR",
        "transaction_id": fields["transaction_id"],
        "request_id": fields["request_id"],
    }
    assert total(stack.end_offsets(TOPICS.requests)) == total(before) + 1
    published = stack.records_since(TOPICS.requests, before)
    assert len(published) == 1
    key, datum, name = published[0]
    assert name == "casino.agg.ProviderRequest"
    assert key == f"{OP}:{player}".encode()
    assert datum["reply_to"] == stack.instance_id
    assert datum["reply_partition"] == stack.ingress.router.reply_partition
    assert datum["correlation_id"].startswith("corr-")
    assert started.timestamp() - 1 <= datum["received_at"].timestamp() <= time.time() + 1
    assert datum["received_at"].tzinfo is not None
    expected = {
        "request_id": fields["request_id"], "provider_id": NOVA, "operator_id": OP,
        "player_id": player, "action": "BET", "session_token": token,
        "transaction_id": fields["transaction_id"], "reference_transaction_id": None,
        "round_id": fields["round_id"], "game_id": "nova-starfall", "amount": 250,
        "currency": "EUR", "round_closed": True,
    }  # fmt: skip
    assert {k: datum[k] for k in expected} == expected
    lines = [getattr(r, "fields", {}) for r in caplog.records if r.getMessage() == "callback"]
    mine = [f for f in lines if f.get("request_id") == fields["request_id"]]
    assert len(mine) == 1
    assert mine[0]["correlation_id"] == datum["correlation_id"]
    assert (mine[0]["provider"], mine[0]["action"], mine[0]["status"]) == (NOVA, "bet", "OK")
    assert mine[0]["latency_ms"] > 0


def test_balance_and_rollback_are_forwarded(
    stack: Stack, operator: IngressClient, nova: IngressClient
) -> None:
    player = unique("pl")
    token = open_session(operator, player)
    before = stack.end_offsets(TOPICS.requests)
    r = nova.callback(NOVA, "balance", {"request_id": unique("rq"), "session_token": token,
                                        "player_id": player})  # fmt: skip
    assert r.status_code == 200 and r.json()["status"] == "OK", r.text
    assert r.json()["currency"] == "EUR" and r.json()["transaction_id"] is None
    rollback = {
        "request_id": unique("rq"),
        "session_token": token,
        "player_id": player,
        "transaction_id": unique("tx"),
        "reference_transaction_id": "tx-earlier",
    }
    r = nova.callback(NOVA, "rollback", rollback)
    assert r.status_code == 200 and r.json()["status"] == "OK", r.text
    actions = [(d["action"], d["game_id"], d["currency"], d["amount"])
               for _, d, _ in stack.records_since(TOPICS.requests, before)]  # fmt: skip
    assert sorted(actions) == [("BALANCE", "nova-starfall", "EUR", None),
                               ("ROLLBACK", "nova-starfall", "EUR", None)]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "http"),
    [
        ("INSUFFICIENT_FUNDS", 200),
        ("PLAYER_BLOCKED", 200),
        ("BET_ROLLED_BACK", 200),
        ("DUPLICATE_CONFLICT", 409),
        ("INVALID_REQUEST", 400),
        ("RETRY_LATER", 503),
    ],
)
def test_outcome_status_becomes_the_answer(
    stack: Stack, operator: IngressClient, nova: IngressClient, status: str, http: int
) -> None:
    player = unique("pl")
    fields = bet(player, open_session(operator, player))
    assert stack.echo is not None
    stack.echo.policies[fields["transaction_id"]] = Policy(status)
    r = nova.callback(NOVA, "bet", fields)
    assert r.status_code == http, r.text
    assert r.json()["status"] == status
    assert r.json()["request_id"] == fields["request_id"]


def test_no_outcome_in_time_is_retry_later(
    stack: Stack, operator: IngressClient, nova: IngressClient
) -> None:
    player = unique("pl")
    fields = bet(player, open_session(operator, player))
    assert stack.echo is not None
    stack.echo.policies[fields["transaction_id"]] = Policy(silent=True)
    before = total(stack.end_offsets(TOPICS.requests))
    started = time.monotonic()
    r = nova.callback(NOVA, "bet", fields)
    waited = time.monotonic() - started
    assert r.status_code == 503, r.text
    assert r.json() == {"status": "RETRY_LATER", "balance": None, "currency": "EUR",
                        "transaction_id": fields["transaction_id"],
                        "request_id": fields["request_id"]}  # fmt: skip
    assert 0.9 <= waited < 5
    assert total(stack.end_offsets(TOPICS.requests)) == before + 1  # published, then unanswered
    assert stack.ingress.router.pending_count == 0


def test_concurrent_identical_callbacks_share_the_outcome(
    stack: Stack, operator: IngressClient
) -> None:
    player = unique("pl")
    fields = bet(player, open_session(operator, player))
    assert stack.echo is not None
    stack.echo.policies[fields["transaction_id"]] = Policy(delay_s=0.3)
    body = encode_body(fields)

    def send() -> httpx.Response:
        with IngressClient(stack.base_url, NOVA_SECRET) as c:
            return c.send("POST", f"/v1/providers/{NOVA}/wallet/bet", body)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda _: send(), range(2)))
    assert [r.status_code for r in responses] == [200, 200]
    assert responses[0].json() == responses[1].json()
    assert stack.ingress.router.pending_count == 0
    mine = [d for _, _, d in stack.echo.requests if d["transaction_id"] == fields["transaction_id"]]
    assert len(mine) == 2
    assert mine[0]["correlation_id"] == mine[1]["correlation_id"]


def test_one_callback_for_two_owners_in_flight_gets_each_its_own_outcome(
    stack: Stack, nova: IngressClient
) -> None:
    """A provider's ids are its own, and a player id may exist at two operators: the same
    request id, transaction id and player id for op-alpha's player and op-beta's, in flight
    at once, are two callbacks, each answered with its own outcome."""
    player = unique("pl")
    tokens = {}
    for op, secret in ((OP, OP_SECRET), (OP_B, OP_B_SECRET)):
        with IngressClient(stack.base_url, secret) as client:
            r = client.open_session(op, {"player_id": player, "currency": "EUR",
                                         "country": "DE", "game_id": "nova-starfall",
                                         "mode": "real"})  # fmt: skip
            assert r.status_code == 201, r.text
            tokens[op] = r.json()["session_token"]
    fields = bet(player, tokens[OP])
    txn = fields["transaction_id"]
    assert stack.echo is not None
    # op-alpha's outcome comes last, while op-beta's callback is still waiting
    stack.echo.policies[(OP, txn)] = Policy(delay_s=0.5, balance=111)
    stack.echo.policies[(OP_B, txn)] = Policy(balance=222)

    def send(op: str) -> httpx.Response:
        with IngressClient(stack.base_url, NOVA_SECRET) as c:
            body = encode_body({**fields, "session_token": tokens[op]})
            return c.send("POST", f"/v1/providers/{NOVA}/wallet/bet", body)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        alpha = pool.submit(send, OP)
        time.sleep(0.1)
        beta = pool.submit(send, OP_B)
        answers = [(r.status_code, r.json()["balance"]) for r in (alpha.result(), beta.result())]
    assert answers == [(200, 111), (200, 222)]
    mine = [d for _, _, d in stack.echo.requests if d["transaction_id"] == txn]
    assert sorted(d["operator_id"] for d in mine) == [OP, OP_B]
    assert mine[0]["correlation_id"] != mine[1]["correlation_id"]
    assert stack.ingress.router.pending_count == 0


# --- refusals publish nothing ----------------------------------------------------------------


def raw_send(
    stack: Stack,
    provider: str,
    action: str,
    body: bytes,
    *,
    secret: str = NOVA_SECRET,
    timestamp: int | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    path = f"/v1/providers/{provider}/wallet/{action}"
    ts = int(time.time()) if timestamp is None else timestamp
    sent = {
        "X-Agg-Timestamp": str(ts),
        "X-Agg-Signature": sign(secret, ts, "POST", path, body),
        "Content-Type": "application/json",
    }
    sent.update(headers or {})
    return httpx.post(stack.base_url + path, content=body, headers=sent, timeout=10)


def expired_token(stack: Stack, player: str) -> str:
    now = time.time_ns() // 1_000_000
    claims = SessionClaims("ses-x", OP, player, "EUR", "DE", "nova-starfall", NOVA, "real",
                           now - 7_200_000, now - 1)  # fmt: skip
    return issue_token(stack.settings.session_secret.get_secret_value().encode(), claims)


CASES: list[tuple[str, int, str | None]] = [
    ("bad_signature", 401, "INVALID_SIGNATURE"),
    ("missing_signature", 401, "INVALID_SIGNATURE"),
    ("stale_timestamp", 401, "REQUEST_EXPIRED"),
    ("future_timestamp", 401, "REQUEST_EXPIRED"),
    ("malformed_json", 400, "INVALID_REQUEST"),
    ("negative_amount", 400, "INVALID_REQUEST"),
    ("zero_bet", 400, "INVALID_REQUEST"),
    ("amount_2_63", 400, "INVALID_REQUEST"),
    ("float_amount", 400, "INVALID_REQUEST"),
    ("string_amount", 400, "INVALID_REQUEST"),
    ("bad_id", 400, "INVALID_REQUEST"),
    ("unknown_action", 400, "INVALID_REQUEST"),
    ("wrong_currency", 200, "CURRENCY_MISMATCH"),
    ("forged_token", 200, "SESSION_NOT_FOUND"),
    ("garbage_token", 200, "SESSION_NOT_FOUND"),
    ("other_players_token", 200, "SESSION_NOT_FOUND"),
    ("expired_token", 200, "SESSION_EXPIRED"),
    ("wrong_game", 200, "GAME_NOT_ALLOWED"),
    ("other_providers_session", 200, "GAME_NOT_ALLOWED"),
    ("oversized_body", 413, "INVALID_REQUEST"),
    ("oversized_streamed_body", 413, "INVALID_REQUEST"),
    ("unknown_provider", 404, "UNKNOWN_PROVIDER"),
    ("disabled_provider", 404, "UNKNOWN_PROVIDER"),
]


@pytest.mark.parametrize(("case", "http", "status"), CASES, ids=[c[0] for c in CASES])
def test_refusals_publish_nothing(
    stack: Stack, operator: IngressClient, case: str, http: int, status: str | None
) -> None:
    player = unique("pl")
    token = open_session(operator, player)
    fields = bet(player, token)
    body = encode_body(fields)
    send_kw: dict[str, Any] = {}
    provider, action = NOVA, "bet"
    big = stack.settings.request_body_bytes_max + 1
    if case == "bad_signature":
        send_kw["secret"] = ORBIT_SECRET
    elif case == "missing_signature":
        send_kw["headers"] = {"X-Agg-Signature": ""}
    elif case == "stale_timestamp":
        send_kw["timestamp"] = int(time.time()) - stack.settings.signature_window_s - 5
    elif case == "future_timestamp":
        send_kw["timestamp"] = int(time.time()) + stack.settings.signature_window_s + 5
    elif case == "malformed_json":
        body = body[:-1]
    elif case == "negative_amount":
        body = encode_body({**fields, "amount": -1})
    elif case == "zero_bet":
        body = encode_body({**fields, "amount": 0})
    elif case == "amount_2_63":
        body = encode_body({**fields, "amount": 2**63})
    elif case == "float_amount":
        body = encode_body({**fields, "amount": 250.0})
    elif case == "string_amount":
        body = encode_body({**fields, "amount": "250"})
    elif case == "bad_id":
        body = encode_body({**fields, "round_id": "round 1"})
    elif case == "unknown_action":
        action = "refund"
    elif case == "wrong_currency":
        body = encode_body({**fields, "currency": "USD"})
    elif case == "forged_token":
        now = time.time_ns() // 1_000_000
        claims = SessionClaims("ses-f", OP, player, "EUR", "DE", "nova-starfall", NOVA, "real",
                               now, now + 3_600_000)  # fmt: skip
        body = encode_body(
            {**fields, "session_token": issue_token(b"guessed-secret-000000", claims)}
        )
    elif case == "garbage_token":
        body = encode_body({**fields, "session_token": "not-a-token"})
    elif case == "other_players_token":
        body = encode_body({**fields, "session_token": open_session(operator, unique("pl"))})
    elif case == "expired_token":
        body = encode_body({**fields, "session_token": expired_token(stack, player)})
    elif case == "wrong_game":
        body = encode_body({**fields, "game_id": "nova-gemrush"})
    elif case == "other_providers_session":
        provider = ORBIT
        send_kw["secret"] = ORBIT_SECRET
    elif case == "oversized_body":
        body = encode_body({**fields, "padding": "x" * big})
    elif case == "unknown_provider":
        provider = "prov-nobody"
    elif case == "disabled_provider":
        provider = DORMANT
        send_kw["secret"] = DORMANT_SECRET

    before = stack.end_offsets(TOPICS.requests)
    if case == "oversized_streamed_body":
        path = f"/v1/providers/{NOVA}/wallet/bet"

        def chunks() -> Iterator[bytes]:
            for _ in range(big // 1024 + 2):
                yield b" " * 1024

        ts = int(time.time())
        r = httpx.post(
            stack.base_url + path,
            content=chunks(),
            timeout=10,
            headers={"X-Agg-Timestamp": str(ts), "X-Agg-Signature": "0" * 64},
        )
    else:
        r = raw_send(stack, provider, action, body, **send_kw)
    assert r.status_code == http, r.text
    answer = r.json()
    assert set(answer) == {"status", "balance", "currency", "transaction_id", "request_id"}
    assert answer["status"] == status
    assert answer["balance"] is None
    if http == 200:
        assert answer["request_id"] == fields["request_id"]
        assert answer["transaction_id"] == fields["transaction_id"]
    assert stack.end_offsets(TOPICS.requests) == before


# --- operator API ----------------------------------------------------------------------------


def test_session_opened(stack: Stack, operator: IngressClient) -> None:
    player = unique("pl")
    before = stack.end_offsets(TOPICS.events)
    r = operator.open_session(
        OP,
        {
            "player_id": player,
            "currency": "USD",
            "country": "FR",
            "game_id": "orbit-roulette",
            "mode": "demo",
            "language": "fr",
            "return_url": "https://casino.example/",
        },
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert {"session_token", "launch_url", "expires_at"} <= set(body)
    secret = stack.settings.session_secret.get_secret_value().encode()
    check = verify_token(secret, body["session_token"], time.time_ns() // 1_000_000)
    assert check.claims is not None and not check.expired
    claims = check.claims
    assert (claims.operator_id, claims.player_id, claims.currency, claims.country,
            claims.game_id, claims.provider_id, claims.mode) == (
        OP, player, "USD", "FR", "orbit-roulette", ORBIT, "demo")  # fmt: skip
    assert claims.expires_at_ms - claims.issued_at_ms == stack.settings.session_ttl_s * 1000
    expires = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert int(expires.timestamp() * 1000) == claims.expires_at_ms
    assert body["launch_url"].startswith(stack.base_url + "/v1/launch/")
    events = [
        (k, d)
        for k, d, name in stack.records_since(TOPICS.events, before)
        if name == "casino.agg.events.SessionOpened" and d["player_id"] == player
    ]
    assert len(events) == 1
    key, event = events[0]
    assert key == f"{OP}:{player}".encode()
    assert event["session_id"] == claims.session_id
    assert event["event_id"] == derive_id("ev", "SessionOpened", claims.session_id)
    assert (event["game_id"], event["provider_id"], event["mode"], event["country"]) == (
        "orbit-roulette", ORBIT, "demo", "FR")  # fmt: skip


# --- game launch -----------------------------------------------------------------------------


def _launch(operator: IngressClient, **session: Any) -> tuple[str, str]:
    """Open a session and return its launch URL and token."""
    r = operator.open_session(OP, session)
    assert r.status_code == 201, r.text
    return r.json()["launch_url"], r.json()["session_token"]


def test_launch_redirects_to_the_providers_game_in_its_protocols_names(
    stack: Stack, operator: IngressClient
) -> None:
    player = unique("pl")
    url, token = _launch(operator, player_id=player, currency="EUR", country="FR",
                         game_id=HUB_GAME, mode="demo", language="fr",
                         return_url="https://casino.example/lobby",
                         cashier_url="https://casino.example/cashier")  # fmt: skip
    r = httpx.get(url, follow_redirects=False)
    assert r.status_code == 302, r.text
    assert r.headers["cache-control"] == "no-store"
    location = httpx.URL(r.headers["location"])
    assert str(location).startswith("https://games.hub.example/launch?brand=agg&")
    assert dict(location.params) == {
        "brand": "agg", "token": token, "user": player, "game_code": HUB_GAME_CODE,
        "currency": "EUR", "lang": "fr", "country": "FR", "platform": "GPL_DESKTOP",
        "lobby_url": "https://casino.example/lobby",
        "deposit_url": "https://casino.example/cashier", "demo": "true",
    }  # fmt: skip


def test_launch_of_a_simulated_provider_is_answered_by_the_ingress(
    stack: Stack, operator: IngressClient
) -> None:
    player = unique("pl")
    url, token = _launch(operator, player_id=player, currency="USD", country="FR",
                         game_id="orbit-roulette", mode="real")  # fmt: skip
    r = httpx.get(url, headers={"accept": "application/json"}, follow_redirects=False)
    assert r.status_code == 200, r.text
    body = r.json()
    assert token not in r.text
    assert {k: body[k] for k in ("status", "provider_id", "protocol", "game_id", "operator_id",
                                 "player_id", "currency", "language", "mode")} == {
        "status": "OK", "provider_id": ORBIT, "protocol": "canonical-v1",
        "game_id": "orbit-roulette", "operator_id": OP, "player_id": player,
        "currency": "USD", "language": "en", "mode": "real",
    }  # fmt: skip
    assert body["provider_query"][0] == "token"
    page = httpx.get(url, follow_redirects=False)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Orbit Roulette" in page.text and player in page.text and token not in page.text


def test_launch_refusals(stack: Stack, operator: IngressClient) -> None:
    url, token = _launch(operator, player_id=unique("pl"), currency="EUR", country="FR",
                         game_id=HUB_GAME, mode="real")  # fmt: skip
    base = f"{stack.base_url}/v1/launch"
    json_accept = {"accept": "application/json"}
    secret = stack.settings.session_secret.get_secret_value().encode()
    claims = verify_token(secret, token, time.time_ns() // 1_000_000).claims
    assert claims is not None
    expired = issue_token(secret, replace(claims, expires_at_ms=claims.issued_at_ms + 1))
    cases = [
        (f"{base}/{HUB}/{HUB_GAME}?session_token={token[:-2]}xx", 404, "SESSION_NOT_FOUND"),
        (f"{base}/{HUB}/{HUB_GAME}", 404, "SESSION_NOT_FOUND"),
        (f"{base}/{HUB}/{HUB_GAME}?session_token={expired}", 410, "SESSION_EXPIRED"),
        (f"{base}/{ORBIT}/orbit-roulette?session_token={token}", 403, "GAME_NOT_ALLOWED"),
        (f"{base}/{HUB}/no-such-game?session_token={token}", 404, "UNKNOWN_GAME"),
        (f"{base}/{ORBIT}/{HUB_GAME}?session_token={token}", 404, "UNKNOWN_GAME"),
        (f"{url}&return_url=javascript:alert(1)", 400, "INVALID_REQUEST"),
        (f"{url}&language=not a tag", 400, "INVALID_REQUEST"),
    ]
    for case_url, http, status in cases:
        r = httpx.get(case_url, headers=json_accept, follow_redirects=False)
        assert (r.status_code, r.json()["status"]) == (http, status), case_url
    for case_url, http, _ in cases:  # the player's browser gets every refusal as a page
        page = httpx.get(case_url, follow_redirects=False)
        assert page.status_code == http, case_url
        assert page.headers["content-type"].startswith("text/html"), case_url


SESSION = {"player_id": "pl-1", "currency": "EUR", "country": "DE", "game_id": "nova-starfall",
           "mode": "real"}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "http", "status"),
    [
        ({"game_id": "no-such-game"}, 404, "UNKNOWN_GAME"),
        ({"game_id": "orbit-roulette"}, 403, "GAME_NOT_ALLOWED"),  # restricted in DE
        ({"country": "US"}, 403, "GAME_NOT_ALLOWED"),  # the operator blocks US
        ({"game_id": "dormant-slots"}, 403, "GAME_NOT_ALLOWED"),  # provider disabled
        ({"currency": "GBP"}, 422, "CURRENCY_NOT_SUPPORTED"),
        ({"country": "de"}, 400, "INVALID_REQUEST"),
        ({"mode": "free"}, 400, "INVALID_REQUEST"),
        ({"player_id": None}, 400, "INVALID_REQUEST"),
    ],
)
def test_session_refusals(
    stack: Stack, operator: IngressClient, change: dict[str, Any], http: int, status: str
) -> None:
    before = stack.end_offsets(TOPICS.events)
    r = operator.open_session(OP, {**SESSION, **change})
    assert r.status_code == http, r.text
    assert r.json()["status"] == status
    assert stack.end_offsets(TOPICS.events) == before


def test_game_of_another_operators_provider(stack: Stack) -> None:
    with IngressClient(stack.base_url, OP_B_SECRET) as beta:
        r = beta.open_session(OP_B, {**SESSION, "game_id": "orbit-blackjack"})
        assert r.status_code == 403 and r.json()["status"] == "GAME_NOT_ALLOWED"


def test_operator_cannot_use_another_operators_path(stack: Stack) -> None:
    with IngressClient(stack.base_url, OP_B_SECRET) as beta:
        r = beta.open_session(OP, SESSION)
        assert r.status_code == 401 and r.json()["status"] == "INVALID_SIGNATURE"
        r = beta.games(OP, "DE")
        assert r.status_code == 401
        r = beta.open_session("op-nobody", SESSION)
        assert r.status_code == 404 and r.json()["status"] == "UNKNOWN_OPERATOR"


@pytest.mark.parametrize(
    ("secret", "operator_id", "country", "expected"),
    [
        (OP_SECRET, OP, "DE", [("nova-starfall", NOVA), ("nova-gemrush", NOVA),
                               ("nova-megaways", NOVA), ("orbit-blackjack", ORBIT),
                               ("hub-baccarat", "prov-hub"), ("reels-fruitparty", "prov-reels"),
                               ("live-lightning", "prov-live"), (HUB_GAME, HUB)]),
        (OP_SECRET, OP, "GB", [("nova-starfall", NOVA), ("nova-megaways", NOVA),
                               ("orbit-roulette", ORBIT), ("orbit-blackjack", ORBIT),
                               ("hub-baccarat", "prov-hub"), ("reels-fruitparty", "prov-reels"),
                               ("live-lightning", "prov-live"), (HUB_GAME, HUB)]),
        (OP_SECRET, OP, "US", []),
        (OP_B_SECRET, OP_B, "GB", [("nova-starfall", NOVA), ("nova-megaways", NOVA)]),
        (OP_B_SECRET, OP_B, "US", [("nova-starfall", NOVA), ("nova-gemrush", NOVA),
                                   ("nova-megaways", NOVA)]),
    ],
)  # fmt: skip
def test_games_catalogue_by_country(
    stack: Stack, secret: str, operator_id: str, country: str, expected: list[tuple[str, str]]
) -> None:
    with IngressClient(stack.base_url, secret) as client:
        r = client.games(operator_id, country)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["operator_id"] == operator_id and body["country"] == country
    assert [(g["game_id"], g["provider_id"]) for g in body["games"]] == expected


def test_games_signature_covers_the_query(stack: Stack) -> None:
    ts = int(time.time())
    path = f"/v1/operators/{OP}/games?country=DE"
    headers = {"X-Agg-Timestamp": str(ts), "X-Agg-Signature": sign(OP_SECRET, ts, "GET", path, b"")}
    assert httpx.get(stack.base_url + path, headers=headers).status_code == 200
    tampered = f"/v1/operators/{OP}/games?country=US"
    assert httpx.get(stack.base_url + tampered, headers=headers).status_code == 401
    with IngressClient(stack.base_url, OP_SECRET) as client:
        r = client.send("GET", f"/v1/operators/{OP}/games")
    assert r.status_code == 400 and r.json()["status"] == "INVALID_REQUEST"


# --- health, metrics, latency ----------------------------------------------------------------


def test_healthz_and_metrics(stack: Stack) -> None:
    router = stack.ingress.router
    clients = {"librdkafka": RdReplyClients, "aiokafka": AioReplyClients}
    assert isinstance(router.clients, clients[stack.settings.kafka_client])
    r = httpx.get(stack.base_url + "/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "instance_id": stack.instance_id,
                        "reply_partition": router.reply_partition,
                        "producer_started": True}  # fmt: skip
    assert router.reply_partition == min(router.owned)
    r = httpx.get(stack.base_url + "/metrics")
    assert r.status_code == 200
    text = r.text
    for name in ("agg_ingress_callbacks_total", "agg_ingress_callback_seconds_bucket",
                 "agg_ingress_pending_waits", "agg_ingress_outcome_timeouts_total"):  # fmt: skip
        assert name in text, name
    gauges = {name: float(value) for name, value in
              (line.split(" ") for line in text.splitlines()
               if line.startswith(("agg_ingress_owned_outcome_partitions ",
                                   "agg_ingress_pending_waits ")))}  # fmt: skip
    assert gauges == {"agg_ingress_owned_outcome_partitions": len(router.owned),
                      "agg_ingress_pending_waits": 0}  # fmt: skip
    assert 'provider="unknown"' in text or "agg_ingress_callbacks_total{" in text


def test_latency_of_sequential_bets(
    stack: Stack, operator: IngressClient, nova: IngressClient
) -> None:
    player = unique("pl")
    token = open_session(operator, player)
    latencies_ms = []
    for _ in range(100):
        started = time.perf_counter()
        r = nova.callback(NOVA, "bet", bet(player, token))
        latencies_ms.append((time.perf_counter() - started) * 1000)
        assert r.status_code == 200
    latencies_ms.sort()
    p50, p99 = statistics.median(latencies_ms), latencies_ms[98]
    print(f"\n[ingress on {stack.settings.kafka_client}] bet round trip through Kafka + echo "
          f"saga: p50 {p50:.1f} ms, p99 {p99:.1f} ms")  # fmt: skip
    assert p50 < 250


def test_json_answers_have_the_contract_content_type(stack: Stack) -> None:
    r = raw_send(stack, "prov-nobody", "bet", b"{}")
    assert r.headers["content-type"].startswith("application/json")
    assert json.loads(r.content)["status"] == "UNKNOWN_PROVIDER"


# --- a provider of another protocol (hub88-v1) ---------------------------------------------


def _hub_post(stack: Stack, callback: Callback, *, key: rsa.RSAPrivateKey = HUB_KEY,
              body: bytes | None = None) -> httpx.Response:  # fmt: skip
    path, raw, headers = hub88.encode_request(callback, key)
    if body is not None:
        headers["X-Hub88-Signature"] = hub88.sign(key, body)
        raw = body
    url = f"{stack.base_url}/v1/providers/{HUB}/{path}"
    return httpx.post(url, content=raw, headers=headers, timeout=10)


def _hub_answer(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert hub88.verify(OUR_HUB_KEY.public_key(), response.content,
                        response.headers.get("x-hub88-signature"))  # fmt: skip
    return hub88.decode_answer(response.content)


def test_hub88_bet_win_and_rollback_go_through_the_one_core_path(
    stack: Stack, operator: IngressClient
) -> None:
    player = unique("hp")
    token = open_session(operator, player, game=HUB_GAME)
    assert stack.echo is not None
    before = stack.end_offsets(TOPICS.requests)
    bet_cb = Callback(Action.BET, unique("rq"), token, player, transaction_id=unique("tx"),
                      round_id=unique("rd"), game_id=HUB_GAME, amount=250,
                      currency="EUR")  # fmt: skip
    answer = _hub_answer(_hub_post(stack, bet_cb))
    assert answer["status"] == "RS_OK" and answer["user"] == player
    assert answer["request_uuid"] == bet_cb.request_id and answer["currency"] == "EUR"
    assert answer["balance"] == ECHO_BALANCE * 1_000 and answer["balance_minor"] == ECHO_BALANCE
    published = stack.echo.requests[-1][2]
    assert published["provider_id"] == HUB and published["action"] == "BET"
    assert published["amount"] == 250 and published["transaction_id"] == bet_cb.transaction_id
    assert published["operator_id"] == OP and published["player_id"] == player

    stack.echo.policies[bet_cb.transaction_id or ""] = Policy(status="INSUFFICIENT_FUNDS")
    again = replace(bet_cb, request_id=unique("rq"))
    assert _hub_answer(_hub_post(stack, again))["status"] == "RS_ERROR_NOT_ENOUGH_MONEY"

    rollback = Callback(Action.ROLLBACK, unique("rq"), token, player,
                        transaction_id=unique("rb"), reference_transaction_id=bet_cb.transaction_id,
                        round_id=bet_cb.round_id, game_id=HUB_GAME)  # fmt: skip
    assert _hub_answer(_hub_post(stack, rollback))["status"] == "RS_OK"
    assert stack.echo.requests[-1][2]["reference_transaction_id"] == bet_cb.transaction_id
    assert total(stack.end_offsets(TOPICS.requests)) == total(before) + 3


def test_hub88_refusals_are_its_own_and_publish_nothing(
    stack: Stack, operator: IngressClient
) -> None:
    player = unique("hp")
    token = open_session(operator, player, game=HUB_GAME)
    before = stack.end_offsets(TOPICS.requests)
    cb = Callback(Action.BET, unique("rq"), token, player, transaction_id=unique("tx"),
                  round_id=unique("rd"), game_id=HUB_GAME, amount=250, currency="EUR")  # fmt: skip
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = {
        "RS_ERROR_INVALID_SIGNATURE": _hub_post(stack, cb, key=stranger),
        "RS_ERROR_INVALID_TOKEN": _hub_post(stack, replace(cb, session_token="x.y")),
        "RS_ERROR_WRONG_CURRENCY": _hub_post(stack, replace(cb, currency="USD")),
        "RS_ERROR_INVALID_GAME": _hub_post(stack, replace(cb, game_id="nova-starfall")),
        "RS_ERROR_WRONG_SYNTAX": _hub_post(stack, cb, body=b'{"user": 1'),
    }
    for status, response in cases.items():
        answer = _hub_answer(response)
        assert answer["status"] == status, (status, answer)
    wrong_types = json.dumps({"user": player, "token": token, "request_uuid": unique("rq"),
                              "game_code": HUB_GAME, "transaction_uuid": unique("tx"),
                              "round": "r", "currency": "EUR", "amount": 1}).encode()  # fmt: skip
    assert _hub_answer(_hub_post(stack, cb, body=wrong_types))["status"] == "RS_ERROR_WRONG_TYPES"
    assert stack.end_offsets(TOPICS.requests) == before
    # a canonical provider's path on a hub88 provider is an unknown method, in hub88's format
    signed = {"X-Hub88-Signature": hub88.sign(HUB_KEY, b"{}")}
    response = httpx.post(f"{stack.base_url}/v1/providers/{HUB}/wallet/bet", content=b"{}",
                          headers=signed)  # fmt: skip
    assert _hub_answer(response)["status"] == "RS_ERROR_WRONG_SYNTAX"
