"""Replay after a run with faults (duplicate callbacks, rollbacks before their bets, a wallet
outage, a saga worker killed and replaced) rebuilds the live projections exactly; and the
journal it rebuilt from decodes the same with an independent Avro implementation."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
import uuid
from collections import Counter

import avro.io
import avro.schema
import psycopg
from aiokafka import TopicPartition

from agg_kafka.clients import make_consumer
from agg_projector.projector import GROUP_ID
from agg_projector.replay import behind, compare, end_offsets, replay
from tests.e2e.conftest import Pipeline
from tests.e2e.test_pipeline import answer, eventually
from tests.integration.helpers import apache_schemas


def _traffic_with_faults(pipeline: Pipeline) -> None:
    players = [pipeline.new_player() for _ in range(6)]
    for i in range(40):
        player, token = players[i % len(players)]
        bet = f"tx-{uuid.uuid4().hex[:10]}"
        assert answer(pipeline.bet(player, token, bet, 10 + i, round_id=f"r{i}"))[1] == "OK"
        pipeline.bet(player, token, bet, 10 + i, round_id=f"r{i}")  # a duplicate callback
        if i % 5 == 0:
            pipeline.rollback(player, token, f"rb-{bet}", bet)
        else:
            pipeline.win(player, token, f"w-{bet}", 2 * i, round_id=f"r{i}", round_closed=True)
        if i % 7 == 0:  # a rollback that overtakes its bet
            ghost = f"tx-{uuid.uuid4().hex[:10]}"
            pipeline.rollback(player, token, f"rb-{ghost}", ghost)
            pipeline.bet(player, token, ghost, 5, round_id=f"g{i}")
        if i == 15:  # a wallet outage: a debit times out and is compensated
            pipeline.wallet_mode("silent")
            pipeline.bet(player, token, f"tx-out-{i}", 7, round_id=f"o{i}")
            time.sleep(1.5)
            pipeline.wallet_mode("normal")
        if i == 25:  # a saga worker killed and replaced
            pid = pipeline.sagas[-1].pid()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            replacement = pipeline._saga(f"saga-r{i}")
            replacement.start(pipeline.env, 90)
            pipeline.sagas.append(replacement)


def _apache_decode_journal(pipeline: Pipeline, topic: str) -> Counter[str]:
    """Event counts per type, decoded by the Apache ``avro`` package from the .avsc files."""
    schemas = apache_schemas()

    async def read() -> Counter[str]:
        consumer = make_consumer(pipeline.settings, group_id=None, client_id="apache-check")
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(pipeline.settings.partition_count)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            counts: Counter[str] = Counter()
            seen: set[str] = set()
            remaining = {tp for tp in tps if ends[tp] > 0}
            while remaining:
                for tp, records in (await consumer.getmany(*remaining, timeout_ms=1000)).items():
                    for record in records:
                        schema = schemas[record.value[2:10]]
                        datum = avro.io.DatumReader(schema).read(
                            avro.io.BinaryDecoder(io.BytesIO(record.value[10:]))
                        )
                        if datum["event_id"] not in seen:  # republished events count once
                            seen.add(datum["event_id"])
                            counts[schema.name] += 1
                        if record.offset + 1 >= ends[tp]:
                            remaining.discard(tp)
            return counts
        finally:
            await consumer.stop()

    return asyncio.run(read())


def test_replay_rebuilds_the_live_projections_exactly(pipeline: Pipeline) -> None:
    _traffic_with_faults(pipeline)
    settings = pipeline.settings
    topic = f"{settings.topic_prefix}.events"
    time.sleep(3)  # let compensations and resends settle into the journal
    ends = asyncio.run(end_offsets(settings, topic))
    eventually(lambda: behind(settings.database_url, "projection", GROUP_ID, topic, ends) == 0, 60)
    target = f"replay_{uuid.uuid4().hex[:8]}"
    result = asyncio.run(replay(settings, target, progress=None))
    assert result.undecodable == 0
    differences = compare(settings.database_url, "projection", target)
    assert differences == {table: [] for table in differences}, differences
    # the same journal, decoded by an independent Avro implementation
    with psycopg.connect(settings.database_url) as conn:
        ours = Counter(
            dict(conn.execute(f"select event_type, count(*) from {target}.journal group by 1"))
        )
    assert _apache_decode_journal(pipeline, topic) == ours
    assert ours["DebitTimedOut"] >= 1 and ours["RollbackRecorded"] >= 1


def test_audit_replay_command_reports_identical(pipeline: Pipeline) -> None:
    import io as _io

    from agg_auditor.cli import main_audit

    def replay_schemas() -> int:
        with psycopg.connect(pipeline.settings.database_url) as conn:
            row = conn.execute(
                "select count(*) from pg_namespace where nspname like 'replay_%'"
            ).fetchone()
        return int(row[0]) if row else 0

    before = replay_schemas()
    player, token = pipeline.new_player()
    assert answer(pipeline.bet(player, token, f"tx-{uuid.uuid4().hex[:10]}", 25))[1] == "OK"
    out, err = _io.StringIO(), _io.StringIO()
    code = main_audit(["replay", "-q"], settings=pipeline.settings, stdout=out, stderr=err)
    assert code == 0, out.getvalue() + err.getvalue()
    assert out.getvalue().rstrip().endswith("identical")
    assert replay_schemas() == before, "the rebuilt schema is dropped unless --keep"
