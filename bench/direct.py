"""The benchmark's direct baseline: what an operator builds without Kafka.

    python -m bench.direct wallet --port 8092 [--pool-size 8]
    python -m bench.direct aggregator --port 8091 --wallet-url http://127.0.0.1:8092

``aggregator`` serves the canonical provider protocol v1 (``POST
/v1/providers/{provider}/wallet/{action}``) with the ingress's own checks, in its order (unknown
provider 404, body too large 413, timestamp and signature 401, invalid body 400, session rules),
then makes one synchronous HTTP call to ``wallet`` and answers with the wallet's result.
``wallet`` is a seamless wallet: ``POST /v1/wallet/commands`` applies ONE command in its own
Postgres transaction through the reference wallet's store (:mod:`agg_wallet.store`, a batch of
one: same tables, advisory lock per player, dedupe by command id, starting balance per
operator). Both serve ``GET /healthz``. Command ids are the saga's (:mod:`agg_domain.saga`), so
a provider transaction gets the same ledger row id either way, each scoped to the operator and
player: bet -> DEBIT ``cmd(op, player, provider, txn, DEBIT, 1)``, win -> CREDIT ``cmd(op,
player, provider, txn, CREDIT)``, rollback -> CANCEL ``cmd(op, player, <debit id>, CANCEL)``
of the referenced bet's debit, authenticate/balance -> BALANCE ``cmd(op, player, provider,
request_id, BALANCE)``.

Where it deliberately differs from the pipeline: no journal, no projections, no per-player
ordering beyond the wallet's lock; a debit the wallet did not answer in time is answered
RETRY_LATER and never compensated (the provider's retry or rollback settles it); a failed
credit is not retried (the provider must retry); idempotency is per command id, so a
transaction id reused by another action (a win with a bet's id) or with another round is not a
conflict, and a rollback naming a win refunds nothing and answers OK instead of
TRANSACTION_NOT_FOUND; the cancel carries amount 0 (the wallet refunds the debit's amount).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agg_config.settings import Settings, load_settings
from agg_config.tenants import Tenants, load_tenants
from agg_domain.compliance import Refusal as RuleRefusal
from agg_domain.saga import (
    balance_command_id,
    cancel_command_id,
    credit_command_id,
    debit_command_id,
)
from agg_domain.statuses import Action, CommandKind, Status
from agg_ingress.adapters.base import Result
from agg_ingress.app import Ingress
from agg_ingress.protocol import Callback, parse_object
from agg_ingress.routing import correlation_id
from agg_ingress.sessions import SessionClaims
from agg_obs.logs import configure_logging, get_logger
from agg_wallet.rules import Command, Effect, problem_of
from agg_wallet.store import Item, WalletStore

COMMANDS_PATH = "/v1/wallet/commands"
WALLET_TIMEOUT_S = 2.0
"""Longest wait for the wallet (and for a pooled connection): the ingress's outcome wait."""
_TEXT = ("command_id", "correlation_id", "operator_id", "player_id", "kind", "currency",
         "provider_id")  # fmt: skip
_OPTIONAL_TEXT = ("transaction_id", "round_id", "game_id", "reference_command_id")

# One log line per significant event (start, failure), never per request: this is a latency
# baseline, and a line per callback would add its own cost to every request measured.
log = get_logger("bench-direct")


def _json(http: int, body: dict[str, Any]) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")).encode(), http, media_type="application/json"
    )


async def healthz(request: Request) -> Response:
    return _json(200, {"status": "ok"})


# --- the seamless wallet ---------------------------------------------------------------------


def command_from_json(body: dict[str, Any]) -> Command | str:
    """The command a request body carries, or why it carries none."""
    values: dict[str, Any] = {}
    for name in (*_TEXT, *_OPTIONAL_TEXT):
        value = body.get(name)
        if not isinstance(value, str) and (name in _TEXT or value is not None):
            return f"{name}: a string"
        values[name] = value
    if type(body.get("amount")) is not int:
        return "amount: an integer of minor units"
    try:
        issued_at = datetime.fromisoformat(body["issued_at"])
    except (KeyError, TypeError, ValueError):
        issued_at = None
    if issued_at is None or issued_at.tzinfo is None:
        return "issued_at: ISO 8601 with a time zone"
    return Command(**values, amount=body["amount"], issued_at=issued_at)


