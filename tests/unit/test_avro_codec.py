"""The single-object codec: round trips, the header bytes, the fingerprint, and refusals.

The fingerprint is cross-checked against the Avro specification's own test vectors and two
independent implementations, since a wrong fingerprint makes every message undecodable by
other clients.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import avro.schema
import fastavro.schema
import pytest
from faust.serializers.codecs import get_codec
from hypothesis import given, settings
from hypothesis import strategies as st

from agg_avro import AvroCodec, AvroDecodeError, AvroEncodeError, AvroRecord, default_catalogue
from agg_avro.compat import sample_datum
from agg_avro.faust_codec import CODEC_NAME, AvroFaustCodec, register_codecs
from agg_avro.fingerprint import canonical_form, crc64_avro, fingerprint
from agg_config.paths import schemas_dir

CATALOGUE = default_catalogue()
NAMES = CATALOGUE.names
WALLET_COMMAND = "casino.agg.WalletCommand"
ALL_SCHEMA_FILES = sorted(schemas_dir().glob("*.avsc")) + sorted(
    schemas_dir().glob("history/*/v*.avsc")
)

LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
INT_MIN, INT_MAX = -(2**31), 2**31 - 1


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec(CATALOGUE)


def wallet_command(**changes: Any) -> dict[str, Any]:
    datum = sample_datum(CATALOGUE.current(WALLET_COMMAND).parsed)
    datum.update(changes)
    return dict(datum)


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_record_round_trips_its_sample(codec: AvroCodec, name: str) -> None:
    datum = sample_datum(CATALOGUE.current(name).parsed)

    decoded = codec.decode(codec.encode(name, datum))

    assert decoded.name == name
    assert decoded.writer.fingerprint == CATALOGUE.current(name).fingerprint
    assert decoded.datum == datum


def test_round_trip_keeps_instant_and_millisecond(codec: AvroCodec) -> None:
    issued_at = dt.datetime(2024, 3, 31, 1, 30, 0, 7000, tzinfo=dt.timezone(dt.timedelta(hours=2)))

    decoded = codec.decode(codec.encode(WALLET_COMMAND, wallet_command(issued_at=issued_at)))

    assert decoded.datum["issued_at"] == issued_at
    assert decoded.datum["issued_at"].utcoffset() == dt.timedelta(0)


def _strategy(schema: Any, named: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Data of a parsed schema: any string, the full range of each integer type, None or a
    value for each optional field, and instants at millisecond precision."""
    if isinstance(schema, str) and schema in named:
        return _strategy(named[schema], named)
    if isinstance(schema, list):
        return st.one_of([_strategy(branch, named) for branch in schema])
    kind = schema if isinstance(schema, str) else schema["type"]
    logical = schema.get("logicalType") if isinstance(schema, dict) else None
    if logical == "timestamp-millis":
        naive = st.datetimes(
            min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59)
        )
        return naive.map(
            lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000, tzinfo=dt.UTC)
        )
    if kind == "record":
        return st.fixed_dictionaries(
            {field["name"]: _strategy(field["type"], named) for field in schema["fields"]}
        )
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(_strategy(schema["items"], named), max_size=3)
    primitives: dict[str, st.SearchStrategy[Any]] = {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.integers(INT_MIN, INT_MAX),
        "long": st.integers(LONG_MIN, LONG_MAX),
        "string": st.text(),
    }
    return primitives[kind]


def _data_of(name: str) -> st.SearchStrategy[dict[str, Any]]:
    parsed = CATALOGUE.current(name).parsed
    return _strategy(parsed, parsed["__named_schemas"])


@pytest.mark.parametrize(
    "name", ["casino.agg.WalletCommand", "casino.agg.WalletReply", "casino.agg.ProviderRequest"]
)
def test_key_records_round_trip_any_data(codec: AvroCodec, name: str) -> None:
    @settings(max_examples=300, deadline=None)
    @given(datum=_data_of(name))
    def round_trip(datum: dict[str, Any]) -> None:
        assert codec.decode(codec.encode(name, datum)).datum == datum

    round_trip()


# --- header and fingerprint ----------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_header_is_marker_then_little_endian_fingerprint(codec: AvroCodec, name: str) -> None:
    entry = CATALOGUE.current(name)

    data = codec.encode(name, sample_datum(entry.parsed))

    rabin = crc64_avro(canonical_form(entry.raw).encode("utf-8"))
    assert data[:10] == b"\xc3\x01" + rabin.to_bytes(8, "little")
    assert data[2:10] == entry.fingerprint


