"""Bets refused by a compliance rule (``Request.refusal``, set by ingress): the saga records
them REJECTED with the rule's status, sends no wallet command, answers, and journals
``BetRejected`` with the rule; an exact duplicate gets the same answer; wins and rollbacks
are never refused; every other rejection names its rule too.

Table rows for each case, then a property over many operators, players and providers
sharing transaction ids: whatever the mix of refused and allowed bets, wins, rollbacks and
duplicates, a refused bet is never debited, always answered with its refusal, and every
BetRejected says why."""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from agg_domain.compliance import Refusal
from agg_domain.saga import (
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
    decide,
    demo_key,
    txn_key,
)
from agg_domain.statuses import Action, CommandKind, ReplyStatus, Status
from agg_saga.mapping import event_to_avro, request_from_avro
from agg_saga.state_codec import StateBuilder, state_records

CONFIG = SagaConfig()
T0 = 1_000_000
OPERATOR, PLAYER = "op-1", "pl-1"
MAINTENANCE = Refusal(Status.GAME_NOT_ALLOWED, "provider_maintenance")
COUNTRY = Refusal(Status.GAME_NOT_ALLOWED, "game_restricted_in_country:GB")
CURRENCY = Refusal(Status.CURRENCY_MISMATCH, "game_currency:USD")
MAX_BET = Refusal(Status.LIMIT_EXCEEDED, "max_bet:EUR:500")
RULES = (MAINTENANCE, COUNTRY, CURRENCY, MAX_BET)

_numbers = itertools.count(1)


def req(action: Action, txn: str | None, amount: int | None = None, *, ref: str | None = None,
        refusal: Refusal | None = None, mode: str = "real", operator: str = OPERATOR,
        player: str = PLAYER, provider: str = "prov-a") -> Request:  # fmt: skip
    n = next(_numbers)
    return Request(f"req-{n}", f"corr-{n}", provider, operator, player, action, "EUR", T0,
                   txn, ref, "round-1", "game-1", amount, False, "ingress-1", 0, mode,
                   refusal=refusal)  # fmt: skip


def bet(txn: str = "b1", amount: int = 600, **kw: object) -> Request:
    return req(Action.BET, txn, amount, **kw)  # type: ignore[arg-type]


@dataclass
class Run:
    state: PlayerState = field(default_factory=lambda: PlayerState(OPERATOR, PLAYER))
    now: int = T0
    sent: list[Command] = field(default_factory=list)

    def feed(self, message: Message) -> Decision:
        decision = decide(self.state, message, self.now, CONFIG)
        self.state = decision.state
        self.sent += [o for o in decision.outputs if isinstance(o, Command)]
        return decision

    def reply(self, kind: CommandKind, status: ReplyStatus = ReplyStatus.OK) -> Decision:
        command = next(c for c in reversed(self.sent) if c.kind == kind)
        return self.feed(Reply(command.command_id, status, 1_000, "EUR", self.now))


def answers(d: Decision) -> list[Status]:
    return [o.status for o in d.outputs if isinstance(o, Answer)]


def events(d: Decision) -> list[Event]:
    return [o for o in d.outputs if isinstance(o, Event)]


def commands(d: Decision) -> list[CommandKind]:
    return [o.kind for o in d.outputs if isinstance(o, Command)]


# --- one bet at a time --------------------------------------------------------------------------


def test_a_refused_bet_is_rejected_with_its_rule_and_no_wallet_command() -> None:
    for refusal in RULES:
        run = Run()
        d = run.feed(bet(refusal=refusal))
        assert answers(d) == [refusal.status]
        assert commands(d) == []
        [event] = events(d)
        assert event.name == "BetRejected"
        assert event.fields["status"] == refusal.status.value
        assert event.fields["rule"] == refusal.rule
        assert event.fields["command_id"] is None and event.fields["amount"] == 600
        txn = run.state.txns[txn_key("prov-a", "b1")]
        assert (txn.state, txn.status) == (TxnState.REJECTED, refusal.status)
        assert run.state.pending == {}


