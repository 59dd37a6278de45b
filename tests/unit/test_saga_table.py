"""Table-driven tests of the saga decider: prior messages, one message, expected outputs.

Each row runs its prior steps on a fresh player state, then the message, and compares the
statuses of the answers, the commands sent (kind, amount) and the journal event names that
the message alone produced."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

import pytest

from agg_domain.ids import derive_id
from agg_domain.saga import (
    MAX_AMOUNT,
    Answer,
    Command,
    Decision,
    Event,
    Message,
    PlayerState,
    Reply,
    Request,
    SagaConfig,
    Tick,
    TxnState,
    balance_command_id,
    cancel_command_id,
    credit_command_id,
    debit_command_id,
    decide,
    demo_key,
    event_id,
    next_due_ms,
    txn_key,
)
from agg_domain.statuses import Action, CommandKind, ReplyStatus, Status

OPERATOR = "op-1"
PLAYER = "pl-1"
CONFIG = SagaConfig()
T0 = 1_000_000
TIMEOUT = CONFIG.wallet_timeout_ms

_request_numbers = itertools.count(1)


def req(
    action: Action,
    txn: str | None,
    amount: int | None = None,
    *,
    ref: str | None = None,
    provider: str = "prov-a",
    round_id: str | None = "round-1",
    currency: str = "EUR",
    round_closed: bool = False,
) -> Request:
    """A provider request; every call gets its own request id, as a provider retry would."""
    number = next(_request_numbers)
    return Request(
        request_id=f"req-{number}",
        correlation_id=f"corr-{number}",
        provider_id=provider,
        operator_id=OPERATOR,
        player_id=PLAYER,
        action=action,
        currency=currency,
        received_at_ms=T0,
        transaction_id=txn,
        reference_transaction_id=ref,
        round_id=round_id,
        game_id="game-1",
        amount=amount,
        round_closed=round_closed,
    )


def bet(txn: str = "bet-1", amount: int | None = 100, **kw: object) -> Request:
    return req(Action.BET, txn, amount, **kw)  # type: ignore[arg-type]


def win(txn: str = "win-1", amount: int | None = 50, **kw: object) -> Request:
    return req(Action.WIN, txn, amount, **kw)  # type: ignore[arg-type]


def rollback(txn: str = "rb-1", ref: str | None = "bet-1", **kw: object) -> Request:
    return req(Action.ROLLBACK, txn, None, ref=ref, **kw)  # type: ignore[arg-type]


# --- steps of a scenario ----------------------------------------------------------------------


@dataclass(frozen=True)
class Rep:
    """The wallet's reply to the latest command of ``kind`` sent so far."""

    kind: CommandKind
    status: ReplyStatus = ReplyStatus.OK
    balance: int | None = 1_000


@dataclass(frozen=True)
class RepId:
    """A wallet reply to an explicit command id."""

    command_id: str
    status: ReplyStatus = ReplyStatus.OK


@dataclass(frozen=True)
class At:
    """A timer tick at ``T0 + offset_ms``."""

    offset_ms: int


Step = Request | Rep | RepId | At


@dataclass
class Run:
    state: PlayerState = field(default_factory=lambda: PlayerState(OPERATOR, PLAYER))
    now: int = T0
    sent: list[Command] = field(default_factory=list)
    outputs: list[tuple[object, ...]] = field(default_factory=list)

    def message(self, step: Step) -> Message:
        if isinstance(step, Request):
            return step
        if isinstance(step, At):
            self.now = T0 + step.offset_ms
            return Tick()
        if isinstance(step, RepId):
            return Reply(step.command_id, step.status, 1_000, "EUR", self.now)
        command = next(c for c in reversed(self.sent) if c.kind == step.kind)
        return Reply(command.command_id, step.status, step.balance, "EUR", self.now)

    def step(self, step: Step) -> Decision:
        decision = decide(self.state, self.message(step), self.now, CONFIG)
        self.state = decision.state
        self.sent += [o for o in decision.outputs if isinstance(o, Command)]
        self.outputs.append(decision.outputs)
        return decision

    def steps(self, steps: list[Step]) -> None:
        for s in steps:
            self.step(s)


def answers(decision: Decision) -> list[Status]:
    return [o.status for o in decision.outputs if isinstance(o, Answer)]


def commands(decision: Decision) -> list[tuple[CommandKind, int]]:
    return [(o.kind, o.amount) for o in decision.outputs if isinstance(o, Command)]


def events(decision: Decision) -> list[str]:
    return [o.name for o in decision.outputs if isinstance(o, Event)]


def only(decision: Decision, kind: type) -> list:  # type: ignore[type-arg]
    return [o for o in decision.outputs if isinstance(o, kind)]


# --- the table ------------------------------------------------------------------------------

S, K, R = Status, CommandKind, ReplyStatus
BET = bet()
WIN = win()
RB = rollback()


@dataclass(frozen=True)
class Row:
    name: str
    prior: list[Step]
    message: Step
    answers: list[Status]
    commands: list[tuple[CommandKind, int]]
    events: list[str]


