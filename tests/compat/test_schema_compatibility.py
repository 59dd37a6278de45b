"""The topics' contract across versions, tested with the stored sample payloads.

Every frozen version of every schema has a sample datum stored as JSON and as the exact
single-object bytes written when it was frozen (``tests/compat/samples``). The current
schemas must read all of them (backward), and every frozen version must read data written
now (forward), because producers and consumers are upgraded one at a time.
"""

from __future__ import annotations

import io
import json
from typing import Any

import avro.io
import avro.schema
import pytest

from agg_avro import AvroCodec, SchemaCatalogue, SchemaEntry, default_catalogue
from agg_avro.cli import default_samples_dir
from agg_avro.codec import HEADER_LENGTH
from agg_avro.compat import check_full_compatibility, sample_datum, to_json_value

CATALOGUE = default_catalogue()
SAMPLES = default_samples_dir()
FROZEN = [entry for name in CATALOGUE.names for entry in CATALOGUE.versions(name)]


def _id(entry: SchemaEntry) -> str:
    return f"{entry.name}-v{entry.version}"


def sample_json(entry: SchemaEntry) -> Any:
    return json.loads((SAMPLES / entry.name / f"v{entry.version}.json").read_text())


def sample_bytes(entry: SchemaEntry) -> bytes:
    return (SAMPLES / entry.name / f"v{entry.version}.bin").read_bytes()


def assert_shared_fields_equal(datum: dict[str, Any], expected: dict[str, Any]) -> None:
    """A value must not change meaning between versions: every field both versions have
    reads back as written."""
    shared = datum.keys() & expected.keys()
    assert {f: to_json_value(datum[f]) for f in shared} == {f: expected[f] for f in shared}


@pytest.mark.parametrize("name", CATALOGUE.names)
def test_every_current_schema_is_frozen(name: str) -> None:
    current, versions = CATALOGUE.current(name), CATALOGUE.versions(name)

    assert versions, f"{name} has no frozen version; run `aggregator schemas freeze`"
    assert versions[-1].fingerprint == current.fingerprint, (
        f"{name} changed since v{versions[-1].version} was frozen; make sure the change is "
        "meant to be part of the contract, then run `aggregator schemas freeze` and commit "
        "schemas/history and tests/compat/samples"
    )
    assert [e.version for e in versions] == list(range(1, len(versions) + 1))


@pytest.mark.parametrize("name", CATALOGUE.names)
def test_current_schema_is_compatible_with_its_history(name: str) -> None:
    history = [entry.raw for entry in CATALOGUE.versions(name)]

    assert check_full_compatibility(history, CATALOGUE.current(name).raw) == []


def test_samples_are_exactly_those_of_the_frozen_versions() -> None:
    stored = {path.relative_to(SAMPLES).as_posix() for path in SAMPLES.rglob("v*.*")}
    expected = {
        f"{entry.name}/v{entry.version}.{suffix}" for entry in FROZEN for suffix in ("json", "bin")
    }

    assert stored == expected


@pytest.mark.parametrize("entry", FROZEN, ids=_id)
def test_sample_bytes_and_json_agree(entry: SchemaEntry) -> None:
    decoded = AvroCodec(SchemaCatalogue([entry], FROZEN)).decode(sample_bytes(entry))

    assert decoded.writer.fingerprint == entry.fingerprint
    assert to_json_value(decoded.datum) == sample_json(entry)


@pytest.mark.parametrize("entry", FROZEN, ids=_id)
def test_apache_avro_reads_the_sample_bytes(entry: SchemaEntry) -> None:
    """An independent implementation decodes the stored bytes, given the ``.avsc`` the
    fingerprint names: the payloads are plain Avro, not a fastavro dialect."""
    data = sample_bytes(entry)
    assert data[:2] == b"\xc3\x01"
    assert data[2:HEADER_LENGTH] == entry.fingerprint
    schema = avro.schema.parse(json.dumps(entry.raw))
    body = io.BytesIO(data[HEADER_LENGTH:])

    datum = avro.io.DatumReader(schema, schema).read(avro.io.BinaryDecoder(body))

    assert body.read() == b""
    assert to_json_value(datum) == sample_json(entry)


@pytest.mark.parametrize("entry", FROZEN, ids=_id)
def test_backward_current_schema_reads_every_stored_sample(entry: SchemaEntry) -> None:
    decoded = AvroCodec(CATALOGUE).decode(sample_bytes(entry))

    current = CATALOGUE.current(entry.name)
    assert decoded.name == entry.name
    assert list(decoded.datum) == [field["name"] for field in current.parsed["fields"]]
    assert_shared_fields_equal(decoded.datum, sample_json(entry))


@pytest.mark.parametrize("entry", FROZEN, ids=_id)
def test_forward_every_frozen_version_reads_current_data(entry: SchemaEntry) -> None:
    current = CATALOGUE.current(entry.name)
    datum = sample_datum(current.parsed)
    data = AvroCodec(CATALOGUE).encode(entry.name, datum)
    # A consumer built with this version that has been given the current .avsc.
    old_reader = AvroCodec(SchemaCatalogue([entry], [current]))

    decoded = old_reader.decode(data)

    assert decoded.writer.fingerprint == current.fingerprint
    assert list(decoded.datum) == [field["name"] for field in entry.parsed["fields"]]
    assert_shared_fields_equal(decoded.datum, to_json_value(datum))
