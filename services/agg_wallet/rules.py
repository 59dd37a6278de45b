"""The wallet's rules, without I/O: what one command does to a player's balance and what
the reply says.

:class:`Book` holds the part of the ledger a batch needs (balances of its players, the
commands it names, the cancels that reference its debits), applies the batch's commands in
order, and collects the new ledger entries and balances for :mod:`agg_wallet.store` to write
in one transaction. Everything here is deterministic given the book and ``now``.

The contract (design brief, section 4): a repeated ``command_id`` is the same command and
gets the same reply. So every command that reaches the book is recorded with its reply
(refusals and malformed commands too) and a repeat is answered from that record. A command id
belongs to the player it was first recorded for: the same id for another player, or naming
another operator than the ledger's, is not a repeat but a defect upstream (ids that leave
their owner out). It is refused with ERROR and recorded nowhere, and the asking player never
sees the stored reply, which carries another player's balance (``Decision.foreign``).

Outcomes of a command, as ``Effect`` (stored in ``wallet.commands.effect``):

============  =======================  =====================================================
kind          effect                   when
============  =======================  =====================================================
DEBIT         ``debited``              balance >= amount; balance -= amount, OK
DEBIT         ``insufficient``         balance < amount; nothing moves, INSUFFICIENT_FUNDS
DEBIT         ``refused``              a CANCEL of this id came first; nothing moves, ERROR
CREDIT        ``credited``             balance += amount, OK
CANCEL        ``refunded``             the debit was applied and not yet cancelled; refund, OK
CANCEL        ``noop``                 the debit was refused, or already cancelled; OK
CANCEL        ``tombstone``            this player has no command under the debit's id:
                                       remembered, so that it is refused if it arrives
                                       later; OK
BALANCE       ``balance``              OK with the balance
any           ``invalid``              malformed command (bad amount, currency, kind, ...);
                                       nothing moves, ERROR
any           (not recorded)           the id is recorded for another player, or the command
                                       names another operator: nothing moves, ERROR without
                                       a balance (``Decision.foreign``)
============  =======================  =====================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

AMOUNT_MAX = 2**63 - 1
"""Largest amount and balance: a signed 64-bit integer (Avro ``long``, Postgres ``bigint``)."""

CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}$")
ID_LENGTH_MAX = 200
"""Longest id accepted (command, player, reference); the saga's ids are far shorter."""


class Kind(StrEnum):
    DEBIT = "DEBIT"
    CREDIT = "CREDIT"
    CANCEL = "CANCEL"
    BALANCE = "BALANCE"


class Status(StrEnum):
    """The reply statuses this wallet uses (a subset of ``casino.agg.WalletReplyStatus``)."""

    OK = "OK"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    ERROR = "ERROR"


class Effect(StrEnum):
    DEBITED = "debited"
    INSUFFICIENT = "insufficient"
    REFUSED = "refused"
    CREDITED = "credited"
    REFUNDED = "refunded"
    NOOP = "noop"
    TOMBSTONE = "tombstone"
    BALANCE = "balance"
    INVALID = "invalid"


@dataclass(frozen=True)
class Command:
    """A decoded ``casino.agg.WalletCommand`` (fields as in the schema)."""

    command_id: str
    correlation_id: str
    operator_id: str
    player_id: str
    kind: str
    amount: int
    currency: str
    provider_id: str
    transaction_id: str | None
    round_id: str | None
    game_id: str | None
    reference_command_id: str | None
    issued_at: datetime

    @classmethod
    def from_avro(cls, datum: dict[str, Any]) -> Command:
        return cls(**{name: datum[name] for name in cls.__dataclass_fields__})

    def same_content(self, entry: Entry) -> bool:
        """Whether a stored entry with this command's id was made from the same command."""
        return (
            entry.player_id == self.player_id
            and entry.kind == self.kind
            and entry.amount == self.amount
            and entry.currency == self.currency
            and entry.reference_command_id == self.reference_command_id
        )


