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
