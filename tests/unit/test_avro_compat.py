"""Schema-resolution checks on synthetic schema pairs, sample data, ``freeze`` and the
``aggregator schemas`` command, all on temporary directories.

Each compatibility row states the expected verdict in both directions, and every verdict is
confirmed against fastavro actually resolving a sample datum, so the static check cannot
drift from what a reader does.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from agg_avro import AvroCodec, SchemaCatalogue
from agg_avro.cli import main_schemas
from agg_avro.compat import (
    SAMPLE_LONG,
    SAMPLE_TIMESTAMP,
    SchemaEvolutionError,
    check_compatible,
    check_full_compatibility,
    check_schemas,
    freeze,
    sample_datum,
    to_json_value,
)


def record(fields: list[dict[str, Any]], name: str = "Thing", **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "test", "fields": fields, **extra}


def field(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def enum(symbols: list[str], **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": "Kind", "symbols": symbols, **extra}


ID = field("id", "string")
OPTIONAL_NOTE = field("note", ["null", "string"], default=None)
TIMESTAMP = {"type": "long", "logicalType": "timestamp-millis"}


def nested(inner_fields: list[dict[str, Any]]) -> dict[str, Any]:
    return record([ID, field("inner", record(inner_fields, name="Inner"))])


@dataclass(frozen=True)
class Evolution:
    """Schema ``old`` evolves into ``new``; ``backward``: ``new`` reads data of ``old``;
    ``forward``: ``old`` reads data of ``new``; each expected problem is a text fragment."""

    old: Any
    new: Any
    backward: str | None
    forward: str | None


EVOLUTIONS = {
    "identical": Evolution(record([ID]), record([ID]), None, None),
    "doc-only-change": Evolution(
        record([ID]), record([field("id", "string", doc="Stable id.")], doc="A thing."), None, None
    ),
    "add-optional-field-with-default": Evolution(
        record([ID]), record([ID, OPTIONAL_NOTE]), None, None
    ),
    "add-required-field-with-default": Evolution(
        record([ID]), record([ID, field("flag", "boolean", default=False)]), None, None
    ),
    "add-required-field-without-default": Evolution(
        record([ID]), record([ID, field("amount", "long")]), "reader needs this field", None
    ),
    "remove-field-without-default": Evolution(
        record([ID, field("amount", "long")]), record([ID]), None, "reader needs this field"
    ),
    "remove-field-with-default": Evolution(record([ID, OPTIONAL_NOTE]), record([ID]), None, None),
    "reorder-fields": Evolution(
        record([ID, field("n", "int")]), record([field("n", "int"), ID]), None, None
    ),
    "int-to-long": Evolution(
        record([field("n", "int")]), record([field("n", "long")]), None, "long cannot be read"
    ),
    "long-to-int": Evolution(
        record([field("n", "long")]), record([field("n", "int")]), "long cannot be read", None
    ),
    "long-to-double": Evolution(
        record([field("n", "long")]), record([field("n", "double")]), None, "double cannot be"
    ),
    "int-to-float-to-double": Evolution(
        record([field("n", "float")]), record([field("n", "double")]), None, "double cannot be"
    ),
    "string-to-bytes": Evolution(
        record([field("s", "string")]), record([field("s", "bytes")]), None, None
    ),
    "string-to-long": Evolution(
        record([field("s", "string")]),
        record([field("s", "long")]),
        "string cannot be read",
        "long cannot be read",
    ),
    "make-field-optional": Evolution(
        record([field("n", "long")]),
        record([field("n", ["null", "long"], default=None)]),
        None,
        "writer type null cannot be read",
    ),
    "widen-union": Evolution(
        record([field("v", ["null", "string"], default=None)]),
        record([field("v", ["null", "string", "long"], default=None)]),
        None,
        "writer type long matches no branch",
    ),
    "union-branch-promoted": Evolution(
        record([field("v", ["null", "int"], default=None)]),
        record([field("v", ["null", "long"], default=None)]),
        None,
        "writer type long matches no branch",
    ),
    "add-enum-symbol-without-default": Evolution(
        record([field("kind", enum(["A", "B"]))]),
        record([field("kind", enum(["A", "B", "C"]))]),
        None,
        "writer symbols ['C'] are not in the reader's enum",
    ),
    "add-enum-symbol-with-default": Evolution(
        record([field("kind", enum(["A", "B", "UNKNOWN"], default="UNKNOWN"))]),
        record([field("kind", enum(["A", "B", "C", "UNKNOWN"], default="UNKNOWN"))]),
        None,
        None,
    ),
    "remove-enum-symbol": Evolution(
        record([field("kind", enum(["A", "B"]))]),
        record([field("kind", enum(["A"]))]),
        "writer symbols ['B'] are not in the reader's enum",
        None,
    ),
    "rename-record": Evolution(
        record([ID]), record([ID], name="Renamed"), "names differ", "names differ"
    ),
    "rename-record-with-alias": Evolution(
        record([ID]), record([ID], name="Renamed", aliases=["Thing"]), None, "names differ"
    ),
    "rename-record-with-full-name-alias": Evolution(
        record([ID]), record([ID], name="Renamed", aliases=["test.Thing"]), None, "names differ"
    ),
    "alias-in-another-namespace": Evolution(
        record([ID]),
        record([ID], name="Renamed", aliases=["other.Thing"]),
        "names differ",
        "names differ",
    ),
    "rename-field-with-alias": Evolution(
        record([field("amount", "long")]),
        record([field("amount_minor", "long", aliases=["amount"])]),
        None,
        "reader needs this field",
    ),
    "rename-enum": Evolution(
        record([field("kind", enum(["A"]))]),
        record([field("kind", enum(["A"]) | {"name": "Sort"})]),
        "names differ",
        "names differ",
    ),
    "fixed-size-change": Evolution(
        record([field("f", {"type": "fixed", "name": "F", "size": 4})]),
        record([field("f", {"type": "fixed", "name": "F", "size": 8})]),
        "size changed from 4 to 8",
        "size changed from 8 to 4",
    ),
    "nested-record-gains-required-field": Evolution(
        nested([field("x", "string")]),
        nested([field("x", "string"), field("y", "long")]),
        "test.Thing.inner.y: the reader needs this field",
        None,
    ),
    "nested-record-field-narrowed": Evolution(
        nested([field("x", "long")]),
        nested([field("x", "int")]),
        "test.Thing.inner.x: writer type long cannot be read as reader type int",
        None,
    ),
    "array-items-narrowed": Evolution(
        record([field("xs", {"type": "array", "items": "long"})]),
        record([field("xs", {"type": "array", "items": "int"})]),
        "test.Thing.xs[]: writer type long cannot",
        None,
    ),
    "map-of-records-gains-required-field": Evolution(
        record([field("m", {"type": "map", "values": record([ID], name="V")})]),
        record([field("m", {"type": "map", "values": record([ID, field("n", "int")], name="V")})]),
        "test.Thing.m{}.n: the reader needs this field",
        None,
    ),
    "array-to-map": Evolution(
        record([field("xs", {"type": "array", "items": "long"})]),
        record([field("xs", {"type": "map", "values": "long"})]),
        "array<long> cannot be read as reader type map<long>",
        "map<long> cannot be read as reader type array<long>",
    ),
    "timestamp-to-plain-long": Evolution(
        record([field("at", TIMESTAMP)]),
        record([field("at", "long")]),
        "logicalType changed from 'timestamp-millis' to None",
        "logicalType changed from None to 'timestamp-millis'",
    ),
    "timestamp-millis-to-micros": Evolution(
        record([field("at", TIMESTAMP)]),
        record([field("at", {"type": "long", "logicalType": "timestamp-micros"})]),
        "logicalType changed",
        "logicalType changed",
    ),
    "added-field-default-not-first-union-branch": Evolution(
        record([ID]),
        record([ID, field("note", ["null", "string"], default="none")]),
        "reader's default 'none' is not a valid value: not a null",
        None,
    ),
    "added-field-default-first-union-branch": Evolution(
        record([ID]),
        record([ID, field("note", ["string", "null"], default="none")]),
        None,
        None,
    ),
    "reused-named-type-changes-everywhere": Evolution(
        record([field("a", enum(["A", "B"])), field("b", "test.Kind")]),
        record([field("a", enum(["A"])), field("b", "test.Kind")]),
        "writer symbols ['B']",
        None,
    ),
    "recursive-record-gains-optional-field": Evolution(
        record([field("v", "long"), field("next", ["null", "test.Thing"], default=None)]),
        record(
            [field("v", "long"), field("next", ["null", "test.Thing"], default=None), OPTIONAL_NOTE]
        ),
        None,
        None,
    ),
}


def _verdict(problems: list[str], expected: str | None) -> None:
    if expected is None:
        assert problems == []
    else:
        assert problems, f"expected a problem containing {expected!r}"
        assert any(expected in problem for problem in problems), problems


def _resolves(writer: Any, reader: Any) -> bool:
    """Whether fastavro reads a sample of ``writer`` with ``reader``."""
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(writer), sample_datum(writer))
    buf.seek(0)
    try:
        schemaless_reader(buf, parse_schema(writer), parse_schema(reader))
    except Exception:  # noqa: BLE001 - any failure of the real reader is the answer
        return False
    return True


@pytest.mark.parametrize("evolution", EVOLUTIONS.values(), ids=EVOLUTIONS.keys())
def test_compatibility_verdicts(evolution: Evolution) -> None:
    _verdict(check_compatible(evolution.old, evolution.new), evolution.backward)
    _verdict(check_compatible(evolution.new, evolution.old), evolution.forward)


# Where the check is deliberately stricter than fastavro's reader, a sample still resolves.
STRICTER_THAN_FASTAVRO = {
    "timestamp-to-plain-long",
    "timestamp-millis-to-micros",
    "added-field-default-not-first-union-branch",
}


@pytest.mark.parametrize(
    "evolution",
    [e for name, e in EVOLUTIONS.items() if name not in STRICTER_THAN_FASTAVRO],
    ids=[name for name in EVOLUTIONS if name not in STRICTER_THAN_FASTAVRO],
)
def test_a_compatible_verdict_means_fastavro_resolves_the_sample(evolution: Evolution) -> None:
    # The converse does not hold: a sample takes one branch of each union and may resolve
    # where other data would not, so only the "compatible" side is confirmed this way.
    if evolution.backward is None:
        assert _resolves(evolution.old, evolution.new)
    if evolution.forward is None:
        assert _resolves(evolution.new, evolution.old)


def test_full_compatibility_names_version_and_direction() -> None:
    v1 = record([ID])
    v2 = record([ID, OPTIONAL_NOTE])
    current = record([ID, OPTIONAL_NOTE, field("amount", "long")])

    problems = check_full_compatibility([v1, v2], current)

    assert [p.split(":")[0] for p in problems] == [
        "v1 data read with the current schema",
        "v2 data read with the current schema",
    ]
    assert check_full_compatibility([v1, v2], v2) == []


# --- sample data -------------------------------------------------------------------------


def test_sample_datum_is_deterministic_and_covers_every_type() -> None:
    schema = record(
        [
            ID,
            field("kind", enum(["FIRST", "SECOND"])),
            field("amount", "long"),
            field("count", "int"),
            field("ratio", "double"),
            field("flag", "boolean"),
            field("at", TIMESTAMP),
            field("note", ["null", "string"], default=None),
            field("tags", {"type": "array", "items": "string"}),
            field("limits", {"type": "map", "values": "long"}),
            field("blob", "bytes"),
            field("digest", {"type": "fixed", "name": "Digest", "size": 4}),
            field("inner", record([field("x", "string")], name="Inner")),
        ]
    )

    sample = sample_datum(schema)

    assert sample == sample_datum(parse_schema(schema))
    assert sample["id"] == "sample-id"
    assert sample["kind"] == "FIRST"
    assert sample["amount"] == SAMPLE_LONG
    assert sample["flag"] is True
    assert sample["at"] == SAMPLE_TIMESTAMP
    assert sample["at"].tzinfo is not None
    assert sample["at"].microsecond % 1000 == 0
    assert sample["note"] == "sample-note"
    assert sample["tags"] == ["sample-tags"]
    assert sample["limits"] == {"sample-limits-key": SAMPLE_LONG}
    assert sample["digest"] == b"\x00\x01\x02\x03"
    assert sample["inner"] == {"x": "sample-x"}
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(schema), sample, strict=True)
    buf.seek(0)
    assert schemaless_reader(buf, parse_schema(schema), None) == sample


def test_sample_of_a_recursive_record_ends_in_null() -> None:
    linked = record([field("v", "long"), field("next", ["test.Thing", "null"])])

    assert sample_datum(linked) == {"v": SAMPLE_LONG, "next": None}


def test_sample_refuses_an_unknown_logical_type() -> None:
    with pytest.raises(ValueError, match="decimal"):
        sample_datum(
            record([field("d", {"type": "bytes", "logicalType": "decimal", "precision": 4})])
        )


def test_json_value_of_a_datum() -> None:
    datum = {"at": SAMPLE_TIMESTAMP, "xs": [b"\x00\xff"], "n": None}

    assert to_json_value(datum) == {"at": 1709214330123, "xs": ["\x00\xff"], "n": None}
    with pytest.raises(TypeError):
        to_json_value({"at": dt.datetime(2024, 1, 1)})
    with pytest.raises(TypeError):
        to_json_value({"s": {1, 2}})


# --- freeze ------------------------------------------------------------------------------


@pytest.fixture()
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    schemas, samples = tmp_path / "schemas", tmp_path / "samples"
    schemas.mkdir()
    write_schema(schemas, record([ID, field("amount", "long"), field("at", TIMESTAMP)]))
    write_schema(schemas, record([ID], name="Other"))
    return schemas, samples


def write_schema(schemas: Path, schema: dict[str, Any]) -> None:
    name = f"{schema['namespace']}.{schema['name']}"
    (schemas / f"{name}.avsc").write_text(json.dumps(schema, indent=2))


def snapshot(*roots: Path) -> dict[str, bytes]:
    return {
        str(path): path.read_bytes() for root in roots for path in root.rglob("*") if path.is_file()
    }


def test_freeze_writes_version_one_then_nothing(dirs: tuple[Path, Path]) -> None:
    schemas, samples = dirs

    assert freeze(schemas, samples) == ["test.Other", "test.Thing"]
    assert (schemas / "history/test.Thing/v1.avsc").is_file()
    assert json.loads((samples / "test.Thing/v1.json").read_text()) == {
        "id": "sample-id",
        "amount": SAMPLE_LONG,
        "at": 1709214330123,
    }
    decoded = AvroCodec(SchemaCatalogue.load(schemas)).decode(
        (samples / "test.Thing/v1.bin").read_bytes()
    )
    assert decoded.writer.version == 1
    assert to_json_value(decoded.datum) == json.loads((samples / "test.Thing/v1.json").read_text())

    before = snapshot(schemas, samples)
    assert freeze(schemas, samples) == []
    assert snapshot(schemas, samples) == before
    assert check_schemas(schemas) == []


def test_freeze_refuses_an_incompatible_change_and_writes_nothing(
    dirs: tuple[Path, Path],
) -> None:
    schemas, samples = dirs
    freeze(schemas, samples)
    write_schema(schemas, record([ID, field("amount", "int"), field("at", TIMESTAMP)]))
    # A compatible change in the same run is not frozen either: a freeze is all or nothing.
    write_schema(schemas, record([ID, OPTIONAL_NOTE], name="Other"))
    before = snapshot(schemas, samples)

    with pytest.raises(SchemaEvolutionError) as raised:
        freeze(schemas, samples)

    assert raised.value.problems == (
        "test.Thing: v1 data read with the current schema: test.Thing.amount: writer type "
        "long cannot be read as reader type int",
    )
    assert snapshot(schemas, samples) == before


def test_freeze_adds_version_two_and_version_one_still_decodes(dirs: tuple[Path, Path]) -> None:
    schemas, samples = dirs
    freeze(schemas, samples)
    write_schema(
        schemas, record([ID, field("amount", "long"), field("at", TIMESTAMP), OPTIONAL_NOTE])
    )

    assert freeze(schemas, samples) == ["test.Thing"]

    assert (schemas / "history/test.Thing/v2.avsc").is_file()
    assert (samples / "test.Thing/v2.bin").is_file()
    codec = AvroCodec(SchemaCatalogue.load(schemas))
    old = codec.decode((samples / "test.Thing/v1.bin").read_bytes())
    assert old.writer.version == 1
    assert old.datum["note"] is None
    assert old.datum["amount"] == SAMPLE_LONG
    assert codec.decode((samples / "test.Thing/v2.bin").read_bytes()).datum["note"] == (
        "sample-note"
    )
    assert check_schemas(schemas) == []


def test_check_reports_an_unfrozen_schema_and_lost_history(dirs: tuple[Path, Path]) -> None:
    schemas, samples = dirs
    freeze(schemas, samples)
    write_schema(
        schemas, record([ID, field("amount", "long"), field("at", TIMESTAMP), OPTIONAL_NOTE])
    )
    freeze(schemas, samples)
    (schemas / "history/test.Thing/v1.avsc").unlink()
    write_schema(schemas, record([ID, OPTIONAL_NOTE], name="Other"))

    problems = check_schemas(schemas)

    assert problems == [
        "test.Other: the current schema "
        f"({SchemaCatalogue.load(schemas).current('test.Other').fingerprint.hex()}) is not "
        "frozen (latest frozen is v1); run `aggregator schemas freeze`",
        "test.Thing: frozen versions are [2], expected [1]; history was lost",
    ]
    with pytest.raises(SchemaEvolutionError, match="history was lost"):
        freeze(schemas, samples)


# --- the command -------------------------------------------------------------------------


def test_command_list_check_freeze(
    dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    schemas, samples = dirs
    where = ["--schemas-dir", str(schemas)]

    assert main_schemas(["list", *where]) == 0
    assert "test.Thing" in capsys.readouterr().out
    assert main_schemas(["check", *where]) == 1
    assert "run `aggregator schemas freeze`" in capsys.readouterr().out
    assert main_schemas(["freeze", *where, "--samples-dir", str(samples)]) == 0
    assert "froze test.Thing" in capsys.readouterr().out
    assert main_schemas(["check", *where]) == 0
    assert "all schemas are frozen" in capsys.readouterr().out

    main_schemas(["list", *where])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    fingerprint_hex = SchemaCatalogue.load(schemas).current("test.Thing").fingerprint.hex()
    assert rows[0] == ["schema", "version", "fingerprint"]
    assert ["test.Thing", "v1", fingerprint_hex] in rows

    write_schema(schemas, record([ID]))
    assert main_schemas(["freeze", *where, "--samples-dir", str(samples)]) == 1
    assert "schema evolution refused" in capsys.readouterr().out


def test_command_reports_an_inconsistent_catalogue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "wrong.name.avsc").write_text(json.dumps(record([ID])))

    assert main_schemas(["check", "--schemas-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().out.startswith("error: wrong.name.avsc defines test.Thing")


def test_command_requires_a_subcommand() -> None:
    with pytest.raises(SystemExit):
        main_schemas([])