@dataclass(frozen=True)
class Entry:
    """One row of the ledger (``wallet.commands``): a command and the reply it got."""

    command_id: str
    correlation_id: str
    player_id: str
    kind: str
    amount: int
    currency: str
    reference_command_id: str | None
    effect: Effect
    delta: int
    """Change of the balance in ``currency`` (negative for a debit, 0 if nothing moved)."""
    status: Status
    balance: int | None
    """The reply's balance, where known."""
    replied_at: datetime
    reason: str | None = None
    """Why an ERROR was answered."""


@dataclass(frozen=True)
class Decision:
    entry: Entry
    duplicate: bool = False
    """The command id was already in the ledger: ``entry`` is the stored one, re-sent."""
    conflict: bool = False
    """A duplicate whose content differs from the stored command (answered the same anyway)."""
    foreign: bool = False
    """The command id is recorded for another player, or the command names another operator
    than the ledger's: refused (``entry`` is the ERROR to answer, recorded nowhere)."""


def problem_of(command: Command, operator_id: str, key: bytes | None) -> str | None:
    """Why ``command`` is malformed, or None. Checked again here although the saga checks
    before sending: money invariants are checked where they are produced and where they are
    consumed."""
    if not command.command_id or len(command.command_id) > ID_LENGTH_MAX:
        return "command_id is empty or too long"
    if command.operator_id != operator_id:
        return f"operator_id {command.operator_id!r} on the topic of {operator_id!r}"
    if not command.player_id or len(command.player_id) > ID_LENGTH_MAX:
        return "player_id is empty or too long"
    if key != f"{command.operator_id}:{command.player_id}".encode():
        return "key is not operator_id:player_id"
    if command.kind not in Kind.__members__:
        return f"unknown kind {command.kind!r}"
    if not CURRENCY_PATTERN.match(command.currency):
        return f"currency {command.currency!r} is not three upper-case letters"
    if not 0 <= command.amount <= AMOUNT_MAX:
        return f"amount {command.amount} out of range"
    if command.kind == Kind.DEBIT and command.amount == 0:
        return "a DEBIT needs a positive amount"
    if command.kind == Kind.CANCEL:
        ref = command.reference_command_id
        if not ref or len(ref) > ID_LENGTH_MAX or ref == command.command_id:
            return "a CANCEL needs the reference_command_id of another command"
    return None


def foreign_owner(command: Command, operator_id: str, stored: Entry) -> str | None:
    """Whose the recorded ``stored`` entry (same command id, ledger of ``operator_id``) is,
    when it is not the owner that ``command`` names; None when it is the same owner."""
    if command.operator_id != operator_id:
        return f"operator {operator_id!r}, not {command.operator_id!r}"
    if stored.player_id != command.player_id:
        return "another player"
    return None


