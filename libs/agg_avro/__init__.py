"""Avro for the aggregator's topics: the schema catalogue and the single-object codec."""

from agg_avro.catalogue import SchemaCatalogue, SchemaEntry, default_catalogue
from agg_avro.codec import AvroCodec, AvroDecodeError, AvroEncodeError, AvroRecord

__all__ = [
    "AvroCodec",
    "AvroDecodeError",
    "AvroEncodeError",
    "AvroRecord",
    "SchemaCatalogue",
    "SchemaEntry",
    "default_catalogue",
]
