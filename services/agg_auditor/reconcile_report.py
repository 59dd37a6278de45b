"""Compare an outside party's transaction report with the aggregator's ledger.

    aggregator audit reconcile --provider-report FILE.csv --provider prov-nova
    aggregator audit reconcile --operator-report FILE.csv --operator op-alpha

The CSV has a header row; columns (others are ignored):

    transaction_id   the provider's transaction id (required)
    provider_id      required in an operator's report; a provider report is one provider's
    kind             BET, WIN or ROLLBACK (required)
    amount           integer minor units (required)
    currency         ISO 4217 code (required)
    status           OK, REJECTED, ROLLED_BACK or PENDING (optional)
    operator_id      the operator of the player (optional)
    player_id        the operator's player id (optional)

A provider's transaction id is its own: the same id may belong to several players, of one
operator or of several. Each report row is matched with one ledger row of that provider and
id (of that operator and player, where the report gives them), the one that agrees best with
it, and each ledger row with one report row at most.

Each difference is classified: ``missing`` (in the report, not in our ledger), ``extra`` (in
our ledger within the report's scope, not in the report), ``amount`` (amount or currency
differ), ``status`` (the outcome differs, where the report gives one), ``kind``. The last
line sums them up. Exit 0 when they agree, 2 when anything differs (findings), 1 when the
report cannot be read, 64 for usage errors.
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from agg_auditor.cli import AuditContext

NAME = "reconcile"
HELP = "compare a provider's or an operator's transaction report (CSV) with our ledger"

OUTCOME_OF_STATUS = {
    "ACCEPTED": "OK",
    "CREDITED": "OK",
    "REFUNDED": "OK",
    "RECORDED": "OK",
    "TOMBSTONE": "OK",
    "ROLLED_BACK": "ROLLED_BACK",
    "CANCELLED": "REJECTED",
    "TIMED_OUT": "PENDING",
    "OWED": "PENDING",
}
"""Our ledger's status as the outcome a counterparty sees."""


class ReportError(ValueError):
    pass


@dataclass(frozen=True)
class Entry:
    provider_id: str
    transaction_id: str
    kind: str
    amount: int
    currency: str
    status: str | None
    operator_id: str | None = None
    player_id: str | None = None

    def may_be(self, mine: Entry) -> bool:
        """Whether ``mine`` (a ledger row of the same provider and id) may be this row's
        transaction: the same owner where this row names one."""
        return (self.operator_id is None or self.operator_id == mine.operator_id) and (
            self.player_id is None or self.player_id == mine.player_id
        )

    def agreement(self, mine: Entry) -> tuple[bool, bool, bool]:
        return (
            self.kind == mine.kind,
            (self.amount, self.currency) == (mine.amount, mine.currency),
            self.status is None or self.status == mine.status,
        )


def outcome(status: str) -> str:
    return "REJECTED" if status.startswith("REJECTED") else OUTCOME_OF_STATUS.get(status, status)


def read_report(path: Path, provider: str | None) -> list[Entry]:
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: {exc}") from exc
    entries = []
    for line, row in enumerate(rows, start=2):
        try:
            provider_id = provider or row["provider_id"]
            amount_text = row["amount"].strip()
            if not amount_text.lstrip("-").isdigit():
                raise ReportError(f"{path}:{line}: amount {amount_text!r} is not an integer")
            entries.append(Entry(
                provider_id=provider_id.strip(),
                transaction_id=row["transaction_id"].strip(),
                kind=row["kind"].strip().upper(),
                amount=int(amount_text),
                currency=row["currency"].strip().upper(),
                status=(row.get("status") or "").strip().upper() or None,
                operator_id=(row.get("operator_id") or "").strip() or None,
                player_id=(row.get("player_id") or "").strip() or None,
            ))  # fmt: skip
        except KeyError as exc:
            raise ReportError(f"{path}:{line}: missing column {exc}") from None
    return entries


def ledger(conn: psycopg.Connection[Any], schema: str, *, provider: str | None,
           operator: str | None) -> dict[tuple[str, str, str, str], Entry]:  # fmt: skip
    """Our transactions in the report's scope, by (provider, transaction, operator, player)."""
    clauses, args = [], []
    if provider:
        clauses.append("provider_id = %s")
        args.append(provider)
    if operator:
        clauses.append("operator_id = %s")
        args.append(operator)
    query = sql.SQL(
        "select provider_id, transaction_id, kind, amount, currency, status, operator_id,"
        " player_id from {}.transactions where "
    ).format(sql.Identifier(schema)) + sql.SQL(" and ".join(clauses))
    out = {}
    for p, t, kind, amount, currency, status, op, player in conn.execute(query, args):
        out[(p, t, op, player)] = Entry(p, t, kind, int(amount), currency.strip(),
                                        outcome(status), op, player)  # fmt: skip
    return out


