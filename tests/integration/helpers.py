"""Small helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import avro.schema

from agg_config.paths import schemas_dir
from agg_kafka.admin import ensure_topics
from agg_kafka.topics import TopicSpec


def unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


def create_topic(bootstrap: str, name: str, partitions: int = 3) -> TopicSpec:
    spec = TopicSpec(name, partitions, 1, {"min.insync.replicas": "1"})
    report = asyncio.run(ensure_topics(bootstrap, [spec]))
    assert report.created == [name], report.lines()
    return spec


def _without_logical_types(node: object) -> object:
    """The schema as the Parsing Canonical Form sees it: the spec keeps only a whitelist of
    attributes and writes a primitive as its bare name, so ``{"type": "long",
    "logicalType": "timestamp-millis"}`` becomes ``"long"``. The ``avro`` package (1.12)
    leaves ``{"type":"long"}`` in its canonical form, which gives fingerprints that differ
    from the Java reference implementation's; stripping the annotation first makes its own
    CRC-64-AVRO agree with the specification."""
    if isinstance(node, dict):
        if "logicalType" in node and isinstance(node.get("type"), str):
            return node["type"]
        return {k: _without_logical_types(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


def apache_schemas() -> dict[bytes, avro.schema.Schema]:
    """Writer schemas by fingerprint, computed by the ``avro`` package from the .avsc files."""
    out = {}
    for path in Path(schemas_dir()).glob("*.avsc"):
        raw = json.loads(path.read_text())
        plain = avro.schema.parse(json.dumps(_without_logical_types(raw)))
        out[plain.fingerprint("CRC-64-AVRO")] = avro.schema.parse(path.read_text())
    return out
