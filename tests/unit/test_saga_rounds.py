"""Round finality in the saga: a round is closed by the provider (its flag, its end-round
call) or by the provider's auto-close policy after an idle time; a bet on a closed round is
refused ``ROUND_CLOSED``; money owed for a closed round is still paid; an open round is never
forgotten.

Table-like cases on one player first, then a property over many operators, players and
providers at once, with idle gaps and clock jumps past the idle times."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agg_domain.saga import (
    Answer,
    Command,
    Event,
    PlayerState,
    Reply,
    Request,
    Round,
    SagaConfig,
    Tick,
    TxnState,
    _Draft,
    _rounds_with_pending_bets,
    decide,
    event_id,
    next_due_ms,
    rounds_due_ms,
    txn_key,
)
from agg_domain.statuses import Action, CommandKind, ReplyStatus, Status
from agg_saga.state_codec import StateBuilder, state_records
from tests.unit.test_saga_properties import CONFIG as CONFIG_PROPERTIES
from tests.unit.test_saga_properties import Message, Sim, Wallet, play_signed_64, steps

OPERATOR, PLAYER = "op-1", "pl-1"
IDLE_MS = 2_000
CONFIG = SagaConfig(
    round_auto_close_ms=60_000,
    round_auto_close_ms_by_provider={"prov-a": IDLE_MS, "prov-b": 5_000},
)
T0 = 1_000_000


class Player:
    """One player's saga with a wallet that answers OK unless told otherwise."""

    def __init__(self, operator: str = OPERATOR, player: str = PLAYER,
                 config: SagaConfig = CONFIG) -> None:  # fmt: skip
        self.state = PlayerState(operator, player)
        self.config = config
        self.now = T0
        self.n = 0
        self.sent: list[Command] = []
        self.events: list[Event] = []
        self.answers: list[Answer] = []

    def req(
        self,
        action: Action,
        txn: str,
        amount: int | None = None,
        *,
        round_id: str = "r1",
        provider: str = "prov-a",
        closed: bool = False,
        ref: str | None = None,
    ) -> Request:
        self.n += 1
        return Request(
            request_id=f"req-{self.n}",
            correlation_id=f"corr-{self.n}",
            provider_id=provider,
            operator_id=self.state.operator_id,
            player_id=self.state.player_id,
            action=action,
            currency="EUR",
            received_at_ms=self.now,
            transaction_id=txn,
            reference_transaction_id=ref,
            round_id=round_id,
            game_id="g1",
            amount=amount,
            round_closed=closed,
        )

    def feed(self, message: Request | Reply | Tick) -> tuple[list[Answer], list[Command],
                                                             list[Event]]:  # fmt: skip
        decision = decide(self.state, message, self.now, self.config)
        self.state = decision.state
        answers = [o for o in decision.outputs if isinstance(o, Answer)]
        commands = [o for o in decision.outputs if isinstance(o, Command)]
        events = [o for o in decision.outputs if isinstance(o, Event)]
        self.sent += commands
        self.events += events
        self.answers += answers
        return answers, commands, events

    def reply(self, kind: CommandKind, status: ReplyStatus = ReplyStatus.OK):  # type: ignore[no-untyped-def]
        command = next(c for c in reversed(self.sent) if c.kind == kind)
        return self.feed(Reply(command.command_id, status, 1_000, "EUR", self.now))

    def settle(self, action: Action, txn: str, amount: int | None = None, **kw: object):  # type: ignore[no-untyped-def]
        """A request the wallet acknowledges at once; the answer, commands and events."""
        answers, commands, events = self.feed(self.req(action, txn, amount, **kw))  # type: ignore[arg-type]
        assert len(commands) == 1, commands
        more = self.feed(Reply(commands[0].command_id, ReplyStatus.OK, 1_000, "EUR", self.now))
        return answers + more[0], commands, events + more[2]

    def tick(self, at_offset_ms: int):  # type: ignore[no-untyped-def]
        self.now = T0 + at_offset_ms
        return self.feed(Tick())


def names(events: list[Event]) -> list[str]:
    return [e.name for e in events]


