"""A transfer-wallet operator end to end (the dev tenants' op-delta, ``wallet.mode:
transfer``): the reference operator moves funds in through the operator API, the player plays
against the balance the aggregator holds (no wallet command leaves), the funds go back out,
the journal and the projections hold every move, and reconciliation matches the transfers
with the operator's own record, per day, and finds a tampered one."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from agg_config.settings import Settings
from agg_config.tenants import load_tenants
from agg_projector.reconcile import HELD_BALANCES, TRANSFERS_VS_OPERATOR, WALLET_MISMATCHES
from agg_wallet.store import WalletStore
from agg_wallet.transfers import ReferenceTransfers, TransferResult
from tests.e2e.conftest import GAME, Pipeline
from tests.e2e.test_pipeline import answer, eventually

OPERATOR = "op-delta"
OPENING = 100_000
"""What the reference operator gives a player it has not seen (op-delta's starting_balance)."""


@pytest.fixture(scope="module")
def pipeline(
    settings: Settings, catalogue_topics: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    p = Pipeline(settings, tmp_path_factory.mktemp("pipeline"), projector_client="librdkafka")
    try:
        p.start()
        yield p
    finally:
        p.stop()


class Delta:
    """op-delta's side: its reference operator, its sessions, its raw transfer calls."""

    def __init__(self, pipeline: Pipeline):
        tenants = load_tenants(pipeline.settings.tenants_file)
        operator = tenants.operator(OPERATOR)
        assert operator is not None and operator.wallet.mode == "transfer"
        self.operator = operator
        self.secret = operator.secret.reveal()
        self.pipeline = pipeline

    def move(self, direction: str, player: str, amount: int | None,
             transfer_id: str | None = None) -> TransferResult:  # fmt: skip
        """One transfer through the reference operator (its ledger and the operator API)."""

        async def go() -> TransferResult:
            conn = await psycopg.AsyncConnection.connect(self.pipeline.settings.database_url,
                                                         autocommit=True)  # fmt: skip
            base = f"http://127.0.0.1:{self.pipeline.ingress_port}"
            try:
                async with httpx.AsyncClient(base_url=base, timeout=15) as http:
                    await WalletStore(conn).ensure_schema()
                    ref = ReferenceTransfers(conn, http, self.operator)
                    tid = transfer_id or f"tr-{uuid.uuid4().hex[:12]}"
                    if direction == "deposit":
                        assert amount is not None
                        return await ref.deposit(player, "EUR", amount, tid)
                    return await ref.withdraw(player, "EUR", amount, tid)
            finally:
                await conn.close()

        return asyncio.run(go())

    def transfer(self, player: str, secret: bytes | None = None, operator: str = OPERATOR,
                 **fields: Any) -> httpx.Response:  # fmt: skip
        return self.pipeline._post(secret or self.secret,
                                   f"/v1/operators/{operator}/players/{player}/transfers",
                                   fields)  # fmt: skip

    def session(self, player: str) -> str:
        response = self.pipeline._post(
            self.secret, f"/v1/operators/{OPERATOR}/sessions",
            {"player_id": player, "currency": "EUR", "country": "MT", "game_id": GAME,
             "mode": "real"},
        )  # fmt: skip
        assert response.status_code == 201, response.text
        return str(response.json()["session_token"])

    def operator_balance(self, player: str) -> int | None:
        with psycopg.connect(self.pipeline.settings.database_url) as conn:
            row = conn.execute(
                "select balance from wallet.players where operator_id = %s and player_id = %s",
                (OPERATOR, player),
            ).fetchone()
        return None if row is None else int(row[0])

    def rows(self, query: str, player: str | None = None) -> list[tuple[Any, ...]]:
        """A reconciliation query's rows (of ``player`` where the rows name players)."""
        with psycopg.connect(self.pipeline.settings.database_url) as conn:
            found = conn.execute(
                sql.SQL(query).format(s=sql.Identifier("projection"), w=sql.Identifier("wallet")),
                {"in_flight": timedelta(0)},
            ).fetchall()
        if player is None:
            return [r for r in found if r[0] == OPERATOR]
        return [r for r in found if r[0] == OPERATOR and r[1] == player]


@pytest.fixture(scope="module")
def delta(pipeline: Pipeline) -> Delta:
    return Delta(pipeline)


def bet(pipeline: Pipeline, player: str, token: str, txn: str, amount: int,
        **kw: Any) -> httpx.Response:  # fmt: skip
    return pipeline.bet(player, token, txn, amount, **kw)


def test_transfer_in_play_transfer_out_and_reconcile(pipeline: Pipeline, delta: Delta) -> None:
    player = f"e2e-{uuid.uuid4().hex[:10]}"
    deposit = delta.move("deposit", player, 10_000)
    assert (deposit.status, deposit.amount, deposit.held_balance) == ("OK", 10_000, 10_000)
    assert delta.operator_balance(player) == OPENING - 10_000  # debited at the operator

    token = delta.session(player)
    assert answer(bet(pipeline, player, token, "b1", 300)) == (200, "OK", 9_700)
    assert answer(pipeline.win(player, token, "w1", 500, round_closed=True)) == (
        200, "OK", 10_200)  # fmt: skip
    assert answer(bet(pipeline, player, token, "b2", 50_000, round_id="rnd-2")) == (
        200, "INSUFFICIENT_FUNDS", 10_200)  # fmt: skip
    assert answer(bet(pipeline, player, token, "b3", 100, round_id="rnd-3")) == (
        200, "OK", 10_100)  # fmt: skip
    assert answer(pipeline.rollback(player, token, "rb3", "b3"))[1] == "OK"
    body = pipeline.callback("balance", player, token).json()
    assert (body["status"], body["balance"]) == ("OK", 10_200)
    # an exact repeat of a bet: the original answer, nothing moves again
    assert answer(bet(pipeline, player, token, "b1", 300)) == (200, "OK", 9_700)

    # more than the held balance cannot leave; a repeat of the deposit moves nothing
    too_much = delta.transfer(player, transfer_id="wd-big", direction="withdraw",
                              amount=20_000, currency="EUR")  # fmt: skip
    assert too_much.status_code == 422, too_much.text
    assert too_much.json()["status"] == "INSUFFICIENT_FUNDS"
    again = delta.move("deposit", player, 10_000, transfer_id=deposit.transfer_id)
    assert (again.status, again.amount) == ("OK", 10_000)
    assert delta.operator_balance(player) == OPENING - 10_000

    out = delta.move("withdraw", player, None)  # everything that is left
    assert (out.status, out.amount, out.held_balance) == ("OK", 10_200, 0)
    assert delta.operator_balance(player) == OPENING - 10_000 + 10_200

    # no wallet command ever left for op-delta: the reference wallet's ledger has none
    with psycopg.connect(pipeline.settings.database_url) as conn:
        assert conn.execute("select count(*) from wallet.commands where operator_id = %s",
                            (OPERATOR,)).fetchone() == (0,)  # fmt: skip

    # the projections: the held balance, and the transfers beside the play in the ledger
    base = f"/v1/operators/{OPERATOR}/players/{player}"

    def projected() -> dict[str, Any] | None:
        response = pipeline.read(f"{base}/transactions?limit=100", secret=delta.secret)
        if response.status_code != 200:
            return None
        kinds = sorted((t["kind"], t["status"]) for t in response.json()["transactions"])
        balance = pipeline.read(f"{base}/balance", secret=delta.secret).json()
        return {"kinds": kinds, "balances": balance.get("balances")}

    expected_kinds = sorted([
        ("DEPOSIT", "TRANSFERRED"), ("WITHDRAW", "TRANSFERRED"),
        ("WITHDRAW", "REJECTED:INSUFFICIENT_FUNDS"), ("BET", "ACCEPTED"), ("WIN", "CREDITED"),
        ("BET", "REJECTED:INSUFFICIENT_FUNDS"), ("BET", "ROLLED_BACK"), ("ROLLBACK", "REFUNDED"),
    ])  # fmt: skip
    eventually(lambda: (projected() or {}).get("kinds") == expected_kinds, 30)
    balances = (projected() or {})["balances"]
    assert [(b["currency"], int(b["balance"])) for b in balances] == [("EUR", 0)]

    # reconciliation: the held balance folds from the journal, every transfer matches the
    # operator's record, the operator's wallet matches its ledger and the journal
    assert delta.rows(HELD_BALANCES, player) == []
    assert delta.rows(WALLET_MISMATCHES, player) == []
    assert delta.rows(TRANSFERS_VS_OPERATOR) == []

    # a transfer the operator recorded otherwise than the journal is found, for its day
    with psycopg.connect(pipeline.settings.database_url, autocommit=True) as conn:
        conn.execute("update wallet.transfers set amount = amount + 1, delta = delta + 1"
                     " where operator_id = %s"
                     " and transfer_id = %s", (OPERATOR, out.transfer_id))  # fmt: skip
        try:
            [found] = delta.rows(TRANSFERS_VS_OPERATOR)
            assert found[3] == "OUT" and found[4] + 1 == found[5] and found[6] == 1
        finally:
            conn.execute("update wallet.transfers set amount = amount - 1, delta = delta - 1"
                         " where operator_id = %s"
                         " and transfer_id = %s", (OPERATOR, out.transfer_id))  # fmt: skip


def test_transfer_refusals(pipeline: Pipeline, delta: Delta) -> None:
    player = f"e2e-{uuid.uuid4().hex[:10]}"
    ok = delta.transfer(player, transfer_id="d1", direction="deposit", amount=500,
                        currency="EUR")  # fmt: skip
    assert ok.status_code == 200, ok.text
    assert {k: ok.json()[k] for k in ("transfer_id", "direction", "amount", "balance")} == {
        "transfer_id": "d1", "direction": "deposit", "amount": 500, "balance": 500}  # fmt: skip
    # the same id with other content: a conflict, nothing moves
    conflict = delta.transfer(player, transfer_id="d1", direction="deposit", amount=501,
                              currency="EUR")  # fmt: skip
    assert (conflict.status_code, conflict.json()["status"]) == (409, "DUPLICATE_CONFLICT")
    for bad, why in [
        ({"transfer_id": "d2", "direction": "deposit", "currency": "EUR"}, "amount"),
        ({"transfer_id": "d2", "direction": "sideways", "amount": 5, "currency": "EUR"},
         "direction"),
        ({"transfer_id": "d2", "direction": "deposit", "amount": 0, "currency": "EUR"},
         "amount"),
        ({"transfer_id": "d2", "direction": "deposit", "amount": 5.5, "currency": "EUR"},
         "amount"),
        ({"transfer_id": "d 2", "direction": "deposit", "amount": 5, "currency": "EUR"},
         "transfer_id"),
        ({"transfer_id": "d2", "direction": "deposit", "amount": 5, "currency": "EUR",
          "note": "x"}, "note"),
    ]:  # fmt: skip
        refused = delta.transfer(player, **bad)
        assert refused.status_code == 400, (bad, refused.text)
        assert refused.json()["status"] == "INVALID_REQUEST" and why in refused.json()["detail"]
    unsupported = delta.transfer(player, transfer_id="d3", direction="deposit", amount=5,
                                 currency="GBP")  # fmt: skip
    assert (unsupported.status_code, unsupported.json()["status"]) == (
        422, "CURRENCY_NOT_SUPPORTED")  # fmt: skip
    # a seamless operator has no transfer wallet; another operator's secret is refused
    seamless = delta.transfer(player, secret=pipeline.operator_secret, operator="op-alpha",
                              transfer_id="d4", direction="deposit", amount=5,
                              currency="EUR")  # fmt: skip
    assert (seamless.status_code, seamless.json()["status"]) == (409, "NOT_A_TRANSFER_WALLET")
    forged = delta.transfer(player, secret=pipeline.operator_secret, transfer_id="d5",
                            direction="deposit", amount=5, currency="EUR")  # fmt: skip
    assert forged.status_code == 401
    body = delta.transfer(player, transfer_id="w9", direction="withdraw", currency="EUR")
    assert (body.status_code, body.json()["amount"], body.json()["balance"]) == (200, 500, 0)
    # the provider saw the held balance, never the seamless operator's
    token = delta.session(player)
    assert answer(pipeline.callback("balance", player, token)) == (200, "OK", 0)
    # a provider cannot move funds in: transfers are not a callback of any protocol
    for action in ("deposit", "withdraw"):
        forged_call = pipeline.callback(action, player, token, transaction_id="x1", amount=900)
        assert forged_call.status_code in (400, 404), forged_call.text
    assert answer(pipeline.callback("balance", player, token)) == (200, "OK", 0)
