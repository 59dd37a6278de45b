"""Interop: the bytes our codec puts on a real topic are read by an independent Kafka client
(kcat, librdkafka) and decoded by an independent Avro implementation (the Apache ``avro``
package) that knows nothing but the ``.avsc`` files; and the other way round.

The Apache decoder here works from the Avro specification alone: check the C3 01 marker,
look the fingerprint up among the ``.avsc`` files using the package's own CRC-64-AVRO, then
read the body with the package's DatumReader.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import avro.io
import avro.schema
import pytest

from agg_avro import AvroCodec
from agg_config.paths import repo_root, schemas_dir
from agg_config.settings import Settings
from agg_devstack.maven import resolve
from agg_kafka.clients import make_consumer, make_producer, player_key
from tests.integration.helpers import apache_schemas, create_topic, unique

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
JAVA = shutil.which("java") or "java"
pytestmark = pytest.mark.skipif(
    KCAT is None, reason="kcat is not installed (make deps installs it with apt-get)"
)


def _apache_decode(data: bytes, schemas: dict[bytes, avro.schema.Schema]) -> tuple[str, dict]:
    assert data[:2] == b"\xc3\x01", "single-object marker"
    schema = schemas[data[2:10]]
    reader = avro.io.DatumReader(schema)
    buf = io.BytesIO(data[10:])
    datum = reader.read(avro.io.BinaryDecoder(buf))
    assert buf.tell() == len(data) - 10, "the body is consumed exactly"
    return schema.fullname, datum


def _apache_encode(fp: bytes, schema: avro.schema.Schema, datum: dict) -> bytes:
    buf = io.BytesIO()
    avro.io.DatumWriter(schema).write(datum, avro.io.BinaryEncoder(buf))
    return b"\xc3\x01" + fp + buf.getvalue()


def _kcat_consume(bootstrap: str, topic: str, count: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of ``count`` messages, framed by kcat as '<key len> <value len>\\n' + bytes."""
    proc = subprocess.run(
        [KCAT, "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-c", str(count),
         "-e", "-q", "-f", "%K %S\n%k%s"],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    out, pos, messages = proc.stdout, 0, []
    while pos < len(out):
        newline = out.index(b"\n", pos)
        key_len, value_len = (int(x) for x in out[pos:newline].split())
        start = newline + 1
        key = out[start : start + key_len]
        value = out[start + key_len : start + key_len + value_len]
        messages.append((key, value))
        pos = start + key_len + value_len
    return messages


EVENTS = [
    (
        "casino.agg.events.BetAccepted",
        {
            "event_id": "ev-1",
            "correlation_id": "corr-1",
            "operator_id": "op-alpha",
            "player_id": "p-1",
            "provider_id": "prov-nova",
            "occurred_at": datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC),
            "transaction_id": "tx-1",
            "round_id": "r-1",
            "game_id": "nova-starfall",
            "amount": 9_223_372_036_854_775_807,
            "currency": "EUR",
            "command_id": "cmd-1",
            "balance": None,
            "round_closed": True,
            "mode": "demo",
            "wallet": "seamless",
        },
    ),
    (
        "casino.agg.WalletReply",
        {
            "command_id": "cmd-1",
            "operator_id": "op-alpha",
            "player_id": "p-ü-1",
            "status": "INSUFFICIENT_FUNDS",
            "balance": -5,
            "currency": "JPY",
            "replied_at": datetime(2026, 3, 4, 5, 6, 8, tzinfo=UTC),
            "correlation_id": "corr-1",
        },
    ),
]


