"""The benchmark's schedule, request files and figures (pure code)."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from agg_ingress.client import sign
from bench import report
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


def test_ratios_and_targets() -> None:
    def step(rate: int, p50: float, p99: float, errors: int = 0) -> dict[str, object]:
        return {"offered_per_s": rate, "achieved_per_s": rate, "errors": errors,
                "latency_ms": {"p50": p50, "p99": p99}}  # fmt: skip

    systems = {
        "pipeline": {"steps": [step(500, 20, 40), step(1500, 30, 90), step(2000, 60, 300)]},
        "floor": {"steps": [step(500, 10, 20), step(1500, 12, 30), step(2000, 15, 40)]},
        "direct": {"steps": [step(500, 4, 8)]},
    }
    rows = report.ratios(systems)
    assert rows[0] == {"offered_per_s": 500, "p50_pipeline_over_floor": 2.0,
                       "p99_pipeline_over_floor": 2.0, "p50_pipeline_over_direct": 5.0,
                       "p99_pipeline_over_direct": 5.0}  # fmt: skip
    assert rows[1]["p50_pipeline_over_direct"] is None
    targets = report.evaluate_targets(systems)
    assert targets["at_500"]["met"] is True
    assert targets["highest_step_p99_le_100ms_zero_errors"] == 1500
    assert targets["highest_step_met"] is True
    assert targets["p50_over_floor_worst"] == 4.0 and targets["p50_over_floor_met"] is False
