"""End to end: signed provider callbacks through ingress, saga and the reference wallet, on
real Kafka and PostgreSQL; balances read from the wallet's ledger."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg

from tests.e2e.conftest import DEMO_STARTING_BALANCE, OPERATOR, STARTING_BALANCE, Pipeline


def eventually(check, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def txn() -> str:
    return f"tx-{uuid.uuid4().hex[:12]}"


def answer(response: httpx.Response) -> tuple[int, str, int | None]:
    body = response.json()
    return response.status_code, body["status"], body.get("balance")


def test_bet_debits_the_wallet_and_answers_the_balance(pipeline: Pipeline) -> None:
    player, token = pipeline.new_player()
    code, status, balance = answer(pipeline.bet(player, token, txn(), 250))
    assert (code, status, balance) == (200, "OK", STARTING_BALANCE - 250)
    assert pipeline.wallet_balance(player) == STARTING_BALANCE - 250
    body = pipeline.callback("balance", player, token).json()
    assert (body["status"], body["balance"]) == ("OK", STARTING_BALANCE - 250)


def test_exact_duplicates_debit_once_and_answer_identically(pipeline: Pipeline) -> None:
    player, token = pipeline.new_player()
    t = txn()
    first = answer(pipeline.bet(player, token, t, 100))
    again = answer(pipeline.bet(player, token, t, 100))
    assert first == again == (200, "OK", STARTING_BALANCE - 100)
    # 20 at once, a new transaction
    t2 = txn()
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: answer(pipeline.bet(player, token, t2, 300)), range(20)))
    assert len(set(answers)) == 1, answers
    assert answers[0] == (200, "OK", STARTING_BALANCE - 400)
    assert pipeline.wallet_balance(player) == STARTING_BALANCE - 400


def test_same_transaction_id_with_another_amount_is_a_conflict(pipeline: Pipeline) -> None:
    player, token = pipeline.new_player()
    t = txn()
    assert answer(pipeline.bet(player, token, t, 100))[1] == "OK"
    code, status, _ = answer(pipeline.bet(player, token, t, 101))
    assert (code, status) == (409, "DUPLICATE_CONFLICT")
    assert pipeline.wallet_balance(player) == STARTING_BALANCE - 100


def test_insufficient_funds_changes_nothing(pipeline: Pipeline) -> None:
    player, token = pipeline.new_player()
    code, status, balance = answer(pipeline.bet(player, token, txn(), STARTING_BALANCE + 1))
    assert (code, status, balance) == (200, "INSUFFICIENT_FUNDS", STARTING_BALANCE)
    assert pipeline.wallet_balance(player) == STARTING_BALANCE


def test_rollbacks_of_accepted_rejected_and_unknown_bets(pipeline: Pipeline) -> None:
    player, token = pipeline.new_player()
    accepted, rejected, unknown = txn(), txn(), txn()
    assert answer(pipeline.bet(player, token, accepted, 700))[1] == "OK"
    assert answer(pipeline.bet(player, token, rejected, 10**9))[1] == "INSUFFICIENT_FUNDS"
    # accepted: refunded once, however often it is rolled back
    assert answer(pipeline.rollback(player, token, txn(), accepted))[:2] == (200, "OK")
    assert answer(pipeline.rollback(player, token, txn(), accepted))[:2] == (200, "OK")
    assert pipeline.wallet_balance(player) == STARTING_BALANCE
    # rejected: an OK no-op
    assert answer(pipeline.rollback(player, token, txn(), rejected))[:2] == (200, "OK")
    # unknown: a tombstone, and the bet that comes later is refused
    assert answer(pipeline.rollback(player, token, txn(), unknown))[:2] == (200, "OK")
    assert answer(pipeline.bet(player, token, unknown, 50))[:2] == (200, "BET_ROLLED_BACK")
    # an exact duplicate of the accepted bet gets its original answer and is not debited again
    assert answer(pipeline.bet(player, token, accepted, 700))[:2] == (200, "OK")
    assert pipeline.wallet_balance(player) == STARTING_BALANCE


def test_rollback_of_a_pending_bet_is_applied_when_the_debit_resolves(pipeline: Pipeline) -> None:
    player, token = pipeline.new_player()
    t, rb = txn(), txn()
    pipeline.wallet_mode("slow", delay_ms=600)
    try:
        with ThreadPoolExecutor(2) as pool:
            bet = pool.submit(pipeline.bet, player, token, t, 400)
            time.sleep(0.2)  # the rollback arrives while the debit is with the wallet
            rollback = pool.submit(pipeline.rollback, player, token, rb, t)
            bet_answer, rollback_answer = answer(bet.result()), answer(rollback.result())
    finally:
        pipeline.wallet_mode("normal")
    assert bet_answer[1] in ("OK", "RETRY_LATER")
    # the rollback is answered once the refund is acknowledged; a slow wallet may make that
    # later than its deadline (RETRY_LATER), and the provider's retry then gets the OK
    assert rollback_answer[1] in ("OK", "RETRY_LATER")
    eventually(lambda: answer(pipeline.rollback(player, token, rb, t))[:2] == (200, "OK"))
    eventually(lambda: pipeline.wallet_balance(player) == STARTING_BALANCE)
    # the bet, retried by its provider, is never debited again: an accepted bet gets its
    # original answer, one that never had a final answer is refused as rolled back
    retried = answer(pipeline.bet(player, token, t, 400))[1]
    assert retried == ("OK" if bet_answer[1] == "OK" else "BET_ROLLED_BACK")
    assert pipeline.wallet_balance(player) == STARTING_BALANCE


def test_win_is_credited_once_under_retries(pipeline: Pipeline) -> None:
    player, token = pipeline.new_player()
    assert answer(pipeline.bet(player, token, txn(), 100))[1] == "OK"
    w = txn()
    answers = [answer(pipeline.win(player, token, w, 450, round_closed=True)) for _ in range(3)]
    assert answers == [(200, "OK", STARTING_BALANCE + 350)] * 3
    assert pipeline.wallet_balance(player) == STARTING_BALANCE + 350


def test_silent_wallet_gives_503_then_the_cancel_lands_and_the_balance_is_right(
    pipeline: Pipeline,
) -> None:
    player, token = pipeline.new_player()
    assert answer(pipeline.bet(player, token, txn(), 100))[1] == "OK"
    t = txn()
    pipeline.wallet_mode("silent")
    try:
        code, status, _ = answer(pipeline.bet(player, token, t, 500))
        assert (code, status) == (503, "RETRY_LATER")
        time.sleep(1.5)  # the saga compensates while the wallet is away
    finally:
        pipeline.wallet_mode("normal")
    # the debit and then its cancel are applied in order: nothing stays debited
    eventually(lambda: pipeline.wallet_balance(player) == STARTING_BALANCE - 100)
    # the provider retries the same transaction: now it goes through, once
    eventually(lambda: answer(pipeline.bet(player, token, t, 500))[1] == "OK")
    assert pipeline.wallet_balance(player) == STARTING_BALANCE - 600


def test_credits_owed_while_the_wallet_is_down_are_delivered_when_it_returns(
    pipeline: Pipeline,
) -> None:
    player, token = pipeline.new_player()
    assert answer(pipeline.bet(player, token, txn(), 100))[1] == "OK"
    wins = [txn() for _ in range(3)]
    pipeline.wallet_mode("failing")
    try:
        for w in wins:
            code, status, _ = answer(pipeline.win(player, token, w, 1_000))
            assert (code, status) == (503, "RETRY_LATER")
    finally:
        pipeline.wallet_mode("normal")
    # resent by the saga on its own, no provider retry needed
    eventually(lambda: pipeline.wallet_balance(player) == STARTING_BALANCE - 100 + 3_000, 30)
    # a provider retry now answers OK without a second credit
    assert answer(pipeline.win(player, token, wins[0], 1_000))[:2] == (200, "OK")
    assert pipeline.wallet_balance(player) == STARTING_BALANCE - 100 + 3_000


def test_credits_owed_while_the_wallet_is_silent_are_delivered_when_it_returns(
    pipeline: Pipeline,
) -> None:
    player, token = pipeline.new_player()
    assert answer(pipeline.bet(player, token, txn(), 100))[1] == "OK"
    w = txn()
    pipeline.wallet_mode("silent")
    try:
        code, status, _ = answer(pipeline.win(player, token, w, 2_500))
        assert (code, status) == (503, "RETRY_LATER")
        time.sleep(1.5)  # resends pile up on the command topic while the wallet is away
    finally:
        pipeline.wallet_mode("normal")
    eventually(lambda: pipeline.wallet_balance(player) == STARTING_BALANCE - 100 + 2_500, 30)
    code, status, balance = answer(pipeline.win(player, token, w, 2_500))
    assert (code, status, balance) == (200, "OK", STARTING_BALANCE - 100 + 2_500)
    time.sleep(1)  # no resend may credit it twice
    assert pipeline.wallet_balance(player) == STARTING_BALANCE - 100 + 2_500


EXPECTED_METRICS = {
    "ingress": [
        "agg_ingress_callbacks_total",
        "agg_ingress_callback_seconds_bucket",
        "agg_ingress_pending_waits",
        "agg_ingress_outcome_timeouts_total",
    ],
    "saga": [
        "agg_saga_decisions_total",
        "agg_saga_pending_commands",
        "agg_saga_wallet_reply_seconds_bucket",
        "agg_saga_timeouts_total",
        "agg_saga_compensations_total",
        "agg_saga_duplicates_total",
        "agg_saga_consumer_lag",
    ],
    "wallet": [
        "agg_wallet_commands_total",
        "agg_wallet_batch_seconds_bucket",
        "agg_wallet_consumer_lag",
    ],
    "projector": [
        "agg_projector_events_total",
        "agg_projector_lag",
        "agg_projector_batch_seconds_bucket",
    ],
}


def test_every_service_exposes_its_metrics_after_traffic(pipeline: Pipeline) -> None:
    """Runs after the module's traffic (duplicates, timeouts, compensations included)."""
    ports = {
        "ingress": pipeline.ingress_port,
        "saga": pipeline.saga_port,
        "wallet": pipeline.wallet_port,
        "projector": pipeline.projector_port,
    }

    def samples(service: str) -> dict[str, float]:
        text = httpx.get(f"http://127.0.0.1:{ports[service]}/metrics", timeout=5).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name = line.split("{")[0].split(" ")[0]
                out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        return out

    eventually(lambda: samples("projector").get("agg_projector_events_total", 0) > 0, 30)
    for service, names in EXPECTED_METRICS.items():
        found = samples(service)
        missing = [n for n in names if n not in found]
        assert not missing, f"{service} lacks {missing}"
    saga = samples("saga")
    assert saga["agg_saga_timeouts_total"] >= 1 and saga["agg_saga_compensations_total"] >= 1
    assert saga["agg_saga_duplicates_total"] >= 1
    assert samples("ingress")["agg_ingress_callbacks_total"] >= 10


