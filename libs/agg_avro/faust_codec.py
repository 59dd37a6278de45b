"""A faust codec on top of :class:`AvroCodec`, so faust topics and agents read and write the
same single-object bytes as every other client.

Values are :class:`AvroRecord` (schema name + datum). A codec made with ``schema=NAME`` also
accepts a plain mapping and encodes it as NAME, and decodes with NAME as the reader schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.serializers.codecs import Codec, register

from agg_avro.codec import AvroCodec, AvroRecord

CODEC_NAME = "agg-avro"


class AvroFaustCodec(Codec):
    def __init__(self, codec: AvroCodec | None = None, schema: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self._codec = codec or AvroCodec()
        self._schema = schema

    def _dumps(self, obj: Any) -> bytes:
        if isinstance(obj, AvroRecord):
            return self._codec.encode(obj.name, obj.datum)
        if self._schema is not None and isinstance(obj, Mapping):
            return self._codec.encode(self._schema, obj)
        raise TypeError(f"{CODEC_NAME} encodes AvroRecord values, got {type(obj).__name__}")

    def _loads(self, s: bytes) -> AvroRecord:
        decoded = self._codec.decode(s, reader=self._schema)
        return AvroRecord(decoded.name, decoded.datum)


def register_codecs() -> None:
    """Register ``agg-avro`` (any record, resolved by fingerprint) with faust."""
    register(CODEC_NAME, AvroFaustCodec())
