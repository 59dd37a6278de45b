"""A batch of journal events written set-based: the batch is folded in memory into one row
per key of every table, the rows go to PostgreSQL by binary ``COPY`` (straight into the
append-only tables, into temporary staging tables for the others), and one ``INSERT ...
SELECT ... ON CONFLICT`` per table merges the staged rows with what the table holds. A batch
costs a dozen round trips, whatever its size.

The result is, row for row, what :class:`agg_projector.apply.Applier` gives by running its
per-event SQL for each event in order (the definition; tests hold the two against each
other). How each table's fold reproduces the per-event upserts:

- ``journal``, ``transaction_changes``: one row per event (the events are fresh: deduped by
  id before), copied as they are;
- ``transactions``: the first event of a key in the batch gives the inserted row, each later
  one applies its update (status, ``updated_at``, ``last_event_id``; the amount too for the
  rollback row of ``BetRolledBack``). Rows with an amount update and rows without are merged
  by two statements, each with its own ``DO UPDATE`` list. The currency of a
  ``RollbackRecorded`` row is the named bet's: the table's if the bet was there before the
  batch, else the batch's if an earlier event of the batch wrote the bet, else ``XXX``;
- ``rounds``: totals summed, ``updated_at`` the latest, closed if any event closed it
  (``RoundClosed``: ``closed_by`` PROVIDER, ``RoundAutoClosed``: AUTO), with the last
  close's time and kind;
- ``balances``, ``demo_balances``: "replace if not older" folded is the last of the batch's
  reports with the latest time, merged with the same condition;
- ``sessions``: the first of the batch (``DO NOTHING``);
- ``revenue_daily``: sums per key, merged by addition (commutative: the only table whose rows
  gather several players, hence several partitions; merged in key order, so concurrent
  writers lock its rows in one order and cannot deadlock).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from agg_projector.apply import (
    CAMPAIGN_EVENTS,
    DEMO_EVENTS,
    JournalEvent,
    campaign_sql,
    rejection_rule,
    revenue_wins,
    saturated,
    transfer_kind,
)
from agg_projector.apply import added as sum_sql

TxnKey = tuple[str, str, str, str]
"""(operator, provider, player, transaction)."""
RevenueKey = tuple[str, str, str, str, date]
"""(operator, provider, game, currency, UTC day)."""

_STAGING = {
    "agg_stage_transactions": (
        "operator_id text, provider_id text, transaction_id text, player_id text, kind text,"
        " status text, amount bigint, currency text, round_id text, game_id text,"
        " reference_transaction_id text, first_event_at timestamptz, updated_at timestamptz,"
        " last_event_id text, amount_set boolean, currency_of_bet boolean, rule text"
    ),
    "agg_stage_rounds": (
        "operator_id text, provider_id text, round_id text, player_id text, game_id text,"
        " currency text, bet_total bigint, win_total bigint, refund_total bigint, status text,"
        " opened_at timestamptz, updated_at timestamptz, closed_at timestamptz, closed_by text"
    ),
    "agg_stage_balances": (
        "operator_id text, player_id text, currency text, balance bigint, event_id text,"
        " reported_at timestamptz"
    ),
    "agg_stage_demo_balances": (
        "operator_id text, player_id text, currency text, balance bigint, event_id text,"
        " reported_at timestamptz"
    ),
    "agg_stage_sessions": (
        "session_id text, operator_id text, player_id text, provider_id text, game_id text,"
        " currency text, country text, mode text, opened_at timestamptz, expires_at timestamptz"
    ),
    "agg_stage_revenue": (
        "operator_id text, provider_id text, game_id text, currency text, day date,"
        " bets bigint, wins bigint, refunds bigint, bonus_wins bigint, jackpot_wins bigint,"
        " promo_wins bigint"
    ),
}
"""Temporary tables of the session (emptied at each commit), one per merged table."""

_TYPES = {
    "journal": ["text", "text", "text", "text", "text", "text", "timestamptz", "text", "text",
                "int8", "text", "int8", "int4", "int8", "jsonb"],
    "transaction_changes": ["text", "text", "text", "text", "text", "timestamptz", "text",
                            "text", "text"],
    "agg_stage_transactions": ["text", "text", "text", "text", "text", "text", "int8", "text",
                               "text", "text", "text", "timestamptz", "timestamptz", "text",
                               "bool", "bool", "text"],
    "transactions": ["text", "text", "text", "text", "text", "text", "int8", "text", "text",
                     "text", "text", "timestamptz", "timestamptz", "text", "text"],
    "agg_stage_rounds": ["text", "text", "text", "text", "text", "text", "int8", "int8", "int8",
                         "text", "timestamptz", "timestamptz", "timestamptz", "text"],
    "agg_stage_balances": ["text", "text", "text", "int8", "text", "timestamptz"],
    "agg_stage_demo_balances": ["text", "text", "text", "int8", "text", "timestamptz"],
    "agg_stage_sessions": ["text", "text", "text", "text", "text", "text", "text", "text",
                           "timestamptz", "timestamptz"],
    "agg_stage_revenue": ["text", "text", "text", "text", "date", "int8", "int8", "int8",
                          "int8", "int8", "int8"],
}  # fmt: skip

_JOURNAL_COLUMNS = (
    "event_id, event_type, operator_id, player_id, provider_id, correlation_id, occurred_at,"
    ' transaction_id, round_id, amount, currency, balance, partition, "offset", payload'
)
_CHANGES_COLUMNS = (
    "event_id, operator_id, provider_id, transaction_id, status, occurred_at, correlation_id,"
    " player_id, rule"
)


def _payload_dumps(datum: Any) -> bytes:
    """The journal's ``payload``: the datum as JSON, timestamps ISO-8601 (as ``json.dumps``
    with ``datetime.isoformat`` writes them; the same ``jsonb``)."""
    return orjson.dumps(datum)


def utc_day(at: datetime) -> date:
    """``(at at time zone 'UTC')::date``."""
    return at.astimezone(UTC).date()


@dataclass
class Revenue:
    """Bets, wins and refunds, and the bonus, jackpot and promotion wins, per (operator,
    provider, game, currency, UTC day): additive, so it can be gathered over several batches
    (a replay's worker) and merged once."""

    sums: dict[RevenueKey, list[int]] = field(default_factory=dict)

    def add(self, key: RevenueKey, bets: int, wins: int, refunds: int,
            kinds: tuple[int, int, int] = (0, 0, 0)) -> None:  # fmt: skip
        """``kinds``: the (bonus, jackpot, promo) wins."""
        row = self.sums.get(key)
        if row is None:
            self.sums[key] = [bets, wins, refunds, *kinds]
        else:
            for i, amount in enumerate((bets, wins, refunds, *kinds)):
                row[i] = saturated(row[i] + amount)

    def merge(self, other: Revenue) -> None:
        for key, (bets, wins, refunds, bonus, jackpot, promo) in other.sums.items():
            self.add(key, bets, wins, refunds, (bonus, jackpot, promo))

    def __bool__(self) -> bool:
        return bool(self.sums)


@dataclass
class Written:
    """What one writer alone has written into a fresh schema (a replay's worker, the only
    writer of its partitions' keys): the keys of its ``transactions`` rows, with their
    currency, and of its ``rounds`` rows. A batch's rows of keys not here are new: they are
    copied straight into their table, only the others are merged. :meth:`BatchWriter.write`
    returns what a batch adds, for the caller to :meth:`add` once the batch has committed."""

    transactions: dict[TxnKey, str] = field(default_factory=dict)
    rounds: set[TxnKey] = field(default_factory=set)

    def add(self, other: Written) -> None:
        self.transactions.update(other.transactions)
        self.rounds |= other.rounds


class BatchRows:
    """One batch of fresh events, folded into the rows each table gets."""

    def __init__(self, revenue: Revenue | None = None) -> None:
        self.journal: list[tuple[Any, ...]] = []
        self.changes: list[tuple[Any, ...]] = []
        self.transactions: dict[TxnKey, list[Any]] = {}
        self.rounds: dict[TxnKey, list[Any]] = {}
        self.balances: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        self.demo_balances: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        self.sessions: dict[str, tuple[Any, ...]] = {}
        self.campaigns: list[tuple[str, dict[str, Any]]] = []
        """The campaign statements of the batch's events, in order (apply.campaign_sql)."""
        self.revenue = Revenue() if revenue is None else revenue

    def add_all(self, events: Iterable[JournalEvent]) -> BatchRows:
        for event in events:
            self.add(event)
        return self

    def add(self, event: JournalEvent) -> None:
        d = event.datum
        name = event.name
        at = d["occurred_at"]
        get = d.get
        self.journal.append((
            d["event_id"], name, d["operator_id"], d["player_id"], d["provider_id"],
            d["correlation_id"], at, get("transaction_id"), get("round_id"), get("amount"),
            get("currency"), get("balance"), event.partition, event.offset,
            Jsonb(d, _payload_dumps),
        ))  # fmt: skip
        if name in DEMO_EVENTS and get("mode", "real") != "real":
            if get("balance") is not None and get("currency"):
                self._report(self.demo_balances, d)
            return
        if name == "BetAccepted":
            self._txn(d, "BET", "ACCEPTED")
            self._balance(d)
            self._round(d, bet=d["amount"])
            self._revenue(d, bets=d["amount"])
        elif name == "WinCredited":
            self._txn(d, "WIN", "CREDITED")
            self._balance(d)
            self._round(d, win=d["amount"])
            self._revenue(d, wins=d["amount"], kind=d.get("win_kind", "REGULAR"))
        elif name == "RoundClosed":
            self._round_closed(d, "PROVIDER")
        elif name == "RoundAutoClosed":
            self._round_closed(d, "AUTO")
        elif name == "BetRolledBack":
            self._txn(d, "BET", "ROLLED_BACK")
            self._balance(d)
            self._round(d, refund=d["amount"])
            self._revenue(d, refunds=d["amount"])
            self._rollback_row(d)
        elif name == "BetRejected":
            self._txn(d, "BET", f"REJECTED:{d['status']}", rejection_rule(d))
            self._balance(d)
        elif name == "DebitTimedOut":
            self._txn(d, "BET", "TIMED_OUT")
        elif name == "DebitCancelled":
            self._txn(d, "BET", "CANCELLED")
            self._balance(d)
        elif name == "CreditOwed":
            self._txn(d, "WIN", "OWED")
        elif name == "RollbackRecorded":
            self._rollback_recorded(d)
        elif name == "SessionOpened":
            if d["session_id"] not in self.sessions:
                self.sessions[d["session_id"]] = (
                    d["session_id"], d["operator_id"], d["player_id"], d["provider_id"],
                    d["game_id"], d["currency"], d["country"], d["mode"], at, d["expires_at"],
                )  # fmt: skip
        elif name == "FundsTransferred":
            self._txn(d, transfer_kind(d), "TRANSFERRED")
            self._balance(d)
        elif name == "TransferRejected":
            self._txn(d, transfer_kind(d), f"REJECTED:{d['status']}", rejection_rule(d))
            self._balance(d)
        elif name == "FreeSpinPlayed":
            self._txn(d, "BET", "FREE_SPIN")
            self._balance(d)
            self._round(d)
        elif name == "FreeSpinRolledBack":
            self._txn(d, "BET", "FREE_SPIN_ROLLED_BACK")
            self._balance(d)
        elif name == "DuplicateConflictDetected":
            self.changes.append((d["event_id"], d["operator_id"], d["provider_id"],
                                 d["transaction_id"], "DUPLICATE_CONFLICT", at,
                                 d["correlation_id"], d["player_id"], None))  # fmt: skip

        if name in CAMPAIGN_EVENTS:
            statement = campaign_sql(name, d)
            if statement is not None:
                self.campaigns.append(statement)

    # --- the folds (each mirrors one building block of Applier) -------------------------

    def _txn(self, d: dict[str, Any], kind: str, status: str, rule: str | None = None) -> None:
        txn_id = d["transaction_id"]
        at = d["occurred_at"]
        key = (d["operator_id"], d["provider_id"], d["player_id"], txn_id)
        row = self.transactions.get(key)
        if row is None:
            self.transactions[key] = [
                d["operator_id"], d["provider_id"], txn_id, d["player_id"], kind, status,
                d.get("amount", 0), d.get("currency", ""), d.get("round_id"), d.get("game_id"),
                None, at, at, d["event_id"], False, False, rule,
            ]  # fmt: skip
        else:
            row[5], row[12], row[13], row[16] = status, at, d["event_id"], rule
        self.changes.append((d["event_id"], d["operator_id"], d["provider_id"], txn_id, status,
                             at, d["correlation_id"], d["player_id"], rule))  # fmt: skip

    def _rollback_row(self, d: dict[str, Any]) -> None:
        rollback_id = d["rollback_transaction_id"]
        at = d["occurred_at"]
        key = (d["operator_id"], d["provider_id"], d["player_id"], rollback_id)
        row = self.transactions.get(key)
        if row is None:
            self.transactions[key] = [
                d["operator_id"], d["provider_id"], rollback_id, d["player_id"], "ROLLBACK",
                "REFUNDED", d["amount"], d.get("currency") or "", d.get("round_id"),
                d.get("game_id"), d["transaction_id"], at, at, d["event_id"], True, False, None,
            ]  # fmt: skip
        else:
            row[5], row[6], row[12], row[13] = "REFUNDED", d["amount"], at, d["event_id"]
            row[14] = True

    def _rollback_recorded(self, d: dict[str, Any]) -> None:
        rollback_id = d["rollback_transaction_id"]
        at = d["occurred_at"]
        status = "RECORDED" if d["bet_known"] else "TOMBSTONE"
        key = (d["operator_id"], d["provider_id"], d["player_id"], rollback_id)
        row = self.transactions.get(key)
        if row is not None:
            row[5], row[12], row[13] = status, at, d["event_id"]
            return
        bet = self.transactions.get(
            (d["operator_id"], d["provider_id"], d["player_id"], d["reference_transaction_id"])
        )
        # the table's currency of the bet wins over this fallback when the bet was there before
        fallback = "XXX" if bet is None else bet[7]
        self.transactions[key] = [
            d["operator_id"], d["provider_id"], rollback_id, d["player_id"], "ROLLBACK", status,
            0, fallback, d.get("round_id"), d.get("game_id"), d["reference_transaction_id"],
            at, at, d["event_id"], False, True, None,
        ]  # fmt: skip

    def _report(self, into: dict[tuple[str, str, str], tuple[Any, ...]],
                d: dict[str, Any]) -> None:  # fmt: skip
        key = (d["operator_id"], d["player_id"], d["currency"])
        current = into.get(key)
        if current is None or current[5] <= d["occurred_at"]:
            into[key] = (d["operator_id"], d["player_id"], d["currency"], d["balance"],
                         d["event_id"], d["occurred_at"])  # fmt: skip

    def _balance(self, d: dict[str, Any]) -> None:
        if d.get("balance") is not None:
            self._report(self.balances, d)

    def _round(self, d: dict[str, Any], *, bet: int = 0, win: int = 0, refund: int = 0) -> None:
        if not d.get("round_id"):
            return
        at = d["occurred_at"]
        key = (d["operator_id"], d["provider_id"], d["player_id"], d["round_id"])
        row = self.rounds.get(key)
        if row is None:
            self.rounds[key] = [
                d["operator_id"], d["provider_id"], d["round_id"], d["player_id"],
                d.get("game_id"), d["currency"], bet, win, refund, "OPEN", at, at, None, None,
            ]  # fmt: skip
        else:
            row[6] = saturated(row[6] + bet)
            row[7] = saturated(row[7] + win)
            row[8] = saturated(row[8] + refund)
            if at > row[11]:
                row[11] = at

    def _round_closed(self, d: dict[str, Any], closed_by: str) -> None:
        at = d["occurred_at"]
        key = (d["operator_id"], d["provider_id"], d["player_id"], d["round_id"])
        row = self.rounds.get(key)
        if row is None:
            self.rounds[key] = [
                d["operator_id"], d["provider_id"], d["round_id"], d["player_id"],
                d.get("game_id"), d["currency"], 0, 0, 0, "CLOSED", at, at, at, closed_by,
            ]  # fmt: skip
        else:
            row[9], row[12], row[13] = "CLOSED", at, closed_by
            if at > row[11]:
                row[11] = at

    def _revenue(self, d: dict[str, Any], *, bets: int = 0, wins: int = 0, refunds: int = 0,
                 kind: str = "REGULAR") -> None:  # fmt: skip
        key = (d["operator_id"], d["provider_id"], d.get("game_id") or "", d["currency"],
               utc_day(d["occurred_at"]))  # fmt: skip
        regular, kinds = revenue_wins(wins, kind)
        self.revenue.add(key, bets, regular, refunds, kinds)


class BatchWriter:
    """Writes :class:`BatchRows` into the tables of one projection schema, inside the
    caller's transaction."""

    def __init__(self, schema: str):
        self.schema = schema
        self._q: dict[str, sql.Composed] = {}
        self._staged: set[int] = set()

    def q(self, text: str) -> sql.Composed:
        if text not in self._q:
            self._q[text] = sql.SQL(text).format(s=sql.Identifier(self.schema))
        return self._q[text]

    def _stage(self, cur: psycopg.Cursor[Any]) -> None:
        """The session's staging tables, created once per connection."""
        conn_id = id(cur.connection)
        if conn_id in self._staged:
            return
        for name, columns in _STAGING.items():
            cur.execute(
                sql.SQL("create temporary table if not exists {} ({}) on commit delete rows")
                .format(sql.Identifier(name), sql.SQL(columns))
            )  # fmt: skip
        self._staged.add(conn_id)

    @staticmethod
    def _copy(cur: psycopg.Cursor[Any], statement: sql.Composed, table: str,
              rows: Iterable[Sequence[Any]]) -> None:  # fmt: skip
        with cur.copy(statement) as copy:
            copy.set_types(_TYPES[table])
            for row in rows:
                copy.write_row(row)

    def write(self, cur: psycopg.Cursor[Any], rows: BatchRows, *, revenue: bool = True,
              written: Written | None = None) -> Written | None:  # fmt: skip
        """Every table but ``revenue_daily`` (also that one unless ``revenue`` is false: the
        caller then writes ``rows.revenue`` later, with :meth:`write_revenue`). ``written``:
        see :class:`Written`; what the batch adds to it is returned."""
        self._stage(cur)
        s = self.q
        if rows.journal:
            copy_journal = f"copy {{s}}.journal ({_JOURNAL_COLUMNS}) from stdin (format binary)"
            self._copy(cur, s(copy_journal), "journal", rows.journal)
        if rows.changes:
            self._copy(cur, s(f"copy {{s}}.transaction_changes ({_CHANGES_COLUMNS})"
                              " from stdin (format binary)"),
                       "transaction_changes", rows.changes)  # fmt: skip
        transactions: Iterable[list[Any]] = rows.transactions.values()
        rounds: Iterable[list[Any]] = rows.rounds.values()
        added = None
        if written is not None:
            transactions, rounds, added = self._write_new(cur, rows, written)
        if transactions:
            self._copy(cur, s("copy agg_stage_transactions from stdin (format binary)"),
                       "agg_stage_transactions", transactions)  # fmt: skip
            merge = (
                "insert into {s}.transactions as t (operator_id, provider_id, transaction_id,"
                " player_id, kind, status, amount, currency, round_id, game_id,"
                " reference_transaction_id, first_event_at, updated_at, last_event_id, rule)"
                " select operator_id, provider_id, transaction_id, player_id, kind, status, amount,"
                " case when s.currency_of_bet then coalesce((select b.currency"
                " from {s}.transactions b where b.operator_id = s.operator_id"
                " and b.provider_id = s.provider_id and b.player_id = s.player_id"
                " and b.transaction_id = s.reference_transaction_id), s.currency)"
                " else s.currency end,"
                " round_id, game_id, reference_transaction_id, first_event_at, updated_at,"
                " last_event_id, rule from agg_stage_transactions s where {where}"
                " on conflict (operator_id, provider_id, player_id, transaction_id) do update set"
                " status = excluded.status,{amount} updated_at = excluded.updated_at,"
                " last_event_id = excluded.last_event_id{rule}"
            )
            # a rollback row (amount_set) has no rule; it keeps the rule it has (none)
            cur.execute(s(merge.format(s="{s}", where="not amount_set", amount="",
                                       rule=", rule = excluded.rule")))  # fmt: skip
            if any(row[14] for row in transactions):
                amount = " amount = excluded.amount,"
                cur.execute(s(merge.format(s="{s}", where="amount_set", amount=amount, rule="")))
        if rounds:
            self._copy(cur, s("copy agg_stage_rounds from stdin (format binary)"),
                       "agg_stage_rounds", rounds)  # fmt: skip
            cur.execute(s(
                "insert into {s}.rounds as t (operator_id, provider_id, round_id, player_id,"
                " game_id, currency, bet_total, win_total, refund_total, status, opened_at,"
                " updated_at, closed_at, closed_by) select * from agg_stage_rounds"
                " on conflict (operator_id, provider_id, player_id, round_id) do update set"
                " " + sum_sql("t", "bet_total") + ","
                " " + sum_sql("t", "win_total") + ","
                " " + sum_sql("t", "refund_total") + ","
                " updated_at = greatest(t.updated_at, excluded.updated_at),"
                " status = case when excluded.status = 'CLOSED' then 'CLOSED' else t.status end,"
                " closed_at = case when excluded.status = 'CLOSED' then excluded.closed_at"
                " else t.closed_at end,"
                " closed_by = case when excluded.status = 'CLOSED' then excluded.closed_by"
                " else t.closed_by end"
            ))  # fmt: skip
        for table, reports in (("balances", rows.balances), ("demo_balances", rows.demo_balances)):
            if not reports:
                continue
            stage = f"agg_stage_{table}"
            self._copy(cur, s(f"copy {stage} from stdin (format binary)"), stage,
                       reports.values())  # fmt: skip
            cur.execute(s(
                f"insert into {{s}}.{table} as t (operator_id, player_id, currency, balance,"
                f" event_id, reported_at) select * from {stage}"
                " on conflict (operator_id, player_id, currency) do update set"
                " balance = excluded.balance, event_id = excluded.event_id,"
                " reported_at = excluded.reported_at"
                " where t.reported_at <= excluded.reported_at"
            ))  # fmt: skip
        if rows.sessions:
            self._copy(cur, s("copy agg_stage_sessions from stdin (format binary)"),
                       "agg_stage_sessions", rows.sessions.values())  # fmt: skip
            cur.execute(s(
                "insert into {s}.sessions (session_id, operator_id, player_id, provider_id,"
                " game_id, currency, country, mode, opened_at, expires_at)"
                " select * from agg_stage_sessions on conflict do nothing"
            ))  # fmt: skip
        for text, params in rows.campaigns:  # few, each on the row the one before left
            cur.execute(s(text), params)
        if revenue:
            self.write_revenue(cur, rows.revenue)
        return added

    def _write_new(
        self, cur: psycopg.Cursor[Any], rows: BatchRows, written: Written
    ) -> tuple[list[list[Any]], list[list[Any]], Written]:
        """Copy the rows of keys ``written`` does not hold straight into ``transactions`` and
        ``rounds`` (what the merge would insert); the other rows, to merge, and the keys
        added."""
        added = Written()
        new_txns: list[list[Any]] = []
        old_txns: list[list[Any]] = []
        for key, row in rows.transactions.items():
            if key in written.transactions:
                old_txns.append(row)
                continue
            if row[15]:  # the currency of the named bet: the table's, if this writer wrote it
                bet = (row[0], row[1], row[3], row[10])
                row = [*row[:7], written.transactions.get(bet, row[7]), *row[8:]]
            added.transactions[key] = row[7]
            new_txns.append(row)
        new_rounds: list[list[Any]] = []
        old_rounds: list[list[Any]] = []
        for key, row in rows.rounds.items():
            if key in written.rounds:
                old_rounds.append(row)
            else:
                added.rounds.add(key)
                new_rounds.append(row)
        if new_txns:
            self._copy(cur, self.q(
                "copy {s}.transactions (operator_id, provider_id, transaction_id, player_id,"
                " kind, status, amount, currency, round_id, game_id, reference_transaction_id,"
                " first_event_at, updated_at, last_event_id, rule) from stdin (format binary)"),
                "transactions", ((*row[:14], row[16]) for row in new_txns))  # fmt: skip
        if new_rounds:
            self._copy(cur, self.q("copy {s}.rounds (operator_id, provider_id, round_id,"
                                   " player_id, game_id, currency, bet_total, win_total,"
                                   " refund_total, status, opened_at, updated_at, closed_at,"
                                   " closed_by) from stdin (format binary)"),
                       "agg_stage_rounds", new_rounds)  # fmt: skip
        return old_txns, old_rounds, added

    def write_revenue(self, cur: psycopg.Cursor[Any], revenue: Revenue) -> None:
        if not revenue:
            return
        self._stage(cur)
        self._copy(cur, self.q("copy agg_stage_revenue from stdin (format binary)"),
                   "agg_stage_revenue",
                   ((*key, *sums) for key, sums in revenue.sums.items()))  # fmt: skip
        cur.execute(self.q(
            "insert into {s}.revenue_daily as t (operator_id, provider_id, game_id, currency,"
            " day, bets, wins, refunds, bonus_wins, jackpot_wins, promo_wins)"
            " select * from agg_stage_revenue"
            " order by operator_id, provider_id, game_id, currency, day"
            " on conflict (operator_id, provider_id, game_id, currency, day) do update set"
            " " + sum_sql("t", "bets") + ", " + sum_sql("t", "wins") + ","
            " " + sum_sql("t", "refunds") + ","
            " " + sum_sql("t", "bonus_wins") + ","
            " " + sum_sql("t", "jackpot_wins") + ","
            " " + sum_sql("t", "promo_wins") + ""
        ))  # fmt: skip
