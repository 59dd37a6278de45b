"""Schema evolution: Avro schema-resolution checks, sample data, and freezing versions.

The topics are a public contract: data written with any frozen version must stay readable
with the current schema (backward) and data written with the current schema must stay
readable with every frozen version (forward), because producers and consumers upgrade
independently. ``check_compatible`` decides this statically by the resolution rules of the
Avro specification ("Schema Resolution"), so an incompatible change is refused when the
schema is frozen rather than discovered as undecodable messages in production.

Freezing stores, next to each frozen schema version, a sample datum as JSON and as the
single-object bytes the codec wrote, so that later versions are tested against real bytes
of every past version (``tests/compat``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import parse_schema

from agg_avro.catalogue import SchemaCatalogue, SchemaEntry
from agg_avro.codec import AvroCodec

_PRIMITIVE_TYPES = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
)

# Writer type -> reader types it may be read as (Avro specification, "Schema Resolution").
_PROMOTIONS: Mapping[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}

# Logical-type attributes that change the meaning of the underlying value.
_LOGICAL_ATTRIBUTES = ("logicalType", "precision", "scale")

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MILLISECOND = dt.timedelta(milliseconds=1)

SAMPLE_TIMESTAMP = dt.datetime(2024, 2, 29, 13, 45, 30, 123000, tzinfo=dt.UTC)
"""Sample instant: a leap day, with a millisecond part, so that a date or precision bug shows."""
SAMPLE_LONG = 1_234_567_890_123
"""Sample long: beyond 32 bits, so that a long truncated to an int shows."""
SAMPLE_INT = 123_456_789
SAMPLE_FLOAT = 1.5
"""Sample float and double: exactly representable in 32 bits, so round trips compare equal."""


class SchemaEvolutionError(ValueError):
    """A schema change would break the contract: readers of some version could not read data
    written by another. ``problems`` lists each break."""

    def __init__(self, problems: Sequence[str]):
        self.problems = tuple(problems)
        listed = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"schema evolution refused:\n{listed}")


@dataclass(frozen=True)
class _Parsed:
    schema: Any
    named: Mapping[str, Any]
    """Definitions of the named types by full name; references in ``schema`` are full names."""


def _parse(schema: Any) -> _Parsed:
    named: dict[str, Any] = {}
    source = dict(schema) if isinstance(schema, Mapping) else schema
    return _Parsed(parse_schema(source, named), named)


def _resolve(schema: Any, named: Mapping[str, Any]) -> Any:
    """The definition behind ``schema``: a reference to a named type is replaced by the type
    it names; anything else is returned as is."""
    if isinstance(schema, str) and schema not in _PRIMITIVE_TYPES:
        return named[schema]
    return schema


def _type_of(schema: Any) -> str:
    """``union``, a primitive type or a complex type name, of a resolved schema."""
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, str):
        return schema
    kind: str = schema["type"]
    return "record" if kind == "error" else kind


def _describe(schema: Any) -> str:
    kind = _type_of(schema)
    if kind == "union":
        return "union [" + ", ".join(_describe_ref(branch) for branch in schema) + "]"
    if kind in ("record", "enum", "fixed"):
        return f"{kind} {schema['name']}"
    logical = schema.get("logicalType") if isinstance(schema, dict) else None
    if kind == "array":
        text = f"array<{_describe_ref(schema['items'])}>"
    elif kind == "map":
        text = f"map<{_describe_ref(schema['values'])}>"
    else:
        text = kind
    return f"{text} ({logical})" if logical else text


def _describe_ref(schema: Any) -> str:
    """Like ``_describe`` but names a referenced named type without looking it up."""
    if isinstance(schema, str):
        return schema
    return _describe(schema)


def _unqualified(full_name: str) -> str:
    return full_name.rsplit(".", 1)[-1]


def _aliases(named_type: Mapping[str, Any]) -> set[str]:
    """Full names of a named type's aliases; a relative alias is in the type's namespace."""
    namespace = named_type["name"].rpartition(".")[0]
    return {
        alias if "." in alias or not namespace else f"{namespace}.{alias}"
        for alias in named_type.get("aliases", ())
    }


class _Resolution:
    """Static schema resolution of one writer schema against one reader schema.

    Follows the Avro specification, with two deliberate choices where implementations
    differ, both the stricter one so that every conforming reader accepts what passes:
    named types match by unqualified name (as Java and fastavro do) or by a reader alias
    equal to the writer's full name (aliases as Java resolves them); and a reader field
    default that fills a field the writer lacks must fit the first branch of a union (the
    rule before Avro 1.12). Beyond the specification, a change of logical type (or of a
    decimal's precision or scale) is a problem: the bytes would resolve but their meaning
    would change, e.g. milliseconds read as microseconds.
    """

    def __init__(self, writer: _Parsed, reader: _Parsed):
        self._writer_named = writer.named
        self._reader_named = reader.named
        self._checked: set[tuple[str, str]] = set()
        self.problems: list[str] = []

    def check(self, writer: Any, reader: Any, path: str) -> None:
        writer = _resolve(writer, self._writer_named)
        reader = _resolve(reader, self._reader_named)
        if isinstance(writer, list):
            # Every branch the writer may have chosen must be readable.
            for branch in writer:
                self.check(branch, reader, path)
            return
        if isinstance(reader, list):
            chosen = next((b for b in reader if self._mismatch(writer, b) is None), None)
            if chosen is None:
                self.problems.append(
                    f"{path}: writer type {_describe(writer)} matches no branch of the "
                    f"reader's {_describe(reader)}"
                )
            else:
                self.check(writer, chosen, path)
            return
        mismatch = self._mismatch(writer, reader)
        if mismatch is not None:
            self.problems.append(f"{path}: {mismatch}")
            return
        self._check_logical(writer, reader, path)
        kind = _type_of(writer)
        if kind in ("record", "enum"):
            pair = (writer["name"], reader["name"])
            if pair in self._checked:
                return  # checked already, or being checked further up a recursive type
            self._checked.add(pair)
            if kind == "record":
                self._check_record(writer, reader, path)
            else:
                self._check_enum(writer, reader, path)
        elif kind == "array":
            self.check(writer["items"], reader["items"], f"{path}[]")
        elif kind == "map":
            self.check(writer["values"], reader["values"], f"{path}{{}}")

    def _mismatch(self, writer: Any, reader: Any) -> str | None:
        """Why the non-union ``writer`` does not *match* the non-union ``reader`` in the
        specification's sense (the shallow test that also picks a reader's union branch), or
        None if it does."""
        writer = _resolve(writer, self._writer_named)
        reader = _resolve(reader, self._reader_named)
        writer_kind, reader_kind = _type_of(writer), _type_of(reader)
        cannot = (
            f"writer type {_describe(writer)} cannot be read as reader type {_describe(reader)}"
        )
        if writer_kind in _PRIMITIVE_TYPES or reader_kind in _PRIMITIVE_TYPES:
            promotable = reader_kind in _PROMOTIONS.get(writer_kind, ())
            return None if writer_kind == reader_kind or promotable else cannot
        if writer_kind != reader_kind:
            return cannot
        if writer_kind in ("array", "map"):
            # Their contents are resolved by ``check``, which names the part that differs;
            # a union holds at most one array and one map, so the branch choice is the same.
            return None
        writer_name, reader_name = writer["name"], reader["name"]
        if _unqualified(writer_name) != _unqualified(reader_name) and (
            writer_name not in _aliases(reader)
        ):
            return (
                f"writer {writer_kind} {writer_name} cannot be read as {reader_name}: the names "
                f"differ and the reader has no alias {writer_name}"
            )
        if writer_kind == "fixed" and writer["size"] != reader["size"]:
            return f"fixed {reader_name} size changed from {writer['size']} to {reader['size']}"
        return None

    def _check_logical(self, writer: Any, reader: Any, path: str) -> None:
        for attribute in _LOGICAL_ATTRIBUTES:
            written = writer.get(attribute) if isinstance(writer, dict) else None
            read = reader.get(attribute) if isinstance(reader, dict) else None
            if written != read:
                self.problems.append(
                    f"{path}: {attribute} changed from {written!r} to {read!r}; the bytes "
                    "resolve but their meaning changes"
                )
                return

    def _check_record(self, writer: Any, reader: Any, path: str) -> None:
        writer_fields = {field["name"]: field for field in writer["fields"]}
        for field in reader["fields"]:
            field_path = f"{path}.{field['name']}"
            names = [field["name"], *field.get("aliases", ())]
            written = next((writer_fields[n] for n in names if n in writer_fields), None)
            if written is not None:
                self.check(written["type"], field["type"], field_path)
            elif "default" not in field:
                self.problems.append(
                    f"{field_path}: the reader needs this field, the writer does not write "
                    "it, and the reader has no default for it"
                )
            else:
                problem = self._default_problem(field["type"], field["default"])
                if problem is not None:
                    self.problems.append(
                        f"{field_path}: the writer does not write this field and the "
                        f"reader's default {field['default']!r} is not a valid value: {problem}"
                    )

    def _check_enum(self, writer: Any, reader: Any, path: str) -> None:
        unknown = [symbol for symbol in writer["symbols"] if symbol not in reader["symbols"]]
        if unknown and "default" not in reader:
            self.problems.append(
                f"{path}: writer symbols {unknown} are not in the reader's enum "
                f"{reader['name']}, which has no default symbol"
            )

    def _default_problem(self, schema: Any, value: Any) -> str | None:
        """Why ``value`` (a default as JSON) is not a value of the reader's ``schema``, or
        None if it is (Avro specification, the table of field default values)."""
        schema = _resolve(schema, self._reader_named)
        kind = _type_of(schema)
        if kind == "union":
            return self._default_problem(schema[0], value)
        if kind in ("array", "map", "record"):
            if not isinstance(value, list if kind == "array" else dict):
                return f"not a JSON {'array' if kind == 'array' else 'object'}"
            return next((p for p in self._default_part_problems(schema, value) if p), None)
        return None if _is_default_of(schema, kind, value) else f"not a {_describe(schema)}"

    def _default_part_problems(self, schema: Any, value: Any) -> Iterator[str | None]:
        kind = _type_of(schema)
        if kind == "array":
            for item in value:
                yield self._default_problem(schema["items"], item)
        elif kind == "map":
            for item in value.values():
                yield self._default_problem(schema["values"], item)
        else:
            for field in schema["fields"]:
                if field["name"] in value:
                    yield self._default_problem(field["type"], value[field["name"]])
                elif "default" not in field:
                    yield f"field {field['name']} is missing and has no default"


_INT_BITS = {"int": 32, "long": 64}


def _is_default_of(schema: Any, kind: str, value: Any) -> bool:
    """Whether ``value`` is the JSON default of a non-container ``schema`` of ``kind``."""
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind in _INT_BITS:
        bound = 1 << (_INT_BITS[kind] - 1)
        return isinstance(value, int) and not isinstance(value, bool) and -bound <= value < bound
    if kind in ("float", "double"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "enum":
        return value in schema["symbols"]
    # string, bytes and fixed defaults are JSON strings; bytes as code points 0-255
    if not isinstance(value, str):
        return False
    if kind == "string":
        return True
    size_ok = kind == "bytes" or len(value) == schema["size"]
    return size_ok and all(ord(char) < 256 for char in value)


def check_compatible(writer_raw: Any, reader_raw: Any) -> list[str]:
    """Problems that stop a reader using ``reader_raw`` from reading data written with
    ``writer_raw``; an empty list means every datum of the writer schema resolves.

    Both arguments are schemas as JSON values (or as parsed by fastavro). The check is
    static: it holds for every datum, not only for the data seen so far.
    """
    writer, reader = _parse(writer_raw), _parse(reader_raw)
    resolution = _Resolution(writer, reader)
    root = _resolve(reader.schema, reader.named)
    path = root["name"] if _type_of(root) in ("record", "enum", "fixed") else "<root>"
    resolution.check(writer.schema, reader.schema, path)
    return resolution.problems


def check_full_compatibility(history_raws: Sequence[Any], current_raw: Any) -> list[str]:
    """Problems in both directions between ``current_raw`` and every frozen version.

    ``history_raws`` are the frozen versions oldest first; the problem texts call the one at
    position ``i`` version ``v{i + 1}``. Backward: the current schema reads data of each
    version. Forward: each version reads data of the current schema.
    """
    problems: list[str] = []
    for number, frozen in enumerate(history_raws, start=1):
        problems.extend(
            f"v{number} data read with the current schema: {problem}"
            for problem in check_compatible(frozen, current_raw)
        )
        problems.extend(
            f"current data read with v{number}: {problem}"
            for problem in check_compatible(current_raw, frozen)
        )
    return problems


def sample_datum(schema: Any) -> Any:
    """A deterministic datum valid for ``schema`` (raw JSON or parsed by fastavro), for
    round-trip and compatibility tests.

    Every value is set, so that each field's bytes are exercised: a union takes its first
    non-null branch, an enum its first symbol, a string ``sample-<field name>``, an array one
    item, a map one entry; a union branch that leads back into a record being sampled is
    left out, so a recursive type ends in null. Logical types the samples do not know raise
    ``ValueError`` rather than produce a value the codec might reinterpret.
    """
    parsed = _parse(schema)
    return _sample(parsed.schema, parsed.named, "value", frozenset())


def _sample(schema: Any, named: Mapping[str, Any], label: str, active: frozenset[str]) -> Any:
    schema = _resolve(schema, named)
    kind = _type_of(schema)
    logical = schema.get("logicalType") if isinstance(schema, dict) else None
    if logical is not None:
        if logical == "timestamp-millis" and kind == "long":
            return SAMPLE_TIMESTAMP
        raise ValueError(f"no sample value for logicalType {logical!r} on {kind} ({label})")
    if kind == "union":
        branches = [_resolve(branch, named) for branch in schema]
        nulls = [branch for branch in branches if branch == "null"]
        # A branch back into a record being sampled would never end: take null there.
        finite = [b for b in branches if b != "null" and _name_of(b) not in active]
        return _sample((finite or nulls or branches)[0], named, label, active)
    if kind == "record":
        if schema["name"] in active:
            raise ValueError(f"no finite sample for the recursive type {schema['name']}")
        inner = active | {schema["name"]}
        return {f["name"]: _sample(f["type"], named, f["name"], inner) for f in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][0]
    if kind == "array":
        return [_sample(schema["items"], named, label, active)]
    if kind == "map":
        return {f"sample-{label}-key": _sample(schema["values"], named, label, active)}
    if kind == "fixed":
        return bytes(range(schema["size"]))
    values: Mapping[str, Any] = {
        "null": None,
        "boolean": True,
        "int": SAMPLE_INT,
        "long": SAMPLE_LONG,
        "float": SAMPLE_FLOAT,
        "double": SAMPLE_FLOAT,
        "string": f"sample-{label}",
        "bytes": f"sample-{label}".encode(),
    }
    return values[kind]


def _name_of(schema: Any) -> str | None:
    return schema.get("name") if isinstance(schema, dict) else None


def to_json_value(datum: Any) -> Any:
    """``datum`` as a JSON value: datetimes become epoch milliseconds (what
    ``timestamp-millis`` carries on the wire), bytes a string of code points 0-255 (as in
    Avro's JSON encoding); mappings, lists and JSON scalars are kept.

    Raises ``TypeError`` for any other value, so a sample file never holds a lossy form.
    """
    if isinstance(datum, Mapping):
        return {str(key): to_json_value(value) for key, value in datum.items()}
    if isinstance(datum, list | tuple):
        return [to_json_value(value) for value in datum]
    if isinstance(datum, dt.datetime):
        if datum.tzinfo is None:
            raise TypeError(f"naive datetime {datum} has no defined instant")
        return (datum - _EPOCH) // _MILLISECOND
    if isinstance(datum, bytes):
        return datum.decode("latin-1")  # Avro's JSON form of bytes: code points 0-255
    if datum is None or isinstance(datum, bool | int | float | str):
        return datum
    raise TypeError(f"no JSON form for {type(datum).__name__} values")


def _history_problems(name: str, history: Sequence[SchemaEntry]) -> list[str]:
    numbers = [entry.version for entry in history]
    expected = list(range(1, len(history) + 1))
    if numbers != expected:
        return [f"{name}: frozen versions are {numbers}, expected {expected}; history was lost"]
    return []


def _is_frozen(current: SchemaEntry, history: Sequence[SchemaEntry]) -> bool:
    return bool(history) and history[-1].fingerprint == current.fingerprint


def check_schemas(schemas_dir: Path) -> list[str]:
    """Everything wrong with the schemas in ``schemas_dir`` as a contract: history with
    missing versions, current schemas not frozen, and current schemas incompatible with any
    frozen version. Empty when the contract is in order."""
    catalogue = SchemaCatalogue.load(schemas_dir)
    problems: list[str] = []
    for name in catalogue.names:
        current, history = catalogue.current(name), catalogue.versions(name)
        problems.extend(_history_problems(name, history))
        if not _is_frozen(current, history):
            latest = f"latest frozen is v{len(history)}" if history else "no version is frozen"
            problems.append(
                f"{name}: the current schema ({current.fingerprint.hex()}) is not frozen "
                f"({latest}); run `aggregator schemas freeze`"
            )
        problems.extend(
            f"{name}: {problem}"
            for problem in check_full_compatibility([e.raw for e in history], current.raw)
        )
    return problems


@dataclass(frozen=True)
class _Freeze:
    name: str
    version: int
    schema_json: str
    sample_json: str
    sample_bytes: bytes


def freeze(schemas_dir: Path, samples_dir: Path) -> list[str]:
    """Freeze every current schema that differs from its latest frozen version as the next
    version, with its sample payloads; return the full names frozen (none on a second run).

    All checks run before anything is written: if any schema is incompatible with any of
    its frozen versions, ``SchemaEvolutionError`` lists every problem and no file changes.
    Samples are written before the schema version itself, so a run interrupted half-way is
    completed by the next run instead of leaving a frozen version without samples.
    """
    catalogue = SchemaCatalogue.load(schemas_dir)
    codec = AvroCodec(catalogue)
    problems: list[str] = []
    plans: list[_Freeze] = []
    for name in catalogue.names:
        current, history = catalogue.current(name), catalogue.versions(name)
        problems.extend(_history_problems(name, history))
        if _is_frozen(current, history):
            continue
        problems.extend(
            f"{name}: {problem}"
            for problem in check_full_compatibility([e.raw for e in history], current.raw)
        )
        sample = sample_datum(current.parsed)
        plans.append(
            _Freeze(
                name=name,
                version=len(history) + 1,
                schema_json=json.dumps(current.raw, indent=2, ensure_ascii=False) + "\n",
                sample_json=json.dumps(to_json_value(sample), indent=2) + "\n",
                sample_bytes=codec.encode(name, sample),
            )
        )
    if problems:
        raise SchemaEvolutionError(problems)
    for plan in plans:
        sample_dir = samples_dir / plan.name
        sample_dir.mkdir(parents=True, exist_ok=True)
        (sample_dir / f"v{plan.version}.json").write_text(plan.sample_json, encoding="utf-8")
        (sample_dir / f"v{plan.version}.bin").write_bytes(plan.sample_bytes)
        history_dir = schemas_dir / "history" / plan.name
        history_dir.mkdir(parents=True, exist_ok=True)
        (history_dir / f"v{plan.version}.avsc").write_text(plan.schema_json, encoding="utf-8")
    return [plan.name for plan in plans]
