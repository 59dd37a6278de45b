"""The saga worker's bookkeeping of a decision, without a broker: the changelog records, the
next Tick it keeps per player and its count of pending commands equal what walking the
player's whole state gives."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agg_config.settings import Settings
from agg_domain.saga import Message, next_due_ms
from agg_saga.state_codec import StateBuilder, state_records
from agg_saga.worker import SagaWorker, _Batch
from tests.unit.test_saga_properties import (
    CONFIG,
    OPERATOR,
    PLAYER,
    Sim,
    Wallet,
    play_signed_64,
    steps,
)

KEY = f"{OPERATOR}:{PLAYER}".encode()
PARTITION = 3


class _NoTransport:
    """Deciding never touches the transport."""


def _worker() -> SagaWorker:
    settings_ = Settings(kafka_bootstrap="127.0.0.1:1", database_url="postgresql://unused")
    worker = SagaWorker(settings_, [OPERATOR], transport=_NoTransport())  # type: ignore[arg-type]
    worker.config = CONFIG
    # outputs are encoded and published elsewhere (the reference wallet's balances may even
    # exceed a long); here only the state and the timers count
    worker._encode = lambda *args: []  # type: ignore[method-assign]
    for table in (worker.states, worker.meta, worker.due, worker.deadlines, worker.round_due):
        table[PARTITION] = {}  # type: ignore[index]
    worker.pending_count[PARTITION] = 0
    worker.broken[PARTITION] = set()
    return worker


class _WorkerSim(Sim):
    """Feeds every message to the worker as well, and compares."""

    def __init__(self, wallet: Wallet) -> None:
        super().__init__(wallet)
        self.worker = _worker()
        self.log: dict[bytes, bytes | None] = {}

    def feed(self, message: Message) -> None:
        super().feed(message)
        work = _Batch()
        self.worker._decide(work, PARTITION, KEY, message, self.now)
        held = self.worker.states[PARTITION][KEY]
        assert held == self.state
        assert self.worker.due[PARTITION].get(KEY) == next_due_ms(held, CONFIG)
        assert self.worker.pending_count[PARTITION] == len(held.pending)
        for touched in work.players.values():
            records = state_records(touched.old, held, KEY, None, touched.changed)
            self.log.update(dict(records))
        builder = StateBuilder()
        for key, value in self.log.items():
            builder.add(key, value)
        assert builder.states()[KEY] == held


@settings(max_examples=150, deadline=None)
@given(script=steps, start_balance=st.sampled_from((0, 1_000)))
def test_worker_keeps_next_due_and_records_as_a_full_walk_would(
    script: list[tuple[Any, ...]], start_balance: int
) -> None:
    sim = play_signed_64(_WorkerSim(Wallet(start_balance)), script)
    restored = _worker()
    restored.states[PARTITION] = {KEY: sim.state}
    restored._note_due(PARTITION, KEY, sim.state, sim.state.txns, rounds_changed=True)
    assert restored.due[PARTITION].get(KEY) == next_due_ms(sim.state, CONFIG)


def test_new_auto_close_times_apply_to_every_player_without_a_restart() -> None:
    """A tenants document with other ``round_auto_close_s`` reaches a running worker: its
    next decisions use them and every player's next Tick is recomputed with them."""
    from dataclasses import replace

    from agg_domain.saga import PlayerState, Round

    worker = _worker()
    players = {f"{OPERATOR}:p{i}".encode(): PlayerState(OPERATOR, f"p{i}", rounds={
        f"prov-{i % 2}:r1": Round("r1", "g1", "EUR", f"prov-{i % 2}", bet_total=10,
                                 updated_at_ms=1_000 * i)}) for i in range(4)}  # fmt: skip
    for key, state in players.items():
        worker.states[PARTITION][key] = state
        worker._note_due(PARTITION, key, state, (), rounds_changed=True)
    assert worker.set_round_auto_close({"prov-0": 5_000, "prov-1": 60_000})
    assert not worker.set_round_auto_close({"prov-0": 5_000, "prov-1": 60_000})
    assert worker.config == replace(CONFIG, round_auto_close_ms_by_provider={
        "prov-0": 5_000, "prov-1": 60_000})  # fmt: skip
    for key, state in players.items():
        assert worker.due[PARTITION][key] == next_due_ms(state, worker.config)
    assert [worker.due[PARTITION][k] for k in players] == [5_000, 61_000, 7_000, 63_000]