ROWS: list[Row] = [
    # bets
    Row("bet sends a debit, no answer yet", [], BET, [], [(K.DEBIT, 100)], []),
    Row("debit ok accepts the bet", [BET], Rep(K.DEBIT), [S.OK], [], ["BetAccepted"]),
    Row("debit refused: insufficient funds", [BET], Rep(K.DEBIT, R.INSUFFICIENT_FUNDS),
        [S.INSUFFICIENT_FUNDS], [], ["BetRejected"]),
    Row("debit refused: player blocked", [BET], Rep(K.DEBIT, R.PLAYER_BLOCKED),
        [S.PLAYER_BLOCKED], [], ["BetRejected"]),
    Row("debit refused: limit reached", [BET], Rep(K.DEBIT, R.LIMIT_REACHED),
        [S.LIMIT_EXCEEDED], [], ["BetRejected"]),
    Row("debit refused: unknown player", [BET], Rep(K.DEBIT, R.UNKNOWN_PLAYER),
        [S.SESSION_NOT_FOUND], [], ["BetRejected"]),
    Row("debit error: retryable and compensated", [BET], Rep(K.DEBIT, R.ERROR),
        [S.RETRY_LATER], [(K.CANCEL, 100)], []),
    # idempotency
    Row("exact duplicate while pending waits", [BET], bet(), [], [], []),
    Row("reply answers the bet and its pending duplicate alike", [BET, bet()], Rep(K.DEBIT),
        [S.OK, S.OK], [], ["BetAccepted"]),
    Row("duplicate after acceptance gets the original answer", [BET, Rep(K.DEBIT)], bet(),
        [S.OK], [], []),
    Row("duplicate after refusal gets the original answer",
        [BET, Rep(K.DEBIT, R.INSUFFICIENT_FUNDS)], bet(), [S.INSUFFICIENT_FUNDS], [], []),
    Row("other amount is a conflict", [BET, Rep(K.DEBIT)], bet(amount=101),
        [S.DUPLICATE_CONFLICT], [], ["DuplicateConflictDetected"]),
    Row("other currency is a conflict", [BET, Rep(K.DEBIT)], bet(currency="USD"),
        [S.DUPLICATE_CONFLICT], [], ["DuplicateConflictDetected"]),
    Row("other round is a conflict", [BET, Rep(K.DEBIT)], bet(round_id="round-2"),
        [S.DUPLICATE_CONFLICT], [], ["DuplicateConflictDetected"]),
    Row("conflict while pending", [BET], bet(amount=99),
        [S.DUPLICATE_CONFLICT], [], ["DuplicateConflictDetected"]),
    Row("win reusing a bet id is a conflict", [BET, Rep(K.DEBIT)], win("bet-1", 100),
        [S.DUPLICATE_CONFLICT], [], ["DuplicateConflictDetected"]),
    # rollbacks
    Row("rollback of an accepted bet cancels its debit", [BET, Rep(K.DEBIT)], RB,
        [], [(K.CANCEL, 100)], []),
    Row("refund acknowledged answers the rollback", [BET, Rep(K.DEBIT), RB], Rep(K.CANCEL),
        [S.OK], [], ["BetRolledBack"]),
    Row("second rollback while refunding: ok, no second cancel", [BET, Rep(K.DEBIT), RB],
        rollback("rb-2"), [S.OK], [], ["RollbackRecorded"]),
    Row("second rollback after refund: ok, no second cancel",
        [BET, Rep(K.DEBIT), RB, Rep(K.CANCEL)], rollback("rb-2"), [S.OK], [],
        ["RollbackRecorded"]),
    Row("duplicate bet after refund: its original answer, no second debit",
        [BET, Rep(K.DEBIT), RB, Rep(K.CANCEL)], bet(), [S.OK], [], []),
    Row("duplicate bet while refunding: its original answer, no second debit",
        [BET, Rep(K.DEBIT), RB], bet(), [S.OK], [], []),
    Row("rollback of a rejected bet is an ok no-op", [BET, Rep(K.DEBIT, R.LIMIT_REACHED)], RB,
        [S.OK], [], ["RollbackRecorded"]),
    Row("rollback of an unknown bet records a tombstone", [], RB,
        [S.OK], [], ["RollbackRecorded"]),
    Row("bet after its tombstone is refused", [RB], BET,
        [S.BET_ROLLED_BACK], [], ["BetRejected"]),
    Row("second rollback of a tombstone", [RB], rollback("rb-2"),
        [S.OK], [], ["RollbackRecorded"]),
    Row("rollback of a pending bet waits", [BET], RB, [], [], []),
    Row("pending bet debited then rolled back", [BET, RB], Rep(K.DEBIT),
        [S.OK], [(K.CANCEL, 100)], ["BetAccepted"]),
    Row("pending bet's refund acknowledged", [BET, RB, Rep(K.DEBIT)], Rep(K.CANCEL),
        [S.OK], [], ["BetRolledBack"]),
    Row("pending bet refused: rollback ok without cancel", [BET, RB],
        Rep(K.DEBIT, R.INSUFFICIENT_FUNDS),
        [S.INSUFFICIENT_FUNDS, S.OK], [], ["BetRejected", "RollbackRecorded"]),
    Row("rollback of a compensating bet answered when the cancel is acknowledged",
        [BET, At(TIMEOUT), RB], Rep(K.CANCEL), [S.OK], [], ["DebitCancelled",
                                                          "RollbackRecorded"]),
    Row("rollback naming a win", [WIN, Rep(K.CREDIT)], rollback(ref="win-1"),
        [S.TRANSACTION_NOT_FOUND], [], []),
    # debit deadline and compensation
    Row("just before the debit deadline nothing happens", [BET], At(TIMEOUT - 1), [], [], []),
    Row("debit deadline: retryable, cancel sent", [BET], At(TIMEOUT),
        [S.RETRY_LATER], [(K.CANCEL, 100)], ["DebitTimedOut"]),
    Row("debit deadline answers pending duplicates too", [BET, bet()], At(TIMEOUT),
        [S.RETRY_LATER, S.RETRY_LATER], [(K.CANCEL, 100)], ["DebitTimedOut"]),
    Row("retry while the cancel is unacknowledged", [BET, At(TIMEOUT)], bet(),
        [S.RETRY_LATER], [], []),
    Row("unacknowledged cancel is resent", [BET, At(TIMEOUT)],
        At(TIMEOUT + CONFIG.backoff_ms(1)), [], [(K.CANCEL, 100)], []),
    Row("cancel acknowledged", [BET, At(TIMEOUT)], Rep(K.CANCEL), [], [], ["DebitCancelled"]),
    Row("retry after the cancel is acknowledged debits again", [BET, At(TIMEOUT),
                                                                Rep(K.CANCEL)], bet(),
        [], [(K.DEBIT, 100)], []),
    Row("late debit reply after compensation is ignored", [BET, At(TIMEOUT)], Rep(K.DEBIT),
        [], [], []),
    Row("cancel refused is resent later, nothing else", [BET, At(TIMEOUT)],
        Rep(K.CANCEL, R.ERROR), [], [], []),
    # wins
    Row("win sends a credit", [], WIN, [], [(K.CREDIT, 50)], []),
    Row("credit ok", [WIN], Rep(K.CREDIT), [S.OK], [], ["WinCredited"]),
    Row("credit deadline: retryable, owed, resent", [WIN], At(TIMEOUT),
        [S.RETRY_LATER], [(K.CREDIT, 50)], ["CreditOwed"]),
    Row("credit error: retryable and owed", [WIN], Rep(K.CREDIT, R.ERROR),
        [S.RETRY_LATER], [], ["CreditOwed"]),
    Row("owed credit acknowledged", [WIN, At(TIMEOUT)], Rep(K.CREDIT), [], [],
        ["WinCredited"]),
    Row("duplicate win after credit", [WIN, Rep(K.CREDIT)], win(), [S.OK], [], []),
    Row("duplicate win while owed waits for the credit", [WIN, At(TIMEOUT)], win(), [], [], []),
    Row("duplicate credit reply", [WIN, Rep(K.CREDIT)], Rep(K.CREDIT), [], [], []),
    # unknown replies
    Row("reply to an unknown command", [BET], RepId("cmd-unknown"), [], [], []),
    Row("duplicate debit reply", [BET, Rep(K.DEBIT)], Rep(K.DEBIT), [], [], []),
    Row("duplicate cancel reply", [BET, Rep(K.DEBIT), RB, Rep(K.CANCEL)], Rep(K.CANCEL),
        [], [], []),
    # boundary amounts
    Row("bet 0", [], bet(amount=0), [S.INVALID_REQUEST], [], []),
    Row("bet -1", [], bet(amount=-1), [S.INVALID_REQUEST], [], []),
    Row("bet without amount", [], bet(amount=None), [S.INVALID_REQUEST], [], []),
    Row("bet without id", [], bet(txn=None), [S.INVALID_REQUEST], [], []),
    Row("bet 1", [], bet(amount=1), [], [(K.DEBIT, 1)], []),
    Row("bet 1 accepted", [bet(amount=1)], Rep(K.DEBIT), [S.OK], [], ["BetAccepted"]),
    Row("bet max", [], bet(amount=MAX_AMOUNT), [], [(K.DEBIT, MAX_AMOUNT)], []),
    Row("bet max accepted", [bet(amount=MAX_AMOUNT)], Rep(K.DEBIT), [S.OK], [],
        ["BetAccepted"]),
    Row("bet 2**63", [], bet(amount=2**63), [S.INVALID_REQUEST], [], []),
    Row("win 0", [], win(amount=0), [], [(K.CREDIT, 0)], []),
    Row("win 0 accepted", [win(amount=0)], Rep(K.CREDIT), [S.OK], [], ["WinCredited"]),
    Row("win -1", [], win(amount=-1), [S.INVALID_REQUEST], [], []),
    Row("win max", [], win(amount=MAX_AMOUNT), [], [(K.CREDIT, MAX_AMOUNT)], []),
    Row("win 2**63", [], win(amount=2**63), [S.INVALID_REQUEST], [], []),
    Row("rollback without reference", [], rollback(ref=None), [S.INVALID_REQUEST], [], []),
    # rounds
    Row("closing win closes the round", [BET, Rep(K.DEBIT), win(round_closed=True)],
        Rep(K.CREDIT), [S.OK], [], ["WinCredited", "RoundClosed"]),
    Row("round closes once", [BET, Rep(K.DEBIT), win(round_closed=True), Rep(K.CREDIT),
                              win("win-2", 5, round_closed=True)],
        Rep(K.CREDIT), [S.OK], [], ["WinCredited"]),
    Row("closing bet closes the round", [bet(round_closed=True)], Rep(K.DEBIT), [S.OK], [],
        ["BetAccepted", "RoundClosed"]),
]  # fmt: skip


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_table(row: Row) -> None:
    run = Run()
    run.steps(row.prior)
    decision = run.step(row.message)
    assert answers(decision) == row.answers
    assert commands(decision) == row.commands
    assert events(decision) == row.events


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_table_is_deterministic(row: Row) -> None:
    """Running the same sequence twice yields identical outputs, ids included."""
    first, second = Run(), Run()
    first.steps([*row.prior, row.message])
    second.steps([*row.prior, row.message])
    assert first.outputs == second.outputs
    assert first.state == second.state


