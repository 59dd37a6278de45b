"""An ``evolution-v1`` provider through the whole path on the real broker and database: the
ingress (served by uvicorn in-process), a saga worker and the reference Kafka wallet on
PostgreSQL, all on one event loop in a background thread. A provider speaks Evolution's
methods over HTTP (``check``, ``balance``, ``debit``, ``credit``, ``cancel`` with
``?authToken=``); the operator's wallet balance is read from its table after each answer.

The module runs on its own copy of the topic catalogue (``topic_prefix`` TOPIC_PREFIX), so its
saga worker never meets requests or wallet replies of other tests on the shared broker."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import replace
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
import uvicorn
import uvloop
import yaml
from aiokafka import TopicPartition

from agg_config.settings import Settings
from agg_config.tenants import Tenants, parse_tenants
from agg_domain.statuses import Action
from agg_ingress.adapters import evolution
from agg_ingress.app import build_app
from agg_ingress.client import IngressClient
from agg_ingress.protocol import Callback
from agg_ingress.sessions import SessionClaims, issue_token
from agg_kafka.admin import ensure_topics
from agg_kafka.clients import make_consumer
from agg_kafka.topics import TopicNames, catalogue
from agg_saga.worker import SagaWorker
from agg_wallet.service import WalletService

T = TypeVar("T")
OP, OP_SECRET = "op-alpha", "dev-secret-op-alpha-0001"
EVO, EVO_TOKEN = "prov-evo", "evo-auth-token-it-0001"
TABLE = "vctlz20yfnmp1ylr"
"""An Evolution table id, the tenants file's game id."""
STARTING_BALANCE = 100_000
TOPIC_PREFIX = "agg-evo-it"
TOPICS = TopicNames(TOPIC_PREFIX)