@dataclass
class Book:
    """The ledger state a batch needs, and the batch's changes to it.

    ``balances`` holds every balance of the batch's players that exists; a missing one is
    created on first use with ``starting_balance``. ``entries`` holds the stored commands
    whose ids the batch names (as a command or a reference). ``cancels`` maps a debit's
    command id to the stored cancels that reference it, as (player_id, effect)."""

    operator_id: str
    starting_balance: int
    balances: dict[tuple[str, str], int]
    entries: dict[str, Entry]
    cancels: dict[str, list[tuple[str, Effect]]]
    new_entries: list[Entry] = field(default_factory=list)
    touched: dict[tuple[str, str], int] = field(default_factory=dict)
    """New balances by (player_id, currency), for the batch's write."""
    created: set[tuple[str, str]] = field(default_factory=set)

    def apply(self, command: Command, problem: str | None, now: datetime) -> Decision:
        """Apply one command (``problem`` from :func:`problem_of`) and return the reply's
        entry. Commands must come in their order on the partition."""
        stored = self.entries.get(command.command_id)
        if stored is not None:
            owner = foreign_owner(command, self.operator_id, stored)
            if owner is not None:
                reason = f"command_id already recorded for {owner}"
                return Decision(
                    self._entry(command, Effect.INVALID, 0, Status.ERROR, None, now, reason),
                    foreign=True,
                )
            return Decision(stored, duplicate=True, conflict=not command.same_content(stored))
        if problem is not None:
            entry = self._entry(command, Effect.INVALID, 0, Status.ERROR, None, now, problem)
        else:
            entry = self._decide(command, now)
        self.entries[command.command_id] = entry
        self.new_entries.append(entry)
        if entry.kind == Kind.CANCEL and entry.reference_command_id is not None:
            self.cancels.setdefault(entry.reference_command_id, []).append(
                (entry.player_id, entry.effect)
            )
        return Decision(entry)

    def _decide(self, c: Command, now: datetime) -> Entry:
        account = (c.player_id, c.currency)
        balance = self._balance(account)
        if c.kind == Kind.BALANCE:
            return self._entry(c, Effect.BALANCE, 0, Status.OK, balance, now)
        if c.kind == Kind.CREDIT:
            if balance > AMOUNT_MAX - c.amount:
                return self._entry(
                    c, Effect.INVALID, 0, Status.ERROR, balance, now, "balance would overflow"
                )
            return self._move(c, account, balance, c.amount, Effect.CREDITED, now)
        if c.kind == Kind.DEBIT:
            if self._cancels_of(c.command_id, c.player_id):
                return self._entry(
                    c, Effect.REFUSED, 0, Status.ERROR, balance, now, "debit was cancelled before"
                )
            if balance < c.amount:
                return self._entry(
                    c, Effect.INSUFFICIENT, 0, Status.INSUFFICIENT_FUNDS, balance, now
                )
            return self._move(c, account, balance, -c.amount, Effect.DEBITED, now)
        assert c.kind == Kind.CANCEL and c.reference_command_id is not None
        debit = self.entries.get(c.reference_command_id)
        if debit is None or debit.player_id != c.player_id:
            # unknown to this player: another player's command under that id is none of its
            # business (it was refused to this player, see ``foreign``)
            return self._entry(c, Effect.TOMBSTONE, 0, Status.OK, balance, now)
        if debit.kind != Kind.DEBIT:
            return self._entry(
                c, Effect.INVALID, 0, Status.ERROR, balance, now,
                "reference_command_id is not a DEBIT of this player",
            )  # fmt: skip
        if debit.currency != c.currency:
            return self._entry(
                c, Effect.INVALID, 0, Status.ERROR, balance, now,
                f"the debit is in {debit.currency}, the cancel in {c.currency}",
            )  # fmt: skip
        already = Effect.REFUNDED in self._cancels_of(debit.command_id, c.player_id)
        if debit.effect != Effect.DEBITED or already:
            return self._entry(c, Effect.NOOP, 0, Status.OK, balance, now)
        if balance > AMOUNT_MAX - debit.amount:
            return self._entry(
                c, Effect.INVALID, 0, Status.ERROR, balance, now, "balance would overflow"
            )
        return self._move(c, account, balance, debit.amount, Effect.REFUNDED, now)

    def _balance(self, account: tuple[str, str]) -> int:
        balance = self.balances.get(account)
        if balance is None:
            balance = self.balances[account] = self.starting_balance
            self.created.add(account)
            self.touched[account] = balance
        return balance

    def _cancels_of(self, debit_id: str, player_id: str) -> list[Effect]:
        return [e for p, e in self.cancels.get(debit_id, ()) if p == player_id]

    def _move(
        self,
        c: Command,
        account: tuple[str, str],
        balance: int,
        delta: int,
        effect: Effect,
        now: datetime,
    ) -> Entry:
        after = balance + delta
        assert 0 <= after <= AMOUNT_MAX, (c.command_id, balance, delta)
        self.balances[account] = self.touched[account] = after
        return self._entry(c, effect, delta, Status.OK, after, now)

    @staticmethod
    def _entry(
        c: Command,
        effect: Effect,
        delta: int,
        status: Status,
        balance: int | None,
        now: datetime,
        reason: str | None = None,
    ) -> Entry:
        return Entry(
            command_id=c.command_id,
            correlation_id=c.correlation_id,
            player_id=c.player_id,
            kind=c.kind,
            amount=c.amount,
            currency=c.currency,
            reference_command_id=c.reference_command_id,
            effect=effect,
            delta=delta,
            status=status,
            balance=balance,
            replied_at=now,
            reason=reason,
        )


def failing_entry(command: Command, now: datetime) -> Entry:
    """The reply of a wallet in ``failing`` mode: ERROR, nothing applied, nothing recorded."""
    return Book._entry(command, Effect.INVALID, 0, Status.ERROR, None, now, "wallet failing")
