"""A certification run as JSON, as one self-contained HTML file, and as a terminal summary.

The JSON (``schema`` ``agg-certify-report/1``) is the record: the HTML and the summary are
renderings of the same :class:`Report`. The HTML has no external resources (style inline,
no scripts), so it can be mailed or attached to a ticket as is.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from agg_certify.checks import CHECKS, LATENCY_ID, LATENCY_VERIFIES, CheckResult, Outcome
from agg_certify.stats import LatencySummary

SCHEMA = "agg-certify-report/1"
VERIFIES = {c.check_id: c.verifies for c in CHECKS} | {LATENCY_ID: LATENCY_VERIFIES}
LABELS = {Outcome.PASS: "PASS", Outcome.FAIL: "FAIL", Outcome.NOT_APPLICABLE: "N/A"}


@dataclass(frozen=True)
class Report:
    operator_id: str
    mode: str
    run_id: str
    started_at: datetime
    finished_at: datetime
    parameters: dict[str, Any]
    """The run's settings (currency, deadline, timeouts, counts)."""
    results: tuple[CheckResult, ...]
    latency: LatencySummary
    stray_reply_count: int = 0

    def count(self, outcome: Outcome) -> int:
        return sum(r.outcome is outcome for r in self.results)

    @property
    def passed(self) -> bool:
        """No check failed (not-applicable ones do not count against it)."""
        return self.count(Outcome.FAIL) == 0


def to_json(report: Report) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "operator_id": report.operator_id,
        "mode": report.mode,
        "run_id": report.run_id,
        "started_at": report.started_at.isoformat(),
        "finished_at": report.finished_at.isoformat(),
        "verdict": "PASS" if report.passed else "FAIL",
        "summary": {
            "passed": report.count(Outcome.PASS),
            "failed": report.count(Outcome.FAIL),
            "not_applicable": report.count(Outcome.NOT_APPLICABLE),
            "total": len(report.results),
        },
        "parameters": report.parameters,
        "latency": asdict(report.latency),
        "stray_reply_count": report.stray_reply_count,
        "checks": [
            {
                "id": r.check_id,
                "title": r.title,
                "verifies": VERIFIES.get(r.check_id, ""),
                "outcome": r.outcome.value,
                "detail": r.detail,
                "fix": r.fix,
                "player_id": r.player_id,
                "duration_ms": r.duration_ms,
                "steps": [asdict(s) for s in r.steps],
            }
            for r in report.results
        ],
    }


def write(report: Report, directory: Path) -> tuple[Path, Path]:
    """``report.json`` and ``report.html`` in ``directory`` (created); their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "report.json"
    html_path = directory / "report.html"
    json_path.write_text(json.dumps(to_json(report), indent=2) + "\n")
    html_path.write_text(render_html(report))
    return json_path, html_path


def render_summary(report: Report) -> str:
    """The terminal summary: one line per check, the fix under each failure, the verdict."""
    width = max(len(r.title) for r in report.results)
    lines = [
        f"certification of operator {report.operator_id} ({report.mode}), run {report.run_id}",
    ]
    for r in report.results:
        lines.append(f"  {LABELS[r.outcome]:<4}  {r.title:<{width}}  {r.detail}")
        if r.fix:
            lines.append(f"  {'':<4}  {'':<{width}}  fix: {r.fix}")
    verdict = "PASS" if report.passed else "FAIL"
    lines.append(
        f"{verdict}: {report.count(Outcome.PASS)} passed, {report.count(Outcome.FAIL)} failed, "
        f"{report.count(Outcome.NOT_APPLICABLE)} not applicable"
    )
    return "\n".join(lines)


_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: .2em; }
.meta { color: #555; margin-bottom: 1.5em; }
.verdict { display: inline-block; padding: .2em .8em; border-radius: 4px; color: #fff;
           font-weight: 600; }
.pass { background: #1b7f3b; } .fail { background: #b3261e; } .not_applicable { background: #777; }
table { border-collapse: collapse; width: 100%; margin: 1em 0; }
th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid #ddd;
         vertical-align: top; }
th { background: #f4f4f4; }
td.outcome span { display: inline-block; min-width: 3.5em; text-align: center;
                  border-radius: 3px; color: #fff; font-weight: 600; }
.fix { color: #b3261e; }
details { margin: .3em 0 1em; } summary { cursor: pointer; }
code, .steps td { font: 12px ui-monospace, monospace; }
"""


