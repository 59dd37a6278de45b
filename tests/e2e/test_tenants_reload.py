"""End to end: a tenants change reaches the running services without a restart.

The pipeline (saga, wallet, projector, ingress) runs on a topic prefix of its own, so its
config topic is its own. ``aggregator config apply`` disables the provider: the running
ingress refuses its callbacks (404 UNKNOWN_PROVIDER) and its operator sessions; applied
enabled again, the same ingress process accepts it again. The journal, on Kafka and in the
projector's journal table, holds both ``TenantsChanged`` events with their actors."""

from __future__ import annotations

import asyncio
import copy
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from aiokafka import TopicPartition

from agg_avro import AvroCodec
from agg_config.settings import Settings
from agg_kafka.admin import ensure_topics, topic_partitions
from agg_kafka.clients import make_consumer
from agg_kafka.config_topic import JOURNAL_KEY
from agg_kafka.topics import TopicNames, catalogue_from_settings
from tests.e2e.conftest import PROVIDER, Pipeline
from tests.e2e.test_pipeline import answer, eventually, txn


@pytest.fixture(scope="module")
def ours(settings: Settings) -> Settings:
    chosen = settings.model_copy(update={"topic_prefix": f"reload-{uuid.uuid4().hex[:8]}"})
    report = asyncio.run(ensure_topics(chosen.kafka_bootstrap, catalogue_from_settings(chosen)))
    assert report.ok, report.lines()
    return chosen


