"""The projector on the real broker and database: every event projected exactly once across
SIGKILLs in the middle of batches, the same event delivered twice has one effect, and the
rows add up to the journal. Every test that runs the projector runs it on both Kafka clients
of the transport."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from agg_avro import AvroCodec
from agg_config.settings import Settings
from agg_domain.ids import derive_id
from agg_kafka.admin import ensure_topics
from agg_kafka.clients import make_producer, player_key
from agg_kafka.topics import catalogue
from agg_ports.transport import InRecord
from agg_projector.projector import Projector

CODEC = AvroCodec()
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["librdkafka", "aiokafka"])
def isolated(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """A topic prefix of its own, so no other test's journal events are projected here; the
    projector on each Kafka client of the transport."""
    prefix = f"proj{uuid.uuid4().hex[:8]}"
    specs = catalogue(["op-alpha"], partitions=settings.partition_count, replication_factor=1,
                      min_insync_replicas=1, prefix=prefix)  # fmt: skip
    assert asyncio.run(ensure_topics(settings.kafka_bootstrap, specs)).ok
    return settings.model_copy(update={"topic_prefix": prefix, "kafka_client": request.param})


def journal(n: int, players: int = 40) -> list[tuple[str, dict[str, Any]]]:
    """A plausible journal: rounds of three events for one player each (a bet accepted, a win
    credited, the bet rolled back), so that a player's events stay in order on one partition."""
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(n):
        player = f"pl-{(i // 3) % players}"
        base = {
            "correlation_id": f"corr-{i}", "operator_id": "op-alpha", "player_id": player,
            "provider_id": "prov-nova", "occurred_at": T0 + timedelta(milliseconds=i),
            "round_id": f"rnd-{i // 3}", "game_id": "nova-starfall", "currency": "EUR",
        }  # fmt: skip
        kind = i % 3
        if kind == 0:
            out.append(("BetAccepted", {**base, "event_id": derive_id("ev", "b", i),
                        "transaction_id": f"tx-{i}", "amount": 100, "command_id": f"c-{i}",
                        "balance": 10_000 - i, "round_closed": False}))  # fmt: skip
        elif kind == 1:
            out.append(("WinCredited", {**base, "event_id": derive_id("ev", "w", i),
                        "transaction_id": f"tx-{i}", "amount": 30, "command_id": f"c-{i}",
                        "balance": 10_000 + i, "round_closed": False}))  # fmt: skip
        else:
            out.append(("BetRolledBack", {**base, "event_id": derive_id("ev", "r", i),
                        "transaction_id": f"tx-{i - 2}", "amount": 100,
                        "rollback_transaction_id": f"rb-{i}", "command_id": f"cx-{i}",
                        "balance": 10_000}))  # fmt: skip
    return out


