"""``aggregator audit export`` against a real broker: journal events produced with the codec
into a journal topic of its own prefix, exported, filtered, sorted; undecodable records are
reported; the export ends while a producer keeps writing."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agg_auditor.cli import main_audit
from agg_auditor.export import ExportOptions, Selection, export_journal
from agg_avro.codec import AvroCodec
from agg_config.settings import Settings
from agg_kafka.admin import ensure_topics
from agg_kafka.clients import make_producer, player_key
from agg_kafka.topics import TopicNames, catalogue

UTC = dt.UTC
BASE = dt.datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
STEP = dt.timedelta(minutes=10)
BIG = 2**53 + 1  # changes if it ever passes through a float
EVENTS = "casino.agg.events."


@dataclass(frozen=True)
class Produced:
    name: str
    datum: dict[str, Any]
    key: bytes
    partition: int
    offset: int

    @property
    def event_id(self) -> str:
        return str(self.datum["event_id"])


def journal_settings(settings: Settings) -> Settings:
    """Settings with a prefix of their own and its journal topic created."""
    prefix = f"agg-audit-it-{uuid.uuid4().hex[:8]}"
    ours = settings.model_copy(update={"topic_prefix": prefix})
    specs = catalogue(
        [],
        partitions=ours.partition_count,
        replication_factor=ours.replication_factor,
        min_insync_replicas=ours.min_insync_replicas,
        prefix=prefix,
    )
    journal = [s for s in specs if s.name == TopicNames(prefix).events]
    report = asyncio.run(ensure_topics(ours.kafka_bootstrap, journal))
    assert report.created == [journal[0].name], report.lines()
    return ours


def event(i: int, kind: str, operator: str, player: str, at: dt.datetime) -> tuple[str, dict]:
    common: dict[str, Any] = {
        "event_id": f"ev-{i:04d}",
        "correlation_id": f"corr-{i:04d}",
        "operator_id": operator,
        "player_id": player,
        "provider_id": "prov-nova",
        "occurred_at": at,
    }
    money = {"round_id": f"round-{i // 3}", "game_id": "nova-starfall", "currency": "EUR"}
    amount = BIG if i % 5 == 0 else 100 + i
    if kind == "SessionOpened":
        datum = {
            **common,
            "session_id": f"s-{i}",
            "game_id": "nova-starfall",
            "currency": "EUR",
            "country": "MT",
            "mode": "real",
            "expires_at": at + dt.timedelta(hours=4),
        }
    elif kind == "BetAccepted":
        datum = {**common, **money, "transaction_id": f"tx-{i}", "amount": amount,
                 "command_id": f"cmd-{i}", "balance": 1000 - i, "round_closed": False}  # fmt: skip
    elif kind == "WinCredited":
        datum = {**common, **money, "transaction_id": f"tx-{i}", "amount": amount,
                 "command_id": f"cmd-{i}", "balance": None, "round_closed": True}  # fmt: skip
    elif kind == "BetRejected":
        datum = {**common, **money, "transaction_id": f"tx-{i}", "amount": amount,
                 "status": "INSUFFICIENT_FUNDS", "command_id": None, "balance": 3}  # fmt: skip
    else:
        datum = {**common, **money, "bet_total": amount, "win_total": 0, "refund_total": 7}
        kind = "RoundClosed"
    return EVENTS + kind, datum


async def produce(settings: Settings, items: list[tuple[str, dict, bytes]]) -> list[Produced]:
    """Send in order, each with its ``occurred_at`` as the Kafka timestamp, as the saga's
    events have (their send time, never earlier than ``occurred_at``)."""
    codec = AvroCodec()
    topic = TopicNames(settings.topic_prefix).events
    producer = make_producer(settings, client_id="audit-test")
    await producer.start()
    out = []
    try:
        for name, datum, key in items:
            stamp = datum["occurred_at"]
            meta = await producer.send_and_wait(
                topic,
                codec.encode(name, datum),
                key=key,
                timestamp_ms=int(stamp.timestamp() * 1000),
            )
            out.append(Produced(name, datum, key, meta.partition, meta.offset))
    finally:
        await producer.stop()
    return out


KINDS = ["SessionOpened", "BetAccepted", "WinCredited", "BetRejected", "RoundClosed"]
PLAYERS = [("op-a", "p-1"), ("op-a", "p-2"), ("op-a", "p:3"), ("op-b", "p-1"), ("op-b", "p-9")]


@pytest.fixture(scope="module")
def journal(settings: Settings) -> tuple[Settings, list[Produced]]:
    ours = journal_settings(settings)
    items = []
    for i in range(60):
        operator, player = PLAYERS[i % len(PLAYERS)]
        name, datum = event(i, KINDS[(i // 2) % len(KINDS)], operator, player, BASE + i * STEP)
        items.append((name, datum, player_key(operator, player)))
    # mostly in time order, with some neighbours swapped: occurred_at is not monotonic in
    # offset order, as it is not on a real journal across decisions and ticks
    for i in range(0, len(items) - 1, 4):
        items[i], items[i + 1] = items[i + 1], items[i]
    return ours, asyncio.run(produce(ours, items))


def run(settings: Settings, *argv: str) -> tuple[int, list[dict[str, Any]], str]:
    out, err = io.StringIO(), io.StringIO()
    code = main_audit(["export", *argv], settings=settings, stdout=out, stderr=err)
    return code, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def ids(lines: list[dict[str, Any]]) -> list[str]:
    return [line["event_id"] for line in lines]


def test_every_event_exported_once_with_decoded_fields(journal: tuple) -> None:
    settings, produced = journal
    code, lines, err = run(settings)
    assert code == 0, err
    assert sorted(ids(lines)) == sorted(p.event_id for p in produced)
    by_id = {p.event_id: p for p in produced}
    for line in lines:
        p = by_id[line["event_id"]]
        assert line["schema"] == p.name and line["event"] == p.name.removeprefix(EVENTS)
        assert (line["partition"], line["offset"]) == (p.partition, p.offset)
        assert line["key"] == p.key.decode()
        for name, value in p.datum.items():
            if isinstance(value, dt.datetime):
                assert line[name] == value.strftime("%Y-%m-%dT%H:%M:%S.000Z")
            else:
                assert line[name] == value, name
                assert type(line[name]) is type(value), name
    assert any(line.get("amount") == BIG for line in lines)
    assert "done, 60 records read of 60" in err
    assert "undecodable" not in err.replace("0 undecodable", "")


def test_unsorted_output_is_in_offset_order_per_partition(journal: tuple) -> None:
    settings, _ = journal
    _, lines, _ = run(settings, "--quiet")
    for partition in {line["partition"] for line in lines}:
        offsets = [line["offset"] for line in lines if line["partition"] == partition]
        assert offsets == sorted(offsets)


@pytest.mark.parametrize(
    ("argv", "wanted"),
    [
        (["--operator", "op-a"], lambda p: p.datum["operator_id"] == "op-a"),
        (["--operator", "op-b", "--player", "p-1"],
         lambda p: p.key == b"op-b:p-1"),
        (["--player", "p-1"], lambda p: p.datum["player_id"] == "p-1"),
        (["--player", "p:3"], lambda p: p.datum["player_id"] == "p:3"),
        (["--event", "BetAccepted", "--event", "casino.agg.events.RoundClosed"],
         lambda p: p.name.endswith((".BetAccepted", ".RoundClosed"))),
        (["--since", "2024-03-01T13:00:00Z", "--until", "2024-03-01T15:30:00Z"],
         lambda p: BASE + 18 * STEP <= p.datum["occurred_at"] < BASE + 33 * STEP),
        (["--operator", "op-a", "--event", "WinCredited", "--since", "2024-03-01T12:00:00+01:00"],
         lambda p: p.datum["operator_id"] == "op-a" and p.name.endswith(".WinCredited")
         and p.datum["occurred_at"] >= BASE + 6 * STEP),
        (["--operator", "op-nobody"], lambda p: False),
    ],
)  # fmt: skip
def test_filters_give_exactly_the_expected_subset(journal: tuple, argv: list, wanted) -> None:
    settings, produced = journal
    code, lines, err = run(settings, *argv)
    assert code == 0, err
    expected = sorted(p.event_id for p in produced if wanted(p))
    assert sorted(ids(lines)) == expected
    assert len(ids(lines)) == len(set(ids(lines)))


def test_since_starts_at_the_offsets_for_that_time(journal: tuple) -> None:
    settings, produced = journal
    since = BASE + 40 * STEP
    options = ExportOptions(selection=Selection(since=since), quiet=True)
    out = io.StringIO()
    stats = asyncio.run(export_journal(settings, options, out, io.StringIO()))
    assert stats.total < len(produced)  # not read from the beginning
    expected = sorted(p.event_id for p in produced if p.datum["occurred_at"] >= since)
    assert sorted(ids([json.loads(x) for x in out.getvalue().splitlines()])) == expected


@pytest.mark.parametrize("buffer", ["200000", "7"])
def test_sort_orders_by_occurred_at(journal: tuple, buffer: str) -> None:
    settings, produced = journal
    code, lines, err = run(settings, "--sort", "--sort-buffer", buffer)
    assert code == 0, err
    keys = [(line["occurred_at"], line["partition"], line["offset"]) for line in lines]
    assert keys == sorted(keys) and len(keys) == len(produced)
    expected = sorted(produced, key=lambda p: (p.datum["occurred_at"], p.partition, p.offset))
    assert ids(lines) == [p.event_id for p in expected]


def test_output_file_and_quiet(journal: tuple, tmp_path: Path) -> None:
    settings, produced = journal
    target = tmp_path / "journal.jsonl"
    code, stdout_lines, err = run(settings, "--sort", "--quiet", "--output", str(target))
    assert code == 0 and stdout_lines == [] and err == ""
    from_file = [json.loads(x) for x in target.read_text().splitlines()]
    _, from_stdout, _ = run(settings, "--sort", "--quiet")
    assert from_file == from_stdout and len(from_file) == len(produced)
    assert [p.name for p in tmp_path.iterdir()] == ["journal.jsonl"]


def test_undecodable_records_are_reported_and_the_rest_exported(settings: Settings) -> None:
    ours = journal_settings(settings)
    good = []
    for i in range(6):
        name, datum = event(i, "BetAccepted", "op-a", f"p-{i}", BASE + i * STEP)
        good.append((name, datum, player_key("op-a", f"p-{i}")))
    produced = asyncio.run(produce(ours, good))
    codec = AvroCodec()
    valid = codec.encode(good[0][0], good[0][1])
    bad_values = [
        b"not avro at all",
        b"\xc3\x01" + b"\x00" * 8 + b"body",  # unknown writer schema
        valid[:-3],  # truncated body
        valid + b"\x00",  # trailing bytes
    ]

    async def send_bad() -> list[tuple[int, int]]:
        producer = make_producer(ours, client_id="audit-test-bad")
        await producer.start()
        try:
            where = []
            for n, value in enumerate(bad_values):
                meta = await producer.send_and_wait(
                    TopicNames(ours.topic_prefix).events, value, key=f"op-a:bad-{n}".encode()
                )
                where.append((meta.partition, meta.offset))
            return where
        finally:
            await producer.stop()

    bad = asyncio.run(send_bad())
    code, lines, err = run(ours)
    assert code == 2
    assert sorted(ids(lines)) == sorted(p.event_id for p in produced)
    reports = [line for line in err.splitlines() if "undecodable record" in line]
    assert len(reports) == len(bad_values)
    for partition, offset in bad:
        assert any(f"partition {partition} offset {offset} " in r for r in reports), reports
    assert "4 undecodable" in err.splitlines()[-1]
    # records the key filter excludes are not decoded, so not reported
    code, lines, err = run(ours, "--operator", "op-b")
    assert (code, lines) == (0, [])


def test_missing_journal_is_an_error(settings: Settings) -> None:
    nowhere = settings.model_copy(update={"topic_prefix": f"agg-audit-none-{uuid.uuid4().hex[:6]}"})
    code, lines, err = run(nowhere)
    assert code == 1 and lines == []
    assert "does not exist" in err


class BackgroundProducer:
    """Writes journal events as fast as acks come back, until stopped."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.error: BaseException | None = None

    async def _run(self) -> None:
        codec = AvroCodec()
        topic = TopicNames(self.settings.topic_prefix).events
        producer = make_producer(self.settings, client_id="audit-test-live")
        await producer.start()
        try:
            i = 10_000
            while not self.stop.is_set():
                name, datum = event(i, KINDS[i % 5], "op-a", f"p-{i % 17}", dt.datetime.now(UTC))
                await producer.send_and_wait(
                    topic, codec.encode(name, datum), key=player_key("op-a", f"p-{i % 17}")
                )
                self.sent += 1
                i += 1
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            await producer.stop()

    def __enter__(self) -> BackgroundProducer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


