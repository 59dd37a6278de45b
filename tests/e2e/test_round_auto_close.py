"""End to end: a provider whose rounds auto-close after 2 s without a transaction.

The pipeline's tenants give `prov-nova` `round_auto_close_s: 2`. A round left idle is closed
by the saga's timer with nothing else arriving (journaled `RoundAutoClosed` with its totals,
projected closed by AUTO); a bet on it is then refused `ROUND_CLOSED` and debits nothing; a
win after the close is credited and lands in the round's totals and in
`round_money_after_close`. A round the provider closes refuses a later bet the same way."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import yaml

from agg_config.settings import Settings
from tests.e2e.conftest import OPERATOR, PROVIDER, STARTING_BALANCE, Pipeline
from tests.e2e.test_pipeline import answer, eventually, txn

AUTO_CLOSE_S = 2


@pytest.fixture(scope="module")
def projector_client() -> str:
    """One projector client: the auto-close is the saga's, whichever client projects it."""
    return "librdkafka"


@pytest.fixture(scope="module")
def pipeline(
    settings: Settings,
    catalogue_topics: list[str],
    tmp_path_factory: pytest.TempPathFactory,
    projector_client: str,
) -> Iterator[Pipeline]:
    root = tmp_path_factory.mktemp("pipeline-rounds")
    tenants = yaml.safe_load(settings.tenants_file.read_text())
    [provider] = [p for p in tenants["providers"] if p["id"] == PROVIDER]
    provider["round_auto_close_s"] = AUTO_CLOSE_S
    tenants_file = root / "aggregator.yaml"
    tenants_file.write_text(yaml.safe_dump(tenants, sort_keys=False))
    p = Pipeline(settings, root, env={"AGG_TENANTS_FILE": str(tenants_file)},
                 projector_client=projector_client)  # fmt: skip
    try:
        p.start()
        yield p
    finally:
        p.stop()


def journaled(settings: Settings, player: str, event_type: str) -> list[dict[str, Any]]:
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "select payload from projection.journal where operator_id = %s and player_id = %s"
            ' and event_type = %s order by partition, "offset"',
            (OPERATOR, player, event_type),
        ).fetchall()
    return [row[0] for row in rows]


def round_row(settings: Settings, player: str, round_id: str) -> tuple[Any, ...] | None:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(
            "select status, closed_by, bet_total, win_total, refund_total from projection.rounds"
            " where operator_id = %s and provider_id = %s and player_id = %s and round_id = %s",
            (OPERATOR, PROVIDER, player, round_id),
        ).fetchone()


def test_an_idle_round_is_auto_closed_then_refuses_bets_and_pays_wins(
    pipeline: Pipeline, settings: Settings
) -> None:
    player, token = pipeline.new_player()
    round_id = f"rnd-{uuid.uuid4().hex[:8]}"
    assert answer(pipeline.bet(player, token, txn(), 300, round_id=round_id)) == (
        200, "OK", STARTING_BALANCE - 300)  # fmt: skip
    assert answer(pipeline.bet(player, token, txn(), 200, round_id=round_id)) == (
        200, "OK", STARTING_BALANCE - 500)  # fmt: skip
    left = time.monotonic()

    # nothing else arrives for the player: the saga's timer closes the round
    eventually(lambda: journaled(settings, player, "RoundAutoClosed"), timeout_s=20)
    assert time.monotonic() - left >= AUTO_CLOSE_S - 0.2, "not before the idle time"
    [closed] = journaled(settings, player, "RoundAutoClosed")
    assert (closed["round_id"], closed["provider_id"], closed["currency"]) == (
        round_id, PROVIDER, "EUR")  # fmt: skip
    assert (closed["bet_total"], closed["win_total"], closed["refund_total"]) == (500, 0, 0)
    assert closed["auto_close_ms"] == AUTO_CLOSE_S * 1000
    assert closed["idle_ms"] >= AUTO_CLOSE_S * 1000 and closed["reason"] == "idle"
    eventually(lambda: round_row(settings, player, round_id) == ("CLOSED", "AUTO", 500, 0, 0))

    # a bet on the closed round: refused with the documented status, nothing debited
    refused = txn()
    assert answer(pipeline.bet(player, token, refused, 100, round_id=round_id)) == (
        200, "ROUND_CLOSED", STARTING_BALANCE - 500)  # fmt: skip
    assert pipeline.wallet_balance(player) == STARTING_BALANCE - 500
    eventually(lambda: journaled(settings, player, "BetRejected"))
    [rejected] = journaled(settings, player, "BetRejected")
    assert (rejected["transaction_id"], rejected["status"], rejected["command_id"]) == (
        refused, "ROUND_CLOSED", None)  # fmt: skip

    # a win after the close is owed money: credited, counted on the round
    won = txn()
    assert answer(pipeline.win(player, token, won, 900, round_id=round_id)) == (
        200, "OK", STARTING_BALANCE + 400)  # fmt: skip
    assert pipeline.wallet_balance(player) == STARTING_BALANCE + 400
    eventually(lambda: round_row(settings, player, round_id) == ("CLOSED", "AUTO", 500, 900, 0))
    with psycopg.connect(settings.database_url) as conn:
        late = conn.execute(
            "select transaction_id, kind, status, amount from projection.round_money_after_close"
            " where operator_id = %s and player_id = %s",
            (OPERATOR, player),
        ).fetchall()
        rejected_row = conn.execute(
            "select status from projection.transactions where operator_id = %s"
            " and player_id = %s and transaction_id = %s",
            (OPERATOR, player, refused),
        ).fetchone()
    assert late == [(won, "WIN", "CREDITED", 900)]
    assert rejected_row == ("REJECTED:ROUND_CLOSED",)
    assert len(journaled(settings, player, "RoundAutoClosed")) == 1, "closed once"
    assert journaled(settings, player, "RoundClosed") == []


def test_a_round_closed_by_the_provider_refuses_a_later_bet(
    pipeline: Pipeline, settings: Settings
) -> None:
    player, token = pipeline.new_player()
    round_id = f"rnd-{uuid.uuid4().hex[:8]}"
    assert answer(pipeline.bet(player, token, txn(), 100, round_id=round_id))[1] == "OK"
    assert answer(pipeline.win(player, token, txn(), 0, round_id=round_id,
                               round_closed=True))[1] == "OK"  # fmt: skip
    assert answer(pipeline.bet(player, token, txn(), 100, round_id=round_id)) == (
        200, "ROUND_CLOSED", STARTING_BALANCE - 100)  # fmt: skip
    time.sleep(AUTO_CLOSE_S + 1)
    eventually(lambda: round_row(settings, player, round_id) == ("CLOSED", "PROVIDER", 100, 0, 0))
    assert journaled(settings, player, "RoundAutoClosed") == [], "a closed round is not idle"
