"""End to end: an expired session refuses play but still settles what the player is owed.

The services run with 5-second sessions. A bet is accepted, the session expires, and then
the provider's win and its rollback of another bet are still accepted and credited to the
operator's wallet, while a new bet and a balance call get SESSION_EXPIRED."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import pytest

from agg_config.settings import Settings
from tests.e2e.conftest import STARTING_BALANCE, Pipeline
from tests.e2e.test_pipeline import answer, eventually, txn

SESSION_TTL_S = 5


@pytest.fixture(scope="module")
def pipeline(
    settings: Settings,
    catalogue_topics: list[str],
    tmp_path_factory: pytest.TempPathFactory,
    projector_client: str,
) -> Iterator[Pipeline]:
    p = Pipeline(
        settings,
        tmp_path_factory.mktemp("pipeline-expiry"),
        env={"AGG_SESSION_TTL_S": str(SESSION_TTL_S)},
        projector_client=projector_client,
    )
    try:
        p.start()
        yield p
    finally:
        p.stop()


def expires_at_s(token: str) -> float:
    """The token's expiry as its payload (readable, the MAC is what cannot be forged) says."""
    payload = token.split(".")[0]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return float(claims["expires_at"]) / 1000


def test_wins_and_rollbacks_settle_after_the_session_expired(pipeline: Pipeline) -> None:
    player, token = pipeline.new_player()
    assert expires_at_s(token) - time.time() <= SESSION_TTL_S + 1
    kept, rolled_back = txn(), txn()
    assert answer(pipeline.bet(player, token, kept, 300)) == (200, "OK", STARTING_BALANCE - 300)
    assert answer(pipeline.bet(player, token, rolled_back, 200)) == (
        200, "OK", STARTING_BALANCE - 500)  # fmt: skip

    time.sleep(max(0.0, expires_at_s(token) - time.time()) + 0.5)

    # play is over
    code, status, _ = answer(pipeline.bet(player, token, txn(), 100))
    assert (code, status) == (200, "SESSION_EXPIRED")
    assert answer(pipeline.callback("balance", player, token))[:2] == (200, "SESSION_EXPIRED")
    assert pipeline.wallet_balance(player) == STARTING_BALANCE - 500

    # what is owed still settles: the round's win and the rollback of the other bet
    win = txn()
    assert answer(pipeline.win(player, token, win, 450, round_closed=True)) == (
        200, "OK", STARTING_BALANCE - 50)  # fmt: skip
    assert answer(pipeline.rollback(player, token, txn(), rolled_back)) == (
        200, "OK", STARTING_BALANCE + 150)  # fmt: skip
    # a provider's retry of the win is the same win, credited once
    assert answer(pipeline.win(player, token, win, 450, round_closed=True)) == (
        200, "OK", STARTING_BALANCE - 50)  # fmt: skip
    eventually(lambda: pipeline.wallet_balance(player) == STARTING_BALANCE + 150)
    # and, once projected, the journal agrees with the wallet (aggregator reconcile's rule)
    eventually(lambda: pipeline.projected_balance(player) == STARTING_BALANCE + 150)
    assert pipeline.balance_mismatches(player) == []

    # the expired token still proves only its own session: another player's id is refused
    other, _ = pipeline.new_player()
    assert answer(pipeline.win(other, token, txn(), 10))[:2] == (200, "SESSION_NOT_FOUND")
    assert pipeline.wallet_balance(player) == STARTING_BALANCE + 150
