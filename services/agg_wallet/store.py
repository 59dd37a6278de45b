"""The wallet's Postgres storage: balances (``wallet.players``) and the ledger
(``wallet.commands``, which is also the dedupe table: one row per command id).

One batch of commands is one transaction:

1. take a transaction-scoped advisory lock per player of the batch (``operator:player``, in
   a fixed order, so two transactions never wait on each other in a cycle);
2. read, in one pipelined round trip, the balances of those players, the ledger rows the
   batch names (its command ids and the debits its cancels reference), and the cancels that
   reference its debits;
3. apply the commands in memory (:class:`agg_wallet.rules.Book`);
4. write the new balances (one upsert) and the new ledger rows (one pipelined
   ``executemany``), then commit.

The lock makes a second wallet process of the same operator (both owning a partition for a
moment during a rebalance) wait, and then read the first one's committed rows, so a command
is never applied twice and never decided on a stale balance. Anything else that changes
balances must take the same lock. The primary key on (operator_id, command_id) is the last
line: should two inserts of one command id ever race, the second transaction fails and the
batch is retried, finding the command already recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import errors as pg_errors

from agg_wallet.rules import Book, Command, Decision, Effect, Entry, Policy, Status

SCHEMA_LOCK_ID = 0x77616C6C6574  # "wallet": serialises concurrent schema creation
ATTEMPT_COUNT_MAX = 3
"""Transactions of one batch before giving up: a retry only follows a lost race."""

SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS wallet;

CREATE TABLE IF NOT EXISTS wallet.players (
    operator_id     text        NOT NULL,
    player_id       text        NOT NULL,
    currency        char(3)     NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    balance         bigint      NOT NULL CHECK (balance >= 0),
    opening_balance bigint      NOT NULL CHECK (opening_balance >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (operator_id, player_id, currency)
);
COMMENT ON TABLE wallet.players IS
    'Balances in minor units. balance = opening_balance + sum(wallet.commands.delta) '
    '+ sum(wallet.transfers.delta) of the same operator, player and currency.';

CREATE TABLE IF NOT EXISTS wallet.commands (
    operator_id          text        NOT NULL,
    command_id           text        NOT NULL,
    player_id            text        NOT NULL,
    kind                 text        NOT NULL,
    amount               bigint      NOT NULL,
    currency             text        NOT NULL,
    reference_command_id text,
    correlation_id       text        NOT NULL,
    provider_id          text,
    transaction_id       text,
    round_id             text,
    game_id              text,
    issued_at            timestamptz,
    effect               text        NOT NULL CHECK (effect IN (
        'debited', 'insufficient', 'refused', 'credited', 'refunded', 'noop', 'tombstone',
        'balance', 'invalid')),
    delta                bigint      NOT NULL,
    status               text        NOT NULL,
    balance_after        bigint      CHECK (balance_after >= 0),
    reason               text,
    replied_at           timestamptz NOT NULL,
    applied_at           timestamptz NOT NULL DEFAULT now(),
    kafka_partition      integer,
    kafka_offset         bigint,
    PRIMARY KEY (operator_id, command_id),
    CHECK (effect = 'invalid' OR amount >= 0),
    CHECK (delta = 0 OR effect IN ('debited', 'credited', 'refunded')),
    CHECK (effect <> 'debited' OR (amount > 0 AND delta = -amount)),
    CHECK (effect <> 'credited' OR delta = amount)
);
COMMENT ON TABLE wallet.commands IS
    'The ledger: every command received once, with the reply it got (a repeat is answered '
    'from here).';

CREATE TABLE IF NOT EXISTS wallet.transfers (
    operator_id  text        NOT NULL,
    player_id    text        NOT NULL,
    transfer_id  text        NOT NULL,
    direction    text        NOT NULL CHECK (direction IN ('deposit', 'withdraw')),
    currency     char(3)     NOT NULL,
    requested    bigint      CHECK (requested > 0),
    amount       bigint      NOT NULL DEFAULT 0 CHECK (amount >= 0),
    delta        bigint      NOT NULL DEFAULT 0,
    state        text        NOT NULL CHECK (state IN ('PENDING', 'DONE', 'REFUSED')),
    status       text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (operator_id, player_id, transfer_id),
    CHECK (direction = 'withdraw' OR requested IS NOT NULL),
    CHECK (state <> 'REFUSED' OR delta = 0),
    CHECK (direction <> 'deposit' OR state = 'REFUSED' OR delta = -requested),
    CHECK (direction <> 'withdraw' OR delta = CASE state WHEN 'DONE' THEN amount ELSE 0 END)
);
COMMENT ON TABLE wallet.transfers IS
    'The reference operator''s transfers to and from a transfer wallet: a deposit debits the '
    'player here (delta) before the aggregator is asked, and is reversed if it refuses; a '
    'withdrawal credits the player once the aggregator has moved the funds.';

CREATE INDEX IF NOT EXISTS commands_reference_idx
    ON wallet.commands (operator_id, reference_command_id)
    WHERE reference_command_id IS NOT NULL;

-- The statuses a reply may have (the sandbox answers PLAYER_BLOCKED and LIMIT_REACHED too).
-- A ledger made before the sandbox has the narrower check: it is replaced once (NOT VALID:
-- its rows satisfy the wider one, so the table is not scanned while it is locked).
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conrelid = 'wallet.commands'::regclass AND conname = 'commands_status_check'
          AND pg_get_constraintdef(oid) LIKE '%PLAYER_BLOCKED%'
    ) THEN
        ALTER TABLE wallet.commands DROP CONSTRAINT IF EXISTS commands_status_check;
        ALTER TABLE wallet.commands ADD CONSTRAINT commands_status_check
            CHECK (status IN ('OK', 'INSUFFICIENT_FUNDS', 'PLAYER_BLOCKED', 'LIMIT_REACHED',
                              'ERROR')) NOT VALID;
    END IF;
END $$;
"""

