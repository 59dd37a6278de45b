"""Figures of a benchmark step, the one-screen summary, the targets and the plot."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.workload import Answer, Call

PERCENTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "p99.9": 0.999}
SYSTEMS = ("pipeline", "floor", "direct")
TARGETS = {
    "p99_ms_at_500": 50.0,
    "p99_ms_at_1500_plus": 100.0,
    "p50_over_floor_max": 3.0,
}


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, int(-(-q * len(sorted_values) // 1)))  # ceil(q * n)
    return sorted_values[min(len(sorted_values), rank) - 1]


def latency_ms(latencies_us: Sequence[int]) -> dict[str, float]:
    values = sorted(latencies_us)
    out = {name: round(percentile(values, q) / 1000, 2) for name, q in PERCENTILES.items()}
    out["max"] = round(values[-1] / 1000, 2) if values else 0.0
    out["mean"] = round(sum(values) / len(values) / 1000, 2) if values else 0.0
    return out


def step_figures(
    calls: Sequence[Call],
    answers: Sequence[Answer],
    loadgen: Mapping[str, Any],
    *,
    offered_per_s: float,
    warmup_s: float,
) -> dict[str, Any]:
    """Achieved rate, latency of the steady part (after ``warmup_s``), answers by status."""
    steady = [
        a.latency_us for c, a in zip(calls, answers, strict=True) if c.at_us >= warmup_s * 1e6
    ]
    statuses = Counter(a.label for a in answers)
    errors = sum(n for label, n in statuses.items() if label != "200 OK")
    ok = statuses.get("200 OK", 0)
    duration_s = float(loadgen.get("duration_s") or 0.0)
    return {
        "offered_per_s": offered_per_s,
        "requests": len(answers),
        "kinds": dict(Counter(c.kind for c in calls)),
        "achieved_per_s": round(ok / duration_s, 1) if duration_s else 0.0,
        "latency_ms": latency_ms(steady),
        "latency_ms_whole_step": latency_ms([a.latency_us for a in answers]),
        "statuses": dict(statuses.most_common()),
        "errors": errors,
        "loadgen_late_ms": {
            "p50": round(float(loadgen.get("late_p50_us", 0)) / 1000, 2),
            "p99": round(float(loadgen.get("late_p99_us", 0)) / 1000, 2),
            "max": round(float(loadgen.get("late_max_us", 0)) / 1000, 2),
        },
        "max_in_flight": loadgen.get("max_in_flight"),
    }


def saturated(step: Mapping[str, Any]) -> bool:
    """Past this step the system cannot keep up: higher offered rates are not tried."""
    offered = float(step["offered_per_s"])
    return bool(
        step["achieved_per_s"] < 0.9 * offered
        or step["latency_ms"]["p99"] > 2000
        or step["errors"] > 0.01 * step["requests"]
    )


def ratios(systems: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pipeline / floor and pipeline / direct at each offered rate all of them ran."""
    by_rate = {
        name: {s["offered_per_s"]: s for s in data.get("steps", [])}
        for name, data in systems.items()
    }
    out = []
    for rate, step in sorted(by_rate.get("pipeline", {}).items()):
        row: dict[str, Any] = {"offered_per_s": rate}
        for other in ("floor", "direct"):
            base = by_rate.get(other, {}).get(rate)
            for q in ("p50", "p99"):
                key = f"{q}_pipeline_over_{other}"
                denom = base["latency_ms"][q] if base else 0
                row[key] = round(step["latency_ms"][q] / denom, 2) if denom else None
        out.append(row)
    return out


