"""The deterministic simulator and round finality: a schedule that leaves a round idle past
its provider's auto-close time, then bets and wins on it, under crashes; the seeded schedules
reach auto-closes; and the rounds' invariants catch a saga that forgets an open round."""

from __future__ import annotations

from dataclasses import replace

from agg_domain.saga import Message
from agg_saga.worker import SagaWorker, _Batch
from agg_simulator.invariants import check, journal
from agg_simulator.schedule import Call, Fault, Schedule, generate
from agg_simulator.world import run_schedule


def _idle_round(*faults: Fault) -> Schedule:
    """pl-0 bets on r1 at prov-x (auto-close 1.2 s), leaves it; after the idle time a new bet
    (to refuse) and a win (to pay). pl-1 plays the same round id at prov-y, which closes it
    with a win, then bets on it again."""
    calls = (
        Call(0, 0, "op-a", "pl-0", "prov-x", "BET", "EUR", transaction_id="t1", round_id="r1",
             amount=100),
        Call(1, 50, "op-a", "pl-1", "prov-y", "BET", "EUR", transaction_id="t1", round_id="r1",
             amount=40),
        Call(2, 300, "op-a", "pl-1", "prov-y", "WIN", "EUR", transaction_id="w1", round_id="r1",
             amount=0, round_closed=True),
        Call(3, 7_000, "op-a", "pl-0", "prov-x", "BET", "EUR", transaction_id="t2",
             round_id="r1", amount=50, dup_after_ms=400),
        Call(4, 7_100, "op-a", "pl-0", "prov-x", "WIN", "EUR", transaction_id="w2",
             round_id="r1", amount=250),
        Call(5, 7_200, "op-a", "pl-1", "prov-y", "BET", "EUR", transaction_id="t2",
             round_id="r1", amount=10),
    )  # fmt: skip
    return Schedule(seed=-1, partitions=1, operators=("op-a",), calls=calls, faults=faults,
                    starting_balance=1_000, exec_seed=3,
                    round_auto_close_ms=(("prov-x", 1_200), ("prov-y", 1_800_000)))  # fmt: skip


def test_an_idle_round_is_auto_closed_its_bet_refused_and_its_win_paid() -> None:
    for crash in (None, Fault(1_250, "crash", 0, "send:outputs"),
                  Fault(1_250, "crash", 1, "torn:state")):  # fmt: skip
        world = run_schedule(_idle_round(*([crash] if crash else [])))
        assert check(world) == [], crash
        finals = {t.call.n: t.final for t in world.tracks}
        # pl-1's first bet may come back (after a 503) once the win has closed its round
        assert finals[1] in ("OK", "ROUND_CLOSED"), crash
        assert {n: f for n, f in finals.items() if n != 1} == {
            0: "OK", 2: "OK", 3: "ROUND_CLOSED", 4: "OK", 5: "ROUND_CLOSED"}, crash  # fmt: skip
        events = [(name, d) for p in journal(world).values() for name, d in p]
        closes = [(name, d["player_id"]) for name, d in events
                  if name in ("RoundClosed", "RoundAutoClosed")]  # fmt: skip
        assert sorted(set(closes)) == [("RoundAutoClosed", "pl-0"), ("RoundClosed", "pl-1")]
        [auto] = {d["event_id"]: d for name, d in events if name == "RoundAutoClosed"}.values()
        assert (auto["bet_total"], auto["win_total"], auto["auto_close_ms"]) == (100, 0, 1_200)
        assert world.round_stats["bets refused ROUND_CLOSED"] == 3 - (finals[1] == "OK")
        assert world.round_stats["WinCredited after an auto-close"] == 1


def test_a_clock_jump_past_the_idle_time_closes_the_rounds() -> None:
    schedule = replace(_idle_round(Fault(5_000, "clock_jump", amount_ms=60_000)),
                       round_auto_close_ms=(("prov-x", 30_000), ("prov-y", 30_000)))  # fmt: skip
    world = run_schedule(schedule)
    assert check(world) == []
    assert world.round_stats["auto-closed"] >= 1
    assert {t.call.n: t.final for t in world.tracks}[3] == "ROUND_CLOSED"


def test_the_seeded_schedules_reach_auto_closes() -> None:
    hits = 0
    for seed in range(60):
        world = run_schedule(generate(seed))
        assert check(world) == [], f"aggregator sim --seed {seed}"
        hits += world.round_stats["auto-closed"] > 0
    assert hits >= 20


class _ForgetsRounds(SagaWorker):
    """A saga that drops a player's rounds from its memory after each decision (as the
    retention once did to open rounds)."""

    def _decide(self, work: _Batch, partition: int, key: bytes, message: Message,
                now: int) -> None:  # fmt: skip
        super()._decide(work, partition, key, message, now)
        state = self.states[partition][key]
        self.states[partition][key] = replace(state, rounds={})


def test_the_rounds_invariant_catches_a_saga_that_forgets_open_rounds() -> None:
    schedule = replace(_idle_round(), round_auto_close_ms=(("prov-x", 1_800_000),
                                                           ("prov-y", 1_800_000)))  # fmt: skip
    problems = check(run_schedule(schedule, _ForgetsRounds))
    assert any("the saga forgot it" in p for p in problems), problems
    assert check(run_schedule(schedule)) == []