# --- details the table does not show -----------------------------------------------------------


def test_accepted_bet_answer_carries_the_wallet_balance() -> None:
    run = Run()
    run.step(BET)
    decision = run.step(Rep(K.DEBIT, balance=900))
    [answer] = only(decision, Answer)
    assert (answer.balance, answer.currency, answer.request) == (900, "EUR", BET)
    [event] = only(decision, Event)
    assert event.fields["amount"] == 100 and event.fields["balance"] == 900


def test_pending_duplicate_answered_identically() -> None:
    run = Run()
    duplicate = bet()
    run.steps([BET, duplicate])
    assert len(run.sent) == 1
    decision = run.step(Rep(K.DEBIT, balance=777))
    [first, second] = only(decision, Answer)
    assert first.request == BET and second.request == duplicate
    assert (first.status, first.balance) == (second.status, second.balance) == (S.OK, 777)


@pytest.mark.parametrize(
    "conflicting",
    [bet(amount=101), bet(currency="USD"), bet(round_id="round-2"), bet(round_id=None)],
    ids=["amount", "currency", "round", "no-round"],
)
@pytest.mark.parametrize("settled", [False, True], ids=["pending", "accepted"])
def test_conflict_leaves_the_transaction_unchanged(conflicting: Request, settled: bool) -> None:
    run = Run()
    run.steps([BET, Rep(K.DEBIT)] if settled else [BET])
    before = run.state
    decision = run.step(conflicting)
    assert answers(decision) == [S.DUPLICATE_CONFLICT]
    assert run.state == before


