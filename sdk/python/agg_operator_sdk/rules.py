"""The rules a Kafka-native operator wallet follows, without I/O: what one command does to a
player's balance and what its reply says.

:func:`problem_of` says whether a command is malformed; :func:`decide` is the default rule
table. The :class:`~agg_operator_sdk.ledger.Ledger` gathers the :class:`Facts` a command needs
from the database, calls the rules (these, or an operator's own function with the same
signature: :data:`Rules`), checks the outcome keeps the balance within 0..2^63-1, and records
it. Both functions are deterministic given their arguments.

The default table (the reference wallet's, ``services/agg_wallet/README.md``):

=======  ================  ====================================================  ==================
kind     effect            when                                                  status
=======  ================  ====================================================  ==================
any      ``unknown``       no account, and none is opened on first use           UNKNOWN_PLAYER
any      ``invalid``       malformed (:func:`problem_of`), nothing moves         ERROR
DEBIT    ``refused``       a CANCEL of this command id came first                ERROR
DEBIT    ``insufficient``  balance < amount, nothing moves                       INSUFFICIENT_FUNDS
DEBIT    ``debited``       balance -= amount                                     OK
CREDIT   ``credited``      balance += amount (``invalid`` if it would overflow)  OK
CANCEL   ``tombstone``     this player has no command under the reference:       OK
                           remembered, so the debit is refused if it comes later
CANCEL   ``invalid``       the reference is not a DEBIT, or in another currency  ERROR
CANCEL   ``noop``          the debit was refused, or already refunded            OK
CANCEL   ``refunded``      balance += the debit's amount (once)                  OK
BALANCE  ``balance``       the balance                                           OK
=======  ================  ====================================================  ==================

Two rules make a CANCEL safe to send at any time, which the saga relies on (it compensates a
debit that timed out without knowing whether it was applied): a CANCEL refunds at most once,
and a CANCEL of a debit not seen yet leaves a tombstone that refuses the debit when it arrives
(a debit arriving after its cancel must not take the money the saga has told the provider was
never taken). A balance never goes negative: a debit above the balance is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from agg_operator_sdk.wire import (
    CURRENCY_PATTERN,
    LONG_MAX,
    CommandKind,
    ReplyStatus,
    WalletCommand,
)

AMOUNT_MAX = LONG_MAX
"""Largest amount and balance: a signed 64-bit integer (Avro ``long``, Postgres ``bigint``)."""
ID_LENGTH_MAX = 200
"""Longest id accepted (command, player, reference); the aggregator's ids are far shorter."""


class Effect(StrEnum):
    """What a command did (stored with it in the ledger)."""

    DEBITED = "debited"
    INSUFFICIENT = "insufficient"
    REFUSED = "refused"
    CREDITED = "credited"
    REFUNDED = "refunded"
    NOOP = "noop"
    TOMBSTONE = "tombstone"
    BALANCE = "balance"
    UNKNOWN = "unknown"
    INVALID = "invalid"


@dataclass(frozen=True)
class Recorded:
    """A command this player already has in the ledger, as a CANCEL's facts name it."""

    kind: CommandKind
    amount: int
    currency: str
    effect: Effect


@dataclass(frozen=True)
class Facts:
    """What the ledger knows that one command's outcome depends on."""

    balance: int | None
    """The player's balance in the command's currency; None if the player has no account in
    it (and the ledger opens none on first use)."""
    cancelled_before: bool = False
    """DEBIT: a CANCEL naming this command id is recorded for this player (and was not
    malformed)."""
    referenced: Recorded | None = None
    """CANCEL: the command recorded for this player under ``reference_command_id``."""
    refunded: bool = False
    """CANCEL: an earlier CANCEL already refunded that debit."""


@dataclass(frozen=True)
class Outcome:
    """A command's effect and its reply's status and balance."""

    effect: Effect
    status: ReplyStatus
    delta: int
    """Change of the balance in minor units: negative for a debit, 0 if nothing moved."""
    balance: int | None
    """The reply's balance (after the command), where known."""
    reason: str | None = None
    """Why the command was not applied, for logs and the ledger row."""


