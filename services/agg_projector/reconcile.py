"""``aggregator reconcile``: the reconciliation views as a readable report.

Exit status 0 when nothing needs attention, 1 when any section has rows, 2 when the
projections cannot be read. Sections: rounds open longer than ``--open-round-age``, debits
without a final outcome, rollback tombstones (and bets that arrived after their rollback),
credits still owed, breaks in the chain of balances the wallet reported, contradictory
decisions in the journal (the ``contradictory_decisions`` view, migration 005), players whose
wallet balance differs from the balance the journal implies; and, for information only,
what could not be compared, money settled for a round after it closed (a win or refund owed
for it, a bet whose debit was in flight: ``round_money_after_close``, migration 010) and
per-provider daily totals.

The balance the journal implies, per operator, player and currency, is the wallet's opening
balance (``wallet.players.opening_balance``: what the reference wallet gave the player on
first sight) plus the journal's money effects: minus every BetAccepted, plus every
WinCredited and BetRolledBack (a compensated debit, DebitTimedOut then DebitCancelled, moved
nothing on either side) of the operator's wallet, minus every transfer into a transfer
wallet (FundsTransferred IN: the operator debited its player) and plus every transfer out.
The wallet's balance must equal it, and equal the last balance the wallet reported in the
journal (but for a transfer-wallet operator's players, whose reported balances are the
aggregator-held ones), and its own ledger (opening balance plus the deltas of
``wallet.commands`` and ``wallet.transfers``). Money in flight differs for a moment, so a
player with a wallet command applied within ``--in-flight-age`` seconds, or with a debit's
cancel or a credit not yet acknowledged (listed in their own sections), or a transfer not
yet answered, is listed as not compared instead.

Only the reference wallet's ledger (schema ``wallet``, in the same database) can be read:
operators that run their own wallets are listed as not compared. The comparison assumes, as
holds for the reference wallet, that balances change only through the aggregator's commands;
a wallet that also takes deposits would need those in its ledger to be reconciled. Demo
play (journal events with ``mode: demo``) is not money: every section leaves it out.

Transfer wallets: the balance the aggregator holds for a transfer-wallet operator's player
must be the fold of the journal (transfers in, less transfers out, less bets, plus wins and
refunds of ``wallet: transfer``) and equal the last balance reported; and every transfer the
journal holds must be one the operator recorded as done (``wallet.transfers`` of the
reference operator), with the same direction and amount, and the other way round, per day.
A transfer the operator has asked for but not yet seen answered makes the player's wallet
account in flight.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from agg_config.settings import load_settings
from agg_projector.migrate import SCHEMA_NAME


@dataclass(frozen=True)
class Section:
    title: str
    query: str
    discrepancy: bool = True
    requires: str | None = None
    """A table the query reads outside the projections (the reference wallet's); without it
    the query is ``otherwise``, or the section is skipped and says so."""
    otherwise: str | None = None


WALLET_TABLE = "players"
"""The reference wallet's table of balances, in the wallet schema (``--wallet-schema``)."""

# {s} is the projection schema. Per account of an operator the reference wallet serves: the
# wallet's balance, the balance the journal implies, the last one reported, the wallet's own
# ledger's, and whether money is in flight.
WALLET_ACCOUNTS = """
with effects as (
    select operator_id, player_id, currency::char(3) as currency,
           sum(case when event_type = 'BetAccepted' then -amount
                    when event_type = 'FundsTransferred' and payload->>'direction' = 'IN'
                    then -amount
                    else amount end) as moved
    from {s}.journal
    where ((event_type in ('BetAccepted', 'WinCredited', 'BetRolledBack')
            and coalesce(payload->>'wallet', 'seamless') = 'seamless')
           or event_type = 'FundsTransferred')
      and coalesce(payload->>'mode', 'real') = 'real'
    group by operator_id, player_id, currency
), wallet_operators as (
    select distinct operator_id from {w}.players
), transfer_operators as (
    -- their players' reported balances are the aggregator-held ones, not the wallet's
    select distinct operator_id from {s}.journal where event_type = 'FundsTransferred'
), ledger as (
    select operator_id, player_id, currency::char(3) as currency, sum(delta) as moved,
           max(applied_at) as last_applied_at
    from (select operator_id, player_id, currency, delta, applied_at from {w}.commands
          union all
          select operator_id, player_id, currency, delta, updated_at from {w}.transfers) m
    group by operator_id, player_id, currency
), accounts as (
    select coalesce(w.operator_id, e.operator_id) as operator_id,
           coalesce(w.player_id, e.player_id) as player_id,
           coalesce(w.currency, e.currency) as currency,
           w.balance as wallet_balance, w.opening_balance, coalesce(e.moved, 0) as journal_moved
    from {w}.players w
    full join effects e
      on e.operator_id = w.operator_id and e.player_id = w.player_id and e.currency = w.currency
), compared as (
    select a.operator_id, a.player_id, a.currency, a.wallet_balance,
           a.opening_balance + a.journal_moved as journal_implied, a.journal_moved,
           b.balance as last_reported,
           a.opening_balance + coalesce(l.moved, 0) as ledger_implied, l.last_applied_at,
           coalesce(l.last_applied_at > now() - %(in_flight)s, false) or exists (
               select 1 from {s}.transactions t
               where t.operator_id = a.operator_id and t.player_id = a.player_id
                 and t.status in ('TIMED_OUT', 'OWED')) or exists (
               select 1 from {w}.transfers x
               where x.operator_id = a.operator_id and x.player_id = a.player_id
                 and x.state = 'PENDING') as in_flight
    from accounts a
    left join {s}.balances b
      on b.operator_id = a.operator_id and b.player_id = a.player_id and b.currency = a.currency
      and a.operator_id not in (select operator_id from transfer_operators)
    left join ledger l
      on l.operator_id = a.operator_id and l.player_id = a.player_id and l.currency = a.currency
    where a.operator_id in (select operator_id from wallet_operators)
)
"""

WALLET_MISMATCHES = (
    WALLET_ACCOUNTS
    + """
select operator_id, player_id, currency, wallet_balance, journal_implied, last_reported,
       ledger_implied, concat_ws('; ',
           case when wallet_balance is null
                then 'no wallet account, the journal moved ' || journal_moved end,
           case when wallet_balance <> journal_implied
                then 'wallet - journal = ' || (wallet_balance - journal_implied) end,
           case when wallet_balance <> last_reported
                then 'wallet - last reported = ' || (wallet_balance - last_reported) end,
           case when wallet_balance <> ledger_implied
                then 'wallet - its own ledger = ' || (wallet_balance - ledger_implied) end
       ) as problem
from compared
where not in_flight
  and (wallet_balance is null or wallet_balance <> journal_implied
       or wallet_balance <> last_reported or wallet_balance <> ledger_implied)
order by operator_id, player_id, currency
"""
)

WALLET_IN_FLIGHT = (
    WALLET_ACCOUNTS
    + """
select operator_id, player_id, currency, wallet_balance, journal_implied, last_applied_at
from compared where in_flight order by operator_id, player_id, currency
"""
)

HELD_BALANCES = """
with moves as (
    select operator_id, player_id, currency,
           sum(case when event_type = 'BetAccepted' then -amount
                    when event_type = 'FundsTransferred' and payload->>'direction' = 'OUT'
                    then -amount
                    else amount end) as implied
    from {s}.journal
    where (event_type in ('BetAccepted', 'WinCredited', 'BetRolledBack')
           and payload->>'wallet' = 'transfer')
       or event_type = 'FundsTransferred'
    group by operator_id, player_id, currency
)
select m.operator_id, m.player_id, m.currency, m.implied as journal_implied,
       b.balance as last_reported, coalesce(b.balance, 0) - m.implied as difference
from moves m
left join {s}.balances b using (operator_id, player_id, currency)
where b.balance is distinct from m.implied
order by m.operator_id, m.player_id, m.currency
"""
"""Transfer-wallet balances (held by the aggregator): the journal's transfers and play must
fold to the last balance reported."""

TRANSFERS_VS_OPERATOR = """
with j as (
    select operator_id, player_id, transaction_id as transfer_id,
           payload->>'direction' as direction, amount, currency,
           (occurred_at at time zone 'UTC')::date as day
    from {s}.journal where event_type = 'FundsTransferred'
), o as (
    select operator_id, player_id, transfer_id,
           case direction when 'deposit' then 'IN' else 'OUT' end as direction, amount,
           currency::text as currency, (updated_at at time zone 'UTC')::date as day
    from {w}.transfers where state = 'DONE'
), paired as (
    select coalesce(j.operator_id, o.operator_id) as operator_id,
           coalesce(j.day, o.day) as day, coalesce(j.currency, o.currency) as currency,
           coalesce(j.direction, o.direction) as direction,
           coalesce(j.amount, 0) as journal_amount, coalesce(o.amount, 0) as operator_amount,
           j.transfer_id is not null and o.transfer_id is not null
           and j.direction = o.direction and j.amount = o.amount as matched
    from j full join o using (operator_id, player_id, transfer_id)
    where coalesce(j.operator_id, o.operator_id)
          in (select distinct operator_id from {w}.transfers)
)
select operator_id, day, currency, direction, sum(journal_amount) as journal,
       sum(operator_amount) as operator_side, count(*) filter (where not matched) as unmatched
from paired
group by operator_id, day, currency, direction
having sum(journal_amount) <> sum(operator_amount) or count(*) filter (where not matched) > 0
order by day, operator_id, currency, direction
"""
"""Per operator, UTC day (the journal's), currency and direction: every transfer in equals
the operator's debits for transfers, every transfer out its credits, transfer by transfer.
Only operators whose transfers the reference operator records here are compared."""

JOURNAL_OPERATORS = """
select operator_id, count(distinct player_id) as players from {s}.journal
where event_type in ('BetAccepted', 'WinCredited', 'BetRolledBack')
  and coalesce(payload->>'mode', 'real') = 'real' {and_not_wallet}
group by operator_id order by operator_id
"""


SECTIONS = [
    Section(
        "rounds open longer than {age}",
        "select operator_id, provider_id, round_id, player_id, bet_total, win_total, opened_at"
        " from {s}.open_rounds where updated_at < now() - %(age)s order by opened_at",
    ),
    Section(
        "debits without a final outcome (timed out, cancel not yet acknowledged)",
        "select operator_id, provider_id, transaction_id, player_id, amount, currency, updated_at"
        " from {s}.unresolved_debits order by updated_at",
    ),
    Section(
        "rollbacks whose bet never arrived (tombstones)",
        "select operator_id, provider_id, rollback_transaction_id, bet_transaction_id, player_id"
        " from {s}.rollback_tombstones where not bet_arrived_later order by updated_at",
    ),
    Section(
        "bets that arrived after their rollback (refused)",
        "select operator_id, provider_id, bet_transaction_id, rollback_transaction_id, bet_status"
        " from {s}.rollback_tombstones where bet_arrived_later order by updated_at",
    ),
    Section(
        "credits still owed to players (wallet has not acknowledged)",
        "select operator_id, provider_id, transaction_id, player_id, amount, currency, updated_at"
        " from {s}.credits_owed order by updated_at",
    ),
    Section(
        "breaks in the balance chain reported by operators' wallets",
        "select operator_id, player_id, currency, event_type, previous_balance, delta, balance,"
        " gap, event_id from {s}.balance_chain_gaps order by occurred_at",
    ),
    Section(
        "contradictory decisions in the journal",
        "select operator_id, player_id, provider_id, transaction_id, command_id, contradiction,"
        " events from {s}.contradictory_decisions order by last_at, transaction_id",
    ),
    Section(
        "wallet balances that differ from the balance the journal implies",
        WALLET_MISMATCHES,
        requires=WALLET_TABLE,
    ),
    Section(
        "accounts not compared with the wallet (money in flight)",
        WALLET_IN_FLIGHT,
        discrepancy=False,
        requires=WALLET_TABLE,
    ),
    Section(
        "transfer-wallet balances that differ from the balance the journal implies",
        HELD_BALANCES,
    ),
    Section(
        "transfers that differ from the operator's record of them (per day)",
        TRANSFERS_VS_OPERATOR,
        requires="transfers",
    ),
    Section(
        "transfers per day (transfer wallets)",
        "select operator_id, day, currency, direction, transfers, amount"
        " from {s}.transfers_daily order by day, operator_id, currency, direction",
        discrepancy=False,
    ),
    Section(
        "operators whose wallets cannot be read here (not in the reference wallet's ledger)",
        JOURNAL_OPERATORS.replace(
            "{and_not_wallet}",
            "and operator_id not in (select distinct operator_id from {w}.players)",
        ),
        discrepancy=False,
        requires=WALLET_TABLE,
        otherwise=JOURNAL_OPERATORS.replace("{and_not_wallet}", ""),
    ),
    Section(
        "money settled after its round closed (accepted, in the round's totals)",
        "select operator_id, provider_id, round_id, player_id, closed_by, transaction_id, kind,"
        " amount, currency from {s}.round_money_after_close order by first_event_at",
        discrepancy=False,
    ),
    Section(
        "per-provider daily totals",
        "select provider_id, day, currency, bets, wins, refunds, ggr, bonus_wins, jackpot_wins,"
        " promo_wins from {s}.provider_daily_totals order by day, provider_id, currency",
        discrepancy=False,
    ),
]


IN_FLIGHT_AGE_S = 60.0
"""Default of ``--in-flight-age``: a wallet command is journaled within seconds of being
applied; a minute leaves room for a slow saga or projector."""


def run_report(conn: psycopg.Connection[Any], schema: str, age: timedelta, limit: int,
               in_flight: timedelta = timedelta(seconds=IN_FLIGHT_AGE_S),
               wallet_schema: str = "wallet") -> tuple[list[str], dict[str, int]]:  # fmt: skip
    """The report's lines and the number of rows per section title."""
    lines: list[str] = []
    found: dict[str, int] = {}
    present: dict[str, bool] = {}
    for section in SECTIONS:
        title = section.title.format(age=age)
        text = section.query
        if section.requires is not None:
            table = f"{wallet_schema}.{section.requires}"
            if table not in present:
                row = conn.execute("select to_regclass(%s) is not null", (table,))
                present[table] = bool((row.fetchone() or (False,))[0])
            if not present[table]:
                if section.otherwise is None:
                    lines.append(f"-- {title}: skipped, no {table} in this database")
                    continue
                text = section.otherwise
        query = sql.SQL(text).format(s=sql.Identifier(schema), w=sql.Identifier(wallet_schema))
        cur = conn.execute(query, {"age": age, "in_flight": in_flight})
        rows = cur.fetchall()
        columns = [c.name for c in cur.description or []]
        if section.discrepancy:
            found[title] = len(rows)
        marker = "!!" if section.discrepancy and rows else "ok" if section.discrepancy else "--"
        lines.append(f"{marker} {title}: {len(rows)}")
        if rows:
            lines.append("   " + " | ".join(columns))
            for row in rows[:limit]:
                lines.append("   " + " | ".join("" if v is None else str(v) for v in row))
            if len(rows) > limit:
                lines.append(f"   ... {len(rows) - limit} more")
    return lines, found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aggregator reconcile", description=__doc__)
    parser.add_argument("--schema", default="projection")
    parser.add_argument("--open-round-age", type=float, default=3600.0,
                        help="seconds a round may stay open before it is reported")  # fmt: skip
    parser.add_argument("--in-flight-age", type=float, default=IN_FLIGHT_AGE_S,
                        help="seconds after a wallet command during which a player's balance "
                        "is not compared with the journal (money in flight)")  # fmt: skip
    parser.add_argument("--wallet-schema", default="wallet",
                        help="schema of the reference wallet's ledger")  # fmt: skip
    parser.add_argument("--limit", type=int, default=20, help="rows shown per section")
    args = parser.parse_args(argv)
    for name in (args.schema, args.wallet_schema):
        if not SCHEMA_NAME.match(name):
            print(f"error: bad schema name {name!r}", file=sys.stderr)
            return 2
    settings = load_settings()
    try:
        with psycopg.connect(settings.database_url) as conn:
            age = timedelta(seconds=args.open_round_age)
            in_flight = timedelta(seconds=args.in_flight_age)
            lines, found = run_report(conn, args.schema, age, args.limit, in_flight,
                                      args.wallet_schema)  # fmt: skip
    except psycopg.Error as exc:
        print(f"error: cannot read the projections: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    total = sum(found.values())
    if total:
        print(f"\n{total} discrepancies in {sum(1 for n in found.values() if n)} sections")
        return 1
    print("\nno discrepancies")
    return 0


if __name__ == "__main__":
    sys.exit(main())
