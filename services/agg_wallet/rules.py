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
sees the stored reply, which carries another player's balance (``Decision.foreign``). The
same id with other content (amount, currency, kind, reference) is refused the same way
(``Decision.conflict``): answering it with the stored reply would tell the sender that an
amount it never asked for moved, or hide that the one it asked for did not.

What else an operator's wallet accepts is its :class:`Policy`: the currencies it offers (a
command in another currency, for a player without an account in it, is refused), the
provider sandbox (:data:`SANDBOX_PREFIXES`: scripted answers per test player, for providers
testing their integration), and, for the certification kit's own tests only, deliberate
defects (:class:`Defect`). A default ``Policy()`` is the plain reference wallet.

Outcomes of a command, as ``Effect`` (stored in ``wallet.commands.effect``):

============  =======================  =====================================================
kind          effect                   when
============  =======================  =====================================================
DEBIT         ``debited``              balance >= amount; balance -= amount, OK
DEBIT         ``insufficient``         balance < amount; nothing moves, INSUFFICIENT_FUNDS
DEBIT         ``refused``              a CANCEL of this id came first; nothing moves, ERROR
                                       (sandbox: the player's scenario refuses it; above the
                                       operator's ``max_stake``: LIMIT_REACHED)
CREDIT        ``credited``             balance += amount, OK (``invalid`` if the balance
                                       would pass the largest the wallet can answer)
CANCEL        ``refunded``             the debit was applied and not yet cancelled; refund, OK
CANCEL        ``noop``                 the debit was refused, or already cancelled; OK
CANCEL        ``tombstone``            this player has no command under the debit's id:
                                       remembered, so that it is refused if it arrives
                                       later; OK
BALANCE       ``balance``              OK with the balance
any           ``invalid``              malformed command (bad amount, currency, kind, ...),
                                       or a currency the operator does not offer and the
                                       player has no account in; nothing moves, ERROR
any           (not recorded)           the id is recorded for another player, or the command
                                       names another operator (``Decision.foreign``), or the
                                       id is recorded with other content
                                       (``Decision.conflict``): nothing moves, ERROR without
                                       a balance
DEBIT         (not recorded)           sandbox ``timeout``: the first attempt is not answered
                                       (``Decision.silent``)
============  =======================  =====================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from agg_domain.currency import minor_unit_exponent
from agg_domain.saga import debit_command_id

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
    """The reply statuses this wallet uses (a subset of ``casino.agg.WalletReplyStatus``;
    PLAYER_BLOCKED only in the sandbox, LIMIT_REACHED in the sandbox and above the
    operator's ``max_stake``)."""

    OK = "OK"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    PLAYER_BLOCKED = "PLAYER_BLOCKED"
    LIMIT_REACHED = "LIMIT_REACHED"
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


class Defect(StrEnum):
    """Deliberate defects, for testing the certification kit (``agg_certify``) only: each one
    breaks one rule the kit checks, so that a test can show the kit catches it. Set with
    ``AGG_WALLET_BROKEN`` (and ``AGG_WALLET_BROKEN_ENABLED=true``, without which the wallet
    refuses to start); never in a deployment that holds real money."""

    NO_DEDUPE = "no_dedupe"
    """A repeated command id is applied again (the ledger keeps the first row)."""
    NEGATIVE_BALANCE = "negative_balance"
    """A debit above the balance is answered OK. The ledger's constraints keep balances
    >= 0, so nothing moves; to the aggregator it is the same defect: a bet the player
    cannot pay is accepted."""
    DOUBLE_ROLLBACK = "double_rollback"
    """A second CANCEL (another command id) of a refunded debit refunds it again."""
    WRONG_CURRENCY = "wrong_currency"
    """A currency the operator does not offer is accepted (an account is opened in it)."""
    SLOW = "slow"
    """Every reply is sent later than the saga's wallet deadline (:func:`reply_delay_ms`)."""
    NO_SIGNATURE_CHECK = "no_signature_check"
    """A request is applied whatever its signature says (the reference HTTP wallet only: a
    Kafka command carries no signature, so a Kafka wallet has nothing to skip)."""


SLOW_MARGIN_MS = 500
"""How far past the saga's wallet deadline the ``slow`` defect answers."""


def parse_defects(text: str) -> frozenset[Defect]:
    """``"no_dedupe,slow"`` -> the defects; ValueError naming an unknown one."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    known = {d.value for d in Defect}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"unknown wallet defects {unknown}; known: {sorted(known)}")
    return frozenset(Defect(n) for n in names)


def reply_delay_ms(defects: frozenset[Defect], wallet_timeout_ms: int) -> int:
    """How long replies wait before they are sent: 0 unless the ``slow`` defect is set."""
    return wallet_timeout_ms + SLOW_MARGIN_MS if Defect.SLOW in defects else 0


class Scenario(StrEnum):
    """Provider sandbox scenarios, chosen by the player id's prefix (docs/sandbox.md)."""

    OK = "ok"
    INSUFFICIENT = "insufficient"
    BLOCKED = "blocked"
    LIMIT = "limit"
    TIMEOUT = "timeout"
    ERROR = "error"


SANDBOX_PREFIXES: dict[str, Scenario] = {f"sandbox-{s.value}-": s for s in Scenario}
"""``sandbox-insufficient-alice`` plays the ``insufficient`` scenario; no prefix is a prefix
of another."""

_REFUSAL: dict[Scenario | None, tuple[Effect, Status]] = {
    Scenario.INSUFFICIENT: (Effect.INSUFFICIENT, Status.INSUFFICIENT_FUNDS),
    Scenario.BLOCKED: (Effect.REFUSED, Status.PLAYER_BLOCKED),
    Scenario.LIMIT: (Effect.REFUSED, Status.LIMIT_REACHED),
    Scenario.ERROR: (Effect.REFUSED, Status.ERROR),
}
"""What a sandbox scenario answers every DEBIT with (credits, cancels, balances are normal)."""


def scenario_of(player_id: str) -> Scenario | None:
    return next((s for p, s in SANDBOX_PREFIXES.items() if player_id.startswith(p)), None)


@dataclass(frozen=True)
class Policy:
    """What one operator's wallet accepts beyond the contract's rules (see the module doc)."""

    currencies: frozenset[str] | None = None
    """The operator's currencies; None accepts any well-formed code."""
    sandbox: bool = False
    """Provider sandbox scenarios by player id prefix (operator config ``wallet.sandbox``)."""
    defects: frozenset[Defect] = frozenset()
    """Deliberate defects, for the certification kit's tests only."""
    max_stake: int | None = None
    """The operator's own stake limit (``wallet.max_stake``): a DEBIT above it is refused
    LIMIT_REACHED; None: no limit."""
    wire_exponent: int | None = None
    """The unit of the wire the wallet answers on, as a power of ten (an HTTP wallet on
    hub88-v1: 5), whose amounts are longs too: a balance is kept within what the wire can
    carry (:meth:`balance_max`). None: the wire carries minor units."""

    def balance_max(self, currency: str) -> int:
        """The largest balance in ``currency``: :data:`AMOUNT_MAX` minor units, less where
        the wire's unit is finer than the minor unit (``AMOUNT_MAX`` 1/100,000 units of EUR
        are 10**3 times fewer cents)."""
        if self.wire_exponent is None:
            return AMOUNT_MAX
        try:
            finer = self.wire_exponent - minor_unit_exponent(currency)
        except KeyError:  # not a currency: refused before any balance moves
            return AMOUNT_MAX
        return AMOUNT_MAX // 10**finer if finer > 0 else AMOUNT_MAX


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
    """The command id is recorded with other content: refused (``entry`` is the ERROR to
    answer, recorded nowhere)."""
    foreign: bool = False
    """The command id is recorded for another player, or the command names another operator
    than the ledger's: refused (``entry`` is the ERROR to answer, recorded nowhere)."""
    silent: bool = False
    """Not answered at all (sandbox ``timeout``): nothing moves, nothing recorded."""


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
    policy: Policy = field(default_factory=Policy)
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
            if Defect.NO_DEDUPE in self.policy.defects and problem is None:
                return Decision(self._decide(command, now))  # applied again, not recorded
            if not command.same_content(stored):
                reason = "command_id already recorded with other content"
                return Decision(
                    self._entry(command, Effect.INVALID, 0, Status.ERROR, None, now, reason),
                    duplicate=True,
                    conflict=True,
                )
            return Decision(stored, duplicate=True)
        if problem is None:
            problem = self._unoffered(command)
        if problem is not None:
            entry = self._entry(command, Effect.INVALID, 0, Status.ERROR, None, now, problem)
        elif self._swallowed(command):
            return Decision(
                self._entry(command, Effect.INVALID, 0, Status.ERROR, None, now, "sandbox"),
                silent=True,
            )
        else:
            entry = self._decide(command, now)
        self.entries[command.command_id] = entry
        self.new_entries.append(entry)
        if entry.kind == Kind.CANCEL and entry.reference_command_id is not None:
            self.cancels.setdefault(entry.reference_command_id, []).append(
                (entry.player_id, entry.effect)
            )
        return Decision(entry)

    def _unoffered(self, c: Command) -> str | None:
        """Why ``c``'s currency is refused: one the operator does not offer, for a player
        without an account in it (an account kept after its currency was dropped from the
        operator's list still settles what it owes)."""
        offered = self.policy.currencies
        if offered is None or c.currency in offered or Defect.WRONG_CURRENCY in self.policy.defects:
            return None
        if (c.player_id, c.currency) in self.balances:
            return None
        return f"currency {c.currency} is not offered by operator {self.operator_id}"

    def _swallowed(self, c: Command) -> bool:
        """Sandbox ``timeout``: the aggregator's first attempt of a debit is never answered,
        so its saga times out, answers the provider RETRY_LATER and cancels that attempt; the
        provider's retry is a second attempt (another command id) and is answered."""
        if not self.policy.sandbox or c.kind != Kind.DEBIT:
            return False
        if scenario_of(c.player_id) is not Scenario.TIMEOUT or c.transaction_id is None:
            return False
        first = debit_command_id(c.operator_id, c.player_id, c.provider_id, c.transaction_id, 1)
        return c.command_id == first

    def _decide(self, c: Command, now: datetime) -> Entry:
        account = (c.player_id, c.currency)
        balance = self._balance(account)
        if c.kind == Kind.BALANCE:
            return self._entry(c, Effect.BALANCE, 0, Status.OK, balance, now)
        if c.kind == Kind.CREDIT:
            if balance > self.policy.balance_max(c.currency) - c.amount:
                return self._entry(
                    c, Effect.INVALID, 0, Status.ERROR, balance, now, "balance would overflow"
                )
            return self._move(c, account, balance, c.amount, Effect.CREDITED, now)
        if c.kind == Kind.DEBIT:
            if self._cancels_of(c.command_id, c.player_id):
                return self._entry(
                    c, Effect.REFUSED, 0, Status.ERROR, balance, now, "debit was cancelled before"
                )
            refusal = _REFUSAL.get(scenario_of(c.player_id)) if self.policy.sandbox else None
            if refusal is not None:
                effect, status = refusal
                return self._entry(c, effect, 0, status, balance, now, "sandbox scenario")
            limit = self.policy.max_stake
            if limit is not None and c.amount > limit:
                reason = f"above the operator's stake limit {limit}"
                return self._entry(c, Effect.REFUSED, 0, Status.LIMIT_REACHED, balance, now, reason)
            if balance < c.amount:
                if Defect.NEGATIVE_BALANCE in self.policy.defects:
                    return self._entry(
                        c, Effect.INSUFFICIENT, 0, Status.OK, balance, now, "defect: overdraft"
                    )
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
        if Defect.DOUBLE_ROLLBACK in self.policy.defects:
            already = False
        if debit.effect != Effect.DEBITED or already:
            return self._entry(c, Effect.NOOP, 0, Status.OK, balance, now)
        if balance > self.policy.balance_max(c.currency) - debit.amount:
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
