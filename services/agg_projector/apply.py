"""How each journal event changes the projections: SQL per event type, run in the
projector's batch transaction. An event whose id is already in the journal table changes
nothing (the saga may republish an event after a crash, at a new offset, with the same id).

A money event of demo play (``mode`` other than ``real``) is journaled like any other, and
changes nothing else but the player's demo balance (``demo_balances``): no ledger row, no
round, no revenue, no real balance.

A transfer-wallet operator's money events (``wallet: transfer``) are real money and are
projected like the others, their balance being the one the aggregator holds; its transfers
(``FundsTransferred``, ``TransferRejected``) are ledger rows of kind DEPOSIT or WITHDRAW
(provider ``""``) and report that balance too.

Free-spin campaigns (``CampaignGranted``, ``CampaignCancelled``, ``CampaignExpired``, and the
spins left of ``FreeSpinPlayed`` and ``FreeSpinRolledBack``, the bonus wins of ``WinCredited``
naming a campaign) fold into ``campaigns`` by per-event statements (:func:`campaign_sql`)
that the batch writer runs in the events' order too: few events, and each one's row depends
on the one before."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from psycopg import sql

DEMO_EVENTS = frozenset({"BetAccepted", "BetRejected", "BetRolledBack", "WinCredited",
                         "RollbackRecorded", "DuplicateConflictDetected"})  # fmt: skip
"""The events that carry a session ``mode`` (demo play's are kept apart)."""


WIN_KINDS = ("BONUS", "JACKPOT", "PROMO")
"""The win kinds revenue reports apart (in this order), outside the game's wins and GGR."""


def revenue_wins(amount: int, kind: str) -> tuple[int, tuple[int, int, int]]:
    """A win's amount as revenue sees it: the game's wins, or (bonus, jackpot, promo) wins.
    A kind a later writer added and this one does not know counts as the game's."""
    if kind not in WIN_KINDS:
        return amount, (0, 0, 0)
    kinds = [0, 0, 0]
    kinds[WIN_KINDS.index(kind)] = amount
    return 0, (kinds[0], kinds[1], kinds[2])


SUM_MAX = 2**63 - 1
"""Where the projections' sums (revenue, round totals: bigint) stop: amounts of the largest
size add up past 64 bits, and a sum that stops there is past any real book (the journal
keeps every amount). Saturating sums of amounts >= 0 are order-free: a replay folds them to
the same figures whatever the batches."""


def saturated(total: int) -> int:
    return total if total <= SUM_MAX else SUM_MAX


def added(table: str, column: str) -> str:
    """SQL of ``column`` of ``table`` plus the excluded row's, saturating at SUM_MAX."""
    return (f"{column} = least({table}.{column}::numeric + excluded.{column},"
            f" {SUM_MAX})::bigint")  # fmt: skip


def transfer_kind(d: dict[str, Any]) -> str:
    """The ledger kind of a transfer event: DEPOSIT (funds in) or WITHDRAW (out)."""
    return "DEPOSIT" if d["direction"] == "IN" else "WITHDRAW"


def rejection_rule(d: dict[str, Any]) -> str | None:
    """The rule of a BetRejected; None for one written before events carried it."""
    return d.get("rule") or None


CAMPAIGN_EVENTS = frozenset({"CampaignGranted", "CampaignCancelled", "CampaignExpired",
                             "FreeSpinPlayed", "FreeSpinRolledBack", "WinCredited"})  # fmt: skip
"""The events that change a ``campaigns`` row (a WinCredited only if it names a campaign)."""

_CAMPAIGN_SQL = {
    "CampaignGranted": (
        "insert into {s}.campaigns (operator_id, player_id, campaign_id, provider_id, games,"
        " spins, spins_left, bet_value, currency, expires_at, state, wallet, granted_at,"
        " updated_at, last_event_id) values (%(op)s, %(pl)s, %(c)s, %(pv)s, %(games)s,"
        " %(spins)s, %(left)s, %(bet)s, %(cur)s, %(exp)s, 'ACTIVE', %(wallet)s, %(at)s, %(at)s,"
        " %(ev)s) on conflict (operator_id, player_id, campaign_id) do nothing"
    ),
    "CampaignCancelled": (
        "update {s}.campaigns set state = 'CANCELLED', spins_left = %(left)s, ended_at = %(at)s,"
        " updated_at = %(at)s, last_event_id = %(ev)s"
        " where operator_id = %(op)s and player_id = %(pl)s and campaign_id = %(c)s"
    ),
    "CampaignExpired": (
        "update {s}.campaigns set state = 'EXPIRED', spins_left = %(left)s, ended_at = %(at)s,"
        " updated_at = %(at)s, last_event_id = %(ev)s"
        " where operator_id = %(op)s and player_id = %(pl)s and campaign_id = %(c)s"
    ),
    "FreeSpinPlayed": (
        "update {s}.campaigns set spins_left = %(left)s,"
        " state = case when %(left)s = 0 then 'USED_UP' else state end,"
        " ended_at = case when %(left)s = 0 then %(at)s else ended_at end,"
        " updated_at = %(at)s, last_event_id = %(ev)s"
        " where operator_id = %(op)s and player_id = %(pl)s and campaign_id = %(c)s"
    ),
    "FreeSpinRolledBack": (
        "update {s}.campaigns set spins_left = coalesce(%(left)s, spins_left),"
        " state = case when state = 'USED_UP' then 'ACTIVE' else state end,"
        " ended_at = case when state = 'USED_UP' then null else ended_at end,"
        " updated_at = %(at)s, last_event_id = %(ev)s"
        " where operator_id = %(op)s and player_id = %(pl)s and campaign_id = %(c)s"
    ),
    "WinCredited": (
        "update {s}.campaigns set wins = wins + 1, win_total = win_total + %(amount)s,"
        " updated_at = greatest(updated_at, %(at)s)"
        " where operator_id = %(op)s and player_id = %(pl)s and campaign_id = %(c)s"
    ),
}


def campaign_sql(name: str, d: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The statement (``{s}`` the schema) and parameters by which event ``name`` changes
    its campaign's row, if it changes one."""
    text = _CAMPAIGN_SQL.get(name)
    if text is None or d.get("campaign_id") is None:
        return None
    return text, {
        "op": d["operator_id"], "pl": d["player_id"], "c": d["campaign_id"],
        "pv": d["provider_id"], "games": d.get("games"), "spins": d.get("spins"),
        "left": d.get("spins_left"), "bet": d.get("bet_value"), "cur": d.get("currency"),
        "exp": d.get("expires_at"), "wallet": d.get("wallet"), "at": d["occurred_at"],
        "ev": d["event_id"], "amount": d.get("amount"),
    }  # fmt: skip


class JournalEvent(NamedTuple):
    """(A tuple: built once per record read, where a dataclass's ``__init__`` shows.)"""

    name: str
    """Short record name, e.g. ``BetAccepted``."""
    datum: dict[str, Any]
    partition: int
    offset: int


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


class Applier:
    """Writes events into the tables of one projection schema."""

    def __init__(self, schema: str):
        self.schema = schema
        self._q: dict[str, sql.Composed] = {}
        self.handlers: dict[str, Callable[[psycopg.Cursor[Any], dict[str, Any]], None]] = {
            "BetAccepted": self._bet_accepted,
            "BetRejected": self._bet_rejected,
            "DebitTimedOut": self._debit_timed_out,
            "DebitCancelled": self._debit_cancelled,
            "WinCredited": self._win_credited,
            "CreditOwed": self._credit_owed,
            "BetRolledBack": self._bet_rolled_back,
            "RollbackRecorded": self._rollback_recorded,
            "RoundClosed": self._round_closed,
            "RoundAutoClosed": self._round_auto_closed,
            "SessionOpened": self._session_opened,
            "DuplicateConflictDetected": self._conflict,
            "FundsTransferred": self._funds_transferred,
            "TransferRejected": self._transfer_rejected,
            "FreeSpinPlayed": self._free_spin_played,
            "FreeSpinRolledBack": self._free_spin_rolled_back,
        }

    def q(self, text: str) -> sql.Composed:
        if text not in self._q:
            self._q[text] = sql.SQL(text).format(s=sql.Identifier(self.schema))
        return self._q[text]

    # --- the batch -------------------------------------------------------------------------

    def apply(self, cur: psycopg.Cursor[Any], event: JournalEvent) -> None:
        d = event.datum
        cur.execute(
            self.q(
                "insert into {s}.journal (event_id, event_type, operator_id, player_id,"
                " provider_id, correlation_id, occurred_at, transaction_id, round_id, amount,"
                " currency, balance,"
                ' partition, "offset", payload) values'
                " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ),
            (
                d["event_id"], event.name, d["operator_id"], d["player_id"], d["provider_id"],
                d["correlation_id"], d["occurred_at"], d.get("transaction_id"), d.get("round_id"),
                d.get("amount"), d.get("currency"), d.get("balance"), event.partition,
                event.offset, json.dumps(d, default=_json_default),
            ),
        )  # fmt: skip
        handler = self.handlers.get(event.name)
        if event.name in DEMO_EVENTS and d.get("mode", "real") != "real":
            handler = self._demo
        if handler is not None:
            handler(cur, d)
        if event.name in CAMPAIGN_EVENTS:
            statement = campaign_sql(event.name, d)
            if statement is not None:
                cur.execute(self.q(statement[0]), statement[1])

    # --- building blocks -------------------------------------------------------------------

    def _txn(self, cur: psycopg.Cursor[Any], d: dict[str, Any], kind: str, status: str, *,
             transaction_id: str | None = None, amount: int | None = None,
             reference: str | None = None, rule: str | None = None) -> None:  # fmt: skip
        txn_id = transaction_id or d["transaction_id"]
        cur.execute(
            self.q(
                "insert into {s}.transactions (operator_id, provider_id, transaction_id, player_id,"
                " kind, status, amount, currency, round_id, game_id, reference_transaction_id,"
                " first_event_at, updated_at, last_event_id, rule)"
                " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " on conflict (operator_id, provider_id, player_id, transaction_id) do update set"
                " status = excluded.status, updated_at = excluded.updated_at,"
                " last_event_id = excluded.last_event_id, rule = excluded.rule"
            ),
            (
                d["operator_id"], d["provider_id"], txn_id, d["player_id"], kind, status,
                d.get("amount", 0) if amount is None else amount, d.get("currency", ""),
                d.get("round_id"), d.get("game_id"), reference, d["occurred_at"],
                d["occurred_at"], d["event_id"], rule,
            ),
        )  # fmt: skip
        cur.execute(
            self.q(
                "insert into {s}.transaction_changes (event_id, operator_id, provider_id,"
                " transaction_id, status, occurred_at, correlation_id, player_id, rule)"
                " values (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ),
            (d["event_id"], d["operator_id"], d["provider_id"], txn_id, status,
             d["occurred_at"], d["correlation_id"], d["player_id"], rule),
        )  # fmt: skip

    def _balance(self, cur: psycopg.Cursor[Any], d: dict[str, Any]) -> None:
        if d.get("balance") is None:
            return
        cur.execute(
            self.q(
                "insert into {s}.balances (operator_id, player_id, currency, balance, event_id,"
                " reported_at) values (%s, %s, %s, %s, %s, %s)"
                " on conflict (operator_id, player_id, currency) do update set"
                " balance = excluded.balance, event_id = excluded.event_id,"
                " reported_at = excluded.reported_at"
                " where {s}.balances.reported_at <= excluded.reported_at"
            ),
            (d["operator_id"], d["player_id"], d["currency"], d["balance"], d["event_id"],
             d["occurred_at"]),
        )  # fmt: skip

    def _round(self, cur: psycopg.Cursor[Any], d: dict[str, Any], *, bet: int = 0, win: int = 0,
               refund: int = 0) -> None:  # fmt: skip
        if not d.get("round_id"):
            return
        cur.execute(
            self.q(
                "insert into {s}.rounds (operator_id, provider_id, round_id, player_id, game_id,"
                " currency, bet_total, win_total, refund_total, opened_at, updated_at)"
                " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " on conflict (operator_id, provider_id, player_id, round_id) do update set"
                " " + added("{s}.rounds", "bet_total") + ","
                " " + added("{s}.rounds", "win_total") + ","
                " " + added("{s}.rounds", "refund_total") + ","
                " updated_at = greatest({s}.rounds.updated_at, excluded.updated_at)"
            ),
            (d["operator_id"], d["provider_id"], d["round_id"], d["player_id"], d.get("game_id"),
             d["currency"], bet, win, refund, d["occurred_at"], d["occurred_at"]),
        )  # fmt: skip

    def _revenue(self, cur: psycopg.Cursor[Any], d: dict[str, Any], *, bets: int = 0,
                 wins: int = 0, refunds: int = 0, kind: str = "REGULAR") -> None:  # fmt: skip
        regular, (bonus, jackpot, promo) = revenue_wins(wins, kind)
        cur.execute(
            self.q(
                "insert into {s}.revenue_daily (operator_id, provider_id, game_id, currency, day,"
                " bets, wins, refunds, bonus_wins, jackpot_wins, promo_wins)"
                " values (%s, %s, %s, %s, (%s at time zone 'UTC')::date, %s, %s, %s, %s, %s, %s)"
                " on conflict (operator_id, provider_id, game_id, currency, day) do update set"
                " " + added("{s}.revenue_daily", "bets") + ","
                " " + added("{s}.revenue_daily", "wins") + ","
                " " + added("{s}.revenue_daily", "refunds") + ","
                " " + added("{s}.revenue_daily", "bonus_wins") + ","
                " " + added("{s}.revenue_daily", "jackpot_wins") + ","
                " " + added("{s}.revenue_daily", "promo_wins") + ""
            ),
            (d["operator_id"], d["provider_id"], d.get("game_id") or "", d["currency"],
             d["occurred_at"], bets, regular, refunds, bonus, jackpot, promo),
        )  # fmt: skip

    # --- events ----------------------------------------------------------------------------

    def _bet_accepted(self, cur: psycopg.Cursor[Any], d: dict[str, Any]) -> None:
        self._txn(cur, d, "BET", "ACCEPTED")
        self._balance(cur, d)
        self._round(cur, d, bet=d["amount"])
        self._revenue(cur, d, bets=d["amount"])

    def _bet_rejected(self, cur: psycopg.Cursor[Any], d: dict[str, Any]) -> None:
        self._txn(cur, d, "BET", f"REJECTED:{d['status']}", rule=rejection_rule(d))
        self._balance(cur, d)

    def _debit_timed_out(self, cur: psycopg.Cursor[Any], d: dict[str, Any]) -> None:
        self._txn(cur, d, "BET", "TIMED_OUT")

    def _debit_cancelled(self, cur: psycopg.Cursor[Any], d: dict[str, Any]) -> None:
        self._txn(cur, d, "BET", "CANCELLED")
        self._balance(cur, d)

    def _win_credited(self, cur: psycopg.Cursor[Any], d: dict[str, Any]) -> None:
        self._txn(cur, d, "WIN", "CREDITED")
        self._balance(cur, d)
        self._round(cur, d, win=d["amount"])
        self._revenue(cur, d, wins=d["amount"], kind=d.get("win_kind", "REGULAR"))

    def _credit_owed(self, cur: psycopg.Cursor[Any], d: dict[str, Any]) -> None:
        self._txn(cur, d, "WIN", "OWED")

    def _bet_rolled_back(self, cur: psycopg.Cursor[Any], d: dict[str, Any]) -> None:
        self._txn(cur, d, "BET", "ROLLED_BACK")
        self._balance(cur, d)
        self._round(cur, d, refund=d["amount"])
        self._revenue(cur, d, refunds=d["amount"])
        self._rollback_row(cur, d, d["rollback_transaction_id"], d["transaction_id"], "REFUNDED",
                           d["amount"])  # fmt: skip

    def _rollback_row(self, cur: psycopg.Cursor[Any], d: dict[str, Any], rollback_id: str,
                      bet_id: str, status: str, amount: int) -> None:  # fmt: skip
        cur.execute(
            self.q(
                "insert into {s}.transactions (operator_id, provider_id, transaction_id, player_id,"
                " kind, status, amount, currency, round_id, game_id, reference_transaction_id,"
                " first_event_at, updated_at, last_event_id)"
                " values (%s, %s, %s, %s, 'ROLLBACK', %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " on conflict (operator_id, provider_id, player_id, transaction_id) do update set"
                " status = excluded.status, amount = excluded.amount,"
                " updated_at = excluded.updated_at, last_event_id = excluded.last_event_id"
            ),
            (d["operator_id"], d["provider_id"], rollback_id, d["player_id"], status, amount,
             d.get("currency") or "", d.get("round_id"), d.get("game_id"), bet_id,
             d["occurred_at"], d["occurred_at"], d["event_id"]),
        )  # fmt: skip

    def _rollback_recorded(self, cur: psycopg.Cursor[Any], d: dict[str, Any]) -> None:
        status = "RECORDED" if d["bet_known"] else "TOMBSTONE"
        # the event carries no currency: the bet's, if known (a subquery, not a read: the
        # batch runs in one pipeline, where a read would have to wait for everything before)
        cur.execute(
            self.q(
                "insert into {s}.transactions (operator_id, provider_id, transaction_id, player_id,"
                " kind, status, amount, currency, round_id, game_id, reference_transaction_id,"
                " first_event_at, updated_at, last_event_id)"
                " values (%(op)s, %(pv)s, %(rb)s, %(pl)s, 'ROLLBACK', %(st)s, 0,"
                " coalesce((select currency from {s}.transactions where operator_id = %(op)s"
                " and provider_id = %(pv)s and player_id = %(pl)s and transaction_id = %(bet)s),"
                " 'XXX'),"
                " %(rnd)s, %(game)s, %(bet)s, %(at)s, %(at)s, %(ev)s)"
                " on conflict (operator_id, provider_id, player_id, transaction_id) do update set"
                " status = excluded.status, updated_at = excluded.updated_at,"
                " last_event_id = excluded.last_event_id"
            ),
            {
                "op": d["operator_id"], "pv": d["provider_id"], "rb": d["rollback_transaction_id"],
                "pl": d["player_id"], "st": status, "bet": d["reference_transaction_id"],
                "rnd": d.get("round_id"), "game": d.get("game_id"), "at": d["occurred_at"],
                "ev": d["event_id"],
            },
        )  # fmt: skip

    def _round_closed(self, cur: psycopg.Cursor[Any], d: dict[str, Any],
                      closed_by: str = "PROVIDER") -> None:  # fmt: skip
        cur.execute(
            self.q(
                "insert into {s}.rounds (operator_id, provider_id, round_id, player_id, game_id,"
                " currency, bet_total, win_total, refund_total, status, opened_at, updated_at,"
                " closed_at, closed_by)"
                " values (%s, %s, %s, %s, %s, %s, 0, 0, 0, 'CLOSED', %s, %s, %s, %s)"
                " on conflict (operator_id, provider_id, player_id, round_id) do update set"
                " status = 'CLOSED', closed_at = excluded.closed_at,"
                " closed_by = excluded.closed_by,"
                " updated_at = greatest({s}.rounds.updated_at, excluded.updated_at)"
            ),
            (d["operator_id"], d["provider_id"], d["round_id"], d["player_id"], d.get("game_id"),
             d["currency"], d["occurred_at"], d["occurred_at"], d["occurred_at"], closed_by),
        )  # fmt: skip

    def _round_auto_closed(self, cur: psycopg.Cursor[Any], d: dict[str, Any]) -> None:
        """Closed by the provider's auto-close policy: the same row, ``closed_by`` AUTO (the
        idle time and the policy stay in the journal's payload)."""
        self._round_closed(cur, d, "AUTO")

    def _funds_transferred(self, cur: psycopg.Cursor[Any], d: dict[str, Any]) -> None:
        self._txn(cur, d, transfer_kind(d), "TRANSFERRED")
        self._balance(cur, d)

    def _transfer_rejected(self, cur: psycopg.Cursor[Any], d: dict[str, Any]) -> None:
        self._txn(cur, d, transfer_kind(d), f"REJECTED:{d['status']}", rule=rejection_rule(d))
        self._balance(cur, d)

    def _free_spin_played(self, cur: psycopg.Cursor[Any], d: dict[str, Any]) -> None:
        """A free spin: a ledger row that moves no money (its balance is the one last known),
        on its round with no stake, in no revenue."""
        self._txn(cur, d, "BET", "FREE_SPIN")
        self._balance(cur, d)
        self._round(cur, d)

    def _free_spin_rolled_back(self, cur: psycopg.Cursor[Any], d: dict[str, Any]) -> None:
        self._txn(cur, d, "BET", "FREE_SPIN_ROLLED_BACK")
        self._balance(cur, d)

    def _session_opened(self, cur: psycopg.Cursor[Any], d: dict[str, Any]) -> None:
        cur.execute(
            self.q(
                "insert into {s}.sessions (session_id, operator_id, player_id, provider_id,"
                " game_id, currency, country, mode, opened_at, expires_at)"
                " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) on conflict do nothing"
            ),
            (d["session_id"], d["operator_id"], d["player_id"], d["provider_id"], d["game_id"],
             d["currency"], d["country"], d["mode"], d["occurred_at"], d["expires_at"]),
        )  # fmt: skip

    def _demo(self, cur: psycopg.Cursor[Any], d: dict[str, Any]) -> None:
        """Demo play: only the demo balance the event reports."""
        if d.get("balance") is None or not d.get("currency"):
            return
        cur.execute(
            self.q(
                "insert into {s}.demo_balances (operator_id, player_id, currency, balance,"
                " event_id, reported_at) values (%s, %s, %s, %s, %s, %s)"
                " on conflict (operator_id, player_id, currency) do update set"
                " balance = excluded.balance, event_id = excluded.event_id,"
                " reported_at = excluded.reported_at"
                " where {s}.demo_balances.reported_at <= excluded.reported_at"
            ),
            (d["operator_id"], d["player_id"], d["currency"], d["balance"], d["event_id"],
             d["occurred_at"]),
        )  # fmt: skip

    def _conflict(self, cur: psycopg.Cursor[Any], d: dict[str, Any]) -> None:
        cur.execute(
            self.q(
                "insert into {s}.transaction_changes (event_id, operator_id, provider_id,"
                " transaction_id, status, occurred_at, correlation_id, player_id)"
                " values (%s, %s, %s, %s, 'DUPLICATE_CONFLICT', %s, %s, %s)"
            ),
            (d["event_id"], d["operator_id"], d["provider_id"], d["transaction_id"],
             d["occurred_at"], d["correlation_id"], d["player_id"]),
        )  # fmt: skip
