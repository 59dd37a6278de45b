"""``aggregator config apply`` -> the config topic -> the tenants watcher, on the real broker.

Each test has a topic prefix of its own: the session's ``agg.config`` stays empty, so the
other tests' services keep running their own tenants files."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import TopicPartition

from agg_avro import AvroCodec
from agg_config.paths import repo_root
from agg_config.settings import Settings
from agg_config.tenants import Tenants, load_tenants
from agg_kafka.admin import ensure_topics, topic_partitions
from agg_kafka.clients import make_consumer
from agg_kafka.config_topic import JOURNAL_KEY, read_latest
from agg_kafka.tenants_watch import TenantsHolder, TenantsWatcher
from agg_kafka.topics import TopicNames, catalogue
from tests.integration.helpers import unique

DEV_FILE = repo_root() / "deploy" / "local" / "aggregator.yaml"
DEV: dict[str, Any] = yaml.safe_load(DEV_FILE.read_text())


def _prefix() -> str:
    return unique("cfg").replace(".", "-")


def _ensure(settings: Settings, operators: list[str]) -> None:
    specs = catalogue(operators, partitions=2, replication_factor=1, min_insync_replicas=1,
                      prefix=settings.topic_prefix)  # fmt: skip
    assert asyncio.run(ensure_topics(settings.kafka_bootstrap, specs)).ok


def _file(tmp_path: Path, name: str, change: Any = None) -> Path:
    data = copy.deepcopy(DEV)
    if change is not None:
        change(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _disable_nova(data: dict[str, Any]) -> None:
    next(p for p in data["providers"] if p["id"] == "prov-nova")["enabled"] = False


def _cli(
    settings: Settings, tmp_path: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AGG_")}
    clean.update({
        "AGG_STATE_DIR": str(tmp_path / "state"),
        "AGG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "AGG_TOPIC_PREFIX": settings.topic_prefix,
        **env,
    })  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "agg_cli.main", "config", *args],
        env=clean, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _records(settings: Settings, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    async def run() -> list[tuple[bytes | None, bytes | None]]:
        consumer = make_consumer(settings, group_id=None, client_id="cfg-it-read")
        await consumer.start()
        try:
            partitions = await topic_partitions(settings.kafka_bootstrap, topic)
            tps = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            out = []
            for tp in tps:
                while await consumer.position(tp) < ends[tp]:
                    for record in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                        out.append((record.key, record.value))
            return out
        finally:
            await consumer.stop()

    return asyncio.run(run())


def _journal(settings: Settings) -> list[dict[str, Any]]:
    codec = AvroCodec()
    out = []
    for key, value in _records(settings, TopicNames(settings.topic_prefix).events):
        assert key == JOURNAL_KEY
        decoded = codec.decode(value or b"")
        assert decoded.name == "casino.agg.events.TenantsChanged"
        out.append(decoded.datum)
    return out


@pytest.fixture
def cfg(settings: Settings) -> Settings:
    chosen = settings.model_copy(update={"topic_prefix": _prefix()})
    _ensure(chosen, [o["id"] for o in DEV["operators"]])
    return chosen


def test_apply_publishes_once_journals_and_refuses_bad_files(cfg: Settings, tmp_path: Path) -> None:
    names = TopicNames(cfg.topic_prefix)
    first = _cli(cfg, tmp_path, "apply", str(DEV_FILE), "--actor", "alice", "--reason", "first")
    assert first.returncode == 0, first.stderr
    assert "as sequence 1" in first.stdout and "operator added: op-alpha" in first.stdout

    again = _cli(cfg, tmp_path, "apply", str(DEV_FILE), "--actor", "bob")
    assert again.returncode == 0, again.stderr
    assert "unchanged" in again.stdout

    invalid = _file(tmp_path, "invalid.yaml", lambda d: d["games"][0].update(provider="nope"))
    refused = _cli(cfg, tmp_path, "apply", str(invalid), "--actor", "carol")
    assert refused.returncode == 1
    assert "games[0].provider: unknown provider 'nope'" in refused.stderr
    assert "nothing was published" in refused.stderr

    def by_env(data: dict[str, Any]) -> None:
        data["operators"][1]["secret"] = {"env": "AGG_IT_BETA_SECRET"}

    unset = _cli(cfg, tmp_path, "apply", str(_file(tmp_path, "env.yaml", by_env)),
                 "--actor", "dave")  # fmt: skip
    assert unset.returncode == 1
    assert "operators[1].secret: secret variable AGG_IT_BETA_SECRET is not set" in unset.stderr

    no_actor = _cli(cfg, tmp_path, "apply", str(DEV_FILE))
    assert no_actor.returncode == 2 and "--actor" in no_actor.stderr

    second = _cli(cfg, tmp_path, "apply", str(_file(tmp_path, "off.yaml", _disable_nova)),
                  "--actor", "erin", "--reason", "nova down")  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert "provider changed: prov-nova (enabled)" in second.stdout

    # the topic holds what was applied, nothing else; the journal one event per change
    documents = [json.loads(v or b"") for _k, v in _records(cfg, names.config)]
    assert [(d["sequence"], d["actor"]) for d in documents] == [(1, "alice"), (2, "erin")]
    journal = _journal(cfg)
    assert [(e["actor"], e["reason"], e["sequence"]) for e in journal] == [
        ("alice", "first", 1), ("erin", "nova down", 2)]  # fmt: skip
    assert journal[1]["previous_sha256"] == journal[0]["sha256"]
    assert journal[1]["providers"]["changed"] == [{"id": "prov-nova", "fields": ["enabled"]}]

    shown = _cli(cfg, tmp_path, "show")
    assert shown.returncode == 0, shown.stderr
    current = json.loads(shown.stdout)
    assert (current["sequence"], current["actor"]) == (2, "erin")
    assert "dev-secret" not in shown.stdout and "PRIVATE KEY" not in shown.stdout


def test_apply_without_the_config_topic_publishes_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    bare = settings.model_copy(update={"topic_prefix": _prefix()})
    done = _cli(bare, tmp_path, "apply", str(DEV_FILE), "--actor", "alice")
    assert done.returncode == 1
    assert "aggregator topics ensure" in done.stderr


def test_a_new_operator_gets_its_topics(cfg: Settings, tmp_path: Path) -> None:
    def add(data: dict[str, Any]) -> None:
        op = copy.deepcopy(data["operators"][1])
        op.update(id="op-epsilon", name="Epsilon")
        data["operators"].append(op)

    done = _cli(cfg, tmp_path, "apply", str(_file(tmp_path, "delta.yaml", add)), "--actor", "a")
    assert done.returncode == 0, done.stderr
    names = TopicNames(cfg.topic_prefix)
    for topic in (names.wallet_commands("op-epsilon"), names.wallet_replies("op-epsilon")):
        assert _records(cfg, topic) == []  # exists (empty): its wallet loop can start


def test_the_watcher_reads_the_topic_at_start_then_follows_it(
    cfg: Settings, tmp_path: Path
) -> None:
    def enabled(t: Tenants) -> frozenset[str]:
        return frozenset(p.id for p in t.providers if p.enabled)

    async def scenario() -> None:
        # the file says prov-nova is enabled; the topic will say otherwise
        holder = TenantsHolder("it-watch", enabled, load_tenants(DEV_FILE))
        empty = TenantsWatcher(cfg, holder, client_id="it-watch")
        await empty.start()  # nothing published yet: the file's tenants stay
        assert holder.current.document.sequence == 0 and "prov-nova" in holder.view
        await empty.close()

        off = _file(tmp_path, "off.yaml", _disable_nova)
        assert _cli(cfg, tmp_path, "apply", str(off), "--actor", "alice").returncode == 0
        watcher = TenantsWatcher(cfg, holder, client_id="it-watch")
        await watcher.start()  # started after the apply: reads it before serving
        assert holder.current.document.sequence == 1 and "prov-nova" not in holder.view
        assert holder.current.document.actor == "alice"

        stop = asyncio.Event()
        following = asyncio.create_task(watcher.follow(stop))
        done = await asyncio.to_thread(_cli, cfg, tmp_path, "apply", str(DEV_FILE),
                                       "--actor", "bob")  # fmt: skip
        assert done.returncode == 0, done.stderr
        async with asyncio.timeout(30):
            while holder.current.document.sequence != 2:
                await asyncio.sleep(0.05)
        assert "prov-nova" in holder.view and holder.current.document.actor == "bob"
        stop.set()
        await following
        latest = await read_latest(cfg)
        assert latest is not None and latest.sha256 == holder.current.document.sha256

    asyncio.run(scenario())
