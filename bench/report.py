"""Figures of a benchmark step, the one-screen summary, the targets and the plot."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.systems import ORDER
from bench.workload import Answer, Call

PERCENTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "p99.9": 0.999}
SYSTEMS = ORDER
CPU_NAMES = ("broker", "postgres", "ingress", "saga", "wallet", "projector", "loadgen")
"""The measured processes (``ingress`` is each system's front: the ingress, the floors' fronts,
the direct aggregator; ``saga`` and ``wallet`` the floors' relays too)."""
TARGET_P99_MS_AT_1000 = 50.0
TARGET_P99_MS_AT_HIGHEST = 100.0
TARGET_HIGHEST_PER_S = 2000
TARGET_P50_MS_AT_100 = 15.0
TARGET_P50_OVER_PHYSICAL_MAX = 2.0
TARGET_P50_OVER_PHYSICAL_UP_TO_PER_S = 1000
TARGET_REPLAY_EVENTS_PER_S = 30_000


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
    answered = sum(1 for a in answers if a.code)
    errors = sum(n for label, n in statuses.items() if label != "200 OK")
    ok = statuses.get("200 OK", 0)
    duration_s = float(loadgen.get("duration_s") or 0.0)
    return {
        "offered_per_s": offered_per_s,
        "requests": len(answers),
        "answered": answered,
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


def cpu_ms_per_callback(cpu_s: Mapping[str, float | None], answered: int) -> dict[str, Any]:
    """CPU milliseconds per answered callback (any HTTP answer) of each measured process, and
    their total (of the processes measured: None where a system has no such process)."""
    out: dict[str, Any] = {
        name: None if seconds is None or not answered else round(seconds * 1000 / answered, 3)
        for name, seconds in cpu_s.items()
    }
    measured = [v for v in out.values() if v is not None]
    out["total"] = round(sum(measured), 3) if measured else None
    return out


def saturated(step: Mapping[str, Any]) -> bool:
    """Past this step the system cannot keep up: higher offered rates are not tried."""
    offered = float(step["offered_per_s"])
    return bool(
        step["achieved_per_s"] < 0.9 * offered
        or step["latency_ms"]["p99"] > 2000
        or step["errors"] > 0.01 * step["requests"]
    )


def ratios(systems: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pipeline / each baseline (floor, physical, direct) at each offered rate both ran."""
    by_rate = {
        name: {s["offered_per_s"]: s for s in data.get("steps", [])}
        for name, data in systems.items()
    }
    out = []
    for rate, step in sorted(by_rate.get("pipeline", {}).items()):
        row: dict[str, Any] = {"offered_per_s": rate}
        for other in ("floor", "physical", "direct"):
            base = by_rate.get(other, {}).get(rate)
            for q in ("p50", "p99"):
                key = f"{q}_pipeline_over_{other}"
                denom = base["latency_ms"][q] if base else 0
                row[key] = round(step["latency_ms"][q] / denom, 2) if denom else None
        out.append(row)
    return out


def _by_rate(systems: Mapping[str, Mapping[str, Any]], name: str) -> dict[float, Any]:
    return {s["offered_per_s"]: s for s in systems.get(name, {}).get("steps", [])}


def _target(text: str, met: bool | None, figure: str, miss: str | None = None) -> dict[str, Any]:
    """One target: met True/False, or None when the run has no figure for it; ``miss`` is by
    how much ("by 1.0 ms") or why ("pipeline saturated ...") it was missed."""
    return {"target": text, "met": met, "figure": figure, "miss": None if met else miss}


def _missing_step(
    text: str, systems: Mapping[str, Mapping[str, Any]], rate: float
) -> dict[str, Any]:
    """The verdict of a target at ``rate`` when the pipeline has no step there: missed if it
    saturated below it, else not measured."""
    why = _not_reached(systems, rate)
    return _target(text, None if why is None else False, why or "not measured", why)


def _not_reached(systems: Mapping[str, Mapping[str, Any]], rate: float) -> str | None:
    """Why the pipeline has no step at ``rate`` although it was on the ladder, if so."""
    pipeline = systems.get("pipeline", {})
    if rate in pipeline.get("skipped_rates", []):
        steps = pipeline.get("steps", [])
        last = steps[-1]["offered_per_s"] if steps else None
        return f"pipeline saturated at {last:g}/s, {rate:g}/s not offered"
    return None


def evaluate_targets(
    systems: Mapping[str, Mapping[str, Any]], replay: Mapping[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """The latency targets against the run's figures, each met, missed (and by how much) or not
    measured (``met`` None).

    ``replay`` is the results' ``replay`` field when a replay measurement added one:
    ``{"events_per_s": <journal events replayed per second>, ...}``; without it the replay
    target is "not measured".
    """
    pipe = _by_rate(systems, "pipeline")
    out: dict[str, dict[str, Any]] = {}

    text = f"1,000/s: pipeline p99 <= {TARGET_P99_MS_AT_1000:g} ms with 0 errors"
    step = pipe.get(1000)
    if step is None:
        out["p99_at_1000"] = _missing_step(text, systems, 1000)
    else:
        p99, errors = step["latency_ms"]["p99"], step["errors"]
        misses = []
        if p99 > TARGET_P99_MS_AT_1000:
            misses.append(f"{p99 - TARGET_P99_MS_AT_1000:.1f} ms")
        if errors:
            misses.append(f"{errors} errors")
        out["p99_at_1000"] = _target(text, not misses, f"p99 {p99:g} ms, {errors} errors",
                                     "by " + " and ".join(misses))  # fmt: skip

    text = (
        f"highest step with pipeline p99 <= {TARGET_P99_MS_AT_HIGHEST:g} ms and 0 errors"
        f" >= {TARGET_HIGHEST_PER_S:,}/s"
    )
    good = [
        rate
        for rate, s in pipe.items()
        if s["errors"] == 0
        and s["latency_ms"]["p99"] <= TARGET_P99_MS_AT_HIGHEST
        and s["achieved_per_s"] >= 0.9 * rate
    ]
    highest = max(good) if good else None
    if not pipe:
        out["highest_step"] = _target(text, None, "not measured")
    elif highest is None:
        out["highest_step"] = _target(text, False, "", "no step had both")
    else:
        out["highest_step"] = _target(
            text, highest >= TARGET_HIGHEST_PER_S, f"highest {highest:g}/s",
            f"by {TARGET_HIGHEST_PER_S - highest:,.0f}/s",
        )  # fmt: skip
    out["highest_step"]["highest_per_s"] = highest

    text = f"100/s: pipeline p50 <= {TARGET_P50_MS_AT_100:g} ms"
    step = pipe.get(100)
    if step is None:
        out["p50_at_100"] = _missing_step(text, systems, 100)
    else:
        p50 = step["latency_ms"]["p50"]
        out["p50_at_100"] = _target(text, p50 <= TARGET_P50_MS_AT_100, f"p50 {p50:g} ms",
                                    f"by {p50 - TARGET_P50_MS_AT_100:.1f} ms")  # fmt: skip

    limit = TARGET_P50_OVER_PHYSICAL_UP_TO_PER_S
    text = (
        f"pipeline p50 <= {TARGET_P50_OVER_PHYSICAL_MAX:g}x the physical floor's at every rate"
        f" up to {limit:,}/s"
    )
    physical = _by_rate(systems, "physical")
    compared = [
        (rate, s["latency_ms"]["p50"] / physical[rate]["latency_ms"]["p50"])
        for rate, s in sorted(pipe.items())
        if rate <= limit and rate in physical and physical[rate]["latency_ms"]["p50"] > 0
    ]
    skipped = sorted(
        r
        for r in systems.get("pipeline", {}).get("skipped_rates", [])
        if r <= limit and r in physical
    )
    if not compared:
        out["p50_over_physical"] = _target(text, None, "not measured")
    else:
        worst_rate, worst = max(compared, key=lambda rw: rw[1])
        misses = []
        if worst > TARGET_P50_OVER_PHYSICAL_MAX:
            allowed = TARGET_P50_OVER_PHYSICAL_MAX * physical[worst_rate]["latency_ms"]["p50"]
            p50 = pipe[worst_rate]["latency_ms"]["p50"]
            misses.append(
                f"by {p50 - allowed:.1f} ms at {worst_rate:g}/s (p50 {p50:g} ms against"
                f" {TARGET_P50_OVER_PHYSICAL_MAX:g} x {physical[worst_rate]['latency_ms']['p50']:g}"
                f" = {allowed:.1f} ms)"
            )
        if skipped:
            misses.append(f"pipeline saturated before {', '.join(f'{r:g}' for r in skipped)}/s")
        out["p50_over_physical"] = _target(
            text, not misses, f"worst {worst:.2f}x at {worst_rate:g}/s", "; ".join(misses)
        )
        out["p50_over_physical"]["ratios"] = {f"{r:g}": round(w, 2) for r, w in compared}

    text = f"replay >= {TARGET_REPLAY_EVENTS_PER_S:,} events/s"
    rate = None if not replay else replay.get("events_per_s")
    if rate is None:
        out["replay"] = _target(text, None, "not measured")
    else:
        out["replay"] = _target(
            text, rate >= TARGET_REPLAY_EVENTS_PER_S, f"{rate:,.0f} events/s",
            f"by {TARGET_REPLAY_EVENTS_PER_S - rate:,.0f} events/s",
        )  # fmt: skip
    return out


def target_lines(targets: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = []
    for letter, t in zip("abcde", targets.values(), strict=False):
        verdict = {True: "MET", False: "NOT MET", None: "not measured"}[t["met"]]
        miss = t.get("miss") if t["met"] is False else None
        tail = "" if not miss else f" {miss}" if miss.startswith("by ") else f": {miss}"
        figure = "" if t["figure"] in ("", "not measured") else f" ({t['figure']})"
        lines.append(f"  ({letter}) {t['target']}: {verdict}{tail}{figure}")
    return lines


def _ms_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def summary(result: Mapping[str, Any]) -> str:
    """One screen: each system's steps (with CPU ms per callback of every process), the ratios,
    the targets, the money checks."""
    lines = [
        f"casino aggregator benchmark  {result['started_utc']}"
        f"  commit {result['git']['commit'][:12]}"
        f"  {result['machine']['cpus']} cpus  {result['config']['players']} players"
        f"  {result['config']['step_seconds']}s steps  seed {result['config'].get('seed')}",
    ]
    for name in SYSTEMS:
        data = result["systems"].get(name)
        if not data:
            continue
        lines.append("")
        lines.append(f"{name}: {data.get('description', '')}")
        header = (
            f"{'offered':>8} {'achieved':>8} {'p50':>7} {'p90':>7} {'p99':>7} {'p99.9':>7}"
            f" {'max':>7} {'errors':>6}  cpu ms/callback: "
            + " ".join(f"{n[:5]:>5}" for n in CPU_NAMES)
            + f" {'total':>5}  proj.lag"
        )
        lines.append(header)
        for s in data["steps"]:
            lat = s["latency_ms"]
            per = s.get("cpu_ms_per_callback") or {}
            lag = s.get("projector_lag")
            lines.append(
                f"{s['offered_per_s']:>8.0f} {s['achieved_per_s']:>8.0f} {lat['p50']:>7.1f}"
                f" {lat['p90']:>7.1f} {lat['p99']:>7.1f} {lat['p99.9']:>7.1f} {lat['max']:>7.1f}"
                f" {s['errors']:>6}                   "
                + " ".join(f"{_ms_cell(per.get(n)):>5}" for n in (*CPU_NAMES, "total"))
                + f"  {'' if lag is None else lag:>8}"
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
    baselines = ("floor", "physical", "direct")
    lines.append(
        "ratios  offered"
        + "".join(f"  p50 pipe/{b[:5]:<5}  p99 pipe/{b[:5]:<5}" for b in baselines)
    )
    for r in result.get("ratios", []):
        cells = [r.get(f"{q}_pipeline_over_{b}") for b in baselines for q in ("p50", "p99")]
        lines.append(
            f"        {r['offered_per_s']:>7.0f}  "
            + "  ".join(f"{'-' if c is None else c:>14}" for c in cells)
        )
    lines.append("")
    lines.append("targets:")
    lines.extend(target_lines(result.get("targets", {})))
    lines.append(f"took {result.get('took_s', 0):.0f}s; results: {result.get('json_path', '')}")
    return "\n".join(lines)


def plot(result: Mapping[str, Any], path: Path) -> None:
    """Latency percentiles against offered load, one colour per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 6), dpi=110)
    colours = {
        "pipeline": "tab:red",
        "floor": "tab:green",
        "physical": "tab:olive",
        "direct": "tab:blue",
    }
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
