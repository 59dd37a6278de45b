"""Property-based tests of transfer wallets in the saga decider: many operators (transfer and
seamless), players and providers at once, receiving deposits, withdrawals (of an amount or of
everything), bets, wins, rollbacks (also before their bet), exact and conflicting duplicates,
with the same provider and transfer ids across players and operators.

Checked against a model built from the answers alone: a transfer-wallet player's held balance
is the OK deposits less the OK withdrawals (the amounts they answered) less the first OK
answer of each bet plus each win plus each refund; it never goes negative; every answer
carries the balance as it stands; an exact duplicate gets the original answer; no wallet
command ever leaves for a transfer-wallet operator; the journal folds to the same balance and
no event id is shared between players."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from agg_domain.saga import (
    MAX_AMOUNT,
    SEAMLESS,
    TRANSFER,
    Answer,
    Command,
    Event,
    PlayerState,
    Request,
    SagaConfig,
    decide,
)
from agg_domain.statuses import Action, Status

CONFIG = SagaConfig()
T0 = 1_000_000
OWNERS = (
    ("op-t1", "pl-1", TRANSFER),
    ("op-t1", "pl-2", TRANSFER),
    ("op-t2", "pl-1", TRANSFER),
    ("op-s", "pl-1", SEAMLESS),
)
"""Two players of a transfer operator, the first one's id at another transfer operator, and
the same id at a seamless operator (whose deposits are refused as invalid)."""
PROVIDERS = ("prov-a", "prov-b")
TXN_IDS = ("t1", "t2", "t3")
ROUNDS = ("r1", "r2")
AMOUNTS = (1, 5, 100, 1_000, MAX_AMOUNT)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    action = draw(st.sampled_from((Action.DEPOSIT, Action.DEPOSIT, Action.WITHDRAW,
                                   Action.BET, Action.BET, Action.WIN, Action.ROLLBACK,
                                   Action.BALANCE)))  # fmt: skip
    transfer = action in (Action.DEPOSIT, Action.WITHDRAW)
    amount: int | None = draw(st.sampled_from(AMOUNTS))
    if action == Action.WITHDRAW and draw(st.booleans()):
        amount = None  # everything
    if action == Action.WIN:
        amount = draw(st.sampled_from((0, *AMOUNTS)))
    if action in (Action.ROLLBACK, Action.BALANCE):
        amount = None
    txn = draw(st.sampled_from(TXN_IDS))
    return Request(
        request_id=f"rq-{draw(st.integers(0, 5))}",
        correlation_id="c",
        provider_id="" if transfer else draw(st.sampled_from(PROVIDERS)),
        operator_id="",
        player_id="",
        action=action,
        currency=draw(st.sampled_from(("EUR", "EUR", "USD"))),
        received_at_ms=T0,
        transaction_id=None if action == Action.BALANCE else txn,
        reference_transaction_id=(
            draw(st.sampled_from(TXN_IDS)) if action == Action.ROLLBACK else None
        ),
        round_id=None if transfer else draw(st.sampled_from(ROUNDS)),
        game_id=None if transfer else "g1",
        amount=amount,
    )


@dataclass
class Player:
    operator: str
    player: str
    wallet: str
    state: PlayerState
    now: int = T0
    answers: dict[tuple[str, str, str], list[Answer]] = field(default_factory=dict)
    """(action, provider, transaction) -> every answer, in order."""
    events: list[Event] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    model: Counter[str] = field(default_factory=Counter)
    """Expected held balance per currency, from the answers."""
    accepted_bets: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    refunded: set[tuple[str, str]] = field(default_factory=set)

    def send(self, template: Request) -> None:
        request = Request(**{**template.__dict__, "operator_id": self.operator,
                             "player_id": self.player, "wallet": self.wallet})  # fmt: skip
        self.now += 7
        decision = decide(self.state, request, self.now, CONFIG)
        self.state = decision.state
        answers = [o for o in decision.outputs if isinstance(o, Answer)]
        self.events += [o for o in decision.outputs if isinstance(o, Event)]
        self.commands += [o for o in decision.outputs if isinstance(o, Command)]
        if self.wallet == SEAMLESS:
            return
        assert len(answers) == 1, "a transfer wallet answers at once"
        answer = answers[0]
        held = self.state.transfer_balances.get(request.currency, 0)
        assert held >= 0
        if request.action == Action.BALANCE:
            assert answer.balance == held
            return
        assert request.transaction_id is not None
        key = (request.action.value, request.provider_id, request.transaction_id)
        earlier = self.answers.setdefault(key, [])
        first = earlier[0] if earlier else None
        earlier.append(answer)
        if first is None and answer.status != Status.INVALID_REQUEST:
            # a decision's answer carries the balance it left (a repeat: the original one)
            assert answer.balance == held, "a first answer carries the held balance"
        self._account(request, answer, first)

    def _account(self, request: Request, answer: Answer, first: Answer | None) -> None:
        cur = request.currency
        if first is not None and first.status == Status.OK and answer.status == Status.OK:
            assert (answer.balance, answer.amount) != (None, None)
            if first.request == answer.request or _same(first.request, request):
                assert answer.amount == first.amount, "a repeat moves nothing again"
                assert answer.balance == first.balance, "a repeat gets the original answer"
            return
        if answer.status != Status.OK:
            return
        if request.action == Action.DEPOSIT:
            assert answer.amount == request.amount
            self.model[cur] += answer.amount or 0
        elif request.action == Action.WITHDRAW:
            assert answer.amount is not None and answer.amount >= 0
            if request.amount is not None:
                assert answer.amount == request.amount
            self.model[cur] -= answer.amount
        elif request.action == Action.BET:
            assert request.amount is not None and request.transaction_id is not None
            bet = (request.provider_id, request.transaction_id)
            self.accepted_bets[bet] = (cur, request.amount)
            self.model[cur] -= request.amount
        elif request.action == Action.WIN:
            self.model[cur] += request.amount or 0
        elif request.action == Action.ROLLBACK:
            assert request.reference_transaction_id is not None
            bet = (request.provider_id, request.reference_transaction_id)
            if bet in self.accepted_bets and bet not in self.refunded:
                self.refunded.add(bet)
                bet_cur, amount = self.accepted_bets[bet]
                self.model[bet_cur] += amount


def _same(a: Request, b: Request) -> bool:
    return (a.action, a.amount, a.currency, a.round_id, a.reference_transaction_id) == (
        b.action, b.amount, b.currency, b.round_id, b.reference_transaction_id)  # fmt: skip


def journal_fold(events: list[Event]) -> Counter[str]:
    held: Counter[str] = Counter()
    for e in events:
        amount = int(e.fields.get("amount", 0))  # type: ignore[call-overload]
        cur = str(e.fields.get("currency"))
        if e.name == "FundsTransferred":
            held[cur] += amount if e.fields["direction"] == "IN" else -amount
        elif e.fields.get("wallet") == TRANSFER:
            held[cur] += -amount if e.name == "BetAccepted" else amount
    return held


OWNER_SETS = st.sets(st.sampled_from(range(len(OWNERS))), min_size=1)


@settings(max_examples=400, deadline=None)
@given(script=st.lists(st.tuples(requests(), OWNER_SETS), max_size=60))
def test_held_balances_match_the_answers(script: list[tuple[Request, set[int]]]) -> None:
    players = [Player(op, pl, wallet, PlayerState(op, pl)) for op, pl, wallet in OWNERS]
    for request, owners in script:
        for i in sorted(owners):
            players[i].send(request)
    event_ids: list[str] = []
    for p in players:
        event_ids += {e.event_id for e in p.events}  # a repeated refusal is the same event
        if p.wallet == SEAMLESS:
            assert not any(e.name == "FundsTransferred" for e in p.events)
            assert all(c.transaction_id not in ("",) for c in p.commands)
            continue
        assert not p.commands, "no wallet command for a transfer-wallet operator"
        held = {c: b for c, b in p.state.transfer_balances.items() if b}
        assert held == {c: b for c, b in p.model.items() if b}, "held balance = the answers"
        assert {c: b for c, b in journal_fold(p.events).items() if b} == held
        assert p.state.balance is None, "the operator's balance is never touched"
    assert len(event_ids) == len(set(event_ids)), "no event id is shared between players"


def test_a_withdrawal_of_everything_takes_the_balance_and_repeats_exactly() -> None:
    p = Player("op-t1", "pl-1", TRANSFER, PlayerState("op-t1", "pl-1"))
    base = Request("rq", "c", "", "", "", Action.DEPOSIT, "EUR", T0, transaction_id="d1",
                   amount=700)  # fmt: skip
    p.send(base)
    p.send(Request("rq2", "c", "prov-a", "", "", Action.BET, "EUR", T0, transaction_id="b1",
                   round_id="r1", game_id="g1", amount=200))  # fmt: skip
    everything = Request("rq3", "c", "", "", "", Action.WITHDRAW, "EUR", T0,
                         transaction_id="w1")  # fmt: skip
    p.send(everything)
    p.send(everything)
    first, again = p.answers[("WITHDRAW", "", "w1")]
    assert (first.status, first.amount, first.balance) == (Status.OK, 500, 0)
    assert (again.status, again.amount, again.balance) == (Status.OK, 500, 0)
    p.send(Request("rq4", "c", "", "", "", Action.WITHDRAW, "EUR", T0, transaction_id="w1",
                   amount=500))  # fmt: skip
    conflict = p.answers[("WITHDRAW", "", "w1")][-1]
    assert conflict.status == Status.DUPLICATE_CONFLICT
    p.send(Request("rq5", "c", "", "", "", Action.WITHDRAW, "EUR", T0, transaction_id="w2",
                   amount=1))  # fmt: skip
    assert p.answers[("WITHDRAW", "", "w2")][0].status == Status.INSUFFICIENT_FUNDS
    names = [e.name for e in p.events]
    assert names == ["FundsTransferred", "BetAccepted", "FundsTransferred",
                     "DuplicateConflictDetected", "TransferRejected"]  # fmt: skip


def test_a_bet_beyond_the_held_balance_is_refused_and_a_seamless_deposit_is_invalid() -> None:
    p = Player("op-t1", "pl-1", TRANSFER, PlayerState("op-t1", "pl-1"))
    p.send(Request("rq", "c", "prov-a", "", "", Action.BET, "EUR", T0, transaction_id="b1",
                   round_id="r1", game_id="g1", amount=1))  # fmt: skip
    assert p.answers[("BET", "prov-a", "b1")][0].status == Status.INSUFFICIENT_FUNDS
    s = Player("op-s", "pl-1", SEAMLESS, PlayerState("op-s", "pl-1"))
    decision = decide(s.state, Request("rq", "c", "", "op-s", "pl-1", Action.DEPOSIT, "EUR", T0,
                                       transaction_id="d1", amount=5), T0, CONFIG)  # fmt: skip
    (answer,) = decision.outputs
    assert isinstance(answer, Answer) and answer.status == Status.INVALID_REQUEST
    assert decision.state.transfer_balances == {}


def test_a_rollback_naming_another_currency_refunds_the_stake_in_the_bets() -> None:
    """The stake goes back where it came from: a rollback in USD of a EUR bet refunds EUR
    (it once set the EUR balance to the USD balance plus the stake)."""
    p = Player("op-t1", "pl-1", TRANSFER, PlayerState("op-t1", "pl-1"))
    p.send(Request("rq-1", "c", "", "", "", Action.DEPOSIT, "EUR", T0, transaction_id="d1",
                   amount=1_000))  # fmt: skip
    p.send(Request("rq-2", "c", "prov-a", "", "", Action.BET, "EUR", T0, transaction_id="b1",
                   round_id="r1", game_id="g1", amount=100))  # fmt: skip
    p.send(Request("rq-3", "c", "prov-a", "", "", Action.ROLLBACK, "USD", T0,
                   transaction_id="rb1", reference_transaction_id="b1", round_id="r1"))  # fmt: skip
    assert p.state.transfer_balances == {"EUR": 1_000}
    [rollback] = p.answers[("ROLLBACK", "prov-a", "rb1")]
    assert (rollback.status, rollback.balance, rollback.currency) == (Status.OK, 0, "USD")
    refunded = [e for e in p.events if e.name == "BetRolledBack"]
    assert [(e.fields["currency"], e.fields["balance"]) for e in refunded] == [("EUR", 1_000)]
