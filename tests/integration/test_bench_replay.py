"""The replay benchmark, shrunk (``python -m bench.replay --events 20000 --check``): a journal
decided by the saga's domain code on a real topic, replayed by parallel workers, gives the
tables the live projector gives (its consumer group, its batches), and a replay by one
worker gives them too. Correctness only: the speed is the benchmark's to measure."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from pathlib import Path

import psycopg

from agg_auditor.cli import main_audit
from agg_config.settings import Settings
from agg_projector.projector import GROUP_ID
from agg_projector.replay import COMPARED_TABLES, compare, replay
from bench.replay import drop_schema, main, parse_args, run


def test_replay_of_the_bench_journal_equals_the_live_projection(settings: Settings) -> None:
    seed = uuid.uuid4().int % 1_000_000  # a journal (and topic) of this run's own
    args = parse_args(["--events", "20000", "--seed", str(seed), "--partitions", "6",
                       "--workers", "3", "--check", "--keep"])  # fmt: skip
    result = run(args, settings)
    assert result["check"] == {"identical": True, "differences": {}}
    figures = result["replay"]
    assert figures["events"] == 20_000
    assert (figures["partitions"], figures["workers"]) == (6, 3)
    assert figures["seconds"] > 0 and figures["events_per_s"] > 0
    # one worker, all partitions in one process: the same tables
    rebuilt = result["schema"]
    prefixed = settings.model_copy(update={"topic_prefix": result["journal"]["topic_prefix"]})
    single = f"it_single_{uuid.uuid4().hex[:6]}"
    try:
        one = asyncio.run(replay(prefixed, single, progress=None, workers=1))
        assert (one.records, one.workers) == (20_000, 1)
        differences = compare(settings.database_url, rebuilt, single)
        assert differences == {t: [] for t in COMPARED_TABLES}, differences
        # the command: 0 against a projection of the same journal, 1 once a row differs
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute(
                f"insert into {rebuilt}.consumer_offsets (consumer_group, topic, partition,"
                " next_offset) select %s, topic, partition, next_offset"
                f" from {rebuilt}.consumer_offsets",
                (GROUP_ID,),
            )
        argv = ["replay", "--live-schema", rebuilt, "--wait", "10", "-q"]
        out = io.StringIO()
        assert main_audit(argv, settings=prefixed, stdout=out, stderr=io.StringIO()) == 0
        assert out.getvalue().rstrip().endswith("identical"), out.getvalue()
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute(f"update {rebuilt}.balances set balance = balance + 1"
                         f" where ctid = (select min(ctid) from {rebuilt}.balances)")  # fmt: skip
        out = io.StringIO()
        assert main_audit(argv, settings=prefixed, stdout=out, stderr=io.StringIO()) == 1
        assert "balances: DIFFERS" in out.getvalue(), out.getvalue()
    finally:
        drop_schema(settings.database_url, single)
        drop_schema(settings.database_url, rebuilt)


def test_bench_command_writes_the_replay_figures(settings: Settings, tmp_path: Path,
                                                 monkeypatch: object) -> None:  # fmt: skip
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setenv("AGG_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    monkeypatch.setenv("AGG_DATABASE_URL", settings.database_url)
    seed = uuid.uuid4().int % 1_000_000
    code = main(["--events", "2000", "--seed", str(seed), "--partitions", "3",
                 "--out-dir", str(tmp_path), "--work-dir", str(tmp_path / "work")])  # fmt: skip
    assert code == 0
    (path,) = tmp_path.glob("replay-*.json")
    figures = json.loads(path.read_text())["replay"]
    assert set(figures) == {"events", "seconds", "events_per_s", "partitions", "workers"}
    assert figures["events"] == 2_000 and figures["partitions"] == 3
