"""The ingress HTTP application (Starlette): provider callbacks, the operator API, health and
metrics. The pure rules live in :mod:`agg_ingress.protocol` and :mod:`agg_ingress.sessions`,
the Kafka request-reply in :mod:`agg_ingress.routing`; this module wires them to HTTP.

A provider callback is checked in this order, and every refusal publishes nothing:
unknown or disabled provider (404), body too large (413), timestamp and signature (401),
unknown action or invalid body (400), session rules (200 with the session status), the
compliance rules of an authenticate (200 with the rule's status), no reply partition or too
many waiting (503). Only then is it published and its outcome awaited. A bet the compliance
rules refuse is published too, with its ``refusal``: the saga decides it (REJECTED, no wallet
command) and journals it with the rule, so that it is answered and audited like any bet.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import psycopg
from prometheus_client import Counter, Histogram, make_asgi_app
from psycopg_pool import PoolTimeout
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from agg_avro import AvroCodec
from agg_config.compliance import rules_of
from agg_config.settings import Settings, require_session_secret
from agg_config.tenants import Operator, Tenants
from agg_config.tenants import Provider as ProviderConfig
from agg_domain.compliance import Refusal as RuleRefusal
from agg_domain.compliance import Rules
from agg_domain.ids import derive_id
from agg_domain.saga import SEAMLESS, TRANSFER
from agg_domain.statuses import Action, Status, WinKind
from agg_ingress import specs
from agg_ingress.adapters import adapters
from agg_ingress.adapters.base import (
    Accepted,
    Credentials,
    ProviderAdapter,
    Refused,
    Result,
    WireRequest,
    WireResponse,
)
from agg_ingress.adapters.hub88 import load_private_key, load_public_key
from agg_ingress.campaigns import EXPIRED as CAMPAIGN_EXPIRED
from agg_ingress.campaigns import NOT_FOUND as CAMPAIGN_NOT_FOUND
from agg_ingress.campaigns import (
    CampaignRequest,
    campaign_refusal,
    rfc3339,
    validate_campaign,
    validate_cancel,
)
from agg_ingress.campaigns import http_status as campaign_http_status
from agg_ingress.controls import ControlsRequest, controls_avro, controls_json, validate_controls
from agg_ingress.launch import (
    LAUNCH_PATH,
    LaunchRefusal,
    default_launch_query,
    game_url,
    launch_json,
    launch_page,
    launch_params,
    launch_refusal,
)
from agg_ingress.protocol import (
    COUNTRY_PATTERN,
    LANGUAGE_PATTERN,
    OPERATOR_HTTP_STATUS,
    Callback,
    Invalid,
    Refusal,
    offered_games,
    parse_object,
    player_ref_status,
    refusal_answer,
    session_refusal,
    signature_problem,
    validate_session_request,
)
from agg_ingress.read_api import PLAYER_ID, ProjectionReader, ReadError
from agg_ingress.routing import Outcome, OutcomeRouter, ReplyPartitionRevoked, correlation_id
from agg_ingress.sessions import (
    PlayerRef,
    SessionClaims,
    TokenCheck,
    check_session,
    claims_from_ref,
    issue_player_ref,
    issue_token,
    new_session_id,
    ref_of,
    verify_player_ref,
    verify_token,
)
from agg_ingress.transfers import WALLET_MODE_REFUSAL, TransferRequest, validate_transfer
from agg_ingress.transfers import http_status as transfer_http_status
from agg_kafka.clients import player_key
from agg_kafka.reply import PublishError
from agg_kafka.tenants_watch import TenantsHolder, TenantsWatcher
from agg_kafka.topics import TopicNames
from agg_obs.logs import get_logger
from agg_obs.metrics import LATENCY_BUCKETS_S

log = get_logger("ingress")

CALLBACKS = Counter(
    "agg_ingress_callbacks_total", "Provider callbacks answered", ["provider", "action", "status"]
)
CALLBACK_SECONDS = Histogram(
    "agg_ingress_callback_seconds",
    "From request to answer of a provider callback",
    ["provider", "action"],
    buckets=LATENCY_BUCKETS_S,
)
TIMEOUTS = Counter(
    "agg_ingress_outcome_timeouts_total", "Callbacks answered RETRY_LATER for want of an outcome"
)
LAUNCHES = Counter("agg_ingress_launches_total", "Game launches answered", ["provider", "status"])
OPERATOR_CALLS = Counter(
    "agg_ingress_operator_requests_total", "Operator API requests answered", ["endpoint", "status"]
)


@dataclass(frozen=True)
class Reply:
    """A refusal of an operator API request before its body is read as a call."""

    http: int
    body: dict[str, Any]
    status: str


@dataclass(frozen=True)
class _Provider:
    """An enabled provider: its protocol's adapter and its credentials, resolved once per
    tenants document."""

    adapter: ProviderAdapter
    credentials: Credentials


@dataclass(frozen=True)
class Lookups:
    """What the ingress derives from one tenants document, built once per document and
    swapped as one (:mod:`agg_kafka.tenants_watch`): a request reads the tenants and the
    lookups built from them through one reference, never a mix of two documents. Anything
    else derived from the tenants belongs here."""

    tenants: Tenants
    providers: dict[str, _Provider]
    """Enabled providers with their adapter and credentials (a disabled one is unknown)."""
    operator_secrets: dict[str, bytes]
    transfer_operators: frozenset[str]
    """Operators of a transfer wallet (``wallet.mode: transfer``)."""
    rules: Rules
    """The compliance rules of ``tenants``, compiled once."""


def build_lookups(tenants: Tenants, by_protocol: dict[str, ProviderAdapter]) -> Lookups:
    """Resolved once per document: a missing secret variable refuses the document (at start:
    stops the start), not a request."""
    return Lookups(
        tenants=tenants,
        providers={
            p.id: _Provider(by_protocol[p.protocol], credentials(p))
            for p in tenants.providers
            if p.enabled
        },
        operator_secrets={o.id: o.secret.reveal() for o in tenants.operators},
        transfer_operators=frozenset(o.id for o in tenants.operators if o.wallet.mode == TRANSFER),
        rules=rules_of(tenants),
    )


@dataclass(frozen=True)
class _Done:
    """A provider callback answered: the rendered answer and what its log line says."""

    wire: WireResponse
    status: str
    protocol: str
    action: str = "unknown"
    correlation_id: str | None = None
    request_id: str | None = None
    transaction_id: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


def credentials(provider: ProviderConfig) -> Credentials:
    """A provider's credentials, read once per document (a missing secret variable stops the
    start, or refuses a later document)."""
    return Credentials(
        secret=provider.secret.reveal() if provider.secret else None,
        public_key=load_public_key(provider.public_key) if provider.public_key else None,
        signing_key=(
            load_private_key(provider.signing_key.reveal().decode())
            if provider.signing_key
            else None
        ),
    )


def signed_path(scope: Scope) -> str:
    """The request path with its query string as the client sent it (the signed ``path``)."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    if query and b"?" not in raw:
        raw += b"?" + query
    return raw.decode("latin-1")


