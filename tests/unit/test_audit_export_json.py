"""The pure parts of ``aggregator audit export``: JSON form of decoded records, selection,
time parsing, the spilling sort and the progress lines."""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid
from decimal import Decimal

import pytest

from agg_auditor.cli import build_parser, main_audit
from agg_auditor.export import (
    Progress,
    Selection,
    SortedSink,
    dumps,
    event_time_us,
    iso_utc,
    options_from_args,
    parse_utc,
    record_object,
    resolve_event_names,
    to_json_value,
)
from agg_avro.codec import AvroCodec

UTC = dt.UTC
BIG = 2**53 + 1  # not representable as a float: a float anywhere would change it


def bet_accepted(**changes: object) -> dict[str, object]:
    datum: dict[str, object] = {
        "event_id": "ev-1",
        "correlation_id": "corr-1",
        "operator_id": "op-a",
        "player_id": "p-1",
        "provider_id": "prov-1",
        "occurred_at": dt.datetime(2024, 3, 1, 10, 0, 0, 123000, tzinfo=UTC),
        "transaction_id": "tx-1",
        "round_id": "r-1",
        "game_id": "g-1",
        "amount": BIG,
        "currency": "EUR",
        "command_id": "cmd-1",
        "balance": None,
        "round_closed": False,
    }
    datum.update(changes)
    return datum


def test_timestamps_are_iso_utc_with_milliseconds() -> None:
    assert iso_utc(dt.datetime(2024, 3, 1, 10, 0, tzinfo=UTC)) == "2024-03-01T10:00:00.000Z"
    assert iso_utc(dt.datetime(2024, 3, 1, 10, 0, 0, 5000, tzinfo=UTC)) == (
        "2024-03-01T10:00:00.005Z"
    )
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert iso_utc(dt.datetime(2024, 3, 1, 12, 0, tzinfo=plus_two)) == "2024-03-01T10:00:00.000Z"
    # naive is UTC; sub-millisecond precision is kept rather than dropped
    assert iso_utc(dt.datetime(2024, 3, 1, 10, 0, 0, 1)) == "2024-03-01T10:00:00.000001Z"


