"""Examples of the saga's responsible-gaming controls where the order of calls matters: a
session time limit for a provider whose calls name the player by reference (no session of
their own), counted from the session its authenticate carried."""

from __future__ import annotations

from agg_domain.limits import Controls
from agg_domain.saga import Answer, Command, Event, PlayerState, Request, SagaConfig, decide
from agg_domain.statuses import Action, Status

CONFIG = SagaConfig()
T0 = 1_800_000_000_000
OP, PLAYER, PROVIDER = "op-1", "pl-1", "prov-pp"


def request(action: Action, n: int, **kw: object) -> Request:
    fields: dict[str, object] = {"currency": "EUR", "received_at_ms": T0}
    if action is Action.BET:
        fields.update(transaction_id=f"b{n}", round_id=f"r{n}", game_id="g1", amount=10)
    fields.update(kw)
    return Request(f"rq-{n}", f"c-{n}", PROVIDER, OP, PLAYER, action, **fields)  # type: ignore[arg-type]


def controls(change: str, **kw: object) -> Request:
    return Request(change, f"c-{change}", "", OP, PLAYER, Action.PLAYER_CONTROLS, "", T0,
                   transaction_id=change, controls=Controls(**kw))  # type: ignore[arg-type]  # fmt: skip


def run(state: PlayerState, message: Request, now: int) -> tuple[PlayerState, list[Answer]]:
    decision = decide(state, message, now, CONFIG)
    answers = [o for o in decision.outputs if isinstance(o, Answer)]
    return decision.state, answers


def test_a_session_time_limit_holds_the_calls_that_name_no_session_to_the_authenticates() -> None:
    state = PlayerState(OP, PLAYER)
    state, [ok] = run(state, controls("ch-1", session_time_limit_ms=10_000), T0)
    assert ok.status is Status.OK
    # the authenticate carries the session (opened at T0 + 1 s); its balance is the wallet's
    decision = decide(state, request(Action.AUTHENTICATE, 1, session_started_at_ms=T0 + 1_000),
                      T0 + 1_000, CONFIG)  # fmt: skip
    state = decision.state
    assert state.sessions == {PROVIDER: T0 + 1_000}
    # a bet 9 s into the session, without a session of its own: debited
    decision = decide(state, request(Action.BET, 2), T0 + 10_000, CONFIG)
    assert [o.kind.value for o in decision.outputs if isinstance(o, Command)] == ["DEBIT"]
    state = decision.state
    # 10 s into it: refused before any debit, journaled with the rule
    decision = decide(state, request(Action.BET, 3), T0 + 11_000, CONFIG)
    assert not [o for o in decision.outputs if isinstance(o, Command)]
    [answer] = [o for o in decision.outputs if isinstance(o, Answer)]
    assert answer.status is Status.LIMIT_EXCEEDED
    [event] = [o for o in decision.outputs if isinstance(o, Event)]
    assert (event.name, event.fields["rule"]) == ("BetRejected", "rg:session_time:10")
    # a new session (a later authenticate) may play again
    state = decide(decision.state, request(Action.AUTHENTICATE, 4,
                                           session_started_at_ms=T0 + 12_000),
                   T0 + 12_000, CONFIG).state  # fmt: skip
    decision = decide(state, request(Action.BET, 5), T0 + 13_000, CONFIG)
    assert [o.kind.value for o in decision.outputs if isinstance(o, Command)] == ["DEBIT"]


def test_sessions_are_remembered_only_while_a_time_limit_is_set() -> None:
    state = PlayerState(OP, PLAYER)
    state = decide(state, request(Action.AUTHENTICATE, 1, session_started_at_ms=T0), T0,
                   CONFIG).state  # fmt: skip
    assert state.sessions == {}
    state, _ = run(state, controls("ch-1", session_time_limit_ms=60_000), T0)
    state = decide(state, request(Action.BALANCE, 2, session_started_at_ms=T0), T0,
                   CONFIG).state  # fmt: skip
    assert state.sessions == {PROVIDER: T0}
    state, _ = run(state, controls("ch-2"), T0)
    assert state.sessions == {}
