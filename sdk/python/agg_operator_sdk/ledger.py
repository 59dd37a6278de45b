"""Dedupe by command id inside the operator's own PostgreSQL transaction (psycopg 3, async).

The aggregator delivers every command at least once (a saga resends until it hears back, a
wallet that crashes re-reads what it had not committed), and a repeated ``command_id`` is the
same command: it must be answered with the same reply and move money once. The
:class:`Ledger` does that with one table, ``<schema>.commands``, whose primary key is the
command id: every command it answers is recorded there with its reply, in the same
transaction as the balance change, so either both are there or neither is.

For each command, in order:

1. the id is in the table, for the same operator, player and content: **repeat**, the stored
   reply is returned (the same bytes once encoded);
2. the id is in the table for another player or operator: **foreign**; or for the same
   player with other content (kind, amount, currency, reference): **conflict**. Both are
   defects upstream, not repeats: the command is refused with ERROR and no balance, nothing
   moves and nothing is recorded, so the owner's repeats still get its reply and nobody is
   told another player's balance. (The reference wallet answers a same-player conflict with
   the stored reply; this package refuses it, since answering "OK" to a debit of another
   amount than the one applied would hide the difference.)
3. else the command is malformed (:func:`~agg_operator_sdk.rules.problem_of`): recorded as
   ``invalid`` with an ERROR reply; or the rules decide it on the facts read from the table
   and the balance, the balance is written and the command recorded with its reply.

The caller owns the transaction and the connection: the ledger runs its statements on
``conn`` inside the transaction the caller opened (it refuses to run outside one), so an
operator can change its own tables in the same transaction. A batch first takes one
transaction-scoped advisory lock per player and per command id (in a fixed order, so two
transactions never wait on each other in a cycle): a second wallet process of the same
operator (both owning a partition for a moment during a rebalance) waits and then finds the
first one's rows. If a transaction fails anyway with a serialization failure, a deadlock or
a unique violation (another writer of the same tables not taking the locks), roll back and
run the batch again: :func:`is_retryable` tells those apart.

Balances live behind :class:`Accounts`; :class:`TableAccounts` (``<schema>.accounts``,
``CHECK (balance >= 0)``) is the default, and an operator with its own balance table
implements the two methods on it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import psycopg
from psycopg.pq import TransactionStatus

from agg_operator_sdk.rules import (
    AMOUNT_MAX,
    Effect,
    Facts,
    Outcome,
    Recorded,
    Rules,
    decide,
    invalid,
    problem_of,
)
from agg_operator_sdk.wire import CommandKind, ReplyStatus, WalletCommand, WalletReply, millis

Connection = psycopg.AsyncConnection[Any]

SCHEMA_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "23505"})
"""serialization_failure, deadlock_detected, unique_violation: a lost race, worth a retry."""


class LedgerError(RuntimeError):
    """The ledger was used wrongly (outside a transaction), or the rules returned an outcome
    that would break a money invariant: a bug in the calling code, never retried."""


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed transaction lost a race and running it again can succeed."""
    return isinstance(exc, psycopg.Error) and exc.sqlstate in RETRYABLE_SQLSTATES


class Resolution(StrEnum):
    APPLIED = "applied"
    """A command seen for the first time: decided, recorded with its reply."""
    REPEAT = "repeat"
    """The same command again: the stored reply."""
    CONFLICT = "conflict"
    """The id is recorded for this player with other content: refused, not recorded."""
    FOREIGN = "foreign"
    """The id is recorded for another player or operator: refused, not recorded."""


@dataclass(frozen=True)
class Handled:
    command: WalletCommand
    reply: WalletReply
    resolution: Resolution
    effect: Effect | None
    """What the command did (APPLIED), or what it did when first recorded (REPEAT)."""
    reason: str | None = None


class Accounts(Protocol):
    """Where balances live. Both methods run on the caller's connection, in its transaction."""

    async def ensure_schema(self, conn: Connection) -> None: ...

    async def balance_for_update(
        self, conn: Connection, operator_id: str, player_id: str, currency: str
    ) -> int | None:
        """The balance, locked until the transaction ends; None if there is no account."""
        ...

    async def store(
        self,
        conn: Connection,
        operator_id: str,
        player_id: str,
        currency: str,
        balance: int,
        *,
        opening_balance: int | None,
    ) -> None:
        """Write the new balance; ``opening_balance`` is not None when the account is new
        (opened at that balance by this command, then changed to ``balance``)."""
        ...