class Wallet:
    def __init__(self, settings: Settings, tenants: Tenants, pool_size: int):
        self.starting_balances = {o.id: o.wallet.starting_balance for o in tenants.operators}
        self.pool = AsyncConnectionPool(
            settings.database_url, min_size=pool_size, max_size=pool_size, open=False,
            kwargs={"autocommit": True}, timeout=WALLET_TIMEOUT_S,
        )  # fmt: skip

    async def start(self) -> None:
        await self.pool.open(wait=True, timeout=30)
        async with self.pool.connection() as conn:
            await WalletStore(conn).ensure_schema()
        log.event("wallet_started", pool_size=self.pool.max_size)

    async def command(self, request: Request) -> Response:
        parsed = parse_object(await request.body())
        command = command_from_json(parsed) if isinstance(parsed, dict) else parsed
        if isinstance(command, str):
            return _json(400, {"error": command})
        operator_id = command.operator_id
        starting_balance = self.starting_balances.get(operator_id)
        if starting_balance is None:
            return _json(404, {"error": f"unknown operator {operator_id!r}"})
        key = f"{operator_id}:{command.player_id}".encode()
        # no Kafka position: the ledger's kafka_partition/kafka_offset stay NULL
        item = Item(command, problem_of(command, operator_id, key), None, None)
        try:
            async with self.pool.connection() as conn:
                result = await WalletStore(conn).apply_batch(
                    operator_id, starting_balance, [item], datetime.now(UTC)
                )
                decision = result.decisions[0]
                entry = decision.entry
        except (PoolTimeout, psycopg.Error) as exc:
            log.error("command_failed", command_id=command.command_id, error=str(exc))
            return _json(503, {"error": "ledger unavailable"})
        return _json(200, {
            "command_id": entry.command_id, "status": entry.status.value,
            "effect": entry.effect.value, "balance": entry.balance, "currency": entry.currency,
            "duplicate": decision.duplicate, "conflict": decision.conflict,
            "reason": entry.reason,
        })  # fmt: skip


