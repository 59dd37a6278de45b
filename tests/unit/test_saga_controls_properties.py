"""Property-based tests of the responsible-gaming controls in the saga decider: many
operators (seamless and transfer-wallet), players and providers at once, with the same
transaction and change ids across players and operators, receiving controls changes (blocks,
self-exclusions, session time limits, wager, loss and deposit limits; repeats of change ids
with the same and with other content), bets, wins, rollbacks, deposits, withdrawals, demo
play, wallet replies and ticks, while the clock crosses day, week and month boundaries.

Checked against a model built from the inputs and the outputs alone: no debit leaves and no
transfer-wallet bet or deposit is taken while a control forbids it; the stakes (less refunds,
and for losses less wins) and the deposits of every period, counting debits in flight, never
pass a limit in force when a stake or a deposit is taken; every refusal by a control names a
rule the model confirms and sends no command; money owed to the player is never refused; a
repeated change id answers OK and changes nothing, other content conflicts; one player's
controls never touch another's decisions; demo play is outside the controls; the saga's usage
equals the model's; no event id is shared between players."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from agg_domain.limits import Controls, Limit, LimitKind, Period, current_usage
from agg_domain.saga import (
    SEAMLESS,
    TRANSFER,
    Answer,
    Command,
    Event,
    Message,
    PlayerState,
    Reply,
    Request,
    SagaConfig,
    Tick,
    decide,
)
from agg_domain.statuses import Action, CommandKind, ReplyStatus, Status

CONFIG = SagaConfig()
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0 = int((datetime(2024, 2, 25, 20, tzinfo=UTC) - EPOCH).total_seconds()) * 1000
"""A Sunday evening: a week, the leap day and a month end follow within days."""
HORIZON_MS = 25 * 86_400_000
"""The clock stays within the settled retention, so no change id is forgotten."""
HOUR = 3_600_000
OWNERS = (
    ("op-s1", "pl-1", SEAMLESS),
    ("op-s1", "pl-2", SEAMLESS),
    ("op-s2", "pl-1", SEAMLESS),
    ("op-t1", "pl-1", TRANSFER),
    ("op-t1", "pl-2", TRANSFER),
)
"""Two players of a seamless operator, the first one's id at another seamless operator and
at a transfer operator, and a second player of the transfer operator."""
PROVIDERS = ("prov-a", "prov-b")
TXN_IDS = ("t1", "t2", "t3", "t4")
CHANGE_IDS = ("ch-1", "ch-2", "ch-3")
CURRENCIES = ("EUR", "EUR", "USD")
AMOUNTS = (1, 50, 100, 400, 1_000)
CONTROL_STATUSES = (Status.PLAYER_BLOCKED, Status.LIMIT_EXCEEDED)

limits_st = st.lists(
    st.builds(Limit, st.sampled_from(list(LimitKind)), st.sampled_from(list(Period)),
              st.sampled_from((0, 100, 500, 1_000, 5_000)), st.sampled_from(("EUR", "USD"))),
    max_size=3,
).map(tuple)  # fmt: skip
controls_st = st.builds(
    Controls,
    blocked=st.sampled_from((False, False, False, False, False, True)),
    self_excluded=st.sampled_from((False, False, False, False, True)),
    self_excluded_until_ms=st.sampled_from((None, T0 + 3 * HOUR, T0 + 50 * HOUR)),
    session_time_limit_ms=st.sampled_from((None, None, HOUR, 2 * HOUR)),
    limits=limits_st.filter(bool),
    actor=st.sampled_from(("staff-1", "player")),
)


def content(c: Controls) -> tuple[object, ...]:
    limits = tuple(sorted((x.kind, x.period, x.currency, x.amount) for x in c.limits))
    return (c.blocked, c.self_excluded, c.self_excluded_until_ms, c.session_time_limit_ms,
            limits, c.actor)  # fmt: skip


def period_start(period: Period, now_ms: int) -> int:
    day = (EPOCH + timedelta(milliseconds=now_ms)).date()
    if period is Period.WEEK:
        day -= timedelta(days=day.weekday())
    elif period is Period.MONTH:
        day = day.replace(day=1)
    return (day - EPOCH.date()).days * 86_400_000


@st.composite
def steps(draw: st.DrawFn) -> tuple[object, ...]:
    kind = draw(st.sampled_from(("controls", "bet", "bet", "bet", "bet", "win", "rollback",
                                 "deposit", "deposit", "withdraw", "reply", "reply", "reply",
                                 "reply", "tick", "advance", "advance", "demo")))  # fmt: skip
    owners = draw(st.sets(st.sampled_from(range(len(OWNERS))), min_size=1))
    if kind == "controls":
        return (kind, owners, draw(st.sampled_from(CHANGE_IDS)), draw(st.integers(0, 3)),
                draw(st.booleans()))  # fmt: skip
    if kind == "reply":
        status = draw(st.sampled_from((ReplyStatus.OK, ReplyStatus.OK, ReplyStatus.ERROR,
                                       ReplyStatus.INSUFFICIENT_FUNDS)))  # fmt: skip
        return (kind, owners, draw(st.integers(0, 5)), status)
    if kind == "advance":
        return (kind, owners, draw(st.sampled_from((1, 1_000, 2_000, 60_000, HOUR, 6 * HOUR,
                                                    20 * HOUR))))  # fmt: skip
    if kind == "tick":
        return (kind, owners)
    return (kind, owners, draw(st.sampled_from(PROVIDERS)), draw(st.sampled_from(TXN_IDS)),
            draw(st.sampled_from(TXN_IDS)), draw(st.sampled_from(AMOUNTS)),
            draw(st.sampled_from(CURRENCIES)),
            draw(st.sampled_from((0, 600_000, HOUR - 1, HOUR, 2 * HOUR))))  # fmt: skip


@dataclass
class Player:
    operator: str
    player: str
    wallet: str
    state: PlayerState
    controls: Controls | None = None
    """The model's controls in force: the last change applied."""
    changes: dict[str, tuple[object, ...]] = field(default_factory=dict)
    entries: list[tuple[int, str, int, int, int]] = field(default_factory=list)
    """(when, currency, wagered, lost, deposited): the model's usage."""
    debits: dict[str, tuple[str, int]] = field(default_factory=dict)
    in_flight: set[str] = field(default_factory=set)
    accepted_debits: dict[str, tuple[str, int]] = field(default_factory=dict)
    cancels: dict[str, str] = field(default_factory=dict)
    credits: dict[str, tuple[str, int]] = field(default_factory=dict)
    decided: set[tuple[str, str, str]] = field(default_factory=set)
    accepted_bets: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    event_ids: set[str] = field(default_factory=set)
    refusals: dict[tuple[str, str, str | None], Status] = field(default_factory=dict)
    """A control's refusals, for a repeat that gets the original answer unjournaled."""
    events: list[Event] = field(default_factory=list)
    debit_count: int = 0

    def used(self, kind: LimitKind, period: Period, currency: str, now: int) -> int:
        start = period_start(period, now)
        column = {LimitKind.WAGER: 2, LimitKind.LOSS: 3, LimitKind.DEPOSIT: 4}[kind]
        return sum(e[column] for e in self.entries if e[1] == currency and e[0] >= start)  # type: ignore[misc]

    def flying(self, currency: str) -> int:
        return sum(self.debits[c][1] for c in self.in_flight if self.debits[c][0] == currency)

    def rules_broken(self, request: Request, now: int, in_flight: int) -> list[str]:
        """Every rule of the model's controls that refuses ``request`` now."""
        c = self.controls
        if c is None or request.mode != "real":
            return []
        out = []
        if c.blocked:
            out.append("rg:blocked")
        if c.self_excluded and (c.self_excluded_until_ms is None or now < c.self_excluded_until_ms):
            out.append("rg:self_excluded")
        amount = request.amount or 0
        if request.action == Action.BET:
            started = request.session_started_at_ms
            limit = c.session_time_limit_ms
            if limit is not None and started is not None and now - started >= limit:
                out.append(f"rg:session_time:{limit // 1000}")
        for x in c.limits:
            if x.currency != request.currency:
                continue
            if (x.kind is LimitKind.DEPOSIT) != (request.action == Action.DEPOSIT):
                continue
            extra = 0 if x.kind is LimitKind.DEPOSIT else in_flight
            if self.used(x.kind, x.period, x.currency, now) + extra + amount > x.amount:
                out.append(f"rg:{x.kind.value}:{x.period.value}:{x.currency}:{x.amount}")
        return out

    def feed(self, message: Message, now: int) -> list[Answer]:
        in_flight_before = {cur: self.flying(cur) for cur in ("EUR", "USD")}
        decision = decide(self.state, message, now, CONFIG)
        before = self.state
        self.state = decision.state
        answers = [o for o in decision.outputs if isinstance(o, Answer)]
        events = [o for o in decision.outputs if isinstance(o, Event)]
        commands = [o for o in decision.outputs if isinstance(o, Command)]
        self.events += events
        self.event_ids |= {e.event_id for e in events}
        for command in commands:
            self._command(message, command, now)
        if isinstance(message, Request):
            self._answers(message, before, answers, events, commands, now, in_flight_before)
        return answers

    def _command(self, message: Message, command: Command, now: int) -> None:
        if command.kind == CommandKind.DEBIT:
            if command.command_id in self.debits:
                return
            assert isinstance(message, Request) and message.action == Action.BET
            assert message.mode == "real" and self.wallet == SEAMLESS
            broken = self.rules_broken(message, now, self.flying(command.currency))
            assert not broken, f"(a)/(b): a debit sent against {broken}"
            self.debits[command.command_id] = (command.currency, command.amount)
            self.in_flight.add(command.command_id)
            self.debit_count += 1
        elif command.kind == CommandKind.CANCEL:
            assert command.reference_command_id is not None
            self.in_flight.discard(command.reference_command_id)
            self.cancels[command.command_id] = command.reference_command_id
        elif command.kind == CommandKind.CREDIT:
            self.credits[command.command_id] = (command.currency, command.amount)

    def reply(self, index: int, status: ReplyStatus, now: int) -> None:
        pending = sorted(self.state.pending)
        if not pending:
            return
        command = self.state.pending[pending[index % len(pending)]].command
        self.feed(Reply(command.command_id, status, 1_000_000, command.currency, now), now)
        cid = command.command_id
        if command.kind == CommandKind.DEBIT:
            self.in_flight.discard(cid)
            if status == ReplyStatus.OK:
                cur, amount = self.debits[cid]
                self.accepted_debits[cid] = (cur, amount)
                self.entries.append((now, cur, amount, amount, 0))
        elif status == ReplyStatus.OK and command.kind == CommandKind.CANCEL:
            refunded = self.accepted_debits.pop(self.cancels[cid], None)
            if refunded is not None:
                self.entries.append((now, refunded[0], -refunded[1], -refunded[1], 0))
        elif status == ReplyStatus.OK and command.kind == CommandKind.CREDIT:
            cur, amount = self.credits[cid]
            self.entries.append((now, cur, 0, -amount, 0))

    def _answers(self, request: Request, before: PlayerState, answers: list[Answer],
                 events: list[Event], commands: list[Command], now: int,
                 in_flight: dict[str, int]) -> None:  # fmt: skip
        if request.action == Action.PLAYER_CONTROLS:
            self._controls(request, before, answers, events)
            return
        ruled = [e for e in events if str(e.fields.get("rule") or "").startswith("rg:")]
        for answer in answers:
            if answer.request.action in (Action.WIN, Action.ROLLBACK, Action.WITHDRAW):
                assert answer.status not in CONTROL_STATUSES, "(e) owed money refused"
            if request.mode != "real":
                assert answer.status not in CONTROL_STATUSES, "(h) demo play under controls"
        if request.mode != "real" or request.action not in (Action.BET, Action.DEPOSIT):
            assert not ruled, "(e)/(h) only real bets and deposits meet the controls"
        refused = [a for a in answers if a.status in CONTROL_STATUSES]
        key = (request.action.value, request.provider_id, request.transaction_id)
        if refused and ruled:
            self.refusals[key] = refused[0].status
            assert not commands, "(d) a control's refusal sends no command"
            assert len(ruled) == 1, "(d) one refusal, journaled once"
            [event] = ruled
            name = "TransferRejected" if request.action == Action.DEPOSIT else "BetRejected"
            assert event.name == name
            assert event.fields["status"] == refused[0].status.value
            assert refused[0].status is (Status.PLAYER_BLOCKED if event.fields["rule"] in (
                "rg:blocked", "rg:self_excluded") else Status.LIMIT_EXCEEDED)  # fmt: skip
            if event.event_id not in {e.event_id for e in self.events[: -len(events)]}:
                broken = self.rules_broken(request, now, in_flight[request.currency])
                assert broken and event.fields["rule"] == broken[0], (
                    f"(d)/(g) refused by {event.fields['rule']}, the model says {broken}"
                )
        elif refused and request.mode == "real":
            assert self.refusals.get(key) is refused[0].status, "(d) a refusal without a rule"
        if self.wallet == TRANSFER:
            self._held(request, answers, now)

    def _held(self, request: Request, answers: list[Answer], now: int) -> None:
        assert request.transaction_id is not None
        [answer] = answers
        key = (request.action.value, request.provider_id, request.transaction_id)
        if request.mode != "real" or answer.status != Status.OK or key in self.decided:
            return
        self.decided.add(key)
        amount = request.amount or 0
        if request.action in (Action.BET, Action.DEPOSIT):
            broken = self.rules_broken(request, now, 0)
            assert not broken, f"(a)/(b)/(c): {request.action.value} taken against {broken}"
        if request.action == Action.BET:
            self.accepted_bets[(request.provider_id, request.transaction_id)] = (
                request.currency, amount)  # fmt: skip
            self.entries.append((now, request.currency, amount, amount, 0))
        elif request.action == Action.WIN:
            self.entries.append((now, request.currency, 0, -amount, 0))
        elif request.action == Action.ROLLBACK:
            assert request.reference_transaction_id is not None
            bet = self.accepted_bets.pop((request.provider_id, request.reference_transaction_id),
                                         None)  # fmt: skip
            if bet is not None:
                self.entries.append((now, bet[0], -bet[1], -bet[1], 0))
        elif request.action == Action.DEPOSIT:
            self.entries.append((now, request.currency, 0, 0, amount))

    def _controls(self, request: Request, before: PlayerState, answers: list[Answer],
                  events: list[Event]) -> None:  # fmt: skip
        assert request.controls is not None and request.transaction_id is not None
        change = request.transaction_id
        [answer] = answers
        events = [e for e in events if e.name != "RoundAutoClosed"]  # a sweep's, on any message
        seen = self.changes.get(change)
        if seen is not None:
            expected = Status.OK if seen == content(request.controls) else (
                Status.DUPLICATE_CONFLICT)  # fmt: skip
            assert answer.status is expected, "(f) a repeat is OK, other content conflicts"
            assert not events, "(f) a repeat journals nothing"
            assert self.state.controls == before.controls, "(f) a repeat changes nothing"
            return
        assert answer.status is Status.OK
        [event] = events
        assert (event.name, event.fields["change_id"]) == ("PlayerControlsChanged", change)
        self.changes[change] = content(request.controls)
        self.controls = request.controls
        assert content(self.state.controls) == content(request.controls)


