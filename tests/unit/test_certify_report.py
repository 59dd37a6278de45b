"""The certification kit's pure parts: latency percentiles (nearest rank) and the report's
renderings (JSON record, self-contained HTML, terminal summary)."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agg_certify.checks import ALL_CHECK_IDS, CHECKS, CheckResult, Outcome, Step
from agg_certify.report import SCHEMA, Report, render_html, render_summary, to_json, write
from agg_certify.stats import LatencySummary, percentile

# --- percentiles ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "percent", "expected"),
    [
        ([7], 50, 7),
        ([7], 99, 7),
        ([1, 2], 50, 1),
        ([1, 2], 51, 2),
        ([3, 1, 2], 50, 2),
        (list(range(1, 101)), 50, 50),
        (list(range(1, 101)), 95, 95),
        (list(range(1, 101)), 99, 99),
        (list(range(1, 101)), 100, 100),
        (list(range(1, 11)), 95, 10),  # ceil(9.5) = 10th value
        (list(range(1, 11)), 1, 1),
        ([5, 5, 5, 9], 75, 5),
        ([5, 5, 5, 9], 76, 9),
    ],
)
def test_nearest_rank_table(values: list[int], percent: int, expected: int) -> None:
    assert percentile(values, percent) == expected


@pytest.mark.parametrize(("values", "percent"), [([], 50), ([1], 0), ([1], 101)])
def test_percentile_refuses_what_has_no_answer(values: list[int], percent: int) -> None:
    with pytest.raises(ValueError):
        percentile(values, percent)


@given(st.lists(st.integers(0, 10**9), min_size=1, max_size=300), st.integers(1, 100))
def test_a_percentile_is_a_measured_value_with_enough_values_at_or_below_it(
    values: list[int], percent: int
) -> None:
    p = percentile(values, percent)
    assert p in values
    at_or_below = sum(v <= p for v in values)
    below = sum(v < p for v in values)
    assert at_or_below * 100 >= percent * len(values)  # at least percent % are <= p
    assert below * 100 < percent * len(values)  # and it is the smallest such value


@given(st.lists(st.integers(0, 10**9), min_size=1, max_size=300))
def test_percentiles_grow_with_the_percent(values: list[int]) -> None:
    ranks = [percentile(values, q) for q in (1, 50, 95, 99, 100)]
    assert ranks == sorted(ranks) and ranks[-1] == max(values) and ranks[0] >= min(values)


@pytest.mark.parametrize(
    ("latencies_us", "missing", "within"),
    [
        ([1_000] * 100, 0, True),
        ([1_000] * 99 + [2_000_000], 0, True),  # one slow in 100: p99 is still 1 ms
        ([1_000] * 98 + [2_000_000] * 2, 0, False),
        ([1_499_999] * 10, 0, True),
        ([1_500_000] * 10, 0, False),  # at the deadline is not below it
        ([1_000] * 100, 1, False),  # an unanswered command
        ([], 0, False),
    ],
)
def test_the_latency_summary_passes_below_the_deadline_only(
    latencies_us: list[int], missing: int, within: bool
) -> None:
    summary = LatencySummary.of(latencies_us, missing, 1_500)
    assert summary.within_deadline is within
    assert summary.count == len(latencies_us) and summary.missing_count == missing


# --- the report -----------------------------------------------------------------------------

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def result(check_id: str, outcome: Outcome, detail: str = "fine") -> CheckResult:
    step = Step("DEBIT", f"cert-{check_id}", 100, "EUR", None, "OK", 900, 1_234)
    return CheckResult(
        check_id=check_id,
        title=check_id.replace("_", " ").title(),
        outcome=outcome,
        detail=detail,
        fix="do better <now>" if outcome is Outcome.FAIL else None,
        player_id=f"aggcert-run-{check_id}",
        steps=(step,),
        duration_ms=12,
    )


def report(failing: set[str] = frozenset(), not_applicable: set[str] = frozenset()) -> Report:
    def outcome(check_id: str) -> Outcome:
        if check_id in failing:
            return Outcome.FAIL
        return Outcome.NOT_APPLICABLE if check_id in not_applicable else Outcome.PASS

    return Report(
        operator_id="op-alpha",
        mode="kafka",
        run_id="run-1",
        started_at=T0,
        finished_at=T0,
        parameters={"currency": "EUR", "deadline_ms": 1_500},
        results=tuple(result(c, outcome(c), detail=f"<{c}> & co") for c in ALL_CHECK_IDS),
        latency=LatencySummary.of([1_000, 2_000, 3_000], 0, 1_500),
    )


def test_the_json_record_has_every_check_and_the_verdict() -> None:
    data = to_json(report(failing={"rollback_twice"}, not_applicable={"signature"}))
    assert data["schema"] == SCHEMA
    assert data["verdict"] == "FAIL"
    assert data["summary"] == {
        "passed": len(ALL_CHECK_IDS) - 2, "failed": 1, "not_applicable": 1,
        "total": len(ALL_CHECK_IDS),
    }  # fmt: skip
    assert [c["id"] for c in data["checks"]] == list(ALL_CHECK_IDS)
    for check in data["checks"]:
        assert set(check) == {"id", "title", "verifies", "outcome", "detail", "fix",
                              "player_id", "duration_ms", "steps"}  # fmt: skip
        assert check["verifies"], check["id"]
        assert check["outcome"] in {"pass", "fail", "not_applicable"}
        assert (check["fix"] is not None) == (check["outcome"] == "fail")
        (step,) = check["steps"]
        assert step["status"] == "OK" and step["latency_us"] == 1_234
    assert data["latency"]["p99_us"] == 3_000 and data["latency"]["deadline_ms"] == 1_500
    assert json.loads(json.dumps(data)) == data  # plain JSON values only


def test_not_applicable_does_not_fail_the_run() -> None:
    data = to_json(report(not_applicable={"signature"}))
    assert data["verdict"] == "PASS"
    assert report(not_applicable={"signature"}).passed
    assert not report(failing={"latency"}).passed


def test_the_html_is_self_contained_and_shows_every_check_escaped() -> None:
    page = render_html(report(failing={"duplicate_exact"}, not_applicable={"signature"}))
    assert page.startswith("<!doctype html>")
    for check_id in ALL_CHECK_IDS:
        assert f'id="check-{check_id}"' in page
        assert f"&lt;{check_id}&gt; &amp; co" in page  # details escaped
    for check in CHECKS:
        assert html.escape(check.verifies) in page
    assert "fix: do better &lt;now&gt;" in page
    assert "<now>" not in page
    assert not re.search(r"<(script|link|img)\b", page)
    assert not re.search(r"""(src|href)=["']?https?:""", page)


def test_the_summary_has_a_line_per_check_and_the_fix_under_a_failure() -> None:
    text = render_summary(report(failing={"wrong_currency"}, not_applicable={"signature"}))
    lines = text.splitlines()
    assert lines[0] == "certification of operator op-alpha (kafka), run run-1"
    assert lines[-1] == f"FAIL: {len(ALL_CHECK_IDS) - 2} passed, 1 failed, 1 not applicable"
    check_lines = [line for line in lines[1:-1] if "fix:" not in line]
    assert len(check_lines) == len(ALL_CHECK_IDS)
    failing = next(i for i, line in enumerate(lines) if line.strip().startswith("FAIL  "))
    assert "Wrong Currency" in lines[failing]
    assert lines[failing + 1].strip() == "fix: do better <now>"
    assert any(line.strip().startswith("N/A") for line in lines)


def test_write_puts_both_files_in_the_directory(tmp_path: Path) -> None:
    json_path, html_path = write(report(), tmp_path / "out")
    assert json.loads(json_path.read_text())["verdict"] == "PASS"
    assert html_path.read_text().startswith("<!doctype html>")
