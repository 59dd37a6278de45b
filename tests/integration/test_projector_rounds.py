"""Rounds in the projections: a round the saga auto-closes (``RoundAutoClosed``) is closed
with ``closed_by`` AUTO, one its provider closes (``RoundClosed``) PROVIDER; money settled for
a round after its close lands in the round's totals and in ``round_money_after_close``; a
bet refused ``ROUND_CLOSED`` is a rejected transaction. The per-event SQL and the batch fold
give the same tables. Journals decided by the saga's domain code, real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from agg_avro import AvroCodec
from agg_config.settings import Settings
from agg_domain.saga import (
    Command,
    Event,
    PlayerState,
    Reply,
    Request,
    SagaConfig,
    Tick,
    decide,
)
from agg_domain.statuses import Action, ReplyStatus
from agg_projector.apply import Applier, JournalEvent
from agg_projector.migrate import migrate
from agg_projector.projector import EVENT_PREFIX, Projector
from agg_projector.reconcile import run_report
from agg_projector.replay import COMPARED_TABLES, compare
from agg_saga.mapping import event_to_avro

CODEC = AvroCodec()
T0 = 1_780_000_000_000
CONFIG = SagaConfig(round_auto_close_ms_by_provider={"prov-live": 2_000})


class Journal:
    """Players' sagas with a wallet that acknowledges every command at once."""

    def __init__(self) -> None:
        self.states: dict[str, PlayerState] = {}
        self.events: list[JournalEvent] = []
        self.now = T0
        self.n = 0

    def decide(self, player: str, message: Request | Reply | Tick) -> None:
        state = self.states.get(player) or PlayerState("op-alpha", player)
        decision = decide(state, message, self.now, CONFIG)
        self.states[player] = decision.state
        for output in decision.outputs:
            if isinstance(output, Event):
                name, datum = event_to_avro(output, "op-alpha", player, self.now)
                decoded = CODEC.decode(CODEC.encode(name, datum))
                self.events.append(JournalEvent(decoded.name[len(EVENT_PREFIX) :],
                                                decoded.datum, 0, len(self.events)))  # fmt: skip
            elif isinstance(output, Command):
                self.now += 5
                self.decide(player, Reply(output.command_id, ReplyStatus.OK, 1_000, "EUR",
                                          self.now))  # fmt: skip

    def call(
        self,
        player: str,
        action: Action,
        txn: str,
        amount: int | None = None,
        *,
        round_id: str = "rnd-1",
        closed: bool = False,
        ref: str | None = None,
    ) -> None:
        self.n += 1
        self.decide(player, Request(
            f"req-{self.n}", f"corr-{self.n}", "prov-live", "op-alpha", player, action, "EUR",
            self.now, txn, ref, round_id, "live-table", amount, closed,
        ))  # fmt: skip

    def wait(self, ms: int) -> None:
        self.now += ms
        for player in list(self.states):
            self.decide(player, Tick())


def journal() -> list[JournalEvent]:
    j = Journal()
    # pl-1: a round left idle, auto-closed; a win paid after it; a bet on it refused
    j.call("pl-1", Action.BET, "b1", 100)
    j.call("pl-1", Action.BET, "b2", 40)
    # pl-2: the same round id at the same table, closed by the provider's flag
    j.call("pl-2", Action.BET, "b1", 70)
    j.call("pl-2", Action.WIN, "w1", 0, closed=True)
    j.wait(2_500)
    j.call("pl-1", Action.WIN, "w1", 300)
    j.call("pl-1", Action.ROLLBACK, "x2", ref="b2")
    j.call("pl-1", Action.BET, "b3", 10)
    j.call("pl-2", Action.BET, "b3", 10)
    return j.events


@pytest.fixture
def schemas(settings: Settings) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        for schema in made:
            conn.execute(f"drop schema if exists {schema} cascade")


