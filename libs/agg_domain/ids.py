"""Deterministic ids: every output's id is a hash of its cause, so re-processing an input
after a crash re-emits the same ids and every consumer can dedupe by them."""

from __future__ import annotations

import hashlib

_SEPARATOR = "\x1f"  # unit separator: cannot occur in validated ids


def derive_id(kind: str, *parts: str | int) -> str:
    """``<kind>-<32 hex>``: sha256 over the kind and the parts, unambiguously separated."""
    text = _SEPARATOR.join([kind, *(str(p) for p in parts)])
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:32]}"
