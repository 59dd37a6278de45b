"""Property-based tests of the saga decider against a reference wallet and a tiny model.

Random sequences of provider requests (bets, wins, rollbacks, duplicates, rollbacks before
bets), wallet behaviour (applies, refuses, fails, loses or repeats messages), reply deliveries
and timer ticks drive the saga; then everything is delivered and ticked until quiescent and
the money moved is compared with what the answers given to providers imply."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import TypeVar

from hypothesis import given, reject, settings
from hypothesis import strategies as st

from agg_domain.saga import (
    MAX_AMOUNT,
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
    next_due_ms,
)
from agg_domain.statuses import Action, CommandKind, ReplyStatus, Status

OPERATOR = "op-1"
PLAYER = "pl-1"
CONFIG = SagaConfig()
T0 = 1_000_000

PROVIDERS = ("prov-a", "prov-b")
BET_IDS = ("b1", "b2", "b3")
WIN_IDS = ("w1", "w2")
ROLLBACK_IDS = ("x1", "x2", "x3")
ROUNDS = ("r1", "r2", None)
BET_AMOUNTS = (0, 1, 5, 100, MAX_AMOUNT, 2**63, -1)
WIN_AMOUNTS = (0, 1, 5, 100, MAX_AMOUNT, 2**63, -1)
TICKS_MS = (0, 1, 499, 500, 1_499, 1_500, 1_501, 5_000, 60_000, 300_000)
REFUSALS = (
    ReplyStatus.INSUFFICIENT_FUNDS,
    ReplyStatus.PLAYER_BLOCKED,
    ReplyStatus.LIMIT_REACHED,
    ReplyStatus.UNKNOWN_PLAYER,
)
WALLET_MODES = ("ok", "ok", "ok", "lost_reply", "lost_command", "error", "refuse", "repeat")


# --- reference wallet --------------------------------------------------------------------------


class BalanceOverflow(Exception):
    """A credit or refund would take a 64-bit balance past its maximum."""


@dataclass
class Wallet:
    """An operator wallet: dedupes by command id; a CANCEL refunds its debit once, and a
    CANCEL of a debit it has not seen makes that debit refused if it arrives later.

    With ``signed_64`` the balance is a signed 64-bit long, as every real wallet's (and the
    replies' Avro ``long``) is: a credit or refund past its maximum raises
    :class:`BalanceOverflow`, for tests whose subject encodes replies (their balance) to
    reject such a script rather than feed the saga a balance no wallet can report."""

    balance: int
    signed_64: bool = False
    replies: dict[str, ReplyStatus] = field(default_factory=dict)
    debited: dict[str, Command] = field(default_factory=dict)
    refunded: set[str] = field(default_factory=set)
    cancelled_unseen: set[str] = field(default_factory=set)
    net_debit: dict[tuple[str, str | None], int] = field(default_factory=lambda: defaultdict(int))
    credits: dict[tuple[str, str | None], list[int]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def apply(self, command: Command, refusal: ReplyStatus | None = None) -> ReplyStatus:
        if command.command_id in self.replies:
            return self.replies[command.command_id]
        key = (command.provider_id, command.transaction_id)
        status = ReplyStatus.OK
        if command.kind == CommandKind.DEBIT:
            if command.command_id in self.cancelled_unseen:
                status = ReplyStatus.INSUFFICIENT_FUNDS
            elif refusal is not None:
                status = refusal
            elif self.balance < command.amount:
                status = ReplyStatus.INSUFFICIENT_FUNDS
            else:
                self.balance -= command.amount
                self.debited[command.command_id] = command
                self.net_debit[key] += command.amount
        elif command.kind == CommandKind.CREDIT:
            self._check_room(command.amount)
            self.balance += command.amount
            self.credits[key].append(command.amount)
        elif command.kind == CommandKind.CANCEL:
            debit_id = command.reference_command_id
            assert debit_id is not None
            debit = self.debited.get(debit_id)
            if debit is None:
                self.cancelled_unseen.add(debit_id)
            elif debit_id not in self.refunded:
                self._check_room(debit.amount)
                self.refunded.add(debit_id)
                self.balance += debit.amount
                self.net_debit[key] -= debit.amount
        self.replies[command.command_id] = status
        return status

    def _check_room(self, amount: int) -> None:
        if self.signed_64 and self.balance > MAX_AMOUNT - amount:
            raise BalanceOverflow(self.balance, amount)


# --- the simulation ----------------------------------------------------------------------------


@dataclass
class Sim:
    wallet: Wallet
    state: PlayerState = field(default_factory=lambda: PlayerState(OPERATOR, PLAYER))
    now: int = T0
    inbox: list[Command] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    sent: dict[str, Command] = field(default_factory=dict)
    bet_amounts: dict[tuple[str, str | None], set[int]] = field(
        default_factory=lambda: defaultdict(set)
    )

    def feed(self, message: Message) -> None:
        decision = decide(self.state, message, self.now, CONFIG)
        self.state = decision.state
        for output in decision.outputs:
            if isinstance(output, Command):
                assert 0 <= output.amount <= MAX_AMOUNT, output  # (e)
                previous = self.sent.setdefault(output.command_id, output)
                assert previous == output, "a command id always names the same command"
                if output.kind == CommandKind.DEBIT:
                    self.bet_amounts[(output.provider_id, output.transaction_id)].add(output.amount)
                self.inbox.append(output)
            elif isinstance(output, Answer):
                assert isinstance(output.status, Status)  # (e)
                self.answers.append(output)
            else:
                assert isinstance(output, Event)
                self.events.append(output)
        self.check_debits_at_most_once()

    def request(self, request: Request) -> None:
        self.requests.append(request)
        self.feed(request)

    def tick(self, advance_ms: int) -> None:
        self.now += advance_ms
        self.feed(Tick())

    def wallet_step(self, index: int, mode: str, refusal: ReplyStatus) -> None:
        if not self.inbox:
            return
        command = self.inbox.pop(index % len(self.inbox))
        if mode == "lost_command":
            return
        if mode == "error":
            self.reply(command, ReplyStatus.ERROR)
            return
        status = self.wallet.apply(command, refusal if mode == "refuse" else None)
        if mode == "repeat":
            self.inbox.append(command)
        if mode != "lost_reply":
            self.reply(command, status)
        self.check_debits_at_most_once()

    def reply(self, command: Command, status: ReplyStatus) -> None:
        self.replies.append(
            Reply(command.command_id, status, self.wallet.balance, command.currency, self.now)
        )

    def deliver(self, index: int, again: bool) -> None:
        if not self.replies:
            return
        reply = self.replies[index % len(self.replies)]
        if not again:
            self.replies.remove(reply)
        self.feed(reply)

    def drain(self) -> None:
        """Deliver everything, then tick to each next due time, until nothing is left."""
        for _ in range(1_000):
            if self.inbox:
                command = self.inbox.pop(0)
                self.reply(command, self.wallet.apply(command))
            elif self.replies:
                self.feed(self.replies.pop(0))
            else:
                due = next_due_ms(self.state, CONFIG)
                if due is None:
                    return
                self.now = max(self.now, due)
                self.feed(Tick())
        raise AssertionError("the saga did not become quiescent")

    def check_debits_at_most_once(self) -> None:
        """(a) per provider transaction, debits minus refunds is 0 or the bet's amount."""
        for key, net in self.wallet.net_debit.items():
            assert net == 0 or net in self.bet_amounts[key], (key, net)