@pytest.fixture
def live_journal(settings: Settings) -> Iterator[tuple[Settings, list[Produced]]]:
    ours = journal_settings(settings)
    items = []
    for i in range(100):
        name, datum = event(i, KINDS[i % 5], "op-a", f"p-{i % 7}", BASE + i * STEP)
        items.append((name, datum, player_key("op-a", f"p-{i % 7}")))
    yield ours, asyncio.run(produce(ours, items))


def test_export_ends_while_a_producer_keeps_writing(live_journal: tuple) -> None:
    settings, produced = live_journal
    with BackgroundProducer(settings) as writer:
        deadline = time.monotonic() + 30
        while writer.sent < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert writer.sent >= 20, writer.error
        started = time.monotonic()
        code, lines, err = run(settings, "--sort-buffer", "50")
        elapsed = time.monotonic() - started
        sent_after = writer.sent
        time.sleep(0.3)
        assert writer.sent > sent_after, "the producer kept writing during the export"
    assert writer.error is None
    assert code == 0, err
    assert elapsed < 30
    exported = set(ids(lines))
    assert {p.event_id for p in produced} <= exported
    assert len(exported) == len(lines) >= len(produced) + 20
    assert len(lines) <= len(produced) + sent_after


def test_aggregator_command_passes_through(journal: tuple, monkeypatch, capsys) -> None:
    settings, produced = journal
    from agg_cli.main import main

    monkeypatch.setenv("AGG_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    monkeypatch.setenv("AGG_TOPIC_PREFIX", settings.topic_prefix)
    code = main(["audit", "export", "--quiet", "--operator", "op-b", "--event", "RoundClosed"])
    out = capsys.readouterr().out
    assert code == 0
    expected = [
        p for p in produced
        if p.datum["operator_id"] == "op-b" and p.name.endswith(".RoundClosed")
    ]  # fmt: skip
    assert sorted(ids([json.loads(x) for x in out.splitlines()])) == sorted(
        p.event_id for p in expected
    )
