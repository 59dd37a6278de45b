"""``aggregator reconcile``: the reconciliation views as a readable report.

Exit status 0 when nothing needs attention, 1 when any section has rows, 2 when the
projections cannot be read. Sections: rounds open longer than ``--open-round-age``, debits
without a final outcome, rollback tombstones (and bets that arrived after their rollback),
credits still owed, breaks in the chain of balances the wallet reported, and per-provider
daily totals (information, not a discrepancy).
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
        "per-provider daily totals",
        "select provider_id, day, currency, bets, wins, refunds, ggr"
        " from {s}.provider_daily_totals order by day, provider_id, currency",
        discrepancy=False,
    ),
]


def run_report(conn: psycopg.Connection[Any], schema: str, age: timedelta,
               limit: int) -> tuple[list[str], dict[str, int]]:  # fmt: skip
    """The report's lines and the number of rows per section title."""
    lines: list[str] = []
    found: dict[str, int] = {}
    for section in SECTIONS:
        title = section.title.format(age=age)
        query = sql.SQL(section.query).format(s=sql.Identifier(schema))
        cur = conn.execute(query, {"age": age})
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
    parser.add_argument("--limit", type=int, default=20, help="rows shown per section")
    args = parser.parse_args(argv)
    if not SCHEMA_NAME.match(args.schema):
        print(f"error: bad schema name {args.schema!r}", file=sys.stderr)
        return 2
    settings = load_settings()
    try:
        with psycopg.connect(settings.database_url) as conn:
            age = timedelta(seconds=args.open_round_age)
            lines, found = run_report(conn, args.schema, age, args.limit)
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