def test_refund_cancel_references_the_debit() -> None:
    run = Run()
    run.steps([BET, Rep(K.DEBIT)])
    debit = run.sent[-1]
    decision = run.step(RB)
    [cancel] = only(decision, Command)
    assert cancel.kind == K.CANCEL and cancel.reference_command_id == debit.command_id
    assert cancel.transaction_id == "bet-1" and cancel.amount == debit.amount
    decision = run.step(Rep(K.CANCEL))
    [answer] = only(decision, Answer)
    assert answer.request == RB and answer.status == S.OK
    assert run.state.txns[txn_key("prov-a", "bet-1")].state == TxnState.ROLLED_BACK


def test_rollback_of_rejected_bet_is_recorded_as_known() -> None:
    run = Run()
    run.steps([BET, Rep(K.DEBIT, R.PLAYER_BLOCKED)])
    [event] = only(run.step(RB), Event)
    assert event.name == "RollbackRecorded" and event.fields["bet_known"] is True


def test_rollback_of_unknown_bet_is_recorded_as_unknown() -> None:
    run = Run()
    [event] = only(run.step(RB), Event)
    assert event.fields["bet_known"] is False
    assert run.state.txns[txn_key("prov-a", "bet-1")].state == TxnState.TOMBSTONE
    assert not run.state.pending


def test_tombstone_is_per_provider() -> None:
    run = Run()
    run.step(RB)
    decision = run.step(bet(provider="prov-b"))
    assert commands(decision) == [(K.DEBIT, 100)]


def test_retry_after_compensation_uses_a_new_command_id() -> None:
    run = Run()
    run.steps([BET, At(TIMEOUT)])
    [first_debit, cancel] = run.sent
    assert cancel.reference_command_id == first_debit.command_id
    run.step(Rep(K.CANCEL))
    [second_debit] = only(run.step(bet()), Command)
    assert second_debit.kind == K.DEBIT
    assert second_debit.command_id not in (first_debit.command_id, cancel.command_id)
    assert answers(run.step(Rep(K.DEBIT))) == [S.OK]


def test_debit_deadline_is_measured_from_the_bet() -> None:
    run = Run()
    run.step(BET)
    assert next_due_ms(run.state, CONFIG) == T0 + TIMEOUT


def test_credit_is_resent_with_capped_exponential_backoff_until_acknowledged() -> None:
    run = Run()
    [credit] = only(run.step(WIN), Command)
    now, sends = T0, 1
    resend_times = []
    while sends < 12:
        due = next_due_ms(run.state, CONFIG)
        assert due is not None
        decision = run.step(At(due - T0))
        resent = only(decision, Command)
        if due == T0 + TIMEOUT and not resent:
            continue  # the answer deadline alone
        assert resent == [credit], "the same command, same id, is resent"
        sends += 1
        resend_times.append(due)
        now = due
    gaps = [b - a for a, b in itertools.pairwise([T0, *resend_times])]
    assert gaps == [CONFIG.backoff_ms(n) for n in range(1, 12)]
    assert max(gaps) == CONFIG.retry_backoff_max_ms
    assert CONFIG.backoff_ms(1) == CONFIG.retry_backoff_initial_ms
    assert all(CONFIG.backoff_ms(n) == CONFIG.retry_backoff_max_ms for n in (8, 50, 10_000))
    owed = [e for outs in run.outputs for e in outs if isinstance(e, Event)]
    assert [e.name for e in owed] == ["CreditOwed"]
    decision = run.step(Rep(K.CREDIT, balance=1_050))
    assert events(decision) == ["WinCredited"]
    [rnd] = run.state.rounds.values()
    assert not run.state.pending
    assert next_due_ms(run.state, CONFIG) == rnd.updated_at_ms + CONFIG.round_auto_close_ms
    assert run.step(Rep(K.CREDIT)).outputs == ()
    assert only(run.step(At(now - T0 + 10 * CONFIG.retry_backoff_max_ms)), Command) == []