LOCK_PLAYERS_SQL = """
SELECT pg_advisory_xact_lock(h)
FROM (SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest(%s::text[]) AS k) AS locks
ORDER BY h
"""

SELECT_BALANCES_SQL = """
SELECT player_id, currency, balance FROM wallet.players
WHERE operator_id = %s AND player_id = ANY(%s::text[])
"""

ENTRY_COLUMNS = (
    "command_id, correlation_id, player_id, kind, amount, currency, reference_command_id, "
    "effect, delta, status, balance_after, replied_at, reason"
)

SELECT_ENTRIES_SQL = f"""
SELECT {ENTRY_COLUMNS} FROM wallet.commands
WHERE operator_id = %s AND command_id = ANY(%s::text[])
"""

SELECT_CANCELS_SQL = """
SELECT reference_command_id, player_id, effect FROM wallet.commands
WHERE operator_id = %s AND reference_command_id = ANY(%s::text[]) AND kind = 'CANCEL'
"""

UPSERT_BALANCES_SQL = """
INSERT INTO wallet.players AS p (operator_id, player_id, currency, balance, opening_balance)
SELECT %s, t.player_id, t.currency, t.balance, %s
FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS t(player_id, currency, balance)
ON CONFLICT (operator_id, player_id, currency)
DO UPDATE SET balance = excluded.balance, updated_at = now()
"""