Rules = Callable[[WalletCommand, Facts], Outcome]
"""The signature of a rule table: :func:`decide`, or an operator's own (limits, blocked
players, bonus money). It must be pure and keep ``0 <= balance + delta <= AMOUNT_MAX``; the
ledger refuses to record an outcome that does not."""


def problem_of(command: WalletCommand, operator_id: str, key: bytes | None) -> str | None:
    """Why ``command``, read with ``key`` from ``operator_id``'s commands topic, is malformed,
    or None. The aggregator checks all this before it sends; a wallet checks again because
    money invariants are checked where they are produced and where they are consumed."""
    if not command.command_id or len(command.command_id) > ID_LENGTH_MAX:
        return "command_id is empty or too long"
    if command.operator_id != operator_id:
        return f"operator_id {command.operator_id!r} on the topic of {operator_id!r}"
    if not command.player_id or len(command.player_id) > ID_LENGTH_MAX:
        return "player_id is empty or too long"
    if key is not None and key != command.key:
        return "key is not operator_id:player_id"
    if command.kind is CommandKind.UNKNOWN:
        return "unknown kind"
    if not CURRENCY_PATTERN.match(command.currency):
        return f"currency {command.currency!r} is not three upper-case letters"
    if not 0 <= command.amount <= AMOUNT_MAX:
        return f"amount {command.amount} out of range"
    if command.kind is CommandKind.DEBIT and command.amount == 0:
        return "a DEBIT needs a positive amount"
    if command.kind is CommandKind.CANCEL:
        ref = command.reference_command_id
        if not ref or len(ref) > ID_LENGTH_MAX or ref == command.command_id:
            return "a CANCEL needs the reference_command_id of another command"
    return None


def decide(command: WalletCommand, facts: Facts) -> Outcome:
    """The default rules for a well-formed command (:func:`problem_of` returned None)."""
    balance = facts.balance
    if balance is None:
        return Outcome(Effect.UNKNOWN, ReplyStatus.UNKNOWN_PLAYER, 0, None, "no account")
    kind = command.kind
    if kind is CommandKind.BALANCE:
        return Outcome(Effect.BALANCE, ReplyStatus.OK, 0, balance)
    if kind is CommandKind.CREDIT:
        if balance > AMOUNT_MAX - command.amount:
            return _error(balance, "balance would overflow")
        return Outcome(Effect.CREDITED, ReplyStatus.OK, command.amount, balance + command.amount)
    if kind is CommandKind.DEBIT:
        if facts.cancelled_before:
            return Outcome(
                Effect.REFUSED, ReplyStatus.ERROR, 0, balance, "debit was cancelled before"
            )
        if balance < command.amount:
            return Outcome(Effect.INSUFFICIENT, ReplyStatus.INSUFFICIENT_FUNDS, 0, balance)
        return Outcome(Effect.DEBITED, ReplyStatus.OK, -command.amount, balance - command.amount)
    if kind is CommandKind.CANCEL:
        debit = facts.referenced
        if debit is None:
            return Outcome(Effect.TOMBSTONE, ReplyStatus.OK, 0, balance)
        if debit.kind is not CommandKind.DEBIT:
            return _error(balance, "reference_command_id is not a DEBIT of this player")
        if debit.currency != command.currency:
            return _error(balance, f"the debit is in {debit.currency}, the cancel in "
                                   f"{command.currency}")  # fmt: skip
        if debit.effect is not Effect.DEBITED or facts.refunded:
            return Outcome(Effect.NOOP, ReplyStatus.OK, 0, balance)
        if balance > AMOUNT_MAX - debit.amount:
            return _error(balance, "balance would overflow")
        return Outcome(Effect.REFUNDED, ReplyStatus.OK, debit.amount, balance + debit.amount)
    return _error(balance, f"unknown kind {kind!r}")


def invalid(reason: str) -> Outcome:
    """The outcome of a malformed command: ERROR, nothing moves."""
    return Outcome(Effect.INVALID, ReplyStatus.ERROR, 0, None, reason)


def _error(balance: int, reason: str) -> Outcome:
    return Outcome(Effect.INVALID, ReplyStatus.ERROR, 0, balance, reason)
