"""A compiled Avro binary encoder for flat records: every schema on the money path is a record
of strings, longs, ints, booleans, enums, ``timestamp-millis`` and unions of null with one of
those, or with a record of such fields (one level: ``ProviderRequest.refusal``), and arrays of
strings (a campaign's games).

For such a schema, :func:`compile_encoder` builds one Python function (generated source) that
checks every field's type and encodes the body in a single pass; fastavro's writer followed by
its validator walked each datum twice through generic code, and was most of the cost of
publishing an event. The encoder only ever answers for a datum that fits: on anything else
it returns None, and the caller falls back to the generic path, which refuses the datum with
its own explanation. Its bytes are fastavro's (a property test holds them equal).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Encoder = Callable[[Mapping[str, Any]], bytes | None]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_MISSING = object()


def _varint(n: int, out: bytearray) -> None:
    """Zig-zag then base-128, as Avro writes an int or a long."""
    n = (n << 1) ^ (n >> 63)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _millis(value: dt.datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


class _Unsupported(Exception):
    pass


def _encode_strings(value: Any, out: bytearray) -> bool:
    """An array of strings as fastavro writes it (one block, then the empty block), or False
    for anything else (what fastavro's validator takes: any sequence but a string)."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        return False
    if any(not isinstance(item, str) for item in value):
        return False
    if value:
        _varint(len(value), out)
        for item in value:
            b = item.encode()
            _varint(len(b), out)
            out += b
    out.append(0)
    return True


def _leaf(schema: Any, nested: bool = False) -> tuple[str, Any]:
    """(kind, extra) for a non-union field type: kind in string, long, int, boolean, enum,
    ts_millis, and record (its fields as ``extra``) unless ``nested``."""
    if isinstance(schema, str):
        if schema in ("string", "long", "int", "boolean"):
            return schema, None
        raise _Unsupported(schema)
    if isinstance(schema, dict):
        kind, logical = schema.get("type"), schema.get("logicalType")
        if kind == "long" and logical == "timestamp-millis":
            return "ts_millis", None
        if logical is None and kind in ("string", "long", "int", "boolean"):
            return kind, None
        if kind == "enum" and logical is None:
            return "enum", {s: i for i, s in enumerate(schema["symbols"])}
        if kind == "array" and logical is None and schema.get("items") == "string":
            return "strings", None
        if kind == "record" and logical is None and not nested:
            fields = list(schema["fields"])
            for f in fields:  # flat fields only: a record in a record is not compiled
                _field_type(f["type"], nested=True)
            return "record", fields
    raise _Unsupported(repr(schema)[:80])


def _field_type(ftype: Any, nested: bool = False) -> tuple[int | None, str, Any]:
    """(position of "null" in a nullable union or None, kind, extra) of a field's type."""
    if not isinstance(ftype, list):
        return (None, *_leaf(ftype, nested))
    branches = [b for b in ftype if b != "null"]
    if len(ftype) != 2 or len(branches) != 1:
        raise _Unsupported(repr(ftype))
    return (ftype.index("null"), *_leaf(branches[0], nested))


def _compile(lines: list[str], consts: dict[str, Any], name: str) -> Any:
    namespace: dict[str, Any] = dict(consts)
    exec("\n".join(lines), namespace)  # source built from the schema only
    return namespace[name]


def _leaf_code(kind: str, v: str, lines: list[str], indent: str) -> None:
    """Lines that check ``v`` and append its encoding to ``out`` (or return None)."""
    if kind == "string":
        lines += [
            f"{indent}if not isinstance({v}, str): return None",
            f"{indent}b = {v}.encode()",
            f"{indent}n = len(b)",  # a length under 64 is one zig-zag byte: no call
            f"{indent}if n < 64: out.append(n << 1)",
            f"{indent}else: varint(n, out)",
            f"{indent}out += b",
        ]
    elif kind in ("long", "int"):
        lo, hi = ("LONG_MIN", "LONG_MAX") if kind == "long" else ("INT_MIN", "INT_MAX")
        lines += [
            f"{indent}if not isinstance({v}, int) or isinstance({v}, bool) "
            f"or not {lo} <= {v} <= {hi}: return None",
            f"{indent}varint({v}, out)",
        ]
    elif kind == "boolean":
        lines += [
            f"{indent}if {v} is True: out.append(1)",
            f"{indent}elif {v} is False: out.append(0)",
            f"{indent}else: return None",
        ]
    elif kind == "ts_millis":
        lines += [
            f"{indent}if isinstance({v}, datetime):",
            f"{indent}    if {v}.tzinfo is None: return None",
            f"{indent}    {v} = millis({v})",
            f"{indent}elif not isinstance({v}, int) or isinstance({v}, bool): return None",
            f"{indent}if not LONG_MIN <= {v} <= LONG_MAX: return None",
            f"{indent}varint({v}, out)",
        ]
    elif kind == "strings":
        lines.append(f"{indent}if not encode_strings({v}, out): return None")
    else:  # pragma: no cover - _leaf only returns the kinds above
        raise _Unsupported(kind)


def compile_encoder(schema: Mapping[str, Any]) -> Encoder | None:
    """The encoder of a parsed record schema (its body, without any header), or None when the
    schema is not a flat record of the supported types."""
    if not isinstance(schema, Mapping) or schema.get("type") != "record":
        return None
    consts: dict[str, Any] = {
        "varint": _varint, "millis": _millis, "datetime": dt.datetime, "MISSING": _MISSING,
        "encode_strings": _encode_strings,
        "LONG_MIN": _LONG_MIN, "LONG_MAX": _LONG_MAX, "INT_MIN": _INT_MIN, "INT_MAX": _INT_MAX,
    }  # fmt: skip
    names = [f["name"] for f in schema["fields"]]
    consts["NAMES"] = frozenset(names)
    lines = [
        "def encode(d):",
        "    if not NAMES.issuperset(d): return None",
        "    out = bytearray()",
        "    get = d.get",
    ]
    try:
        for i, f in enumerate(schema["fields"]):
            _field_code(f, f"v{i}", str(i), lines, "    ", consts, "get")
    except (_Unsupported, KeyError, TypeError):
        return None
    lines.append("    return bytes(out)")
    encoder: Encoder = _compile(lines, consts, "encode")
    return encoder


def _field_code(f: Mapping[str, Any], v: str, key: str, lines: list[str], indent: str,
                consts: dict[str, Any], get: str) -> None:  # fmt: skip
    """Lines that read field ``f`` into ``v`` with ``get`` and append its encoding."""
    if "default" in f:
        consts[f"D{key}"] = f["default"]
        lines.append(f"{indent}{v} = {get}({f['name']!r}, D{key})")
    else:
        lines.append(f"{indent}{v} = {get}({f['name']!r}, MISSING)")
        lines.append(f"{indent}if {v} is MISSING: return None")
    null_at, kind, extra = _field_type(f["type"])
    inner = indent
    if null_at is not None:
        lines.append(f"{indent}if {v} is None: out.append({2 * null_at})")
        lines.append(f"{indent}else:")
        lines.append(f"{indent}    out.append({2 * (1 - null_at)})")
        inner = indent + "    "
    if kind == "record":
        consts[f"N{key}"] = frozenset(sub["name"] for sub in extra)
        lines.append(f"{inner}if type({v}) is not dict or not N{key}.issuperset({v}): "
                     "return None")  # fmt: skip
        for j, sub in enumerate(extra):
            _field_code(sub, f"{v}_{j}", f"{key}_{j}", lines, inner, consts, f"{v}.get")
    else:
        _leaf_code_or_enum(kind, extra, v, key, lines, inner, consts)


def _leaf_code_or_enum(
    kind: str, extra: Any, v: str, i: str, lines: list[str], indent: str, consts: dict[str, Any]
) -> None:
    if kind == "enum":
        consts[f"E{i}"] = extra
        lines += [
            f"{indent}if not isinstance({v}, str): return None",
            f"{indent}ix = E{i}.get({v})",
            f"{indent}if ix is None: return None",
            f"{indent}if ix < 64: out.append(ix << 1)",
            f"{indent}else: varint(ix, out)",
        ]
    else:
        _leaf_code(kind, v, lines, indent)


Decoder = Callable[[bytes, int], dict[str, Any]]
"""(data, position of the body) -> datum; raises :class:`FlatDecodeError` on bad bytes."""


class FlatDecodeError(ValueError):
    """The bytes do not hold a datum of the schema (truncated, a bad index, trailing bytes,
    invalid UTF-8)."""


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    pos += 1
    n = b & 0x7F
    shift = 7
    while b & 0x80:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if shift > 70:
            raise FlatDecodeError("varint longer than 10 bytes")
    if n >> 64:  # a tenth byte with more than one bit: no long was written so
        raise FlatDecodeError("varint beyond 64 bits")
    return (n >> 1) ^ -(n & 1), pos


def _read_strings(data: bytes, pos: int) -> tuple[list[str], int]:
    """An array of strings: blocks of a count (negative: followed by the block's size in
    bytes) and that many strings, up to the empty block."""
    items: list[str] = []
    while True:
        count, pos = _read_long(data, pos)
        if count == 0:
            return items, pos
        if count < 0:
            count = -count
            _, pos = _read_long(data, pos)
        if count > len(data) - pos:  # every string takes a byte at least
            raise FlatDecodeError("array past the end")
        for _ in range(count):
            n, pos = _read_long(data, pos)
            end = pos + n
            if n < 0 or end > len(data):
                raise FlatDecodeError("string past the end")
            items.append(data[pos:end].decode())
            pos = end


def _from_millis(ms: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=ms * 1000)


def _leaf_decode(kind: str, v: str, lines: list[str], indent: str, i: str) -> None:
    if kind == "string":
        lines += [
            f"{indent}n = data[pos]",  # a length under 64 is one byte: no call
            f"{indent}if n < 0x80: n = (n >> 1) ^ -(n & 1); pos += 1",
            f"{indent}else: n, pos = read_long(data, pos)",
            f"{indent}end = pos + n",
            f"{indent}if n < 0 or end > size: raise Bad('string past the end')",
            f"{indent}{v} = data[pos:end].decode()",
            f"{indent}pos = end",
        ]
    elif kind in ("long", "int"):
        lines += [
            f"{indent}{v} = data[pos]",  # a value in -64..63 is one byte: no call
            f"{indent}if {v} < 0x80: {v} = ({v} >> 1) ^ -({v} & 1); pos += 1",
            f"{indent}else: {v}, pos = read_long(data, pos)",
        ]
    elif kind == "boolean":
        lines += [
            f"{indent}x = data[pos]; pos += 1",
            f"{indent}if x > 1: raise Bad('boolean byte ' + str(x))",
            f"{indent}{v} = x == 1",
        ]
    elif kind == "ts_millis":
        lines += [
            f"{indent}{v}, pos = read_long(data, pos)",
            f"{indent}{v} = from_millis({v})",
        ]
    elif kind == "enum":
        lines += [
            f"{indent}x = data[pos]",
            f"{indent}if x < 0x80: x = (x >> 1) ^ -(x & 1); pos += 1",
            f"{indent}else: x, pos = read_long(data, pos)",
            f"{indent}if not 0 <= x < len(S{i}): raise Bad('enum index ' + str(x))",
            f"{indent}{v} = S{i}[x]",
        ]
    elif kind == "strings":
        lines.append(f"{indent}{v}, pos = read_strings(data, pos)")
    else:  # pragma: no cover
        raise _Unsupported(kind)


def compile_decoder(schema: Mapping[str, Any]) -> Decoder | None:
    """The decoder of a parsed flat record schema read as itself (writer = reader), giving
    what fastavro gives (timestamps as aware UTC datetimes, enums as their symbols), or None
    when the schema is not a flat record of the supported types."""
    if not isinstance(schema, Mapping) or schema.get("type") != "record":
        return None
    consts: dict[str, Any] = {
        "read_long": _read_long, "from_millis": _from_millis, "Bad": FlatDecodeError,
        "read_strings": _read_strings,
    }  # fmt: skip
    lines = ["def decode(data, pos):", "  size = len(data)", "  try:"]
    names: list[str] = []
    try:
        for i, f in enumerate(schema["fields"]):
            names.append(f["name"])
            _field_decode(f, f"v{i}", str(i), lines, "    ", consts)
    except (_Unsupported, KeyError, TypeError):
        return None
    lines += [
        "  except IndexError: raise Bad('truncated') from None",
        "  except (UnicodeDecodeError, OverflowError) as exc: raise Bad(str(exc)) from None",
        "  if pos != size: raise Bad(str(size - pos) + ' trailing bytes')",
        "  return {" + ", ".join(f"{n!r}: v{i}" for i, n in enumerate(names)) + "}",
    ]
    decoder: Decoder = _compile(lines, consts, "decode")
    return decoder


def _field_decode(f: Mapping[str, Any], v: str, key: str, lines: list[str], indent: str,
                  consts: dict[str, Any]) -> None:  # fmt: skip
    """Lines that read field ``f`` from ``data`` at ``pos`` into ``v``."""
    null_at, kind, extra = _field_type(f["type"])
    if null_at is None:
        _value_decode(kind, extra, v, key, lines, indent, consts)
        return
    lines += [
        f"{indent}x = data[pos]; pos += 1",  # index 0 or 1: one zig-zag byte, 0 or 2
        f"{indent}if x == {2 * null_at}: {v} = None",
        f"{indent}elif x == {2 * (1 - null_at)}:",
    ]
    _value_decode(kind, extra, v, key, lines, indent + "  ", consts)
    lines.append(f"{indent}else: raise Bad('union index byte ' + str(x))")


def _value_decode(kind: str, extra: Any, v: str, key: str, lines: list[str], indent: str,
                  consts: dict[str, Any]) -> None:  # fmt: skip
    if kind == "enum":
        consts[f"S{key}"] = tuple(extra)
    if kind != "record":
        _leaf_decode(kind, v, lines, indent, key)
        return
    for j, sub in enumerate(extra):
        _field_decode(sub, f"{v}_{j}", f"{key}_{j}", lines, indent, consts)
    body = ", ".join(f"{sub['name']!r}: {v}_{j}" for j, sub in enumerate(extra))
    lines.append(f"{indent}{v} = {{{body}}}")
