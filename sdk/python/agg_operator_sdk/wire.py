"""The wire format of the wallet topics: ``casino.agg.WalletCommand`` in,
``casino.agg.WalletReply`` out, in Avro single-object encoding:

    C3 01 | 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema | binary body

The schemas ship inside this package (``schemas/``: the current version of each record and
every frozen one under ``schemas/history/<name>/v<N>.avsc``), so an operator needs neither the
aggregator's code nor a schema registry. A message is decoded with the writer schema its
fingerprint names, resolved against the current one, so commands written by any released
version of the aggregator stay readable.

Money stays integer minor units from end to end: ``amount`` and ``balance`` are ``int``, and
an encoder refuses a value that is not an ``int`` in the signed 64-bit range (never rounds,
never truncates a float the way a plain Avro writer would).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from importlib import resources
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import to_parsing_canonical_form

COMMAND_RECORD = "casino.agg.WalletCommand"
REPLY_RECORD = "casino.agg.WalletReply"
MARKER = b"\xc3\x01"
HEADER_LENGTH = len(MARKER) + 8
LONG_MAX = 2**63 - 1
LONG_MIN = -(2**63)
CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}$")


class CommandKind(StrEnum):
    """``casino.agg.WalletCommandKind``. ``UNKNOWN`` is what a kind added to the schema after
    this package was built reads as; the rules answer it ERROR."""

    DEBIT = "DEBIT"
    CREDIT = "CREDIT"
    CANCEL = "CANCEL"
    BALANCE = "BALANCE"
    UNKNOWN = "UNKNOWN"


class ReplyStatus(StrEnum):
    """``casino.agg.WalletReplyStatus``, every symbol the saga understands."""

    OK = "OK"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    PLAYER_BLOCKED = "PLAYER_BLOCKED"
    LIMIT_REACHED = "LIMIT_REACHED"
    UNKNOWN_PLAYER = "UNKNOWN_PLAYER"
    ERROR = "ERROR"


class DecodeError(ValueError):
    """Bytes that are not a wallet command (or reply) this package can read. ``reason`` is
    one of ``not_single_object``, ``unknown_fingerprint``, ``wrong_record``, ``corrupt``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class EncodeError(ValueError):
    """A reply (or command) that does not fit its schema: a bug in the code that built it."""


@dataclass(frozen=True)
class WalletCommand:
    """A decoded ``casino.agg.WalletCommand``. ``amount`` is in integer minor units of
    ``currency``; ``issued_at`` is time-zone aware (UTC, millisecond precision)."""

    command_id: str
    correlation_id: str
    operator_id: str
    player_id: str
    kind: CommandKind
    amount: int
    currency: str
    provider_id: str
    transaction_id: str | None
    round_id: str | None
    game_id: str | None
    reference_command_id: str | None
    """For CANCEL: the ``command_id`` of the DEBIT to cancel."""
    issued_at: datetime
    win_kind: str = "REGULAR"
    """For CREDIT: ``REGULAR`` (the round's payout), ``BONUS``, ``JACKPOT`` or ``PROMO``
    (money the game did not pay out of its stakes: book it apart if you do)."""

    @property
    def key(self) -> bytes:
        """The Kafka key of this command and of its reply: ``operator_id:player_id``."""
        return f"{self.operator_id}:{self.player_id}".encode()


@dataclass(frozen=True)
class WalletReply:
    """A ``casino.agg.WalletReply``. ``balance`` is the player's balance in minor units after
    the command, or None where the wallet does not know it (a refused command id)."""

    command_id: str
    operator_id: str
    player_id: str
    status: ReplyStatus
    balance: int | None
    currency: str
    replied_at: datetime
    """Time-zone aware; the wire keeps milliseconds (:func:`millis` truncates to them)."""
    correlation_id: str | None = None

    @property
    def key(self) -> bytes:
        return f"{self.operator_id}:{self.player_id}".encode()


