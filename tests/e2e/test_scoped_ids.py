"""A provider's ids are its own: it may send the same transaction id, request id or round id
for several players, of one operator or of several, and each of them is a transaction of its
own. End to end on the real stack: each player is debited and credited, answered with its own
balance, projected, and the replay of the journal rebuilds the live projections exactly."""

from __future__ import annotations

import io
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from agg_auditor.cli import main_audit
from tests.e2e.conftest import GAME, OPERATOR, STARTING_BALANCE, Pipeline
from tests.e2e.test_pipeline import answer, eventually, txn

OTHER_OPERATOR = "op-beta"


def player_id() -> str:
    return f"e2e-ids-{uuid.uuid4().hex[:10]}"


def session(pipeline: Pipeline, operator: str, player: str) -> str:
    secret = pipeline.operator_secret if operator == OPERATOR else pipeline.other_operator_secret
    response = pipeline._post(
        secret,
        f"/v1/operators/{operator}/sessions",
        {"player_id": player, "currency": "EUR", "country": "MT", "game_id": GAME,
         "mode": "real"},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    return str(response.json()["session_token"])


def wallet_balance(pipeline: Pipeline, operator: str, player: str) -> int | None:
    with psycopg.connect(pipeline.settings.database_url) as conn:
        row = conn.execute(
            "select balance from wallet.players where operator_id = %s and player_id = %s"
            " and currency = 'EUR'",
            (operator, player),
        ).fetchone()
    return None if row is None else int(row[0])


def projected_balance(pipeline: Pipeline, operator: str, player: str) -> int | None:
    secret = pipeline.operator_secret if operator == OPERATOR else pipeline.other_operator_secret
    response = pipeline.read(f"/v1/operators/{operator}/players/{player}/balance", secret)
    if response.status_code != 200:
        return None
    [eur] = response.json()["balances"]
    return int(eur["balance"])


def projected_rows(pipeline: Pipeline, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(pipeline.settings.database_url) as conn:
        return conn.execute(query, args).fetchall()


def spend(pipeline: Pipeline, player: str, token: str, amount: int) -> None:
    """A bet of its own, so that the players' balances differ and an answer carrying another
    player's balance shows."""
    assert answer(pipeline.bet(player, token, txn(), amount))[:2] == (200, "OK")


def test_one_bet_transaction_id_for_two_players_debits_each(pipeline: Pipeline) -> None:
    a, b = player_id(), player_id()
    ta, tb = session(pipeline, OPERATOR, a), session(pipeline, OPERATOR, b)
    spend(pipeline, a, ta, 1_000)
    t = txn()
    assert answer(pipeline.bet(a, ta, t, 100)) == (200, "OK", STARTING_BALANCE - 1_100)
    assert answer(pipeline.bet(b, tb, t, 100)) == (200, "OK", STARTING_BALANCE - 100)
    assert wallet_balance(pipeline, OPERATOR, a) == STARTING_BALANCE - 1_100
    assert wallet_balance(pipeline, OPERATOR, b) == STARTING_BALANCE - 100
    # each player's exact duplicate gets that player's original answer
    assert answer(pipeline.bet(b, tb, t, 100)) == (200, "OK", STARTING_BALANCE - 100)
    assert answer(pipeline.bet(a, ta, t, 100)) == (200, "OK", STARTING_BALANCE - 1_100)
    # one player's rollback of that id refunds that player alone
    rb = txn()
    assert answer(pipeline.rollback(a, ta, rb, t))[:2] == (200, "OK")
    assert wallet_balance(pipeline, OPERATOR, a) == STARTING_BALANCE - 1_000
    assert wallet_balance(pipeline, OPERATOR, b) == STARTING_BALANCE - 100
    # ... and the other player's rollback with the same ids refunds the other
    assert answer(pipeline.rollback(b, tb, rb, t))[:2] == (200, "OK")
    assert wallet_balance(pipeline, OPERATOR, b) == STARTING_BALANCE
    # the projections keep one row per player
    eventually(lambda: projected_balance(pipeline, OPERATOR, b) == STARTING_BALANCE, 30)
    eventually(
        lambda: sorted(projected_rows(
            pipeline,
            "select player_id, kind, status from projection.transactions"
            " where operator_id = %s and provider_id = 'prov-nova' and transaction_id in (%s, %s)",
            OPERATOR, t, rb,
        )) == sorted([(a, "BET", "ROLLED_BACK"), (b, "BET", "ROLLED_BACK"),
                      (a, "ROLLBACK", "REFUNDED"), (b, "ROLLBACK", "REFUNDED")]),
        30,
    )  # fmt: skip


def test_one_win_transaction_id_for_two_players_credits_each(pipeline: Pipeline) -> None:
    a, b = player_id(), player_id()
    ta, tb = session(pipeline, OPERATOR, a), session(pipeline, OPERATOR, b)
    spend(pipeline, a, ta, 2_000)
    w = txn()
    assert answer(pipeline.win(a, ta, w, 300)) == (200, "OK", STARTING_BALANCE - 1_700)
    assert answer(pipeline.win(b, tb, w, 300)) == (200, "OK", STARTING_BALANCE + 300)
    assert wallet_balance(pipeline, OPERATOR, a) == STARTING_BALANCE - 1_700
    assert wallet_balance(pipeline, OPERATOR, b) == STARTING_BALANCE + 300
    assert answer(pipeline.win(b, tb, w, 300)) == (200, "OK", STARTING_BALANCE + 300)
    assert wallet_balance(pipeline, OPERATOR, b) == STARTING_BALANCE + 300
    eventually(lambda: projected_balance(pipeline, OPERATOR, b) == STARTING_BALANCE + 300, 30)
    eventually(lambda: projected_balance(pipeline, OPERATOR, a) == STARTING_BALANCE - 1_700, 30)


def test_one_transaction_id_at_two_operators(pipeline: Pipeline) -> None:
    """The same player id at two operators, the same provider transaction ids: two players."""
    p = player_id()
    alpha, beta = session(pipeline, OPERATOR, p), session(pipeline, OTHER_OPERATOR, p)
    spend(pipeline, p, beta, 5_000)
    t, w = txn(), txn()
    assert answer(pipeline.bet(p, alpha, t, 100)) == (200, "OK", STARTING_BALANCE - 100)
    assert answer(pipeline.bet(p, beta, t, 100)) == (200, "OK", STARTING_BALANCE - 5_100)
    assert answer(pipeline.win(p, alpha, w, 40)) == (200, "OK", STARTING_BALANCE - 60)
    assert answer(pipeline.win(p, beta, w, 40)) == (200, "OK", STARTING_BALANCE - 5_060)
    assert wallet_balance(pipeline, OPERATOR, p) == STARTING_BALANCE - 60
    assert wallet_balance(pipeline, OTHER_OPERATOR, p) == STARTING_BALANCE - 5_060
    # every journal event reached the projections: each operator's balance and transactions
    eventually(lambda: projected_balance(pipeline, OPERATOR, p) == STARTING_BALANCE - 60, 30)
    eventually(
        lambda: projected_balance(pipeline, OTHER_OPERATOR, p) == STARTING_BALANCE - 5_060, 30
    )
    eventually(
        lambda: sorted(projected_rows(
            pipeline,
            "select operator_id, kind, status from projection.transactions"
            " where player_id = %s and transaction_id in (%s, %s)", p, t, w,
        )) == [(OPERATOR, "BET", "ACCEPTED"), (OPERATOR, "WIN", "CREDITED"),
               (OTHER_OPERATOR, "BET", "ACCEPTED"), (OTHER_OPERATOR, "WIN", "CREDITED")],
        30,
    )  # fmt: skip


def test_a_balance_request_id_reused_by_other_players_gets_each_its_own(
    pipeline: Pipeline,
) -> None:
    a, b = player_id(), player_id()
    players = [
        (a, session(pipeline, OPERATOR, a), STARTING_BALANCE - 700),
        (b, session(pipeline, OPERATOR, b), STARTING_BALANCE - 300),
        (a, session(pipeline, OTHER_OPERATOR, a), STARTING_BALANCE - 900),  # a's id at op-beta
    ]
    for player, token, expected in players:
        spend(pipeline, player, token, STARTING_BALANCE - expected)

    def ask(request_id: str, player: str, token: str) -> tuple[str, int | None]:
        body = pipeline.callback("balance", player, token, request_id=request_id).json()
        return body["status"], body.get("balance")

    # one after the other
    request_id = f"bal-{uuid.uuid4().hex[:10]}"
    for player, token, expected in players:
        assert ask(request_id, player, token) == ("OK", expected)
    # all at once, the same request id in flight for the three players
    with ThreadPoolExecutor(len(players)) as pool:
        for _ in range(5):
            shared = f"bal-{uuid.uuid4().hex[:10]}"
            got = list(pool.map(lambda p, r=shared: ask(r, p[0], p[1]), players))
            assert got == [("OK", expected) for _, _, expected in players]


def test_players_sharing_a_round_close_it_each_and_the_replay_is_identical(
    pipeline: Pipeline,
) -> None:
    """A live table: one round id, one bet id and one win id for every player at it."""
    same = player_id()
    seats = [(OPERATOR, player_id()) for _ in range(3)]
    seats += [(OPERATOR, same), (OTHER_OPERATOR, same)]
    tokens = [session(pipeline, op, p) for op, p in seats]
    round_id, bet_id, win_id = f"live-{uuid.uuid4().hex[:8]}", txn(), txn()
    for i, ((_, p), token) in enumerate(zip(seats, tokens, strict=True)):
        stake = 10 * (i + 1)
        assert answer(pipeline.bet(p, token, bet_id, stake, round_id=round_id)) == (
            200, "OK", STARTING_BALANCE - stake)  # fmt: skip
    for i, ((op, p), token) in enumerate(zip(seats, tokens, strict=True)):
        stake, prize = 10 * (i + 1), 3 * (i + 1)
        assert answer(
            pipeline.win(p, token, win_id, prize, round_id=round_id, round_closed=True)
        ) == (200, "OK", STARTING_BALANCE - stake + prize)
        assert wallet_balance(pipeline, op, p) == STARTING_BALANCE - stake + prize
    expected = sorted(
        (op, p, "CLOSED", 10 * (i + 1), 3 * (i + 1)) for i, (op, p) in enumerate(seats)
    )
    eventually(
        lambda: sorted(projected_rows(
            pipeline,
            "select operator_id, player_id, status, bet_total, win_total from projection.rounds"
            " where provider_id = 'prov-nova' and round_id = %s", round_id,
        )) == expected,
        30,
    )  # fmt: skip
    closed = projected_rows(
        pipeline,
        "select count(distinct event_id) from projection.journal"
        " where event_type = 'RoundClosed' and round_id = %s",
        round_id,
    )
    assert closed == [(len(seats),)]
    out, err = io.StringIO(), io.StringIO()
    code = main_audit(["replay", "-q"], settings=pipeline.settings, stdout=out, stderr=err)
    assert code == 0, out.getvalue() + err.getvalue()
    assert out.getvalue().rstrip().endswith("identical")


def test_trace_of_a_transaction_id_that_two_players_have(pipeline: Pipeline) -> None:
    a, b = player_id(), player_id()
    ta, tb = session(pipeline, OPERATOR, a), session(pipeline, OPERATOR, b)
    t = txn()
    assert answer(pipeline.bet(a, ta, t, 10))[:2] == (200, "OK")
    assert answer(pipeline.bet(b, tb, t, 20))[:2] == (200, "OK")

    def trace(*extra: str) -> tuple[int, list[dict[str, Any]], str]:
        out, err = io.StringIO(), io.StringIO()
        code = main_audit(["trace", "prov-nova", t, "--json", *extra],
                          settings=pipeline.settings, stdout=out, stderr=err)  # fmt: skip
        steps = [json.loads(line) for line in out.getvalue().splitlines()] if code == 0 else []
        return code, steps, err.getvalue()

    def projected(player: str) -> bool:
        _, steps, _ = trace("--operator", OPERATOR, "--player", player)
        return [s["source"] for s in steps].count("projection") == 1

    eventually(lambda: projected(a) and projected(b), 30)
    # which of the two: the auditor is asked to say
    code, _, err = trace()
    assert code == 64
    assert f"--operator {OPERATOR} --player {a}" in err
    assert f"--operator {OPERATOR} --player {b}" in err
    # each player's trace is that player's alone: one correlation id links its steps
    corrs = []
    for player, amount in ((a, 10), (b, 20)):
        _, steps, _ = trace("--operator", OPERATOR, "--player", player)
        replies = f"agg.wallet.replies.{OPERATOR}"
        linked = {s["correlation_id"] for s in steps if s["source"] != replies}
        assert len(linked) == 1, steps
        corrs += linked
        [request] = [s for s in steps if s["what"].startswith("request")]
        assert f"amount {amount}" in request["what"]
    assert corrs[0] != corrs[1]
