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

Each difference is classified: ``missing`` (in the report, not in our ledger), ``extra`` (in
our ledger within the report's scope, not in the report), ``amount`` (amount or currency
differ), ``status`` (the outcome differs, where the report gives one), ``kind``. The last
line sums them up. Exit 0 when they agree, 2 when anything differs (findings), 1 when the
report cannot be read, 64 for usage errors.
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
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
            ))  # fmt: skip
        except KeyError as exc:
            raise ReportError(f"{path}:{line}: missing column {exc}") from None
    return entries


def ledger(conn: psycopg.Connection[Any], schema: str, *, provider: str | None,
           operator: str | None) -> dict[tuple[str, str], Entry]:  # fmt: skip
    clauses, args = [], []
    if provider:
        clauses.append("provider_id = %s")
        args.append(provider)
    if operator:
        clauses.append("operator_id = %s")
        args.append(operator)
    query = sql.SQL(
        "select provider_id, transaction_id, kind, amount, currency, status"
        " from {}.transactions where "
    ).format(sql.Identifier(schema)) + sql.SQL(" and ".join(clauses))
    out = {}
    for p, t, kind, amount, currency, status in conn.execute(query, args):
        out[(p, t)] = Entry(p, t, kind, int(amount), currency.strip(), outcome(status))
    return out


def compare(report: list[Entry], ours: dict[tuple[str, str], Entry]) -> list[tuple[str, str]]:
    """(classification, description) of every difference."""
    found: list[tuple[str, str]] = []
    seen = set()
    for theirs in report:
        key = (theirs.provider_id, theirs.transaction_id)
        seen.add(key)
        mine = ours.get(key)
        where = f"{theirs.provider_id}/{theirs.transaction_id}"
        if mine is None:
            found.append(("missing", f"{where}: {theirs.kind} {theirs.amount} {theirs.currency}"
                                     " is not in our ledger"))  # fmt: skip
            continue
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
    for key, mine in sorted(ours.items()):
        if key not in seen:
            found.append(("extra", f"{key[0]}/{key[1]}: {mine.kind} {mine.amount} {mine.currency}"
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
