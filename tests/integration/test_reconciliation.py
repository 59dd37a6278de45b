"""Each kind of discrepancy, injected into a journal, shows in the reconciliation report
under its own heading, and a clean journal reports none: contradictory decisions in the
journal, and wallet balances (in a reference-wallet ledger of the test's own) that differ
from what the journal implies."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from agg_config.settings import Settings
from agg_projector.reconcile import main as reconcile_main
from agg_projector.reconcile import run_report
from agg_wallet.store import SCHEMA_SQL
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


def report(database_url: str, schema: str, wallet_schema: str | None = None) -> dict[str, int]:
    """Rows per discrepancy heading; the wallet's sections read ``wallet_schema`` (by default
    one that does not exist: other tests' wallets share this database)."""
    wallet = wallet_schema or f"nowallet_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url) as conn:
        _, found = run_report(conn, schema, timedelta(0), 50, wallet_schema=wallet)
    return {title.split(" (")[0].split(" longer")[0]: n for title, n in found.items()}


def wallet_ledger(database_url: str) -> str:
    """A fresh schema with the reference wallet's tables."""
    schema = f"wl_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(re.sub(r"\bwallet\b", schema, SCHEMA_SQL).encode())
    return schema


def account(database_url: str, wallet: str, player: str, opening: int, balance: int,
            moves: list[tuple[str, int, int]], applied_ago_s: float = 3600,
            operator: str = "op-alpha") -> None:  # fmt: skip
    """A wallet account and its ledger rows: (command id, amount, delta) each."""
    applied = datetime.now(UTC) - timedelta(seconds=applied_ago_s)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            f"insert into {wallet}.players (operator_id, player_id, currency, balance,"
            " opening_balance) values (%s, %s, 'EUR', %s, %s)",
            (operator, player, balance, opening),
        )
        for command_id, amount, delta in moves:
            effect = "debited" if delta < 0 else "credited"
            conn.execute(
                f"insert into {wallet}.commands (operator_id, command_id, player_id, kind, amount,"
                " currency, correlation_id, effect, delta, status, replied_at, applied_at)"
                " values (%s, %s, %s, %s, %s, 'EUR', 'c', %s, %s, 'OK', %s, %s)",
                (operator, command_id, player, "DEBIT" if delta < 0 else "CREDIT", amount,
                 effect, delta, applied, applied),
            )  # fmt: skip


def rows(database_url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query).fetchall()


def run_cli(monkeypatch: pytest.MonkeyPatch, isolated: Settings, *args: str) -> int:
    monkeypatch.setenv("AGG_DATABASE_URL", isolated.database_url)
    return reconcile_main(["--open-round-age", "1e9", *args])


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
        "contradictory decisions in the journal": 0,  # each event above is a sound decision
        "transfer-wallet balances that differ from the balance the journal implies": 0,
    }


def bet(player: str, txn: str, command_id: str, amount: int = 100,
        balance: int | None = None, **fields: Any) -> tuple[str, dict[str, Any]]:  # fmt: skip
    return event("BetAccepted", player, txn, command_id=command_id, amount=amount,
                 balance=balance, round_closed=False, **fields)  # fmt: skip


def win(player: str, txn: str, command_id: str, amount: int = 100,
        balance: int | None = None, **fields: Any) -> tuple[str, dict[str, Any]]:  # fmt: skip
    return event("WinCredited", player, txn, command_id=command_id, amount=amount,
                 balance=balance, round_closed=False, **fields)  # fmt: skip


def refund(player: str, txn: str, command_id: str, amount: int = 100,
           balance: int | None = None) -> tuple[str, dict[str, Any]]:  # fmt: skip
    return event("BetRolledBack", player, txn, amount=amount, command_id=command_id,
                 rollback_transaction_id=f"rb-{command_id}", balance=balance)  # fmt: skip


