"""Free-spin campaigns end to end on real Kafka and PostgreSQL: the operator grants a
campaign through the operator API, the provider's free spins (canonical-v1 bets naming the
campaign) move no money at the operator's wallet, their wins are credited as BONUS wins,
used-up, cancelled and expired campaigns refuse further spins, the journal and the read API
show every step, and a replay of the journal rebuilds the campaigns table exactly."""

from __future__ import annotations

import asyncio
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
from agg_projector.projector import GROUP_ID
from agg_projector.replay import behind, compare, end_offsets, replay
from tests.e2e.conftest import GAME, OPERATOR, PROVIDER, STARTING_BALANCE, Pipeline
from tests.e2e.test_pipeline import answer, eventually
from tests.e2e.test_transfer_wallet import Delta


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


def _at(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def grant(pipeline: Pipeline, player: str, campaign_id: str, **fields: Any) -> httpx.Response:
    body = {"campaign_id": campaign_id, "provider_id": PROVIDER, "games": [GAME], "spins": 2,
            "bet_value": 20, "currency": "EUR", "expires_at": _at(timedelta(hours=1)),
            **fields}  # fmt: skip
    return pipeline._post(pipeline.operator_secret,
                          f"/v1/operators/{OPERATOR}/players/{player}/campaigns", body)  # fmt: skip


def cancel(pipeline: Pipeline, player: str, campaign_id: str) -> httpx.Response:
    path = f"/v1/operators/{OPERATOR}/players/{player}/campaigns/{campaign_id}/cancel"
    return pipeline._post(pipeline.operator_secret, path, {})


def campaigns(pipeline: Pipeline, player: str) -> dict[str, dict[str, Any]]:
    response = pipeline.read(f"/v1/operators/{OPERATOR}/players/{player}/campaigns")
    assert response.status_code == 200, response.text
    return {c["campaign_id"]: c for c in response.json()["campaigns"]}


def journal(pipeline: Pipeline, player: str) -> list[tuple[str, str | None]]:
    with psycopg.connect(pipeline.settings.database_url) as conn:
        rows = conn.execute(
            "select event_type, payload->>'campaign_id' from projection.journal"
            ' where operator_id = %s and player_id = %s order by "offset"',
            (OPERATOR, player),
        ).fetchall()
    return [(str(name), campaign) for name, campaign in rows]


def test_a_campaign_granted_played_used_up_and_its_wins_credited(pipeline: Pipeline) -> None:
    player, token = pipeline.new_player()
    tag = uuid.uuid4().hex[:8]
    cid = f"fs-{tag}"
    expires = _at(timedelta(hours=1))
    granted = grant(pipeline, player, cid, expires_at=expires)
    assert granted.status_code == 200, granted.text
    assert (granted.json()["status"], granted.json()["spins_left"]) == ("OK", 2)
    again = grant(pipeline, player, cid, expires_at=expires)  # the original answer
    assert again.status_code == 200 and again.json()["spins_left"] == 2
    conflict = grant(pipeline, player, cid, spins=5, expires_at=expires)
    assert conflict.status_code == 409 and conflict.json()["status"] == "DUPLICATE_CONFLICT"

    # a real bet first, so that the saga knows the balance it answers free spins with
    balance = STARTING_BALANCE - 100
    assert answer(pipeline.bet(player, token, f"b-{tag}", 100, round_id=f"r0-{tag}")) == (
        200, "OK", balance)  # fmt: skip
    for n in (1, 2):
        got = pipeline.bet(player, token, f"fs{n}-{tag}", 20, round_id=f"r{n}-{tag}",
                           campaign_id=cid)  # fmt: skip
        assert answer(got) == (200, "OK", balance), got.text
    assert pipeline.wallet_balance(player) == balance, "a free spin debits nothing"
    # spins used up: the third is refused
    third = pipeline.bet(player, token, f"fs3-{tag}", 20, round_id=f"r3-{tag}", campaign_id=cid)
    assert answer(third)[:2] == (200, "LIMIT_EXCEEDED")
    # a wrong stake is refused too (on a fresh campaign)
    cid2 = f"fs2-{tag}"
    assert grant(pipeline, player, cid2).status_code == 200
    wrong = pipeline.bet(player, token, f"fsx-{tag}", 21, round_id=f"rx-{tag}", campaign_id=cid2)
    assert answer(wrong)[:2] == (200, "LIMIT_EXCEEDED")
    # the spin's win: credited, as a BONUS win whatever the provider named
    win = pipeline.win(player, token, f"w1-{tag}", 500, round_id=f"r1-{tag}", campaign_id=cid,
                       round_closed=True)  # fmt: skip
    assert answer(win) == (200, "OK", balance + 500)
    assert pipeline.wallet_balance(player) == balance + 500
    # a rollback of the second spin gives it back, and moves no money
    back = pipeline.rollback(player, token, f"rb-{tag}", f"fs2-{tag}")
    assert answer(back)[:2] == (200, "OK")
    assert pipeline.wallet_balance(player) == balance + 500

    def projected() -> bool:
        c = campaigns(pipeline, player).get(cid)
        return c is not None and c["spins_left"] == 1 and c["wins"] == 1

    eventually(projected, 30)
    row = campaigns(pipeline, player)[cid]
    assert (row["state"], row["win_total"], row["spins"]) == ("ACTIVE", 500, 2)
    names = [name for name, campaign in journal(pipeline, player) if campaign in (cid, None)]
    assert names.count("FreeSpinPlayed") == 2 and "FreeSpinRolledBack" in names
    with psycopg.connect(pipeline.settings.database_url) as conn:
        kinds = conn.execute(
            "select payload->>'win_kind', payload->>'campaign_id' from projection.journal"
            " where event_type = 'WinCredited' and player_id = %s",
            (player,),
        ).fetchall()
        assert kinds == [("BONUS", cid)]
        free = conn.execute(
            "select status, amount from projection.transactions where player_id = %s"
            " and transaction_id like 'fs%%' order by transaction_id",
            (player,),
        ).fetchall()
        assert ("FREE_SPIN", 20) in free and ("FREE_SPIN_ROLLED_BACK", 20) in free
        # a free spin's stake is not revenue
        bets = conn.execute(
            "select coalesce(sum(bet_total), 0) from projection.rounds where player_id = %s",
            (player,)).fetchone()  # fmt: skip
        assert bets is not None and int(bets[0]) == 100
    assert pipeline.balance_mismatches(player) == []


def test_a_cancelled_campaign_and_an_expired_one_refuse_their_spins(pipeline: Pipeline) -> None:
    player, token = pipeline.new_player()
    tag = uuid.uuid4().hex[:8]
    cancelled, expiring = f"fc-{tag}", f"fe-{tag}"
    assert grant(pipeline, player, cancelled, spins=3).status_code == 200
    assert (
        grant(pipeline, player, expiring, expires_at=_at(timedelta(seconds=4))).status_code == 200
    )
    played = pipeline.bet(player, token, f"c1-{tag}", 20, round_id=f"rc-{tag}",
                          campaign_id=cancelled)  # fmt: skip
    assert answer(played)[1] == "OK"
    done = cancel(pipeline, player, cancelled)
    assert done.status_code == 200 and done.json()["spins_left"] == 2
    assert cancel(pipeline, player, cancelled).json()["spins_left"] == 2  # a repeat
    unknown = cancel(pipeline, player, f"nope-{tag}")
    assert unknown.status_code == 404 and unknown.json()["status"] == "CAMPAIGN_NOT_FOUND"
    refused = pipeline.bet(player, token, f"c2-{tag}", 20, round_id=f"rc2-{tag}",
                           campaign_id=cancelled)  # fmt: skip
    assert answer(refused)[1] == "LIMIT_EXCEEDED"
    # a grant already expired is refused at once
    past = grant(pipeline, player, f"fp-{tag}", expires_at=_at(timedelta(seconds=-1)))
    assert past.status_code == 422 and past.json()["status"] == "CAMPAIGN_EXPIRED"

    # the saga's timer expires the other one at its time, with no spin to trigger it
    def expired() -> bool:
        return campaigns(pipeline, player).get(expiring, {}).get("state") == "EXPIRED"

    eventually(expired, 30)
    assert ("CampaignExpired", expiring) in journal(pipeline, player)
    late = pipeline.bet(player, token, f"e1-{tag}", 20, round_id=f"re-{tag}",
                        campaign_id=expiring)  # fmt: skip
    assert answer(late)[1] == "LIMIT_EXCEEDED"

    def rules() -> dict[str, str]:
        with psycopg.connect(pipeline.settings.database_url) as conn:
            rows = conn.execute(
                "select transaction_id, rule from projection.transactions where player_id = %s"
                " and rule like 'campaign:%%'", (player,)).fetchall()  # fmt: skip
        return {str(t): str(r) for t, r in rows}

    eventually(lambda: len(rules()) >= 2, 30)
    assert rules()[f"c2-{tag}"] == "campaign:cancelled"
    assert rules()[f"e1-{tag}"] == "campaign:expired"
    # no money moved at the operator's wallet (it has not even seen the player)
    assert pipeline.wallet_balance(player) in (None, STARTING_BALANCE)
    state = campaigns(pipeline, player)
    assert state[cancelled]["state"] == "CANCELLED" and state[cancelled]["spins_left"] == 2


def test_a_transfer_wallets_free_spins_keep_the_held_balance(pipeline: Pipeline) -> None:
    """op-delta holds its players' funds here: a free spin leaves the held balance as it
    is, the campaign's win adds to it."""
    delta = load_tenants(pipeline.settings.tenants_file).operator("op-delta")
    assert delta is not None and delta.wallet.mode == "transfer"
    secret = delta.secret.reveal()
    player = f"e2e-{uuid.uuid4().hex[:10]}"
    tag = uuid.uuid4().hex[:8]
    base = f"/v1/operators/op-delta/players/{player}"
    operator = Delta(pipeline)  # as the reference operator: its own ledger moves in step
    moved = operator.move("deposit", player, 1_000, f"dep-{tag}")
    assert (moved.status, moved.held_balance) == ("OK", 1_000)
    session = pipeline._post(secret, "/v1/operators/op-delta/sessions", {
        "player_id": player, "currency": "EUR", "country": "MT", "game_id": GAME,
        "mode": "real"})  # fmt: skip
    assert session.status_code == 201, session.text
    token = session.json()["session_token"]
    cid = f"fd-{tag}"
    granted = pipeline._post(secret, f"{base}/campaigns", {
        "campaign_id": cid, "provider_id": PROVIDER, "games": [GAME], "spins": 1,
        "bet_value": 30, "currency": "EUR", "expires_at": _at(timedelta(hours=1))})  # fmt: skip
    assert granted.status_code == 200, granted.text
    spun = pipeline.bet(player, token, f"s-{tag}", 30, round_id=f"r-{tag}", campaign_id=cid)
    assert answer(spun) == (200, "OK", 1_000)
    won = pipeline.win(player, token, f"w-{tag}", 250, round_id=f"r-{tag}", campaign_id=cid)
    assert answer(won) == (200, "OK", 1_250)
    out = operator.move("withdraw", player, None, f"wd-{tag}")
    assert (out.status, out.amount) == ("OK", 1_250)


def test_replay_rebuilds_the_campaigns(pipeline: Pipeline) -> None:
    settings = pipeline.settings
    topic = f"{settings.topic_prefix}.events"
    time.sleep(2)
    ends = asyncio.run(end_offsets(settings, topic))
    eventually(lambda: behind(settings.database_url, "projection", GROUP_ID, topic, ends) == 0, 60)
    target = f"replay_{uuid.uuid4().hex[:8]}"
    result = asyncio.run(replay(settings, target, progress=None))
    assert result.undecodable == 0
    try:
        differences = compare(settings.database_url, "projection", target)
        assert differences == {table: [] for table in differences}, differences
        with psycopg.connect(settings.database_url) as conn:
            row = conn.execute(f"select count(*) from {target}.campaigns").fetchone()
        assert row is not None and int(row[0]) >= 4
    finally:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute(f"drop schema if exists {target} cascade")
