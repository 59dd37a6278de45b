"""A tiny HTTP endpoint for metrics, health and the fault-test switches.

Served on the wallet's metrics port (``AGG_WALLET_METRICS_PORT``, ``--metrics-port``),
bound to 127.0.0.1 unless told otherwise: the switches are for tests and demos, not for
the outside world.

=================  ==========================================================================
``GET /metrics``   Prometheus metrics
``GET /healthz``   200 ``{"ready": true, ...}`` once every operator has partitions, else 503
``GET /mode``      ``{"mode": "normal", "delay_ms": 0}``
``PUT /mode``      body ``{"mode": "slow", "delay_ms": 250}`` (``delay_ms`` optional; also
                   ``POST``, or ``?mode=silent&delay_ms=0`` in the query string); answers the
                   new state, 400 for an unknown mode or a delay out of range
=================  ==========================================================================

Example: ``curl -X PUT -d '{"mode":"silent"}' http://127.0.0.1:9183/mode``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agg_wallet.service import Switches

REQUEST_BYTES_MAX = 16_384
"""Largest request (line, headers and body) read; a mode change is a few dozen bytes."""
READ_TIMEOUT_S = 5.0

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large", 503: "Service Unavailable"}  # fmt: skip


class ControlServer:
    def __init__(
        self,
        switches: Switches,
        ready: Callable[[], bool],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.switches = switches
        self.ready = ready
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        """The bound port (``port=0`` binds a free one), once started."""
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.requested_port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, ctype, body = await asyncio.wait_for(self._handle(reader), READ_TIMEOUT_S)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            status, ctype, body = 400, "application/json", b'{"error":"bad request"}'
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError):
            writer.write(head.encode() + body)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > REQUEST_BYTES_MAX:
            return 413, "text/plain", b"too large"
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        if not 0 <= length <= REQUEST_BYTES_MAX:
            return 413, "text/plain", b"too large"
        body = await reader.readexactly(length) if length else b""
        url = urlsplit(target)
        if url.path == "/metrics" and method == "GET":
            return 200, CONTENT_TYPE_LATEST, generate_latest()
        if url.path == "/healthz" and method == "GET":
            ready = self.ready()
            return _json(200 if ready else 503, {"ready": ready, **self.switches.as_dict()})
        if url.path == "/mode":
            if method == "GET":
                return _json(200, self.switches.as_dict())
            if method in ("PUT", "POST"):
                return self._set_mode(url.query, body)
            return _json(405, {"error": "use GET, PUT or POST"})
        return _json(404, {"error": "not found"})

    def _set_mode(self, query: str, body: bytes) -> tuple[int, str, bytes]:
        wanted: dict[str, Any] = {k: v[-1] for k, v in parse_qs(query).items()}
        if body.strip():
            try:
                parsed = json.loads(body)
            except json.JSONDecodeError:
                return _json(400, {"error": "body is not JSON"})
            if not isinstance(parsed, dict):
                return _json(400, {"error": "body must be a JSON object"})
            wanted.update(parsed)
        try:
            delay = wanted.get("delay_ms")
            self.switches.set(
                wanted.get("mode", self.switches.mode), None if delay is None else int(delay)
            )
        except (ValueError, TypeError) as exc:
            return _json(400, {"error": str(exc)})
        return _json(200, self.switches.as_dict())


def _json(status: int, payload: dict[str, Any]) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(payload).encode()