def evolution_tenants(settings: Settings) -> Tenants:
    data = yaml.safe_load(settings.tenants_file.read_text())
    data["providers"].append({"id": EVO, "name": "Evolution", "protocol": "evolution-v1",
                              "secret": {"value": EVO_TOKEN}})  # fmt: skip
    data["games"].append({"id": TABLE, "provider": EVO, "name": "Evolution Roulette"})
    data["operators"][0]["providers"].append(EVO)
    tenants = parse_tenants(data)
    operator = tenants.operator(OP)
    assert operator is not None and operator.wallet.starting_balance == STARTING_BALANCE
    return tenants


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stack:
    """Ingress, saga worker and reference wallet on one event loop in a background thread."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.tenants = evolution_tenants(settings)
        self.app = build_app(settings, self.tenants, f"ingress-evo-{uuid.uuid4().hex[:8]}")
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.stop_event: asyncio.Event | None = None
        self.tasks: list[concurrent.futures.Future[None]] = []
        self.server: uvicorn.Server | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def start(self) -> None:
        self.thread.start()

        async def services() -> tuple[SagaWorker, WalletService]:
            # the Kafka clients belong to the running loop: build the services inside it
            self.stop_event = asyncio.Event()
            saga = SagaWorker(self.settings, [OP], client_id="saga-evo-it")
            wallet = WalletService(self.settings, self.tenants, [OP], client_id="wallet-evo-it")
            return saga, wallet

        saga, wallet = self.run(services())
        assert self.stop_event is not None
        for service in (saga, wallet):
            self.tasks.append(asyncio.run_coroutine_threadsafe(
                service.run(self.stop_event), self.loop))  # fmt: skip
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, loop="none", http="httptools",
            lifespan="on", log_level="warning", access_log=False,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.tasks.append(asyncio.run_coroutine_threadsafe(self.server.serve(), self.loop))
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for task in self.tasks:
                if task.done():
                    task.result()  # a service that stopped early says why
            with contextlib.suppress(httpx.HTTPError):
                healthy = httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200
                if healthy and saga.ready.is_set() and wallet.ready():
                    return
            time.sleep(0.1)
        raise AssertionError("the ingress, the saga worker or the wallet did not become ready")

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        for task in self.tasks:
            task.result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def requests_published(self) -> int:
        """How many requests the ingress has published (the end offsets of agg.requests)."""

        async def read() -> int:
            consumer = make_consumer(self.settings, group_id=None, client_id="offsets")
            await consumer.start()
            try:
                tps = [TopicPartition(TOPICS.requests, p)
                       for p in range(self.settings.partition_count)]  # fmt: skip
                return sum((await consumer.end_offsets(tps)).values())
            finally:
                await consumer.stop()

        return self.run(read())

    def wallet_balance(self, player: str) -> int | None:
        with psycopg.connect(self.settings.database_url) as conn:
            row = conn.execute(
                "select balance from wallet.players where operator_id = %s and player_id = %s",
                (OP, player),
            ).fetchone()
        return None if row is None else int(row[0])


@pytest.fixture(scope="module")
def stack(settings: Settings) -> Iterator[Stack]:
    test_settings = Settings(
        kafka_bootstrap=settings.kafka_bootstrap,
        database_url=settings.database_url,
        session_secret=settings.session_secret,
        topic_prefix=TOPIC_PREFIX,
    )
    specs = catalogue(
        [o.id for o in evolution_tenants(test_settings).operators],
        partitions=test_settings.partition_count,
        replication_factor=test_settings.replication_factor,
        min_insync_replicas=test_settings.min_insync_replicas,
        prefix=TOPIC_PREFIX,
    )
    report = asyncio.run(ensure_topics(test_settings.kafka_bootstrap, specs))
    assert report.ok, report.lines()
    s = Stack(test_settings)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Provider:
    """An Evolution-shaped provider: one player's session, its calls and their answers."""

    def __init__(self, stack: Stack, player: str, sid: str):
        self.stack, self.player, self.sid = stack, player, sid

    def post(self, callback: Callback, *, token: str = EVO_TOKEN,
             body: bytes | None = None) -> tuple[int, dict[str, Any]]:  # fmt: skip
        path, raw, headers = evolution.encode_request(callback, token)
        url = f"{self.stack.base_url}/v1/providers/{EVO}/{path}"
        response = httpx.post(url, content=raw if body is None else body, headers=headers,
                              timeout=15)  # fmt: skip
        assert response.headers["content-type"].startswith("application/json")
        return response.status_code, evolution.decode_answer(response.content, "EUR")

    def call(self, action: Action, ref: str | None = None, amount: int | None = None,
             **changes: Any) -> Callback:  # fmt: skip
        """The canonical callback of one Evolution call (the adapter's own ids for the bet
        ``ref``), for :func:`evolution.encode_request`."""
        cb = Callback(action, unique("uuid"), self.sid, self.player, currency="EUR")
        if action in (Action.BALANCE, Action.BET, Action.WIN, Action.ROLLBACK):
            cb = replace(cb, game_id=TABLE)
        if ref is not None:
            suffix = {Action.WIN: evolution.CREDIT_SUFFIX,
                      Action.ROLLBACK: evolution.CANCEL_SUFFIX}.get(action)  # fmt: skip
            # Evolution's game round: one per bet here (its credit closes it)
            cb = replace(cb, transaction_id=ref + (suffix or ""), round_id=f"round-{ref}",
                         reference_transaction_id=ref if suffix else None, amount=amount,
                         round_closed=action is Action.WIN)  # fmt: skip
        return replace(cb, **changes)

    def answer(self, action: Action, ref: str | None = None, amount: int | None = None,
               **changes: Any) -> tuple[str, int | None]:  # fmt: skip
        """Status and balance (minor units) of one call answered HTTP 200."""
        http, answer = self.post(self.call(action, ref, amount, **changes))
        assert http == 200, answer
        return answer["status"], answer.get("balance_minor")


def open_session(stack: Stack) -> Provider:
    player = unique("evo")
    with IngressClient(stack.base_url, OP_SECRET) as client:
        r = client.open_session(OP, {"player_id": player, "currency": "EUR", "country": "MT",
                                     "game_id": TABLE, "mode": "real"})  # fmt: skip
    assert r.status_code == 201, r.text
    return Provider(stack, player, r.json()["session_token"])


