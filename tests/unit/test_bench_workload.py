"""The benchmark's schedule, request files and figures (pure code)."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from agg_ingress.client import sign
from bench import report
from bench.run import step_seed
from bench.workload import MIX, Answer, Player, build_schedule, callback_lines


def schedule(rate: float = 1000, seconds: float = 60, players: int = 10_000, seed: int = 3):
    return build_schedule(players, rate, seconds, prefix="b", rng=random.Random(seed))


def test_offered_rate_and_even_spacing() -> None:
    s = schedule(rate=500, seconds=10)
    assert len(s.calls) == 5000
    times = [c.at_us for c in s.calls]
    assert times == sorted(times)
    assert times[1] - times[0] == 2000 and times[-1] == 4999 * 2000


def test_mix_matches_the_target() -> None:
    kinds = schedule().kinds
    total = sum(kinds.values())
    for kind, share in MIX.items():
        assert abs(kinds[kind] / total - share) < 0.01 + share * 0.1, (kind, kinds)


def test_follow_ups_come_after_their_bet_and_players_play_one_round_at_a_time() -> None:
    s = schedule(rate=2000, seconds=20, players=5000)
    bet_at = {}
    open_round: dict[int, str] = {}
    for i, call in enumerate(s.calls):
        if call.kind == "bet":
            assert call.player not in open_round, "a player started a second round"
            bet_at[call.txn] = call.at_us
            if not call.round_closed:
                open_round[call.player] = call.round_id
        elif call.kind == "duplicate":
            assert call.origin is not None and s.calls[call.origin].txn == call.txn
            assert call.at_us > bet_at[call.txn]
        else:
            bet_txn = call.ref_txn or call.txn.replace("-w", "-t")
            assert call.at_us - bet_at[bet_txn] >= 500_000, (i, call)
            assert open_round.pop(call.player) == call.round_id
    assert len({c.txn for c in s.calls if c.kind != "duplicate"}) == sum(
        1 for c in s.calls if c.kind != "duplicate"
    )


def test_same_seed_same_schedule() -> None:
    assert schedule(seed=9).calls == schedule(seed=9).calls
    assert schedule(seed=9).calls != schedule(seed=10).calls


def test_too_few_players_is_refused() -> None:
    with pytest.raises(ValueError, match="too few"):
        build_schedule(10, 1000, 5, prefix="b", rng=random.Random(1))


def test_request_lines_are_signed_and_a_duplicate_repeats_the_original_bytes() -> None:
    s = schedule(rate=1000, seconds=20, players=3000)
    players = [Player("op-alpha", f"p{i}", "EUR", "nova-starfall", "prov-nova", f"tok{i}")
               for i in range(3000)]  # fmt: skip
    secret = b"s3cret"
    lines = [json.loads(x) for x in callback_lines(
        s.calls, range(len(s.calls)), players, {"prov-nova": secret}, timestamp=1700000000,
        prefix="b")]  # fmt: skip
    for call, line in zip(s.calls, lines, strict=True):
        assert line["at_us"] == call.at_us
        assert line["path"] == f"/v1/providers/prov-nova/wallet/{call.action}"
        expected = sign(secret, 1700000000, "POST", line["path"], line["body"])
        assert line["headers"]["X-Agg-Signature"] == expected
        body = json.loads(line["body"])
        assert body["transaction_id"] == call.txn and body["player_id"] == f"p{call.player}"
        if call.kind == "duplicate":
            assert call.origin is not None
            assert line["body"] == lines[call.origin]["body"]
        if call.kind == "rollback":
            assert body["reference_transaction_id"] == call.ref_txn and "amount" not in body
        else:
            assert isinstance(body["amount"], int)
    assert Counter(c.kind for c in s.calls)["duplicate"] > 0


def test_percentiles_are_nearest_rank() -> None:
    values = list(range(1, 1001))
    assert report.percentile(values, 0.5) == 500
    assert report.percentile(values, 0.99) == 990
    assert report.percentile(values, 0.999) == 999
    assert report.percentile([], 0.5) == 0.0
    lat = report.latency_ms([1000, 2000, 3000, 4000])
    assert lat["p50"] == 2.0 and lat["max"] == 4.0


def test_step_figures_count_everything_but_200_ok_as_errors() -> None:
    s = schedule(rate=100, seconds=10, players=500)
    answers = [Answer(200, "OK", 5000, 10) for _ in s.calls]
    answers[-1] = Answer(503, "RETRY_LATER", 2_000_000, 10)
    answers[-2] = Answer(0, "", 10_000_000, 10, "timeout")
    figures = report.step_figures(
        s.calls, answers, {"duration_s": 10.0}, offered_per_s=100, warmup_s=2
    )
    assert figures["errors"] == 2
    assert figures["statuses"] == {"200 OK": 998, "503 RETRY_LATER": 1, "no answer (timeout)": 1}
    assert figures["achieved_per_s"] == 99.8
    assert figures["latency_ms"]["max"] == 10_000.0
    assert report.saturated(figures) is False
    assert report.saturated({**figures, "achieved_per_s": 80.0}) is True


def _step(rate: float, p50: float, p99: float, errors: int = 0) -> dict[str, object]:
    return {"offered_per_s": rate, "achieved_per_s": rate, "errors": errors,
            "latency_ms": {"p50": p50, "p99": p99}}  # fmt: skip


def test_ratios_against_every_baseline() -> None:
    systems = {
        "pipeline": {"steps": [_step(500, 20, 40), _step(1500, 30, 90)]},
        "floor": {"steps": [_step(500, 10, 20), _step(1500, 12, 30)]},
        "physical": {"steps": [_step(500, 5, 10)]},
        "direct": {"steps": [_step(500, 4, 8)]},
    }
    rows = report.ratios(systems)
    assert rows[0] == {"offered_per_s": 500, "p50_pipeline_over_floor": 2.0,
                       "p99_pipeline_over_floor": 2.0, "p50_pipeline_over_physical": 4.0,
                       "p99_pipeline_over_physical": 4.0, "p50_pipeline_over_direct": 5.0,
                       "p99_pipeline_over_direct": 5.0}  # fmt: skip
    assert rows[1]["p50_pipeline_over_direct"] is None
    assert rows[1]["p50_pipeline_over_physical"] is None


# one row per target: the pipeline's and the physical floor's steps, the replay figure,
# then each target's verdict (True met, False missed, None not measured)
TARGET_CASES = [
    pytest.param(
        [_step(100, 12, 30), _step(1000, 30, 45), _step(2000, 60, 95)],
        [_step(100, 8, 10), _step(1000, 15, 20), _step(2000, 30, 40)],
        {"events_per_s": 31_000},
        {
            "p99_at_1000": True,
            "highest_step": True,
            "p50_at_100": True,
            "p50_over_physical": True,
            "replay": True,
        },
        id="all met",
    ),
    pytest.param(
        [_step(100, 16, 30), _step(1000, 30, 60, errors=1), _step(2000, 60, 300)],
        [_step(100, 8, 10), _step(1000, 10, 20), _step(2000, 30, 40)],
        {"events_per_s": 20_000},
        {
            "p99_at_1000": False,
            "highest_step": False,
            "p50_at_100": False,
            "p50_over_physical": False,
            "replay": False,
        },
        id="all missed",
    ),
    pytest.param(
        [_step(250, 12, 30)],
        [],
        None,
        {
            "p99_at_1000": None,
            "highest_step": False,
            "p50_at_100": None,
            "p50_over_physical": None,
            "replay": None,
        },
        id="not measured",
    ),
]


@pytest.mark.parametrize(("pipeline", "physical", "replay", "verdicts"), TARGET_CASES)
def test_targets(
    pipeline: list[dict[str, object]],
    physical: list[dict[str, object]],
    replay: dict[str, float] | None,
    verdicts: dict[str, bool | None],
) -> None:
    systems = {"pipeline": {"steps": pipeline}, "physical": {"steps": physical}}
    targets = report.evaluate_targets(systems, replay)
    assert {name: t["met"] for name, t in targets.items()} == verdicts
    for t in targets.values():
        assert (t["miss"] is not None) == (t["met"] is False), t
    lines = report.target_lines(targets)
    assert len(lines) == 5 and lines[0].startswith("  (a) 1,000/s")


def test_missed_targets_say_by_how_much() -> None:
    systems = {
        "pipeline": {"steps": [_step(100, 16, 30), _step(500, 185, 384)],
                     "skipped_rates": [1000, 2000]},
        "physical": {"steps": [_step(100, 8, 10), _step(500, 45, 60), _step(1000, 50, 70)]},
    }  # fmt: skip
    targets = report.evaluate_targets(systems)
    assert targets["p99_at_1000"]["met"] is False
    assert "saturated at 500/s" in targets["p99_at_1000"]["miss"]
    assert targets["highest_step"]["miss"] == "by 1,900/s"
    assert targets["p50_at_100"]["miss"] == "by 1.0 ms"
    assert targets["p50_over_physical"]["miss"].startswith(
        "by 95.0 ms at 500/s (p50 185 ms against 2 x 45 = 90.0 ms)"
    )
    assert "saturated before 1000/s" in targets["p50_over_physical"]["miss"]
    assert targets["replay"]["met"] is None
    text = "\n".join(report.target_lines(targets))
    assert "(e) replay >= 30,000 events/s: not measured" in text
    assert "(c) 100/s: pipeline p50 <= 15 ms: NOT MET by 1.0 ms (p50 16 ms)" in text
    assert "(a) 1,000/s: pipeline p99 <= 50 ms with 0 errors: NOT MET: pipeline saturated" in text


def test_cpu_per_callback_by_process_and_total() -> None:
    per = report.cpu_ms_per_callback({"broker": 1.0, "saga": 0.5, "projector": None}, 1000)
    assert per == {"broker": 1.0, "saga": 0.5, "projector": None, "total": 1.5}
    assert report.cpu_ms_per_callback({"broker": 1.0}, 0) == {"broker": None, "total": None}


def test_every_system_gets_the_same_schedule_at_a_step() -> None:
    seed = step_seed(1, 500)
    assert seed == step_seed(1, 500) and seed != step_seed(1, 1000)
    assert seed != step_seed(2, 500) and seed != step_seed(1, 500, "warmup")
    a = build_schedule(3000, 500, 5, prefix="a", rng=random.Random(seed))
    b = build_schedule(3000, 500, 5, prefix="b", rng=random.Random(seed))
    shape = [(c.at_us, c.kind, c.player, c.amount, c.origin) for c in a.calls]
    assert shape == [(c.at_us, c.kind, c.player, c.amount, c.origin) for c in b.calls]
