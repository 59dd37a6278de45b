"""CRC-64-AVRO (the Rabin fingerprint of the Avro specification) of a schema's Parsing
Canonical Form. Written out here rather than taken from a library so that the bytes on the
wire are defined by this file and the spec alone; tests cross-check it against fastavro and
the Apache ``avro`` package."""

from __future__ import annotations

from typing import Any

from fastavro.schema import to_parsing_canonical_form

_EMPTY = 0xC15D213AA4D7A795


def _table() -> tuple[int, ...]:
    rows = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        rows.append(fp)
    return tuple(rows)


_TABLE = _table()


def crc64_avro(data: bytes) -> int:
    fp = _EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp


def canonical_form(schema: Any) -> str:
    return str(to_parsing_canonical_form(schema))


def fingerprint(schema: Any) -> bytes:
    """The 8 fingerprint bytes as single-object encoding writes them (little-endian)."""
    return crc64_avro(canonical_form(schema).encode("utf-8")).to_bytes(8, "little")