def test_an_idle_round_is_auto_closed_on_its_timer_with_its_totals() -> None:
    p = Player()
    p.settle(Action.BET, "b1", 100)
    p.now += 300
    p.settle(Action.WIN, "w1", 40)
    last = p.now
    rnd = p.state.rounds["prov-a:r1"]
    assert next_due_ms(p.state, CONFIG) == last + IDLE_MS == rounds_due_ms(p.state, CONFIG)
    assert p.tick(last - T0 + IDLE_MS - 1) == ([], [], []), "not a millisecond early"
    _, commands, events = p.tick(last - T0 + IDLE_MS + 7)
    assert commands == [] and names(events) == ["RoundAutoClosed"]
    [closed] = events
    assert closed.event_id == event_id(OPERATOR, PLAYER, "prov-a", "RoundAutoClosed", "prov-a:r1")
    assert closed.correlation_id == rnd.correlation_id == "corr-2", "the last transaction's"
    assert dict(closed.fields) == {
        "round_id": "r1", "game_id": "g1", "currency": "EUR", "bet_total": 100,
        "win_total": 40, "refund_total": 0, "idle_ms": IDLE_MS + 7, "auto_close_ms": IDLE_MS,
        "reason": "idle",
    }  # fmt: skip
    after = p.state.rounds["prov-a:r1"]
    assert (after.closed, after.closed_by, after.closed_at_ms) == (True, "auto", p.now)
    assert next_due_ms(p.state, CONFIG) is None
    assert p.tick(10 * IDLE_MS) == ([], [], []), "closed once"


def test_each_provider_has_its_own_idle_time_and_others_the_default() -> None:
    p = Player()
    p.settle(Action.BET, "a", 1, provider="prov-a")
    p.settle(Action.BET, "b", 1, provider="prov-b")
    p.settle(Action.BET, "c", 1, provider="prov-c")
    assert rounds_due_ms(p.state, CONFIG) == T0 + IDLE_MS
    _, _, events = p.tick(5_000)
    assert [e.provider_id for e in events] == ["prov-a", "prov-b"]
    assert rounds_due_ms(p.state, CONFIG) == T0 + 60_000
    _, _, events = p.tick(60_000)
    assert [(e.provider_id, e.fields["auto_close_ms"]) for e in events] == [("prov-c", 60_000)]


def test_a_bet_on_an_auto_closed_round_is_refused_and_journaled_without_a_command() -> None:
    p = Player()
    p.settle(Action.BET, "b1", 100)
    p.tick(IDLE_MS)
    answers, commands, events = p.feed(p.req(Action.BET, "b2", 50))
    assert [a.status for a in answers] == [Status.ROUND_CLOSED] and commands == []
    assert names(events) == ["BetRejected"]
    assert events[0].fields["status"] == "ROUND_CLOSED" and events[0].fields["command_id"] is None
    assert p.state.txns["prov-a:b2"].state == TxnState.REJECTED
    # the exact duplicate gets the same answer, journals nothing more
    answers, commands, events = p.feed(p.req(Action.BET, "b2", 50))
    assert [a.status for a in answers] == [Status.ROUND_CLOSED] and not commands and not events
    # another round of the provider, and the same round id at another provider, are open
    assert p.feed(p.req(Action.BET, "b3", 5, round_id="r2"))[1][0].kind == CommandKind.DEBIT
    assert p.feed(p.req(Action.BET, "b4", 5, provider="prov-b"))[1][0].kind == CommandKind.DEBIT


def test_a_bet_on_a_round_the_provider_closed_is_refused() -> None:
    p = Player()
    p.settle(Action.BET, "b1", 100)
    _, _, events = p.settle(Action.WIN, "w1", 0, closed=True)
    assert "RoundClosed" in names(events)
    answers, commands, events = p.feed(p.req(Action.BET, "b2", 50))
    assert [a.status for a in answers] == [Status.ROUND_CLOSED] and not commands
    assert names(events) == ["BetRejected"]
    assert p.tick(10 * IDLE_MS) == ([], [], []), "a closed round is never auto-closed"


def test_a_bet_after_the_idle_time_is_refused_even_before_the_timer_fires() -> None:
    p = Player()
    p.settle(Action.BET, "b1", 100)
    p.now = T0 + IDLE_MS
    answers, commands, events = p.feed(p.req(Action.BET, "b2", 50))
    assert [a.status for a in answers] == [Status.ROUND_CLOSED] and not commands
    assert names(events) == ["RoundAutoClosed", "BetRejected"]
    q = Player()
    q.settle(Action.BET, "b1", 100)
    q.now = T0 + IDLE_MS - 1
    assert q.feed(q.req(Action.BET, "b2", 50))[1][0].kind == CommandKind.DEBIT


