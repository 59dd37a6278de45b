"""The reference HTTP operator wallet: the reference wallet's rules and PostgreSQL ledger
behind both operator-wallet protocols, over real HTTP.

Every operator of the tenants (the tenants file, then the config topic's document it
follows, :mod:`agg_kafka.tenants_watch`) with ``wallet: {mode: http}`` is served at the path of
its ``url`` (``http://127.0.0.1:9186/op-gamma`` is served at ``/op-gamma``), in its
``protocol``: ``canonical-v1`` requests are verified with the operator's wallet ``secret``,
``hub88-v1`` requests with the public half of its ``signing_key`` (the reference wallet
reads the same tenants file as the bridge; a real operator holds only the public key).

One call is one PostgreSQL transaction of :meth:`agg_wallet.store.WalletStore.apply_batch`
with a batch of one, on a connection of a bounded pool: the player's advisory lock, the
dedupe by command id (a repeat is answered from the ledger, byte for byte the same reply),
the balance per player and currency, created on first use with the operator's
``starting_balance``, all exactly as the Kafka wallet does it; the ledger rows carry no
Kafka position (NULL). So the money checks that read ``wallet.players`` and
``wallet.commands`` work for HTTP operators too.

Each operator's rules carry its :class:`~agg_wallet.rules.Policy` as the Kafka wallet's do
(:func:`agg_wallet.service.policy_of`): its currencies, and for the certification kit's
tests only the deliberate defects of ``AGG_WALLET_BROKEN`` (refused unless
``AGG_WALLET_BROKEN_ENABLED=true``, logged ``wallet_broken`` at start): the rules' defects,
``slow`` (every answer waits past the saga's wallet deadline) and ``no_signature_check``
(a request is read whatever its signature, :meth:`WalletServerProtocol.read`).

``GET /metrics`` (Prometheus) and ``GET /healthz`` on the same port.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agg_config.settings import Settings
from agg_config.tenants import Operator, Tenants
from agg_domain.statuses import ReplyStatus
from agg_kafka.tenants_watch import TenantsHolder, TenantsWatcher
from agg_obs.logs import get_logger
from agg_obs.metrics import LATENCY_BUCKETS_S
from agg_protocols.operator_wallet import (
    BODY_BYTES_MAX,
    Answer,
    Rejection,
    Rendered,
    WalletCall,
    WalletServerProtocol,
)
from agg_protocols.signatures import load_private_key
from agg_protocols.wallet_canonical import CanonicalWalletServer
from agg_protocols.wallet_hub88 import Hub88WalletServer
from agg_wallet.rules import Command, Defect, Policy, problem_of, reply_delay_ms
from agg_wallet.service import defects_of, policy_of
from agg_wallet.store import Item, WalletStore

log = get_logger("httpwallet")

REQUESTS = Counter(
    "agg_httpwallet_requests_total",
    "Calls answered, by kind and status (refusals by their protocol status)",
    ["operator", "kind", "status"],
)
DUPLICATES = Counter(
    "agg_httpwallet_duplicates_total", "Calls whose command id was in the ledger", ["operator"]
)
SECONDS = Histogram(
    "agg_httpwallet_request_seconds",
    "Time from a call's arrival to its answer (the transaction included)",
    ["operator"],
    buckets=LATENCY_BUCKETS_S,
)


@dataclass(frozen=True)
class Mount:
    operator: Operator
    base_path: str
    protocol: WalletServerProtocol
    policy: Policy


def server_protocol(operator: Operator, base_path: str) -> WalletServerProtocol:
    wallet = operator.wallet
    if wallet.protocol == "hub88-v1":
        assert wallet.signing_key is not None
        key = load_private_key(wallet.signing_key.reveal().decode())
        return Hub88WalletServer(key.public_key())
    assert wallet.secret is not None
    return CanonicalWalletServer(wallet.secret.reveal(), base_path)


def mounts_of(
    tenants: Tenants,
    operator_ids: list[str] | None = None,
    defects: frozenset[Defect] = frozenset(),
) -> list[Mount]:
    """Where each HTTP operator is served, longest path first (so ``/a/b`` wins over ``/a``)."""
    found = []
    seen: dict[str, str] = {}
    for operator in tenants.operators:
        if operator.wallet.mode != "http" or (operator_ids and operator.id not in operator_ids):
            continue
        assert operator.wallet.url is not None
        base = urlsplit(operator.wallet.url).path.rstrip("/")
        if base in seen:
            raise ValueError(f"operators {seen[base]} and {operator.id} share the path {base!r}")
        if base in ("/metrics", "/healthz"):
            raise ValueError(f"operator {operator.id}: the path {base!r} is the wallet's own")
        seen[base] = operator.id
        protocol = server_protocol(operator, base)
        policy = policy_of(operator, defects, protocol.scale_exponent)
        found.append(Mount(operator, base, protocol, policy))
    if operator_ids and {m.operator.id for m in found} != set(operator_ids):
        raise ValueError(f"not HTTP-wallet operators of the tenants file: {operator_ids}")
    if not found:
        raise ValueError("no operator with wallet mode 'http' to serve")
    return sorted(found, key=lambda m: -len(m.base_path))


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _now() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def command_of(call: WalletCall, now: datetime) -> Command:
    issued = EPOCH + timedelta(milliseconds=call.issued_at_ms) if call.issued_at_ms else now
    return Command(
        command_id=call.command_id,
        correlation_id=call.correlation_id,
        operator_id=call.operator_id,
        player_id=call.player_id,
        kind=call.kind.value,
        amount=call.amount,
        currency=call.currency,
        provider_id=call.provider_id,
        transaction_id=call.transaction_id,
        round_id=call.round_id,
        game_id=call.game_id,
        reference_command_id=call.reference_command_id,
        issued_at=issued,
    )


class HttpWallet:
    def __init__(self, settings: Settings, tenants: Tenants, operator_ids: list[str] | None = None):
        self.settings = settings
        self.defects = defects_of(settings)
        self.tenants = TenantsHolder(
            "httpwallet", lambda t: mounts_of(t, operator_ids, self.defects), tenants
        )
        """The mounts of the tenants in use; the config topic's watcher swaps them (a call
        finds its mount once and is answered with it)."""
        self.reply_delay_ms = reply_delay_ms(self.defects, settings.wallet_timeout_ms)
        self.checks_signatures = Defect.NO_SIGNATURE_CHECK not in self.defects
        self.pool = AsyncConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=settings.httpwallet_connection_count_max,
            kwargs={"autocommit": True},
            open=False,
        )
        self.ready = False

    @property
    def mounts(self) -> list[Mount]:
        return self.tenants.view

    async def start(self) -> None:
        await self.pool.open(wait=True)
        async with self.pool.connection() as conn:
            await WalletStore(conn).ensure_schema()
        self.ready = True
        log.event("httpwallet_started", operators={
            m.operator.id: {"path": m.base_path or "/", "protocol": m.protocol.protocol}
            for m in self.mounts})  # fmt: skip
        if self.defects:
            log.warning("wallet_broken", operators=[m.operator.id for m in self.mounts],
                        defects=sorted(self.defects), reply_delay_ms=self.reply_delay_ms,
                        reason="deliberate defects for certification tests; not a wallet "
                        "for real money")  # fmt: skip

    async def stop(self) -> None:
        self.ready = False
        await self.pool.close()

    def mount(self, path: str) -> tuple[Mount, str] | None:
        for m in self.mounts:
            if m.base_path == "" or path == m.base_path or path.startswith(m.base_path + "/"):
                return m, path[len(m.base_path) :]
        return None

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        found = self.mount(request.url.path)
        if found is None:
            return JSONResponse({"status": "UNKNOWN_OPERATOR", "reason": "no wallet here"}, 404)
        mount, sub_path = found
        op = mount.operator.id
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > BODY_BYTES_MAX):
            return JSONResponse({"status": "INVALID_REQUEST", "reason": "body too large"}, 413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > BODY_BYTES_MAX:
                return JSONResponse({"status": "INVALID_REQUEST", "reason": "body too large"}, 413)
        headers = {k.lower(): v for k, v in request.headers.items()}
        if self.checks_signatures:
            parsed = mount.protocol.parse(
                op, request.method, sub_path, headers, bytes(body), time.time()
            )
        else:  # the ``no_signature_check`` defect
            parsed = mount.protocol.read(op, request.method, sub_path, bytes(body))
        if isinstance(parsed, Rejection):
            REQUESTS.labels(op, "-", parsed.code).inc()
            log.warning("call_refused", operator_id=op, path=sub_path[:64], status=parsed.code,
                        reason=parsed.reason,
                        correlation_id=headers.get("x-correlation-id"))  # fmt: skip
            return self._response(mount.protocol.render_rejection(parsed))
        answer, duplicate = await self._apply(mount, parsed)
        if self.reply_delay_ms:  # the ``slow`` defect
            await asyncio.sleep(self.reply_delay_ms / 1000)
        REQUESTS.labels(op, parsed.kind.value, answer.status.value).inc()
        if duplicate:
            DUPLICATES.labels(op).inc()
        seconds = time.perf_counter() - started
        SECONDS.labels(op).observe(seconds)
        log.event("call_answered", operator_id=op, correlation_id=parsed.correlation_id,
                  command_id=parsed.command_id, player_id=parsed.player_id,
                  kind=parsed.kind.value, amount=parsed.amount, currency=parsed.currency,
                  status=answer.status.value, balance=answer.balance, duplicate=duplicate,
                  ms=round(seconds * 1000, 1))  # fmt: skip
        return self._response(mount.protocol.render(parsed, answer))

    async def _apply(self, mount: Mount, call: WalletCall) -> tuple[Answer, bool]:
        """The call applied in one transaction (deduplicated by command id)."""
        operator = mount.operator
        now = _now()
        command = command_of(call, now)
        key = f"{call.operator_id}:{call.player_id}".encode()
        item = Item(command, problem_of(command, operator.id, key), None, None)
        async with self.pool.connection() as conn:
            result = await WalletStore(conn).apply_batch(
                operator.id, operator.wallet.starting_balance, [item], now, mount.policy
            )
        decision = result.decisions[0]
        entry = decision.entry
        if entry.reason:
            log.warning("command_refused", operator_id=operator.id,
                        correlation_id=call.correlation_id, command_id=call.command_id,
                        status=entry.status.value, reason=entry.reason,
                        foreign=decision.foreign)  # fmt: skip
        status = ReplyStatus(entry.status.value)
        return Answer(status, entry.balance, status.value), decision.duplicate

    @staticmethod
    def _response(rendered: Rendered) -> Response:
        return Response(
            rendered.body,
            status_code=rendered.http,
            media_type="application/json",
            headers=dict(rendered.headers),
        )

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def healthz(self, request: Request) -> Response:
        body: dict[str, Any] = {
            "ready": self.ready,
            "operators": [m.operator.id for m in self.mounts],
        }
        return JSONResponse(body, 200 if self.ready else 503)


def build_app(
    settings: Settings, tenants: Tenants, operator_ids: list[str] | None = None
) -> Starlette:
    wallet = HttpWallet(settings, tenants, operator_ids)

    async def lifespan(app: Starlette) -> Any:
        # an operator's wallet needs no Kafka: without a broker it serves its file only
        watcher = TenantsWatcher(
            settings, wallet.tenants, client_id="httpwallet-config", required=False
        )
        await watcher.start()
        stop_watching = asyncio.Event()
        following = asyncio.create_task(watcher.follow(stop_watching))
        await wallet.start()
        try:
            yield
        finally:
            stop_watching.set()
            await wallet.stop()
            await following

    app = Starlette(
        routes=[
            Route("/metrics", wallet.metrics, methods=["GET"]),
            Route("/healthz", wallet.healthz, methods=["GET"]),
            Route("/{path:path}", wallet.handle, methods=["POST", "GET", "PUT"]),
        ],
        lifespan=lifespan,
    )
    app.state.wallet = wallet
    return app