INSERT_ENTRY_SQL = """
INSERT INTO wallet.commands (
    operator_id, command_id, player_id, kind, amount, currency, reference_command_id,
    correlation_id, provider_id, transaction_id, round_id, game_id, issued_at,
    effect, delta, status, balance_after, reason, replied_at, kafka_partition, kafka_offset
) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""

RETRYABLE = (pg_errors.UniqueViolation, pg_errors.DeadlockDetected, pg_errors.SerializationFailure)


@dataclass(frozen=True)
class Item:
    """One decoded command of a batch, where it was read, and what is wrong with it."""

    command: Command
    problem: str | None
    partition: int | None
    offset: int | None
    """Kafka partition and offset; None for a command that came over HTTP (the reference
    HTTP wallet), stored as NULL."""


@dataclass(frozen=True)
class BatchResult:
    decisions: list[Decision]
    attempts: int
    created_count: int


class WalletStore:
    def __init__(self, conn: psycopg.AsyncConnection[tuple[object, ...]]):
        self.conn = conn

    @classmethod
    async def connect(cls, database_url: str) -> WalletStore:
        conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
        return cls(conn)

    async def close(self) -> None:
        await self.conn.close()

    async def ensure_schema(self) -> None:
        """Create the schema if it is missing (idempotent; safe with concurrent starts)."""
        async with self.conn.transaction():
            await self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_ID,))
            await self.conn.execute(SCHEMA_SQL)

    async def apply_batch(
        self,
        operator_id: str,
        starting_balance: int,
        items: Sequence[Item],
        now: datetime,
        policy: Policy | None = None,
    ) -> BatchResult:
        """Apply ``items`` (in partition order) in one transaction and return one decision
        per item. A lost race (unique violation, deadlock) rolls back and retries."""
        for attempt in range(1, ATTEMPT_COUNT_MAX + 1):
            try:
                async with self.conn.transaction():
                    book = await self._load(operator_id, starting_balance, items)
                    if policy is not None:
                        book.policy = policy
                    decisions = [book.apply(i.command, i.problem, now) for i in items]
                    await self._write(operator_id, starting_balance, book, items)
                return BatchResult(decisions, attempt, len(book.created))
            except RETRYABLE:
                if attempt == ATTEMPT_COUNT_MAX:
                    raise
        raise AssertionError("unreachable")

    async def _load(self, operator_id: str, starting_balance: int, items: Sequence[Item]) -> Book:
        commands = [i.command for i in items]
        players = sorted({c.player_id for c in commands})
        named = {c.command_id for c in commands} | {
            c.reference_command_id for c in commands if c.reference_command_id
        }
        debit_ids = {c.command_id for c in commands if c.kind == "DEBIT"} | {
            c.reference_command_id
            for c in commands
            if c.kind == "CANCEL" and c.reference_command_id
        }
        conn = self.conn
        await conn.execute(LOCK_PLAYERS_SQL, ([f"{operator_id}:{p}" for p in players],))
        async with conn.pipeline():
            balances_cur = await conn.execute(SELECT_BALANCES_SQL, (operator_id, players))
            entries_cur = await conn.execute(SELECT_ENTRIES_SQL, (operator_id, sorted(named)))
            cancels_cur = await conn.execute(SELECT_CANCELS_SQL, (operator_id, sorted(debit_ids)))
            balance_rows = await balances_cur.fetchall()
            entry_rows = await entries_cur.fetchall()
            cancel_rows = await cancels_cur.fetchall()
        cancels: dict[str, list[tuple[str, Effect]]] = {}
        for ref, player, effect in cancel_rows:
            cancels.setdefault(str(ref), []).append((str(player), Effect(str(effect))))
        return Book(
            operator_id=operator_id,
            starting_balance=starting_balance,
            balances={(str(p), str(c)): int(b) for p, c, b in balance_rows},  # type: ignore[call-overload]
            entries={str(row[0]): _entry(row) for row in entry_rows},
            cancels=cancels,
        )

    async def _write(
        self, operator_id: str, starting_balance: int, book: Book, items: Sequence[Item]
    ) -> None:
        if book.touched:
            accounts = sorted(book.touched)
            await self.conn.execute(
                UPSERT_BALANCES_SQL,
                (
                    operator_id,
                    starting_balance,
                    [p for p, _ in accounts],
                    [c for _, c in accounts],
                    [book.touched[a] for a in accounts],
                ),
            )
        if book.new_entries:
            first: dict[str, Item] = {}
            for item in items:
                first.setdefault(item.command.command_id, item)
            rows = []
            for e in book.new_entries:
                item = first[e.command_id]
                c = item.command
                rows.append((
                    operator_id, e.command_id, e.player_id, e.kind, e.amount, e.currency,
                    e.reference_command_id, e.correlation_id, c.provider_id, c.transaction_id,
                    c.round_id, c.game_id, c.issued_at, e.effect.value, e.delta, e.status.value,
                    e.balance, e.reason, e.replied_at, item.partition, item.offset,
                ))  # fmt: skip
            async with self.conn.cursor() as cur:
                await cur.executemany(INSERT_ENTRY_SQL, rows)


def _entry(row: tuple[object, ...]) -> Entry:
    (cid, corr, player, kind, amount, currency, ref, effect, delta, status, balance, at, why) = row
    assert isinstance(at, datetime)
    return Entry(
        command_id=str(cid),
        correlation_id=str(corr),
        player_id=str(player),
        kind=str(kind),
        amount=int(amount),  # type: ignore[call-overload]
        currency=str(currency),
        reference_command_id=None if ref is None else str(ref),
        effect=Effect(str(effect)),
        delta=int(delta),  # type: ignore[call-overload]
        status=Status(str(status)),
        balance=None if balance is None else int(balance),  # type: ignore[call-overload]
        replied_at=at,
        reason=None if why is None else str(why),
    )