# (schema, Parsing Canonical Form, fingerprint as a signed 64-bit integer): vectors from the
# Avro specification's shared test data (share/test/data/schema-tests.txt in apache/avro),
# computed there by the Java reference implementation.
SPEC_VECTORS = [
    ('"null"', '"null"', 7195948357588979594),
    ('{"type":"int"}', '"int"', 8247732601305521295),
    ('"long"', '"long"', -3434872931120570953),
    ('"string"', '"string"', -8142146995180207161),
    ('[ "int" , {"type":"boolean"} ]', '["int","boolean"]', 5392556393470105090),
    (
        '{"fields":[], "type":"record", "name":"foo", "namespace":"x.y"}',
        '{"name":"x.y.foo","type":"record","fields":[]}',
        5916914534497305771,
    ),
    (
        '{"fields":[{"type":{"type":"boolean"}, "name":"f1"}], "type":"record", "name":"foo"}',
        '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}',
        7843277075252814651,
    ),
    (
        '{"namespace":"x.y.z", "type":"enum", "name":"foo", "doc":"foo bar", '
        '"symbols":["A1", "A2"]}',
        '{"name":"x.y.z.foo","type":"enum","symbols":["A1","A2"]}',
        -4448647247586288245,
    ),
    (
        '{"name":"foo","type":"fixed","size":15}',
        '{"name":"foo","type":"fixed","size":15}',
        1756455273707447556,
    ),
    (
        '{ "items":{"type":"null"}, "type":"array"}',
        '{"type":"array","items":"null"}',
        -589620603366471059,
    ),
    (
        '{ "values":"string", "type":"map"}',
        '{"type":"map","values":"string"}',
        -8732877298790414990,
    ),
    (
        '{"name":"PigValue","type":"record",'
        '"fields":[{"name":"value", "type":["null", "int", "long", "PigValue"]}]}',
        '{"name":"PigValue","type":"record","fields":[{"name":"value",'
        '"type":["null","int","long","PigValue"]}]}',
        -1759257747318642341,
    ),
]


@pytest.mark.parametrize(("schema", "canonical", "rabin"), SPEC_VECTORS)
def test_fingerprint_matches_the_specification_vectors(
    schema: str, canonical: str, rabin: int
) -> None:
    assert canonical_form(json.loads(schema)) == canonical
    assert fingerprint(json.loads(schema)) == (rabin % 2**64).to_bytes(8, "little")


def test_canonical_form_strips_logical_types() -> None:
    # [PRIMITIVES] and [STRIP] of the specification: a timestamp is a plain long on the wire.
    assert canonical_form({"type": "long", "logicalType": "timestamp-millis"}) == '"long"'


@pytest.mark.parametrize("path", ALL_SCHEMA_FILES, ids=lambda p: str(p.relative_to(schemas_dir())))
def test_fingerprint_matches_fastavro_and_apache_avro(path: Path) -> None:
    raw = json.loads(path.read_text())
    ours = fingerprint(raw)

    assert ours.hex() == fastavro.schema.fingerprint(canonical_form(raw), "CRC-64-AVRO")
    assert avro.schema.parse(canonical_form(raw)).fingerprint() == ours


@pytest.mark.parametrize("path", ALL_SCHEMA_FILES, ids=lambda p: str(p.relative_to(schemas_dir())))
def test_apache_avro_canonical_form_differs_only_in_logical_types(path: Path) -> None:
    """The Python ``avro`` package (1.12) keeps a logical-type primitive as ``{"type":"long"}``
    in the canonical form, against [PRIMITIVES]; Java and fastavro follow the specification.
    A consumer built on that package must fingerprint the specification's canonical form (as
    the previous test does), not call ``fingerprint()`` on the ``.avsc`` as written."""
    raw = json.loads(path.read_text())
    theirs = avro.schema.parse(json.dumps(raw)).canonical_form

    assert theirs.replace('{"type":"long"}', '"long"') == canonical_form(raw)


# --- refusals ----------------------------------------------------------------------------


def _replace(start: int, end: int, by: bytes) -> Callable[[bytes], bytes]:
    return lambda data: data[:start] + by + data[end:]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        pytest.param(_replace(0, 2, b"\xc3\x00"), "not_single_object", id="wrong-marker"),
        pytest.param(_replace(0, 2, b""), "not_single_object", id="no-marker"),
        pytest.param(lambda data: data[:9], "not_single_object", id="header-cut"),
        pytest.param(_replace(2, 10, bytes(8)), "unknown_fingerprint", id="unknown-fingerprint"),
        pytest.param(lambda data: data[:-1], "corrupt", id="body-cut-by-one"),
        pytest.param(lambda data: data[:30], "corrupt", id="body-cut-in-string"),
        pytest.param(lambda data: data[:10], "corrupt", id="body-missing"),
        pytest.param(lambda data: data + b"\x00", "corrupt", id="trailing-byte"),
    ],
)
def test_decode_refuses_bad_bytes(
    codec: AvroCodec, mutate: Callable[[bytes], bytes], reason: str
) -> None:
    data = codec.encode(WALLET_COMMAND, wallet_command())

    with pytest.raises(AvroDecodeError) as raised:
        codec.decode(mutate(data))

    assert raised.value.reason == reason