def build_wallet(settings: Settings, tenants: Tenants, pool_size: int) -> Starlette:
    wallet = Wallet(settings, tenants, pool_size)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await wallet.start()
        try:
            yield
        finally:
            await wallet.pool.close()

    routes = [
        Route(COMMANDS_PATH, wallet.command, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


# --- the aggregator --------------------------------------------------------------------------


def wallet_command(
    provider_id: str, cb: Callback, operator_id: str, currency: str, now: datetime
) -> dict[str, Any]:
    """The wallet command of a validated callback, with the saga's command ids."""
    txn, reference, amount = cb.transaction_id or "", None, cb.amount or 0
    owner = (operator_id, cb.player_id)
    if cb.action is Action.BET:
        kind, command_id = CommandKind.DEBIT, debit_command_id(*owner, provider_id, txn, 1)
    elif cb.action is Action.WIN:
        kind, command_id = CommandKind.CREDIT, credit_command_id(*owner, provider_id, txn)
    elif cb.action is Action.ROLLBACK:
        # like the saga's cancel, it is about the bet: the bet's ids, the debit's amount
        txn, amount = cb.reference_transaction_id or "", 0
        reference = debit_command_id(*owner, provider_id, txn, 1)
        kind, command_id = CommandKind.CANCEL, cancel_command_id(*owner, reference)
    else:
        kind = CommandKind.BALANCE
        command_id = balance_command_id(*owner, provider_id, cb.request_id)
    command = Command(
        command_id=command_id, correlation_id=correlation_id(provider_id, operator_id, cb),
        operator_id=operator_id, player_id=cb.player_id, kind=kind.value, amount=amount,
        currency=currency, provider_id=provider_id, transaction_id=txn or None,
        round_id=cb.round_id, game_id=cb.game_id, reference_command_id=reference, issued_at=now,
    )  # fmt: skip
    return {**asdict(command), "issued_at": now.isoformat()}


def provider_status(reply: dict[str, Any]) -> Status:
    """How the wallet's result is answered to the provider (as the saga answers it)."""
    if reply["conflict"]:
        return Status.DUPLICATE_CONFLICT
    if reply["effect"] == Effect.REFUSED:
        return Status.BET_ROLLED_BACK  # the bet's id was rolled back before it came
    if reply["status"] in (Status.OK, Status.INSUFFICIENT_FUNDS):
        return Status(reply["status"])
    return Status.RETRY_LATER


class WalletClient:
    """A keep-alive HTTP/1.1 client of the wallet: a pool of idle connections, one request per
    connection at a time, ``Content-Length`` bodies only (what the wallet sends).

    General-purpose clients cost more CPU per call than the whole wallet does (httpx spends
    most of it finding its async library and in layers of abstraction), which would make this
    baseline look slower than an operator's own integration would be.

    Stale connections: the wallet (uvicorn) closes a connection idle for 5 s, and the pool,
    which grows in bursts and is used last-in first-out, keeps some idle that long. A pooled
    connection whose close has already arrived is dropped before anything is written on it.
    One whose close crosses the request on the way (the server closed it, so the answer ends
    before its first byte: end of stream or reset) is retried once on a fresh connection, as
    HTTP clients retry on a reused connection closed under them. That is safe twice over: a
    server that closes an idle connection has not taken the request that arrives on it, and
    the wallet dedupes by command id, so even a request taken before a close would be applied
    once and answered with the same result. Nothing else is retried: a timeout, an answer cut
    in the middle, or a failure on a fresh connection is the caller's RETRY_LATER.
    """

    def __init__(self, base_url: str, timeout_s: float):
        url = urlsplit(base_url)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 80
        self.timeout_s = timeout_s
        self.idle: deque[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = deque()
        self.stale_dropped = 0
        """Pooled connections dropped unused because the server had closed them."""
        self.stale_retries = 0
        """Requests sent again on a fresh connection because a pooled one was closed under them."""

    async def post_json(self, path: str, payload: dict[str, Any]) -> tuple[int, bytes]:
        body = json.dumps(payload, separators=(",", ":")).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        request = head + body
        async with asyncio.timeout(self.timeout_s):
            while self.idle:
                reader, writer = self.idle.pop()
                if reader.at_eof() or writer.is_closing():
                    writer.close()  # closed by the server while idle: never written on
                    self.stale_dropped += 1
                    continue
                try:
                    return await self._exchange(reader, writer, request)
                except _ClosedBeforeAnswer:
                    self.stale_retries += 1
                    break
            reader, writer = await asyncio.open_connection(self.host, self.port)
            try:
                return await self._exchange(reader, writer, request)
            except _ClosedBeforeAnswer as exc:
                raise ConnectionResetError("the wallet closed a fresh connection") from exc

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
    ) -> tuple[int, bytes]:
        """One request and its answer; the connection goes back to the pool after a whole
        answer, is closed otherwise. :class:`_ClosedBeforeAnswer` when the connection ended
        before the answer's first byte."""
        try:
            try:
                writer.write(request)
                status_line = await reader.readuntil(b"\r\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    raise
                raise _ClosedBeforeAnswer from exc
            except (ConnectionResetError, BrokenPipeError) as exc:
                raise _ClosedBeforeAnswer from exc
            length = 0
            while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            data = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        self.idle.append((reader, writer))
        return int(status_line.split(b" ", 2)[1]), data

    async def close(self) -> None:
        while self.idle:
            self.idle.pop()[1].close()


class _ClosedBeforeAnswer(Exception):
    """The connection ended before the first byte of the answer."""


class Aggregator(Ingress):
    """The ingress's own checks, by the ingress's own code (signature, body, session token),
    then one synchronous wallet call where the ingress would publish to Kafka and wait."""

    def __init__(self, settings: Settings, tenants: Tenants):
        super().__init__(settings, tenants, instance_id="direct")
        self.http: WalletClient | None = None

    async def callback(self, request: Request) -> Response:
        # the ingress's provider_callback without its per-callback log line and metrics
        params = request.path_params
        done = await self._callback(request, params["provider_id"], params["path"])
        wire = done.wire
        return Response(wire.body, wire.http, media_type=wire.content_type)

    async def _forward(
        self, provider_id: str, cb: Callback, claims: SessionClaims, refusal: RuleRefusal | None
    ) -> tuple[Result, str | None, dict[str, Any]]:
        currency = cb.currency or claims.currency
        if refusal is not None:  # a bet the compliance rules refuse: no wallet call
            return Result(refusal.status, currency), None, {}
        command = wallet_command(provider_id, cb, claims.operator_id, currency, datetime.now(UTC))
        reply = await self._call_wallet(command)
        status = Status.RETRY_LATER if reply is None else provider_status(reply)
        balance = None if reply is None or status is Status.RETRY_LATER else reply["balance"]
        return Result(status, currency, balance), None, {}

    async def _call_wallet(self, command: dict[str, Any]) -> dict[str, Any] | None:
        """The wallet's reply, or None when it gave none in time (answered RETRY_LATER)."""
        assert self.http is not None, "called outside the app's lifespan"
        try:
            code, data = await self.http.post_json(COMMANDS_PATH, command)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            log.warning("wallet_unavailable", command_id=command["command_id"],
                        error=f"{type(exc).__name__}: {exc}")  # fmt: skip
            return None
        if code != 200:
            log.warning("wallet_refused", command_id=command["command_id"],
                        http_status=code, body=data[:200].decode(errors="replace"))  # fmt: skip
            return None
        reply: dict[str, Any] = json.loads(data)
        if reply["status"] == "ERROR" and reply["effect"] != Effect.REFUSED:
            log.error("wallet_error", command_id=command["command_id"], reason=reply["reason"])
        return reply


def build_aggregator(settings: Settings, tenants: Tenants, wallet_url: str) -> Starlette:
    aggregator = Aggregator(settings, tenants)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        aggregator.http = WalletClient(wallet_url, WALLET_TIMEOUT_S)
        log.event("aggregator_started", wallet_url=wallet_url)
        try:
            yield
        finally:
            http = aggregator.http
            log.event("aggregator_stopped", stale_connections_dropped=http.stale_dropped,
                      stale_connection_retries=http.stale_retries)  # fmt: skip
            await http.close()
            aggregator.http = None

    routes = [
        Route("/v1/providers/{provider_id}/{path:path}", aggregator.callback, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.direct",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    roles = parser.add_subparsers(dest="role", required=True)
    wallet = roles.add_parser("wallet", help="the HTTP seamless wallet")
    wallet.add_argument("--pool-size", type=int, default=8, help="Postgres connections")
    aggregator = roles.add_parser("aggregator", help="the synchronous provider endpoint")
    aggregator.add_argument("--wallet-url", required=True, help="e.g. http://127.0.0.1:8092")
    for role in (wallet, aggregator):
        role.add_argument("--host", default="127.0.0.1")
        role.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)

    import uvicorn

    configure_logging()
    settings = load_settings()
    tenants = load_tenants(settings.tenants_file)
    if args.role == "wallet":
        app = build_wallet(settings, tenants, args.pool_size)
    else:
        app = build_aggregator(settings, tenants, args.wallet_url)
    uvicorn.run(app, host=args.host, port=args.port, loop="uvloop", http="httptools",
                workers=1, lifespan="on", access_log=False, log_level="warning")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