class TableAccounts:
    """Balances in ``<schema>.accounts``, one row per (operator, player, currency)."""

    def __init__(self, schema: str = "operator_wallet"):
        self.schema = _checked_schema(schema)

    async def ensure_schema(self, conn: Connection) -> None:
        await conn.execute(f"""
            CREATE TABLE IF NOT EXISTS {self.schema}.accounts (
                operator_id     text        NOT NULL,
                player_id       text        NOT NULL,
                currency        char(3)     NOT NULL CHECK (currency ~ '^[A-Z]{{3}}$'),
                balance         bigint      NOT NULL CHECK (balance >= 0),
                opening_balance bigint      NOT NULL CHECK (opening_balance >= 0),
                created_at      timestamptz NOT NULL DEFAULT now(),
                updated_at      timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (operator_id, player_id, currency)
            )""")

    async def balance_for_update(
        self, conn: Connection, operator_id: str, player_id: str, currency: str
    ) -> int | None:
        cur = await conn.execute(
            f"SELECT balance FROM {self.schema}.accounts "
            "WHERE operator_id = %s AND player_id = %s AND currency = %s FOR UPDATE",
            (operator_id, player_id, currency),
        )
        row = await cur.fetchone()
        return None if row is None else int(row[0])

    async def store(
        self,
        conn: Connection,
        operator_id: str,
        player_id: str,
        currency: str,
        balance: int,
        *,
        opening_balance: int | None,
    ) -> None:
        if opening_balance is not None:
            await conn.execute(
                f"INSERT INTO {self.schema}.accounts "
                "(operator_id, player_id, currency, balance, opening_balance) "
                "VALUES (%s, %s, %s, %s, %s)",
                (operator_id, player_id, currency, balance, opening_balance),
            )
        else:
            await conn.execute(
                f"UPDATE {self.schema}.accounts SET balance = %s, updated_at = now() "
                "WHERE operator_id = %s AND player_id = %s AND currency = %s",
                (balance, operator_id, player_id, currency),
            )


@dataclass(frozen=True)
class _Stored:
    operator_id: str
    player_id: str
    kind: str
    amount: int
    currency: str
    reference_command_id: str | None
    effect: Effect
    status: ReplyStatus
    balance: int | None
    reason: str | None
    replied_at: datetime
    correlation_id: str | None

    def same_content(self, c: WalletCommand) -> bool:
        return (
            self.kind == c.kind.value
            and self.amount == c.amount
            and self.currency == c.currency
            and self.reference_command_id == c.reference_command_id
        )


_STORED_COLUMNS = (
    "operator_id, player_id, kind, amount, currency, reference_command_id, effect, status, "
    "balance, reason, replied_at, correlation_id"
)