def evaluate_targets(systems: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    steps = {s["offered_per_s"]: s for s in systems.get("pipeline", {}).get("steps", [])}
    at_500 = steps.get(500)
    good = [
        rate
        for rate, s in steps.items()
        if s["errors"] == 0
        and s["latency_ms"]["p99"] <= TARGETS["p99_ms_at_1500_plus"]
        and s["achieved_per_s"] >= 0.9 * rate
    ]
    highest = max(good) if good else None
    floor_steps = {s["offered_per_s"]: s for s in systems.get("floor", {}).get("steps", [])}
    p50_ratios = [
        s["latency_ms"]["p50"] / floor_steps[r]["latency_ms"]["p50"]
        for r, s in steps.items()
        if r in floor_steps and floor_steps[r]["latency_ms"]["p50"] > 0
    ]
    worst_ratio = round(max(p50_ratios), 2) if p50_ratios else None
    return {
        "at_500": None
        if at_500 is None
        else {
            "p99_ms": at_500["latency_ms"]["p99"],
            "errors": at_500["errors"],
            "met": at_500["latency_ms"]["p99"] <= TARGETS["p99_ms_at_500"]
            and at_500["errors"] == 0,
        },
        "highest_step_p99_le_100ms_zero_errors": highest,
        "highest_step_met": highest is not None and highest >= 1500,
        "p50_over_floor_worst": worst_ratio,
        "p50_over_floor_met": worst_ratio is not None
        and worst_ratio <= TARGETS["p50_over_floor_max"],
    }


def _cpu_cell(value: float | None, seconds: float) -> str:
    return "   -" if value is None else f"{value / seconds * 100:4.0f}"


def summary(result: Mapping[str, Any]) -> str:
    """One screen: each system's steps, the ratios, the targets, the money checks."""
    lines = [
        f"casino aggregator benchmark  {result['started_utc']}"
        f"  commit {result['git']['commit'][:12]}"
        f"  {result['machine']['cpus']} cpus  {result['config']['players']} players"
        f"  {result['config']['step_seconds']}s steps",
    ]
    cpu_names = ("broker", "postgres", "ingress", "saga", "wallet", "projector", "loadgen")
    for name in SYSTEMS:
        data = result["systems"].get(name)
        if not data:
            continue
        lines.append("")
        lines.append(f"{name}: {data.get('description', '')}")
        header = (
            f"{'offered':>8} {'achieved':>8} {'p50':>7} {'p90':>7} {'p99':>7} {'p99.9':>7}"
            f" {'max':>7} {'errors':>6}  cpu% of one core: "
            + " ".join(f"{n[:5]:>5}" for n in cpu_names)
            + "  proj.lag"
        )
        lines.append(header)
        for s in data["steps"]:
            lat = s["latency_ms"]
            secs = max(1e-9, float(s.get("cpu_window_s") or 1))
            cpu = s.get("cpu_s", {})
            lines.append(
                f"{s['offered_per_s']:>8.0f} {s['achieved_per_s']:>8.0f} {lat['p50']:>7.1f}"
                f" {lat['p90']:>7.1f} {lat['p99']:>7.1f} {lat['p99.9']:>7.1f} {lat['max']:>7.1f}"
                f" {s['errors']:>6}                    "
                + " ".join(f"{_cpu_cell(cpu.get(n), secs):>5}" for n in cpu_names)
                + f"  {s.get('projector_lag', '') if s.get('projector_lag') is not None else '':>8}"
            )
        for s in data["steps"]:
            bad = {k: v for k, v in s["statuses"].items() if k != "200 OK"}
            if bad:
                lines.append(
                    f"  errors at {s['offered_per_s']:.0f}/s: "
                    + ", ".join(f"{k}: {v}" for k, v in bad.items())
                )
        if data.get("skipped_rates"):
            lines.append(f"  not tried (saturated below): {data['skipped_rates']}")
        money = data.get("money_check")
        if money:
            lines.append(f"  money check: {money['verdict']}")
    lines.append("")
    lines.append(
        "ratios  offered  p50 pipe/floor  p99 pipe/floor  p50 pipe/direct  p99 pipe/direct"
    )
    for r in result.get("ratios", []):
        cells = [
            r.get(k)
            for k in (
                "p50_pipeline_over_floor",
                "p99_pipeline_over_floor",
                "p50_pipeline_over_direct",
                "p99_pipeline_over_direct",
            )
        ]
        lines.append(
            f"        {r['offered_per_s']:>7.0f}  "
            + "  ".join(f"{'-' if c is None else c:>14}" for c in cells)
        )
    t = result.get("targets", {})
    at500 = t.get("at_500") or {}
    lines.append("")
    lines.append(
        f"targets: 500/s p99<=50ms & 0 errors: {'MET' if at500.get('met') else 'NOT MET'}"
        f" (p99 {at500.get('p99_ms')} ms, {at500.get('errors')} errors);"
        f" highest step p99<=100ms & 0 errors: {t.get('highest_step_p99_le_100ms_zero_errors')}/s"
        f" ({'MET' if t.get('highest_step_met') else 'NOT MET'}, target >=1500/s);"
        f" p50 <= 3x floor: worst {t.get('p50_over_floor_worst')}x"
        f" ({'MET' if t.get('p50_over_floor_met') else 'NOT MET'})"
    )
    lines.append(f"took {result.get('took_s', 0):.0f}s; results: {result.get('json_path', '')}")
    return "\n".join(lines)


def plot(result: Mapping[str, Any], path: Path) -> None:
    """Latency percentiles against offered load, one colour per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 6), dpi=110)
    colours = {"pipeline": "tab:red", "floor": "tab:green", "direct": "tab:blue"}
    styles = {"p50": "-", "p99": "--", "p99.9": ":"}
    for name in SYSTEMS:
        steps = result["systems"].get(name, {}).get("steps", [])
        if not steps:
            continue
        rates = [s["offered_per_s"] for s in steps]
        for q, style in styles.items():
            values = [max(0.1, s["latency_ms"][q]) for s in steps]
            ax.plot(rates, values, style, marker="o", color=colours[name], label=f"{name} {q}")
    ax.axhline(100, color="grey", linewidth=0.8)
    ax.axhline(50, color="grey", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered callbacks per second (open loop)")
    ax.set_ylabel("latency from scheduled send, ms")
    ax.set_title(
        f"casino aggregator benchmark {result['started_utc']} "
        f"({result['git']['commit'][:10]}, {result['machine']['cpus']} cpus)"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
