"""Each kind of discrepancy, injected into a journal, shows in the reconciliation report
under its own heading, and a clean journal reports none."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from agg_config.settings import Settings
from agg_projector.reconcile import run_report
from tests.integration.test_projector import counts, isolated, publish, run_projector

__all__ = ["isolated"]  # the fixture, shared with the projector tests

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
N = 0


def event(
    name: str, player: str, txn: str | None = None, **fields: Any
) -> tuple[str, dict[str, Any]]:
    global N
    N += 1
    base: dict[str, Any] = {
        "event_id": f"ev-{uuid.uuid4().hex}",
        "correlation_id": f"c-{N}",
        "operator_id": "op-alpha",
        "player_id": player,
        "provider_id": "prov-nova",
        "occurred_at": T0 + timedelta(seconds=N),
    }
    if txn is not None:
        base |= {
            "transaction_id": txn,
            "round_id": fields.pop("round_id", f"r-{txn}"),
            "game_id": "nova-starfall",
            "amount": fields.pop("amount", 100),
            "currency": "EUR",
        }
    return name, {**base, **fields}


def closed(player: str, round_id: str) -> tuple[str, dict[str, Any]]:
    return event(
        "RoundClosed",
        player,
        round_id=round_id,
        game_id="nova-starfall",
        currency="EUR",
        bet_total=100,
        win_total=0,
        refund_total=0,
    )


@pytest.fixture
def project() -> Any:
    def run(events: list[tuple[str, dict[str, Any]]], isolated: Settings) -> str:
        schema = f"rc_{uuid.uuid4().hex[:8]}"
        asyncio.run(publish(isolated, events))
        run_projector(
            isolated,
            schema,
            lambda: counts(isolated.database_url, schema)["journal"][0] >= len(events),
        )
        time.sleep(0.3)
        return schema

    return run


def report(database_url: str, schema: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        _, found = run_report(conn, schema, timedelta(0), 50)
    return {title.split(" (")[0].split(" longer")[0]: n for title, n in found.items()}


def test_a_clean_journal_has_no_discrepancy(project: Any, isolated: Settings) -> None:
    events = [
        event("BetAccepted", "p1", "b1", command_id="c1", balance=900, round_closed=False),
        event(
            "WinCredited",
            "p1",
            "w1",
            round_id="r-b1",
            command_id="c2",
            balance=1_150,
            amount=250,
            round_closed=True,
        ),
        closed("p1", "r-b1"),
    ]
    schema = project(events, isolated)
    assert sum(report(isolated.database_url, schema).values()) == 0


def test_each_injected_discrepancy_is_reported_under_its_heading(
    project: Any, isolated: Settings
) -> None:
    events = [
        # a round never closed
        event("BetAccepted", "p1", "open-bet", command_id="c1", balance=900, round_closed=False),
        # a credit never acknowledged
        event("CreditOwed", "p2", "owed-win", command_id="c2", reason="wallet down"),
        # a debit that timed out, its cancel never acknowledged
        event("DebitTimedOut", "p3", "stuck-bet", command_id="c3", cancel_command_id="x3"),
        # a rollback of a bet never seen, and one whose bet came afterwards
        event(
            "RollbackRecorded",
            "p4",
            rollback_transaction_id="rb-1",
            reference_transaction_id="ghost-bet",
            round_id="r",
            game_id="g",
            bet_known=False,
        ),
        event(
            "RollbackRecorded",
            "p4",
            rollback_transaction_id="rb-2",
            reference_transaction_id="late-bet",
            round_id="r",
            game_id="g",
            bet_known=False,
        ),
        event(
            "BetRejected", "p4", "late-bet", status="BET_ROLLED_BACK", command_id=None, balance=None
        ),
        # the wallet's balances do not add up: 1000 -> bet 100 -> reported 850
        event("BetAccepted", "p5", "g1", command_id="c5", balance=1_000, round_closed=True),
        event("BetAccepted", "p5", "g2", command_id="c6", balance=850, round_closed=True),
    ]
    schema = project(events, isolated)
    found = report(isolated.database_url, schema)
    assert found == {
        "rounds open": 3,  # open-bet's, and p5's two rounds were never closed by an event
        "debits without a final outcome": 1,
        "rollbacks whose bet never arrived": 1,
        "bets that arrived after their rollback": 1,
        "credits still owed to players": 1,
        "breaks in the balance chain reported by operators' wallets": 1,
    }
