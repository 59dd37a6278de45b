"""The set-based batch write (``agg_projector.batch``, what the projector and the replay run)
gives, table by table, what the per-event SQL of ``agg_projector.apply.Applier`` gives when
run event by event in journal order: on journals decided by the saga's domain code with many
faults, cut into batches of every size, partitions in any order, the revenue written per
batch or once at the end, deduped and merged by what the writer itself wrote (as a replay's
worker does). Real PostgreSQL, no Kafka."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from aiokafka.partitioner import murmur2

from agg_avro import AvroCodec
from agg_config.settings import Settings
from agg_kafka.clients import player_key
from agg_projector.apply import Applier, JournalEvent
from agg_projector.batch import Revenue, Written
from agg_projector.migrate import migrate
from agg_projector.projector import EVENT_PREFIX, Projector
from agg_projector.replay import COMPARED_TABLES, compare
from bench.journal import JournalShape, JournalWriter, Mix

PARTITIONS = 6
FAULTY = Mix(win=0.5, rollback=0.12, rollback_first=0.06, debit_silent=0.05, credit_silent=0.05,
             conflict=0.05, republished=0.03, demo_players=0.15, transfer_players=0.2,
             kinded_wins=0.2, session_rounds=6, round_idle=0.3, free_spins=0.4)  # fmt: skip
"""Rare paths made common: tombstones, timeouts, owed credits, conflicts, republished events,
demo play, many sessions, rounds auto-closed with money and bets after the close, free-spin
campaigns granted, played, cancelled and expired."""


def partitioned(events: int, seed: int) -> dict[int, list[JournalEvent]]:
    """The journal as the topic holds it: each record on its key's partition (murmur2, as
    every producer partitions), decoded from its Avro bytes as the projector reads it."""
    codec = AvroCodec()
    shape = JournalShape(operators=3, providers=3, games_per_provider=2, players=40)
    parts: dict[int, list[JournalEvent]] = {p: [] for p in range(PARTITIONS)}
    for name, datum in JournalWriter(events, seed=seed, shape=shape, mix=FAULTY):
        key = player_key(datum["operator_id"], datum["player_id"])
        p = (murmur2(key) & 0x7FFFFFFF) % PARTITIONS
        decoded = codec.decode(codec.encode(name, datum))
        parts[p].append(JournalEvent(decoded.name[len(EVENT_PREFIX) :], decoded.datum, p,
                                     len(parts[p])))  # fmt: skip
    return parts


def reference(conn: psycopg.Connection[Any], schema: str,
              events: list[JournalEvent]) -> None:  # fmt: skip
    """The definition: per-event SQL, in order, each event id once."""
    applier = Applier(schema)
    seen: set[str] = set()
    with conn.transaction(), conn.cursor() as cur:
        for event in events:
            if event.datum["event_id"] not in seen:
                seen.add(event.datum["event_id"])
                applier.apply(cur, event)


def batches(parts: dict[int, list[JournalEvent]], order: list[int], rng: random.Random,
            size_max: int) -> Iterator[tuple[list[JournalEvent], dict[int, int]]]:  # fmt: skip
    """The partitions' events in batches of random sizes, partitions interleaved in ``order``
    (each partition's events stay in offset order)."""
    cursors = {p: 0 for p in order}
    while any(cursors[p] < len(parts[p]) for p in order):
        events: list[JournalEvent] = []
        last: dict[int, int] = {}
        for p in order:
            take = rng.randint(0, size_max)
            chunk = parts[p][cursors[p] : cursors[p] + take]
            cursors[p] += len(chunk)
            if chunk:
                events += chunk
                last[p] = chunk[-1].offset
        if events:
            yield events, last


@pytest.fixture
def schemas(settings: Settings) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        for schema in made:
            conn.execute(f"drop schema if exists {schema} cascade")


@pytest.mark.parametrize(("seed", "size_max"), [(1, 1), (2, 7), (3, 60), (4, 2_000)])
def test_batches_give_the_per_event_tables(settings: Settings, schemas: list[str], seed: int,
                                           size_max: int) -> None:  # fmt: skip
    parts = partitioned(1_500, seed)
    in_order = sorted(
        (e for events in parts.values() for e in events), key=lambda e: (e.offset, e.partition)
    )
    rng = random.Random(seed)
    ref, per_batch, deferred = (f"it_{kind}_{uuid.uuid4().hex[:6]}" for kind in "rbd")
    schemas += [ref, per_batch, deferred]
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        for schema in (ref, per_batch, deferred):
            migrate(conn, schema)
        reference(conn, ref, in_order)
        for schema, order in ((per_batch, sorted(parts)), (deferred, sorted(parts)[::-1])):
            projector = Projector(settings, schema=schema, group_id="it-batch")
            projector.conn = conn
            # as a replay's worker: revenue at the end, dedupe and keys from its memory
            replaying = schema == deferred
            revenue = Revenue() if replaying else None
            seen: set[str] | None = set() if replaying else None
            written = Written() if replaying else None
            for events, last in batches(parts, order, rng, size_max):
                projector._write_sync(events, last, revenue, seen, written)
            if revenue is not None:
                with conn.transaction(), conn.cursor() as cur:
                    projector.batch.write_revenue(cur, revenue)
        kinds = dict(conn.execute(f"select event_type, count(*) from {ref}.journal group by 1"))
        ruled = conn.execute(
            f"select count(*), count(*) filter (where rule is null) from {ref}.transactions"
            " where kind = 'BET' and status like 'REJECTED:%'"
        ).fetchone()
    # every bet rejection the saga decided names its rule, and the row keeps it
    assert ruled is not None and ruled[0] > 0 and ruled[1] == 0, ruled
    # the journal exercises what the fold must get right
    for kind in ("BetAccepted", "BetRejected", "BetRolledBack", "RollbackRecorded",
                 "DebitTimedOut", "DebitCancelled", "CreditOwed", "WinCredited", "RoundClosed",
                 "RoundAutoClosed", "SessionOpened", "DuplicateConflictDetected",
                 "CampaignGranted", "FreeSpinPlayed", "FreeSpinRolledBack",
                 "CampaignExpired"):  # fmt: skip
        assert kinds.get(kind, 0) > 0, kind
    for schema in (per_batch, deferred):
        differences = compare(settings.database_url, ref, schema)
        assert differences == {t: [] for t in COMPARED_TABLES}, differences


def _win(n: int, kind: str, at: datetime) -> JournalEvent:
    """A credited win of the largest amount (what a jackpot or a bonus may be)."""
    datum = {
        "event_id": f"ev-big-{n}", "correlation_id": f"c-{n}", "operator_id": "op-big",
        "player_id": f"pl-{n}", "provider_id": "prov-big", "occurred_at": at,
        "transaction_id": f"w-{n}", "round_id": "r-shared", "game_id": "g-big",
        "amount": 2**63 - 1, "currency": "EUR", "command_id": f"cmd-{n}",
        "balance": 2**63 - 1, "round_closed": False, "mode": "real", "wallet": "seamless",
        "win_kind": kind, "campaign_id": None,
    }  # fmt: skip
    return JournalEvent("WinCredited", datum, 0, n)


def test_sums_past_64_bits_stop_at_the_largest_long_both_ways(
    settings: Settings, schemas: list[str]
) -> None:
    """Wins of the largest amount on one day and game: revenue stops at 2**63-1 instead of
    stopping the projector (it once could not write the batch), the same by the per-event
    SQL and by batches."""
    at = datetime(2026, 12, 1, 12, tzinfo=UTC)
    kinds = ("REGULAR", "REGULAR", "JACKPOT", "JACKPOT", "BONUS", "BONUS")
    events = [_win(n, kind, at) for n, kind in enumerate(kinds)]
    ref, batched = (f"it_big_{kind}_{uuid.uuid4().hex[:6]}" for kind in "rb")
    schemas += [ref, batched]
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        for schema in (ref, batched):
            migrate(conn, schema)
        reference(conn, ref, events)
        projector = Projector(settings, schema=batched, group_id="it-batch-big")
        projector.conn = conn
        projector._write_sync(events[:3], {0: 2}, None, None, None)
        projector._write_sync(events[3:], {0: 5}, None, None, None)
        row = conn.execute(f"select wins, jackpot_wins, bonus_wins from {ref}.revenue_daily"
                           " where operator_id = 'op-big'").fetchone()  # fmt: skip
    assert row == (2**63 - 1, 2**63 - 1, 2**63 - 1)
    differences = compare(settings.database_url, ref, batched)
    assert differences == {t: [] for t in COMPARED_TABLES}, differences
