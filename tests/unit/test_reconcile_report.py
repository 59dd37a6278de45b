"""Comparing an outside report with the ledger: reading the CSV and classifying every
difference (pure; the database side runs in the e2e tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agg_auditor.reconcile_report import Entry, ReportError, compare, outcome, read_report


def entry(txn: str, amount: int = 100, kind: str = "BET", status: str | None = "OK",
          provider: str = "prov-a", currency: str = "EUR") -> Entry:  # fmt: skip
    return Entry(provider, txn, kind, amount, currency, status)


def test_operator_report_reads_the_provider_of_each_row(tmp_path: Path) -> None:
    path = tmp_path / "op.csv"
    path.write_text(
        "provider_id,transaction_id,kind,amount,currency,status,extra\n"
        "prov-a,t1,bet,100,eur,ok,ignored\n"
        "prov-b,t1,WIN,0,EUR,,\n"
    )
    assert read_report(path, None) == [
        Entry("prov-a", "t1", "BET", 100, "EUR", "OK"),
        Entry("prov-b", "t1", "WIN", 0, "EUR", None),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("transaction_id,kind,amount,currency\nt1,BET,1.5,EUR\n", "not an integer"),
        ("transaction_id,kind,currency\nt1,BET,EUR\n", "missing column 'amount'"),
    ],
)
def test_bad_reports_are_refused_with_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ReportError, match=message):
        read_report(path, "prov-a")


def test_each_difference_is_classified() -> None:
    ours = {
        ("prov-a", "same"): entry("same"),
        ("prov-a", "amount"): entry("amount", 100),
        ("prov-a", "status"): entry("status", status="ROLLED_BACK"),
        ("prov-a", "kind"): entry("kind", kind="WIN"),
        ("prov-a", "extra"): entry("extra"),
    }
    report = [
        entry("same"),
        entry("amount", 90),
        entry("status", status="OK"),
        entry("kind", kind="BET"),
        entry("missing"),
    ]
    found = sorted(kind for kind, _ in compare(report, ours))
    assert found == ["amount", "extra", "kind", "missing", "status"]
    assert compare([entry("same")], {("prov-a", "same"): entry("same")}) == []


def test_ledger_statuses_as_the_counterparty_sees_them() -> None:
    assert outcome("ACCEPTED") == outcome("CREDITED") == "OK"
    assert outcome("REJECTED:INSUFFICIENT_FUNDS") == outcome("CANCELLED") == "REJECTED"
    assert outcome("TIMED_OUT") == outcome("OWED") == "PENDING"
    assert outcome("ROLLED_BACK") == "ROLLED_BACK"


def owned(txn: str, operator: str, player: str, amount: int = 100,
          status: str | None = "OK") -> Entry:  # fmt: skip
    return Entry("prov-a", txn, "BET", amount, "EUR", status, operator, player)


def test_one_transaction_id_of_several_players_is_several_transactions() -> None:
    """A provider's id may belong to several players, of one operator or of several: each
    ledger row is matched once, with the report row that agrees best."""
    ours = {
        ("prov-a", "t1", "op-1", "a"): owned("t1", "op-1", "a", 100),
        ("prov-a", "t1", "op-1", "b"): owned("t1", "op-1", "b", 250),
        ("prov-a", "t1", "op-2", "a"): owned("t1", "op-2", "a", 40),
    }
    # a report without owners: the rows in any order, each finds its own
    report = [entry("t1", 40), entry("t1", 100), entry("t1", 250)]
    assert compare(report, ours) == []
    # one of the players missing from the report is an extra row, named with its owner
    assert compare(report[:2], ours) == [
        ("extra", "prov-a/t1 of op-1:b: BET 250 EUR (OK) is not in the report")
    ]
    # a report that names the owners is matched owner by owner
    named = [owned("t1", "op-1", "a", 100), owned("t1", "op-1", "b", 250),
             owned("t1", "op-2", "a", 41)]  # fmt: skip
    assert compare(named, ours) == [("amount", "prov-a/t1 of op-2:a: report 41 EUR, ledger 40 EUR")]
    assert compare([owned("t1", "op-3", "a")], ours)[0] == (
        "missing", "prov-a/t1 of op-3:a: BET 100 EUR is not in our ledger")  # fmt: skip


def test_the_report_may_name_the_owners(tmp_path: Path) -> None:
    path = tmp_path / "op.csv"
    path.write_text(
        "transaction_id,kind,amount,currency,operator_id,player_id\n"
        "t1,BET,100,EUR,op-1,a\n"
        "t1,BET,100,EUR,,\n"
    )
    assert read_report(path, "prov-a") == [
        Entry("prov-a", "t1", "BET", 100, "EUR", None, "op-1", "a"),
        Entry("prov-a", "t1", "BET", 100, "EUR", None),
    ]
