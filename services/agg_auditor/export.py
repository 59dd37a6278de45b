"""Export the journal (``<prefix>.events``) as JSON lines, one decoded event per line.

    aggregator audit export [--operator OP] [--player P] [--event NAME]...
                            [--since TIME] [--until TIME] [--sort] [--output FILE] [--quiet]

What is read: every partition of the journal, without a consumer group (nothing is
committed), from the beginning or, with ``--since``, from the offsets Kafka finds for that
time, up to the end offsets taken when the export starts. Records written meanwhile are not
read, so the export ends on a live journal.

Each line is one JSON object: ``event`` (short record name, e.g. ``BetAccepted``),
``schema`` (full name), ``partition``, ``offset``, ``key`` (the record key as text), then
every field of the decoded record in schema order. Timestamps are ISO-8601 UTC with
milliseconds (``2024-03-01T10:00:00.000Z``; microseconds only where a value has them),
amounts and every other Avro ``long`` are JSON integers, ``null`` stays ``null``, enums are
their symbol. Bytes are never written as such: a ``bytes``/``fixed`` value is its lowercase
hex. A key that is not UTF-8 is ``null`` with its hex in ``key_hex``; a record field whose
name is taken by the envelope (``event``, ``schema``, ``partition``, ``offset``, ``key``,
``key_hex``) is written as ``field_<name>``.

Order: without ``--sort``, each partition's lines are in offset order and partitions are
interleaved as the consumer reads them (partition by partition within each fetched batch),
so two runs over the same data may interleave differently. With ``--sort``, lines are
ordered by (``occurred_at``, partition, offset), a total and repeatable order; the selected
lines are sorted in memory in runs of at most ``--sort-buffer`` lines, spilled to temporary
files and merged.

Filters (all given ones must hold): ``--operator`` compares the operator part of the record
key first (records of other operators are not even decoded), then the decoded
``operator_id``; ``--player`` likewise with the player part and ``player_id`` (without
``--operator`` it matches that player id at any operator); ``--event`` (repeatable, short or
full record name) compares the writer schema named by the record's fingerprint before the
body is decoded; ``--since``/``--until`` keep ``occurred_at`` in [since, until). Times are
ISO-8601; without an offset they are UTC; a date alone is its midnight UTC.

Undecodable records are never skipped silently: each is reported on stderr with partition,
offset and reason, counted, and makes the exit code 2 (0 otherwise, 1 on failure, 64 for a
usage error). Records the key or event filter has already excluded are not decoded, so not
checked.

Progress goes to stderr (records read of the total to read, rate) at most once a second,
with a summary at the end; ``--quiet`` leaves only the undecodable reports and errors.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import heapq
import json
import math
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TextIO

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from agg_avro.catalogue import SchemaCatalogue
from agg_avro.codec import AvroCodec, AvroDecodeError
from agg_kafka.admin import TopicMissingError, topic_partitions
from agg_kafka.clients import make_consumer
from agg_kafka.topics import TopicNames

if TYPE_CHECKING:
    from agg_auditor.cli import AuditContext
    from agg_config.settings import Settings

NAME = "export"
HELP = "the journal as JSON lines (decoded Avro), filtered by operator, player, event, time"

ENVELOPE = ("event", "schema", "partition", "offset", "key", "key_hex")
"""Keys every line starts with; record fields of these names get a ``field_`` prefix."""

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

EX_USAGE = 64
"""Exit code of a usage error (an option value refused after parsing)."""

SEEK_MARGIN_MS = 5 * 60 * 1000
"""``--since`` seeks this much earlier than asked. A journal record's Kafka timestamp is the
saga's send time, never before its ``occurred_at`` on one clock; the margin covers clock
differences between the hosts (records read early are filtered by ``occurred_at``)."""

PROGRESS_INTERVAL_S = 1.0
SORT_BUFFER_DEFAULT = 200_000
IDLE_TIMEOUT_DEFAULT_S = 60.0
BATCH_COUNT_MAX = 5_000

Json = None | bool | int | float | str | list["Json"] | dict[str, "Json"]


class ExportError(RuntimeError):
    """The export cannot run (missing topic, unreachable broker, stalled read)."""


# --- JSON conversion (pure) ---------------------------------------------------------------


def iso_utc(value: dt.datetime) -> str:
    """ISO-8601 in UTC with a ``Z``: milliseconds, or microseconds where there are any.

    A naive datetime is taken as UTC (fastavro's logical types are always aware).
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    value = value.astimezone(dt.UTC)
    spec = "milliseconds" if value.microsecond % 1000 == 0 else "microseconds"
    return value.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def to_json_value(value: Any) -> Json:
    """A decoded Avro value as JSON: integers stay integers, no bytes, no naive times."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        # Avro float/double (no money field is one): finite ones as numbers, the rest as
        # text, since JSON has no NaN or infinity
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dt.datetime):
        return iso_utc(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)  # an exact decimal, never rounded through a float
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    raise TypeError(f"no JSON form for {type(value).__name__}")


def short_name(full_name: str) -> str:
    return full_name.rsplit(".", 1)[-1]


def record_object(
    full_name: str, datum: Mapping[str, Any], partition: int, offset: int, key: bytes | None
) -> dict[str, Json]:
    """The JSON object of one journal record: envelope first, then the record's fields."""
    out: dict[str, Json] = {
        "event": short_name(full_name),
        "schema": full_name,
        "partition": partition,
        "offset": offset,
    }
    if key is None:
        out["key"] = None
    else:
        try:
            out["key"] = key.decode("utf-8")
        except UnicodeDecodeError:
            out["key"] = None
            out["key_hex"] = key.hex()
    for name, value in datum.items():
        out[f"field_{name}" if name in ENVELOPE else name] = to_json_value(value)
    return out


def dumps(obj: Mapping[str, Json]) -> str:
    """One line of JSON (no raw newline or tab can appear: both are escaped in strings)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def epoch_us(value: dt.datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return (value - EPOCH) // dt.timedelta(microseconds=1)


def parse_utc(text: str) -> dt.datetime:
    """An ISO-8601 instant; without an offset it is UTC, a date alone is midnight UTC."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not an ISO-8601 time: {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


# --- selection (pure) -----------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    operator: str | None = None
    player: str | None = None
    events: frozenset[str] = frozenset()
    """Full record names; empty selects every record."""
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def key_may_match(self, key: bytes | None) -> bool:
        """False only where the key ``operator:player`` alone rules the record out."""
        if key is None or b":" not in key or (self.operator is None and self.player is None):
            return True
        operator, _, player = key.partition(b":")
        if self.operator is not None and operator != self.operator.encode():
            return False
        return self.player is None or player == self.player.encode()

    def name_matches(self, full_name: str) -> bool:
        return not self.events or full_name in self.events

    def matches(self, datum: Mapping[str, Any], event_time_us: int) -> bool:
        if self.operator is not None and datum.get("operator_id") != self.operator:
            return False
        if self.player is not None and datum.get("player_id") != self.player:
            return False
        if self.since is not None and event_time_us < epoch_us(self.since):
            return False
        return self.until is None or event_time_us < epoch_us(self.until)


def resolve_event_names(names: Iterable[str], catalogue: SchemaCatalogue) -> frozenset[str]:
    """Full names for short (``BetAccepted``) or full names; unknown names are an error."""
    known = catalogue.names
    by_short: dict[str, list[str]] = {}
    for full in known:
        by_short.setdefault(short_name(full), []).append(full)
    out: set[str] = set()
    for name in names:
        if name in known:
            out.add(name)
        elif len(by_short.get(name, [])) == 1:
            out.add(by_short[name][0])
        elif name in by_short:
            raise ValueError(f"event name {name!r} is ambiguous: {', '.join(by_short[name])}")
        else:
            events = sorted(short_name(n) for n in known if n.startswith("casino.agg.events."))
            raise ValueError(f"unknown event {name!r}; journal events: {', '.join(events)}")
    return frozenset(out)


def event_time_us(datum: Mapping[str, Any], kafka_timestamp_ms: int) -> int:
    """``occurred_at``, or the Kafka timestamp for a record without one."""
    occurred = datum.get("occurred_at")
    if isinstance(occurred, dt.datetime):
        return epoch_us(occurred)
    return kafka_timestamp_ms * 1000


# --- output ---------------------------------------------------------------------------------

SortKey = tuple[int, int, int]


class SortedSink:
    """Collects lines and writes them ordered by (time, partition, offset), holding at most
    ``buffer_count_max`` lines in memory: full buffers are sorted and spilled to temporary
    files, which are merged at the end."""

    def __init__(self, buffer_count_max: int = SORT_BUFFER_DEFAULT):
        if buffer_count_max < 1:
            raise ValueError("the sort buffer needs at least one line")
        self.buffer_count_max = buffer_count_max
        self._buffer: list[tuple[SortKey, str]] = []
        self._runs: list[IO[str]] = []

    def add(self, key: SortKey, line: str) -> None:
        self._buffer.append((key, line))
        if len(self._buffer) >= self.buffer_count_max:
            self._spill()

    @property
    def spilled_runs(self) -> int:
        return len(self._runs)

    def _spill(self) -> None:
        self._buffer.sort()
        run = tempfile.TemporaryFile("w+", encoding="utf-8")  # closed in close()
        for (t, p, o), line in self._buffer:
            run.write(f"{t}\t{p}\t{o}\t{line}\n")
        run.seek(0)
        self._runs.append(run)
        self._buffer = []

    @staticmethod
    def _read_run(run: IO[str]) -> Iterator[tuple[SortKey, str]]:
        for row in run:
            t, p, o, line = row.rstrip("\n").split("\t", 3)
            yield (int(t), int(p), int(o)), line

    def write_to(self, out: TextIO) -> int:
        self._buffer.sort()
        sources: list[Iterable[tuple[SortKey, str]]] = [self._read_run(r) for r in self._runs]
        sources.append(self._buffer)
        written = 0
        for _key, line in heapq.merge(*sources):
            out.write(line + "\n")
            written += 1
        return written

    def close(self) -> None:
        for run in self._runs:
            run.close()
        self._runs = []
        self._buffer = []


# --- progress -------------------------------------------------------------------------------


class Progress:
    """Progress lines on a stream, at most one per ``interval_s``, and a summary."""

    def __init__(
        self,
        stream: TextIO | None,
        total: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        interval_s: float = PROGRESS_INTERVAL_S,
    ):
        self.stream = stream
        self.total = total
        self.clock = clock
        self.interval_s = interval_s
        self.started = clock()
        self._shown = self.started

    def rate(self, read: int) -> float:
        return read / max(1e-3, self.clock() - self.started)

    def update(self, read: int, selected: int, undecodable: int) -> None:
        if self.stream is None or self.clock() - self._shown < self.interval_s:
            return
        self._shown = self.clock()
        pct = 100.0 * read / self.total if self.total else 100.0
        self.stream.write(
            f"export: {read:,}/{self.total:,} records read ({pct:.1f}%), "
            f"{self.rate(read):,.0f} records/s, {selected:,} selected, "
            f"{undecodable:,} undecodable\n"
        )
        self.stream.flush()

    def summary(self, read: int, written: int, undecodable: int) -> None:
        if self.stream is None:
            return
        elapsed = self.clock() - self.started
        self.stream.write(
            f"export: done, {read:,} records read of {self.total:,} in {elapsed:.1f}s "
            f"({self.rate(read):,.0f} records/s), {written:,} lines written, "
            f"{undecodable:,} undecodable\n"
        )
        self.stream.flush()


# --- the export -----------------------------------------------------------------------------


@dataclass
class ExportOptions:
    selection: Selection = field(default_factory=Selection)
    sort: bool = False
    sort_buffer_count_max: int = SORT_BUFFER_DEFAULT
    idle_timeout_s: float = IDLE_TIMEOUT_DEFAULT_S
    quiet: bool = False


@dataclass
class ExportStats:
    topic: str
    total: int = 0
    """Records between the start and end offsets (what the export set out to read)."""
    read: int = 0
    selected: int = 0
    written: int = 0
    undecodable: int = 0
    seconds: float = 0.0


class _Exporter:
    def __init__(
        self, options: ExportOptions, out: TextIO, err: TextIO, codec: AvroCodec, topic: str
    ):
        self.options = options
        self.selection = options.selection
        self.out = out
        self.err = err
        self.codec = codec
        self.stats = ExportStats(topic)
        self.sink = SortedSink(options.sort_buffer_count_max) if options.sort else None

    def undecodable(self, record: ConsumerRecord[Any, Any], reason: str) -> None:
        self.stats.undecodable += 1
        key = record.key.decode("utf-8", "backslashreplace") if record.key is not None else None
        self.err.write(
            f"export: undecodable record at partition {record.partition} offset "
            f"{record.offset} (key {key!r}): {reason}\n"
        )
        self.err.flush()

    def handle(self, record: ConsumerRecord[Any, Any]) -> None:
        self.stats.read += 1
        key: bytes | None = record.key
        if not self.selection.key_may_match(key):
            return
        value: bytes | None = record.value
        if not value:
            self.undecodable(record, "empty value")
            return
        try:
            writer = self.codec.writer_of(value)
            if not self.selection.name_matches(writer.name):
                return
            decoded = self.codec.decode(value)
        except AvroDecodeError as exc:
            self.undecodable(record, str(exc))
            return
        if not self.selection.name_matches(decoded.name):
            return
        when = event_time_us(decoded.datum, record.timestamp)
        if not self.selection.matches(decoded.datum, when):
            return
        try:
            line = dumps(
                record_object(decoded.name, decoded.datum, record.partition, record.offset, key)
            )
        except (TypeError, ValueError) as exc:
            self.undecodable(record, f"no JSON form: {exc}")
            return
        self.stats.selected += 1
        if self.sink is not None:
            self.sink.add((when, record.partition, record.offset), line)
        else:
            self.out.write(line + "\n")
            self.stats.written += 1


async def export_journal(
    settings: Settings,
    options: ExportOptions,
    out: TextIO,
    err: TextIO,
    *,
    codec: AvroCodec | None = None,
) -> ExportStats:
    """Write the selected journal records to ``out`` as JSON lines; report on ``err``."""
    topic = TopicNames(settings.topic_prefix).events
    exporter = _Exporter(options, out, err, codec or AvroCodec(), topic)
    started = time.monotonic()
    consumer = make_consumer(
        settings, group_id=None, client_id="audit-export", max_poll_records=BATCH_COUNT_MAX
    )
    try:
        await consumer.start()
    except KafkaError as exc:
        await consumer.stop()
        raise ExportError(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc
    try:
        tps = [TopicPartition(topic, p) for p in await _partitions(settings, topic)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        starts = dict(begins)
        since = options.selection.since
        if since is not None:
            target = max(0, epoch_us(since) // 1000 - SEEK_MARGIN_MS)
            found = await consumer.offsets_for_times(dict.fromkeys(tps, target))
            for tp in tps:
                hit = found.get(tp)
                starts[tp] = max(begins[tp], hit.offset) if hit is not None else ends[tp]
        for tp in tps:
            consumer.seek(tp, starts[tp])
        exporter.stats.total = sum(max(0, ends[tp] - starts[tp]) for tp in tps)
        progress = Progress(None if options.quiet else err, exporter.stats.total)
        remaining = {tp for tp in tps if starts[tp] < ends[tp]}
        consumer.pause(*(set(tps) - remaining))
        positions = dict(starts)
        last_progress = time.monotonic()
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp in sorted(batch, key=lambda t: t.partition):
                for record in batch[tp]:
                    if record.offset >= ends[tp]:
                        break
                    exporter.handle(record)
            # done by position, not by the last record seen: offsets can have gaps
            # (transaction markers, compaction) right before the end offset
            for tp in sorted(remaining, key=lambda t: t.partition):
                position = await consumer.position(tp)
                if position != positions[tp]:
                    positions[tp] = position
                    last_progress = time.monotonic()
                if position >= ends[tp]:
                    remaining.discard(tp)
                    consumer.pause(tp)
            if remaining and time.monotonic() - last_progress > options.idle_timeout_s:
                left = sum(ends[tp] - positions[tp] for tp in remaining)
                raise ExportError(
                    f"no records for {options.idle_timeout_s:g}s with {left} still to read "
                    f"from {len(remaining)} partition(s) of {topic}"
                )
            progress.update(
                exporter.stats.read, exporter.stats.selected, exporter.stats.undecodable
            )
    finally:
        await consumer.stop()
    try:
        if exporter.sink is not None:
            exporter.stats.written = exporter.sink.write_to(out)
    finally:
        if exporter.sink is not None:
            exporter.sink.close()
    out.flush()
    exporter.stats.seconds = time.monotonic() - started
    progress.summary(exporter.stats.read, exporter.stats.written, exporter.stats.undecodable)
    return exporter.stats


async def _partitions(settings: Settings, topic: str) -> list[int]:
    try:
        return await topic_partitions(settings.kafka_bootstrap, topic, settings.admin_timeout_ms)
    except KafkaError as exc:
        raise ExportError(f"cannot describe {topic} on {settings.kafka_bootstrap}: {exc}") from exc
    except TopicMissingError as exc:
        raise ExportError(str(exc)) from exc


# --- command line ---------------------------------------------------------------------------


def _time_arg(text: str) -> dt.datetime:
    try:
        return parse_utc(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--operator", metavar="ID", help="only this operator's records")
    parser.add_argument(
        "--player", metavar="ID", help="only this player's records (at any operator without "
        "--operator)"
    )  # fmt: skip
    parser.add_argument(
        "--event",
        metavar="NAME",
        action="append",
        default=[],
        help="only these events (short or full record name; repeatable)",
    )
    parser.add_argument(
        "--since", type=_time_arg, metavar="TIME", help="occurred_at at or after (ISO-8601, UTC)"
    )
    parser.add_argument(
        "--until", type=_time_arg, metavar="TIME", help="occurred_at before (ISO-8601, UTC)"
    )
    parser.add_argument(
        "--sort",
        action="store_true",
        help="order lines by (occurred_at, partition, offset) instead of as read "
        "(offset order per partition, partitions interleaved)",
    )
    parser.add_argument(
        "--sort-buffer",
        type=_positive_int,
        default=SORT_BUFFER_DEFAULT,
        metavar="LINES",
        help=f"lines --sort holds in memory before spilling to a temporary file "
        f"(default {SORT_BUFFER_DEFAULT})",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=IDLE_TIMEOUT_DEFAULT_S,
        metavar="SECONDS",
        help=f"give up when no record arrives this long before the end offsets "
        f"(default {IDLE_TIMEOUT_DEFAULT_S:g})",
    )
    parser.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="write to FILE instead of stdout"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")


def options_from_args(args: argparse.Namespace, catalogue: SchemaCatalogue) -> ExportOptions:
    if args.since is not None and args.until is not None and args.until <= args.since:
        raise ValueError("--until must be later than --since")
    selection = Selection(
        operator=args.operator,
        player=args.player,
        events=resolve_event_names(args.event, catalogue),
        since=args.since,
        until=args.until,
    )
    return ExportOptions(
        selection=selection,
        sort=args.sort,
        sort_buffer_count_max=args.sort_buffer,
        idle_timeout_s=args.idle_timeout,
        quiet=args.quiet,
    )


def run(args: argparse.Namespace, context: AuditContext) -> int:
    codec = AvroCodec()
    try:
        options = options_from_args(args, codec.catalogue)
    except ValueError as exc:
        context.stderr.write(f"aggregator audit export: error: {exc}\n")
        return EX_USAGE
    settings = context.settings
    if args.output is None:
        stats = _run(settings, options, context.stdout, context.stderr, codec)
    else:
        # written next to FILE and renamed when complete: FILE is never a partial export
        partial = args.output.with_name(f".{args.output.name}.partial")
        try:
            with partial.open("w", encoding="utf-8") as out:
                stats = _run(settings, options, out, context.stderr, codec)
            if stats is not None:
                os.replace(partial, args.output)
        finally:
            partial.unlink(missing_ok=True)
    if stats is None:
        return 1
    return 2 if stats.undecodable else 0


def _run(
    settings: Settings, options: ExportOptions, out: TextIO, err: TextIO, codec: AvroCodec
) -> ExportStats | None:
    try:
        return asyncio.run(export_journal(settings, options, out, err, codec=codec))
    except ExportError as exc:
        err.write(f"aggregator audit export: error: {exc}\n")
        return None