class Ledger:
    """Dedupe and rules for one operator's commands, in ``<schema>.commands``.

    ``starting_balance``: the balance an unknown player's account is opened with on first
    use, in the command's currency (the reference wallet's demo behaviour); None to answer
    UNKNOWN_PLAYER instead (an operator whose players exist before they play)."""

    def __init__(
        self,
        operator_id: str,
        *,
        schema: str = "operator_wallet",
        starting_balance: int | None = None,
        rules: Rules = decide,
        accounts: Accounts | None = None,
    ):
        if starting_balance is not None and not 0 <= starting_balance <= AMOUNT_MAX:
            raise ValueError(f"starting_balance {starting_balance} out of range")
        self.operator_id = operator_id
        self.schema = _checked_schema(schema)
        self.starting_balance = starting_balance
        self.rules = rules
        self.accounts: Accounts = accounts or TableAccounts(self.schema)

    async def ensure_schema(self, conn: Connection) -> None:
        """Create the tables if missing (idempotent; concurrent starts serialise on a lock)."""
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                               (f"schema:{self.schema}",))  # fmt: skip
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            await conn.execute(f"""
                CREATE TABLE IF NOT EXISTS {self.schema}.commands (
                    command_id           text        PRIMARY KEY,
                    seq                  bigint      GENERATED ALWAYS AS IDENTITY,
                    operator_id          text        NOT NULL,
                    player_id            text        NOT NULL,
                    kind                 text        NOT NULL,
                    amount               bigint      NOT NULL,
                    currency             text        NOT NULL,
                    reference_command_id text,
                    correlation_id       text,
                    provider_id          text,
                    transaction_id       text,
                    round_id             text,
                    game_id              text,
                    issued_at            timestamptz,
                    effect               text        NOT NULL,
                    delta                bigint      NOT NULL,
                    status               text        NOT NULL,
                    balance              bigint      CHECK (balance >= 0),
                    reason               text,
                    replied_at           timestamptz NOT NULL,
                    recorded_at          timestamptz NOT NULL DEFAULT now(),
                    CHECK (delta = 0 OR effect IN ('debited', 'credited', 'refunded'))
                )""")
            await conn.execute(
                f"CREATE INDEX IF NOT EXISTS commands_reference_idx ON {self.schema}.commands "
                "(reference_command_id) WHERE reference_command_id IS NOT NULL"
            )
            await self.accounts.ensure_schema(conn)

    async def handle(
        self,
        conn: Connection,
        command: WalletCommand,
        *,
        key: bytes | None = None,
        now: datetime | None = None,
    ) -> Handled:
        """:meth:`handle_batch` of one command."""
        (handled,) = await self.handle_batch(conn, [(command, key)], now=now)
        return handled

    async def handle_batch(
        self,
        conn: Connection,
        items: Sequence[tuple[WalletCommand, bytes | None]],
        *,
        now: datetime | None = None,
    ) -> list[Handled]:
        """Handle ``items`` (command and the Kafka key it was read with, in partition order)
        inside the caller's open transaction on ``conn``, and return one :class:`Handled`
        (with the reply to send) per item. Nothing is visible to others before the caller
        commits; send the replies after the commit."""
        if conn.info.transaction_status is not TransactionStatus.INTRANS:
            raise LedgerError("Ledger.handle_batch runs inside the caller's transaction "
                              "(async with conn.transaction(): ...)")  # fmt: skip
        if not items:
            return []
        at = millis(now or datetime.now(UTC))
        keys = {f"player:{self.operator_id}:{c.player_id}" for c, _ in items}
        keys |= {f"command:{c.command_id}" for c, _ in items}
        await conn.execute(
            "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(k, 0) AS h "
            "FROM unnest(%s::text[]) AS k) AS locks ORDER BY h",
            (sorted(keys),),
        )
        return [await self._one(conn, command, key, at) for command, key in items]

    async def _one(
        self, conn: Connection, c: WalletCommand, key: bytes | None, at: datetime
    ) -> Handled:
        stored = await self._stored(conn, c.command_id)
        if stored is not None:
            if stored.operator_id != self.operator_id or c.operator_id != self.operator_id:
                owner = stored.operator_id if c.operator_id == self.operator_id else (
                    self.operator_id)  # fmt: skip
                return self._refused(c, Resolution.FOREIGN, at,
                                     f"command_id already recorded for operator {owner!r}, "
                                     f"not {c.operator_id!r}")  # fmt: skip
            if stored.player_id != c.player_id:
                return self._refused(c, Resolution.FOREIGN, at,
                                     "command_id already recorded for another player")  # fmt: skip
            if not stored.same_content(c):
                return self._refused(c, Resolution.CONFLICT, at,
                                     "command_id already recorded with other content")  # fmt: skip
            reply = WalletReply(
                command_id=c.command_id,
                operator_id=stored.operator_id,
                player_id=stored.player_id,
                status=stored.status,
                balance=stored.balance,
                currency=stored.currency,
                replied_at=stored.replied_at,
                correlation_id=stored.correlation_id,
            )
            return Handled(c, reply, Resolution.REPEAT, stored.effect, stored.reason)

        problem = problem_of(c, self.operator_id, key)
        if problem is not None:
            outcome = invalid(problem)
        else:
            balance = await self.accounts.balance_for_update(
                conn, self.operator_id, c.player_id, c.currency
            )
            opened = balance is None and self.starting_balance is not None
            if opened:
                balance = self.starting_balance
            facts = await self._facts(conn, c, balance)
            outcome = self.rules(c, facts)
            self._check(c, facts, outcome)
            if opened or outcome.delta:
                assert balance is not None
                await self.accounts.store(
                    conn,
                    self.operator_id,
                    c.player_id,
                    c.currency,
                    balance + outcome.delta,
                    opening_balance=balance if opened else None,
                )
        await conn.execute(
            f"INSERT INTO {self.schema}.commands (command_id, operator_id, player_id, kind, "
            "amount, currency, reference_command_id, correlation_id, provider_id, "
            "transaction_id, round_id, game_id, issued_at, effect, delta, status, balance, "
            "reason, replied_at) VALUES "
            "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (c.command_id, c.operator_id, c.player_id, c.kind.value,
             _clamped(c.amount), c.currency, c.reference_command_id, c.correlation_id,
             c.provider_id, c.transaction_id, c.round_id, c.game_id, c.issued_at,
             outcome.effect.value, outcome.delta, outcome.status.value, outcome.balance,
             outcome.reason, at),
        )  # fmt: skip
        reply = WalletReply(
            command_id=c.command_id,
            operator_id=c.operator_id,
            player_id=c.player_id,
            status=outcome.status,
            balance=outcome.balance,
            currency=c.currency,
            replied_at=at,
            correlation_id=c.correlation_id,
        )
        return Handled(c, reply, Resolution.APPLIED, outcome.effect, outcome.reason)

    async def _stored(self, conn: Connection, command_id: str) -> _Stored | None:
        cur = await conn.execute(
            f"SELECT {_STORED_COLUMNS} FROM {self.schema}.commands WHERE command_id = %s",
            (command_id,),
        )
        row = await cur.fetchone()
        if row is None:
            return None
        (op, player, kind, amount, currency, ref, effect, status, balance, why, at, corr) = row
        return _Stored(
            operator_id=op,
            player_id=player,
            kind=kind,
            amount=int(amount),
            currency=currency,
            reference_command_id=ref,
            effect=Effect(effect),
            status=ReplyStatus(status),
            balance=None if balance is None else int(balance),
            reason=why,
            replied_at=at.astimezone(UTC),
            correlation_id=corr,
        )

    async def _facts(self, conn: Connection, c: WalletCommand, balance: int | None) -> Facts:
        t = f"{self.schema}.commands"
        if c.kind is CommandKind.DEBIT:
            cur = await conn.execute(
                # a malformed CANCEL (answered ERROR) cancelled nothing
                f"SELECT EXISTS (SELECT 1 FROM {t} WHERE reference_command_id = %s "
                "AND kind = 'CANCEL' AND effect <> 'invalid' AND operator_id = %s "
                "AND player_id = %s)",
                (c.command_id, self.operator_id, c.player_id),
            )
            row = await cur.fetchone()
            return Facts(balance, cancelled_before=bool(row and row[0]))
        if c.kind is CommandKind.CANCEL and c.reference_command_id is not None:
            cur = await conn.execute(
                f"SELECT kind, amount, currency, effect FROM {t} "
                "WHERE command_id = %s AND operator_id = %s AND player_id = %s",
                (c.reference_command_id, self.operator_id, c.player_id),
            )
            row = await cur.fetchone()
            if row is None:
                # unknown to this player: another player's command under that id is none of
                # its business
                return Facts(balance)
            kind = CommandKind(row[0]) if row[0] in CommandKind.__members__ else (
                CommandKind.UNKNOWN)  # fmt: skip
            referenced = Recorded(kind, int(row[1]), row[2], Effect(row[3]))
            cur = await conn.execute(
                f"SELECT EXISTS (SELECT 1 FROM {t} WHERE reference_command_id = %s "
                "AND kind = 'CANCEL' AND effect = 'refunded' AND operator_id = %s "
                "AND player_id = %s)",
                (c.reference_command_id, self.operator_id, c.player_id),
            )
            row = await cur.fetchone()
            return Facts(balance, referenced=referenced, refunded=bool(row and row[0]))
        return Facts(balance)

    @staticmethod
    def _check(c: WalletCommand, facts: Facts, outcome: Outcome) -> None:
        """Money invariants, checked again where the outcome is consumed: the rules may be
        the operator's own."""
        if outcome.balance is not None and not 0 <= outcome.balance <= AMOUNT_MAX:
            raise LedgerError(f"{c.command_id}: the reply's balance {outcome.balance} leaves "
                              "0..2^63-1")  # fmt: skip
        if outcome.delta == 0:
            return
        if facts.balance is None:
            raise LedgerError(f"{c.command_id}: the rules moved money without an account")
        after = facts.balance + outcome.delta
        if not 0 <= after <= AMOUNT_MAX:
            raise LedgerError(f"{c.command_id}: balance {facts.balance} + {outcome.delta} "
                              "leaves 0..2^63-1")  # fmt: skip
        if outcome.balance != after:
            raise LedgerError(f"{c.command_id}: the reply says {outcome.balance}, the balance "
                              f"is {after}")  # fmt: skip
        if outcome.status is not ReplyStatus.OK:
            raise LedgerError(f"{c.command_id}: money moved on a {outcome.status} reply")

    @staticmethod
    def _refused(c: WalletCommand, resolution: Resolution, at: datetime, reason: str) -> Handled:
        reply = WalletReply(
            command_id=c.command_id,
            operator_id=c.operator_id,
            player_id=c.player_id,
            status=ReplyStatus.ERROR,
            balance=None,
            currency=c.currency,
            replied_at=at,
            correlation_id=c.correlation_id,
        )
        return Handled(c, reply, resolution, None, reason)


def _clamped(amount: int) -> int:
    """A malformed command's amount as ``bigint`` can hold it (the wire's ``long`` always
    fits; this only guards a command built by hand)."""
    return max(-(2**63), min(AMOUNT_MAX, amount))


def _checked_schema(schema: str) -> str:
    if not SCHEMA_PATTERN.match(schema):
        raise ValueError(f"schema {schema!r}: lower-case letters, digits and _ only")
    return schema
