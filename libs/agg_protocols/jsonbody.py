"""Strict JSON bodies: one object, UTF-8, no duplicate keys, no NaN or Infinity.

Shared by every wire protocol (provider protocols of the ingress, operator-wallet protocols
of the bridge): two parsers must never read two different requests out of one body.
"""

from __future__ import annotations

import json
from typing import Any


class _Malformed(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # two values for one field: different parsers would read different requests
            raise _Malformed(f"duplicate field {key!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise _Malformed(f"{name} is not JSON")


def parse_object(body: bytes) -> dict[str, Any] | str:
    """The JSON object of ``body``, or the reason it is not one."""
    try:
        text = body.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except UnicodeDecodeError:
        return "body is not UTF-8"
    except (_Malformed, ValueError, RecursionError) as exc:
        return f"body is not valid JSON: {exc}"[:200]
    if not isinstance(value, dict):
        return "body is not a JSON object"
    return value
