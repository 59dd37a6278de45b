"""``aggregator sim`` (``make sim``): the deterministic simulator over many seeds.

Each seed is one schedule (:mod:`agg_simulator.schedule`) run by :mod:`agg_simulator.world`
and checked by :mod:`agg_simulator.invariants`. A failing seed prints the command that
replays it and the schedule cut down to what still fails.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from agg_simulator.invariants import check
from agg_simulator.schedule import Schedule, generate
from agg_simulator.world import run_schedule

CHUNK = 100
MINIMISE_RUNS_MAX = 400


@dataclass
class Tally:
    schedules: int = 0
    crashes: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    restores: int = 0
    failures: list[tuple[int, list[str]]] = field(default_factory=list)
    rounds: Counter[str] = field(default_factory=Counter)
    """Rounds closed (by the provider, auto-closed), bets refused on closed rounds, money
    after a close; ``with an auto-close``: schedules where one happened."""
    traffic: Counter[str] = field(default_factory=Counter)
    """Schedules with each kind of traffic (demo play, a transfer wallet, ...)."""

    def add(self, other: Tally) -> None:
        self.schedules += other.schedules
        self.crashes.update(other.crashes)
        self.faults.update(other.faults)
        self.restores += other.restores
        self.rounds.update(other.rounds)
        self.traffic.update(other.traffic)
        self.failures.extend(other.failures)


def run_seed(seed: int) -> tuple[list[str], Tally]:
    world = run_schedule(generate(seed))
    problems = check(world)
    tally = Tally(1, Counter(world.stats.crashes), Counter(world.stats.faults),
                  world.stats.restores, rounds=Counter(world.round_stats))  # fmt: skip
    if world.round_stats["auto-closed"]:
        tally.rounds["schedules with an auto-close"] += 1
    if problems:
        tally.failures.append((seed, problems))
    calls = world.schedule.calls
    tally.traffic.update(
        kind for kind, present in (
            ("demo play", any(c.mode != "real" for c in calls)),
            ("transfer wallet", bool(world.schedule.transfer_operators)),
            ("withdrawal of everything", any(c.action == "WITHDRAW" and c.amount is None
                                             for c in calls)),
        ) if present
    )  # fmt: skip
    controlled = [c for c in calls if c.controls is not None]
    if controlled:
        tally.traffic[f"player controls {controlled[0].controls[0]}"] += 1  # type: ignore[index]
        who = (controlled[0].operator_id, controlled[0].player_id)
        if any(
            (t.call.operator_id, t.call.player_id) == who
            and t.call.refusal is None
            and t.final in ("PLAYER_BLOCKED", "LIMIT_EXCEEDED")
            for t in world.tracks
        ):
            tally.traffic["play refused by a player's control"] += 1
    return problems, tally


def _chunk(seeds: range) -> Tally:
    total = Tally()
    for seed in seeds:
        total.add(run_seed(seed)[1])
    return total


def _chunks(first: int, count: int) -> Iterator[range]:
    for start in range(first, first + count, CHUNK):
        yield range(start, min(first + count, start + CHUNK))


def fails(schedule: Schedule) -> bool:
    return bool(check(run_schedule(schedule)))


def minimise(schedule: Schedule) -> Schedule:
    """Drop calls and faults, one at a time, while the schedule still fails."""
    runs = 0
    changed = True
    while changed and runs < MINIMISE_RUNS_MAX:
        changed = False
        for drop in ("fault", "call"):
            index = 0
            while runs < MINIMISE_RUNS_MAX:
                items = schedule.faults if drop == "fault" else schedule.calls
                if index >= len(items):
                    break
                smaller = (schedule.without_fault(index) if drop == "fault"
                           else schedule.without_call(index))  # fmt: skip
                runs += 1
                if fails(smaller):
                    schedule, changed = smaller, True
                else:
                    index += 1
    return schedule


def _report_failure(seed: int, problems: list[str], minimise_it: bool) -> None:
    print(f"\nVIOLATION seed={seed}", flush=True)
    for problem in problems[:8]:
        print(f"  - {problem}")
    if len(problems) > 8:
        print(f"  ... and {len(problems) - 8} more")
    print(f"  replay: aggregator sim --seed {seed}")
    if minimise_it:
        small = minimise(generate(seed))
        print("  minimised schedule (still fails):")
        print("    " + small.describe().replace("\n", "\n    "))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aggregator sim", description=__doc__)
    parser.add_argument("--seeds", type=int, default=20_000, help="how many schedules")
    parser.add_argument("--first", type=int, default=0, help="the first seed")
    parser.add_argument("--seed", type=int, default=None, help="replay this one seed")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-minimise", action="store_true")
    parser.add_argument("--show", action="store_true", help="print the schedule of --seed")
    args = parser.parse_args(argv)

    if args.seed is not None:
        schedule = generate(args.seed)
        if args.show:
            print(schedule.describe())
        problems, tally = run_seed(args.seed)
        if problems:
            _report_failure(args.seed, problems, not args.no_minimise)
            return 1
        rounds = dict(sorted(tally.rounds.items()))
        print(f"seed {args.seed}: 0 violations (crashes hit {dict(tally.crashes)}, "
              f"faults {dict(tally.faults)}, rounds {rounds})")  # fmt: skip
        return 0

    started = time.monotonic()
    total = Tally()
    last = 0.0
    jobs = max(1, args.jobs)
    chunks = _chunks(args.first, args.seeds)
    if jobs == 1:
        results: Iterator[Tally] = map(_chunk, chunks)
        pool = None
    else:
        pool = multiprocessing.get_context("fork").Pool(jobs)
        results = pool.imap_unordered(_chunk, chunks)
    try:
        for tally in results:
            total.add(tally)
            now = time.monotonic()
            if now - last >= 2 or total.schedules == args.seeds:
                last = now
                rate = total.schedules / max(now - started, 1e-9)
                print(f"[sim] {total.schedules}/{args.seeds} schedules, {rate:.0f}/s, "
                      f"{len(total.failures)} violating", file=sys.stderr, flush=True)  # fmt: skip
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    seconds = time.monotonic() - started
    print(f"schedules: {total.schedules} (seeds {args.first}..{args.first + args.seeds - 1}), "
          f"{seconds:.1f} s, {total.schedules / max(seconds, 1e-9):.0f} schedules/s, "
          f"{jobs} jobs")  # fmt: skip
    print(f"crash points hit: {dict(sorted(total.crashes.items()))}")
    print(f"faults injected: {dict(sorted(total.faults.items()))}; worker restarts: "
          f"{total.restores}")  # fmt: skip
    print(f"rounds: {dict(sorted(total.rounds.items()))}")
    print(f"schedules with: {dict(sorted(total.traffic.items()))}")
    print(f"violations: {len(total.failures)}")
    for seed, problems in sorted(total.failures)[:3]:
        _report_failure(seed, problems, not args.no_minimise)
    return 1 if total.failures else 0


if __name__ == "__main__":
    sys.exit(main())