def test_wins_and_rollbacks_after_the_close_are_paid_and_counted_on_the_round() -> None:
    p = Player()
    p.settle(Action.BET, "b1", 100)
    p.settle(Action.BET, "b2", 30)
    p.tick(IDLE_MS)
    answers, commands, events = p.settle(Action.WIN, "w1", 70)
    assert [a.status for a in answers] == [Status.OK] and commands[0].kind == CommandKind.CREDIT
    assert names(events) == ["WinCredited"]
    answers, commands, events = p.settle(Action.ROLLBACK, "x1", ref="b2")
    assert [a.status for a in answers] == [Status.OK] and commands[0].kind == CommandKind.CANCEL
    assert names(events) == ["BetRolledBack"]
    # an end-round call (a win of 0 that closes) after the auto-close: no second close
    answers, _, events = p.settle(Action.WIN, "er:r1", 0, closed=True)
    assert [a.status for a in answers] == [Status.OK] and names(events) == ["WinCredited"]
    rnd = p.state.rounds["prov-a:r1"]
    assert (rnd.bet_total, rnd.win_total, rnd.refund_total, rnd.closed_by) == (130, 70, 30, "auto")
    closes = [e for e in p.events if e.name in ("RoundClosed", "RoundAutoClosed")]
    assert len(closes) == 1 and closes[0].fields["bet_total"] == 130


def test_a_credit_owed_for_an_auto_closed_round_stays_owed_and_is_paid() -> None:
    p = Player()
    p.settle(Action.BET, "b1", 100)
    p.feed(p.req(Action.WIN, "w1", 500))  # the wallet does not answer
    _, _, events = p.tick(CONFIG.wallet_timeout_ms)
    assert names(events) == ["CreditOwed"]
    _, _, events = p.tick(IDLE_MS)
    assert "RoundAutoClosed" in names(events)
    assert p.state.pending, "still owed"
    for offset in range(IDLE_MS, 120_000, 500):
        p.tick(offset)
    credits = [c for c in p.sent if c.kind == CommandKind.CREDIT]
    assert len(credits) > 2 and len({c.command_id for c in credits}) == 1, "resent, same id"
    _, _, events = p.reply(CommandKind.CREDIT)
    assert names(events) == ["WinCredited"] and not p.state.pending
    assert p.state.rounds["prov-a:r1"].win_total == 500


def test_a_bet_awaiting_its_debit_holds_the_round_open() -> None:
    p = Player()
    p.settle(Action.BET, "b1", 100)
    p.now = T0 + IDLE_MS - 10
    p.feed(p.req(Action.BET, "b2", 5))  # its debit is in flight
    _, _, events = p.tick(IDLE_MS)
    assert events == [], "not idle: a bet on it awaits the wallet"
    answers, _, events = p.reply(CommandKind.DEBIT)
    assert [a.status for a in answers] == [Status.OK] and names(events) == ["BetAccepted"]
    assert rounds_due_ms(p.state, CONFIG) == p.now + IDLE_MS, "idle counts from the bet"
    # a debit that times out is compensated: no money, the round then closes on its clock
    p.now = T0 + 2 * IDLE_MS - 10
    p.feed(p.req(Action.BET, "b3", 5))
    assert p.tick(2 * IDLE_MS)[2] == []
    _, _, events = p.tick(2 * IDLE_MS - 10 + CONFIG.wallet_timeout_ms)
    assert names(events) == ["DebitTimedOut", "RoundAutoClosed"]


def test_the_retry_of_a_compensated_bet_on_a_closed_round_is_refused() -> None:
    p = Player()
    p.settle(Action.BET, "b1", 100)
    p.feed(p.req(Action.BET, "b2", 5))
    p.reply(CommandKind.DEBIT, ReplyStatus.ERROR)  # compensated
    p.reply(CommandKind.CANCEL)
    assert p.state.txns["prov-a:b2"].state == TxnState.COMPENSATED
    p.tick(10 * IDLE_MS)
    answers, commands, events = p.feed(p.req(Action.BET, "b2", 5))
    assert [a.status for a in answers] == [Status.ROUND_CLOSED] and not commands
    assert names(events) == ["BetRejected"]
    assert p.state.txns["prov-a:b2"].attempt == 1, "its attempts stay on record"