# --- the reference model -----------------------------------------------------------------------


def invalid(request: Request) -> bool:
    if request.transaction_id is None:
        return True
    if request.action == Action.ROLLBACK:
        return request.reference_transaction_id is None
    low = 1 if request.action == Action.BET else 0
    return request.amount is None or not low <= request.amount <= MAX_AMOUNT


def content(request: Request) -> tuple[object, ...]:
    return (request.action, request.amount, request.currency, request.round_id)


def check_against_model(sim: Sim, start_balance: int) -> None:
    first: dict[tuple[str, str], Request] = {}
    rolled_back: set[tuple[str, str | None]] = set()
    for request in sim.requests:
        if invalid(request):
            continue
        assert request.transaction_id is not None
        key = (request.provider_id, request.transaction_id)
        if key in first:
            continue
        first[key] = request
        if request.action == Action.ROLLBACK:
            rolled_back.add((request.provider_id, request.reference_transaction_id))

    last_answer: dict[tuple[str, str], Status] = {}
    for answer in sim.answers:
        request = answer.request
        if invalid(request):
            assert answer.status == Status.INVALID_REQUEST
            continue
        assert request.transaction_id is not None
        key = (request.provider_id, request.transaction_id)
        if content(request) == content(first[key]):
            last_answer[key] = answer.status

    answered = defaultdict(int)
    for answer in sim.answers:
        answered[answer.request.request_id] += 1
    assert all(answered[r.request_id] == 1 for r in sim.requests), "one answer per request"

    expected_debits = 0
    expected_credits = 0
    for key, request in first.items():
        assert request.amount is not None or request.action == Action.ROLLBACK
        if request.action == Action.BET:
            assert request.amount is not None
            if key in rolled_back:  # (c) rolled back: nothing stays debited
                expected = 0
            elif last_answer.get(key) == Status.OK:  # (c) accepted: debited once
                expected = request.amount
            else:  # (c) refused or retryable: not debited
                expected = 0
            assert sim.wallet.net_debit.get(key, 0) == expected, (key, last_answer.get(key))
            expected_debits += expected
        elif request.action == Action.WIN:
            assert request.amount is not None
            # (b) every win credited exactly once, and answered OK
            assert sim.wallet.credits.get(key) == [request.amount], key
            expected_credits += request.amount
    assert not [k for k, v in sim.wallet.net_debit.items() if v and k not in first]
    assert not [k for k in sim.wallet.credits if k not in first]
    # (d)
    assert sim.wallet.balance == start_balance - expected_debits + expected_credits
    event_ids = [e.event_id for e in sim.events]
    assert len(event_ids) == len(set(event_ids)), "each journal event is emitted once"
    # (g)
    assert not sim.state.pending
    assert next_due_ms(sim.state, CONFIG) is None