def test_json_values_keep_integers_and_never_carry_bytes() -> None:
    assert to_json_value(BIG) == BIG and type(to_json_value(BIG)) is int
    assert to_json_value(True) is True
    assert to_json_value(None) is None
    assert to_json_value(b"\x00\xff") == "00ff"
    assert to_json_value(Decimal("12.30")) == "12.30"
    assert to_json_value(uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert to_json_value(dt.date(2024, 3, 1)) == "2024-03-01"
    assert to_json_value(float("nan")) == "nan"
    nested = {"a": [b"\x01", {"t": dt.datetime(2024, 1, 1, tzinfo=UTC)}]}
    assert to_json_value(nested) == {"a": ["01", {"t": "2024-01-01T00:00:00.000Z"}]}
    with pytest.raises(TypeError):
        to_json_value(object())


def test_a_decoded_event_becomes_one_json_line() -> None:
    codec = AvroCodec()
    decoded = codec.decode(codec.encode("casino.agg.events.BetAccepted", bet_accepted()))
    obj = record_object(decoded.name, decoded.datum, 7, 42, b"op-a:p-1")
    line = dumps(obj)
    assert "\n" not in line
    assert list(obj)[:5] == ["event", "schema", "partition", "offset", "key"]
    parsed = json.loads(line)
    assert parsed["event"] == "BetAccepted"
    assert parsed["schema"] == "casino.agg.events.BetAccepted"
    assert (parsed["partition"], parsed["offset"], parsed["key"]) == (7, 42, "op-a:p-1")
    assert parsed["occurred_at"] == "2024-03-01T10:00:00.123Z"
    assert parsed["amount"] == BIG and f'"amount":{BIG},' in line
    assert parsed["balance"] is None and parsed["round_closed"] is False
    # a field the writer left out is read with its default (mode: real money)
    assert (parsed["mode"], parsed["wallet"]) == ("real", "seamless")
    assert set(parsed) == {"event", "schema", "partition", "offset", "key", "mode", "wallet",
                           *bet_accepted()}  # fmt: skip


def test_envelope_names_and_odd_keys() -> None:
    obj = record_object("x.Thing", {"offset": 1, "key": "k", "a": 2}, 0, 5, b"\xff:p")
    assert obj["offset"] == 5 and obj["field_offset"] == 1
    assert obj["field_key"] == "k" and obj["a"] == 2
    assert obj["key"] is None and obj["key_hex"] == "ff3a70"
    assert record_object("x.Thing", {}, 0, 0, None)["key"] is None


def test_key_prefix_rules_out_only_what_it_can() -> None:
    only_a = Selection(operator="op-a")
    assert only_a.key_may_match(b"op-a:p-1")
    assert not only_a.key_may_match(b"op-b:p-1")
    assert not only_a.key_may_match(b"op-ab:p-1")
    assert only_a.key_may_match(None) and only_a.key_may_match(b"no-colon")
    player = Selection(player="p:1")  # a player id may contain the separator
    assert player.key_may_match(b"op-a:p:1") and player.key_may_match(b"op-b:p:1")
    assert not player.key_may_match(b"op-a:p:2")
    both = Selection(operator="op-a", player="p-1")
    assert both.key_may_match(b"op-a:p-1") and not both.key_may_match(b"op-a:p-2")
    assert Selection().key_may_match(b"anything")


def test_selection_on_decoded_fields_and_time_window() -> None:
    since = dt.datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    until = dt.datetime(2024, 3, 1, 11, 0, tzinfo=UTC)
    window = Selection(operator="op-a", since=since, until=until)
    datum = bet_accepted()
    at = event_time_us(datum, 0)
    assert at == int(since.timestamp()) * 1_000_000 + 123_000
    assert window.matches(datum, at)
    assert not window.matches(bet_accepted(operator_id="op-b"), at)
    start = int(since.timestamp()) * 1_000_000
    end = int(until.timestamp()) * 1_000_000
    assert window.matches(datum, start)  # since is inclusive
    assert not window.matches(datum, end)  # until is exclusive
    assert not window.matches(datum, start - 1)
    assert event_time_us({}, 1_700_000_000_000) == 1_700_000_000_000_000


def test_event_names_short_or_full_and_typos_refused() -> None:
    catalogue = AvroCodec().catalogue
    names = resolve_event_names(["BetAccepted", "casino.agg.events.WinCredited"], catalogue)
    assert names == {"casino.agg.events.BetAccepted", "casino.agg.events.WinCredited"}
    with pytest.raises(ValueError, match="unknown event 'BetAccept'"):
        resolve_event_names(["BetAccept"], catalogue)
    assert Selection(events=names).name_matches("casino.agg.events.BetAccepted")
    assert not Selection(events=names).name_matches("casino.agg.events.BetRejected")


def test_times_parse_as_utc() -> None:
    assert parse_utc("2024-03-01T10:00:00Z") == dt.datetime(2024, 3, 1, 10, tzinfo=UTC)
    assert parse_utc("2024-03-01T12:00:00+02:00") == dt.datetime(2024, 3, 1, 10, tzinfo=UTC)
    assert parse_utc("2024-03-01T10:00:00.250") == dt.datetime(
        2024, 3, 1, 10, 0, 0, 250000, tzinfo=UTC
    )
    assert parse_utc("2024-03-01") == dt.datetime(2024, 3, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_utc("yesterday")


def test_command_line_options() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["export", "--operator", "op-a", "--event", "BetAccepted", "--since", "2024-03-01",
         "--sort", "--sort-buffer", "10", "-q"]
    )  # fmt: skip
    options = options_from_args(args, AvroCodec().catalogue)
    assert options.selection.operator == "op-a"
    assert options.selection.events == {"casino.agg.events.BetAccepted"}
    assert options.sort and options.quiet and options.sort_buffer_count_max == 10
    backwards = parser.parse_args(["export", "--since", "2024-03-02", "--until", "2024-03-01"])
    with pytest.raises(ValueError, match="--until"):
        options_from_args(backwards, AvroCodec().catalogue)
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["export", "--since", "not-a-time"])
    assert exited.value.code == 64  # usage errors never look like "undecodable records" (2)


def test_usage_errors_exit_64_before_any_connection() -> None:
    err = io.StringIO()
    code = main_audit(["export", "--event", "BetAccept"], stdout=io.StringIO(), stderr=err)
    assert code == 64 and "unknown event 'BetAccept'" in err.getvalue()


@pytest.mark.parametrize("buffer", [1, 3, 1000])
def test_sorted_sink_orders_by_time_partition_offset_whatever_it_spills(buffer: int) -> None:
    keys = [(t, p, o) for t in (5, -1, 3, 3) for p in (2, 0) for o in (9, 1)]
    sink = SortedSink(buffer)
    for key in keys:
        sink.add(key, json.dumps({"k": list(key), "text": "tab\there"}))
    out = io.StringIO()
    try:
        assert sink.write_to(out) == len(keys)
    finally:
        sink.close()
    got = [tuple(json.loads(line)["k"]) for line in out.getvalue().splitlines()]
    assert got == sorted(keys)
    if buffer == 1:
        assert "tab\\there" in out.getvalue()


def test_progress_is_rate_limited() -> None:
    now = [0.0]
    stream = io.StringIO()
    progress = Progress(stream, 1000, clock=lambda: now[0], interval_s=1.0)
    for step in range(50):
        now[0] = step * 0.1  # 5 s in 50 updates
        progress.update(step * 20, step, 0)
    lines = stream.getvalue().splitlines()
    assert 4 <= len(lines) <= 5
    assert lines[-1].startswith("export: ") and "/1,000 records read" in lines[-1]
    progress.summary(1000, 10, 1)
    assert "done, 1,000 records read of 1,000" in stream.getvalue().splitlines()[-1]
    quiet = Progress(None, 10)
    quiet.update(1, 1, 0)
    quiet.summary(1, 1, 0)
