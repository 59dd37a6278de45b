"""Structured logs: one JSON object per line, one line per significant event, each with the
correlation id that links ingress, saga, wallet and projector.

Secrets never reach a log line: a field whose name says it holds a secret or a password is
written as ``***`` and a connection string (``*_url``, ``dsn``) without its password
(:mod:`agg_config.redact`); pydantic secrets print as ``**********`` and settings mask
their database password in their repr.

    log = get_logger("saga")
    log.event("bet_accepted", correlation_id=cid, operator_id=op, amount=100)
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from agg_config.redact import redact_field

_direct: TextIO | None = None
"""The stream :func:`configure_logging` set up: lines without a traceback are written to it
directly, without a ``LogRecord`` and the handler chain (a quarter of the cost per line)."""


def _line(
    created: float, level: str, service: str, event: str, fields: dict[str, Any] | None,
    exception: str | None = None,
) -> str:  # fmt: skip
    payload: dict[str, Any] = {
        "ts": round(created, 3),
        "level": level,
        "service": service,
        "event": event,
    }
    if fields:
        payload.update({name: redact_field(name, value) for name, value in fields.items()})
    if exception:
        payload["exception"] = exception
    return json.dumps(payload, default=str, separators=(",", ":"))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return _line(
            record.created,
            record.levelname.lower(),
            getattr(record, "service", record.name),
            record.getMessage(),
            getattr(record, "fields", None),
            self.formatException(record.exc_info) if record.exc_info else None,
        )


class EventLogger:
    """A logger whose messages are event names and whose details are fields."""

    def __init__(self, service: str):
        self.service = service
        self._logger = logging.getLogger(f"agg.{service}")

    def _log(self, level: int, event: str, exc_info: bool, fields: dict[str, Any]) -> None:
        if not self._logger.isEnabledFor(level):
            return
        stream = _direct
        if stream is not None and not exc_info:
            line = _line(time.time(), _LEVEL_NAMES[level], self.service, event, fields)
            stream.write(line + "\n")
        else:
            self._logger.log(
                level,
                event,
                exc_info=exc_info,
                extra={"service": self.service, "fields": fields},
            )

    def event(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, False, fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, False, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, False, fields)

    def error(self, event: str, exc_info: bool = False, **fields: Any) -> None:
        self._log(logging.ERROR, event, exc_info, fields)


_LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning",
                logging.ERROR: "error"}  # fmt: skip


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr for the ``agg.*`` loggers (idempotent)."""
    global _direct
    root = logging.getLogger("agg")
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    _direct = sys.stderr
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False


def get_logger(service: str) -> EventLogger:
    return EventLogger(service)


def now_ms() -> int:
    """Wall-clock milliseconds, for the shells around the pure domain code only."""
    return time.time_ns() // 1_000_000