# --- the happy path --------------------------------------------------------------------------


def test_check_balance_debit_credit_and_cancel_move_the_operators_wallet(stack: Stack) -> None:
    evo = open_session(stack)
    http, check = evo.post(evo.call(Action.AUTHENTICATE))
    assert http == 200 and check["status"] == "OK" and check["sid"] == evo.sid
    assert evo.answer(Action.BALANCE) == ("OK", STARTING_BALANCE)

    won, lost, cancelled = unique("ref"), unique("ref"), unique("ref")
    assert evo.answer(Action.BET, won, 250) == ("OK", STARTING_BALANCE - 250)
    assert evo.answer(Action.WIN, won, 1_000) == ("OK", STARTING_BALANCE + 750)
    assert evo.answer(Action.BET, lost, 100) == ("OK", STARTING_BALANCE + 650)
    assert evo.answer(Action.WIN, lost, 0) == ("OK", STARTING_BALANCE + 650)  # a lost bet
    assert evo.answer(Action.BET, cancelled, 300) == ("OK", STARTING_BALANCE + 350)
    assert evo.answer(Action.ROLLBACK, cancelled, 300) == ("OK", STARTING_BALANCE + 650)
    assert stack.wallet_balance(evo.player) == STARTING_BALANCE + 650
    assert evo.answer(Action.BALANCE) == ("OK", STARTING_BALANCE + 650)


def test_repeats_are_answered_once_and_conflicts_refused(stack: Stack) -> None:
    evo = open_session(stack)
    ref = unique("ref")
    assert evo.answer(Action.BET, ref, 500) == ("OK", STARTING_BALANCE - 500)
    # the provider's retry of the debit (a new uuid) is the same bet, debited once
    assert evo.answer(Action.BET, ref, 500) == ("OK", STARTING_BALANCE - 500)
    assert evo.answer(Action.BET, ref, 700)[0] == "BET_ALREADY_EXIST"
    assert stack.wallet_balance(evo.player) == STARTING_BALANCE - 500

    # a second credit of the bet, with a transaction id of its own, pays nothing more
    credit = evo.call(Action.WIN, ref, 2_000)
    path, body, headers = evolution.encode_request(credit, EVO_TOKEN, wire_transaction_id="C1")
    again = evolution.encode_request(replace(credit, request_id=unique("uuid")), EVO_TOKEN,
                                     wire_transaction_id="C2")  # fmt: skip
    assert json.loads(body)["transaction"]["id"] != json.loads(again[1])["transaction"]["id"]
    for raw in (body, again[1]):
        response = httpx.post(f"{stack.base_url}/v1/providers/{EVO}/{path}", content=raw,
                              headers=headers, timeout=15)  # fmt: skip
        answer = evolution.decode_answer(response.content, "EUR")
        assert (response.status_code, answer["status"], answer["balance_minor"]) == (
            200, "OK", STARTING_BALANCE + 1_500)  # fmt: skip
    assert evo.answer(Action.WIN, ref, 3_000)[0] == "BET_ALREADY_SETTLED"
    assert stack.wallet_balance(evo.player) == STARTING_BALANCE + 1_500

    # a repeated cancel refunds once
    other = unique("ref")
    assert evo.answer(Action.BET, other, 100) == ("OK", STARTING_BALANCE + 1_400)
    assert evo.answer(Action.ROLLBACK, other, 100) == ("OK", STARTING_BALANCE + 1_500)
    assert evo.answer(Action.ROLLBACK, other, 100) == ("OK", STARTING_BALANCE + 1_500)
    assert stack.wallet_balance(evo.player) == STARTING_BALANCE + 1_500


def test_a_cancel_of_a_bet_never_seen_is_recorded_and_the_late_bet_refused(stack: Stack) -> None:
    evo = open_session(stack)
    ref = unique("ref")
    status, _ = evo.answer(Action.ROLLBACK, ref, 400)
    assert status == "OK"  # the saga records it (a tombstone): nothing to refund
    assert evo.answer(Action.BET, ref, 400)[0] == "FINAL_ERROR_ACTION_FAILED"
    assert stack.wallet_balance(evo.player) is None  # no money moved, nothing reached it