def test_an_exact_duplicate_of_a_refused_bet_gets_the_same_answer_and_nothing_else() -> None:
    run = Run()
    run.feed(bet(refusal=MAX_BET))
    for retry in (bet(refusal=MAX_BET), bet(), bet(refusal=MAINTENANCE)):  # rules changed or not
        d = run.feed(retry)
        assert answers(d) == [Status.LIMIT_EXCEEDED]
        assert commands(d) == [] and events(d) == []
    d = run.feed(bet(amount=601))
    assert answers(d) == [Status.DUPLICATE_CONFLICT]
    assert commands(d) == []


def test_an_accepted_bet_repeated_under_a_refusal_keeps_its_answer() -> None:
    run = Run()
    run.feed(bet())
    run.reply(CommandKind.DEBIT)
    d = run.feed(bet(refusal=MAINTENANCE))
    assert answers(d) == [Status.OK] and commands(d) == [] and events(d) == []


def test_a_pending_bet_repeated_under_a_refusal_waits_for_its_debit() -> None:
    run = Run()
    run.feed(bet())
    d = run.feed(bet(refusal=MAINTENANCE))
    assert answers(d) == [] and commands(d) == []
    d = run.reply(CommandKind.DEBIT)
    assert answers(d) == [Status.OK, Status.OK]


def test_a_compensated_bet_retried_under_a_refusal_is_rejected_without_a_new_debit() -> None:
    run = Run()
    run.feed(bet())
    run.now += CONFIG.wallet_timeout_ms
    run.feed(Tick())
    run.reply(CommandKind.CANCEL)
    assert run.state.txns[txn_key("prov-a", "b1")].state == TxnState.COMPENSATED
    d = run.feed(bet(refusal=COUNTRY))
    assert answers(d) == [Status.GAME_NOT_ALLOWED] and commands(d) == []
    [event] = events(d)
    assert (event.name, event.fields["rule"]) == ("BetRejected", COUNTRY.rule)
    assert [c.kind for c in run.sent] == [CommandKind.DEBIT, CommandKind.CANCEL]
    assert answers(run.feed(bet())) == [Status.GAME_NOT_ALLOWED]


def test_a_rollback_of_a_refused_bet_is_an_ok_no_op() -> None:
    run = Run()
    run.feed(bet(refusal=MAX_BET))
    d = run.feed(req(Action.ROLLBACK, "x1", ref="b1"))
    assert answers(d) == [Status.OK] and commands(d) == []
    [event] = events(d)
    assert (event.name, event.fields["bet_known"]) == ("RollbackRecorded", True)


def test_a_bet_on_a_rolled_back_id_says_rolled_back_before_any_rule() -> None:
    run = Run()
    run.feed(req(Action.ROLLBACK, "x1", ref="b1"))
    d = run.feed(bet(refusal=MAX_BET))
    assert answers(d) == [Status.BET_ROLLED_BACK] and commands(d) == []
    [event] = events(d)
    assert (event.fields["status"], event.fields["rule"]) == ("BET_ROLLED_BACK", "rolled_back")


def test_wins_and_rollbacks_are_never_refused() -> None:
    run = Run()
    run.feed(bet())
    run.reply(CommandKind.DEBIT)
    d = run.feed(req(Action.WIN, "w1", 900, refusal=MAINTENANCE))
    assert commands(d) == [CommandKind.CREDIT]
    assert answers(run.reply(CommandKind.CREDIT)) == [Status.OK]
    d = run.feed(req(Action.ROLLBACK, "x1", ref="b1", refusal=COUNTRY))
    assert commands(d) == [CommandKind.CANCEL]
    assert answers(run.reply(CommandKind.CANCEL)) == [Status.OK]