def test_unknown_reply_changes_nothing() -> None:
    run = Run()
    run.steps([BET, WIN])
    before = run.state
    decision = run.step(RepId("cmd-nobody-sent-this", R.ERROR))
    assert decision.outputs == () and run.state == before


def test_round_closed_totals() -> None:
    run = Run()
    run.steps([BET, Rep(K.DEBIT), bet("bet-2", 7), Rep(K.DEBIT, R.INSUFFICIENT_FUNDS)])
    run.steps([bet("bet-3", 20), Rep(K.DEBIT), rollback("rb-3", "bet-3"), Rep(K.CANCEL)])
    run.step(win(amount=30, round_closed=True))
    [closed] = [e for e in only(run.step(Rep(K.CREDIT)), Event) if e.name == "RoundClosed"]
    assert closed.fields["round_id"] == "round-1"
    assert (closed.fields["bet_total"], closed.fields["win_total"]) == (120, 30)
    assert closed.fields["refund_total"] == 20
    assert run.state.rounds[txn_key("prov-a", "round-1")].closed


def test_output_ids_are_deterministic_across_runs() -> None:
    """The same scenario built twice from scratch (new request objects, same ids) repeats
    every command and event id."""

    def scenario() -> list[tuple[str, ...]]:
        run = Run()
        steps: list[Step] = [
            Request(**{**BET.__dict__}),
            Rep(K.DEBIT),
            Request(**{**WIN.__dict__}),
            At(TIMEOUT),
            At(10 * TIMEOUT),
            Rep(K.CREDIT),
            Request(**{**RB.__dict__}),
            Rep(K.CANCEL),
        ]
        run.steps(steps)
        return [
            (o.command_id,) if isinstance(o, Command) else (o.name, o.event_id)
            for outs in run.outputs
            for o in outs
            if isinstance(o, Command | Event)
        ]

    first, second = scenario(), scenario()
    assert first == second and len(first) >= 8
    event_ids = [x[1] for x in first if len(x) == 2]
    assert len(event_ids) == len(set(event_ids))


def test_wrong_player_is_a_routing_bug() -> None:
    request = Request(**{**BET.__dict__, "player_id": "someone-else"})
    with pytest.raises(ValueError, match="wrong player"):
        decide(PlayerState(OPERATOR, PLAYER), request, T0, CONFIG)


# --- regression tests of defects found by the property tests ----------------------------


@pytest.mark.parametrize(
    "prior",
    [
        [BET, Rep(K.DEBIT), RB, Rep(K.CANCEL)],
        [BET, Rep(K.DEBIT, R.INSUFFICIENT_FUNDS), RB],
    ],
    ids=["refunded", "rejected-bet"],
)
def test_duplicate_rollback_gets_the_original_answer(prior: list[Step]) -> None:
    run = Run()
    run.steps(prior)
    decision = run.step(rollback())
    assert answers(decision) == [S.OK]
    assert events(decision) == []


def test_duplicate_rollback_of_unknown_bet_gets_the_original_answer() -> None:
    run = Run()
    run.step(RB)
    assert answers(run.step(rollback())) == [S.OK]


def test_rounds_are_per_provider() -> None:
    run = Run()
    run.steps([BET, Rep(K.DEBIT)])
    run.step(win("win-b", 5, provider="prov-b", round_closed=True))
    [closed] = [e for e in only(run.step(Rep(K.CREDIT)), Event) if e.name == "RoundClosed"]
    assert closed.provider_id == "prov-b"
    assert (closed.fields["bet_total"], closed.fields["win_total"]) == (0, 5)


def test_retry_of_rolled_back_compensated_bet_is_refused() -> None:
    run = Run()
    run.steps([BET, At(TIMEOUT), RB])
    assert answers(run.step(Rep(K.CANCEL))) == [S.OK]
    decision = run.step(bet())
    assert answers(decision) == [S.BET_ROLLED_BACK]
    assert commands(decision) == []


# --- demo play: decided here, never a wallet command ---------------------------------------

DEMO_START = CONFIG.demo_starting_balance


def demo(request: Request, mode: str = "demo") -> Request:
    """The same request from a demo session."""
    return replace(request, mode=mode)


DBET, DWIN, DRB = demo(bet()), demo(win()), demo(rollback())


@dataclass(frozen=True)
class DemoRow:
    name: str
    prior: list[Step]
    message: Request
    answers: list[tuple[Status, int | None]]
    """Status and balance of each answer."""
    events: list[str]
    demo_balance: int = DEMO_START
    """The player's demo balance in EUR afterwards."""


