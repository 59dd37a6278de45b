"""Bonus, jackpot and promotion wins end to end: a provider names the kind of a win
(canonical-v1 ``win_kind``), the operator's wallet is credited as for any win, the journal
says the kind, and revenue reports each kind in its own column, outside the game's wins and
GGR; the same transaction id with another kind is a conflict and pays nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from agg_config.settings import Settings
from tests.e2e.conftest import GAME, OPERATOR, PROVIDER, STARTING_BALANCE, Pipeline
from tests.e2e.test_pipeline import answer, eventually


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


def test_each_kind_of_win_is_credited_journaled_and_reported_apart(pipeline: Pipeline) -> None:
    player, token = pipeline.new_player()
    tag = uuid.uuid4().hex[:8]
    assert answer(pipeline.bet(player, token, f"b-{tag}", 100, round_id=f"r-{tag}"))[1] == "OK"
    paid = {"REGULAR": 40, "BONUS": 300, "JACKPOT": 50_000, "PROMO": 777}
    balance = STARTING_BALANCE - 100
    for kind, amount in paid.items():
        balance += amount
        got = answer(pipeline.win(player, token, f"w-{kind}-{tag}", amount, round_id=f"r-{tag}",
                                  win_kind=kind))  # fmt: skip
        assert got == (200, "OK", balance), kind
    assert pipeline.wallet_balance(player) == balance
    # the same id with another kind: refused, nothing paid again
    conflict = pipeline.win(player, token, f"w-JACKPOT-{tag}", 50_000, round_id=f"r-{tag}",
                            win_kind="PROMO")  # fmt: skip
    assert conflict.status_code == 409 and conflict.json()["status"] == "DUPLICATE_CONFLICT"
    # an exact repeat: the original answer
    again = pipeline.win(player, token, f"w-PROMO-{tag}", 777, round_id=f"r-{tag}",
                         win_kind="PROMO")  # fmt: skip
    assert answer(again)[1] == "OK"
    assert pipeline.wallet_balance(player) == balance

    with psycopg.connect(pipeline.settings.database_url) as conn:

        def kinds() -> dict[str, str]:
            rows = conn.execute(
                "select transaction_id, payload->>'win_kind' from projection.journal"
                " where event_type = 'WinCredited' and player_id = %s",
                (player,),
            ).fetchall()
            conn.commit()
            return {str(t): str(k) for t, k in rows}

        eventually(lambda: len(kinds()) == 4, 30)
        assert kinds() == {f"w-{kind}-{tag}": kind for kind in paid}
        revenue = conn.execute(
            "select sum(wins), sum(bonus_wins), sum(jackpot_wins), sum(promo_wins),"
            " sum(ggr), sum(bets) - sum(wins) - sum(refunds) from projection.revenue_daily"
            " where operator_id = %s and provider_id = %s and game_id = %s",
            (OPERATOR, PROVIDER, GAME),
        ).fetchone()
        journal = conn.execute(
            "select coalesce(sum(amount) filter (where coalesce(payload->>'win_kind', 'REGULAR')"
            " = 'REGULAR'), 0), coalesce(sum(amount) filter (where payload->>'win_kind' ="
            " 'BONUS'), 0), coalesce(sum(amount) filter (where payload->>'win_kind' ="
            " 'JACKPOT'), 0), coalesce(sum(amount) filter (where payload->>'win_kind' ="
            " 'PROMO'), 0) from projection.journal where event_type = 'WinCredited'"
            " and operator_id = %s and provider_id = %s and payload->>'game_id' = %s"
            " and coalesce(payload->>'mode', 'real') = 'real'",
            (OPERATOR, PROVIDER, GAME),
        ).fetchone()
    assert revenue is not None and journal is not None
    # every credited win of the game is in exactly one column: regular ones in wins (and
    # GGR), the others in their own columns
    assert tuple(int(v) for v in revenue[:4]) == tuple(int(v) for v in journal)
    assert revenue[4] == revenue[5], "GGR leaves bonus, jackpot and promotion wins out"


def test_an_unknown_kind_is_refused_and_moves_nothing(pipeline: Pipeline) -> None:
    player, token = pipeline.new_player()
    refused = pipeline.win(player, token, "w-x", 10, win_kind="MYSTERY")
    assert refused.status_code == 400 and refused.json()["status"] == "INVALID_REQUEST"
    body = pipeline.callback("balance", player, token).json()
    assert body["balance"] == STARTING_BALANCE