def test_wallet_refusals_name_the_wallets_status() -> None:
    for reply, status in ((ReplyStatus.INSUFFICIENT_FUNDS, Status.INSUFFICIENT_FUNDS),
                          (ReplyStatus.LIMIT_REACHED, Status.LIMIT_EXCEEDED),
                          (ReplyStatus.PLAYER_BLOCKED, Status.PLAYER_BLOCKED)):  # fmt: skip
        run = Run()
        run.feed(bet())
        d = run.reply(CommandKind.DEBIT, reply)
        [event] = events(d)
        assert (event.fields["status"], event.fields["rule"]) == (
            status.value, f"operator_wallet:{reply.value}")  # fmt: skip


def test_a_refusal_that_is_not_a_rules_is_invalid_and_changes_nothing() -> None:
    for refusal in (
        Refusal(Status.OK, "x"),
        Refusal(Status.INVALID_REQUEST, "x"),
        Refusal(Status.RETRY_LATER, "x"),
        Refusal(Status.GAME_NOT_ALLOWED, ""),
    ):
        run = Run()
        d = run.feed(bet(refusal=refusal))
        assert answers(d) == [Status.INVALID_REQUEST]
        assert commands(d) == [] and events(d) == [] and run.state.txns == {}


def test_demo_bets_follow_the_rules_and_name_their_rejections() -> None:
    run = Run()
    d = run.feed(bet(refusal=CURRENCY, mode="demo"))
    assert answers(d) == [Status.CURRENCY_MISMATCH]
    [event] = events(d)
    assert (event.fields["rule"], event.fields["mode"]) == (CURRENCY.rule, "demo")
    assert run.state.txns[demo_key("prov-a", "b1")].state == TxnState.REJECTED
    assert run.state.demo_balances == {}  # nothing moved
    assert answers(run.feed(bet(mode="demo"))) == [Status.CURRENCY_MISMATCH]
    d = run.feed(bet("b2", CONFIG.demo_starting_balance + 1, mode="demo"))
    [event] = events(d)
    assert event.fields["rule"] == "demo_wallet:INSUFFICIENT_FUNDS"


# --- the contract: the request's field, the event's field, the stored state ------------------


def _avro_request(**change: object) -> dict[str, object]:
    base: dict[str, object] = {
        "request_id": "r1", "correlation_id": "c1", "provider_id": "prov-a",
        "operator_id": OPERATOR, "player_id": PLAYER, "action": "BET", "session_token": "t",
        "transaction_id": "b1", "reference_transaction_id": None, "round_id": "round-1",
        "game_id": "game-1", "amount": 600, "currency": "EUR", "round_closed": False,
        "received_at": T0, "reply_to": "i", "reply_partition": 0, "mode": "real",
    }  # fmt: skip
    return {**base, **change}


def test_the_request_field_reads_into_the_refusal() -> None:
    assert request_from_avro(_avro_request()).refusal is None  # written before v4
    assert request_from_avro(_avro_request(refusal=None)).refusal is None
    read = request_from_avro(
        _avro_request(refusal={"status": "LIMIT_EXCEEDED", "rule": "max_bet:EUR:500"})
    )
    assert read.refusal == MAX_BET
    # a status this version does not know is never a debit: the saga answers it invalid
    newer = request_from_avro(_avro_request(refusal={"status": "NEW_STATUS", "rule": "r"}))
    assert newer.refusal == Refusal(Status.INVALID_REQUEST, "r")
    assert answers(Run().feed(newer)) == [Status.INVALID_REQUEST]


def test_bet_rejected_carries_its_rule_to_the_journal_record() -> None:
    d = Run().feed(bet(refusal=COUNTRY))
    [event] = events(d)
    name, record = event_to_avro(event, OPERATOR, PLAYER, T0)
    assert name == "casino.agg.events.BetRejected"
    assert record["rule"] == COUNTRY.rule and record["status"] == "GAME_NOT_ALLOWED"