DEMO_ROWS: list[DemoRow] = [
    DemoRow("demo bet is accepted at once against the demo balance", [], DBET,
            [(S.OK, DEMO_START - 100)], ["BetAccepted"], DEMO_START - 100),
    DemoRow("demo bet above the demo balance is refused", [], demo(bet(amount=DEMO_START + 1)),
            [(S.INSUFFICIENT_FUNDS, DEMO_START)], ["BetRejected"]),
    DemoRow("demo bet of the whole balance", [], demo(bet(amount=DEMO_START)),
            [(S.OK, 0)], ["BetAccepted"], 0),
    DemoRow("demo win credits the demo balance", [DBET], DWIN,
            [(S.OK, DEMO_START - 50)], ["WinCredited"], DEMO_START - 50),
    DemoRow("demo closing win closes no round", [DBET], demo(win(round_closed=True)),
            [(S.OK, DEMO_START - 50)], ["WinCredited"], DEMO_START - 50),
    DemoRow("demo duplicate bet: its original answer, no second debit", [DBET, DWIN], DBET,
            [(S.OK, DEMO_START - 100)], [], DEMO_START - 50),
    DemoRow("demo bet with another amount is a conflict", [DBET], demo(bet(amount=7)),
            [(S.DUPLICATE_CONFLICT, DEMO_START - 100)], ["DuplicateConflictDetected"],
            DEMO_START - 100),
    DemoRow("demo win reusing a demo bet id is a conflict", [DBET], demo(win("bet-1", 100)),
            [(S.DUPLICATE_CONFLICT, DEMO_START - 100)], ["DuplicateConflictDetected"],
            DEMO_START - 100),
    DemoRow("demo rollback refunds the demo bet", [DBET], DRB,
            [(S.OK, DEMO_START)], ["BetRolledBack"]),
    DemoRow("second demo rollback: ok, no second refund", [DBET, DRB], demo(rollback("rb-2")),
            [(S.OK, DEMO_START)], ["RollbackRecorded"]),
    DemoRow("demo rollback retried: its original answer", [DBET, DRB, DWIN], DRB,
            [(S.OK, DEMO_START)], [], DEMO_START + 50),
    DemoRow("demo duplicate of a refunded bet: its original answer", [DBET, DRB], DBET,
            [(S.OK, DEMO_START - 100)], []),
    DemoRow("demo rollback of a refused bet is an ok no-op",
            [demo(bet(amount=DEMO_START + 1))], DRB, [(S.OK, DEMO_START)],
            ["RollbackRecorded"]),
    DemoRow("demo rollback of an unknown bet records a tombstone", [], DRB,
            [(S.OK, DEMO_START)], ["RollbackRecorded"]),
    DemoRow("demo bet after its tombstone is refused", [DRB], DBET,
            [(S.BET_ROLLED_BACK, DEMO_START)], ["BetRejected"]),
    DemoRow("demo rollback naming a demo win", [DWIN], demo(rollback(ref="win-1")),
            [(S.TRANSACTION_NOT_FOUND, DEMO_START + 50)], [], DEMO_START + 50),
    DemoRow("demo balance", [DBET], demo(req(Action.BALANCE, None)),
            [(S.OK, DEMO_START - 100)], [], DEMO_START - 100),
    DemoRow("demo authenticate", [], demo(req(Action.AUTHENTICATE, None)),
            [(S.OK, DEMO_START)], []),
    DemoRow("demo balance in another currency starts afresh", [DBET],
            demo(req(Action.BALANCE, None, currency="USD")), [(S.OK, DEMO_START)], [],
            DEMO_START - 100),
    DemoRow("demo bet 0 is invalid", [], demo(bet(amount=0)),
            [(S.INVALID_REQUEST, DEMO_START)], []),
    DemoRow("demo win -1 is invalid", [], demo(win(amount=-1)),
            [(S.INVALID_REQUEST, DEMO_START)], []),
    DemoRow("demo rollback without reference is invalid", [], demo(rollback(ref=None)),
            [(S.INVALID_REQUEST, DEMO_START)], []),
    DemoRow("an unknown mode moves nothing", [], demo(bet(), mode="fun"),
            [(S.INVALID_REQUEST, None)], []),
    # demo and real are apart: the same ids, each in its own world
    DemoRow("demo bet with a real bet's id pending", [BET], DBET,
            [(S.OK, DEMO_START - 100)], ["BetAccepted"], DEMO_START - 100),
    DemoRow("demo bet with a real bet's id accepted", [BET, Rep(K.DEBIT)], DBET,
            [(S.OK, DEMO_START - 100)], ["BetAccepted"], DEMO_START - 100),
    DemoRow("demo rollback does not touch the real bet", [BET, Rep(K.DEBIT), DBET], DRB,
            [(S.OK, DEMO_START)], ["BetRolledBack"]),
    DemoRow("demo rollback of a bet only real play knows: a demo tombstone",
            [BET, Rep(K.DEBIT)], DRB, [(S.OK, DEMO_START)], ["RollbackRecorded"]),
    DemoRow("demo balance never answers the real one", [BET, Rep(K.DEBIT, balance=1_000)],
            demo(req(Action.BALANCE, None)), [(S.OK, DEMO_START)], []),
]  # fmt: skip


def real_part(state: PlayerState) -> tuple[object, ...]:
    """Everything of real play in a state: balance, commands in flight, real transactions."""
    real = {k: t for k, t in state.txns.items() if not k.startswith("demo|")}
    return state.balance, dict(state.pending), real, dict(state.rounds)


@pytest.mark.parametrize("row", DEMO_ROWS, ids=[r.name for r in DEMO_ROWS])
def test_demo_table(row: DemoRow) -> None:
    run = Run()
    run.steps(row.prior)
    real_before = real_part(run.state)
    decision = run.step(row.message)
    got = [(a.status, a.balance) for a in only(decision, Answer)]
    assert got == row.answers
    assert commands(decision) == []  # demo play never reaches the operator's wallet
    assert events(decision) == row.events
    assert all(e.fields["mode"] == "demo" for e in only(decision, Event))
    assert run.state.demo_balances.get("EUR", DEMO_START) == row.demo_balance
    # nothing real changed: balance, wallet commands in flight, real transactions
    assert real_part(run.state) == real_before
    demo_txns = [t for k, t in run.state.txns.items() if k.startswith("demo|")]
    assert all(t.deadline_ms is None and t.state != TxnState.PENDING for t in demo_txns)