def test_contradictory_decisions_are_reported(
    project: Any, isolated: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = [
        # one debit attempt accepted and also timed out and cancelled
        bet("p1", "b1", "d1"),
        event("DebitTimedOut", "p1", "b1", command_id="d1", cancel_command_id="x1"),
        event("DebitCancelled", "p1", "b1", command_id="d1", cancel_command_id="x1", balance=None),
        # one bet accepted by one attempt and refused by another
        bet("p2", "b2", "d2"),
        event(
            "BetRejected", "p2", "b2", status="INSUFFICIENT_FUNDS", command_id="d2b", balance=None
        ),
        # one win credited twice under different ids
        win("p3", "w3", "k3"),
        win("p3", "w3", "k3-again"),
        # one bet debited by two attempts
        bet("p4", "b4", "d4"),
        bet("p4", "b4", "d4b"),
        # one bet refunded twice
        bet("p5", "b5", "d5"),
        refund("p5", "b5", "x5"),
        refund("p5", "b5", "x5b"),
        # a refund of a bet never accepted
        refund("p6", "b6", "x6"),
        # a rollback recorded as of an unknown bet, and that bet accepted afterwards
        event(
            "RollbackRecorded",
            "p7",
            rollback_transaction_id="rb-7",
            reference_transaction_id="b7",
            round_id="r",
            game_id="g",
            bet_known=False,
        ),
        bet("p7", "b7", "d7"),
        # the journal disagrees with itself on an amount
        bet("p8", "b8", "d8", amount=100),
        refund("p8", "b8", "x8", amount=200),
        # one transaction id as a bet and as a win
        bet("p9", "t9", "d9"),
        win("p9", "t9", "k9"),
        # not contradictions: a provider reuses a transaction id for two players; a debit
        # that timed out, was cancelled, and a retry accepted; a rejected bet rolled back
        bet("p10", "shared", "d10"),
        bet("p11", "shared", "d11"),
        event("DebitTimedOut", "p12", "b12", command_id="d12", cancel_command_id="x12"),
        event(
            "DebitCancelled", "p12", "b12", command_id="d12", cancel_command_id="x12", balance=None
        ),
        bet("p12", "b12", "d12-2"),
        event(
            "BetRejected", "p13", "b13", status="INSUFFICIENT_FUNDS", command_id="d13", balance=None
        ),
        event(
            "RollbackRecorded",
            "p13",
            rollback_transaction_id="rb-13",
            reference_transaction_id="b13",
            round_id="r",
            game_id="g",
            bet_known=True,
        ),
    ]
    schema = project(events, isolated)
    found = rows(isolated.database_url, f"select player_id, transaction_id, command_id,"
                 f" contradiction, events from {schema}.contradictory_decisions")  # fmt: skip
    got = sorted((player, txn, command, text) for player, txn, command, text, _ in found)
    assert got == [
        ("p1", "b1", "d1", "one debit attempt both accepted and timed out/cancelled"),
        ("p2", "b2", None, "bet both accepted and rejected"),
        ("p3", "w3", None, "win credited 2 times under different ids"),
        ("p4", "b4", None, "bet accepted by 2 debit attempts (debited twice)"),
        ("p5", "b5", None, "bet refunded 2 times"),
        ("p6", "b6", None, "bet refunded without being accepted"),
        ("p7", "b7", None,
         "bet accepted and its rollback recorded as of an unknown bet (no refund)"),
        ("p8", "b8", None, "events disagree on the amount or currency"),
        ("p9", "t9", None, "transaction journaled both as a bet and as a win"),
    ]  # fmt: skip
    by_player = {player: journal for player, _, _, _, journal in found}
    assert by_player["p3"].count("WinCredited:") == 2  # the events are named, in order
    assert report(isolated.database_url, schema)["contradictory decisions in the journal"] == 9
    assert run_cli(monkeypatch, isolated, "--schema", schema) == 1


def test_wallet_balances_that_differ_from_the_journal_are_reported(
    project: Any, isolated: Settings, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    events = [
        bet("pa", "a1", "ca1", 100, balance=900),  # agrees with its wallet
        win("pa", "a2", "ca2", 50, balance=950),
        bet("pb", "b1", "cb1", 100, balance=900),  # its wallet row was changed afterwards
        win("pc", "c1", "cc1", 300, balance=1_300),  # the wallet has no such account
        bet("pd", "d1", "cd1", 100, balance=900),  # money in flight: not compared yet
        bet("pe", "e1", "ce1", 100, balance=900),  # wallet and journal agree, ledger does not
        event("BetAccepted", "px", "x1", operator_id="op-beta", command_id="cx1",
              balance=900, round_closed=False),  # an operator with a wallet of its own
    ]  # fmt: skip
    schema = project(events, isolated)
    wallet = wallet_ledger(isolated.database_url)
    url = isolated.database_url
    account(url, wallet, "pa", 1_000, 950, [("ca1", 100, -100), ("ca2", 50, 50)])
    account(url, wallet, "pb", 1_000, 950, [("cb1", 100, -100)])
    account(url, wallet, "pd", 1_000, 800, [("cd1", 100, -100), ("cd2", 100, -100)], 1)
    account(url, wallet, "pe", 1_000, 900, [])
    account(url, wallet, "quiet", 1_000, 1_000, [])  # seen by the wallet only (a balance call)
    with psycopg.connect(url) as conn:
        lines, counts_ = run_report(conn, schema, timedelta(days=10_000), 50,
                                    wallet_schema=wallet)  # fmt: skip
    text = "\n".join(lines)
    assert counts_["wallet balances that differ from the balance the journal implies"] == 3
    assert re.search(
        r"pb \| EUR \| 950 \| 900 \| 900 \| 900 \| wallet - journal = 50; "
        r"wallet - last reported = 50; wallet - its own ledger = 50",
        text,
    ), text
    assert re.search(
        r"pc \| EUR \|  \|  \| 1300 \|  \| no wallet account, the journal "
        r"moved 300",
        text,
    ), text
    assert re.search(
        r"pe \| EUR \| 900 \| 900 \| 900 \| 1000 \| wallet - its own ledger = "
        r"-100",
        text,
    ), text
    assert "| pa |" not in text and "| quiet |" not in text
    assert re.search(
        r"accounts not compared with the wallet \(money in flight\): 1\n.*\n"
        r"   op-alpha \| pd \|",
        text,
    ), text
    assert re.search(
        r"operators whose wallets cannot be read here .*: 1\n.*\n   op-beta \| 1", text
    ), text
    assert run_cli(monkeypatch, isolated, "--schema", schema, "--wallet-schema", wallet) == 1
    assert "wallet - journal = 50" in capsys.readouterr().out


def test_a_wallet_that_agrees_with_the_journal_reports_nothing(
    project: Any, isolated: Settings, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    events = [
        bet("pa", "a1", "ca1", 100, balance=900),
        win("pa", "a2", "ca2", 250, balance=1_150, round_id="r-a1"),
        closed("pa", "r-a1"),
        bet("pb", "b1", "cb1", 400, balance=600),
        refund("pb", "b1", "xb1", 400, balance=1_000),
        closed("pb", "r-b1"),
    ]
    schema = project(events, isolated)
    wallet = wallet_ledger(isolated.database_url)
    url = isolated.database_url
    account(url, wallet, "pa", 1_000, 1_150, [("ca1", 100, -100), ("ca2", 250, 250)])
    account(url, wallet, "pb", 1_000, 1_000, [("cb1", 400, -400), ("xb1", 400, 400)])
    found = report(url, schema, wallet)
    assert sum(found.values()) == 0, found
    assert run_cli(monkeypatch, isolated, "--schema", schema, "--wallet-schema", wallet) == 0
    out = capsys.readouterr().out
    assert "ok contradictory decisions in the journal: 0" in out
    assert "ok wallet balances that differ from the balance the journal implies: 0" in out
    assert out.rstrip().endswith("no discrepancies")


def transfer(player: str, transfer_id: str, direction: str, amount: int,
             balance: int) -> tuple[str, dict[str, Any]]:  # fmt: skip
    return event("FundsTransferred", player, transfer_id, operator_id="op-delta",
                 provider_id="", round_id="", game_id="", direction=direction, amount=amount,
                 balance=balance)  # fmt: skip


def test_transfer_wallets_are_reconciled_against_the_journal_and_the_operator(
    project: Any, isolated: Settings
) -> None:
    """A transfer wallet's held balance must be the journal's fold of transfers and play, and
    every transfer must be one the operator recorded as done, with the same amount, per day;
    the operator's own account moves by its transfers (an IN debits it, an OUT credits it)."""
    held = {"wallet": "transfer"}
    events = [
        transfer("ta", "d1", "IN", 1_000, 1_000),  # sound: in, play, out
        bet("ta", "b1", "xa1", 100, balance=900, operator_id="op-delta", **held),
        win("ta", "w1", "xa2", 40, balance=940, operator_id="op-delta", **held),
        transfer("ta", "o1", "OUT", 940, 0),
        transfer("tb", "d2", "IN", 500, 500),  # the held balance reported does not add up
        bet("tb", "b2", "xb1", 100, balance=450, operator_id="op-delta", **held),
        transfer("tc", "d3", "IN", 700, 700),  # the operator recorded 70 for it
        transfer("td", "d4", "IN", 300, 300),  # the operator has no record of it
    ]
    schema = project(events, isolated)
    wallet = wallet_ledger(isolated.database_url)
    url = isolated.database_url
    with psycopg.connect(url) as conn:
        for player, tid, direction, amount, delta in [
            ("ta", "d1", "deposit", 1_000, -1_000), ("ta", "o1", "withdraw", 940, 940),
            ("tb", "d2", "deposit", 500, -500), ("tc", "d3", "deposit", 70, -70),
        ]:  # fmt: skip
            conn.execute(
                f"insert into {wallet}.transfers (operator_id, player_id, transfer_id,"
                " direction, currency, requested, amount, delta, state, status, updated_at)"
                " values ('op-delta', %s, %s, %s, 'EUR', %s, %s, %s, 'DONE', 'OK', %s)",
                (player, tid, direction, amount if direction == "deposit" else None, amount,
                 delta, T0 + timedelta(seconds=1)),
            )  # fmt: skip
        for player, balance in [("ta", 10_000 - 1_000 + 940), ("tb", 9_500), ("tc", 9_930)]:
            conn.execute(
                f"insert into {wallet}.players (operator_id, player_id, currency, balance,"
                " opening_balance) values ('op-delta', %s, 'EUR', %s, 10000)",
                (player, balance),
            )
    found = report(url, schema, wallet)
    assert found["transfer-wallet balances that differ from the balance the journal implies"] == 1
    assert found["transfers that differ from the operator's record of them"] == 1
    # tc (700 in, 70 out at the operator) and td (no account at the operator at all)
    assert found["wallet balances that differ from the balance the journal implies"] == 2
    with psycopg.connect(url) as conn:
        lines, _ = run_report(conn, schema, timedelta(days=10_000), 50, wallet_schema=wallet)
    text = "\n".join(lines)
    # tb: the journal implies 400, 450 was reported
    assert re.search(r"op-delta \| tb \| EUR \| 400 \| 450 \| 50", text), text
    # one day, IN: the journal moved 1000+500+700+300, the operator 1000+500+70, two unmatched
    assert re.search(r"op-delta \| 2026-\d\d-\d\d \| EUR \| IN \| 2500 \| 1570 \| 2", text), text
    # tc's account: the operator debited 70, the journal moved 700 in: 630 apart
    assert re.search(r"tc \| EUR \| 9930 \| 9300 \|", text), text