async def publish(settings: Settings, events: list[tuple[str, dict[str, Any]]]) -> None:
    producer = make_producer(settings, client_id="proj-test")
    await producer.start()
    try:
        topic = f"{settings.topic_prefix}.events"
        futures = [
            await producer.send(
                topic,
                CODEC.encode(f"casino.agg.events.{name}", datum),
                key=player_key(datum["operator_id"], datum["player_id"]),
            )
            for name, datum in events
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def counts(database_url: str, schema: str) -> dict[str, Any]:
    with psycopg.connect(database_url) as conn:
        exists = conn.execute("select to_regclass(%s)", (f"{schema}.journal",)).fetchone()
        if exists is None or exists[0] is None:  # not migrated yet
            return {"journal": (0, 0), "totals": (None, None, None), "changes": (0,)}
        journal_rows = conn.execute(
            f"select count(*), count(distinct event_id) from {schema}.journal"
        ).fetchone()
        totals = conn.execute(
            f"select sum(bets), sum(wins), sum(refunds) from {schema}.revenue_daily"
        ).fetchone()
        changes = conn.execute(f"select count(*) from {schema}.transaction_changes").fetchone()
    return {"journal": journal_rows, "totals": totals, "changes": changes}


def expected_totals(events: list[tuple[str, dict[str, Any]]]) -> tuple[int, int, int]:
    sums: Counter[str] = Counter()
    for name, datum in events:
        sums[name] += datum["amount"]
    return sums["BetAccepted"], sums["WinCredited"], sums["BetRolledBack"]


def run_projector(settings: Settings, schema: str, stop_when: Any) -> None:
    async def main() -> None:
        projector = Projector(settings, schema=schema, client_id="proj-it", batch_count_max=500)
        stop = asyncio.Event()
        task = asyncio.create_task(projector.run(stop))
        deadline = time.monotonic() + 60
        while not stop_when() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        stop.set()
        await task

    asyncio.run(main())


def test_each_event_once_and_a_duplicate_has_no_effect(isolated: Settings) -> None:
    schema = f"it_{uuid.uuid4().hex[:8]}"
    events = journal(300)
    # the saga may republish an event after a crash: same id, another offset
    events_with_duplicate = [*events, events[0], events[1]]
    asyncio.run(publish(isolated, events_with_duplicate))
    run_projector(isolated, schema,
                  lambda: counts(isolated.database_url, schema)["journal"][0] >= 300)  # fmt: skip
    time.sleep(0.5)
    result = counts(isolated.database_url, schema)
    assert result["journal"] == (300, 300)
    assert result["totals"] == expected_totals(events)
    with psycopg.connect(isolated.database_url) as conn:
        positions = conn.execute(
            f"select sum(next_offset) from {schema}.consumer_offsets"
        ).fetchone()
        rolled_back = conn.execute(
            f"select count(*) from {schema}.transactions"
            " where kind = 'BET' and status = 'ROLLED_BACK'"
        ).fetchone()
    assert positions == (302,), "the duplicates were read, and skipped"
    assert rolled_back == (100,)


def test_projector_killed_mid_batch_misses_and_doubles_nothing(
    isolated: Settings, tmp_path: Path
) -> None:
    schema = f"it_{uuid.uuid4().hex[:8]}"
    events = journal(20_000, players=400)
    asyncio.run(publish(isolated, events))
    env = {
        **os.environ,
        "AGG_KAFKA_BOOTSTRAP": isolated.kafka_bootstrap,
        "AGG_DATABASE_URL": isolated.database_url,
        "AGG_TOPIC_PREFIX": isolated.topic_prefix,
        "AGG_KAFKA_CLIENT": isolated.kafka_client,
    }
    log = (tmp_path / "projector.log").open("ab")
    args = [sys.executable, "-m", "agg_projector", "--schema", schema, "--metrics-port", "0"]
    kills = 0
    done = 0
    while True:
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=log)
        if kills >= 3:
            break
        # killed as soon as it has written more than before, not after a fixed time: a fast
        # projector would otherwise finish the whole journal before the first kill
        before, started = done, time.monotonic()
        while done <= before and time.monotonic() < started + 60:
            time.sleep(0.02)
            done = counts(isolated.database_url, schema)["journal"][0]
        if done >= len(events):
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
    deadline = time.monotonic() + 60
    while counts(isolated.database_url, schema)["journal"][0] < len(events):
        assert time.monotonic() < deadline, "the projector did not catch up"
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    assert kills >= 1, "the projector was never killed mid-stream"
    result = counts(isolated.database_url, schema)
    assert result["journal"] == (len(events), len(events))
    assert result["totals"] == expected_totals(events)
    assert result["changes"] == (len(events),)  # one state change per event