def test_an_open_round_is_never_forgotten_and_a_closed_one_only_after_its_retention() -> None:
    config = replace(CONFIG, round_auto_close_ms_by_provider={}, round_auto_close_ms=60_000,
                     round_retention_ms=10_000, prune_interval_ms=1)  # fmt: skip
    p = Player(config=config)
    p.settle(Action.BET, "b1", 100)
    p.now += 30_000  # past the retention, within the idle time: kept, open
    p.feed(p.req(Action.BALANCE, "-"))
    assert not p.state.rounds["prov-a:r1"].closed
    p.now = T0 + 60_000  # the sweep auto-closes it first (no timer needed), and keeps it
    _, _, events = p.feed(p.req(Action.BALANCE, "-"))
    assert names(events) == ["RoundAutoClosed"] and p.state.rounds["prov-a:r1"].closed
    p.now += 10_000
    p.feed(p.req(Action.BALANCE, "-"))
    assert "prov-a:r1" in p.state.rounds, "retention counts from the close"
    p.now += 1
    p.feed(p.req(Action.BALANCE, "-"))
    assert p.state.rounds == {}


def test_a_round_closed_before_closes_were_timed_is_forgotten_from_its_last_transaction() -> None:
    config = replace(CONFIG, round_retention_ms=10_000, prune_interval_ms=1)
    state = PlayerState(OPERATOR, PLAYER, rounds={
        "prov-a:old": Round("old", "g1", "EUR", "prov-a", 5, 0, 0, True, T0),
    })  # fmt: skip
    kept = decide(state, Tick(), T0 + 10_000, config).state
    assert "prov-a:old" in kept.rounds
    assert decide(kept, Tick(), T0 + 10_001, config).state.rounds == {}


def test_round_fields_survive_the_state_codec_and_older_records_read_as_open_or_closed() -> None:
    p = Player()
    p.settle(Action.BET, "b1", 100)
    p.settle(Action.BET, "b2", 1, round_id="r2")
    p.tick(IDLE_MS)
    key = f"{OPERATOR}:{PLAYER}".encode()
    builder = StateBuilder()
    for k, v in state_records(PlayerState(OPERATOR, PLAYER), p.state, key):
        builder.add(k, v)
    assert builder.states()[key] == p.state
    import orjson

    header = orjson.loads(dict(state_records(PlayerState(OPERATOR, PLAYER), p.state, key))[key])
    for r in header["rounds"]:  # as a worker before this version wrote them
        for name in ("closed_at_ms", "closed_by", "correlation_id"):
            del r[name]
    builder = StateBuilder()
    builder.add(key, orjson.dumps(header))
    restored = builder.states()[key].rounds
    assert {k: (r.closed, r.closed_at_ms, r.closed_by) for k, r in restored.items()} == {
        "prov-a:r1": (True, 0, ""), "prov-a:r2": (True, 0, ""),
    }  # fmt: skip


# --- many operators, players and providers at once ---------------------------------------------

OWNERS = (("op-1", "pl-1"), ("op-1", "pl-2"), ("op-2", "pl-1"))
PROVIDERS = ("prov-a", "prov-b", "prov-c")
ROUNDS = ("r1", "r2")
GAPS_MS = (0, 1, 10, 500, 1_499, 1_999, 2_000, 2_001, 4_999, 5_000, 30_000, 70_000)
"""Idle gaps around every provider's idle time, and clock jumps past all of them."""

actions = st.one_of(
    st.tuples(st.just("bet"), st.sampled_from(OWNERS), st.sampled_from(PROVIDERS),
              st.sampled_from(ROUNDS), st.integers(0, 12), st.booleans()),
    st.tuples(st.just("win"), st.sampled_from(OWNERS), st.sampled_from(PROVIDERS),
              st.sampled_from(ROUNDS), st.integers(0, 5), st.booleans()),
    st.tuples(st.just("rollback"), st.sampled_from(OWNERS), st.sampled_from(PROVIDERS),
              st.sampled_from(ROUNDS), st.integers(0, 5), st.booleans()),
    st.tuples(st.just("reply"), st.sampled_from(OWNERS), st.integers(0, 7), st.booleans()),
    st.tuples(st.just("wait"), st.sampled_from(GAPS_MS)),
)  # fmt: skip