async def read_body(request: Request, limit_bytes: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed ``limit_bytes`` (never read whole)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit_bytes:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit_bytes:
            return None
    return bytes(body)


class _Asgi:
    """Keeps an ASGI callable from being wrapped as a request handler by ``Route``."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


URL = re.compile(r"https?://[^\s]{1,2040}")
CALLBACK_PATH = re.compile(r"/v1/providers/([^/]+)/(.+)")
"""The provider callback route, matched as Starlette's ``{provider_id}``/``{path:path}`` would."""


class IngressApp(Starlette):
    """The ingress's ASGI app. Provider callbacks, its hot path, skip Starlette's router and
    exception middleware (a quarter of the ingress's CPU per callback): the same handler gives
    the same answers; an exception escaping it still becomes a 500 (from the server)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = CALLBACK_PATH.fullmatch(scope["path"])
            if match is not None:
                scope["app"] = self
                scope["path_params"] = {"provider_id": match[1], "path": match[2]}
                ingress: Ingress = self.state.ingress
                response = await ingress.provider_callback(Request(scope, receive))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


class Ingress:
    def __init__(self, settings: Settings, tenants: Tenants, instance_id: str | None = None):
        self.settings = settings
        self.instance_id = instance_id or f"ingress-{uuid.uuid4().hex[:16]}"
        self.names = TopicNames(settings.topic_prefix)
        self.codec = AvroCodec()
        # refused before anything starts: the public default or a short key
        self.session_secret = require_session_secret(settings)
        by_protocol = adapters(settings.signature_window_s)
        self.canonical = _Provider(by_protocol["canonical-v1"], Credentials())
        self.lookups: TenantsHolder[Lookups] = TenantsHolder(
            "ingress", lambda t: build_lookups(t, by_protocol), tenants
        )
        """The tenants in use and their lookups; the config topic's watcher swaps them."""
        self.router: OutcomeRouter | None = None
        self.reader: ProjectionReader | None = None

    @property
    def tenants(self) -> Tenants:
        return self.lookups.view.tenants

    @property
    def providers(self) -> dict[str, _Provider]:
        return self.lookups.view.providers

    @property
    def operator_secrets(self) -> dict[str, bytes]:
        return self.lookups.view.operator_secrets

    @property
    def transfer_operators(self) -> frozenset[str]:
        return self.lookups.view.transfer_operators

    @property
    def rules(self) -> Rules:
        return self.lookups.view.rules

    # --- common ---------------------------------------------------------------------------

    async def _authenticate(
        self, request: Request, secret: bytes | None, unknown: Refusal
    ) -> bytes | Reply:
        """The body of a request signed by ``secret``, or the refusal to answer."""
        if secret is None:
            return Reply(404, refusal_answer(unknown, b""), unknown)
        body = await read_body(request, self.settings.request_body_bytes_max)
        if body is None:
            return Reply(413, refusal_answer(Status.INVALID_REQUEST, b""), "BODY_TOO_LARGE")
        problem = signature_problem(
            secret,
            timestamp=request.headers.get("x-agg-timestamp"),
            signature=request.headers.get("x-agg-signature"),
            method=request.method,
            path=signed_path(request.scope),
            body=body,
            now_s=time.time(),
            window_s=self.settings.signature_window_s,
        )
        if problem is not None:
            return Reply(401, refusal_answer(problem, body), problem)
        return body

    # --- provider callbacks ---------------------------------------------------------------

    async def provider_callback(self, request: Request) -> Response:
        started = time.perf_counter()
        provider_id: str = request.path_params["provider_id"]
        done = await self._callback(request, provider_id, request.path_params["path"])
        seconds = time.perf_counter() - started
        provider_label = provider_id if provider_id in self.providers else "unknown"
        CALLBACKS.labels(provider_label, done.action, done.status).inc()
        CALLBACK_SECONDS.labels(provider_label, done.action).observe(seconds)
        log.event(
            "callback",
            correlation_id=done.correlation_id,
            provider=provider_id[:64],
            protocol=done.protocol,
            action=done.action,
            status=done.status,
            http_status=done.wire.http,
            latency_ms=round(seconds * 1000, 2),
            request_id=done.request_id,
            transaction_id=done.transaction_id,
            **done.fields,
        )
        wire = done.wire
        return Response(wire.body, wire.http, headers=dict(wire.headers),
                         media_type=wire.content_type)  # fmt: skip

    async def _callback(self, request: Request, provider_id: str, path: str) -> _Done:
        """The one core path of every protocol: the provider's adapter reads the request,
        the session is checked, the callback forwarded and its outcome awaited, and the same
        adapter renders the answer."""
        provider = self.providers.get(provider_id)
        if provider is None:
            return self._refused(self.canonical, Refused(Refusal.UNKNOWN_PROVIDER, ""), http=404)
        body = await read_body(request, self.settings.request_body_bytes_max)
        if body is None:
            return self._refused(provider, Refused(Status.INVALID_REQUEST, "body too large"),
                                 http=413, status="BODY_TOO_LARGE")  # fmt: skip
        wire = WireRequest(
            method=request.method,
            path=path,
            query=request.url.query,
            headers=request.headers,  # case-insensitive: names read in lower case
            body=body,
            raw_path=signed_path(request.scope),
        )
        parsed = provider.adapter.parse(wire, provider.credentials, time.time())
        if isinstance(parsed, Refused):
            return self._refused(provider, parsed)
        cb = parsed.callback
        if not cb.session_token and cb.player_ref is not None:
            # a token-less call names the player by the reference we answered at
            # authenticate: authorised by the provider's signature plus an authentic
            # reference (no session lifetime), and forwarded with the reference as its token
            ref = verify_player_ref(self.session_secret, cb.player_ref)
            status = player_ref_status(self.tenants, ref, provider_id=provider_id,
                                       action=cb.action, game_id=cb.game_id,
                                       currency=cb.currency)  # fmt: skip
            if isinstance(ref, PlayerRef):
                check = TokenCheck(claims_from_ref(ref, cb.player_ref, cb.game_id))
                cb = replace(cb, session_token=cb.player_ref, player_id=ref.player_id)
            else:
                check = TokenCheck(None, problem=ref)
        else:
            check = verify_token(self.session_secret, cb.session_token, time.time_ns() // 1_000_000)
            if check.claims is not None and not cb.player_id:
                # the call carries only the token (pragmatic-v1 authenticate): it names the player
                cb = replace(cb, player_id=check.claims.player_id)
            status = check_session(
                check,
                provider_id=provider_id,
                player_id=cb.player_id,
                action=cb.action,
                game_id=cb.game_id,
                currency=cb.currency,
                settle_window_ms=self.settings.session_settle_window_s * 1000,
                zero_stake=cb.reference_transaction_id is None
                and cb.win_kind is not WinKind.REGULAR,
            )
            if (status is Status.OK and cb.player_ref is not None and check.claims is not None
                    and verify_player_ref(self.session_secret, cb.player_ref)
                    != ref_of(check.claims)):  # fmt: skip
                status = Status.SESSION_NOT_FOUND  # a reference beside a token names its player
        claims = check.claims
        if status is Status.OK and (
            claims is None or claims.operator_id not in self.operator_secrets
        ):
            status = Status.SESSION_NOT_FOUND  # the operator left the tenants file
        if status is not Status.OK or claims is None:
            currency = cb.currency or (claims.currency if claims else None)
            reason = check.problem.value if check.problem else None
            return self._done(provider, parsed, Result(status, currency),
                              fields={"reason": reason} if reason else {})  # fmt: skip
        refusal = self.rules.check(
            cb.action,
            operator_id=claims.operator_id,
            provider_id=provider_id,
            game_id=cb.game_id or claims.game_id,
            country=claims.country,
            currency=cb.currency or claims.currency,
            amount=cb.amount,
            now_ms=time.time_ns() // 1_000_000,
        )
        if refusal is not None and cb.action is not Action.BET:
            # an authenticate that would start play the rules forbid: no money, nothing to
            # decide, so answered here (a refused bet is decided and journaled by the saga)
            refused = Result(refusal.status, cb.currency or claims.currency)
            return self._done(provider, parsed, refused, fields={"rule": refusal.rule})
        result, corr, fields = await self._forward(provider_id, cb, claims, refusal)
        if refusal is not None:
            fields = {**fields, "rule": refusal.rule}
        if (result.status is Status.OK and cb.action in (Action.AUTHENTICATE, Action.BALANCE)
                and getattr(provider.adapter, "issues_player_ref", False)):  # fmt: skip
            # the adapter answers this as the player's id; later calls name the player by it
            player_ref = issue_player_ref(self.session_secret, ref_of(claims))
            result = replace(result, extra={**result.extra, "player_ref": player_ref})
        if cb.session_token == cb.player_ref:  # authorised by a reference: say so in the log
            fields = {**fields, "authorised_by": "player_ref"}
        if check.expired:  # a settlement after the session's end: say so in the log line
            fields = {**fields, "session_expired_for_ms": check.expired_for_ms}
        return self._done(provider, parsed, result, corr, fields)

    def _refused(self, provider: _Provider, refused: Refused, *, http: int | None = None,
                 status: str | None = None) -> _Done:  # fmt: skip
        extra = {"http": http} if http else {}
        wire = provider.adapter.render(
            refused.context, Result(refused.status, None, extra=extra), provider.credentials
        )
        return _Done(wire, status or refused.status, provider.adapter.protocol,
                     fields={"reason": refused.reason} if refused.reason else {})  # fmt: skip

    def _done(self, provider: _Provider, accepted: Accepted, result: Result,
              correlation_id: str | None = None,
              fields: dict[str, Any] | None = None) -> _Done:  # fmt: skip
        cb = accepted.callback
        wire = provider.adapter.render(accepted.context, result, provider.credentials)
        return _Done(wire, result.status, provider.adapter.protocol, cb.action.value.lower(),
                     correlation_id, cb.request_id, result.transaction_id or cb.transaction_id,
                     fields or {})  # fmt: skip

    async def _forward(
        self, provider_id: str, cb: Callback, claims: SessionClaims, refusal: RuleRefusal | None
    ) -> tuple[Result, str | None, dict[str, Any]]:
        """Publish the callback and await its outcome. A bet the compliance rules refuse is
        forwarded with its ``refusal``: the saga records it REJECTED (journaled, answered
        the same to a duplicate) and sends no wallet command."""
        currency = cb.currency or claims.currency
        router = self.router
        partition = router.reply_partition if router is not None else None
        retry = Result(Status.RETRY_LATER, currency)
        if router is None or partition is None:
            return retry, None, {"reason": "no reply partition"}
        corr = correlation_id(provider_id, claims.operator_id, cb)
        record = {
                "request_id": cb.request_id,
                "correlation_id": corr,
                "provider_id": provider_id,
                "operator_id": claims.operator_id,
                "player_id": cb.player_id,
                "action": cb.action.value,
                "session_token": cb.session_token,
                "transaction_id": cb.transaction_id,
                "reference_transaction_id": cb.reference_transaction_id,
                "round_id": cb.round_id,
                "game_id": cb.game_id or claims.game_id or None,
                "amount": cb.amount,
                "currency": currency,
                "round_closed": cb.round_closed,
                "received_at": datetime.now(UTC),
                "reply_to": self.instance_id,
                "reply_partition": partition,
                "mode": claims.mode,  # demo play never reaches the operator's wallet
                "win_kind": cb.win_kind.value,
                "campaign_id": cb.campaign_id,
                "wallet": TRANSFER if claims.operator_id in self.transfer_operators else SEAMLESS,
                "refusal": (
                    None
                    if refusal is None
                    else {"status": refusal.status.value, "rule": refusal.rule}
                ),
                # a session time limit counts from here (a player reference has no session)
                "session_started_at": (
                    datetime.fromtimestamp(claims.issued_at_ms / 1000, tz=UTC)
                    if claims.issued_at_ms else None
                ),
        }  # fmt: skip
        outcome = await self._decided(router, partition, record)
        if isinstance(outcome, str):
            return retry, corr, {"reason": outcome}
        result = Result(outcome.status, outcome.currency, outcome.balance,
                         outcome.transaction_id)  # fmt: skip
        return result, corr, {}

    async def _decided(self, router: OutcomeRouter, partition: int,
                       record: dict[str, Any]) -> Outcome | str:  # fmt: skip
        """Publish ``record`` (a ProviderRequest) to the saga and await its outcome on
        ``partition``, or say why there is none (the caller answers RETRY_LATER)."""
        corr = record["correlation_id"]
        wait_key = (record["provider_id"], record["operator_id"], record["player_id"],
                    record["request_id"], corr)  # fmt: skip
        fut = router.wait_for(wait_key, partition)
        if fut is None:
            return "too many pending"
        value = self.codec.encode("casino.agg.ProviderRequest", record)
        key = player_key(record["operator_id"], record["player_id"])
        try:
            async with asyncio.timeout(self.settings.ingress_outcome_wait_ms / 1000):
                await router.publish(self.names.requests, key, value)
                return await fut
        except TimeoutError as exc:
            TIMEOUTS.inc()
            return ("reply partition revoked" if isinstance(exc, ReplyPartitionRevoked)
                    else "no outcome in time")  # fmt: skip
        except PublishError as exc:
            log.warning("publish_failed", correlation_id=corr, error=str(exc))
            return "publish failed"
        finally:
            router.forget(wait_key, fut)

    # --- operator API ---------------------------------------------------------------------

    async def _operator(self, request: Request, endpoint: str) -> tuple[Operator, bytes] | Response:
        operator_id: str = request.path_params["operator_id"]
        authenticated = await self._authenticate(
            request, self.operator_secrets.get(operator_id), Refusal.UNKNOWN_OPERATOR
        )
        if isinstance(authenticated, Reply):
            return self._operator_reply(endpoint, authenticated.http, authenticated.body["status"])
        operator = self.tenants.operator(operator_id)
        assert operator is not None  # it has a secret
        return operator, authenticated

    def _operator_reply(
        self, endpoint: str, http: int, status: str, detail: str | None = None, *,
        with_status: bool = False, **extra: Any,
    ) -> Response:  # fmt: skip
        """``status`` is in the body of a refusal (and of a success ``with_status``)."""
        OPERATOR_CALLS.labels(endpoint, status).inc()
        body: dict[str, Any] = {"status": str(status)} if http >= 300 or with_status else {}
        if detail:
            body["detail"] = detail
        body.update(extra)
        log.event("operator_request", endpoint=endpoint, status=str(status), http_status=http)
        content = json.dumps(body, separators=(",", ":")).encode()
        return Response(content, http, media_type="application/json")

    async def open_session(self, request: Request) -> Response:
        found = await self._operator(request, "sessions")
        if isinstance(found, Response):
            return found
        operator, body = found
        parsed = parse_object(body)
        fields = parsed if isinstance(parsed, dict) else None
        req = validate_session_request(fields) if fields is not None else Invalid(str(parsed))
        if isinstance(req, Invalid):
            return self._operator_reply("sessions", 400, Status.INVALID_REQUEST, req.reason)
        now_ms = time.time_ns() // 1_000_000
        refused = session_refusal(self.tenants, self.rules, operator, req, now_ms)
        if refused is not None:
            status = refused.refusal
            log.event("session_refused", operator=operator.id, status=str(status),
                      rule=refused.rule)  # fmt: skip
            return self._operator_reply("sessions", OPERATOR_HTTP_STATUS[status], status,
                                        rule=refused.rule)  # fmt: skip
        game = self.tenants.game(req.game_id)
        assert game is not None
        claims = SessionClaims(
            session_id=new_session_id(
                operator.id, req.player_id, game.id, now_ms, secrets.token_hex(16)
            ),
            operator_id=operator.id,
            player_id=req.player_id,
            currency=req.currency,
            country=req.country,
            game_id=game.id,
            provider_id=game.provider,
            mode=req.mode,
            issued_at_ms=now_ms,
            expires_at_ms=now_ms + self.settings.session_ttl_s * 1000,
        )
        token = issue_token(self.session_secret, claims)
        if not await self._session_opened(claims):
            return self._operator_reply("sessions", 503, Status.RETRY_LATER)
        query = {"session_token": token, "mode": req.mode}
        if req.language:
            query["language"] = req.language
        if req.return_url:
            query["return_url"] = req.return_url
        if req.cashier_url:
            query["cashier_url"] = req.cashier_url
        base = str(request.base_url).rstrip("/")
        expires = datetime.fromtimestamp(claims.expires_at_ms / 1000, tz=UTC)
        return self._operator_reply(
            "sessions",
            201,
            "CREATED",
            session_token=token,
            launch_url=f"{base}/v1/launch/{game.provider}/{game.id}?{urlencode(query)}",
            expires_at=expires.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            session_id=claims.session_id,
        )

    async def _session_opened(self, claims: SessionClaims) -> bool:
        """Journal the opening (acks=all) before the token is handed out."""
        router = self.router
        if router is None or not router.producer_started:
            return False
        value = self.codec.encode(
            "casino.agg.events.SessionOpened",
            {
                "event_id": derive_id("ev", "SessionOpened", claims.session_id),
                "correlation_id": derive_id("corr", "session", claims.session_id),
                "operator_id": claims.operator_id,
                "player_id": claims.player_id,
                "provider_id": claims.provider_id,
                "occurred_at": datetime.fromtimestamp(claims.issued_at_ms / 1000, tz=UTC),
                "session_id": claims.session_id,
                "game_id": claims.game_id,
                "currency": claims.currency,
                "country": claims.country,
                "mode": claims.mode,
                "expires_at": datetime.fromtimestamp(claims.expires_at_ms / 1000, tz=UTC),
            },
        )
        try:
            async with asyncio.timeout(self.settings.ingress_outcome_wait_ms / 1000):
                await router.publish(
                    self.names.events, player_key(claims.operator_id, claims.player_id), value
                )
        except (TimeoutError, PublishError) as exc:
            log.warning("session_event_failed", session_id=claims.session_id, error=str(exc))
            return False
        return True

    async def games(self, request: Request) -> Response:
        found = await self._operator(request, "games")
        if isinstance(found, Response):
            return found
        operator, _ = found
        country = request.query_params.get("country", "")
        if not COUNTRY_PATTERN.fullmatch(country):  # "A1" is upper case, but no country
            return self._operator_reply("games", 400, Status.INVALID_REQUEST,
                                        "country: ISO 3166-1 alpha-2, upper case")  # fmt: skip
        games = [
            {"game_id": g.id, "provider_id": g.provider, "name": g.name}
            for g in offered_games(self.tenants, operator, country)
        ]
        return self._operator_reply(
            "games", 200, "OK", operator_id=operator.id, country=country, games=games
        )

    # --- game launch ------------------------------------------------------------------------

    async def launch(self, request: Request) -> Response:
        """``launch_url``: a redirect to the provider's game, or the launch itself for a
        provider without a game URL (:mod:`agg_ingress.launch`)."""
        provider_id: str = request.path_params["provider_id"]
        game_id: str = request.path_params["game_id"]
        q = request.query_params
        token = q.get("session_token", "")
        check = verify_token(self.session_secret, token, time.time_ns() // 1_000_000)
        provider = self.tenants.provider(provider_id)
        game = self.tenants.game(game_id)
        refusal = launch_refusal(check, provider, game, provider_id, game_id)
        claims = check.claims
        wants_json = "application/json" in request.headers.get("accept", "")
        if refusal is not None or claims is None or provider is None or game is None:
            assert refusal is not None
            LAUNCHES.labels(provider_id if provider else "unknown", refusal.status).inc()
            log.event("launch", provider=provider_id[:64], game=game_id[:64],
                      status=str(refusal.status), http_status=refusal.http)  # fmt: skip
            return _launch_refused(refusal, wants_json)
        bad = [n for n in ("return_url", "cashier_url")
               if (v := q.get(n)) is not None and not URL.fullmatch(v)]  # fmt: skip
        language = q.get("language")
        if language is not None and not LANGUAGE_PATTERN.fullmatch(language):
            bad.append("language")
        if bad:
            invalid = LaunchRefusal(400, Status.INVALID_REQUEST, f"{', '.join(bad)}: invalid")
            return _launch_refused(invalid, wants_json)
        params = launch_params(token, claims, game, language, q.get("return_url"),
                               q.get("cashier_url"))  # fmt: skip
        adapter = self.providers[provider_id].adapter if provider_id in self.providers else None
        protocol = adapter.protocol if adapter else provider.protocol
        launch_query = getattr(adapter, "launch_query", default_launch_query)
        query = launch_query(params)
        LAUNCHES.labels(provider_id, "OK").inc()
        log.event("launch", correlation_id=derive_id("corr", "session", claims.session_id),
                  provider=provider_id, game=game_id, mode=claims.mode, status="OK",
                  redirect=provider.game_url is not None)  # fmt: skip
        if provider.game_url is not None:
            location = game_url(provider.game_url, query)
            return Response(b"", 302, headers={"location": location, "cache-control": "no-store"})
        if wants_json:
            return Response(launch_json(params, game, provider, protocol, query), 200,
                            media_type="application/json")  # fmt: skip
        return Response(launch_page(params, game, provider), 200, media_type="text/html")

    # --- transfers (transfer-wallet operators) ---------------------------------------------

    async def transfer(self, request: Request) -> Response:
        found = await self._operator(request, "transfers")
        if isinstance(found, Response):
            return found
        operator, body = found
        player_id: str = request.path_params["player_id"]
        parsed = parse_object(body)
        if not PLAYER_ID.fullmatch(player_id):
            req: TransferRequest | Invalid = Invalid("player_id: 1-64 of [A-Za-z0-9_.:-]")
        elif isinstance(parsed, dict):
            req = validate_transfer(parsed)
        else:
            req = Invalid(str(parsed))
        if isinstance(req, Invalid):
            return self._operator_reply("transfers", 400, Status.INVALID_REQUEST, req.reason)
        if operator.id not in self.transfer_operators:
            return self._operator_reply("transfers", 409, WALLET_MODE_REFUSAL,
                                        "the operator's wallet.mode is not transfer")  # fmt: skip
        if req.currency not in operator.currencies:
            return self._operator_reply("transfers", 422, "CURRENCY_NOT_SUPPORTED")
        corr = derive_id("corr", "transfer", operator.id, player_id, req.transfer_id,
                         req.action.value)  # fmt: skip
        outcome = await self._operator_decided("transfers", "transfer_undecided", operator,
                                               player_id, corr, {
            "request_id": req.transfer_id, "provider_id": "", "action": req.action.value,
            "transaction_id": req.transfer_id, "amount": req.amount, "currency": req.currency,
        })  # fmt: skip
        if isinstance(outcome, Response):
            return outcome
        status = outcome.status
        log.event("transfer", correlation_id=corr, operator=operator.id,
                  direction=req.direction, status=str(status), amount=outcome.amount,
                  transfer_id=req.transfer_id)  # fmt: skip
        return self._operator_reply(
            "transfers", transfer_http_status(status), status, with_status=True,
            transfer_id=req.transfer_id, direction=req.direction, amount=outcome.amount,
            balance=outcome.balance, currency=outcome.currency,
        )  # fmt: skip

    # --- responsible gaming: a player's controls ---------------------------------------------

    async def player_controls(self, request: Request) -> Response:
        found = await self._operator(request, "controls")
        if isinstance(found, Response):
            return found
        operator, body = found
        player_id: str = request.path_params["player_id"]
        parsed = parse_object(body)
        if not PLAYER_ID.fullmatch(player_id):
            req: ControlsRequest | Invalid = Invalid("player_id: 1-64 of [A-Za-z0-9_.:-]")
        elif isinstance(parsed, dict):
            req = validate_controls(parsed)
        else:
            req = Invalid(str(parsed))
        if isinstance(req, Invalid):
            return self._operator_reply("controls", 400, Status.INVALID_REQUEST, req.reason)
        if req.deposit_limits() and operator.id not in self.transfer_operators:
            return self._operator_reply("controls", 409, WALLET_MODE_REFUSAL,
                                        "deposit limits are a transfer wallet's")  # fmt: skip
        if not req.currencies() <= set(operator.currencies):
            return self._operator_reply("controls", 422, "CURRENCY_NOT_SUPPORTED")
        corr = derive_id("corr", "controls", operator.id, player_id, req.change_id)
        outcome = await self._operator_decided("controls", "controls_undecided", operator,
                                               player_id, corr, {
            "request_id": req.change_id, "provider_id": "",
            "action": Action.PLAYER_CONTROLS.value, "transaction_id": req.change_id,
            "currency": "", "controls": controls_avro(req.controls),
        })  # fmt: skip
        if isinstance(outcome, Response):
            return outcome
        status = outcome.status
        log.event("player_controls", correlation_id=corr, operator=operator.id,
                  change_id=req.change_id, status=str(status), actor=req.controls.actor,
                  blocked=req.controls.blocked, self_excluded=req.controls.self_excluded,
                  limits=len(req.controls.limits))  # fmt: skip
        if status is not Status.OK:
            http = 409 if status is Status.DUPLICATE_CONFLICT else 503
            return self._operator_reply("controls", http, status)
        return self._operator_reply("controls", 200, status, with_status=True,
                                    change_id=req.change_id, player_id=player_id,
                                    controls=controls_json(req.controls))  # fmt: skip

    # --- free-spin campaigns ----------------------------------------------------------------

    async def grant_campaign(self, request: Request) -> Response:
        found = await self._operator(request, "campaigns")
        if isinstance(found, Response):
            return found
        operator, body = found
        player_id: str = request.path_params["player_id"]
        parsed = parse_object(body)
        now_ms = time.time_ns() // 1_000_000
        if not PLAYER_ID.fullmatch(player_id):
            req: CampaignRequest | Invalid = Invalid("player_id: 1-64 of [A-Za-z0-9_.:-]")
        elif isinstance(parsed, dict):
            req = validate_campaign(parsed)
        else:
            req = Invalid(str(parsed))
        if isinstance(req, Invalid):
            return self._operator_reply("campaigns", 400, Status.INVALID_REQUEST, req.reason)
        refused = campaign_refusal(self.tenants, operator, req)
        if refused is not None:
            return self._operator_reply("campaigns", campaign_http_status(refused), refused)
        if req.expires_at_ms <= now_ms:
            return self._operator_reply("campaigns", 422, CAMPAIGN_EXPIRED,
                                        "expires_at: in the past")  # fmt: skip
        corr = derive_id("corr", "campaign", operator.id, player_id, req.campaign_id, "GRANT")
        outcome = await self._campaign_decided(operator, player_id, corr, {
            "provider_id": req.provider_id, "action": Action.CAMPAIGN_GRANT.value,
            "transaction_id": req.campaign_id, "currency": req.currency,
            "campaign_id": req.campaign_id,
            "campaign": {"campaign_id": req.campaign_id, "games": list(req.games),
                         "spins": req.spins, "bet_value": req.bet_value,
                         "expires_at": req.expires_at},
        })  # fmt: skip
        if isinstance(outcome, Response):
            return outcome
        status = outcome.status
        log.event("campaign_granted", correlation_id=corr, operator=operator.id,
                  campaign_id=req.campaign_id, status=str(status))  # fmt: skip
        if status is Status.INVALID_REQUEST:  # valid here: expired by the saga's clock
            return self._operator_reply("campaigns", 422, CAMPAIGN_EXPIRED,
                                        "expires_at: passed when decided")  # fmt: skip
        if status is not Status.OK:
            return self._operator_reply("campaigns", campaign_http_status(status), status)
        return self._operator_reply(
            "campaigns", 200, status, with_status=True, campaign_id=req.campaign_id,
            provider_id=req.provider_id, games=list(req.games), spins=req.spins,
            spins_left=outcome.amount, bet_value=req.bet_value, currency=req.currency,
            expires_at=rfc3339(req.expires_at_ms),
        )  # fmt: skip

    async def cancel_campaign(self, request: Request) -> Response:
        found = await self._operator(request, "campaigns")
        if isinstance(found, Response):
            return found
        operator, body = found
        player_id: str = request.path_params["player_id"]
        campaign_id: str = request.path_params["campaign_id"]
        parsed = parse_object(body) if body.strip() else {}
        problem = None
        if not PLAYER_ID.fullmatch(player_id):
            problem = "player_id: 1-64 of [A-Za-z0-9_.:-]"
        elif not PLAYER_ID.fullmatch(campaign_id):
            problem = "campaign_id: 1-64 of [A-Za-z0-9_.:-]"
        elif (invalid := validate_cancel(parsed)) is not None:
            problem = invalid.reason
        if problem is not None:
            return self._operator_reply("campaigns", 400, Status.INVALID_REQUEST, problem)
        corr = derive_id("corr", "campaign", operator.id, player_id, campaign_id, "CANCEL")
        outcome = await self._campaign_decided(operator, player_id, corr, {
            "provider_id": "", "action": Action.CAMPAIGN_CANCEL.value,
            "transaction_id": campaign_id, "currency": "XXX", "campaign_id": campaign_id,
            "campaign": None,
        })  # fmt: skip
        if isinstance(outcome, Response):
            return outcome
        status = outcome.status
        log.event("campaign_cancelled", correlation_id=corr, operator=operator.id,
                  campaign_id=campaign_id, status=str(status))  # fmt: skip
        if status is Status.TRANSACTION_NOT_FOUND:
            return self._operator_reply("campaigns", 404, CAMPAIGN_NOT_FOUND)
        if status is not Status.OK:
            return self._operator_reply("campaigns", campaign_http_status(status), status)
        return self._operator_reply("campaigns", 200, status, with_status=True,
                                    campaign_id=campaign_id,
                                    spins_left=outcome.amount)  # fmt: skip

    async def _campaign_decided(self, operator: Operator, player_id: str, corr: str,
                                fields: dict[str, Any]) -> Outcome | Response:  # fmt: skip
        """Carry a campaign call to the saga (in the player's order) and await its answer."""
        return await self._operator_decided(
            "campaigns", "campaign_undecided", operator, player_id, corr,
            {"request_id": f"{fields['action']}:{fields['campaign_id']}", **fields},
        )  # fmt: skip

    async def _operator_decided(self, endpoint: str, undecided: str, operator: Operator,
                                player_id: str, corr: str,
                                fields: dict[str, Any]) -> Outcome | Response:  # fmt: skip
        """Carry an operator API call (a ProviderRequest of provider ``""`` or a campaign's,
        with ``fields`` naming its request id, action and payload) to the player's saga, in
        the player's order, and await its answer; 503 RETRY_LATER (logged ``undecided``)
        when none comes."""
        router = self.router
        partition = router.reply_partition if router is not None else None
        if router is None or partition is None:
            return self._operator_reply(endpoint, 503, Status.RETRY_LATER)
        wallet = TRANSFER if operator.id in self.transfer_operators else SEAMLESS
        outcome = await self._decided(router, partition, {
            "correlation_id": corr, "operator_id": operator.id, "player_id": player_id,
            "session_token": "", "reference_transaction_id": None, "round_id": None,
            "game_id": None, "amount": None, "round_closed": False,
            "received_at": datetime.now(UTC), "reply_to": self.instance_id,
            "reply_partition": partition, "mode": "real", "wallet": wallet, **fields,
        })  # fmt: skip
        if isinstance(outcome, str):
            log.warning(undecided, correlation_id=corr, reason=outcome)
            return self._operator_reply(endpoint, 503, Status.RETRY_LATER)
        return outcome

    async def player_campaigns(self, request: Request) -> Response:
        return await self._read(request, "campaigns")

    # --- read API (projections) ------------------------------------------------------------

    async def player_balance(self, request: Request) -> Response:
        return await self._read(request, "balance")

    async def player_controls_read(self, request: Request) -> Response:
        return await self._read(request, "controls")

    async def player_transactions(self, request: Request) -> Response:
        return await self._read(request, "transactions")

    async def _read(self, request: Request, endpoint: str) -> Response:
        found = await self._operator(request, endpoint)
        if isinstance(found, Response):
            return found
        operator, _ = found
        player_id: str = request.path_params["player_id"]
        if not PLAYER_ID.fullmatch(player_id):
            return self._operator_reply(endpoint, 400, Status.INVALID_REQUEST,
                                        "player_id: 1-64 of [A-Za-z0-9_.:-]")  # fmt: skip
        reader = self.reader
        if reader is None:
            return self._operator_reply(
                endpoint, 503, Status.RETRY_LATER, "projections unavailable"
            )
        try:
            if endpoint == "campaigns":
                campaigns = await reader.campaigns(operator.id, player_id)
                return self._operator_reply(endpoint, 200, "OK", operator_id=operator.id,
                                            player_id=player_id,
                                            campaigns=campaigns)  # fmt: skip
            if endpoint == "controls":
                stated = await reader.controls(operator.id, player_id)
                if stated is None:
                    return self._operator_reply(endpoint, 404, "PLAYER_NOT_FOUND",
                                                "no controls stated for the player")  # fmt: skip
                return self._operator_reply(endpoint, 200, "OK", operator_id=operator.id,
                                            player_id=player_id, **stated)  # fmt: skip
            if endpoint == "balance":
                balances = await reader.balances(operator.id, player_id)
                if not balances:
                    return self._operator_reply(endpoint, 404, "PLAYER_NOT_FOUND")
                return self._operator_reply(endpoint, 200, "OK", operator_id=operator.id,
                                            player_id=player_id, balances=balances)  # fmt: skip
            items, cursor = await reader.transactions(
                operator.id, player_id, dict(request.query_params)
            )
        except ReadError as exc:
            return self._operator_reply(endpoint, 400, Status.INVALID_REQUEST, str(exc))
        except (PoolTimeout, psycopg.Error) as exc:
            log.warning("projections_unavailable", error=str(exc))
            return self._operator_reply(
                endpoint, 503, Status.RETRY_LATER, "projections unavailable"
            )
        return self._operator_reply(endpoint, 200, "OK", operator_id=operator.id,
                                    player_id=player_id, transactions=items,
                                    next_cursor=cursor)  # fmt: skip

    # --- health ---------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        router = self.router
        ready = router is not None and router.ready
        body = {
            "status": "ok" if ready else "unavailable",
            "instance_id": self.instance_id,
            "reply_partition": router.reply_partition if router else None,
            "producer_started": bool(router and router.producer_started),
        }
        return Response(json.dumps(body).encode(), 200 if ready else 503,
                        media_type="application/json")  # fmt: skip


def _launch_refused(refusal: LaunchRefusal, wants_json: bool) -> Response:
    """A refused launch as JSON for a caller that asks for it, else as a page (the player's
    browser); every refusal alike."""
    if wants_json:
        body = {"status": str(refusal.status), "detail": refusal.detail}
        return Response(json.dumps(body).encode(), refusal.http, media_type="application/json")
    e = html.escape
    page = f"<!doctype html><title>{e(refusal.status)}</title><p>{e(refusal.detail)}</p>"
    return Response(page.encode(), refusal.http, media_type="text/html")


def build_app(settings: Settings, tenants: Tenants, instance_id: str | None = None) -> IngressApp:
    """The ASGI app; its Kafka clients start and stop with the app's lifespan (they belong to
    the running event loop). ``app.state.ingress`` is the :class:`Ingress`."""
    ingress = Ingress(settings, tenants, instance_id)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # the tenants document of the config topic before the first request, then followed
        watcher = TenantsWatcher(
            settings, ingress.lookups, client_id=f"{ingress.instance_id}-config"
        )
        await watcher.start()
        stop_watching = asyncio.Event()
        following = asyncio.create_task(watcher.follow(stop_watching))
        try:
            router = OutcomeRouter(settings, ingress.instance_id)
            ingress.router = router
            await router.start()
            reader = ProjectionReader(settings.database_url)
            await reader.open()  # connects in the background: callbacks never wait for it
            ingress.reader = reader
            try:
                yield
            finally:
                ingress.router = None
                ingress.reader = None
                await reader.close()
                await router.stop()
        finally:
            stop_watching.set()
            await following

    routes = [
        Route(
            "/v1/providers/{provider_id}/{path:path}",
            ingress.provider_callback,
            methods=["POST"],
        ),
        Route("/v1/operators/{operator_id}/sessions", ingress.open_session, methods=["POST"]),
        Route("/v1/operators/{operator_id}/games", ingress.games, methods=["GET"]),
        Route(LAUNCH_PATH, ingress.launch, methods=["GET"]),
        Route(
            "/v1/operators/{operator_id}/players/{player_id}/transfers",
            ingress.transfer,
            methods=["POST"],
        ),
        Route(
            "/v1/operators/{operator_id}/players/{player_id}/campaigns",
            ingress.grant_campaign,
            methods=["POST"],
        ),
        Route(
            "/v1/operators/{operator_id}/players/{player_id}/campaigns",
            ingress.player_campaigns,
            methods=["GET"],
        ),
        Route(
            "/v1/operators/{operator_id}/players/{player_id}/campaigns/{campaign_id}/cancel",
            ingress.cancel_campaign,
            methods=["POST"],
        ),
        Route(
            "/v1/operators/{operator_id}/players/{player_id}/controls",
            ingress.player_controls,
            methods=["POST"],
        ),
        Route(
            "/v1/operators/{operator_id}/players/{player_id}/controls",
            ingress.player_controls_read,
            methods=["GET"],
        ),
        Route(
            "/v1/operators/{operator_id}/players/{player_id}/balance",
            ingress.player_balance,
            methods=["GET"],
        ),
        Route(
            "/v1/operators/{operator_id}/players/{player_id}/transactions",
            ingress.player_transactions,
            methods=["GET"],
        ),
        Route("/healthz", ingress.healthz, methods=["GET"]),
        Route("/metrics", _Asgi(make_asgi_app()), methods=["GET"]),
        *specs.routes(),  # GET /v1/openapi[/{name}]: the API documents (docs/openapi/)
    ]
    app = IngressApp(routes=routes, lifespan=lifespan)
    app.state.ingress = ingress
    return app
