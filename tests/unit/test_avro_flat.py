"""The compiled flat-record encoder writes fastavro's bytes for every datum fastavro's path
accepts, and answers nothing (so the generic path refuses) for every datum it refuses."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agg_avro.codec import AvroCodec, AvroEncodeError
from agg_avro.flat import compile_encoder

CODEC = AvroCodec()

OFF_THE_MONEY_PATH = {"casino.agg.events.TenantsChanged"}
"""Written once per tenants change (``aggregator config apply``), with nested lists of ids:
the generic path encodes it."""


def _current_names() -> list[str]:
    return sorted(CODEC.catalogue.names)


def _flat_names() -> list[str]:
    return [n for n in _current_names() if n not in OFF_THE_MONEY_PATH]


def test_every_current_schema_compiles() -> None:
    # every schema on the money path is flat: none falls back to the slow path for good
    from agg_avro.flat import compile_decoder

    for name in _current_names():
        entry = CODEC.catalogue.current(name)
        compiled = compile_encoder(entry.parsed)
        assert (compiled is not None) is (name not in OFF_THE_MONEY_PATH), name
        if name not in OFF_THE_MONEY_PATH:
            assert compile_decoder(entry.parsed) is not None, name


def test_a_record_in_a_record_in_a_record_is_not_compiled() -> None:
    from agg_avro.flat import compile_decoder

    inner = {"type": "record", "name": "a.Inner", "fields": [{"name": "s", "type": "string"}]}
    middle = {"type": "record", "name": "a.Middle", "fields": [{"name": "i", "type": inner}]}
    schema = {"type": "record", "name": "a.Outer",
              "fields": [{"name": "m", "type": ["null", middle]}]}  # fmt: skip
    assert compile_encoder(schema) is None and compile_decoder(schema) is None


_TZ = st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)),
                       dt.timezone(dt.timedelta(hours=-8))])  # fmt: skip
_AWARE = st.datetimes(
    min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=_TZ
)
_ODD = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=False), st.integers(-(2**70), 2**70),
    st.text(max_size=5), st.binary(max_size=3), st.datetimes(max_value=dt.datetime(2100, 1, 1)),
    st.just(["x"]), st.just({"status": "x"}),
)  # fmt: skip


def _leaf_value(schema: Any) -> st.SearchStrategy[Any]:
    if isinstance(schema, list):
        return st.one_of(*[_leaf_value(b) for b in schema])
    if schema == "null":
        return st.none()
    if schema == "string":
        return st.text(max_size=30)
    if schema == "long":
        return st.integers(-(2**63), 2**63 - 1)
    if schema == "int":
        return st.integers(-(2**31), 2**31 - 1)
    if schema == "boolean":
        return st.booleans()
    if isinstance(schema, dict) and schema.get("logicalType") == "timestamp-millis":
        return st.one_of(_AWARE, st.integers(-(2**40), 2**40))
    if isinstance(schema, dict) and schema.get("type") == "enum":
        return st.sampled_from(schema["symbols"])
    if isinstance(schema, dict) and schema.get("type") == "array":
        return st.one_of(st.lists(st.text(max_size=10), max_size=4), st.just([1]), _ODD)
    if isinstance(schema, dict) and schema.get("type") == "record":
        # a nested record: its fields, now and then one of them wrong, missing or extra
        fields = {f["name"]: _leaf_value(f["type"]) for f in schema["fields"]}
        return st.one_of(
            st.fixed_dictionaries(fields),
            st.fixed_dictionaries(fields).map(lambda d: {**d, "not_in_schema": 1}),
            st.fixed_dictionaries(fields).map(lambda d: dict(list(d.items())[1:])),
            st.fixed_dictionaries({**fields, schema["fields"][0]["name"]: _ODD}),
        )
    raise AssertionError(f"unexpected schema {schema!r}")


@st.composite
def _datum(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    name = draw(st.sampled_from(_flat_names()))
    schema = CODEC.catalogue.current(name).parsed
    datum: dict[str, Any] = {}
    for f in schema["fields"]:
        if "default" in f and draw(st.integers(0, 9)) == 0:
            continue  # left out: its default is written
        datum[f["name"]] = draw(_leaf_value(f["type"]))
    mutation = draw(st.integers(0, 5))
    if mutation == 1 and datum:  # a wrong value
        key = draw(st.sampled_from(sorted(datum)))
        datum[key] = draw(_ODD)
    elif mutation == 2 and datum:  # a missing field
        datum.pop(draw(st.sampled_from(sorted(datum))))
    elif mutation == 3:  # a field the schema does not know
        datum["not_in_schema"] = 1
    return name, datum


@settings(max_examples=1500, deadline=None)
@given(_datum())
def test_compiled_encoder_agrees_with_the_generic_path(case: tuple[str, dict[str, Any]]) -> None:
    name, datum = case
    encoder = compile_encoder(CODEC.catalogue.current(name).parsed)
    assert encoder is not None
    fast = encoder(datum)
    try:
        generic = CODEC._encode_generic(name, datum)
    except AvroEncodeError:
        assert fast is None, f"compiled encoder took a datum the generic path refuses: {datum}"
        return
    assert fast is not None, f"a datum the generic path takes went the slow way: {datum}"
    assert CODEC.encode(name, datum) == generic
    assert generic.endswith(fast) and len(generic) == len(fast) + 10


def test_refusals_still_explain_themselves() -> None:
    with pytest.raises(AvroEncodeError, match="naive datetime"):
        CODEC.encode(
            "casino.agg.WalletReply",
            {"command_id": "c", "operator_id": "o", "player_id": "p", "status": "OK",
             "balance": 1, "currency": "EUR", "replied_at": dt.datetime(2026, 1, 1),
             "correlation_id": "x"},
        )  # fmt: skip
    with pytest.raises(AvroEncodeError):
        CODEC.encode(
            "casino.agg.WalletReply",
            {"command_id": "c", "operator_id": "o", "player_id": "p", "status": "OK",
             "balance": 5.9, "currency": "EUR", "replied_at": dt.datetime.now(dt.UTC),
             "correlation_id": "x"},
        )  # fmt: skip


@settings(max_examples=1500, deadline=None)
@given(_datum(), st.integers(0, 3), st.binary(min_size=1, max_size=3), st.integers(0, 400))
def test_compiled_decoder_agrees_with_fastavro(
    case: tuple[str, dict[str, Any]], damage: int, junk: bytes, at: int
) -> None:
    import io

    from fastavro import schemaless_reader

    from agg_avro.codec import HEADER_LENGTH, AvroDecodeError
    from agg_avro.flat import FlatDecodeError, compile_decoder

    name, datum = case
    try:
        data = CODEC.encode(name, datum)
    except AvroEncodeError:
        return
    if damage == 1:  # cut short
        data = data[: HEADER_LENGTH + at % (len(data) - HEADER_LENGTH + 1)]
    elif damage == 2:  # trailing bytes
        data = data + junk
    elif damage == 3:  # a byte changed
        i = HEADER_LENGTH + at % (len(data) - HEADER_LENGTH)
        data = data[:i] + junk[:1] + data[i + 1 :]
    entry = CODEC.catalogue.current(name)
    decoder = compile_decoder(entry.parsed)
    assert decoder is not None
    buf = io.BytesIO(data)
    buf.seek(HEADER_LENGTH)
    try:
        expected = schemaless_reader(buf, entry.parsed, None)
        if buf.tell() != len(data):
            raise ValueError("trailing")
    except Exception:  # noqa: BLE001 - fastavro refuses bad bytes with several types
        with pytest.raises(FlatDecodeError):
            decoder(data, HEADER_LENGTH)
        with pytest.raises(AvroDecodeError):
            CODEC.decode(data)
        return
    try:
        got = decoder(data, HEADER_LENGTH)
    except FlatDecodeError:
        # stricter than fastavro only on bytes no writer makes (a boolean byte other than
        # 0 or 1): what fastavro read from them does not encode back to them
        assert CODEC.encode(name, expected) != data
        return
    assert got == expected
    assert CODEC.decode(data).datum == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (bytes([0xFE] + [0xFF] * 8 + [0x01]), 2**63 - 1),
        (bytes([0xFF] * 9 + [0x01]), -(2**63)),
        (bytes([0x80] * 9 + [0x02]), None),  # 2**64 zig-zagged: beyond a long
        (bytes([0xFF] * 9 + [0x7F]), None),
        (bytes([0x80] * 10 + [0x01]), None),  # eleven bytes
    ],
)
def test_a_varint_beyond_64_bits_is_refused_not_read_as_a_bigger_number(
    data: bytes, expected: int | None
) -> None:
    from agg_avro.flat import FlatDecodeError, _read_long

    if expected is None:
        with pytest.raises(FlatDecodeError):
            _read_long(data, 0)
    else:
        assert _read_long(data, 0) == (expected, len(data))