class CheckedProjector(Projector):
    """A projector that notes what reaches its writer that it should not: after each
    assignment, a partition's records must start at the position stored for it (0 when none:
    the test's topics are new) and follow one another (the test's journal has no gaps)."""

    def __init__(self, settings: Settings, **kwargs: Any):
        super().__init__(settings, **kwargs)
        self.next_offsets: dict[int, int] = {}
        self.assignments = 0
        self.written = 0
        self.unexpected: list[tuple[int, int, int | None]] = []
        """(partition, offset, the offset expected) of each record out of place."""

    async def on_assigned(self, partitions: set[tuple[str, int]]) -> None:
        await super().on_assigned(partitions)
        self.next_offsets = {p: self._restored.get(p, 0) for _, p in partitions}
        self.assignments += 1

    async def _write(self, records: list[InRecord]) -> None:
        for r in records:
            expected = self.next_offsets.get(r.partition)
            if r.offset != expected:
                self.unexpected.append((r.partition, r.offset, expected))
            self.next_offsets[r.partition] = r.offset + 1
        await super()._write(records)
        self.written += len(records)


@pytest.fixture
def journal_topics(settings: Settings) -> Settings:
    """Topics of their own, for a test that picks the clients of its projectors itself."""
    prefix = f"proj{uuid.uuid4().hex[:8]}"
    specs = catalogue(["op-alpha"], partitions=settings.partition_count, replication_factor=1,
                      min_insync_replicas=1, prefix=prefix)  # fmt: skip
    assert asyncio.run(ensure_topics(settings.kafka_bootstrap, specs)).ok
    return settings.model_copy(update={"topic_prefix": prefix})


def test_rebalances_between_clients_hand_over_at_the_stored_positions(
    journal_topics: Settings,
) -> None:
    """Projectors on librdkafka and on aiokafka in one group take partitions from each other
    while the journal grows: each starts every partition it is given at the position stored
    for it, reads it without a gap or a repeat, and every event is projected once."""
    settings = journal_topics
    schema = f"it_{uuid.uuid4().hex[:8]}"
    group = f"it-proj-{uuid.uuid4().hex[:8]}"
    events = journal(60_000, players=120)
    published = 0
    clients = {"rd": settings.model_copy(update={"kafka_client": "librdkafka"}),
               "aio": settings.model_copy(update={"kafka_client": "aiokafka"})}  # fmt: skip

    def projected() -> int:
        return int(counts(settings.database_url, schema)["journal"][0])

    async def until(condition: Any, what: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.1)

    async def scenario() -> list[CheckedProjector]:
        enough = asyncio.Event()

        async def feed() -> None:
            """The journal grows, about 1,000 events a second, until there are enough."""
            nonlocal published
            producer = make_producer(settings, client_id="proj-test-feed")
            await producer.start()
            try:
                while not enough.is_set() and published < len(events):
                    chunk = events[published : published + 100]
                    futures = [
                        await producer.send(
                            f"{settings.topic_prefix}.events",
                            CODEC.encode(f"casino.agg.events.{name}", datum),
                            key=player_key(datum["operator_id"], datum["player_id"]),
                        )
                        for name, datum in chunk
                    ]
                    await asyncio.gather(*futures)
                    published += len(chunk)
                    await asyncio.sleep(0.1)
            finally:
                await producer.stop()

        feeding = asyncio.create_task(feed())
        runs: list[tuple[CheckedProjector, asyncio.Event, asyncio.Task[None]]] = []

        def start(name: str) -> CheckedProjector:
            projector = CheckedProjector(clients[name], schema=schema, group_id=group,
                                         batch_count_max=300,
                                         client_id=f"proj-it-{name}-{len(runs)}")  # fmt: skip
            stop = asyncio.Event()
            runs.append((projector, stop, asyncio.create_task(projector.run(stop))))
            return projector

        def going_on(*projectors: CheckedProjector) -> Any:
            written = [p.written for p in projectors]
            return lambda: all(p.written > n for p, n in zip(projectors, written, strict=True))

        first = start("rd")
        await until(lambda: first.written > 0, "the first projects")
        second = start("aio")
        await until(lambda: first.assignments >= 2 and second.assignments >= 1,
                    "the partitions are shared")  # fmt: skip
        await until(going_on(first, second), "both project their shares")
        runs[0][1].set()
        await runs[0][2]
        await until(lambda: second.assignments >= 2, "the second takes every partition")
        await until(going_on(second), "the second projects them")
        third = start("rd")
        await until(lambda: third.assignments >= 1 and second.assignments >= 3,
                    "the third is given a share")  # fmt: skip
        await until(going_on(second, third), "both project their shares")
        enough.set()
        await feeding
        await until(lambda: projected() >= published, "every event is projected")
        for _, stop, _ in runs:
            stop.set()
        for _, _, task in runs:
            await task
        return [projector for projector, _, _ in runs]

    projectors = asyncio.run(scenario())
    for projector in projectors:
        assert projector.unexpected == [], projector.client_id
    result = counts(settings.database_url, schema)
    assert result["journal"] == (published, published)
    assert result["totals"] == expected_totals(events[:published])
    assert result["changes"] == (published,)


