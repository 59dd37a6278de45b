"""The direct baseline's wallet client (:class:`bench.direct.WalletClient`) against real local
servers on loopback sockets: uvicorn closing idle keep-alive connections as the wallet's does,
and a server that drops a request arriving on a connection it is closing. A stale pooled
connection must never turn into a failed wallet call; nothing else is retried."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.direct import WalletClient

KEEP_ALIVE_S = 1
WAIT_S = 10
"""Bound of every wait for a server's close: a hung test fails instead of hanging."""


async def _echo(request: Request) -> Response:
    return Response(await request.body(), 200, media_type="application/json")


@contextlib.asynccontextmanager
async def uvicorn_server() -> AsyncIterator[str]:
    """uvicorn on uvloop-less asyncio with httptools, closing connections idle KEEP_ALIVE_S."""
    app = Starlette(routes=[Route("/v1/wallet/commands", _echo, methods=["POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, http="httptools", lifespan="off", log_level="warning",
                            access_log=False, timeout_keep_alive=KEEP_ALIVE_S)  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    async with asyncio.timeout(WAIT_S):
        while not server.started:
            await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


async def _closed_by_server(client: WalletClient) -> None:
    """Until the server's close of every pooled connection has arrived."""
    async with asyncio.timeout(WAIT_S):
        while not all(reader.at_eof() for reader, _ in client.idle):
            await asyncio.sleep(0.05)


def test_a_connection_the_server_closed_while_idle_is_not_used() -> None:
    async def scenario() -> None:
        async with uvicorn_server() as url:
            client = WalletClient(url, timeout_s=5)
            try:
                assert await client.post_json("/v1/wallet/commands", {"n": 1}) == (
                    200, b'{"n":1}')  # fmt: skip
                assert len(client.idle) == 1
                await _closed_by_server(client)
                assert await client.post_json("/v1/wallet/commands", {"n": 2}) == (
                    200, b'{"n":2}')  # fmt: skip
                assert (client.stale_dropped, client.stale_retries) == (1, 0)  # never written on
            finally:
                await client.close()

    asyncio.run(scenario())


Policy = Callable[[int, int], str]
"""What the server does with the n-th request (from 1) of its c-th connection (from 1):
"answer", "close" (without a byte of answer) or "half" (half of the status line, then close)."""


@contextlib.asynccontextmanager
async def raw_server(policy: Policy) -> AsyncIterator[tuple[str, list[tuple[int, int, str]]]]:
    """An HTTP/1.1 server on a real socket doing what ``policy`` says; yields its address and
    the log of (connection, request, what it did)."""
    seen: list[tuple[int, int, str]] = []
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        conn, n = connections, 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))  # fmt: skip
                body = await reader.readexactly(length)
                n += 1
                action = policy(conn, n)
                seen.append((conn, n, action))
                if action == "close":
                    break
                if action == "half":
                    writer.write(b"HTTP/1.")
                    await writer.drain()
                    break
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        server.close()
        await server.wait_closed()


def _run(policy: Policy, calls: int) -> tuple[list[object], list[tuple[int, int, str]], int]:
    """``calls`` sequential wallet calls: each one's answer or exception, the server's log and
    the client's count of stale retries."""

    async def scenario() -> tuple[list[object], list[tuple[int, int, str]], int]:
        async with raw_server(policy) as (url, seen):
            client = WalletClient(url, timeout_s=5)
            results: list[object] = []
            try:
                for i in range(calls):
                    call: Awaitable[tuple[int, bytes]] = client.post_json("/c", {"n": i})
                    try:
                        results.append(await call)
                    except Exception as exc:  # noqa: BLE001 - the outcome under test
                        results.append(type(exc))
            finally:
                await client.close()
            return results, seen, client.stale_retries

    return asyncio.run(scenario())


def test_a_request_dropped_by_a_reused_connection_is_sent_again_on_a_fresh_one() -> None:
    # the server's idle close crosses the second request: it never takes it
    results, seen, retries = _run(lambda conn, n: "close" if n == 2 else "answer", 2)
    assert results == [(200, b'{"n":0}'), (200, b'{"n":1}')]
    assert seen == [(1, 1, "answer"), (1, 2, "close"), (2, 1, "answer")]
    assert retries == 1


@pytest.mark.parametrize(
    ("policy", "expected_seen"),
    [
        # a fresh connection dropped: no retry, the caller answers RETRY_LATER
        (lambda conn, n: "close", [(1, 1, "close")]),
        # an answer cut after its first bytes: the request was taken, no retry
        (lambda conn, n: "half" if n == 2 else "answer", [(1, 1, "answer"), (1, 2, "half")]),
    ],
    ids=["fresh connection closed", "answer cut in the middle"],
)
def test_nothing_else_is_retried(policy: Policy, expected_seen: list[tuple[int, int, str]]) -> None:
    results, seen, retries = _run(policy, len(expected_seen))
    assert seen == expected_seen
    assert results[-1] in (ConnectionResetError, asyncio.IncompleteReadError)
    assert retries == 0


def test_answers_are_json_of_the_command() -> None:
    results, _, _ = _run(lambda conn, n: "answer", 3)
    assert [json.loads(r[1]) for r in results if isinstance(r, tuple)] == [
        {"n": 0}, {"n": 1}, {"n": 2}]  # fmt: skip