# --- strategies --------------------------------------------------------------------------------

_numbers = iter(range(10**9))


@st.composite
def requests(draw: st.DrawFn) -> Request:
    action = draw(st.sampled_from((Action.BET, Action.BET, Action.WIN, Action.ROLLBACK)))
    provider = draw(st.sampled_from(PROVIDERS))
    reference = None
    amount: int | None
    if action == Action.BET:
        txn = draw(st.sampled_from(BET_IDS))
        amount = draw(st.sampled_from(BET_AMOUNTS))
    elif action == Action.WIN:
        txn = draw(st.sampled_from(WIN_IDS))
        amount = draw(st.sampled_from(WIN_AMOUNTS))
    else:
        txn = draw(st.sampled_from(ROLLBACK_IDS))
        reference = draw(st.sampled_from(BET_IDS))
        amount = None
    number = next(_numbers)
    return Request(
        request_id=f"req-{number}",
        correlation_id=f"corr-{number}",
        provider_id=provider,
        operator_id=OPERATOR,
        player_id=PLAYER,
        action=action,
        currency=draw(st.sampled_from(("EUR", "EUR", "EUR", "USD"))),
        received_at_ms=0,
        transaction_id=txn,
        reference_transaction_id=reference,
        round_id=draw(st.sampled_from(ROUNDS)),
        game_id="game-1",
        amount=amount,
        round_closed=draw(st.booleans()),
    )


steps = st.lists(
    st.one_of(
        st.tuples(st.just("request"), requests()),
        st.tuples(st.just("request"), requests()),
        st.tuples(
            st.just("wallet"),
            st.integers(0, 20),
            st.sampled_from(WALLET_MODES),
            st.sampled_from(REFUSALS),
        ),
        st.tuples(st.just("deliver"), st.integers(0, 20), st.booleans()),
        st.tuples(st.just("tick"), st.sampled_from(TICKS_MS)),
        st.tuples(st.just("again"), st.integers(0, 40)),
    ),
    max_size=40,
)


SimT = TypeVar("SimT", bound=Sim)


def run(script: list[tuple], start_balance: int) -> Sim:  # type: ignore[type-arg]
    return play(Sim(Wallet(start_balance)), script)


def play(sim: SimT, script: list[tuple]) -> SimT:  # type: ignore[type-arg]
    """Run a script of steps through ``sim`` (any :class:`Sim`), then deliver everything."""
    for position, step in enumerate(script):
        if step[0] == "request":
            sim.request(step[1])
        elif step[0] == "wallet":
            sim.wallet_step(step[1], step[2], step[3])
        elif step[0] == "deliver":
            sim.deliver(step[1], step[2])
        elif step[0] == "again":  # a provider's retry: the same request, a new request id
            if sim.requests:
                original = sim.requests[step[1] % len(sim.requests)]
                again = f"{original.request_id}-again-{position}"
                sim.request(replace(original, request_id=again, correlation_id=again))
        else:
            sim.tick(step[1])
    sim.drain()
    return sim


