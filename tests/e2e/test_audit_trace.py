"""``aggregator audit trace``: a bet's whole path, in time order, from the topics and the
projections."""

from __future__ import annotations

import io
import json
import uuid

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
