"""Responsible gaming end to end: an operator states a player's controls through the operator
API (signed, idempotent by change id); the saga enforces them at once, in the player's order,
before any debit or deposit: blocked and self-excluded players are refused PLAYER_BLOCKED, a
session past its time limit and a bet or deposit over a period's limit LIMIT_EXCEEDED; the
operator's wallet sees no command; wins, refunds and withdrawals still land; every refusal
is journaled with the control's rule, every change with who made it; the read API shows the
controls in force. No restart anywhere. The operator's own wallet refuses too: a stake above
its ``wallet.max_stake``."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from agg_config.settings import Settings
from agg_config.tenants import load_tenants
from agg_wallet.transfers import TransferResult
from tests.e2e.conftest import GAME, OPERATOR, STARTING_BALANCE, Pipeline
from tests.e2e.test_pipeline import answer, eventually
from tests.e2e.test_transfer_wallet import Delta

TRANSFER_OPERATOR = "op-delta"


MAX_STAKE = 50_000
"""op-alpha's own stake limit in this module's tenants (``wallet.max_stake``)."""


@pytest.fixture(scope="module")
def pipeline(
    settings: Settings, catalogue_topics: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    root = tmp_path_factory.mktemp("pipeline")
    tenants = root / "aggregator.yaml"
    text = settings.tenants_file.read_text()
    plain = "wallet: {mode: kafka, starting_balance: 100000}"
    assert text.count(plain) >= 1
    tenants.write_text(
        text.replace(
            plain, f"wallet: {{mode: kafka, starting_balance: 100000, max_stake: {MAX_STAKE}}}", 1
        )
    )
    p = Pipeline(settings, root, projector_client="librdkafka",
                 env={"AGG_TENANTS_FILE": str(tenants)})  # fmt: skip
    try:
        p.start()
        yield p
    finally:
        p.stop()


def txn() -> str:
    return f"rg-{uuid.uuid4().hex[:12]}"


def controls(pipeline: Pipeline, player: str, secret: bytes | None = None,
             operator: str = OPERATOR, **fields: Any) -> httpx.Response:  # fmt: skip
    fields.setdefault("change_id", f"ch-{uuid.uuid4().hex[:10]}")
    return pipeline._post(secret or pipeline.operator_secret,
                          f"/v1/operators/{operator}/players/{player}/controls",
                          fields)  # fmt: skip


def journal(pipeline: Pipeline, player: str, event_type: str) -> list[dict[str, Any]]:
    with psycopg.connect(pipeline.settings.database_url) as conn:
        rows = conn.execute(
            "select payload from projection.journal where player_id = %s and event_type = %s"
            ' order by occurred_at, "offset"',
            (player, event_type),
        ).fetchall()
    return [r[0] for r in rows]


def rules(pipeline: Pipeline, player: str, event_type: str = "BetRejected") -> list[str]:
    return [p["rule"] for p in journal(pipeline, player, event_type)]


def at(delta_s: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta_s)).isoformat().replace("+00:00", "Z")


def test_a_blocked_or_self_excluded_player_bets_nothing_and_is_still_paid(
    pipeline: Pipeline,
) -> None:
    player, token = pipeline.new_player()
    assert answer(pipeline.bet(player, token, "b1", 300))[:2] == (200, "OK")
    stated = controls(pipeline, player, actor="staff-17", blocked=True)
    assert stated.status_code == 200, stated.text
    assert stated.json()["controls"]["blocked"] is True
    # refused before any debit: the wallet is untouched, the answer says why
    assert answer(pipeline.bet(player, token, "b2", 100, round_id="rnd-2"))[1] == "PLAYER_BLOCKED"
    assert pipeline.wallet_balance(player) == STARTING_BALANCE - 300
    # money owed still lands: the open round's win and a refund
    assert answer(pipeline.win(player, token, "w1", 500))[:2] == (200, "OK")
    assert answer(pipeline.rollback(player, token, "rb1", "b1"))[1] == "OK"
    assert pipeline.wallet_balance(player) == STARTING_BALANCE + 500
    # an exact repeat of the refused bet is answered the same
    assert answer(pipeline.bet(player, token, "b2", 100, round_id="rnd-2"))[1] == "PLAYER_BLOCKED"

    # a self-exclusion that ends in three seconds: refused until then, then play resumes
    assert controls(pipeline, player, actor="player", self_excluded=True,
                    self_excluded_until=at(3)).status_code == 200  # fmt: skip
    assert answer(pipeline.bet(player, token, "b3", 100, round_id="rnd-3"))[1] == "PLAYER_BLOCKED"
    time.sleep(3.2)
    assert answer(pipeline.bet(player, token, "b4", 100, round_id="rnd-4"))[:2] == (200, "OK")
    assert pipeline.wallet_balance(player) == STARTING_BALANCE + 400

    eventually(lambda: len(rules(pipeline, player)) == 2)
    assert rules(pipeline, player) == ["rg:blocked", "rg:self_excluded"]
    changes = journal(pipeline, player, "PlayerControlsChanged")
    assert [(c["actor"], c["blocked"], c["self_excluded"]) for c in changes] == [
        ("staff-17", True, False), ("player", False, True)]  # fmt: skip
    assert changes[1]["self_excluded_until"] is not None


def test_wager_and_loss_limits_count_the_period_and_refuse_what_would_pass_them(
    pipeline: Pipeline,
) -> None:
    player, token = pipeline.new_player()
    assert answer(pipeline.bet(player, token, "b0", 200, round_id="r0"))[1] == "OK"
    # set after play began: the day's stakes so far count
    limits = [{"kind": "loss", "period": "day", "amount": 1_000, "currency": "EUR"},
              {"kind": "wager", "period": "week", "amount": 1_500, "currency": "EUR"},
              {"kind": "wager", "period": "day", "amount": 1, "currency": "USD"}]  # fmt: skip
    assert controls(pipeline, player, limits=limits).status_code == 200
    assert answer(pipeline.bet(player, token, "b1", 700, round_id="r1"))[1] == "OK"  # loss 900
    refused = pipeline.bet(player, token, "b2", 101, round_id="r2")  # loss would be 1001
    assert answer(refused)[1] == "LIMIT_EXCEEDED"
    assert answer(pipeline.bet(player, token, "b3", 100, round_id="r3"))[1] == "OK"  # exactly
    # a win lowers the net loss; the week's wager limit still holds (1000 staked so far)
    assert answer(pipeline.win(player, token, "w1", 600, round_id="r1"))[1] == "OK"  # loss 400
    assert answer(pipeline.bet(player, token, "b4", 501, round_id="r4"))[1] == "LIMIT_EXCEEDED"
    assert answer(pipeline.bet(player, token, "b5", 500, round_id="r5"))[1] == "OK"  # wager 1500
    # a refund gives the stake back to both limits
    assert answer(pipeline.rollback(player, token, "rb5", "b5"))[1] == "OK"
    assert answer(pipeline.bet(player, token, "b6", 500, round_id="r6"))[1] == "OK"
    assert pipeline.wallet_balance(player) == STARTING_BALANCE - 200 - 700 - 100 + 600 - 500
    eventually(lambda: len(rules(pipeline, player)) == 2)
    assert rules(pipeline, player) == ["rg:loss:day:EUR:1000", "rg:wager:week:EUR:1500"]


def test_a_session_past_its_time_limit_bets_no_more_and_a_new_session_may(
    pipeline: Pipeline,
) -> None:
    player, token = pipeline.new_player()
    assert controls(pipeline, player, session_time_limit_s=2).status_code == 200
    assert answer(pipeline.bet(player, token, "b1", 100))[1] == "OK"
    time.sleep(2.2)
    assert answer(pipeline.bet(player, token, "b2", 100, round_id="r2"))[1] == "LIMIT_EXCEEDED"
    assert answer(pipeline.win(player, token, "w1", 50))[1] == "OK"  # still paid
    response = pipeline._post(pipeline.operator_secret, f"/v1/operators/{OPERATOR}/sessions",
                              {"player_id": player, "currency": "EUR", "country": "MT",
                               "game_id": GAME, "mode": "real"})  # fmt: skip
    fresh = response.json()["session_token"]
    assert answer(pipeline.bet(player, fresh, "b3", 100, round_id="r3"))[1] == "OK"
    eventually(lambda: rules(pipeline, player) == ["rg:session_time:2"])


def test_change_ids_are_idempotent_and_the_read_api_shows_the_controls_in_force(
    pipeline: Pipeline,
) -> None:
    player, token = pipeline.new_player()
    first = {"change_id": "ch-1", "blocked": True, "actor": "staff-1"}
    assert controls(pipeline, player, **first).status_code == 200
    assert controls(pipeline, player, change_id="ch-2", actor="staff-2").status_code == 200
    # the repeat of ch-1 is answered OK and does not block the player again
    repeat = controls(pipeline, player, **first)
    assert (repeat.status_code, repeat.json()["status"]) == (200, "OK")
    assert answer(pipeline.bet(player, token, "b1", 100))[1] == "OK"
    conflict = controls(pipeline, player, **{**first, "blocked": False})
    assert (conflict.status_code, conflict.json()["status"]) == (409, "DUPLICATE_CONFLICT")
    path = f"/v1/operators/{OPERATOR}/players/{player}/controls"
    eventually(lambda: pipeline.read(path).status_code == 200
               and pipeline.read(path).json()["change_id"] == "ch-2")  # fmt: skip
    body = pipeline.read(path).json()
    assert body["controls"] == {"blocked": False, "self_excluded": False,
                                "self_excluded_until": None, "session_time_limit_s": None,
                                "limits": [], "actor": "staff-2"}  # fmt: skip
    assert [c["change_id"] for c in journal(pipeline, player, "PlayerControlsChanged")] == [
        "ch-1", "ch-2"]  # fmt: skip
    # another operator cannot read or set them; bad statements change nothing
    assert pipeline.read(path, secret=b"dev-secret-op-beta-00002").status_code == 401
    assert controls(pipeline, player, limits=[{"kind": "loss"}]).status_code == 400
    assert controls(pipeline, player, self_excluded_until=at(60)).status_code == 400
    deposit = [{"kind": "deposit", "period": "day", "amount": 1, "currency": "EUR"}]
    assert controls(pipeline, player, limits=deposit).json()["status"] == "NOT_A_TRANSFER_WALLET"
    gbp = [{"kind": "wager", "period": "day", "amount": 1, "currency": "GBP"}]
    assert controls(pipeline, player, limits=gbp).status_code == 422
    assert pipeline.read(path).json()["change_id"] == "ch-2"
    unknown = f"/v1/operators/{OPERATOR}/players/rg-nobody/controls"
    assert pipeline.read(unknown).status_code == 404


def test_a_transfer_wallet_players_deposits_and_bets_are_held_to_the_controls(
    pipeline: Pipeline,
) -> None:
    operator = load_tenants(pipeline.settings.tenants_file).operator(TRANSFER_OPERATOR)
    assert operator is not None and operator.wallet.mode == "transfer"
    secret = operator.secret.reveal()
    player = f"e2e-{uuid.uuid4().hex[:10]}"

    delta = Delta(pipeline)  # as the reference operator: its own ledger moves in step

    def transfer(direction: str, amount: int | None) -> TransferResult:
        return delta.move(direction, player, amount)

    limit = [{"kind": "deposit", "period": "month", "amount": 5_000, "currency": "EUR"}]
    assert controls(pipeline, player, secret, TRANSFER_OPERATOR, limits=limit).status_code == 200
    assert transfer("deposit", 3_000).status == "OK"
    assert transfer("deposit", 2_001).status == "LIMIT_EXCEEDED"
    assert transfer("deposit", 2_000).held_balance == 5_000
    session = pipeline._post(secret, f"/v1/operators/{TRANSFER_OPERATOR}/sessions",
                             {"player_id": player, "currency": "EUR", "country": "MT",
                              "game_id": GAME, "mode": "real"})  # fmt: skip
    token = session.json()["session_token"]
    assert answer(pipeline.bet(player, token, "b1", 400)) == (200, "OK", 4_600)
    assert controls(pipeline, player, secret, TRANSFER_OPERATOR, blocked=True,
                    limits=limit).status_code == 200  # fmt: skip
    assert answer(pipeline.bet(player, token, "b2", 100, round_id="r2")) == (
        200, "PLAYER_BLOCKED", 4_600)  # fmt: skip
    assert transfer("deposit", 1).status == "PLAYER_BLOCKED"
    assert answer(pipeline.win(player, token, "w1", 900))[1:] == ("OK", 5_500)
    out = transfer("withdraw", None)  # withdrawals are never refused
    assert (out.status, out.amount, out.held_balance) == ("OK", 5_500, 0)
    # the operator got back what it moved in, less the stake, plus the win
    assert delta.operator_balance(player) == 100_000 - 5_000 + 5_500
    eventually(lambda: len(rules(pipeline, player, "TransferRejected")) == 2)
    assert rules(pipeline, player, "TransferRejected") == ["rg:deposit:month:EUR:5000",
                                                           "rg:blocked"]  # fmt: skip
    assert rules(pipeline, player) == ["rg:blocked"]


def test_the_operators_wallet_refuses_a_stake_above_its_own_limit(pipeline: Pipeline) -> None:
    player, token = pipeline.new_player()
    assert answer(pipeline.bet(player, token, "b1", MAX_STAKE))[1] == "OK"
    refused = pipeline.bet(player, token, "b2", MAX_STAKE + 1, round_id="r2")
    assert answer(refused)[1] == "LIMIT_EXCEEDED"
    assert pipeline.wallet_balance(player) == STARTING_BALANCE - MAX_STAKE
    eventually(lambda: rules(pipeline, player) == ["operator_wallet:LIMIT_REACHED"])