def test_insufficient_funds_leaves_the_balance(stack: Stack) -> None:
    evo = open_session(stack)
    assert evo.answer(Action.BET, unique("ref"), 100)[0] == "OK"
    status, _ = evo.answer(Action.BET, unique("ref"), STARTING_BALANCE)
    assert status == "INSUFFICIENT_FUNDS"
    assert stack.wallet_balance(evo.player) == STARTING_BALANCE - 100


# --- refusals --------------------------------------------------------------------------------


def test_refusals_are_the_protocols_own_and_publish_nothing(stack: Stack) -> None:
    evo = open_session(stack)
    bet = evo.call(Action.BET, unique("ref"), 250)
    _, valid, _ = evolution.encode_request(bet, EVO_TOKEN)
    inexact = valid.replace(b'"amount":2.50', b'"amount":2.505')
    crypto = valid.replace(b'"currency":"EUR"', b'"currency":"BTC"')
    assert inexact != valid and crypto != valid
    before = stack.requests_published()
    cases: list[tuple[tuple[int, dict[str, Any]], int, str]] = [
        (evo.post(bet, token="not-the-token"), 401, "INVALID_TOKEN_ID"),
        (evo.post(bet, body=b'{"sid": 1'), 200, "INVALID_PARAMETER"),
        (evo.post(bet, body=inexact), 200, "INVALID_PARAMETER"),
        (evo.post(bet, body=crypto), 200, "INVALID_PARAMETER"),
        (evo.post(replace(bet, session_token="x.y")), 200, "INVALID_SID"),
        (evo.post(replace(bet, currency="USD")), 200, "INVALID_PARAMETER"),
        (evo.post(replace(bet, game_id="nova-starfall")), 200, "FINAL_ERROR_ACTION_FAILED"),
    ]
    for (http, answer), expected_http, status in cases:
        assert (http, answer["status"]) == (expected_http, status), answer
        if expected_http == 401 or answer.get("uuid") is not None:
            assert answer["uuid"] in (bet.request_id, None)
    # sid is not served; promo_payout is, and a debit's body is no promotional payout
    for method, http in (("sid", 404), ("promo_payout", 200)):
        response = httpx.post(f"{stack.base_url}/v1/providers/{EVO}/{method}",
                              params={"authToken": EVO_TOKEN}, content=valid)  # fmt: skip
        assert response.status_code == http
        assert response.json()["status"] == "INVALID_PARAMETER"
    assert stack.requests_published() == before
    assert stack.wallet_balance(evo.player) is None  # nothing reached the wallet


# --- an expired session still settles -------------------------------------------------------


def test_after_the_session_expired_play_is_refused_and_settlements_accepted(stack: Stack) -> None:
    evo = open_session(stack)
    ref = unique("ref")
    assert evo.answer(Action.BET, ref, 300) == ("OK", STARTING_BALANCE - 300)
    now_ms = time.time_ns() // 1_000_000
    claims = SessionClaims(unique("ses"), OP, evo.player, "EUR", "MT", TABLE, EVO, "real",
                           now_ms - 3_600_000, now_ms - 1)  # fmt: skip
    secret = stack.settings.session_secret.get_secret_value().encode()
    expired = Provider(stack, evo.player, issue_token(secret, claims))
    assert expired.answer(Action.BET, unique("ref"), 100)[0] == "INVALID_SID"
    assert expired.answer(Action.BALANCE)[0] == "INVALID_SID"
    assert expired.post(expired.call(Action.AUTHENTICATE))[1]["status"] == "INVALID_SID"
    # what the player is owed settles: the bet's credit
    assert expired.answer(Action.WIN, ref, 900) == ("OK", STARTING_BALANCE + 600)
    assert stack.wallet_balance(evo.player) == STARTING_BALANCE + 600
