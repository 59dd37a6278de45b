"""The benchmark itself, shrunk: the load generator's own tests, and ``python -m bench`` end to
end (pipeline, the relay floor, the physical floor and direct, two small steps each) on the
session's real servers. No figure is asserted on: speed is what the benchmark reports, not what
a test checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agg_config.paths import repo_root
from agg_config.settings import Settings
from bench.run import go_binary

pytestmark = pytest.mark.integration
LOADGEN = repo_root() / "bench" / "loadgen"


@pytest.mark.skipif(go_binary() is None, reason="the Go toolchain is not installed")
def test_load_generator_own_tests() -> None:
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
    done = subprocess.run(
        [str(go_binary()), "test", "./..."],
        cwd=LOADGEN,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(go_binary() is None, reason="the Go toolchain is not installed")
@pytest.mark.timeout(600)
def test_bench_end_to_end(settings: Settings, catalogue_topics: list[str], tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AGG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "AGG_DATABASE_URL": settings.database_url,
    }
    out = tmp_path / "results"
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "--rates",
        "30,60",
        "--step-seconds",
        "3",
        "--warmup-seconds",
        "1",
        "--warmup-step-seconds",
        "2",
        "--warmup-step-rate",
        "20",
        "--players",
        "300",
        "--work-dir",
        str(tmp_path / "work"),
        "--out-dir",
        str(out),
    ]
    done = subprocess.run(
        cmd, cwd=repo_root(), env=env, capture_output=True, text=True, timeout=540
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    [result_file] = out.glob("*.json")
    result = json.loads(result_file.read_text())
    assert result["git"]["commit"] and result["machine"]["cpus"]
    assert set(result["systems"]) == {"pipeline", "floor", "physical", "direct"}
    for name, system in result["systems"].items():
        assert [s["offered_per_s"] for s in system["steps"]] == [30, 60], name
        for step in system["steps"]:
            assert step["requests"] == step["offered_per_s"] * 3
            assert sum(step["statuses"].values()) == step["requests"]
            assert step["latency_ms"]["p50"] > 0
            assert step["cpu_s"]["ingress"] is not None and step["cpu_s"]["loadgen"] is not None
            assert step["cpu_s"]["wallet"] is not None
            per_callback = step["cpu_ms_per_callback"]
            assert per_callback["ingress"] is not None and per_callback["total"] > 0
        if name not in ("floor", "physical"):
            assert system["money_check"]["ok"], system["money_check"]
            assert system["money_check"]["players_checked"] > 0
    # the same schedule for every system at a step
    seeds = {n: [s["seed"] for s in d["steps"]] for n, d in result["systems"].items()}
    assert len({tuple(v) for v in seeds.values()}) == 1, seeds
    assert len(set(seeds["pipeline"])) == 2
    kinds = {n: [s["kinds"] for s in d["steps"]] for n, d in result["systems"].items()}
    assert all(k == kinds["pipeline"] for k in kinds.values()), kinds
    assert result["systems"]["physical"]["steps"][0]["statuses"] == {"200 OK": 90}
    pipeline_step = result["systems"]["pipeline"]["steps"][-1]
    assert pipeline_step["cpu_s"]["saga"] is not None
    assert pipeline_step["projector_lag"] is not None
    assert {r["offered_per_s"] for r in result["ratios"]} == {30, 60}
    assert (out / result_file.with_suffix(".png").name).stat().st_size > 10_000
    summary = (out / result_file.with_suffix(".txt").name).read_text()
    assert "pipeline" in summary and "physical" in summary and "targets:" in summary
    assert "(e) replay >= 30,000 events/s: not measured" in summary
    assert set(result["targets"]) == {
        "p99_at_1000",
        "highest_step",
        "p50_at_100",
        "p50_over_physical",
        "replay",
    }
    assert "money check: OK" in done.stdout