def _where(entry: Entry, shared: bool) -> str:
    where = f"{entry.provider_id}/{entry.transaction_id}"
    owner = ":".join(o for o in (entry.operator_id, entry.player_id) if o is not None)
    return f"{where} of {owner}" if shared and owner else where


def compare(report: list[Entry], ours: Mapping[Any, Entry]) -> list[tuple[str, str]]:
    """(classification, description) of every difference."""
    found: list[tuple[str, str]] = []
    mine_by_id: dict[tuple[str, str], list[int]] = defaultdict(list)
    rows = sorted(
        ours.values(),
        key=lambda e: (e.provider_id, e.transaction_id, e.operator_id or "", e.player_id or ""),
    )
    for index, mine in enumerate(rows):
        mine_by_id[(mine.provider_id, mine.transaction_id)].append(index)
    used: set[int] = set()
    for theirs in report:
        same_id = mine_by_id.get((theirs.provider_id, theirs.transaction_id), [])
        shared = len(same_id) > 1
        candidates = [i for i in same_id if i not in used and theirs.may_be(rows[i])]
        if not candidates:
            where = _where(theirs, shared or theirs.player_id is not None)
            found.append(("missing", f"{where}: {theirs.kind} {theirs.amount} {theirs.currency}"
                                     " is not in our ledger"))  # fmt: skip
            continue
        best = max(candidates, key=lambda i: sum(theirs.agreement(rows[i])))  # the first best
        used.add(best)
        mine = rows[best]
        where = _where(mine, shared)
        if mine.kind != theirs.kind:
            found.append(("kind", f"{where}: report {theirs.kind}, ledger {mine.kind}"))
        if (mine.amount, mine.currency) != (
            theirs.amount,
            theirs.currency,
        ) and mine.kind != "ROLLBACK":
            found.append(("amount", f"{where}: report {theirs.amount} {theirs.currency}, "
                                    f"ledger {mine.amount} {mine.currency}"))  # fmt: skip
        if theirs.status is not None and theirs.status != mine.status:
            found.append(("status", f"{where}: report {theirs.status}, ledger {mine.status}"))
    for index, mine in enumerate(rows):
        if index not in used:
            where = _where(mine, len(mine_by_id[(mine.provider_id, mine.transaction_id)]) > 1)
            found.append(("extra", f"{where}: {mine.kind} {mine.amount} {mine.currency}"
                                   f" ({mine.status}) is not in the report"))  # fmt: skip
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--provider-report", type=Path, metavar="FILE.csv")
    source.add_argument("--operator-report", type=Path, metavar="FILE.csv")
    parser.add_argument("--provider", help="the provider whose report it is")
    parser.add_argument("--operator", help="the operator whose report it is")
    parser.add_argument("--schema", default="projection")


def run(args: argparse.Namespace, context: AuditContext) -> int:
    if args.provider_report and not args.provider:
        context.stderr.write("--provider-report needs --provider\n")
        return 64
    if args.operator_report and not args.operator:
        context.stderr.write("--operator-report needs --operator\n")
        return 64
    path = args.provider_report or args.operator_report
    try:
        report = read_report(path, args.provider if args.provider_report else None)
    except ReportError as exc:
        context.stderr.write(f"cannot read the report: {exc}\n")
        return 1
    with psycopg.connect(context.settings.database_url) as conn:
        ours = ledger(conn, args.schema, provider=args.provider if args.provider_report else None,
                      operator=args.operator)  # fmt: skip
    found = compare(report, ours)
    for kind, text in found:
        context.stdout.write(f"{kind:<8} {text}\n")
    counts = Counter(kind for kind, _ in found)
    summary = ", ".join(
        f"{counts[k]} {k}" for k in ("missing", "extra", "amount", "status", "kind")
    )
    context.stdout.write(f"{len(report)} in the report, {len(ours)} in the ledger: "
                         f"{'agree' if not found else summary}\n")  # fmt: skip
    return 2 if found else 0