def render_html(report: Report) -> str:
    e = html.escape
    verdict = "PASS" if report.passed else "FAIL"
    rows = []
    for r in report.results:
        fix = f'<div class="fix">fix: {e(r.fix)}</div>' if r.fix else ""
        rows.append(
            f'<tr id="check-{e(r.check_id)}"><td class="outcome">'
            f'<span class="{r.outcome.value}">{LABELS[r.outcome]}</span></td>'
            f"<td><strong>{e(r.title)}</strong><br><code>{e(r.check_id)}</code></td>"
            f"<td>{e(VERIFIES.get(r.check_id, ''))}</td>"
            f"<td>{e(r.detail)}{fix}</td><td>{r.duration_ms} ms</td></tr>"
        )
    details = []
    for r in report.results:
        if not r.steps:
            continue
        step_rows = "".join(
            f"<tr><td>{e(s.kind)}</td><td>{e(s.command_id)}</td><td>{s.amount}</td>"
            f"<td>{e(s.currency)}</td><td>{e(s.reference_command_id or '')}</td>"
            f"<td>{e(s.status or 'no reply')}</td>"
            f"<td>{'' if s.balance is None else s.balance}</td>"
            f"<td>{'' if s.latency_us is None else f'{s.latency_us / 1000:.1f} ms'}</td></tr>"
            for s in r.steps
        )
        details.append(
            f"<details><summary>{e(r.title)}: commands of player <code>{e(r.player_id)}</code>"
            f'</summary><table class="steps"><tr><th>kind</th><th>command_id</th>'
            f"<th>amount</th><th>currency</th><th>reference</th><th>status</th>"
            f"<th>balance</th><th>latency</th></tr>{step_rows}</table></details>"
        )
    lat = report.latency

    def ms(us: int | None) -> str:
        return "-" if us is None else f"{us / 1000:.1f} ms"

    parameters = "".join(
        f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in report.parameters.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Certification of {e(report.operator_id)}: {verdict}</title>
<style>{_STYLE}</style></head>
<body>
<h1>Wallet certification of operator <code>{e(report.operator_id)}</code></h1>
<div class="meta">mode {e(report.mode)} &middot; run <code>{e(report.run_id)}</code> &middot;
{e(report.started_at.isoformat())} to {e(report.finished_at.isoformat())}</div>
<p><span class="verdict {"pass" if report.passed else "fail"}">{verdict}</span>
{report.count(Outcome.PASS)} passed, {report.count(Outcome.FAIL)} failed,
{report.count(Outcome.NOT_APPLICABLE)} not applicable</p>
<table><tr><th></th><th>check</th><th>verifies</th><th>result</th><th>time</th></tr>
{"".join(rows)}
</table>
<h2>Latency</h2>
<table><tr><th>replies</th><th>unanswered</th><th>p50</th><th>p95</th><th>p99</th>
<th>max</th><th>deadline</th></tr>
<tr><td>{lat.count}</td><td>{lat.missing_count}</td><td>{ms(lat.p50_us)}</td>
<td>{ms(lat.p95_us)}</td><td>{ms(lat.p99_us)}</td><td>{ms(lat.max_us)}</td>
<td>{lat.deadline_ms} ms</td></tr></table>
<h2>Commands</h2>
{"".join(details)}
<h2>Parameters</h2>
<table>{parameters}</table>
</body></html>
"""