def test_a_waiting_request_keeps_its_refusal_in_the_stored_state() -> None:
    run = Run()
    old = run.state
    run.feed(bet())
    run.feed(bet(refusal=MAINTENANCE))  # waits on the pending debit, refusal and all
    builder = StateBuilder()
    for key, value in [*state_records(old, run.state, b"op-1:pl-1")]:
        builder.add(key, value)
    rebuilt = builder.states()[b"op-1:pl-1"]
    assert rebuilt == run.state
    waiters = rebuilt.txns[txn_key("prov-a", "b1")].waiters
    assert [w.refusal for w in waiters] == [None, MAINTENANCE]


# --- property: many operators, players and providers --------------------------------------------

OPERATORS = ("op-1", "op-2")
PLAYERS = ("pl-1", "pl-2", "pl-3")
PROVIDERS = ("prov-a", "prov-b")
TXNS = ("t1", "t2", "t3")  # shared by every player and provider: ids are the provider's


@dataclass
class World:
    """Every player's saga and an always-answering wallet per operator."""

    states: dict[tuple[str, str], PlayerState] = field(default_factory=dict)
    balances: dict[tuple[str, str], int] = field(
        default_factory=lambda: defaultdict(lambda: 10_000)
    )
    debited: dict[tuple[str, str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    first_refusal: dict[tuple[str, str, str, str], Refusal | None] = field(default_factory=dict)
    answered: list[tuple[Request, Status]] = field(default_factory=list)
    rejected: list[Event] = field(default_factory=list)
    now: int = T0

    def feed(self, who: tuple[str, str], message: Message) -> None:
        queue = [message]
        while queue:
            state = self.states.get(who) or PlayerState(*who)
            decision = decide(state, queue.pop(0), self.now, CONFIG)
            self.states[who] = decision.state
            for out in decision.outputs:
                if isinstance(out, Answer):
                    self.answered.append((out.request, out.status))
                elif isinstance(out, Event) and out.name == "BetRejected":
                    self.rejected.append(out)
                elif isinstance(out, Command):
                    queue.append(self._wallet(who, out))

    def _wallet(self, who: tuple[str, str], c: Command) -> Reply:
        key = (*who, c.provider_id, c.transaction_id or "")
        if c.kind == CommandKind.DEBIT:
            if self.balances[who] < c.amount:
                return Reply(c.command_id, ReplyStatus.INSUFFICIENT_FUNDS, self.balances[who],
                             c.currency, self.now)  # fmt: skip
            self.balances[who] -= c.amount
            self.debited[key] += c.amount
        elif c.kind == CommandKind.CANCEL:
            self.balances[who] += self.debited.pop(key, 0)
        elif c.kind == CommandKind.CREDIT:
            self.balances[who] += c.amount
        return Reply(c.command_id, ReplyStatus.OK, self.balances[who], c.currency, self.now)


action = st.sampled_from(("bet", "bet", "bet", "win", "rollback"))
step = st.tuples(action, st.sampled_from(OPERATORS), st.sampled_from(PLAYERS),
                 st.sampled_from(PROVIDERS), st.sampled_from(TXNS),
                 st.sampled_from((100, 600, 20_000)),
                 st.sampled_from((None, None, *RULES)))  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(script=st.lists(step, min_size=1, max_size=40))
def test_refused_bets_are_never_debited_and_always_answered_with_their_rule(
    script: list[tuple[str, str, str, str, str, int, Refusal | None]],
) -> None:
    world = World()
    for kind, operator, player, provider, txn, amount, refusal in script:
        who = (operator, player)
        if kind == "bet":
            key = (operator, player, provider, txn)
            world.first_refusal.setdefault(key, refusal)
            message = req(Action.BET, txn, amount, refusal=refusal, operator=operator,
                          player=player, provider=provider)  # fmt: skip
        elif kind == "win":
            message = req(Action.WIN, f"w-{txn}", amount, refusal=refusal, operator=operator,
                          player=player, provider=provider)  # fmt: skip
        else:
            message = req(Action.ROLLBACK, f"x-{txn}", ref=txn, refusal=refusal,
                          operator=operator, player=player, provider=provider)  # fmt: skip
        world.feed(who, message)
        world.now += 1

    for key, refusal in world.first_refusal.items():
        if refusal is not None:
            assert world.debited.get(key, 0) == 0, f"refused bet {key} was debited"
    first_answer: dict[tuple[str, str, str, str], Status] = {}
    for request, status in world.answered:
        if request.action is not Action.BET:
            assert status not in (Status.GAME_NOT_ALLOWED, Status.CURRENCY_MISMATCH)
            continue
        key = (request.operator_id, request.player_id, request.provider_id,
               request.transaction_id or "")  # fmt: skip
        refusal = world.first_refusal[key]
        if status is Status.DUPLICATE_CONFLICT:
            continue
        first = first_answer.setdefault(key, status)
        assert status == first, "an exact duplicate gets the original answer"
        if refusal is not None and status is not Status.BET_ROLLED_BACK:
            assert status == refusal.status
    for event in world.rejected:
        assert event.fields["rule"], f"a BetRejected without its rule: {event}"
    # no refused bet moved money: what the wallet holds is what the accepted bets imply
    for who, state in world.states.items():
        accepted = sum(t.amount for t in state.txns.values()
                       if t.action is Action.BET and t.state == TxnState.ACCEPTED)  # fmt: skip
        credited = sum(t.amount for t in state.txns.values()
                       if t.action is Action.WIN and t.state == TxnState.ACCEPTED)  # fmt: skip
        assert world.balances[who] == 10_000 - accepted + credited


def test_the_property_meets_every_rule_across_players() -> None:
    """A fixed script where the same transaction id is refused for one player, accepted for
    another, and refused by another rule at another provider."""
    world = World()
    plan = [
        (("op-1", "pl-1"), "prov-a", MAX_BET),
        (("op-1", "pl-2"), "prov-a", None),
        (("op-2", "pl-1"), "prov-a", COUNTRY),
        (("op-1", "pl-1"), "prov-b", CURRENCY),
    ]
    for who, provider, refusal in plan:
        world.feed(who, req(Action.BET, "t1", 600, refusal=refusal, operator=who[0],
                            player=who[1], provider=provider))  # fmt: skip
    assert [s for _, s in world.answered] == [
        Status.LIMIT_EXCEEDED,
        Status.OK,
        Status.GAME_NOT_ALLOWED,
        Status.CURRENCY_MISMATCH,
    ]
    assert [e.fields["rule"] for e in world.rejected] == [MAX_BET.rule, COUNTRY.rule,
                                                           CURRENCY.rule]  # fmt: skip
    assert world.balances[("op-1", "pl-2")] == 10_000 - 600
    assert world.balances[("op-1", "pl-1")] == world.balances[("op-2", "pl-1")] == 10_000


def test_transfer_wallet_bets_follow_the_rules_against_the_held_balance() -> None:
    from dataclasses import replace

    run = Run()
    d = run.feed(replace(bet(refusal=MAX_BET), wallet="transfer"))
    assert answers(d) == [Status.LIMIT_EXCEEDED] and commands(d) == []
    [event] = events(d)
    assert (event.name, event.fields["rule"]) == ("BetRejected", MAX_BET.rule)
    assert answers(run.feed(replace(bet(), wallet="transfer"))) == [Status.LIMIT_EXCEEDED]
    d = run.feed(replace(bet("b2"), wallet="transfer"))  # nothing deposited: refused by funds
    [event] = events(d)
    assert (event.fields["status"], event.fields["rule"]) == (
        "INSUFFICIENT_FUNDS", "transfer_wallet:INSUFFICIENT_FUNDS")  # fmt: skip
    assert commands(d) == []
