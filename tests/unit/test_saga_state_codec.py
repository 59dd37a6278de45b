"""The saga's state changelog: replaying the records written after every decision rebuilds
exactly the state the worker held, including transactions forgotten by the retention sweep."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agg_domain.saga import Message, PlayerState, Reply, Request, SagaConfig, Tick, Txn, decide
from agg_domain.statuses import Action, ReplyStatus
from agg_saga.state_codec import (
    KEY_SEPARATOR,
    RoundsCache,
    StateBuilder,
    encode_header,
    state_records,
)
from tests.unit.test_saga_properties import CONFIG as CONFIG_PROPERTIES
from tests.unit.test_saga_properties import Sim, Wallet, play_signed_64, steps

CONFIG = SagaConfig(settled_retention_ms=10_000, round_retention_ms=10_000, prune_interval_ms=1)
KEY = b"op-alpha:p-1"


def req(n: int, action: Action, txn: str, amount: int | None, ref: str | None = None,
        closed: bool = False, round_id: str = "round-1") -> Request:  # fmt: skip
    return Request(f"r{n}", f"c{n}", "prov-nova", "op-alpha", "p-1", action, "EUR", n, txn, ref,
                   round_id, "g", amount, closed, "ing", 3)  # fmt: skip


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
        (req(4, Action.BET, "b2", 5, round_id="round-2"), 1_050),  # round-1 is closed
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


def test_demo_balances_and_transactions_replay_and_older_records_read_as_none() -> None:
    """Demo play adds one header field (only once a player has played demo) and keys of its
    own; records written before it read as a player without demo balances."""
    import json
    from dataclasses import replace

    state = PlayerState("op-alpha", "p-1")
    log: list[tuple[bytes, bytes | None]] = []
    for message in (replace(req(1, Action.BET, "b1", 300), mode="demo"),
                    replace(req(2, Action.WIN, "w1", 50), mode="demo"),
                    req(3, Action.BET, "b1", 100),
                    req(4, Action.BALANCE, "-", None)):  # fmt: skip
        new = decide(state, message, 10, CONFIG).state
        log.extend(state_records(state, new, KEY))
        state = new
    assert state.demo_balances == {"EUR": CONFIG.demo_starting_balance - 250}
    assert {"demo|prov-nova:b1", "demo|prov-nova:w1", "prov-nova:b1"} == set(state.txns)
    builder = StateBuilder()
    for key, value in log:
        builder.add(key, value)
    assert builder.states()[KEY] == state
    header = json.loads(next(v for k, v in reversed(log) if k == KEY and v is not None))
    assert header["demo_balances"] == {"EUR": CONFIG.demo_starting_balance - 250}

    # records written before demo play existed: no demo balances, requests without a mode
    def before_demo(value: object) -> object:
        if isinstance(value, dict):
            drop = {"demo_balances", "mode"} if "request_id" in value else {"demo_balances"}
            return {k: before_demo(v) for k, v in value.items() if k not in drop}
        if isinstance(value, list):
            return [before_demo(v) for v in value]
        return value

    old = StateBuilder()
    for key, value in log:
        old.add(key, None if value is None else json.dumps(before_demo(json.loads(value))).encode())
    restored = old.states()[KEY]
    assert restored == replace(state, demo_balances={})
    assert [w.mode for p in restored.pending.values() for w in p.waiters] == ["real"]
    assert "demo_balances" not in json.loads(encode_header(PlayerState("op-alpha", "p-1")))


def test_campaigns_replay_and_older_records_read_as_none() -> None:
    """Campaigns add one header field (only once a player has one); a grant waiting in a
    record keeps its payload; records written before campaigns read as none."""
    import json
    from dataclasses import replace

    from agg_domain.saga import CampaignGrant, CampaignState

    grant = replace(req(1, Action.CAMPAIGN_GRANT, "cmp-1", None), campaign_id="cmp-1",
                    campaign=CampaignGrant("cmp-1", ("g",), 3, 100, 50_000))  # fmt: skip
    spin = replace(req(2, Action.BET, "b1", 100), campaign_id="cmp-1")
    state = PlayerState("op-alpha", "p-1")
    log: list[tuple[bytes, bytes | None]] = []
    for message in (grant, spin):
        new = decide(state, message, 10, CONFIG).state
        log.extend(state_records(state, new, KEY))
        state = new
    assert state.campaigns["cmp-1"].spins_left == 2
    assert state.campaigns["cmp-1"].state == CampaignState.ACTIVE
    builder = StateBuilder()
    for key, value in log:
        builder.add(key, value)
    assert builder.states()[KEY] == state
    header = json.loads(next(v for k, v in reversed(log) if k == KEY and v is not None))
    assert header["campaigns"][0]["games"] == ["g"]
    assert "campaigns" not in json.loads(encode_header(PlayerState("op-alpha", "p-1")))
    # a request with its grant round-trips through a record (as a waiter would)
    from agg_saga.state_codec import _request, _request_dict

    body = json.loads(json.dumps(_request_dict(grant)))
    assert _request(body) == grant
    old = {k: v for k, v in body.items() if k not in ("campaign", "campaign_id")}
    assert _request(old) == replace(grant, campaign=None, campaign_id=None)


# --- the encoding is asdict's, only cheaper --------------------------------------------------


def _reference_header(state: PlayerState, delta: list[tuple[str, Txn | None]]) -> bytes:
    """The header as ``dataclasses.asdict`` writes it (how version 2 was first written, with
    what format 3 adds: the write's meta and its changed transactions)."""
    import json
    from dataclasses import asdict

    body = {
        "v": 3,
        "operator_id": state.operator_id,
        "player_id": state.player_id,
        "balance": state.balance,
        "balance_currency": state.balance_currency,
        "pruned_at_ms": state.pruned_at_ms,
        "pending": [asdict(p) for p in state.pending.values()],
        "seq": 0,
        "applied": {},
        "parked": None,
    }
    if state.usage:  # what the responsible-gaming limits count (format 3, additive)
        body["usage"] = {k: [u.period_start_ms, u.wagered, u.lost, u.deposited]
                         for k, u in state.usage.items()}  # fmt: skip
    body.update({
        "outbox": [],
        "delta": {k: None if t is None else {"v": 2, **asdict(t)} for k, t in delta},
        "rounds": [asdict(r) for r in state.rounds.values()],
    })  # fmt: skip
    return json.dumps(body, separators=(",", ":")).encode()


def _reference_txn(txn: Txn) -> bytes:
    import json
    from dataclasses import asdict

    return json.dumps({"v": 2, **asdict(txn)}, separators=(",", ":")).encode()


class _CheckedSim(Sim):
    """Checks every decision's records against the reference encoding and a replay."""

    def __init__(self, wallet: Wallet) -> None:
        super().__init__(wallet)
        self.cache = RoundsCache()
        self.log: list[tuple[bytes, bytes | None]] = []

    def feed(self, message: Message) -> None:
        old = self.state
        decision = decide(old, message, self.now, CONFIG_PROPERTIES)
        super().feed(message)
        new = self.state
        assert decision.state == new
        records = state_records(old, new, KEY, self.cache)
        # the decision names every transaction that changed: the same records, looked up
        by_key = state_records(old, new, KEY, self.cache, decision.txns_changed)
        assert sorted(by_key, key=str) == sorted(records, key=str)
        assert set(decision.txns_changed) >= {
            k for k in {*old.txns, *new.txns} if old.txns.get(k) is not new.txns.get(k)
        }
        delta = [
            (key.partition(KEY_SEPARATOR)[2].decode(), None if value is None else
             new.txns[key.partition(KEY_SEPARATOR)[2].decode()])
            for key, value in records[1:]
        ]  # fmt: skip
        assert records[0] == (KEY, _reference_header(new, delta))
        assert records == state_records(old, new, KEY)  # with or without the cache
        for key, value in records[1:]:
            txn_key = key.partition(KEY_SEPARATOR)[2].decode()
            assert value == (_reference_txn(new.txns[txn_key]) if value is not None else None)
        changed = {k for k, t in new.txns.items() if old.txns.get(k) is not t}
        removed = set(old.txns) - set(new.txns)
        expected = sorted(changed | removed)
        assert [k for k, _ in records[1:]] == [KEY + KEY_SEPARATOR + k.encode() for k in expected]
        self.log.extend(records)
        builder = StateBuilder()
        for key, value in self.log:
            builder.add(key, value)
        assert builder.states()[KEY] == new


@settings(max_examples=150, deadline=None)
@given(script=steps, start_balance=st.sampled_from((0, 1_000)))
def test_records_are_the_reference_encoding_and_replay_to_the_state(
    script: list[tuple],  # type: ignore[type-arg]
    start_balance: int,
) -> None:
    play_signed_64(_CheckedSim(Wallet(start_balance)), script)
