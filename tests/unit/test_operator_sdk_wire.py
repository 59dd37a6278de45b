"""The operator SDK's wire codec (:mod:`agg_operator_sdk.wire`) against the aggregator's own
(:class:`agg_avro.AvroCodec`): the same bytes both ways, the same schemas, clear refusals."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agg_avro import AvroCodec, default_catalogue
from agg_config.paths import schemas_dir
from agg_operator_sdk import (
    CommandKind,
    DecodeError,
    EncodeError,
    ReplyStatus,
    WalletCommand,
    WalletReply,
    decode_command,
    decode_reply,
    encode_command,
    encode_reply,
    millis,
)
from agg_operator_sdk.wire import COMMAND_RECORD, REPLY_RECORD, fingerprint, schemas

CODEC = AvroCodec()
CATALOGUE = default_catalogue()
SDK_SCHEMAS = Path(__file__).resolve().parents[2] / "sdk" / "python" / "agg_operator_sdk" / (
    "schemas")  # fmt: skip
SAMPLES = Path(__file__).resolve().parents[1] / "compat" / "samples"
LONG = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TEXT = st.text(max_size=40)
INSTANT = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
).map(millis)


# --- the schemas are the aggregator's -------------------------------------------------------------


@pytest.mark.parametrize("name", [COMMAND_RECORD, REPLY_RECORD])
def test_the_shipped_schemas_are_the_aggregators(name: str) -> None:
    """A schema change in ``schemas/`` must be copied into the SDK (and frozen versions too):
    an operator decodes with these files alone."""
    shipped = _schema_files(SDK_SCHEMAS, name)
    assert shipped == _schema_files(schemas_dir(), name)
    for relative in shipped:
        assert json.loads((SDK_SCHEMAS / relative).read_text()) == json.loads(
            (schemas_dir() / relative).read_text()
        ), relative
    assert schemas().current[name].fingerprint == CATALOGUE.current(name).fingerprint
    readable = {fp for fp, s in schemas().by_fingerprint.items() if s.name == name}
    assert readable == {e.fingerprint for e in CATALOGUE.versions(name)} | {
        CATALOGUE.current(name).fingerprint
    }


def _schema_files(root: Path, name: str) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.avsc") if name in str(p))


def test_the_fingerprint_is_the_aggregators() -> None:
    for entry in CATALOGUE.all_entries():
        assert fingerprint(entry.raw) == entry.fingerprint, entry.name


@pytest.mark.parametrize("name", [COMMAND_RECORD, REPLY_RECORD])
def test_every_stored_sample_decodes(name: str) -> None:
    """The bytes each frozen version wrote (tests/compat/samples) decode with the SDK."""
    decode = decode_command if name == COMMAND_RECORD else decode_reply
    samples = sorted((SAMPLES / name).glob("v*.bin"))
    assert samples
    for path in samples:
        decoded = decode(path.read_bytes())
        expected = CODEC.decode(path.read_bytes(), reader=name).datum
        assert _datum(decoded) == expected


# --- round trips with the aggregator's codec ------------------------------------------------------


def _datum(value: WalletCommand | WalletReply) -> dict[str, Any]:
    datum = asdict(value)
    for field in ("kind", "status"):
        if field in datum:
            datum[field] = datum[field].value
    return datum


commands = st.builds(
    WalletCommand,
    command_id=TEXT,
    correlation_id=TEXT,
    operator_id=TEXT,
    player_id=TEXT,
    kind=st.sampled_from(CommandKind),
    amount=LONG,
    currency=TEXT,
    provider_id=TEXT,
    transaction_id=st.none() | TEXT,
    round_id=st.none() | TEXT,
    game_id=st.none() | TEXT,
    reference_command_id=st.none() | TEXT,
    issued_at=INSTANT,
)

replies = st.builds(
    WalletReply,
    command_id=TEXT,
    operator_id=TEXT,
    player_id=TEXT,
    status=st.sampled_from(ReplyStatus),
    balance=st.none() | LONG,
    currency=TEXT,
    replied_at=INSTANT,
    correlation_id=st.none() | TEXT,
)


@given(commands)
def test_a_command_the_aggregator_encodes_decodes_to_the_same_fields(c: WalletCommand) -> None:
    data = CODEC.encode(COMMAND_RECORD, _datum(c))
    decoded = decode_command(data)
    assert decoded == c
    assert type(decoded.amount) is int
    assert encode_command(decoded) == data


@given(replies)
def test_a_reply_the_sdk_encodes_the_aggregator_decodes(r: WalletReply) -> None:
    data = encode_reply(r)
    decoded = CODEC.decode(data, reader=REPLY_RECORD)
    assert decoded.writer.name == REPLY_RECORD
    assert decoded.datum == _datum(r)
    assert CODEC.encode(REPLY_RECORD, decoded.datum) == data
    assert decode_reply(data) == r


def test_a_reply_keeps_milliseconds_so_a_stored_reply_is_resent_byte_for_byte() -> None:
    at = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))
    reply = WalletReply("c", "op", "p", ReplyStatus.OK, 5, "EUR", at, None)
    stored = replace(reply, replied_at=millis(at))
    assert stored.replied_at == datetime(2030, 5, 6, 5, 8, 9, 123000, tzinfo=UTC)
    assert encode_reply(reply) == encode_reply(stored)
    assert decode_reply(encode_reply(reply)) == stored


# --- refusals -------------------------------------------------------------------------------------

VALID_REPLY = WalletReply("c-1", "op", "p", ReplyStatus.OK, 100, "EUR",
                          datetime(2030, 1, 1, tzinfo=UTC), "corr")  # fmt: skip
A_COMMAND = CODEC.encode(COMMAND_RECORD, {
    "command_id": "c-1", "correlation_id": "corr", "operator_id": "op", "player_id": "p",
    "kind": "DEBIT", "amount": 100, "currency": "EUR", "provider_id": "prov",
    "transaction_id": None, "round_id": None, "game_id": None, "reference_command_id": None,
    "issued_at": datetime(2030, 1, 1, tzinfo=UTC),
})  # fmt: skip


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not_single_object"),
        (b"plain text that is long enough", "not_single_object"),
        (b"\xc3\x01" + b"\x00" * 8 + b"body", "unknown_fingerprint"),
        (encode_reply(VALID_REPLY), "wrong_record"),
        (A_COMMAND[:-3], "corrupt"),
        (A_COMMAND + b"\x00", "corrupt"),
        (A_COMMAND[:10] + b"\xff" * 12, "corrupt"),
    ],
    ids=[
        "empty",
        "no-marker",
        "unknown-fingerprint",
        "a-reply",
        "truncated",
        "trailing",
        "garbage-body",
    ],
)
def test_bytes_that_are_not_a_command_are_refused_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as refused:
        decode_command(data)
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    "changes",
    [
        {"balance": 100.0},  # a float: never rounded, never truncated
        {"balance": True},
        {"balance": 2**63},
        {"balance": -(2**63) - 1},
        {"status": "OK"},  # a str, not the enum
        {"replied_at": datetime(2030, 1, 1)},  # naive: no defined instant
        {"currency": None},
        {"command_id": 7},
    ],
    ids=repr,
)
def test_a_reply_that_does_not_fit_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(EncodeError):
        encode_reply(replace(VALID_REPLY, **changes))


def test_the_kafka_key_is_operator_and_player() -> None:
    assert decode_command(A_COMMAND).key == b"op:p"
    assert VALID_REPLY.key == b"op:p"
