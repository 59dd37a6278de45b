"""The benchmark's direct baseline (``bench.direct``) as real processes on the test PostgreSQL:
an HTTP seamless wallet on the reference wallet's ledger and the synchronous aggregator in
front of it, driven over the canonical provider protocol v1. Sessions are minted in-process
with the ingress's own token function and secret, so no Kafka is involved."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from agg_config.paths import repo_root
from agg_config.settings import Settings
from agg_config.tenants import load_tenants
from agg_devstack.process import free_port
from agg_devstack.services import ServiceProcess
from agg_ingress.client import encode_body, signed_headers
from agg_ingress.sessions import SessionClaims, issue_token, new_session_id

OPERATOR, PROVIDER, GAME = "op-alpha", "prov-nova", "nova-starfall"
STARTING_BALANCE = 100_000


class Direct:
    """The wallet and aggregator processes, and a provider's signed calls to the aggregator."""

    def __init__(self, settings: Settings, root: Path, wallet_url: str | None = None):
        """With ``wallet_url``, only the aggregator runs, in front of that address."""
        self.settings = settings
        wallet_port, port = free_port(), free_port()
        self.env = {
            "PYTHONPATH": str(repo_root()),
            "AGG_DATABASE_URL": settings.database_url,
            "AGG_SESSION_SECRET": settings.session_secret.get_secret_value(),
        }
        self.wallet = None if wallet_url is not None else ServiceProcess(
            "direct-wallet", root, "bench.direct", ["wallet", "--port", str(wallet_port)],
            ready_url=f"http://127.0.0.1:{wallet_port}/healthz",
        )  # fmt: skip
        self.aggregator = ServiceProcess(
            "direct-aggregator", root, "bench.direct",
            ["aggregator", "--port", str(port),
             "--wallet-url", wallet_url or f"http://127.0.0.1:{wallet_port}"],
            ready_url=f"http://127.0.0.1:{port}/healthz",
        )  # fmt: skip
        provider = load_tenants(settings.tenants_file).provider(PROVIDER)
        assert provider is not None
        self.provider_secret = provider.shared_secret()
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def start(self) -> None:
        if self.wallet is not None:
            self.wallet.start(self.env, 60)
        self.aggregator.start(self.env, 60)

    def stop(self) -> None:
        self.http.close()
        self.aggregator.stop()
        if self.wallet is not None:
            self.wallet.stop()

    def new_player(self) -> tuple[str, str]:
        """A player of our own and a session token as the ingress would issue it."""
        player = f"direct-{uuid.uuid4().hex[:12]}"
        now_ms = time.time_ns() // 1_000_000
        claims = SessionClaims(
            session_id=new_session_id(OPERATOR, player, GAME, now_ms, uuid.uuid4().hex),
            operator_id=OPERATOR, player_id=player, currency="EUR", country="MT", game_id=GAME,
            provider_id=PROVIDER, mode="real", issued_at_ms=now_ms,
            expires_at_ms=now_ms + self.settings.session_ttl_s * 1000,
        )  # fmt: skip
        return player, issue_token(self.settings.session_secret.get_secret_value().encode(), claims)

    def call(
        self, action: str, player: str, token: str, secret: bytes | None = None, **fields: Any
    ) -> httpx.Response:
        body = encode_body({
            "request_id": fields.pop("request_id", uuid.uuid4().hex), "session_token": token,
            "player_id": player, "currency": "EUR", "game_id": GAME, **fields,
        })  # fmt: skip
        path = f"/v1/providers/{PROVIDER}/wallet/{action}"
        headers = signed_headers(secret or self.provider_secret, "POST", path, body)
        return self.http.post(path, content=body, headers=headers)

    def bet(self, player: str, token: str, txn: str, amount: int, **kw: Any) -> httpx.Response:
        return self.call("bet", player, token, transaction_id=txn, round_id="r1", amount=amount,
                         **kw)  # fmt: skip

    def ledger(self, player: str) -> tuple[int | None, int]:
        """The player's balance (None if the wallet never saw them) and ledger row count."""
        with psycopg.connect(self.settings.database_url) as conn:
            balance = conn.execute(
                "SELECT balance FROM wallet.players WHERE operator_id = %s AND player_id = %s",
                (OPERATOR, player),
            ).fetchone()
            rows = conn.execute(
                "SELECT count(*) FROM wallet.commands WHERE operator_id = %s AND player_id = %s",
                (OPERATOR, player),
            ).fetchone()
        assert rows is not None
        return (None if balance is None else int(balance[0])), int(rows[0])


@pytest.fixture(scope="module")
def direct(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Direct]:
    system = Direct(settings, tmp_path_factory.mktemp("direct"))
    try:
        system.start()
        yield system
    finally:
        system.stop()


def txn_id() -> str:
    return f"tx-{uuid.uuid4().hex[:16]}"