@dataclass
class World:
    """The players' sagas side by side, one clock, a wallet that answers what it is told."""

    now: int = T0
    players: dict[tuple[str, str], Player] = field(default_factory=dict)
    inbox: dict[tuple[str, str], list[Command]] = field(default_factory=lambda: defaultdict(list))
    closes: dict[tuple[str, ...], list[Event]] = field(default_factory=lambda: defaultdict(list))
    closed_at: dict[tuple[str, ...], int] = field(default_factory=dict)
    opened: set[tuple[str, ...]] = field(default_factory=set)
    """Rounds the journal's money events name (as the projection opens them)."""
    credited: dict[tuple[str, ...], int] = field(default_factory=lambda: defaultdict(int))
    won_ok: dict[tuple[str, ...], int] = field(default_factory=dict)
    seen_txns: set[tuple[str, ...]] = field(default_factory=set)

    def player(self, owner: tuple[str, str]) -> Player:
        if owner not in self.players:
            self.players[owner] = Player(*owner)
        return self.players[owner]

    def decide(self, owner: tuple[str, str], message: Request | Reply | Tick) -> None:
        p = self.player(owner)
        p.now = self.now
        before = {k for k, r in p.state.rounds.items() if r.closed}
        answers, commands, events = p.feed(message)
        self.inbox[owner] += commands
        for e in events:
            rkey = (*owner, e.provider_id, str(e.fields.get("round_id", "")))
            if e.name in ("RoundClosed", "RoundAutoClosed"):
                self.closes[rkey].append(e)
                self.closed_at.setdefault(rkey, self.now)
            elif e.name in ("BetAccepted", "WinCredited", "BetRolledBack") and rkey[-1]:
                self.opened.add(rkey)
            if e.name == "WinCredited":
                self.credited[(*owner, e.provider_id, str(e.fields["transaction_id"]))] += 1
        if isinstance(message, Request) and message.action == Action.BET:
            rkey = (*owner, message.provider_id, message.round_id or "")
            tkey = (*owner, message.provider_id, message.transaction_id or "")
            new = tkey not in self.seen_txns
            self.seen_txns.add(tkey)
            was_closed = f"{message.provider_id}:{message.round_id}" in before
            if new and was_closed:
                assert [a.status for a in answers] == [Status.ROUND_CLOSED], answers
                assert not commands, "no wallet command for a bet on a closed round"
        for a in answers:
            r = a.request
            if r.action == Action.WIN and a.status == Status.OK:
                self.won_ok[(*owner, r.provider_id, r.transaction_id or "")] = 1
        self.check(owner)

    def check(self, owner: tuple[str, str]) -> None:
        state = self.players[owner].state
        for rkey, events in self.closes.items():
            assert len(events) == 1, f"{rkey} closed {len(events)} times"
        for rkey in self.opened:
            if rkey[:2] != owner:
                continue
            held = state.rounds.get(f"{rkey[2]}:{rkey[3]}")
            assert held is not None, f"the saga forgot {rkey}, which the journal shows"
            assert held.closed == (rkey in self.closes), rkey

    def step(self, action: tuple[object, ...]) -> None:
        kind = action[0]
        if kind == "wait":
            self.now += int(action[1])  # type: ignore[call-overload]
            for owner in list(self.players):
                due = next_due_ms(self.players[owner].state, CONFIG)
                if due is not None and due <= self.now:
                    self.decide(owner, Tick())
            return
        owner = action[1]
        assert isinstance(owner, tuple)
        p = self.player(owner)  # type: ignore[arg-type]
        if kind == "reply":
            box = self.inbox[owner]  # type: ignore[index]
            if not box:
                return
            command = box.pop(int(action[2]) % len(box))  # type: ignore[call-overload]
            status = ReplyStatus.OK if action[3] else ReplyStatus.ERROR
            self.decide(owner, Reply(command.command_id, status, 1_000, "EUR", self.now))  # type: ignore[arg-type]
            return
        provider, round_id, n, flag = action[2], action[3], action[4], action[5]
        assert isinstance(provider, str) and isinstance(round_id, str) and isinstance(n, int)
        p.now = self.now
        if kind == "bet":
            request = p.req(Action.BET, f"b{n}", 10 + n, provider=provider, round_id=round_id)
        elif kind == "win":
            request = p.req(Action.WIN, f"w{n}", n, provider=provider, round_id=round_id,
                            closed=bool(flag))  # fmt: skip
        else:
            request = p.req(Action.ROLLBACK, f"x{n}", provider=provider, round_id=round_id,
                            ref=f"b{n}")  # fmt: skip
        self.decide(owner, request)  # type: ignore[arg-type]

    def settle(self) -> None:
        """The wallet answers everything OK; time runs past every idle time."""
        for _ in range(2_000):
            busy = [o for o, box in self.inbox.items() if box]
            if busy:
                owner = busy[0]
                command = self.inbox[owner].pop(0)
                self.decide(owner, Reply(command.command_id, ReplyStatus.OK, 1_000, "EUR",
                                         self.now))  # fmt: skip
                continue
            dues = [(d, o) for o, p in self.players.items()
                    if (d := next_due_ms(p.state, CONFIG)) is not None]  # fmt: skip
            if not dues:
                return
            due, owner = min(dues)
            self.now = max(self.now, due)
            self.decide(owner, Tick())
        raise AssertionError("never quiescent")