def test_auto_closed_rounds_and_money_after_the_close(settings: Settings,
                                                      schemas: list[str]) -> None:  # fmt: skip
    events = journal()
    names = [e.name for e in events]
    assert names.count("RoundAutoClosed") == 1 and names.count("RoundClosed") == 1
    ref, batched = (f"it_rounds_{kind}_{uuid.uuid4().hex[:6]}" for kind in "rb")
    schemas += [ref, batched]
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        for schema in (ref, batched):
            migrate(conn, schema)
        applier = Applier(ref)
        with conn.transaction(), conn.cursor() as cur:
            for event in events:
                applier.apply(cur, event)
        projector = Projector(settings, schema=batched, group_id="it-rounds")
        projector.conn = conn
        projector._write_sync(events, {0: events[-1].offset}, None, None, None)
        rows: dict[str, Any] = {
            r[0]: r[1:]
            for r in conn.execute(
                f"select player_id, status, closed_by, bet_total, win_total, refund_total"
                f" from {ref}.rounds where round_id = 'rnd-1'"
            )
        }
        late = conn.execute(
            f"select player_id, kind, status, amount from {ref}.round_money_after_close"
            " order by player_id, kind"
        ).fetchall()
        refused = conn.execute(
            f"select player_id, status from {ref}.transactions where transaction_id = 'b3'"
            " order by player_id"
        ).fetchall()
        open_rounds = conn.execute(f"select count(*) from {ref}.open_rounds").fetchone()
        lines, found = run_report(conn, ref, timedelta(0), 10, wallet_schema="nowallet_rounds")
    assert rows == {
        "pl-1": ("CLOSED", "AUTO", 140, 300, 40),
        "pl-2": ("CLOSED", "PROVIDER", 70, 0, 0),
    }
    assert late == [("pl-1", "ROLLBACK", "REFUNDED", 40), ("pl-1", "WIN", "CREDITED", 300)]
    assert refused == [("pl-1", "REJECTED:ROUND_CLOSED"), ("pl-2", "REJECTED:ROUND_CLOSED")]
    assert open_rounds == (0,)
    # the auditor's report lists the money after the close, for information (no finding)
    heading = "-- money settled after its round closed (accepted, in the round's totals): 2"
    assert heading in lines
    assert not any("money settled after" in title for title in found)
    assert found["rounds open longer than 0:00:00"] == 0
    assert compare(settings.database_url, ref, batched) == {t: [] for t in COMPARED_TABLES}


def test_rounds_closed_before_migration_008_were_closed_by_their_provider(
    settings: Settings, schemas: list[str]
) -> None:
    schema = f"it_rounds_m_{uuid.uuid4().hex[:6]}"
    schemas.append(schema)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f"create schema {schema}")
        conn.execute(
            f"create table {schema}.schema_migrations (version int primary key,"
            " name text not null, applied_at timestamptz not null default now())"
        )
        from agg_projector.migrate import migrations

        for version, name, text in [m for m in migrations() if m[1] < "010_round_closed_by"]:
            conn.execute(text.replace("{schema}", schema).encode())
            conn.execute(f"insert into {schema}.schema_migrations values (%s, %s)",
                         (version, name))  # fmt: skip
        for round_id, status, closed in (("a", "CLOSED", "now()"), ("b", "OPEN", "null")):
            conn.execute(
                f"insert into {schema}.rounds (operator_id, provider_id, round_id, player_id,"
                " currency, status, opened_at, updated_at, closed_at)"
                f" values ('op', 'prov', %s, 'pl', 'EUR', %s, now(), now(), {closed})",
                (round_id, status),
            )
        later = [name for _, name, _ in migrations() if name >= "010_round_closed_by"]
        assert migrate(conn, schema) == later and later[0] == "010_round_closed_by"
        got = conn.execute(
            f"select round_id, closed_by from {schema}.rounds order by round_id"
        ).fetchall()
    assert got == [("a", "PROVIDER"), ("b", None)]
