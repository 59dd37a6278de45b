"""The saga's state changelog: replaying the records written after every decision rebuilds
exactly the state the worker held, including transactions forgotten by the retention sweep."""

from __future__ import annotations

from agg_domain.saga import PlayerState, Reply, Request, SagaConfig, Tick, decide
from agg_domain.statuses import Action, ReplyStatus
from agg_saga.state_codec import KEY_SEPARATOR, StateBuilder, encode_header, state_records

CONFIG = SagaConfig(settled_retention_ms=10_000, round_retention_ms=10_000, prune_interval_ms=1)
KEY = b"op-alpha:p-1"


def req(n: int, action: Action, txn: str, amount: int | None, ref: str | None = None,
        closed: bool = False) -> Request:  # fmt: skip
    return Request(f"r{n}", f"c{n}", "prov-nova", "op-alpha", "p-1", action, "EUR", n, txn, ref,
                   "round-1", "g", amount, closed, "ing", 3)  # fmt: skip


def test_replaying_the_records_rebuilds_every_intermediate_state() -> None:
    state = PlayerState("op-alpha", "p-1")
    log: list[tuple[bytes, bytes | None]] = []
    builder_states = []
    steps: list[tuple[object, int]] = [
        (req(1, Action.BET, "b1", 100), 1_000),
        ("reply", 1_010),
        (req(2, Action.WIN, "w1", 250, closed=True), 1_020),
        ("reply", 1_030),
        (req(3, Action.ROLLBACK, "rb1", None, ref="unknown-bet"), 1_040),
        (req(4, Action.BET, "b2", 5, closed=False), 1_050),
        (Tick(), 5_000),  # b2's debit times out: a CANCEL goes out
        ("reply", 5_010),
        (Tick(), 60_000),  # everything settled long ago is forgotten
    ]
    for message, now in steps:
        if message == "reply":
            [command_id] = list(state.pending)[:1]
            message = Reply(command_id, ReplyStatus.OK, 999, "EUR", now)
        new = decide(state, message, now, CONFIG).state  # type: ignore[arg-type]
        log.extend(state_records(state, new, KEY))
        state = new
        builder = StateBuilder()
        for key, value in log:
            builder.add(key, value)
        builder_states.append((builder.states()[KEY], state))
    for rebuilt, held in builder_states:
        assert rebuilt == held
    assert state.txns == {}, "the sweep forgot every settled transaction"
    assert any(value is None and KEY_SEPARATOR in key for key, value in log), "tombstones"


def test_a_decision_writes_only_what_changed() -> None:
    state = PlayerState("op-alpha", "p-1")
    for n in range(1, 50):
        state = decide(state, req(n, Action.BET, f"b{n}", 1), n, CONFIG).state
        [command_id] = [c for c in state.pending]
        state = decide(state, Reply(command_id, ReplyStatus.OK, 1, "EUR", n), n, CONFIG).state
    new = decide(state, req(99, Action.BET, "b99", 1), 99, CONFIG).state
    records = state_records(state, new, KEY)
    assert [k for k, _ in records] == [KEY, KEY + KEY_SEPARATOR + b"prov-nova:b99"]
    assert len(encode_header(new)) < 2_000


def test_version_1_records_are_upcast() -> None:
    """Version 1 stored a player's whole state in one record; workers still read it."""
    import json
    from dataclasses import asdict

    state = decide(PlayerState("op-alpha", "p-1"), req(1, Action.BET, "b1", 100), 1, CONFIG).state
    v1 = {
        "v": 1,
        "operator_id": state.operator_id,
        "player_id": state.player_id,
        "balance": state.balance,
        "balance_currency": state.balance_currency,
        "txns": [asdict(t) for t in state.txns.values()],
        "pending": [asdict(p) for p in state.pending.values()],
        "rounds": [asdict(r) for r in state.rounds.values()],
    }
    builder = StateBuilder()
    builder.add(KEY, json.dumps(v1).encode())
    rebuilt = builder.states()[KEY]
    assert rebuilt.txns == state.txns
    assert rebuilt.pending == state.pending