def test_demo_play_never_moves_real_money(pipeline: Pipeline) -> None:
    """A demo session's bets, wins and rollbacks move the aggregator's demo balance, which
    the answers carry, and nothing at the operator's wallet, in the ledger or in GGR."""
    game = "nova-megaways"  # a game of its own here, so its GGR is this test's

    def ggr() -> int:
        with psycopg.connect(pipeline.settings.database_url) as conn:
            row = conn.execute(
                "select coalesce(sum(ggr), 0) from projection.revenue_daily"
                " where operator_id = %s and game_id = %s",
                (OPERATOR, game),
            ).fetchone()
        return int(row[0]) if row else 0

    def projected(query: str, player: str) -> list[tuple[object, ...]]:
        with psycopg.connect(pipeline.settings.database_url) as conn:
            return conn.execute(query, (OPERATOR, player)).fetchall()

    before = ggr()
    player, token = pipeline.new_player(mode="demo", game=game)
    kept, rolled_back = txn(), txn()
    play = {"game_id": game}
    assert answer(pipeline.bet(player, token, kept, 250, **play)) == (
        200, "OK", DEMO_STARTING_BALANCE - 250)  # fmt: skip
    assert answer(pipeline.bet(player, token, rolled_back, 400, **play)) == (
        200, "OK", DEMO_STARTING_BALANCE - 650)  # fmt: skip
    assert answer(pipeline.win(player, token, txn(), 1_000, round_closed=True, **play)) == (
        200, "OK", DEMO_STARTING_BALANCE + 350)  # fmt: skip
    refund = pipeline.callback(
        "rollback", player, token, transaction_id=txn(), reference_transaction_id=rolled_back,
        round_id="rnd-1", **play,
    )  # fmt: skip
    assert answer(refund) == (200, "OK", DEMO_STARTING_BALANCE + 750)
    # a retried demo bet is the same bet; the demo balance bounds demo bets
    assert answer(pipeline.bet(player, token, kept, 250, **play)) == (
        200, "OK", DEMO_STARTING_BALANCE - 250)  # fmt: skip
    code, status, balance = answer(pipeline.bet(player, token, txn(), 10**6, **play))
    assert (code, status, balance) == (200, "INSUFFICIENT_FUNDS", DEMO_STARTING_BALANCE + 750)
    body = pipeline.callback("balance", player, token, game_id=game).json()
    assert (body["status"], body["balance"]) == ("OK", DEMO_STARTING_BALANCE + 750)

    # the operator's wallet never heard of this player: no account, no command
    assert pipeline.wallet_balance(player) is None
    assert projected("select count(*) from wallet.commands where operator_id = %s"
                     " and player_id = %s", player) == [(0,)]  # fmt: skip
    # the journal has the demo play, marked demo; the projections keep it apart
    eventually(lambda: projected(
        "select balance from projection.demo_balances where operator_id = %s"
        " and player_id = %s", player) == [(DEMO_STARTING_BALANCE + 750,)])  # fmt: skip
    modes = projected("select distinct payload->>'mode' from projection.journal"
                      " where operator_id = %s and player_id = %s and event_type <> "
                      "'SessionOpened'", player)  # fmt: skip
    assert modes == [("demo",)]
    for table in ("transactions", "rounds", "balances"):
        assert projected(f"select count(*) from projection.{table} where operator_id = %s"
                         " and player_id = %s", player) == [(0,)], table  # fmt: skip
    assert pipeline.balance_mismatches(player) == []

    # real play of the same game moves GGR by its own amount, and demo play by nothing
    real_player, real_token = pipeline.new_player(game=game)
    assert answer(pipeline.bet(real_player, real_token, txn(), 70, **play))[:2] == (200, "OK")
    real_rows = (
        "select count(*) from projection.transactions where operator_id = %s and player_id = %s"
    )
    eventually(lambda: projected(real_rows, real_player) == [(1,)])
    assert ggr() - before == 70
    assert pipeline.wallet_balance(real_player) == STARTING_BALANCE - 70