def request_for(step: tuple[object, ...], now: int, pool: list[Controls]) -> Request:
    kind = step[0]
    if kind == "controls":
        _, _, change, index, reverse = step
        chosen = pool[int(index) % len(pool)]  # type: ignore[call-overload]
        if reverse:
            chosen = Controls(**{**chosen.__dict__, "limits": tuple(reversed(chosen.limits))})
        return Request(f"rq-{change}", f"c-{change}", "", "", "", Action.PLAYER_CONTROLS, "", now,
                       transaction_id=str(change), controls=chosen)  # fmt: skip
    _, _, provider, txn, ref, amount, currency, session_off = step
    assert isinstance(amount, int) and isinstance(session_off, int)
    mode = "real"
    if kind == "demo":
        kind, mode = "bet", "demo"
    action = Action(str(kind).upper())
    transfer = action in (Action.DEPOSIT, Action.WITHDRAW)
    return Request(
        request_id=f"rq-{txn}", correlation_id="c",
        provider_id="" if transfer else str(provider), operator_id="", player_id="",
        action=action, currency=str(currency), received_at_ms=now, transaction_id=str(txn),
        reference_transaction_id=str(ref) if action == Action.ROLLBACK else None,
        round_id=None if transfer else f"r-{txn}", game_id=None if transfer else "g1",
        amount=None if action == Action.ROLLBACK else amount, mode=mode,
        session_started_at_ms=None if transfer else now - session_off,
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(pool=st.lists(controls_st, min_size=1, max_size=4),
       script=st.lists(steps(), min_size=20, max_size=80))  # fmt: skip
def test_the_controls_hold_against_the_model(pool: list[Controls],
                                             script: list[tuple[object, ...]]) -> None:  # fmt: skip
    players = [Player(op, pl, wallet, PlayerState(op, pl)) for op, pl, wallet in OWNERS]
    now = T0
    for step in script:
        kind, owners = step[0], step[1]
        assert isinstance(owners, set)
        if kind == "advance":
            assert isinstance(step[2], int)
            now = min(now + step[2], T0 + HORIZON_MS)
            continue
        now += 7
        for i in sorted(owners):
            p = players[i]
            if kind == "tick":
                p.feed(Tick(), now)
            elif kind == "reply":
                assert isinstance(step[2], int) and isinstance(step[3], ReplyStatus)
                p.reply(step[2], step[3], now)
            else:
                template = request_for(step, now, pool)
                if p.wallet == SEAMLESS and template.action in (Action.DEPOSIT,
                                                                Action.WITHDRAW):  # fmt: skip
                    continue
                p.feed(Request(**{**template.__dict__, "operator_id": p.operator,
                                  "player_id": p.player, "wallet": p.wallet}), now)  # fmt: skip
    all_ids: list[str] = []
    for p in players:
        all_ids += p.event_ids
        for currency in ("EUR", "USD"):
            for period in Period:
                used = current_usage(p.state.usage, currency, period, now)
                assert (used.wagered, used.lost, used.deposited) == tuple(
                    p.used(k, period, currency, now) for k in LimitKind
                ), "usage = the model's"
    assert len(all_ids) == len(set(all_ids)), "(i) no event id is shared between players"


# --- examples ------------------------------------------------------------------------------

OP, PLAYER = "op-s1", "pl-1"


def controls_request(change: str, controls: Controls) -> Request:
    return Request(f"rq-{change}", f"c-{change}", "", OP, PLAYER, Action.PLAYER_CONTROLS, "", T0,
                   transaction_id=change, controls=controls)  # fmt: skip


def test_a_change_is_journaled_with_its_fields_and_a_repeat_changes_nothing() -> None:
    state = PlayerState(OP, PLAYER)
    first = Controls(self_excluded=True, self_excluded_until_ms=T0 + HOUR,
                     session_time_limit_ms=5_400_000, actor="staff-7",
                     limits=(Limit(LimitKind.LOSS, Period.WEEK, 50_000, "EUR"),
                             Limit(LimitKind.WAGER, Period.DAY, 20_000, "EUR")))  # fmt: skip
    decision = decide(state, controls_request("ch-1", first), T0 + 5, CONFIG)
    [answer, event] = sorted(decision.outputs, key=lambda o: type(o).__name__)
    assert isinstance(answer, Answer) and isinstance(event, Event)
    assert (answer.status, answer.balance) == (Status.OK, None)
    assert event.name == "PlayerControlsChanged"
    assert (event.correlation_id, event.provider_id) == ("c-ch-1", "")
    limits = "loss:week:EUR:50000,wager:day:EUR:20000"
    assert dict(event.fields) == {**event.fields, "change_id": "ch-1", "actor": "staff-7",
                                  "blocked": False, "self_excluded": True,
                                  "self_excluded_until": T0 + HOUR,
                                  "session_time_limit_s": 5_400, "limits": limits}  # fmt: skip
    state = decision.state
    assert state.controls.change_id == "ch-1" and state.controls.changed_at_ms == T0 + 5
    # a later change stays in force when the first is repeated
    state = decide(state, controls_request("ch-2", Controls(actor="player")), T0 + 6,
                   CONFIG).state  # fmt: skip
    reordered = Controls(**{**first.__dict__, "limits": tuple(reversed(first.limits))})
    repeat = decide(state, controls_request("ch-1", reordered), T0 + 7, CONFIG)
    assert [(type(o).__name__, getattr(o, "status", None)) for o in repeat.outputs] == [
        ("Answer", Status.OK)]  # fmt: skip
    assert repeat.state.controls == state.controls and state.controls.change_id == "ch-2"
    conflict = decide(state, controls_request("ch-1", Controls(actor="staff-7")), T0 + 8, CONFIG)
    [answer] = conflict.outputs
    assert isinstance(answer, Answer) and answer.status is Status.DUPLICATE_CONFLICT
    assert conflict.state.controls == state.controls


def test_two_bets_in_flight_together_cannot_pass_a_wager_limit() -> None:
    state = PlayerState(OP, PLAYER)
    state = decide(state, controls_request("ch-1", Controls(limits=(
        Limit(LimitKind.WAGER, Period.DAY, 100, "EUR"),))), T0, CONFIG).state  # fmt: skip

    def bet(n: int, amount: int) -> Request:
        return Request(f"rq-{n}", "c", "prov-a", OP, PLAYER, Action.BET, "EUR", T0,
                       transaction_id=f"b{n}", round_id="r1", game_id="g1", amount=amount,
                       session_started_at_ms=T0)  # fmt: skip

    first = decide(state, bet(1, 60), T0 + 1, CONFIG)
    assert [o.kind for o in first.outputs if isinstance(o, Command)] == [CommandKind.DEBIT]
    second = decide(first.state, bet(2, 41), T0 + 2, CONFIG)
    assert not [o for o in second.outputs if isinstance(o, Command)]
    [answer] = [o for o in second.outputs if isinstance(o, Answer)]
    assert answer.status is Status.LIMIT_EXCEEDED
    [event] = [o for o in second.outputs if isinstance(o, Event)]
    assert (event.name, event.fields["rule"]) == ("BetRejected", "rg:wager:day:EUR:100")
    third = decide(second.state, bet(3, 40), T0 + 3, CONFIG)
    assert [o.kind for o in third.outputs if isinstance(o, Command)] == [CommandKind.DEBIT]
