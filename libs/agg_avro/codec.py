"""Avro single-object encoding (Avro specification, "Single-object encoding"):

    C3 01 | 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema | binary body

Any Avro implementation holding the ``.avsc`` files can decode these bytes: the fingerprint
names the writer schema, the reader resolves it against its own version of the schema.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from fastavro import schemaless_reader, schemaless_writer
from fastavro.validation import ValidationError, validate

from agg_avro.catalogue import SchemaCatalogue, SchemaEntry, default_catalogue
from agg_avro.flat import Decoder, Encoder, FlatDecodeError, compile_decoder, compile_encoder

MARKER = b"\xc3\x01"
HEADER_LENGTH = len(MARKER) + 8


class AvroEncodeError(ValueError):
    """A datum does not fit its schema (a bug in the producing code)."""


class AvroDecodeError(ValueError):
    """Bytes that cannot be decoded. ``reason`` is one of: ``not_single_object``,
    ``unknown_fingerprint``, ``unknown_reader``, ``incompatible``, ``corrupt``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class AvroRecord(NamedTuple):
    """A datum and the full name of its record schema."""

    name: str
    datum: Mapping[str, Any]


@dataclass(frozen=True)
class Decoded:
    name: str
    """Full name of the schema the datum was read with."""
    datum: dict[str, Any]
    writer: SchemaEntry


class AvroCodec:
    def __init__(self, catalogue: SchemaCatalogue | None = None):
        self.catalogue = catalogue or default_catalogue()
        self._fast: dict[str, tuple[bytes, Encoder | None]] = {}
        """Per record name: the header and the compiled encoder of its current schema."""

    def encode(self, name: str, datum: Mapping[str, Any]) -> bytes:
        """Encode ``datum`` with the current schema of ``name``, or raise AvroEncodeError.

        Only a datum that fits the schema exactly is encoded: fastavro's writer on its own
        would truncate a float written as a long (5.9 becomes 5), write True as 1, and
        encode a naive datetime in the local time zone of the host.

        A flat record (every schema of the money path) is checked and encoded in one pass
        by its compiled encoder (:mod:`agg_avro.flat`); a datum that encoder does not take
        goes the generic way below, which refuses it with the reason.
        """
        fast = self._fast.get(name)
        if fast is None:
            entry = self.catalogue.current(name)
            fast = self._fast[name] = (MARKER + entry.fingerprint, _compiled(entry))
        if fast[1] is not None:
            body = fast[1](datum)
            if body is not None:
                return fast[0] + body
        return self._encode_generic(name, datum)

    def _encode_generic(self, name: str, datum: Mapping[str, Any]) -> bytes:
        entry = self.catalogue.current(name)
        naive = _naive_datetime(datum)
        if naive is not None:
            raise AvroEncodeError(f"{name}: naive datetime {naive} has no defined instant")
        buf = io.BytesIO()
        buf.write(MARKER)
        buf.write(entry.fingerprint)
        try:
            # strict: a field the schema does not know, or a missing field without a
            # default, is a bug in the producer and must not reach the wire silently.
            schemaless_writer(buf, entry.parsed, datum, strict_allow_default=True)
            # The types, which the writer coerces; checked second because the writer's
            # messages for missing and unknown fields are the clearer ones. The quiet check
            # accepts exactly what the raising one accepts, but the raising one builds (and
            # throws away) an error message for every union branch a value does not take,
            # some 30 us a record; so it only runs to explain a datum already refused.
            fits = validate(datum, entry.parsed, raise_errors=False)
            if not fits:
                validate(datum, entry.parsed, raise_errors=True)
        except (
            ValidationError,
            ValueError,
            TypeError,
            KeyError,
            AttributeError,
            OverflowError,
        ) as exc:
            raise AvroEncodeError(f"{name}: {exc}") from exc
        if not fits:  # the two checks disagree: refuse all the same
            raise AvroEncodeError(f"{name}: datum does not fit the schema")
        return buf.getvalue()

    def encode_record(self, record: AvroRecord) -> bytes:
        return self.encode(record.name, record.datum)

    def writer_of(self, data: bytes) -> SchemaEntry:
        if len(data) < HEADER_LENGTH or data[:2] != MARKER:
            raise AvroDecodeError("not_single_object", "missing the C3 01 marker")
        entry = self.catalogue.by_fingerprint(bytes(data[2:HEADER_LENGTH]))
        if entry is None:
            raise AvroDecodeError(
                "unknown_fingerprint",
                f"writer schema {data[2:HEADER_LENGTH].hex()} not in catalogue",
            )
        return entry

    def decode(self, data: bytes, reader: str | None = None) -> Decoded:
        """Decode with the current schema of ``reader`` (default: the current version of the
        writer's own record)."""
        writer = self.writer_of(data)
        reader_name = reader or writer.name
        try:
            reader_entry = self.catalogue.current(reader_name)
        except KeyError:
            if reader is not None:
                raise AvroDecodeError("unknown_reader", reader) from None
            reader_entry = writer
        if reader_entry.fingerprint == writer.fingerprint:
            fast = _compiled_decoder(writer)
            if fast is not None:
                try:
                    flat = fast(bytes(data), HEADER_LENGTH)
                except FlatDecodeError as exc:
                    raise AvroDecodeError("corrupt", f"{writer.name}: {exc}") from exc
                return Decoded(name=reader_entry.name, datum=flat, writer=writer)
        buf = io.BytesIO(data)
        buf.seek(HEADER_LENGTH)
        try:
            if reader_entry.fingerprint == writer.fingerprint:
                datum = schemaless_reader(buf, writer.parsed, None)
            else:
                datum = schemaless_reader(buf, writer.parsed, reader_entry.parsed)
        except Exception as exc:  # fastavro raises several types for bad bytes
            name = type(exc).__name__
            reason = "incompatible" if "Schema" in name or "Resolution" in name else "corrupt"
            raise AvroDecodeError(reason, f"{writer.name}: {exc}") from exc
        if buf.tell() != len(data):
            raise AvroDecodeError("corrupt", f"{len(data) - buf.tell()} trailing bytes")
        if not isinstance(datum, dict):
            raise AvroDecodeError("corrupt", "top-level datum is not a record")
        return Decoded(name=reader_entry.name, datum=datum, writer=writer)


_COMPILED: dict[bytes, Encoder | None] = {}
"""Compiled encoders by schema fingerprint, shared by every codec of the process (compiling
one costs a millisecond; a codec is built per worker)."""


def _compiled(entry: SchemaEntry) -> Encoder | None:
    if entry.fingerprint not in _COMPILED:
        _COMPILED[entry.fingerprint] = compile_encoder(entry.parsed)
    return _COMPILED[entry.fingerprint]


_DECODERS: dict[bytes, Decoder | None] = {}


def _compiled_decoder(entry: SchemaEntry) -> Decoder | None:
    if entry.fingerprint not in _DECODERS:
        _DECODERS[entry.fingerprint] = compile_decoder(entry.parsed)
    return _DECODERS[entry.fingerprint]


_LEAF_TYPES = frozenset({str, int, bool, float, bytes, type(None)})
"""Types that neither are nor hold a datetime: skipped without a call (the walk runs on every
encoded record)."""


def _naive_datetime(value: Any) -> dt.datetime | None:
    """The first datetime without a time zone anywhere in ``value``, or None."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is None else None
    if isinstance(value, Mapping):
        value = value.values()
    elif not isinstance(value, list | tuple):
        return None
    for item in value:
        if type(item) in _LEAF_TYPES:
            continue
        naive = _naive_datetime(item)
        if naive is not None:
            return naive
    return None
