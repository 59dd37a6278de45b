"""The deterministic simulator: the real saga worker on the simulated port, under seeded
fault schedules. A shrunk run of it, schedules aimed at the crash points the worker's
protocol depends on, and the proof that the simulator catches the protocol it replaced."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

import agg_domain.saga
from agg_ports.transport import OutRecord
from agg_saga.worker import SagaWorker, _Batch
from agg_simulator.invariants import check, journal
from agg_simulator.schedule import Call, Fault, Schedule, generate
from agg_simulator.world import run_schedule


def _bet_with_a_late_reply(crash: Fault) -> Schedule:
    """One bet whose wallet answers after the debit's deadline (1.5 s), a win and a balance
    call of another player on the same partition, and ``crash``."""
    calls = (
        Call(0, 0, "op-a", "pl-0", "prov-x", "BET", "EUR", transaction_id="t1", round_id="r1",
             amount=100, round_closed=True),
        Call(1, 10, "op-a", "pl-1", "prov-x", "WIN", "EUR", transaction_id="w1", round_id="r1",
             amount=30),
        Call(2, 20, "op-a", "pl-1", "prov-x", "BALANCE", "EUR"),
    )  # fmt: skip
    faults = (
        Fault(0, "wallet_slow", duration_ms=2_500, amount_ms=1_800),
        crash,
        Fault(crash.at_ms, "crash", worker=1 - crash.worker, point=crash.point, skip=crash.skip),
        # no jump: keeps the faults armed until the late reply's batch is committed (offsets
        # are committed on the tick after a batch is finished)
        Fault(3_000, "clock_jump", amount_ms=0),
    )
    return Schedule(seed=-1, partitions=1, operators=("op-a",), calls=calls, faults=faults,
                    starting_balance=1_000, exec_seed=7)  # fmt: skip


def test_a_shrunk_simulation_finds_no_violation() -> None:
    for seed in range(150):
        world = run_schedule(generate(seed))
        assert check(world) == [], f"aggregator sim --seed {seed}"


def test_a_schedule_replays_to_the_same_run() -> None:
    first, second = run_schedule(generate(11)), run_schedule(generate(11))
    assert [t.answers for t in first.tracks] == [t.answers for t in second.tracks]
    assert journal(first) == journal(second)


def test_a_crash_at_every_point_of_a_timeout_batch_decides_it_once() -> None:
    """The timeout of a debit (compensation, RETRY_LATER) and the wallet's late OK: a crash
    before, inside or after the state write, or inside the outputs, must leave exactly one of
    the two decisions, whichever was recorded, and the money that goes with it."""
    for point in ("send:state", "torn:state", "send:outputs", "torn:outputs", "commit"):
        hits = 0
        for skip in range(4):
            world = run_schedule(_bet_with_a_late_reply(Fault(1_450, "crash", 0, point, skip)))
            assert check(world) == [], (point, skip)
            hits += world.stats.crashes[point]
            names = [name for p in journal(world).values() for name, _ in p]
            assert "DebitTimedOut" in names or "BetAccepted" in names
        assert hits >= 1, point


class _PublishThenPersist(SagaWorker):
    """The protocol this worker had before: outputs published before the state is written,
    redelivered messages decided again, nothing re-published on a restore."""

    def _persist_and_publish(self, work: _Batch, started: float) -> None:
        send = self.transport.send
        held: list[list[OutRecord]] = []

        def hold(records: Sequence[OutRecord]) -> asyncio.Future[None]:
            held.append(list(records))
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

        self.transport.send = hold  # type: ignore[method-assign]
        try:
            super()._persist_and_publish(work, started)
        finally:
            self.transport.send = send  # type: ignore[method-assign]
        if not held:
            return
        batch, finish = self.in_flight.pop()
        finish.cancel()

        async def publish_then_persist() -> None:
            await self.transport.produce(batch.outputs)
            await self.transport.produce(held[0])
            self._offsets.update(batch.offsets)

        self.in_flight.append((batch, asyncio.ensure_future(publish_then_persist())))

    def _meta(self, partition: int, key: bytes):  # type: ignore[no-untyped-def]
        meta = super()._meta(partition, key)
        meta.applied.clear()
        return meta


def test_the_simulator_catches_outputs_published_before_the_state() -> None:
    """The defect that decided twice (a bet refunded after the provider was told OK) is
    found within the first few hundred seeds."""
    found = None
    for seed in range(400):
        if check(run_schedule(generate(seed), _PublishThenPersist)):
            found = seed
            break
    assert found is not None
    assert check(run_schedule(generate(found))) == [], "the real worker passes the same seed"


def _concurrent_bets_under_a_wager_limit() -> Schedule:
    """A day's wager limit of 150 stated first, then two bets of 100 sent while the wallet
    takes its time (the second comes while the first's debit is in flight)."""
    calls = (
        Call(-1, 0, "op-a", "pl-0", "", "PLAYER_CONTROLS", "EUR", transaction_id="ch-1",
             controls=("wager", 150)),
        Call(0, 10, "op-a", "pl-0", "prov-x", "BET", "EUR", transaction_id="t1", round_id="r1",
             amount=100),
        Call(1, 20, "op-a", "pl-0", "prov-x", "BET", "EUR", transaction_id="t2", round_id="r2",
             amount=100),
    )  # fmt: skip
    faults = (Fault(0, "wallet_slow", duration_ms=1_000, amount_ms=800),)
    return Schedule(seed=-1, partitions=1, operators=("op-a",), calls=calls, faults=faults,
                    starting_balance=1_000, exec_seed=7)  # fmt: skip


def test_the_simulator_catches_a_limit_passed_by_debits_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stakes whose debit awaits the wallet count against a limit: a saga that forgot them
    accepts both bets, and the simulator says so."""
    world = run_schedule(_concurrent_bets_under_a_wager_limit())
    assert check(world) == []
    assert [t.final for t in world.tracks] == ["OK", "OK", "LIMIT_EXCEEDED"]
    monkeypatch.setattr(agg_domain.saga, "_in_flight", lambda d, currency: 0)
    problems = check(run_schedule(_concurrent_bets_under_a_wager_limit()))
    assert problems == ["op-a/pl-0 under wager:150: wager of 200 above the limit"]
