"""A ``pragmatic-v1`` provider against the whole pipeline: the real ingress, saga worker,
reference Kafka wallet and projector as processes on the session's Kafka and PostgreSQL.

Authenticate answers the player's reference as ``userId``; every later call (balance, bet,
result, refund, bonusWin, jackpotWin, promoWin, endRound) names the player by it and
carries no session token. A forged, tampered or another provider's reference is refused and
moves nothing; a demo session's reference never reaches the operator's wallet."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
import yaml

from agg_config.settings import Settings
from agg_ingress.adapters.pragmatic import decode_answer, request_hash
from agg_ingress.sessions import PlayerRef, issue_player_ref
from tests.e2e.conftest import DEMO_STARTING_BALANCE, OPERATOR, STARTING_BALANCE, Pipeline
from tests.e2e.test_pipeline import eventually

PRAG, PRAG_SECRET = "prov-prag", b"dev-secret-prov-prag-001"
OTHER, OTHER_SECRET = "prov-prag-two", b"dev-secret-prov-prag-002"
GAME, OTHER_GAME = "vs20doghouse", "vs10wolf"
P = "PragmaticPlay"


def _tenants_file(settings: Settings, root: Path) -> Path:
    """The dev tenants with two pragmatic-v1 providers; op-alpha offers both, op-beta none."""
    data = yaml.safe_load(settings.tenants_file.read_text())
    data["providers"] += [
        {"id": PRAG, "name": "Pragmatic", "protocol": "pragmatic-v1",
         "secret": {"value": PRAG_SECRET.decode()}},
        {"id": OTHER, "name": "Pragmatic Two", "protocol": "pragmatic-v1",
         "secret": {"value": OTHER_SECRET.decode()}},
    ]  # fmt: skip
    data["games"] += [
        {"id": GAME, "provider": PRAG, "name": "The Dog House"},
        {"id": OTHER_GAME, "provider": OTHER, "name": "Wolf Gold"},
    ]
    data["operators"][0]["providers"] += [PRAG, OTHER]
    path = root / "tenants-pragmatic.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def pipeline(
    settings: Settings, catalogue_topics: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    root = tmp_path_factory.mktemp("pipeline-pragmatic")
    p = Pipeline(settings, root, env={"AGG_TENANTS_FILE": str(_tenants_file(settings, root))})
    try:
        p.start()
        yield p
    finally:
        p.stop()


def call(pipeline: Pipeline, method: str, params: dict[str, str], *, provider: str = PRAG,
         secret: bytes = PRAG_SECRET, hash_value: str | None = None) -> dict[str, Any]:  # fmt: skip
    """POST a form as a pragmatic-v1 provider does; the answer's fields (HTTP 200 always)."""
    params = {"providerId": P, **params}
    body = urlencode({**params, "hash": hash_value or request_hash(params, secret)})
    response = pipeline.http.post(
        f"/v1/providers/{provider}/{method}",
        content=body.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    return decode_answer(response.content)


def authenticate(pipeline: Pipeline, mode: str = "real", currency: str = "EUR",
                 player: str | None = None) -> tuple[str, str, str]:  # fmt: skip
    """A new session of a player (a new one unless given): its player, token and userId."""
    if player is None:
        player, token = pipeline.new_player(currency=currency, mode=mode, game=GAME)
    else:
        token = session_for(pipeline, player, mode, currency)
    answer = call(pipeline, "authenticate.html", {"token": token, "gameId": GAME})
    assert answer["error"] == 0, answer
    return player, token, str(answer["userId"])


def session_for(pipeline: Pipeline, player: str, mode: str, currency: str) -> str:
    response = pipeline._post(
        pipeline.operator_secret, f"/v1/operators/{OPERATOR}/sessions",
        {"player_id": player, "currency": currency, "country": "MT", "game_id": GAME,
         "mode": mode},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    return str(response.json()["session_token"])


def ref() -> str:
    return uuid.uuid4().hex[:20]


def bet(pipeline: Pipeline, user: str, reference: str, amount: str, round_id: str = "r-1",
        game: str = GAME, provider: str = PRAG,
        secret: bytes = PRAG_SECRET) -> dict[str, Any]:  # fmt: skip
    return call(pipeline, "bet.html", {"userId": user, "reference": reference, "gameId": game,
                                       "roundId": round_id, "amount": amount,
                                       "timestamp": "1700000000000", "roundDetails": "spin"},
                provider=provider, secret=secret)  # fmt: skip


def test_authenticate_answers_a_stable_user_id_and_balance_reads_by_it(pipeline: Pipeline) -> None:
    player, token, user = authenticate(pipeline)
    answer = call(pipeline, "authenticate.html", {"token": token})
    assert answer == {"userId": user, "currency": "EUR", "cash": "1000.00", "bonus": "0.00",
                      "error": 0, "description": "Success",
                      "cash_minor": STARTING_BALANCE}  # fmt: skip
    # another session of the same player and currency: the same userId
    assert authenticate(pipeline, player=player)[2] == user
    balance = call(pipeline, "balance.html", {"userId": user})
    assert (balance["error"], balance["cash_minor"], balance["userId"]) == (
        0, STARTING_BALANCE, user)  # fmt: skip
    # with a token, the session is checked as well, and must be the userId's
    assert call(pipeline, "balance.html", {"userId": user, "token": token})["error"] == 0
    _, other_token, _ = authenticate(pipeline)
    assert call(pipeline, "balance.html", {"userId": user, "token": other_token})["error"] == 4
    assert call(pipeline, "authenticate.html", {"token": token + "x"})["error"] == 4


def test_bet_result_refund_wins_and_end_round_move_the_wallet(pipeline: Pipeline) -> None:
    player, _, user = authenticate(pipeline)
    kept, refunded, win = ref(), ref(), ref()
    first = bet(pipeline, user, kept, "2.50")
    assert (first["error"], first["cash_minor"], first["transactionId"]) == (
        0, STARTING_BALANCE - 250, kept)  # fmt: skip
    assert bet(pipeline, user, refunded, "1.25")["cash_minor"] == STARTING_BALANCE - 375
    result = call(pipeline, "result.html", {"userId": user, "reference": win, "gameId": GAME,
                                            "roundId": "r-1", "amount": "10.00"})  # fmt: skip
    assert (result["error"], result["cash_minor"]) == (0, STARTING_BALANCE + 625)
    refund = call(pipeline, "refund.html", {"userId": user, "reference": refunded})
    assert (refund["error"], refund["cash_minor"]) == (0, STARTING_BALANCE + 750)
    assert refund["transactionId"] == f"rf:{refunded}"
    # provider-funded and jackpot money: wins of their own id spaces (a bonusWin may reuse a
    # bet's reference without touching the bet)
    bonus = call(pipeline, "bonusWin.html", {"userId": user, "reference": kept, "amount": "5"})
    assert (bonus["error"], bonus["cash_minor"], bonus["transactionId"]) == (
        0, STARTING_BALANCE + 1250, f"bw:{kept}")  # fmt: skip
    jackpot = call(pipeline, "jackpotWin.html", {"userId": user, "reference": ref(),
                                                 "gameId": GAME, "roundId": "r-1",
                                                 "jackpotId": "7", "amount": "100.00"})  # fmt: skip
    assert (jackpot["error"], jackpot["cash_minor"]) == (0, STARTING_BALANCE + 11_250)
    promo = call(pipeline, "promoWin.html", {"userId": user, "reference": ref(), "amount": "0.50",
                                             "currency": "EUR", "campaignId": "c-1",
                                             "campaignType": "T"})  # fmt: skip
    assert (promo["error"], promo["cash_minor"]) == (0, STARTING_BALANCE + 11_300)
    end = {"userId": user, "gameId": GAME, "roundId": "r-1"}
    closed = call(pipeline, "endRound.html", end)
    assert (closed["error"], closed["cash_minor"]) == (0, STARTING_BALANCE + 11_300)
    assert "transactionId" not in closed
    assert call(pipeline, "endRound.html", end)["cash_minor"] == STARTING_BALANCE + 11_300
    assert pipeline.wallet_balance(player) == STARTING_BALANCE + 11_300
    # endRound closed the round with its totals (bonusWin and promoWin name no round)

    def round_r1() -> list[tuple[object, ...]]:
        with psycopg.connect(pipeline.settings.database_url) as conn:
            return conn.execute(
                "select status, bet_total, win_total, refund_total from projection.rounds"
                " where operator_id = %s and provider_id = %s and player_id = %s"
                " and round_id = 'r-1'",
                (OPERATOR, PRAG, player),
            ).fetchall()

    eventually(lambda: round_r1() == [("CLOSED", 375, 11_000, 125)])
    # the round is over for the saga too: a bet on it is refused, nothing debited
    late = bet(pipeline, user, ref(), "1.00")
    assert (late["error"], late["description"], late["cash_minor"]) == (
        3, "Bet not allowed: the round is closed", STARTING_BALANCE + 11_300)  # fmt: skip
    assert pipeline.wallet_balance(player) == STARTING_BALANCE + 11_300


def test_a_repeated_reference_gets_its_first_answer_and_other_content_is_refused(
    pipeline: Pipeline,
) -> None:
    player, _, user = authenticate(pipeline)
    reference = ref()
    first = bet(pipeline, user, reference, "3.00")
    assert first["error"] == 0
    assert bet(pipeline, user, reference, "3.00") == first
    conflict = bet(pipeline, user, reference, "4.00")
    assert conflict["error"] == 7 and "already used" in conflict["description"]
    assert pipeline.wallet_balance(player) == STARTING_BALANCE - 300
    # a refund of a bet never seen is recorded; the late bet is then refused
    late = ref()
    assert call(pipeline, "refund.html", {"userId": user, "reference": late})["error"] == 0
    assert bet(pipeline, user, late, "1.00")["error"] == 3
    assert pipeline.wallet_balance(player) == STARTING_BALANCE - 300


def test_insufficient_funds_and_bad_amounts_move_nothing(pipeline: Pipeline) -> None:
    player, _, user = authenticate(pipeline)
    poor = bet(pipeline, user, ref(), "5000.00")
    assert (poor["error"], poor["cash_minor"]) == (1, STARTING_BALANCE)
    assert bet(pipeline, user, ref(), "0.005")["error"] == 7
    assert bet(pipeline, user, ref(), "0")["error"] == 7
    assert pipeline.wallet_balance(player) == STARTING_BALANCE


def test_bad_hashes_and_forged_or_foreign_user_ids_are_refused(
    pipeline: Pipeline, settings: Settings
) -> None:
    player, _, user = authenticate(pipeline)
    params = {"userId": user, "reference": ref(), "gameId": GAME, "roundId": "r-1",
              "amount": "1.00"}  # fmt: skip
    assert call(pipeline, "bet.html", params, hash_value="0" * 32) == {
        "error": 5, "description": "Invalid hash"}  # fmt: skip
    assert call(pipeline, "bet.html", params, secret=OTHER_SECRET)["error"] == 5
    # another player's id in the payload under the original MAC
    payload_text, mac = user.split(".")
    payload = json.loads(base64.urlsafe_b64decode(payload_text + "=" * (-len(payload_text) % 4)))
    payload["p"] = "someone-else"
    forged = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    forged_payload = base64.urlsafe_b64encode(forged).rstrip(b"=").decode()
    assert bet(pipeline, f"{forged_payload}.{mac}", ref(), "1.00")["error"] == 2
    # made with another key: not ours
    other_key = issue_player_ref(b"not-the-session-secret-000000000",
                              PlayerRef(OPERATOR, player, PRAG, "EUR", "real"))  # fmt: skip
    assert bet(pipeline, other_key, ref(), "1.00")["error"] == 2
    # our reference for this provider, at another provider of the same protocol
    foreign = bet(pipeline, user, ref(), "1.00", game=OTHER_GAME, provider=OTHER,
                  secret=OTHER_SECRET)  # fmt: skip
    assert foreign["error"] == 2
    # authentic, but the operator does not offer this provider
    secret = settings.session_secret.get_secret_value().encode()
    beta = issue_player_ref(secret, PlayerRef("op-beta", player, PRAG, "EUR", "real"))
    assert bet(pipeline, beta, ref(), "1.00")["error"] == 8
    # a game of another provider
    assert bet(pipeline, user, ref(), "1.00", game="nova-starfall")["error"] == 8
    # a promo win in another currency than the player's
    promo = {"userId": user, "reference": ref(), "amount": "1.00", "currency": "USD"}
    assert call(pipeline, "promoWin.html", promo)["error"] == 7
    assert pipeline.wallet_balance(player) == STARTING_BALANCE


def test_a_demo_sessions_user_id_never_moves_real_money(pipeline: Pipeline) -> None:
    player, _, real_user = authenticate(pipeline)
    _, _, demo_user = authenticate(pipeline, mode="demo", player=player)
    assert demo_user != real_user
    played = bet(pipeline, demo_user, ref(), "2.00")
    assert (played["error"], played["cash_minor"]) == (0, DEMO_STARTING_BALANCE - 200)
    win = {"userId": demo_user, "reference": ref(), "gameId": GAME, "roundId": "d-1",
           "amount": "7.00"}  # fmt: skip
    won = call(pipeline, "result.html", win)
    assert (won["error"], won["cash_minor"]) == (0, DEMO_STARTING_BALANCE + 500)
    # the real wallet holds only the real authenticate's view of the player
    assert pipeline.wallet_balance(player) == STARTING_BALANCE
    with psycopg.connect(pipeline.settings.database_url) as conn:
        kinds = conn.execute(
            "select distinct kind from wallet.commands where operator_id = %s and player_id = %s",
            (OPERATOR, player),
        ).fetchall()
    assert kinds == [("BALANCE",)]


def test_a_free_round_bonus_plays_the_operators_campaign(pipeline: Pipeline) -> None:
    """The operator grants a campaign; the provider's bet and result of a free round carry
    its id as ``bonusCode``: nothing is debited, the result is credited as a bonus win."""
    player, _, user = authenticate(pipeline)
    code = f"frb-{uuid.uuid4().hex[:8]}"
    granted = pipeline._post(
        pipeline.operator_secret, f"/v1/operators/{OPERATOR}/players/{player}/campaigns",
        {"campaign_id": code, "provider_id": PRAG, "games": [GAME], "spins": 1,
         "bet_value": 50, "currency": "EUR", "expires_at": "2099-01-01T00:00:00Z"},
    )  # fmt: skip
    assert granted.status_code == 200, granted.text
    spin, win = ref(), ref()
    free = call(pipeline, "bet.html", {"userId": user, "reference": spin, "gameId": GAME,
                                       "roundId": "fr-1", "amount": "0.50",
                                       "bonusCode": code})  # fmt: skip
    assert (free["error"], free["cash_minor"]) == (0, STARTING_BALANCE)
    # the campaign's only spin is played: another is refused, nothing debited
    again = call(pipeline, "bet.html", {"userId": user, "reference": ref(), "gameId": GAME,
                                        "roundId": "fr-2", "amount": "0.50",
                                        "bonusCode": code})  # fmt: skip
    assert again["error"] != 0
    result = call(pipeline, "result.html", {"userId": user, "reference": win, "gameId": GAME,
                                            "roundId": "fr-1", "amount": "4.00",
                                            "bonusCode": code})  # fmt: skip
    assert (result["error"], result["cash_minor"]) == (0, STARTING_BALANCE + 400)
    assert pipeline.wallet_balance(player) == STARTING_BALANCE + 400

    def journaled() -> list[tuple[str, str]]:
        with psycopg.connect(pipeline.settings.database_url) as conn:
            rows = conn.execute(
                "select event_type, coalesce(payload->>'win_kind', '') from projection.journal"
                " where player_id = %s and event_type in ('FreeSpinPlayed', 'WinCredited')",
                (player,),
            ).fetchall()
        return sorted((str(a), str(b)) for a, b in rows)

    eventually(lambda: len(journaled()) == 2, 30)
    assert journaled() == [("FreeSpinPlayed", ""), ("WinCredited", "BONUS")]
