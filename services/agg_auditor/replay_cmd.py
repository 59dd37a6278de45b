"""Rebuild every projection from the journal into a fresh schema, then compare it with the
live schema table by table.

The live projector must have read the same journal first: the command takes the journal's
end offsets, waits (up to ``--wait``) for the live projector to reach them, replays to those
offsets, and compares. Exit 0 when identical, 1 with a report of the differing rows, 3 when
the live projector does not catch up (nothing compared). ``--since`` replays from a time into
the fresh schema without comparing (a partial rebuild cannot equal the whole). ``--keep``
leaves the rebuilt schema in place for inspection (it is dropped otherwise; its tables are
unlogged, as befits a disposable copy: a crash of the server empties them). ``--workers``
processes replay the partitions in parallel (``agg_projector.replay``).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from agg_kafka.topics import TopicNames
from agg_projector.projector import GROUP_ID
from agg_projector.replay import behind, compare, end_offsets, replay

if TYPE_CHECKING:
    from agg_auditor.cli import AuditContext

NAME = "replay"
HELP = "rebuild the projections from the journal into a fresh schema and compare with live"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--live-schema", default="projection")
    parser.add_argument("--target", default=None, help="schema to build (default replay_<time>)")
    parser.add_argument(
        "--since", default=None, help="ISO-8601 time: rebuild from there, no compare"
    )
    parser.add_argument("--wait", type=float, default=120.0,
                        help="seconds to wait for the live projector to catch up")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the rebuilt schema")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes replaying partitions in parallel"
                             " (default: one per core, at least 2)")  # fmt: skip
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace, context: AuditContext) -> int:
    settings = context.settings
    topic = TopicNames(settings.topic_prefix).events
    target = args.target or f"replay_{datetime.now(UTC):%Y%m%d_%H%M%S}"
    since = datetime.fromisoformat(args.since.replace("Z", "+00:00")) if args.since else None
    err = context.stderr
    if since is None:
        ends = asyncio.run(end_offsets(settings, topic))
        deadline = time.monotonic() + args.wait
        while (lag := behind(settings.database_url, args.live_schema, GROUP_ID, topic, ends)) > 0:
            if time.monotonic() > deadline:
                err.write(f"the live projector is {lag} events behind the journal; not compared\n")
                return 3
            time.sleep(0.5)
    result = asyncio.run(
        replay(
            settings,
            target,
            since=since,
            progress=None if args.quiet else err,
            workers=args.workers,
        )
    )
    out = context.stdout
    out.write(f"replayed {result.events} events into {target} in {result.seconds:.1f}s "
              f"({result.records / max(result.seconds, 0.001):,.0f} records/s,"
              f" {result.workers} workers)\n")  # fmt: skip
    if since is not None:
        out.write("partial rebuild (--since): not compared\n")
        return 0
    differences = compare(settings.database_url, args.live_schema, target)
    for table, lines in differences.items():
        out.write(f"{table}: {'identical' if not lines else 'DIFFERS'}\n")
        for line in lines:
            out.write(f"  {line}\n")
    if not args.keep:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop schema {} cascade").format(sql.Identifier(target)))
    identical = not any(differences.values()) and result.undecodable == 0
    out.write("identical\n" if identical else "DIFFERENT\n")
    return 0 if identical else 1