def test_demo_play_is_journaled_but_kept_out_of_money(isolated: Settings) -> None:
    """Demo events are in the journal and the demo balances, and nowhere else: no ledger
    row, round, revenue (GGR) or real balance; real play of the same ids is unaffected."""
    schema = f"it_{uuid.uuid4().hex[:8]}"
    money = {"round_id": "rnd-1", "game_id": "nova-starfall", "currency": "EUR"}

    def ev(name: str, n: int, mode: str | None, **fields: Any) -> tuple[str, dict[str, Any]]:
        datum = {"operator_id": "op-alpha", "player_id": "pl-demo", "provider_id": "prov-nova",
                 "event_id": derive_id("ev", "demo-test", n), "correlation_id": f"c{n}",
                 "occurred_at": T0 + timedelta(seconds=n), **fields}  # fmt: skip
        if mode is not None:
            datum["mode"] = mode
        return name, datum

    events = [
        ev("BetAccepted", 1, "demo", **money, transaction_id="t1", amount=300,
           command_id="demo-1", balance=99_700, round_closed=False),
        ev("WinCredited", 2, "demo", **money, transaction_id="t2", amount=1_000,
           command_id="demo-2", balance=100_700, round_closed=True),
        ev("BetRolledBack", 3, "demo", **money, transaction_id="t1", amount=300,
           command_id="demo-3", rollback_transaction_id="rb1", balance=101_000),
        ev("RollbackRecorded", 4, "demo", round_id="rnd-1", game_id="nova-starfall",
           rollback_transaction_id="rb9", reference_transaction_id="t9", bet_known=False),
        # real play, the same transaction id: projected as always
        ev("BetAccepted", 5, None, **money, transaction_id="t1", amount=100,
           command_id="cmd-5", balance=900, round_closed=False),
        ev("SessionOpened", 6, "demo", session_id="ses-demo", game_id="nova-starfall",
           currency="EUR", country="MT", expires_at=T0 + timedelta(hours=4)),
    ]  # fmt: skip
    asyncio.run(publish(isolated, events))
    run_projector(
        isolated, schema, lambda: counts(isolated.database_url, schema)["journal"][0] >= len(events)
    )
    time.sleep(0.3)
    with psycopg.connect(isolated.database_url) as conn:

        def q(text: str) -> list[tuple[Any, ...]]:
            return conn.execute(text.replace("{s}", schema)).fetchall()

        assert q("select count(*) from {s}.journal") == [(6,)]
        assert q("select payload->>'mode' from {s}.journal order by \"offset\"") == [
            ("demo",), ("demo",), ("demo",), ("demo",), ("real",), ("demo",)]  # fmt: skip
        assert q("select transaction_id, kind, status, amount from {s}.transactions") == [
            ("t1", "BET", "ACCEPTED", 100)]  # fmt: skip
        assert q("select bets, wins, refunds, ggr from {s}.revenue_daily") == [(100, 0, 0, 100)]
        assert q("select round_id, bet_total, win_total from {s}.rounds") == [("rnd-1", 100, 0)]
        assert q("select balance from {s}.balances") == [(900,)]
        assert q("select player_id, currency, balance from {s}.demo_balances") == [
            ("pl-demo", "EUR", 101_000)]  # fmt: skip
        assert q("select mode from {s}.sessions") == [("demo",)]
        # the reconciliation views see real play only
        assert q("select count(*) from {s}.contradictory_decisions") == [(0,)]
        assert q("select count(*) from {s}.balance_chain_gaps") == [(0,)]
        assert q("select count(*) from {s}.rollback_tombstones") == [(0,)]