@settings(max_examples=400, deadline=None)
@given(script=st.lists(actions, max_size=60))
def test_rounds_across_players_are_closed_once_refuse_later_bets_and_are_never_forgotten(
    script: list[tuple[object, ...]],
) -> None:
    world = World()
    for action in script:
        world.step(action)
    world.settle()
    for owner, p in world.players.items():
        assert not p.state.pending, "every credit and cancel acknowledged"
        assert all(r.closed for r in p.state.rounds.values()), "every idle round closed"
        for rkey in world.opened:
            if rkey[:2] == owner:
                assert len(world.closes[rkey]) == 1, rkey
    for rkey in sorted(world.opened):  # after the close: a new bet refused, a new win paid
        owner, (provider, round_id) = rkey[:2], rkey[2:]
        p = world.player(owner)  # type: ignore[arg-type]
        p.now = world.now
        world.decide(owner, p.req(Action.BET, f"late-bet-{round_id}", 3, provider=provider,  # type: ignore[arg-type]
                                  round_id=round_id))  # fmt: skip
        assert p.answers[-1].status == Status.ROUND_CLOSED
        world.decide(owner, p.req(Action.WIN, f"late-win-{round_id}", 4, provider=provider,  # type: ignore[arg-type]
                                  round_id=round_id))  # fmt: skip
    world.settle()
    for tkey, count in world.credited.items():
        assert count == 1, f"win {tkey} credited {count} times"
    assert set(world.won_ok) <= set(world.credited), "every win answered OK is credited"


def test_a_transfer_wallets_rounds_close_and_refuse_bets_the_same_way() -> None:
    """A transfer-wallet operator's play settles against the balance the saga holds: its
    rounds are auto-closed, and a bet on a closed one refused, as a seamless wallet's."""
    p = Player()

    def held(action: Action, txn: str, amount: int | None, **kw: object) -> Request:
        return replace(p.req(action, txn, amount, **kw), wallet="transfer")  # type: ignore[arg-type]

    answers, commands, _ = p.feed(held(Action.DEPOSIT, "d1", 1_000, provider=""))
    assert [a.status for a in answers] == [Status.OK] and not commands
    answers, commands, _ = p.feed(held(Action.BET, "b1", 100))
    assert [a.status for a in answers] == [Status.OK] and not commands
    _, _, events = p.tick(IDLE_MS)
    assert names(events) == ["RoundAutoClosed"] and events[0].fields["bet_total"] == 100
    answers, commands, events = p.feed(held(Action.BET, "b2", 50))
    assert [(a.status, a.balance) for a in answers] == [(Status.ROUND_CLOSED, 900)]
    assert not commands and names(events) == ["BetRejected"]
    assert events[0].fields["status"] == "ROUND_CLOSED"
    answers, _, events = p.feed(held(Action.WIN, "w1", 300))
    assert [(a.status, a.balance) for a in answers] == [(Status.OK, 1_200)]
    assert names(events) == ["WinCredited"]
    assert p.state.transfer_balances == {"EUR": 1_200}


class _PendingBetsSim(Sim):
    """After each decision: the rounds with a debit in flight, read from the pending
    commands, are those of the PENDING bets."""

    def feed(self, message: Message) -> None:
        super().feed(message)
        walked = {txn_key(t.provider_id, t.round_id) for t in self.state.txns.values()
                  if t.state == TxnState.PENDING and t.action == Action.BET
                  and t.round_id is not None}  # fmt: skip
        draft = _Draft(self.state, self.now, CONFIG_PROPERTIES)
        assert _rounds_with_pending_bets(draft) == walked


@settings(max_examples=100, deadline=None)
@given(script=steps, start_balance=st.sampled_from((0, 1_000)))
def test_the_rounds_with_a_debit_in_flight_are_the_pending_bets_rounds(
    script: list[tuple[Any, ...]], start_balance: int
) -> None:
    play_signed_64(_PendingBetsSim(Wallet(start_balance)), script)