def millis(at: datetime) -> datetime:
    """``at`` truncated to the millisecond, as ``timestamp-millis`` keeps it on the wire: a
    reply stored with this instant is re-sent byte for byte."""
    if at.tzinfo is None:
        raise EncodeError(f"naive datetime {at} has no defined instant")
    return at.astimezone(UTC).replace(microsecond=at.microsecond // 1000 * 1000)


# --- the schemas ----------------------------------------------------------------------------------

_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> tuple[int, ...]:
    rows = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        rows.append(fp)
    return tuple(rows)


_CRC64_TABLE = _crc64_table()


def fingerprint(schema: Mapping[str, Any]) -> bytes:
    """CRC-64-AVRO of the schema's Parsing Canonical Form, little-endian, as single-object
    encoding writes it (Avro specification, "Schema Fingerprints")."""
    fp = _EMPTY
    for byte in str(to_parsing_canonical_form(dict(schema))).encode():
        fp = (fp >> 8) ^ _CRC64_TABLE[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


@dataclass(frozen=True)
class _Schema:
    name: str
    parsed: Any
    fingerprint: bytes


class Schemas:
    """The schemas this package ships: the current version of each record (what it writes
    and reads into) and every version it can read (by fingerprint)."""

    def __init__(self) -> None:
        root = resources.files("agg_operator_sdk") / "schemas"
        self.current: dict[str, _Schema] = {}
        self.by_fingerprint: dict[bytes, _Schema] = {}
        for name in (COMMAND_RECORD, REPLY_RECORD):
            current = self._load(json.loads((root / f"{name}.avsc").read_text()))
            self.current[name] = current
            self.by_fingerprint[current.fingerprint] = current
            history = root / "history" / name
            if history.is_dir():
                for path in history.iterdir():
                    if path.name.endswith(".avsc"):
                        old = self._load(json.loads(path.read_text()))
                        self.by_fingerprint.setdefault(old.fingerprint, old)

    @staticmethod
    def _load(raw: dict[str, Any]) -> _Schema:
        parsed: Any = parse_schema(raw)
        return _Schema(str(parsed["name"]), parsed, fingerprint(raw))


_SCHEMAS: Schemas | None = None


def schemas() -> Schemas:
    global _SCHEMAS
    if _SCHEMAS is None:
        _SCHEMAS = Schemas()
    return _SCHEMAS


# --- decode ---------------------------------------------------------------------------------------


def _decode(data: bytes, record: str) -> dict[str, Any]:
    if len(data) < HEADER_LENGTH or data[:2] != MARKER:
        raise DecodeError("not_single_object", "missing the C3 01 marker")
    known = schemas()
    writer = known.by_fingerprint.get(bytes(data[2:HEADER_LENGTH]))
    if writer is None:
        raise DecodeError(
            "unknown_fingerprint", f"writer schema {data[2:HEADER_LENGTH].hex()} is not known"
        )
    if writer.name != record:
        raise DecodeError("wrong_record", f"{writer.name}, expected {record}")
    reader = known.current[record]
    buf = io.BytesIO(data)
    buf.seek(HEADER_LENGTH)
    try:
        datum = schemaless_reader(buf, writer.parsed, None if reader is writer else reader.parsed)
    except Exception as exc:  # fastavro raises several types for bad bytes
        raise DecodeError("corrupt", f"{record}: {type(exc).__name__}: {exc}") from exc
    if buf.tell() != len(data):
        raise DecodeError("corrupt", f"{len(data) - buf.tell()} trailing bytes")
    if not isinstance(datum, dict):
        raise DecodeError("corrupt", "top-level datum is not a record")
    return datum


def decode_command(data: bytes) -> WalletCommand:
    """The command in ``data`` (a message value of ``agg.wallet.commands.<operator>``), or
    :class:`DecodeError`. Decoding checks the bytes only; whether the command makes sense
    (amount range, currency, key) is :func:`agg_operator_sdk.rules.problem_of`'s question."""
    d = _decode(data, COMMAND_RECORD)
    return WalletCommand(
        command_id=d["command_id"],
        correlation_id=d["correlation_id"],
        operator_id=d["operator_id"],
        player_id=d["player_id"],
        kind=CommandKind(d["kind"]),
        amount=d["amount"],
        currency=d["currency"],
        provider_id=d["provider_id"],
        transaction_id=d["transaction_id"],
        round_id=d["round_id"],
        game_id=d["game_id"],
        reference_command_id=d["reference_command_id"],
        issued_at=d["issued_at"],
        win_kind=d.get("win_kind", "REGULAR"),
    )


def decode_reply(data: bytes) -> WalletReply:
    """The reply in ``data`` (for tests and tools that read the replies topic)."""
    d = _decode(data, REPLY_RECORD)
    return WalletReply(
        command_id=d["command_id"],
        operator_id=d["operator_id"],
        player_id=d["player_id"],
        status=ReplyStatus(d["status"]),
        balance=d["balance"],
        currency=d["currency"],
        replied_at=d["replied_at"],
        correlation_id=d["correlation_id"],
    )


# --- encode ---------------------------------------------------------------------------------------


def _check_long(name: str, value: object) -> None:
    if type(value) is not int:  # bool is an int subclass, and never an amount
        raise EncodeError(f"{name} must be an int of minor units, got {type(value).__name__}")
    if not LONG_MIN <= value <= LONG_MAX:
        raise EncodeError(f"{name} {value} is outside the signed 64-bit range")


def _check_str(name: str, value: object, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise EncodeError(f"{name} must be a str, got {type(value).__name__}")


def _encode(record: str, datum: dict[str, Any]) -> bytes:
    schema = schemas().current[record]
    buf = io.BytesIO()
    buf.write(MARKER)
    buf.write(schema.fingerprint)
    try:
        schemaless_writer(buf, schema.parsed, datum, strict=True)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise EncodeError(f"{record}: {exc}") from exc
    return buf.getvalue()


def encode_reply(reply: WalletReply) -> bytes:
    """``reply`` as the bytes of a message on ``agg.wallet.replies.<operator>``, or
    :class:`EncodeError`. The same reply always encodes to the same bytes."""
    for name in ("command_id", "operator_id", "player_id", "currency"):
        _check_str(name, getattr(reply, name))
    _check_str("correlation_id", reply.correlation_id, optional=True)
    if not isinstance(reply.status, ReplyStatus):
        raise EncodeError(f"status must be a ReplyStatus, got {reply.status!r}")
    if reply.balance is not None:
        _check_long("balance", reply.balance)
    return _encode(REPLY_RECORD, {
        "command_id": reply.command_id,
        "operator_id": reply.operator_id,
        "player_id": reply.player_id,
        "status": reply.status.value,
        "balance": reply.balance,
        "currency": reply.currency,
        "replied_at": millis(reply.replied_at),
        "correlation_id": reply.correlation_id,
    })  # fmt: skip


def encode_command(command: WalletCommand) -> bytes:
    """``command`` as the aggregator writes it (for an operator's own tests and tools)."""
    for name in ("command_id", "correlation_id", "operator_id", "player_id", "currency",
                 "provider_id"):  # fmt: skip
        _check_str(name, getattr(command, name))
    for name in ("transaction_id", "round_id", "game_id", "reference_command_id"):
        _check_str(name, getattr(command, name), optional=True)
    if not isinstance(command.kind, CommandKind):
        raise EncodeError(f"kind must be a CommandKind, got {command.kind!r}")
    _check_long("amount", command.amount)
    return _encode(COMMAND_RECORD, {
        "command_id": command.command_id,
        "correlation_id": command.correlation_id,
        "operator_id": command.operator_id,
        "player_id": command.player_id,
        "kind": command.kind.value,
        "amount": command.amount,
        "currency": command.currency,
        "provider_id": command.provider_id,
        "transaction_id": command.transaction_id,
        "round_id": command.round_id,
        "game_id": command.game_id,
        "reference_command_id": command.reference_command_id,
        "issued_at": millis(command.issued_at),
        "win_kind": command.win_kind,
    })  # fmt: skip