def test_bet_is_debited_once_and_a_duplicate_gets_the_identical_answer(direct: Direct) -> None:
    player, token = direct.new_player()
    txn = txn_id()
    first = direct.bet(player, token, txn, 250, request_id="req-1")
    assert first.status_code == 200
    assert first.json() == {"status": "OK", "balance": STARTING_BALANCE - 250, "currency": "EUR",
                            "transaction_id": txn, "request_id": "req-1"}  # fmt: skip
    again = direct.bet(player, token, txn, 250, request_id="req-1")
    assert (again.status_code, again.content) == (200, first.content)
    retried = direct.bet(player, token, txn, 250, request_id="req-2")
    assert retried.json() == {**first.json(), "request_id": "req-2"}
    assert direct.ledger(player) == (STARTING_BALANCE - 250, 1)


def test_reused_transaction_id_with_other_content_is_a_conflict(direct: Direct) -> None:
    player, token = direct.new_player()
    txn = txn_id()
    assert direct.bet(player, token, txn, 100).json()["status"] == "OK"
    conflict = direct.bet(player, token, txn, 999)
    assert conflict.status_code == 409
    assert conflict.json()["status"] == "DUPLICATE_CONFLICT"
    assert direct.ledger(player) == (STARTING_BALANCE - 100, 1)


def test_win_is_credited(direct: Direct) -> None:
    player, token = direct.new_player()
    assert direct.bet(player, token, txn_id(), 100).json()["balance"] == STARTING_BALANCE - 100
    win = direct.call("win", player, token, transaction_id=txn_id(), round_id="r1", amount=300,
                      round_closed=True)  # fmt: skip
    assert win.status_code == 200
    assert win.json()["status"] == "OK"
    assert win.json()["balance"] == STARTING_BALANCE + 200
    assert direct.ledger(player) == (STARTING_BALANCE + 200, 2)


def test_rollback_refunds_the_bet_once(direct: Direct) -> None:
    player, token = direct.new_player()
    bet = txn_id()
    direct.bet(player, token, bet, 400)
    rollback = direct.call("rollback", player, token, transaction_id=txn_id(),
                           reference_transaction_id=bet)  # fmt: skip
    assert rollback.status_code == 200
    assert rollback.json()["status"] == "OK"
    assert rollback.json()["balance"] == STARTING_BALANCE
    second = direct.call("rollback", player, token, transaction_id=txn_id(),
                         reference_transaction_id=bet)  # fmt: skip
    assert second.json()["status"] == "OK"
    retried_bet = direct.bet(player, token, bet, 400)  # an exact duplicate: the original answer
    assert retried_bet.json()["status"] == "OK"
    assert retried_bet.json()["balance"] == STARTING_BALANCE - 400
    assert direct.ledger(player) == (STARTING_BALANCE, 2)  # the debit and one cancel


def test_rollback_of_an_unknown_bet_is_ok_and_refuses_that_bet_later(direct: Direct) -> None:
    player, token = direct.new_player()
    bet = txn_id()
    rollback = direct.call("rollback", player, token, transaction_id=txn_id(),
                           reference_transaction_id=bet)  # fmt: skip
    assert (rollback.status_code, rollback.json()["status"]) == (200, "OK")
    late = direct.bet(player, token, bet, 100)
    assert (late.status_code, late.json()["status"]) == (200, "BET_ROLLED_BACK")
    assert direct.ledger(player) == (STARTING_BALANCE, 2)  # tombstone and refused debit


def test_insufficient_funds_moves_nothing(direct: Direct) -> None:
    player, token = direct.new_player()
    refused = direct.bet(player, token, txn_id(), STARTING_BALANCE + 1)
    assert refused.status_code == 200
    assert refused.json()["status"] == "INSUFFICIENT_FUNDS"
    assert refused.json()["balance"] == STARTING_BALANCE
    assert direct.ledger(player) == (STARTING_BALANCE, 1)


def test_bad_signature_is_refused_and_writes_nothing(direct: Direct) -> None:
    player, token = direct.new_player()
    refused = direct.bet(player, token, txn_id(), 100, secret=b"not-the-provider-secret-0")
    assert refused.status_code == 401
    assert refused.json()["status"] == "INVALID_SIGNATURE"
    assert direct.ledger(player) == (None, 0)


def test_session_of_another_player_is_not_found(direct: Direct) -> None:
    _, token = direct.new_player()
    player, _ = direct.new_player()
    answer = direct.bet(player, token, txn_id(), 100)
    assert (answer.status_code, answer.json()["status"]) == (200, "SESSION_NOT_FOUND")
    assert direct.ledger(player) == (None, 0)


def test_wallet_that_does_not_answer_is_retry_later(settings: Settings, tmp_path: Path) -> None:
    system = Direct(settings, tmp_path, wallet_url=f"http://127.0.0.1:{free_port()}")
    try:
        system.start()
        player, token = system.new_player()
        answer = system.bet(player, token, txn_id(), 100)
        assert (answer.status_code, answer.json()["status"]) == (503, "RETRY_LATER")
        assert system.ledger(player) == (None, 0)
    finally:
        system.stop()