def test_our_bytes_read_by_kcat_and_decoded_by_apache_avro(settings: Settings) -> None:
    topic = unique("it.interop")
    create_topic(settings.kafka_bootstrap, topic, partitions=1)
    codec = AvroCodec()

    async def produce() -> None:
        producer = make_producer(settings, client_id="interop")
        await producer.start()
        try:
            for name, datum in EVENTS:
                key = player_key(str(datum["operator_id"]), str(datum["player_id"]))
                await producer.send_and_wait(topic, codec.encode(name, datum), key=key)
        finally:
            await producer.stop()

    asyncio.run(produce())
    messages = _kcat_consume(settings.kafka_bootstrap, topic, len(EVENTS))
    schemas = apache_schemas()
    assert len(messages) == len(EVENTS)
    for (key, value), (name, datum) in zip(messages, EVENTS, strict=True):
        assert key == player_key(str(datum["operator_id"]), str(datum["player_id"]))
        decoded_name, decoded = _apache_decode(value, schemas)
        assert decoded_name == name
        assert decoded == datum


def _java_decode(paths: list[Path]) -> list[tuple[str, dict]]:
    """Decode message files with the Apache Avro Java library (the reference implementation)."""
    interop = repo_root() / "tests" / "interop_java"
    jars = resolve(interop / "pom.xml", "avro-java-1.12.1", must_have_prefix="avro-1.")
    proc = subprocess.run(
        [JAVA, "-cp", f"{jars}/*", str(interop / "AvroDecode.java"), str(schemas_dir()),
         *map(str, paths)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    out = []
    for line in proc.stdout.splitlines():
        name, _, record = line.partition("\t")
        out.append((name, json.loads(record)))
    return out


def _as_java_json(datum: dict) -> dict:
    """How GenericRecord.toString() shows a datum read without logical-type conversions."""
    return {
        k: int(v.timestamp() * 1000) if isinstance(v, datetime) else v for k, v in datum.items()
    }


@pytest.mark.skipif(shutil.which("java") is None or shutil.which("mvn") is None,
                    reason="needs java and mvn for the Apache Avro Java library")  # fmt: skip
def test_our_bytes_from_the_topic_decode_with_apache_avro_java(
    settings: Settings, tmp_path: Path
) -> None:
    topic = unique("it.interop-java")
    create_topic(settings.kafka_bootstrap, topic, partitions=1)
    codec = AvroCodec()

    async def produce() -> None:
        producer = make_producer(settings, client_id="interop-java")
        await producer.start()
        try:
            for name, datum in EVENTS:
                await producer.send_and_wait(topic, codec.encode(name, datum), key=b"k")
        finally:
            await producer.stop()

    asyncio.run(produce())
    paths = []
    for i, (_key, value) in enumerate(_kcat_consume(settings.kafka_bootstrap, topic, len(EVENTS))):
        path = tmp_path / f"m{i}.bin"
        path.write_bytes(value)
        paths.append(path)
    decoded = _java_decode(paths)
    assert [name for name, _ in decoded] == [name for name, _ in EVENTS]
    for (_, got), (_, datum) in zip(decoded, EVENTS, strict=True):
        assert got == _as_java_json(datum)


def test_apache_avro_bytes_produced_by_kcat_are_read_by_us(
    settings: Settings, tmp_path: Path
) -> None:
    topic = unique("it.interop-in")
    create_topic(settings.kafka_bootstrap, topic, partitions=1)
    schemas = {s.fullname: (fp, s) for fp, s in apache_schemas().items()}
    files = []
    for i, (name, datum) in enumerate(EVENTS):
        path = tmp_path / f"m{i}.bin"
        path.write_bytes(_apache_encode(*schemas[name], datum))
        files.append(str(path))
    # one file = one message
    subprocess.run(
        [KCAT, "-P", "-b", settings.kafka_bootstrap, "-t", topic, "-k", "op-alpha:p-1", *files],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip

    async def consume() -> list[bytes]:
        consumer = make_consumer(settings, topic, group_id=None, client_id="interop-in")
        await consumer.start()
        try:
            got: list[bytes] = []
            while len(got) < len(EVENTS):
                batch = await asyncio.wait_for(consumer.getmany(timeout_ms=500), 30)
                got += [m.value for ms in batch.values() for m in ms]
            return got
        finally:
            await consumer.stop()

    codec = AvroCodec()
    for value, (name, datum) in zip(asyncio.run(consume()), EVENTS, strict=True):
        decoded = codec.decode(value)
        assert decoded.name == name
        assert decoded.datum == datum