@pytest.mark.parametrize("row", DEMO_ROWS, ids=[r.name for r in DEMO_ROWS])
def test_demo_table_is_deterministic(row: DemoRow) -> None:
    first, second = Run(), Run()
    first.steps([*row.prior, row.message])
    second.steps([*row.prior, row.message])
    assert first.outputs == second.outputs
    assert first.state == second.state


def test_demo_and_real_transactions_of_one_id_are_kept_apart() -> None:
    run = Run()
    run.steps([BET, Rep(K.DEBIT, balance=900), DBET, DRB])
    real = run.state.txns[txn_key("prov-a", "bet-1")]
    play = run.state.txns[demo_key("prov-a", "bet-1")]
    assert real.state == TxnState.ACCEPTED and play.state == TxnState.ROLLED_BACK
    assert real.key != play.key and "|" not in real.key
    # the real bet's rollback still refunds the real bet, with a real CANCEL
    decision = run.step(RB)
    assert commands(decision) == [(K.CANCEL, 100)]
    decision = run.step(Rep(K.CANCEL, balance=1_000))
    assert [(a.status, a.balance) for a in only(decision, Answer)] == [(S.OK, 1_000)]
    assert run.state.balance == 1_000 and run.state.demo_balances == {"EUR": DEMO_START}


def test_demo_event_ids_never_meet_real_ones() -> None:
    real, play = Run(), Run()
    real.steps([BET, Rep(K.DEBIT), WIN, Rep(K.CREDIT), RB, Rep(K.CANCEL)])
    play.steps([DBET, DWIN, DRB])
    real_events = [o for outputs in real.outputs for o in outputs if isinstance(o, Event)]
    demo_events = [o for outputs in play.outputs for o in outputs if isinstance(o, Event)]
    assert [e.name for e in demo_events] == ["BetAccepted", "WinCredited", "BetRolledBack"]
    assert {e.event_id for e in real_events}.isdisjoint(e.event_id for e in demo_events)
    assert {e.fields["command_id"] for e in real_events}.isdisjoint(
        e.fields["command_id"] for e in demo_events
    )
    assert all("mode" not in e.fields for e in real_events)  # real: the schema's default


def test_demo_starting_balance_is_configured() -> None:
    config = SagaConfig(demo_starting_balance=50)
    state = PlayerState(OPERATOR, PLAYER)
    refused = decide(state, demo(bet(amount=51)), T0, config)
    assert [(a.status, a.balance) for a in only(refused, Answer)] == [(S.INSUFFICIENT_FUNDS, 50)]
    accepted = decide(refused.state, demo(bet("bet-2", amount=50)), T0, config)
    assert [(a.status, a.balance) for a in only(accepted, Answer)] == [(S.OK, 0)]
    assert accepted.state.demo_balances == {"EUR": 0}


def test_demo_transactions_are_forgotten_like_real_ones() -> None:
    run = Run()
    run.steps([DBET])
    later = T0 + CONFIG.settled_retention_ms + CONFIG.prune_interval_ms + 1
    decision = decide(run.state, Tick(), later, CONFIG)
    assert decision.state.txns == {}
    assert decision.state.demo_balances == {"EUR": DEMO_START - 100}  # the balance stays


# --- a provider's ids are its own: other players and operators reuse them ------------------

OTHER_OWNERS = [("op-1", "pl-2"), ("op-2", "pl-1")]
"""Another player of the same operator, and the same player id at another operator."""


def owned_by(step: Step, operator: str, player: str) -> Step:
    if isinstance(step, Request):
        return replace(step, operator_id=operator, player_id=player)
    return step


def output_ids(run: Run) -> set[str]:
    return {
        o.command_id if isinstance(o, Command) else o.event_id
        for outs in run.outputs
        for o in outs
        if isinstance(o, Command | Event)
    }


@pytest.mark.parametrize("owner", OTHER_OWNERS, ids=["other-player", "other-operator"])
@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_table_for_another_owner_with_the_same_provider_ids(
    row: Row, owner: tuple[str, str]
) -> None:
    """Every row again for another owner, with the very same transaction, request and round
    ids: the same outcome, and not one command or event id in common with the first."""
    first = Run()
    first.steps([*row.prior, row.message])
    other = Run(state=PlayerState(*owner))
    other.steps([owned_by(s, *owner) for s in row.prior])
    decision = other.step(owned_by(row.message, *owner))
    assert answers(decision) == row.answers
    assert commands(decision) == row.commands
    assert events(decision) == row.events
    assert not output_ids(first) & output_ids(other)


@pytest.mark.parametrize("owner", OTHER_OWNERS, ids=["other-player", "other-operator"])
def test_a_balance_request_id_reused_by_another_owner(owner: tuple[str, str]) -> None:
    asked = req(Action.BALANCE, None, round_id=None)
    mine, theirs = Run(), Run(state=PlayerState(*owner))
    [my_command] = only(mine.step(asked), Command)
    [their_command] = only(theirs.step(owned_by(asked, *owner)), Command)
    assert my_command.kind == their_command.kind == K.BALANCE
    assert my_command.command_id != their_command.command_id
    [my_answer] = only(mine.step(Rep(K.BALANCE, balance=111)), Answer)
    [their_answer] = only(theirs.step(Rep(K.BALANCE, balance=222)), Answer)
    assert (my_answer.status, my_answer.balance) == (S.OK, 111)
    assert (their_answer.status, their_answer.balance) == (S.OK, 222)
    assert their_answer.request.player_id == owner[1]


