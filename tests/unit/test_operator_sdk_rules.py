"""The operator SDK's rules without I/O (:mod:`agg_operator_sdk.rules`): one row per case, in
the order of the rule table, with the boundary amounts; and properties over any facts."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agg_operator_sdk import CommandKind, Effect, Facts, Recorded, ReplyStatus, WalletCommand
from agg_operator_sdk.rules import AMOUNT_MAX, Outcome, decide, problem_of

OP = "op-1"
MAX = AMOUNT_MAX
OK, ERROR, NSF, UNKNOWN = (ReplyStatus.OK, ReplyStatus.ERROR, ReplyStatus.INSUFFICIENT_FUNDS,
                           ReplyStatus.UNKNOWN_PLAYER)  # fmt: skip
DEBIT, CREDIT, CANCEL, BALANCE = (CommandKind.DEBIT, CommandKind.CREDIT, CommandKind.CANCEL,
                                  CommandKind.BALANCE)  # fmt: skip


def command(kind: CommandKind, amount: int = 0, *, reference: str | None = None,
            currency: str = "EUR") -> WalletCommand:  # fmt: skip
    return WalletCommand(
        command_id="cmd-1",
        correlation_id="corr-1",
        operator_id=OP,
        player_id="alice",
        kind=kind,
        amount=amount,
        currency=currency,
        provider_id="prov-a",
        transaction_id="t-1",
        round_id="r-1",
        game_id="g-1",
        reference_command_id=reference if reference or kind is not CANCEL else "cmd-0",
        issued_at=datetime(2030, 1, 1, tzinfo=UTC),
    )


def debited(amount: int, currency: str = "EUR") -> Recorded:
    return Recorded(DEBIT, amount, currency, Effect.DEBITED)


# (command, facts, (effect, status, delta, balance))
TABLE = [
    # no account, none opened
    (command(DEBIT, 10), Facts(None), (Effect.UNKNOWN, UNKNOWN, 0, None)),
    (command(BALANCE), Facts(None), (Effect.UNKNOWN, UNKNOWN, 0, None)),
    # DEBIT: cancelled first, then the balance boundary
    (command(DEBIT, 10), Facts(100, cancelled_before=True), (Effect.REFUSED, ERROR, 0, 100)),
    (command(DEBIT, 101), Facts(100), (Effect.INSUFFICIENT, NSF, 0, 100)),
    (command(DEBIT, 100), Facts(100), (Effect.DEBITED, OK, -100, 0)),
    (command(DEBIT, 1), Facts(100), (Effect.DEBITED, OK, -1, 99)),
    (command(DEBIT, MAX), Facts(MAX), (Effect.DEBITED, OK, -MAX, 0)),
    (command(DEBIT, 1), Facts(0), (Effect.INSUFFICIENT, NSF, 0, 0)),
    # CREDIT: up to the largest balance, no further
    (command(CREDIT, 0), Facts(100), (Effect.CREDITED, OK, 0, 100)),
    (command(CREDIT, 5), Facts(100), (Effect.CREDITED, OK, 5, 105)),
    (command(CREDIT, MAX - 100), Facts(100), (Effect.CREDITED, OK, MAX - 100, MAX)),
    (command(CREDIT, MAX - 99), Facts(100), (Effect.INVALID, ERROR, 0, 100)),
    # CANCEL: unknown debit, not a debit, another currency, refused or refunded, refund
    (command(CANCEL), Facts(100), (Effect.TOMBSTONE, OK, 0, 100)),
    (command(CANCEL), Facts(100, referenced=Recorded(CREDIT, 5, "EUR", Effect.CREDITED)),
     (Effect.INVALID, ERROR, 0, 100)),
    (command(CANCEL), Facts(100, referenced=debited(5, "USD")), (Effect.INVALID, ERROR, 0, 100)),
    (command(CANCEL), Facts(100, referenced=Recorded(DEBIT, 500, "EUR", Effect.INSUFFICIENT)),
     (Effect.NOOP, OK, 0, 100)),
    (command(CANCEL), Facts(100, referenced=Recorded(DEBIT, 5, "EUR", Effect.REFUSED)),
     (Effect.NOOP, OK, 0, 100)),
    (command(CANCEL), Facts(100, referenced=debited(5), refunded=True), (Effect.NOOP, OK, 0, 100)),
    (command(CANCEL), Facts(95, referenced=debited(5)), (Effect.REFUNDED, OK, 5, 100)),
    (command(CANCEL), Facts(MAX - 4, referenced=debited(5)), (Effect.INVALID, ERROR, 0, MAX - 4)),
    (command(CANCEL), Facts(MAX - 5, referenced=debited(5)), (Effect.REFUNDED, OK, 5, MAX)),
    # BALANCE
    (command(BALANCE), Facts(0), (Effect.BALANCE, OK, 0, 0)),
    (command(BALANCE), Facts(MAX), (Effect.BALANCE, OK, 0, MAX)),
]  # fmt: skip


@pytest.mark.parametrize(("c", "facts", "expected"), TABLE, ids=[
    f"{c.kind.value}-{c.amount}-{i}" for i, (c, _, _) in enumerate(TABLE)])  # fmt: skip
def test_the_rule_table(
    c: WalletCommand, facts: Facts, expected: tuple[Effect, ReplyStatus, int, int | None]
) -> None:
    assert problem_of(c, OP, c.key) is None
    outcome = decide(c, facts)
    assert (outcome.effect, outcome.status, outcome.delta, outcome.balance) == expected
    assert (outcome.reason is None) == (outcome.status in (OK, NSF))


PROBLEMS = [
    (command(DEBIT, 10), b"op-1:bob", "key is not operator_id:player_id"),
    (replace(command(DEBIT, 10), operator_id="op-2"), b"op-2:alice",
     "operator_id 'op-2' on the topic of 'op-1'"),
    (replace(command(DEBIT, 10), command_id=""), None, "command_id is empty or too long"),
    (replace(command(DEBIT, 10), command_id="c" * 201), None, "command_id is empty or too long"),
    (replace(command(DEBIT, 10), player_id=""), None, "player_id is empty or too long"),
    (command(CommandKind.UNKNOWN, 10), None, "unknown kind"),
    (command(DEBIT, 10, currency="eur"), None, "currency 'eur' is not three upper-case letters"),
    (command(DEBIT, 10, currency="EURO"), None, "currency 'EURO' is not three upper-case letters"),
    (command(DEBIT, -1), None, "amount -1 out of range"),
    (command(CREDIT, -1), None, "amount -1 out of range"),
    (command(DEBIT, 0), None, "a DEBIT needs a positive amount"),
    (command(CANCEL, reference="cmd-1"), None,
     "a CANCEL needs the reference_command_id of another command"),
    (replace(command(CANCEL), reference_command_id=None), None,
     "a CANCEL needs the reference_command_id of another command"),
]  # fmt: skip


@pytest.mark.parametrize(("c", "key", "problem"), PROBLEMS, ids=[p for _, _, p in PROBLEMS])
def test_malformed_commands_are_named(c: WalletCommand, key: bytes | None, problem: str) -> None:
    assert problem_of(c, OP, key) == problem


def test_the_boundaries_are_well_formed() -> None:
    for c in (command(DEBIT, 1), command(DEBIT, MAX), command(CREDIT, 0), command(BALANCE),
              replace(command(DEBIT, 1), command_id="c" * 200)):  # fmt: skip
        assert problem_of(c, OP, c.key) is None, c


@given(
    kind=st.sampled_from([DEBIT, CREDIT, CANCEL, BALANCE]),
    amount=st.integers(min_value=1, max_value=MAX),
    balance=st.none() | st.integers(min_value=0, max_value=MAX),
    referenced=st.none() | st.builds(
        Recorded, st.sampled_from([DEBIT, CREDIT]), st.integers(min_value=1, max_value=MAX),
        st.sampled_from(["EUR", "USD"]), st.sampled_from(Effect)),
    cancelled_before=st.booleans(),
    refunded=st.booleans(),
)  # fmt: skip
def test_the_balance_stays_within_a_long_and_only_ok_moves_money(
    kind: CommandKind,
    amount: int,
    balance: int | None,
    referenced: Recorded | None,
    cancelled_before: bool,
    refunded: bool,
) -> None:
    facts = Facts(balance, cancelled_before, referenced, refunded)
    outcome: Outcome = decide(command(kind, amount), facts)
    if outcome.delta:
        assert balance is not None and outcome.status is OK
        assert 0 <= balance + outcome.delta <= MAX
        assert outcome.balance == balance + outcome.delta
    else:
        assert outcome.balance == balance
    if kind is DEBIT and outcome.effect is Effect.DEBITED:
        assert not cancelled_before and outcome.delta == -amount
    if kind is CANCEL and outcome.effect is Effect.REFUNDED:
        assert referenced is not None and not refunded and outcome.delta == referenced.amount