def play_signed_64(sim: SimT, script: list[tuple]) -> SimT:  # type: ignore[type-arg]
    """:func:`play` with ``sim``'s wallet keeping a 64-bit balance; a script whose wins would
    overflow it is rejected (no wallet can report such a balance to the saga)."""
    sim.wallet.signed_64 = True
    try:
        return play(sim, script)
    except BalanceOverflow:
        reject()


@settings(max_examples=400, deadline=None)
@given(script=steps, start_balance=st.sampled_from((0, 50, 1_000, MAX_AMOUNT)))
def test_money_matches_the_answers(script: list[tuple], start_balance: int) -> None:  # type: ignore[type-arg]
    sim = run(script, start_balance)
    check_against_model(sim, start_balance)


@settings(max_examples=100, deadline=None)
@given(script=steps, start_balance=st.sampled_from((0, 1_000)))
def test_same_inputs_same_outputs(script: list[tuple], start_balance: int) -> None:  # type: ignore[type-arg]
    first, second = run(script, start_balance), run(script, start_balance)
    assert first.answers == second.answers and first.events == second.events
    assert first.sent == second.sent and first.state == second.state


# --- poison pills ------------------------------------------------------------------------------

ANY_IDS = st.sampled_from(("", "b1", "w1", "x1", "a:b", "b1 ", None))
ANY_AMOUNTS = st.one_of(
    st.none(),
    st.sampled_from((0, 1, -1, MAX_AMOUNT, 2**63, -(2**63), 2**64, 10**30)),
    st.integers(),
)


@st.composite
def any_requests(draw: st.DrawFn) -> Request:
    number = next(_numbers)
    return Request(
        request_id=draw(st.sampled_from(("", f"req-{number}", "same"))),
        correlation_id=draw(st.sampled_from(("", f"corr-{number}"))),
        provider_id=draw(st.sampled_from(("", "prov-a", "prov-a:b", "prov-b"))),
        operator_id=OPERATOR,
        player_id=PLAYER,
        action=draw(st.sampled_from(Action)),
        currency=draw(st.sampled_from(("EUR", "USD", ""))),
        received_at_ms=draw(st.integers(-(2**63), 2**63)),
        transaction_id=draw(ANY_IDS),
        reference_transaction_id=draw(ANY_IDS),
        round_id=draw(st.sampled_from(("", "r1", None))),
        game_id=draw(st.sampled_from(("", "g", None))),
        amount=draw(ANY_AMOUNTS),
        round_closed=draw(st.booleans()),
    )