def test_rows_of_before_004_stay_and_transactions_become_the_players(settings: Settings) -> None:
    """A schema projected before migration 004 (transactions keyed without the player) keeps
    its rows, its change rows learn their player from the journal, and from then on two
    players' transactions with one provider id are two rows."""
    from agg_projector.apply import Applier, JournalEvent
    from agg_projector.migrate import MIGRATIONS, migrate, migrations

    schema = f"it_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f"create schema {schema}")
        conn.execute(
            f"create table {schema}.schema_migrations (version int primary key,"
            " name text not null, applied_at timestamptz not null default now())"
        )
        for version, name, text in migrations()[:3]:
            conn.execute(text.replace("{schema}", schema).encode())
            conn.execute(f"insert into {schema}.schema_migrations values (%s, %s)",
                         (version, name))  # fmt: skip
        conn.execute(
            f"insert into {schema}.journal (event_id, event_type, operator_id, player_id,"
            ' provider_id, correlation_id, occurred_at, transaction_id, partition, "offset",'
            " payload) values ('ev-old', 'BetAccepted', 'op-alpha', 'pl-a', 'prov-nova', 'c',"
            " %s, 'tx-1', 0, 0, '{}')",
            (T0,),
        )
        conn.execute(
            f"insert into {schema}.transactions (operator_id, provider_id, transaction_id,"
            " player_id, kind, status, amount, currency, first_event_at, updated_at,"
            " last_event_id) values ('op-alpha', 'prov-nova', 'tx-1', 'pl-a', 'BET', 'ACCEPTED',"
            " 100, 'EUR', %s, %s, 'ev-old')",
            (T0, T0),
        )
        conn.execute(
            f"insert into {schema}.transaction_changes (event_id, operator_id, provider_id,"
            " transaction_id, status, occurred_at, correlation_id) values ('ev-old', 'op-alpha',"
            " 'prov-nova', 'tx-1', 'ACCEPTED', %s, 'c')",
            (T0,),
        )
        later = sorted(p.stem for p in MIGRATIONS.glob("*.sql") if p.stem >= "004")
        assert later[:3] == ["004_transactions_per_player", "005_contradictory_decisions",
                             "006_demo_play"]  # fmt: skip
        assert migrate(conn, schema) == later
        assert conn.execute(
            f"select event_id, player_id from {schema}.transaction_changes"
        ).fetchall() == [("ev-old", "pl-a")]
        applier = Applier(schema)
        with conn.transaction(), conn.cursor() as cur:
            applier.apply(cur, JournalEvent("BetAccepted", {
                "event_id": "ev-new", "correlation_id": "c2", "operator_id": "op-alpha",
                "player_id": "pl-b", "provider_id": "prov-nova", "occurred_at": T0,
                "transaction_id": "tx-1", "round_id": "rnd-1", "game_id": "nova-starfall",
                "amount": 70, "currency": "EUR", "command_id": "c-b", "balance": 9_930,
                "round_closed": False}, 0, 1))  # fmt: skip
        rows = conn.execute(
            f"select player_id, amount, status from {schema}.transactions"
            " where transaction_id = 'tx-1' order by player_id"
        ).fetchall()
        assert rows == [("pl-a", 100, "ACCEPTED"), ("pl-b", 70, "ACCEPTED")]
        conn.execute(f"drop schema {schema} cascade")