def test_decode_refuses_a_reader_of_another_record(codec: AvroCodec) -> None:
    data = codec.encode(WALLET_COMMAND, wallet_command())

    with pytest.raises(AvroDecodeError) as raised:
        codec.decode(data, reader="casino.agg.WalletReply")

    assert raised.value.reason == "incompatible"


def test_decode_refuses_an_unknown_reader(codec: AvroCodec) -> None:
    data = codec.encode(WALLET_COMMAND, wallet_command())

    with pytest.raises(AvroDecodeError) as raised:
        codec.decode(data, reader="casino.agg.NoSuchRecord")

    assert raised.value.reason == "unknown_reader"


def _without(field: str) -> dict[str, Any]:
    datum = wallet_command()
    del datum[field]
    return datum


@pytest.mark.parametrize(
    "datum",
    [
        pytest.param(_without("amount"), id="missing-required-field"),
        pytest.param(wallet_command(unexpected="x"), id="extra-field"),
        pytest.param(wallet_command(amount=5.0), id="integral-float-for-long"),
        pytest.param(wallet_command(amount=5.9), id="float-for-long"),
        pytest.param(wallet_command(amount="5"), id="str-for-long"),
        pytest.param(wallet_command(amount=True), id="bool-for-long"),
        pytest.param(wallet_command(amount=LONG_MAX + 1), id="long-overflow"),
        pytest.param(wallet_command(amount=LONG_MIN - 1), id="long-underflow"),
        pytest.param(wallet_command(currency=None), id="none-for-required-string"),
        pytest.param(wallet_command(kind="REFUND"), id="unknown-enum-symbol"),
        pytest.param(wallet_command(round_id=7), id="int-for-optional-string"),
        pytest.param(wallet_command(issued_at=dt.datetime(2024, 1, 1)), id="naive-datetime"),
    ],
)
def test_encode_refuses_a_datum_that_does_not_fit(codec: AvroCodec, datum: dict[str, Any]) -> None:
    with pytest.raises(AvroEncodeError):
        codec.encode(WALLET_COMMAND, datum)


@pytest.mark.parametrize("amount", [LONG_MIN, -1, 0, 1, LONG_MAX])
def test_encode_accepts_the_long_boundaries(codec: AvroCodec, amount: int) -> None:
    data = codec.encode(WALLET_COMMAND, wallet_command(amount=amount))

    assert codec.decode(data).datum["amount"] == amount


def test_encode_fills_optional_fields_from_defaults(codec: AvroCodec) -> None:
    datum = _without("round_id")

    assert codec.decode(codec.encode(WALLET_COMMAND, datum)).datum["round_id"] is None


# --- faust codec -------------------------------------------------------------------------


def test_faust_codec_round_trips_a_record(codec: AvroCodec) -> None:
    faust_codec = AvroFaustCodec(codec=codec)
    record = AvroRecord(WALLET_COMMAND, wallet_command())

    data = faust_codec.dumps(record)

    assert data == codec.encode_record(record)
    assert faust_codec.loads(data) == record


def test_schema_bound_faust_codec_accepts_a_plain_mapping(codec: AvroCodec) -> None:
    faust_codec = AvroFaustCodec(codec=codec, schema=WALLET_COMMAND)
    datum = wallet_command()

    assert faust_codec.loads(faust_codec.dumps(datum)) == AvroRecord(WALLET_COMMAND, datum)


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        pytest.param(None, {"command_id": "c"}, id="unbound-mapping"),
        pytest.param(WALLET_COMMAND, 42, id="bound-int"),
        pytest.param(WALLET_COMMAND, b"raw", id="bound-bytes"),
    ],
)
def test_faust_codec_refuses_other_values(codec: AvroCodec, schema: str | None, value: Any) -> None:
    faust_codec = AvroFaustCodec(codec=codec, schema=schema)

    with pytest.raises(TypeError):
        faust_codec.dumps(value)


def test_faust_codec_is_registered_by_name() -> None:
    register_codecs()

    assert isinstance(get_codec(CODEC_NAME), AvroFaustCodec)