@pytest.fixture(scope="module")
def pipeline(ours: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    p = Pipeline(ours, tmp_path_factory.mktemp("pipeline-reload"),
                 env={"AGG_TOPIC_PREFIX": ours.topic_prefix})  # fmt: skip
    try:
        p.start()
        yield p
    finally:
        p.stop()


def _apply(pipeline: Pipeline, path: Path, actor: str, reason: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGG_")}
    env.update({k: v for k, v in pipeline.env.items() if k.startswith("AGG_")})
    done = subprocess.run(
        [sys.executable, "-m", "agg_cli.main", "config", "apply", str(path), "--actor", actor,
         "--reason", reason],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _tenants_file(settings: Settings, root: Path, *, nova_enabled: bool) -> Path:
    data: dict[str, Any] = copy.deepcopy(yaml.safe_load(settings.tenants_file.read_text()))
    next(p for p in data["providers"] if p["id"] == PROVIDER)["enabled"] = nova_enabled
    path = root / f"tenants-{'on' if nova_enabled else 'off'}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _journal_config_events(settings: Settings) -> list[dict[str, Any]]:
    topic = TopicNames(settings.topic_prefix).events
    codec = AvroCodec()

    async def run() -> list[dict[str, Any]]:
        consumer = make_consumer(settings, group_id=None, client_id="e2e-reload-journal")
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in await topic_partitions(
                settings.kafka_bootstrap, topic)]  # fmt: skip
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            found = []
            for tp in tps:
                while await consumer.position(tp) < ends[tp]:
                    for record in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                        if record.key == JOURNAL_KEY:
                            found.append(codec.decode(record.value or b"").datum)
            return found
        finally:
            await consumer.stop()

    return asyncio.run(run())


def test_disabling_and_enabling_a_provider_reaches_the_running_ingress(
    pipeline: Pipeline, ours: Settings, tmp_path: Path
) -> None:
    ingress_pid = pipeline.ingress.pid()
    player, token = pipeline.new_player()
    assert answer(pipeline.bet(player, token, txn(), 100))[:2] == (200, "OK")

    # the baseline, as `aggregator dev up` publishes it: the running services' own tenants
    on = _tenants_file(ours, tmp_path, nova_enabled=True)
    _apply(pipeline, on, "e2e-baseline", "the file the services run")
    off = _tenants_file(ours, tmp_path, nova_enabled=False)
    printed = _apply(pipeline, off, "e2e-ops-alice", "provider incident")
    assert "provider changed: prov-nova (enabled)" in printed

    def refused() -> bool:
        response = pipeline.callback("balance", player, token)
        return (response.status_code, response.json()["status"]) == (404, "UNKNOWN_PROVIDER")

    eventually(refused, timeout_s=30)
    bet = pipeline.bet(player, token, txn(), 100)
    assert (bet.status_code, bet.json()["status"]) == (404, "UNKNOWN_PROVIDER")

    _apply(pipeline, on, "e2e-ops-bob", "incident over")

    def accepted() -> bool:
        return pipeline.callback("balance", player, token).status_code == 200

    eventually(accepted, timeout_s=30)
    assert answer(pipeline.bet(player, token, txn(), 100))[:2] == (200, "OK")
    assert pipeline.ingress.pid() == ingress_pid  # the same process throughout

    log = pipeline.ingress.log_file.read_text()
    assert '"event":"tenants_applied"' in log and '"actor":"e2e-ops-bob"' in log
    metrics = pipeline.http.get("/metrics").text
    assert 'agg_config_version{service="ingress"} 3.0' in metrics

    events = _journal_config_events(ours)[1:]
    assert [(e["actor"], e["reason"], e["sequence"]) for e in events] == [
        ("e2e-ops-alice", "provider incident", 2), ("e2e-ops-bob", "incident over", 3)]  # fmt: skip
    for event in events:
        assert event["providers"]["changed"] == [{"id": PROVIDER, "fields": ["enabled"]}]
    assert events[1]["previous_sha256"] == events[0]["sha256"]

    # the projector keeps them in its journal table, where auditors query the journal
    def projected() -> bool:
        with psycopg.connect(ours.database_url) as conn:
            rows = conn.execute(
                "select payload->>'actor' from projection.journal"
                " where event_type = 'TenantsChanged' and event_id = any(%s)"
                " order by occurred_at",
                ([e["event_id"] for e in events],),
            ).fetchall()
        return [r[0] for r in rows] == ["e2e-ops-alice", "e2e-ops-bob"]

    eventually(projected, timeout_s=30)


def test_a_providers_new_auto_close_time_reaches_the_running_saga_workers(
    pipeline: Pipeline, ours: Settings, tmp_path: Path
) -> None:
    """``round_auto_close_s`` lowered by ``aggregator config apply``: the same saga worker
    closes an idle round of the provider after the new time (RoundAutoClosed journaled, a
    bet on it refused ROUND_CLOSED), with no restart."""
    saga_pid = pipeline.sagas[0].pid()
    data: dict[str, Any] = copy.deepcopy(yaml.safe_load(ours.tenants_file.read_text()))
    next(p for p in data["providers"] if p["id"] == PROVIDER)["round_auto_close_s"] = 2
    quick = tmp_path / "tenants-quick-close.yaml"
    quick.write_text(yaml.safe_dump(data))
    _apply(pipeline, quick, "e2e-ops-carol", "close idle rounds sooner")
    eventually(lambda: '"event":"round_auto_close_applied"' in pipeline.sagas[0].log_file
               .read_text(), timeout_s=30)  # fmt: skip

    player, token = pipeline.new_player()
    round_id = f"rnd-{uuid.uuid4().hex[:8]}"
    assert answer(pipeline.bet(player, token, txn(), 100, round_id=round_id))[1] == "OK"

    def auto_closed() -> bool:
        with psycopg.connect(ours.database_url) as conn:
            rows = conn.execute(
                "select payload->>'auto_close_ms' from projection.journal where player_id = %s"
                " and event_type = 'RoundAutoClosed'",
                (player,),
            ).fetchall()
        return [r[0] for r in rows] == ["2000"]

    eventually(auto_closed, timeout_s=30)
    late = pipeline.bet(player, token, txn(), 100, round_id=round_id)
    assert answer(late)[1] == "ROUND_CLOSED"
    assert pipeline.sagas[0].pid() == saga_pid  # the same worker throughout
