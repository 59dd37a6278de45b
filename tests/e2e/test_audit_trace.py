"""The auditor's commands on a live pipeline: ``trace`` (a bet's whole path, in time order)
and ``reconcile`` (an outside party's report against our ledger)."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections import Counter
from pathlib import Path

import psycopg

from agg_auditor.cli import main_audit
from tests.e2e.conftest import PROVIDER, Pipeline
from tests.e2e.test_pipeline import answer, eventually


def test_trace_shows_every_step_of_a_bet_in_order(pipeline: Pipeline) -> None:
    player, token = pipeline.new_player()
    txn = f"tx-{uuid.uuid4().hex[:10]}"
    assert answer(pipeline.bet(player, token, txn, 42))[1] == "OK"

    def steps() -> list[dict]:  # type: ignore[type-arg]
        out, err = io.StringIO(), io.StringIO()
        code = main_audit(["trace", PROVIDER, txn, "--json"], settings=pipeline.settings,
                          stdout=out, stderr=err)  # fmt: skip
        if code != 0:
            return []
        return [json.loads(line) for line in out.getvalue().splitlines()]

    eventually(lambda: any(s["source"] == "projection" for s in steps()), 30)
    found = steps()
    kinds = [s["what"].split(" ")[0] for s in found]
    # request -> command -> reply -> outcome/event -> projection row
    assert kinds.index("request") < kinds.index("command") < kinds.index("reply")
    assert kinds.index("reply") < kinds.index("outcome")
    assert "event" in kinds and "transaction" in kinds
    assert {s["correlation_id"] for s in found if s["source"] != "agg.wallet.replies.op-alpha"} == {
        found[0]["correlation_id"]
    }, "one correlation id links every step"
    assert all(s["after_previous_ms"] >= 0 for s in found)
    out, err = io.StringIO(), io.StringIO()
    missing = main_audit(["trace", PROVIDER, "no-such-transaction"], settings=pipeline.settings,
                         stdout=out, stderr=err)  # fmt: skip
    assert missing == 2


def test_reconcile_a_provider_report_classifies_each_difference(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    player, token = pipeline.new_player()
    bets = [f"tx-{uuid.uuid4().hex[:10]}" for _ in range(4)]
    for b in bets:
        assert answer(pipeline.bet(player, token, b, 100))[1] == "OK"

    def ledger_has_all() -> bool:
        out, err = io.StringIO(), io.StringIO()
        main_audit(["trace", PROVIDER, bets[-1], "--json"], settings=pipeline.settings,
                   stdout=out, stderr=err)  # fmt: skip
        return '"source": "projection"' in out.getvalue()

    eventually(ledger_has_all, 30)

    def ledger_rows() -> list[tuple[str, str, int, str]]:
        with psycopg.connect(pipeline.settings.database_url) as conn:
            return conn.execute(
                "select transaction_id, kind, amount, currency from projection.transactions"
                " where provider_id = %s order by transaction_id",
                (PROVIDER,),
            ).fetchall()

    # the journal of earlier tests (same provider) may still be projecting: the report is
    # taken once the ledger has stopped changing
    rows = ledger_rows()
    for _ in range(30):
        time.sleep(1)
        again = ledger_rows()
        if again == rows:
            break
        rows = again
    # the provider's report: its own view of our ledger, with one of each kind of difference
    report = {t: [t, k, str(a), c.strip(), ""] for t, k, a, c in rows}
    report[bets[0]][2] = "101"  # an amount mismatch
    report[bets[1]][4] = "REJECTED"  # a status mismatch
    del report[bets[2]]  # in our ledger, missing from theirs: extra
    report["tx-only-theirs"] = ["tx-only-theirs", "BET", "5", "EUR", "OK"]  # missing in ours
    path = tmp_path / "provider.csv"
    path.write_text("transaction_id,kind,amount,currency,status\n"
                    + "".join(",".join(r) + "\n" for r in report.values()))  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    code = main_audit(["reconcile", "--provider-report", str(path), "--provider", PROVIDER],
                      settings=pipeline.settings, stdout=out, stderr=err)  # fmt: skip
    assert code == 2, err.getvalue()
    lines = out.getvalue().splitlines()
    kinds = Counter(line.split()[0] for line in lines[:-1])
    assert kinds == {"missing": 1, "extra": 1, "amount": 1, "status": 1}, lines
    assert "tx-only-theirs" in next(line for line in lines if line.startswith("missing"))
    assert bets[2] in next(line for line in lines if line.startswith("extra"))
    assert lines[-1].endswith("1 missing, 1 extra, 1 amount, 1 status, 0 kind")