def test_a_live_round_closed_by_several_players_is_journaled_for_each() -> None:
    """One round id, one bet id and one win id for every player at a live table."""
    closed = []
    for operator, player in [(OPERATOR, PLAYER), *OTHER_OWNERS, ("op-2", "pl-2")]:
        run = Run(state=PlayerState(operator, player))
        steps = [BET, Rep(K.DEBIT), win(round_closed=True), Rep(K.CREDIT)]
        run.steps([owned_by(s, operator, player) for s in steps])
        [event] = [e for e in run.outputs[-1] if isinstance(e, Event) and e.name == "RoundClosed"]
        assert (event.fields["round_id"], event.fields["bet_total"]) == ("round-1", 100)
        closed.append(event.event_id)
    assert len(set(closed)) == len(closed) == 4


def test_cancel_ids_are_the_owners_too() -> None:
    """Two owners' cancels of debits whose ids were the same (made by an earlier scheme that
    left the owner out) are two commands."""
    cancels = []
    for operator, player in [(OPERATOR, PLAYER), *OTHER_OWNERS]:
        run = Run(state=PlayerState(operator, player))
        run.step(owned_by(BET, operator, player))
        run.state = legacy_debit(run.state, "bet-1")
        assert answers(run.step(RepId(LEGACY_DEBIT_ID))) == [S.OK]
        [cancel] = only(run.step(owned_by(RB, operator, player)), Command)
        assert cancel.reference_command_id == LEGACY_DEBIT_ID
        cancels.append(cancel.command_id)
    assert len(set(cancels)) == 3


# --- history: states written with the ids of earlier versions --------------------------------

LEGACY_DEBIT_ID = derive_id("cmd", "prov-a", "bet-1", "DEBIT", 1)
"""What the first scheme named the first debit of prov-a's bet-1, whoever placed it."""


def legacy_debit(state: PlayerState, txn_id: str) -> PlayerState:
    """``state`` as the first scheme stored it: the pending debit of ``txn_id`` under its
    old id."""
    key = txn_key("prov-a", txn_id)
    txn = state.txns[key]
    assert txn.command_id is not None
    pending = state.pending[txn.command_id]
    old = replace(pending.command, command_id=LEGACY_DEBIT_ID)
    others = {k: v for k, v in state.pending.items() if k != txn.command_id}
    return replace(
        state,
        txns={**state.txns, key: replace(txn, command_id=LEGACY_DEBIT_ID)},
        pending={**others, LEGACY_DEBIT_ID: replace(pending, command=old)},
    )


def test_a_pending_debit_with_an_old_id_still_resolves() -> None:
    run = Run()
    run.step(BET)
    run.state = legacy_debit(run.state, "bet-1")
    decision = run.step(RepId(LEGACY_DEBIT_ID))
    assert answers(decision) == [S.OK] and events(decision) == ["BetAccepted"]
    [event] = only(decision, Event)
    assert event.fields["command_id"] == LEGACY_DEBIT_ID
    assert not run.state.pending


def test_a_timed_out_debit_with_an_old_id_is_compensated_under_it() -> None:
    run = Run()
    run.step(BET)
    run.state = legacy_debit(run.state, "bet-1")
    decision = run.step(At(TIMEOUT))
    [cancel] = only(decision, Command)
    assert cancel.kind == K.CANCEL and cancel.reference_command_id == LEGACY_DEBIT_ID
    assert events(run.step(Rep(K.CANCEL))) == ["DebitCancelled"]
    # the provider's retry is a new attempt, under the current scheme
    [debit] = only(run.step(bet()), Command)
    assert debit.command_id == debit_command_id(OPERATOR, PLAYER, "prov-a", "bet-1", 2)


def test_an_owed_credit_with_an_old_id_is_resent_under_it() -> None:
    old_id = derive_id("cmd", "prov-a", "win-1", "CREDIT")
    run = Run()
    run.step(WIN)
    key = txn_key("prov-a", "win-1")
    txn = run.state.txns[key]
    assert txn.command_id is not None
    pending = run.state.pending[txn.command_id]
    run.state = replace(
        run.state,
        txns={key: replace(txn, command_id=old_id)},
        pending={old_id: replace(pending, command=replace(pending.command, command_id=old_id))},
    )
    resent = only(run.step(At(TIMEOUT + CONFIG.backoff_ms(1))), Command)
    assert [c.command_id for c in resent] == [old_id]
    assert events(run.step(RepId(old_id))) == ["WinCredited"]
    assert not run.state.pending


def test_the_id_formulas_do_not_change() -> None:
    """The ids are part of the journal and of every wallet's ledger: a worker re-deciding a
    message after an upgrade must derive the ids it derived before."""
    assert debit_command_id("op", "pl", "prov", "t", 1) == "cmd-3a3992156a6c1cfaef4832010a3d4fe9"
    assert credit_command_id("op", "pl", "prov", "t") == "cmd-d9caebaa4864482dc63852bcb65a9ba2"
    assert cancel_command_id("op", "pl", "cmd-x") == "cmd-90ac03a0c351164b8f9a5fa3fb8c3e77"
    assert balance_command_id("op", "pl", "prov", "r") == "cmd-4acf0aef0e41e54f58a9edb0f79416d3"
    assert (
        event_id("op", "pl", "prov", "RoundClosed", "prov:r")
        == "ev-f622921a93ef9b56a1d79277c3fd112f"
    )
    # the first scheme, which left the owner out (still named in old journals and states)
    assert derive_id("cmd", "prov", "t", "DEBIT", 1) == "cmd-a53687fac701adbd27043db7f7fa9736"
