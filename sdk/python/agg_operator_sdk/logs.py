"""One JSON line per significant event on stderr, the aggregator's log shape (``ts``,
``level``, ``logger``, ``event``, then the fields), so that a wallet's lines can be searched
next to the aggregator's by ``correlation_id``. Standard library only; an operator with its
own logging replaces it."""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

_SECRET_NAME = re.compile(r"secret|password|token|dsn|database_url", re.IGNORECASE)


class JsonLog:
    def __init__(self, name: str, stream: TextIO | None = None):
        self.name = name
        self.stream = stream

    def _write(self, level: str, event: str, fields: dict[str, Any]) -> None:
        line = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": level,
            "logger": self.name,
            "event": event,
        }
        for key, value in fields.items():
            # a field named like a secret is never written, whatever it holds
            line[key] = "***" if _SECRET_NAME.search(key) else value
        out = self.stream or sys.stderr
        out.write(json.dumps(line, default=str, separators=(",", ":")) + "\n")
        out.flush()

    def event(self, event: str, **fields: Any) -> None:
        self._write("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._write("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._write("error", event, fields)
