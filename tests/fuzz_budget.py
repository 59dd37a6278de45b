"""How many inputs a property or fuzz test draws: a shrunk count in ``make test``, the full
one under ``make fuzz`` (``AGG_FUZZ=1``)."""

from __future__ import annotations

import os


def examples(shrunk: int, full: int = 100_000) -> int:
    return full if os.environ.get("AGG_FUZZ") == "1" else shrunk
