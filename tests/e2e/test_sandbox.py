"""End to end: the provider sandbox (docs/sandbox.md) as a provider sees it, through the
ingress, the saga and the reference wallet, with ``op-alpha``'s wallet in sandbox mode (a
copy of the dev tenants file with ``wallet.sandbox: true``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agg_config.settings import Settings
from tests.e2e.conftest import OPERATOR, STARTING_BALANCE, Pipeline
from tests.e2e.test_pipeline import answer, eventually, txn


@pytest.fixture(scope="module")
def projector_client() -> str:
    """One pipeline for the module: the sandbox is the wallet's, the projector's client is
    beside the point."""
    return "librdkafka"


@pytest.fixture(scope="module")
def pipeline(
    settings: Settings,
    catalogue_topics: list[str],
    tmp_path_factory: pytest.TempPathFactory,
    projector_client: str,
) -> Iterator[Pipeline]:
    root = tmp_path_factory.mktemp("pipeline-sandbox")
    tenants = yaml.safe_load(Path(settings.tenants_file).read_text())
    for operator in tenants["operators"]:
        if operator["id"] == OPERATOR:
            operator["wallet"] = {**operator.get("wallet", {}), "sandbox": True}
    tenants_file = root / "sandbox-tenants.yaml"
    tenants_file.write_text(yaml.safe_dump(tenants))
    p = Pipeline(settings, root, env={"AGG_TENANTS_FILE": str(tenants_file)},
                 projector_client=projector_client)  # fmt: skip
    try:
        p.start()
        yield p
    finally:
        p.stop()


def sandbox_player(pipeline: Pipeline, scenario: str) -> tuple[str, str]:
    player = f"sandbox-{scenario}-{uuid.uuid4().hex[:8]}"
    response = pipeline._post(
        pipeline.operator_secret,
        f"/v1/operators/{OPERATOR}/sessions",
        {"player_id": player, "currency": "EUR", "country": "MT", "game_id": "nova-starfall",
         "mode": "real"},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    return player, response.json()["session_token"]


@pytest.mark.parametrize(
    ("scenario", "status"),
    [
        ("insufficient", "INSUFFICIENT_FUNDS"),
        ("blocked", "PLAYER_BLOCKED"),
        ("limit", "LIMIT_EXCEEDED"),
    ],
)
def test_refusing_scenarios_refuse_bets_and_still_pay_wins(
    pipeline: Pipeline, scenario: str, status: str
) -> None:
    player, token = sandbox_player(pipeline, scenario)
    assert answer(pipeline.bet(player, token, txn(), 300)) == (200, status, STARTING_BALANCE)
    assert answer(pipeline.win(player, token, txn(), 40)) == (200, "OK", STARTING_BALANCE + 40)
    assert pipeline.wallet_balance(player) == STARTING_BALANCE + 40


def test_ok_scenario_plays_normally(pipeline: Pipeline) -> None:
    player, token = sandbox_player(pipeline, "ok")
    assert answer(pipeline.bet(player, token, txn(), 300)) == (200, "OK", STARTING_BALANCE - 300)


def test_timeout_answers_retry_later_then_the_retry_is_accepted(pipeline: Pipeline) -> None:
    player, token = sandbox_player(pipeline, "timeout")
    bet = txn()
    assert answer(pipeline.bet(player, token, bet, 300))[:2] == (503, "RETRY_LATER")
    answers: list[tuple[int, str, int | None]] = []

    def retried() -> bool:
        answers.append(answer(pipeline.bet(player, token, bet, 300)))
        return answers[-1][1] != "RETRY_LATER"  # until the first attempt's cancel is acked

    eventually(retried)
    assert answers[-1] == (200, "OK", STARTING_BALANCE - 300)
    assert pipeline.wallet_balance(player) == STARTING_BALANCE - 300


def test_error_answers_retry_later_and_a_rollback_settles_it(pipeline: Pipeline) -> None:
    player, token = sandbox_player(pipeline, "error")
    bet = txn()
    assert answer(pipeline.bet(player, token, bet, 300))[:2] == (503, "RETRY_LATER")
    rollback = txn()  # retried with its own id until the bet's cancel is acknowledged
    eventually(lambda: answer(pipeline.rollback(player, token, rollback, bet))[1] == "OK")
    assert answer(pipeline.bet(player, token, bet, 300))[:2] == (200, "BET_ROLLED_BACK")
    assert pipeline.wallet_balance(player) == STARTING_BALANCE  # refused, moved nothing


def test_rollback_before_bet_is_the_providers_own_scenario(pipeline: Pipeline) -> None:
    player, token = sandbox_player(pipeline, "ok")
    bet = txn()
    assert answer(pipeline.rollback(player, token, txn(), bet))[:2] == (200, "OK")
    assert answer(pipeline.bet(player, token, bet, 300))[:2] == (200, "BET_ROLLED_BACK")
    # decided by the saga alone: the wallet was never asked to move anything
    assert pipeline.wallet_balance(player) in (None, STARTING_BALANCE)