poison_steps = st.lists(
    st.one_of(
        st.tuples(st.just("request"), any_requests()),
        st.tuples(
            st.just("reply"),
            st.integers(0, 30),
            st.sampled_from(ReplyStatus),
            st.one_of(st.none(), st.integers()),
            st.sampled_from(("EUR", "USD", "")),
        ),
        st.tuples(st.just("tick"), st.integers(0, 10**7)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(script=poison_steps)
def test_never_raises_and_settles(script: list[tuple]) -> None:  # type: ignore[type-arg]
    state = PlayerState(OPERATOR, PLAYER)
    now = T0
    sent: list[str] = []

    def feed(message: Message) -> None:
        nonlocal state
        decision = decide(state, message, now, CONFIG)
        state = decision.state
        for output in decision.outputs:
            if isinstance(output, Command):
                assert 0 <= output.amount <= MAX_AMOUNT  # (e)
                sent.append(output.command_id)
            elif isinstance(output, Answer):
                assert isinstance(output.status, Status)  # (e)

    for step in script:
        if step[0] == "request":
            feed(step[1])
        elif step[0] == "reply":
            _, index, status, balance, currency = step
            command_id = sent[index % len(sent)] if sent and index < 25 else f"cmd-{index}"
            feed(Reply(command_id, status, balance, currency, now))
        else:
            now += step[1]
            feed(Tick())
    for _ in range(1_000):  # (g): an acknowledging wallet and the timers settle everything
        if state.pending:
            for command_id in list(state.pending):
                feed(Reply(command_id, ReplyStatus.OK, 0, "EUR", now))
            continue
        due = next_due_ms(state, CONFIG)
        if due is None:
            break
        now = max(now, due)
        feed(Tick())
    assert not state.pending
    assert next_due_ms(state, CONFIG) is None


@settings(max_examples=300, deadline=None)
@given(script=steps, start_balance=st.sampled_from((0, 50, 1_000)))
def test_an_exact_duplicate_gets_the_original_answer(
    script: list[tuple], start_balance: int
) -> None:  # type: ignore[type-arg]
    """Once a bet or win has a final answer (anything but RETRY_LATER), every exact duplicate
    of it is answered the same, whatever happened in between (a rollback, a refund)."""
    sim = run(script, start_balance)
    first: dict[tuple[str, str], tuple[object, ...]] = {}
    final: dict[tuple[str, str], Status] = {}
    for answer in sim.answers:
        request = answer.request
        if invalid(request) or request.action == Action.ROLLBACK:
            continue
        assert request.transaction_id is not None
        key = (request.provider_id, request.transaction_id)
        if content(request) != first.setdefault(key, content(request)):
            continue  # a conflict, not a duplicate
        if key in final:
            assert answer.status == final[key], (key, final[key], answer.status)
        elif answer.status != Status.RETRY_LATER:
            final[key] = answer.status


# --- several owners, one provider's ids -----------------------------------------------------

OWNERS = (("op-1", "pl-1"), ("op-1", "pl-2"), ("op-2", "pl-1"))
"""Two players of one operator, and the first one's player id at another operator."""


@dataclass
class OperatorWallet:
    """What the contract lets an operator's wallet do (design brief, section 4): answer a
    command id it has seen with the reply it gave, whichever of its players it names."""

    replies: dict[str, ReplyStatus] = field(default_factory=dict)


@dataclass
class PlayerWallet(Wallet):
    """One player's money, in the wallet of the player's operator."""

    operator: OperatorWallet = field(default_factory=OperatorWallet)

    def apply(self, command: Command, refusal: ReplyStatus | None = None) -> ReplyStatus:
        seen = self.operator.replies.get(command.command_id)
        if seen is not None:
            return seen
        status = super().apply(command, refusal)
        self.operator.replies[command.command_id] = status
        return status


OWNER_INDEXES = st.sampled_from(range(len(OWNERS)))

shared_steps = st.lists(
    st.one_of(
        # one callback sent for some of the owners, with the same request, transaction and
        # round ids (a provider's ids are its own, not unique across players)
        st.tuples(st.just("request"), requests(), st.sets(OWNER_INDEXES, min_size=1)),
        st.tuples(st.just("request"), requests(), st.just(set(range(len(OWNERS))))),
        st.tuples(
            st.just("wallet"),
            OWNER_INDEXES,
            st.integers(0, 20),
            st.sampled_from(WALLET_MODES),
            st.sampled_from(REFUSALS),
        ),
        st.tuples(st.just("deliver"), OWNER_INDEXES, st.integers(0, 20), st.booleans()),
        st.tuples(st.just("tick"), st.sampled_from(TICKS_MS)),
    ),
    max_size=60,
)


def run_shared(script: list[tuple], start_balance: int) -> list[Sim]:  # type: ignore[type-arg]
    wallets: dict[str, OperatorWallet] = {}
    sims = [
        Sim(
            PlayerWallet(start_balance, operator=wallets.setdefault(op, OperatorWallet())),
            state=PlayerState(op, player),
        )
        for op, player in OWNERS
    ]
    for step in script:
        if step[0] == "request":
            for i in sorted(step[2]):
                op, player = OWNERS[i]
                sims[i].request(replace(step[1], operator_id=op, player_id=player))
        elif step[0] == "wallet":
            sims[step[1]].wallet_step(step[2], step[3], step[4])
        elif step[0] == "deliver":
            sims[step[1]].deliver(step[2], step[3])
        else:
            for sim in sims:
                sim.tick(step[1])
    for sim in sims:
        sim.drain()
    return sims


@settings(max_examples=300, deadline=None)
@given(script=shared_steps, start_balance=st.sampled_from((0, 50, 1_000)))
def test_owners_sharing_provider_ids_are_independent(
    script: list[tuple], start_balance: int
) -> None:  # type: ignore[type-arg]
    """Players (of one operator or two) that receive callbacks with the same ids, against
    wallets that dedupe by command id: every player's money matches the answers that player
    got, as if it were alone; no command or journal event id is shared."""
    sims = run_shared(script, start_balance)
    for sim in sims:
        check_against_model(sim, start_balance)
    event_ids = [e.event_id for sim in sims for e in sim.events]
    assert len(event_ids) == len(set(event_ids)), "the journal dedupes by event id"
    command_ids = [set(sim.sent) for sim in sims]
    for i, mine in enumerate(command_ids):
        for theirs in command_ids[i + 1 :]:
            assert not mine & theirs
