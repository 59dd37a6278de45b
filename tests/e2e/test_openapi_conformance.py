"""The running ingress against its API documents (``docs/openapi/``): schemathesis generates
requests from every operation of every document, valid ones and invalid ones, signs each
(HMAC for the canonical protocol and the operator API, RSA for hub88-v1, the MD5 form hash
for pragmatic-v1, the query token for evolution-v1; the game launch is unsigned) and sends it to the
ingress of a real pipeline (saga worker, reference wallet and projector as processes, on the
session's Kafka and PostgreSQL). Money calls carry session tokens opened through the operator
API (pragmatic-v1: the player references its authenticate answered) half of the time, so they
reach the saga and the wallet; launches carry them too.

Every answer must be documented (status code, content type, headers, body schema), none may
be a 5xx other than the documented 503, a valid provider body is never refused as malformed,
and every status code a document gives is reached: by the generated requests, or else by a
targeted one. The 503s the documents give for an ingress without its Kafka producer and its
PostgreSQL pool are reached on the same app whose lifespan has not started them.

Examples per operation: a few in ``make test``, many under ``make fuzz`` (``AGG_FUZZ=1``)."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import httpx
import pytest
import requests
import schemathesis
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from agg_config.settings import Settings
from agg_config.tenants import load_tenants
from agg_ingress import specs
from agg_ingress.adapters import evolution, hub88, pragmatic
from agg_ingress.app import build_app
from agg_ingress.client import SIGNATURE_HEADER, TIMESTAMP_HEADER, encode_body, sign
from agg_ingress.sessions import issue_token, verify_token
from tests.e2e.conftest import GAME, OPERATOR, PROVIDER, Pipeline
from tests.fuzz_budget import examples
from tests.unit.test_openapi_documents import integral_amount as _integral_amount

pytestmark = pytest.mark.fuzz

DOCUMENTS = {
    name: d for name, d in specs.load_documents().items() if d.surface != "operator-wallet"
}
"""The ingress's documents (the operator-wallet ones: test_wallet_openapi_conformance)."""
HUB, HUB_GAME = "prov-oahub", "oahub-roulette"
PP, PP_GAME, PP_SECRET = "prov-oapp", "oapp-doghouse", "oa-pragmatic-secret-0001"
PP_GAME_URL = "https://games.pp.example/launch?brand=agg"
"""pragmatic-v1's game has a game URL: its launch is the 302 redirect."""
FORM = "application/x-www-form-urlencoded"
EVO, EVO_GAME, EVO_SECRET = "prov-oaevo", "oaevo-roulette", "oa-evolution-secret-0001"
HUB_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
"""The hub88-v1 provider's key (it signs requests); ours for it signs the answers."""
OUR_HUB_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PLAYERS = 4
"""Players with an open session per provider: money calls of the same few players meet each
other's transactions (duplicates, rollbacks of real bets, wins on real rounds)."""
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
SEEN: dict[tuple[str, str, str], set[int]] = defaultdict(set)
"""(document, path, METHOD) -> the HTTP statuses the generated requests got."""


def _pem_public(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _pem_private(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()  # fmt: skip


# --- signing: requests' auth hooks see the exact bytes and path that are sent --------------


class HmacAuth(requests.auth.AuthBase):
    """``X-Agg-Timestamp`` / ``X-Agg-Signature`` over the prepared request."""

    def __init__(self, secret: bytes | str):
        self.secret = secret

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        body = r.body or b""
        raw = body.encode() if isinstance(body, str) else body
        assert isinstance(raw, bytes)
        ts = str(int(time.time()))
        r.headers[TIMESTAMP_HEADER] = ts
        r.headers[SIGNATURE_HEADER] = sign(self.secret, ts, r.method or "", r.path_url, raw)
        return r


class Hub88Auth(requests.auth.AuthBase):
    """``X-Hub88-Signature`` (RSA PKCS#1 v1.5 SHA-256) over the prepared body."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        body = r.body or b""
        raw = body.encode() if isinstance(body, str) else body
        assert isinstance(raw, bytes)
        r.headers["X-Hub88-Signature"] = hub88.sign(HUB_KEY, raw)
        return r


class PragmaticAuth(requests.auth.AuthBase):
    """The form's ``hash`` (MD5 of the other fields, sorted, with the secret appended) set
    over the prepared body; a body that is no form is sent as generated."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        body = r.body or b""
        raw = body.encode() if isinstance(body, str) else body
        assert isinstance(raw, bytes)
        try:
            pairs = parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=bool(raw),
                              errors="strict")  # fmt: skip
        except ValueError:
            return r
        params = dict(pairs)
        if len(params) != len(pairs):
            return r  # a field given twice: refused before the hash is read
        params.pop("hash", None)
        params["hash"] = pragmatic.request_hash(params, PP_SECRET.encode())
        r.prepare_body(urlencode(params).encode(), None)
        return r


class EvolutionAuth(requests.auth.AuthBase):
    """The shared secret as the one ``authToken`` query parameter (replacing any value the
    generator drew for the document's security scheme)."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        parts = urlsplit(r.url or "")
        kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                if k != evolution.AUTH_PARAMETER]  # fmt: skip
        query = urlencode([*kept, (evolution.AUTH_PARAMETER, EVO_SECRET)], quote_via=quote)
        r.url = urlunsplit(parts._replace(query=query))
        return r


def _session(auth: requests.auth.AuthBase | None) -> requests.Session:
    session = requests.Session()
    session.auth = auth
    return session


# --- the pipeline ----------------------------------------------------------------------------


@dataclass
class Stack:
    pipeline: Pipeline
    settings: Settings
    sessions: dict[str, requests.Session]
    """By document: a session signing as that document's caller (the service's signs not)."""
    nova: list[tuple[str, str]]
    """(player, session token) of prov-nova's game, EUR."""
    hub: list[tuple[str, str]]
    """(player, session token) of the hub88-v1 provider's game, EUR."""
    pp: list[tuple[str, str]]
    """(player reference, session token) of the pragmatic-v1 provider's game, EUR."""
    evo: list[tuple[str, str]]
    """(player, session token) of the evolution-v1 provider's game, EUR."""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.pipeline.ingress_port}"


def _tenants_file(settings: Settings, path: Path) -> Path:
    data = yaml.safe_load(settings.tenants_file.read_text())
    data["providers"].append(
        {"id": HUB, "name": "Hub", "protocol": "hub88-v1", "public_key": _pem_public(HUB_KEY),
         "signing_key": {"value": _pem_private(OUR_HUB_KEY)}}
    )  # fmt: skip
    data["providers"] += [
        {"id": PP, "name": "Pragmatic-shaped", "protocol": "pragmatic-v1",
         "secret": {"value": PP_SECRET}, "game_url": PP_GAME_URL},
        {"id": EVO, "name": "Evolution-shaped", "protocol": "evolution-v1",
         "secret": {"value": EVO_SECRET}},
    ]  # fmt: skip
    data["games"] += [
        {"id": HUB_GAME, "provider": HUB, "name": "Hub Roulette"},
        {"id": PP_GAME, "provider": PP, "name": "Dog House", "code": "vs20doghouse"},
        {"id": EVO_GAME, "provider": EVO, "name": "Live Roulette"},
    ]
    data["operators"][0]["providers"] += [HUB, PP, EVO]
    # its own transfer-wallet operator: the raw transfers sent here have no reference
    # operator's record, and must not be taken for op-delta's by a reconciliation
    data["operators"].append({
        "id": TRANSFER_OPERATOR, "name": "Conformance transfers",
        "secret": {"value": "conformance-transfer-op-secret"}, "currencies": ["EUR"],
        "providers": ["prov-nova"], "wallet": {"mode": "transfer"},
    })  # fmt: skip
    path.write_text(yaml.safe_dump(data))
    return path


def _open_sessions(pipeline: Pipeline, game: str) -> list[tuple[str, str]]:
    return [pipeline.new_player(game=game) for _ in range(PLAYERS)]


def _pp_players(pipeline: Pipeline) -> list[tuple[str, str]]:
    """Sessions of the pragmatic-v1 game, each authenticated: the player reference it answers
    names the player in every later call."""
    out = []
    for _, token in _open_sessions(pipeline, PP_GAME):
        params = {"providerId": "PragmaticPlay", "token": token, "gameId": PP_GAME}
        params["hash"] = pragmatic.request_hash(params, PP_SECRET.encode())
        answer = pipeline.http.post(f"/v1/providers/{PP}/authenticate.html",
                                    content=urlencode(params).encode(),
                                    headers={"Content-Type": FORM})  # fmt: skip
        assert answer.json()["error"] == 0, answer.text
        out.append((answer.json()["userId"], token))
    return out


@pytest.fixture(scope="module")
def stack(
    settings: Settings, catalogue_topics: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("openapi")
    tenants = _tenants_file(settings, root / "tenants.yaml")
    local = settings.model_copy(update={"tenants_file": tenants})
    pipeline = Pipeline(local, root, env={"AGG_TENANTS_FILE": str(tenants)})
    try:
        pipeline.start()
        operator = HmacAuth(pipeline.operator_secret)
        yield Stack(
            pipeline,
            local,
            {
                "provider-canonical-v1": _session(HmacAuth(pipeline.provider_secret)),
                "provider-hub88-v1": _session(Hub88Auth()),
                "operator-v1": _session(operator),
                "service-v1": _session(None),
                "provider-pragmatic-v1": _session(PragmaticAuth()),
                "provider-evolution-v1": _session(EvolutionAuth()),
                "launch-v1": _session(None),
            },
            _open_sessions(pipeline, GAME),
            _open_sessions(pipeline, HUB_GAME),
            _pp_players(pipeline),
            _open_sessions(pipeline, EVO_GAME),
        )
    finally:
        pipeline.stop()


# --- generated requests ------------------------------------------------------------------------

OPERATIONS = [
    (d.name, path, method.upper())
    for d in DOCUMENTS.values()
    for path, item in d.spec["paths"].items()
    for method in item
    if method in {"get", "post"}
]
FIXED: dict[str, dict[str, str]] = {
    "provider-canonical-v1": {"provider_id": PROVIDER},
    "provider-hub88-v1": {"provider_id": HUB},
    "operator-v1": {"operator_id": OPERATOR},
    "provider-pragmatic-v1": {"provider_id": PP},
    "provider-evolution-v1": {"provider_id": EVO},
}
"""Path parameters that name the signer: always a tenant (unknown ones: targeted requests)."""
MALFORMED: dict[str, set[int | str]] = {
    "provider-canonical-v1": {400},
    "provider-hub88-v1": {"RS_ERROR_WRONG_SYNTAX", "RS_ERROR_WRONG_TYPES"},
    "operator-v1": {400},
}
"""What a refusal of a body as malformed looks like, per document."""

_SCHEMAS = {name: schemathesis.openapi.from_dict(d.spec) for name, d in DOCUMENTS.items()}


def _with_session(name: str, path: str, body: dict[str, Any], st_: Stack, which: int) -> None:
    """Make a generated body one of an open session's (its token, player, game, currency)."""
    if name == "provider-canonical-v1":
        player, token = st_.nova[which]
        body.update(session_token=token, player_id=player)
        if body.get("game_id") is not None or not path.endswith("rollback"):
            body["game_id"] = GAME
        if "currency" in body and body["currency"] is not None:
            body["currency"] = "EUR"
    elif name == "provider-hub88-v1":
        player, token = st_.hub[which]
        body.update(token=token, user=player)
        if body.get("game_code") is not None or not path.endswith("rollback"):
            body["game_code"] = HUB_GAME
        if path.endswith(("/bet", "/win")):
            body["currency"] = "EUR"  # a whole number of cents: a multiple of 1000 units
            body["amount"] = max(body["amount"] - body["amount"] % 1000, 1000)
    elif name == "provider-pragmatic-v1":
        ref, token = st_.pp[which]
        if "token" in body or path.endswith("/authenticate.html"):
            body["token"] = token
        if not path.endswith("/authenticate.html"):
            body["userId"] = ref
        if "gameId" in body:
            body["gameId"] = PP_GAME
        if "currency" in body:
            body["currency"] = "EUR"
    elif name == "provider-evolution-v1":
        player, token = st_.evo[which]
        body.update(sid=token, userId=player)
        if "currency" in body or not path.endswith("/check"):
            body["currency"] = "EUR"
        table = ((body.get("game") or {}).get("details") or {}).get("table") or {}
        if isinstance(table, dict) and "id" in table:
            table["id"] = EVO_GAME
    elif path.endswith("/campaigns"):  # a grant of a game the operator offers
        body.update(provider_id=PROVIDER, games=[GAME], currency="EUR")
    elif path.endswith("/sessions"):
        body["game_id"] = [GAME, HUB_GAME, "nova-gemrush", "orbit-roulette"][which]


def _route_safe(value: Any) -> bool:
    """A path parameter that stays one path segment (else it is another route's request)."""
    text = str(value)
    return bool(text) and "/" not in text and text not in {".", ".."}


def _run(stack: Stack, name: str, path: str, method: str, mode: schemathesis.GenerationMode,
         count: int) -> None:  # fmt: skip
    operation = _SCHEMAS[name][path][method]
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=FIXED.get(name, {}))
    session = stack.sessions.get(name)
    if session is None:
        pytest.fail(f"{name}: no signer for its requests (add one to the stack fixture)")

    @settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=strategy, inject=st.booleans(), which=st.integers(0, PLAYERS - 1))
    def check(case: Any, inject: bool, which: int) -> None:
        if not all(_route_safe(v) for v in (case.path_parameters or {}).values()):
            return
        positive = mode is schemathesis.GenerationMode.POSITIVE
        if positive:
            case.body = _integral_amount(case.body)
            if inject and isinstance(case.body, dict):
                body = dict(case.body)
                _with_session(name, path, body, stack, which)
                case.body = body
            if inject and path.endswith("/players/{player_id}/balance"):
                case.path_parameters = {**case.path_parameters, "player_id": stack.nova[which][0]}
            if inject and name == "launch-v1":
                provider, game, token = [(PROVIDER, GAME, stack.nova[which][1]),
                                         (PP, PP_GAME, stack.pp[which][1])][which % 2]  # fmt: skip
                case.path_parameters = {"provider_id": provider, "game_id": game}
                case.query = {**(case.query or {}), "session_token": token}
        response = case.call(base_url=stack.base_url, session=session, timeout=15)
        SEEN[(name, path, method)].add(response.status_code)
        assert response.status_code < 500 or response.status_code == 503, (
            f"{method} {path}: {response.status_code} {response.text[:500]}"
        )
        case.validate_response(response, checks=CHECKS)
        if positive and name in MALFORMED and method == "POST":
            answer = response.json() if response.status_code == 200 else {}
            refused = {response.status_code, answer.get("status")} & MALFORMED[name]
            assert not refused, f"valid body refused: {case.body!r} -> {response.text}"
        if name == "provider-hub88-v1" and response.status_code == 200:
            [signature] = response.headers.get("x-hub88-signature") or [None]
            assert hub88.verify(OUR_HUB_KEY.public_key(), response.content, signature)

    check()


@pytest.mark.parametrize(
    "mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
    ids=["valid", "invalid"],
)  # fmt: skip
@pytest.mark.parametrize(("name", "path", "method"), OPERATIONS,
                         ids=[f"{m} {p}" for _, p, m in OPERATIONS])  # fmt: skip
def test_generated_requests_get_documented_answers(
    stack: Stack, name: str, path: str, method: str, mode: schemathesis.GenerationMode
) -> None:
    if mode is schemathesis.GenerationMode.NEGATIVE and not _has_inputs(name, path, method):
        pytest.skip("no inputs to make invalid")
    if mode is schemathesis.GenerationMode.NEGATIVE and path == "/v1/openapi/{name}":
        pytest.skip("its one invalid input, an empty name, is another route's path")
    _run(stack, name, path, method, mode, examples(12, 400))


def _has_inputs(name: str, path: str, method: str) -> bool:
    op = DOCUMENTS[name].spec["paths"][path][method.lower()]
    return bool(op.get("parameters") or op.get("requestBody"))


# --- every documented status, reached -------------------------------------------------------


def _documented() -> dict[tuple[str, str, str], set[int]]:
    out: dict[tuple[str, str, str], set[int]] = {}
    for name, path, method in OPERATIONS:
        responses = DOCUMENTS[name].spec["paths"][path][method.lower()]["responses"]
        out[(name, path, method)] = {int(code) for code in responses}
    return out


def _send(stack: Stack, name: str, method: str, path: str, body: bytes = b"",
          auth: str = "signed", content_type: str = "application/json",
          ) -> requests.Response:  # fmt: skip
    session = stack.sessions[name] if auth == "signed" else _session(None)
    return session.request(method, stack.base_url + path, data=body or None, timeout=15,
                           headers={"Content-Type": content_type})  # fmt: skip


def _canonical(stack: Stack, action: str, fields: dict[str, Any], provider: str = PROVIDER,
               auth: str = "signed") -> requests.Response:  # fmt: skip
    path = f"/v1/providers/{provider}/wallet/{action}"
    return _send(stack, "provider-canonical-v1", "POST", path, encode_body(fields), auth)


def _money(stack: Stack, action: str, **fields: Any) -> dict[str, Any]:
    player, token = stack.nova[0]
    body: dict[str, Any] = {"request_id": uuid.uuid4().hex, "session_token": token,
                            "player_id": player, "round_id": "rnd-oa", "game_id": GAME,
                            "currency": "EUR", "amount": 1}  # fmt: skip
    body.update(fields)
    return body


def _session_call(stack: Stack) -> dict[str, Any]:
    player, token = stack.nova[0]
    return {"request_id": uuid.uuid4().hex, "session_token": token, "player_id": player}


def _conflict(stack: Stack, action: str) -> requests.Response:
    txn = f"oa-{uuid.uuid4().hex[:12]}"
    extra = {"reference_transaction_id": f"oa-{uuid.uuid4().hex[:12]}"}
    first = _money(stack, action, transaction_id=txn, amount=1, **extra)
    assert _canonical(stack, action, first).status_code == 200
    again = {**first, "request_id": uuid.uuid4().hex, "amount": 2}
    if action == "rollback":
        again["reference_transaction_id"] = f"oa-{uuid.uuid4().hex[:12]}"
    return _canonical(stack, action, again)


def _degraded(stack: Stack, method: str, path: str, body: bytes, secret: bytes | str | None
              ) -> httpx.Response:  # fmt: skip
    """The request on the same app whose lifespan has not started its Kafka producer and
    PostgreSQL pool (as while an instance starts or stops)."""
    app = build_app(stack.settings, load_tenants(stack.settings.tenants_file))

    async def go() -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            ts = str(int(time.time()))
            headers.update({TIMESTAMP_HEADER: ts,
                            SIGNATURE_HEADER: sign(secret, ts, method, path, body)})  # fmt: skip
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
            return await client.request(method, path, content=body, headers=headers)

    return asyncio.run(go())


TOO_LARGE = encode_body({"pad": "x" * 20_000})
CANONICAL = "provider-canonical-v1"
OPERATOR_DOC = "operator-v1"
WALLET = "/v1/providers/{provider_id}/wallet/"
PLAYER = "/v1/operators/{operator_id}/players/{player_id}/"
TRANSFER_OPERATOR = "op-oa-transfer"
"""A transfer-wallet operator of this module's tenants file."""


def _targeted(stack: Stack) -> dict[tuple[str, str, str, int], Callable[[], Any]]:
    """A request for each documented status, by (document, path, METHOD, status)."""
    pipeline = stack.pipeline
    op_secret, prov_secret = pipeline.operator_secret, pipeline.provider_secret
    sessions = f"/v1/operators/{OPERATOR}/sessions"
    out: dict[tuple[str, str, str, int], Callable[[], Any]] = {}
    for action in ("authenticate", "balance", "bet", "win", "rollback"):
        key = (CANONICAL, WALLET + action, "POST")
        money = action in ("bet", "win", "rollback")

        def valid(action: str = action, money: bool = money) -> dict[str, Any]:
            if not money:
                return _session_call(stack)
            return _money(stack, action, transaction_id=f"oa-{uuid.uuid4().hex[:12]}",
                          reference_transaction_id=f"oa-{uuid.uuid4().hex[:12]}")  # fmt: skip

        out[(*key, 200)] = lambda a=action, v=valid: _canonical(stack, a, v())
        out[(*key, 400)] = lambda a=action: _canonical(stack, a, {})
        out[(*key, 401)] = lambda a=action, v=valid: _canonical(stack, a, v(), auth="none")
        out[(*key, 404)] = lambda a=action, v=valid: _canonical(stack, a, v(), "prov-nobody")
        out[(*key, 413)] = lambda a=action: _send(
            stack, CANONICAL, "POST", f"/v1/providers/{PROVIDER}/wallet/{a}", TOO_LARGE
        )
        out[(*key, 503)] = lambda a=action, v=valid: _degraded(
            stack, "POST", f"/v1/providers/{PROVIDER}/wallet/{a}", encode_body(v()), prov_secret
        )
        if money:
            out[(*key, 409)] = lambda a=action: _conflict(stack, a)
    for tail in hub88.PATHS:
        key = ("provider-hub88-v1", "/v1/providers/{provider_id}/" + tail, "POST")
        out[(*key, 200)] = lambda t=tail: _hub88(stack, t, HUB)
        out[(*key, 404)] = lambda t=tail: _hub88(stack, t, "prov-nobody")
    key = (OPERATOR_DOC, "/v1/operators/{operator_id}/sessions", "POST")

    def opening(**fields: Any) -> bytes:
        base = {"player_id": f"oa-{uuid.uuid4().hex[:10]}", "currency": "EUR", "country": "MT",
                "game_id": GAME, "mode": "real"}  # fmt: skip
        return encode_body({**base, **fields})

    out[(*key, 201)] = lambda: _send(stack, OPERATOR_DOC, "POST", sessions, opening())
    out[(*key, 400)] = lambda: _send(stack, OPERATOR_DOC, "POST", sessions, b"{}")
    out[(*key, 401)] = lambda: _send(stack, OPERATOR_DOC, "POST", sessions, opening(), "none")
    out[(*key, 403)] = lambda: _send(stack, OPERATOR_DOC, "POST", sessions,
                                     opening(country="US"))  # fmt: skip
    out[(*key, 404)] = lambda: _send(stack, OPERATOR_DOC, "POST", sessions,
                                     opening(game_id="no-such-game"))  # fmt: skip
    out[(*key, 413)] = lambda: _send(stack, OPERATOR_DOC, "POST", sessions, TOO_LARGE)
    out[(*key, 422)] = lambda: _send(stack, OPERATOR_DOC, "POST", sessions,
                                     opening(currency="GBP"))  # fmt: skip
    out[(*key, 503)] = lambda: _degraded(stack, "POST", sessions, opening(), op_secret)
    games = f"/v1/operators/{OPERATOR}/games"
    key = (OPERATOR_DOC, "/v1/operators/{operator_id}/games", "GET")
    out[(*key, 200)] = lambda: _send(stack, OPERATOR_DOC, "GET", games + "?country=MT")
    out[(*key, 400)] = lambda: _send(stack, OPERATOR_DOC, "GET", games + "?country=M1")
    out[(*key, 401)] = lambda: _send(stack, OPERATOR_DOC, "GET", games + "?country=MT",
                                     auth="none")  # fmt: skip
    out[(*key, 404)] = lambda: _send(stack, OPERATOR_DOC, "GET",
                                     "/v1/operators/op-nobody/games?country=MT")  # fmt: skip
    out[(*key, 413)] = lambda: _send(stack, OPERATOR_DOC, "GET", games + "?country=MT",
                                     TOO_LARGE)  # fmt: skip
    player = stack.nova[0][0]
    for tail in ("balance", "transactions"):
        key = (OPERATOR_DOC, PLAYER + tail, "GET")
        own = f"/v1/operators/{OPERATOR}/players/{player}/{tail}"
        out[(*key, 200)] = lambda own=own: _projected(stack, own)
        out[(*key, 400)] = lambda t=tail: _send(
            stack, OPERATOR_DOC, "GET", f"/v1/operators/{OPERATOR}/players/bad!id/{t}"
        )
        out[(*key, 401)] = lambda own=own: _send(stack, OPERATOR_DOC, "GET", own, auth="none")
        out[(*key, 413)] = lambda own=own: _send(stack, OPERATOR_DOC, "GET", own, TOO_LARGE)
        out[(*key, 503)] = lambda own=own: _degraded(stack, "GET", own, b"", op_secret)
        if tail == "balance":
            out[(*key, 404)] = lambda t=tail: _send(
                stack, OPERATOR_DOC, "GET", f"/v1/operators/{OPERATOR}/players/oa-nobody/{t}"
            )
        else:
            out[(*key, 404)] = lambda t=tail: _send(
                stack, OPERATOR_DOC, "GET", f"/v1/operators/op-nobody/players/p1/{t}"
            )
    key = (OPERATOR_DOC, PLAYER + "transfers", "POST")
    delta = load_tenants(stack.settings.tenants_file).operator(TRANSFER_OPERATOR)
    assert delta is not None and delta.wallet.mode == "transfer"
    delta_secret = delta.secret.reveal()
    mine = f"/v1/operators/{TRANSFER_OPERATOR}/players/oa-{uuid.uuid4().hex[:10]}/transfers"

    def transfer(**fields: Any) -> bytes:
        base = {"transfer_id": f"oa-{uuid.uuid4().hex[:10]}", "direction": "deposit",
                "amount": 500, "currency": "EUR"}  # fmt: skip
        return encode_body({**base, **fields})

    def as_delta(body: bytes, path: str = mine) -> requests.Response:
        return _session(HmacAuth(delta_secret)).post(
            stack.base_url + path, data=body, timeout=15,
            headers={"Content-Type": "application/json"})  # fmt: skip

    seamless = f"/v1/operators/{OPERATOR}/players/oa-{uuid.uuid4().hex[:10]}/transfers"
    out[(*key, 200)] = lambda: as_delta(transfer())
    out[(*key, 400)] = lambda: as_delta(b"{}")
    out[(*key, 401)] = lambda: _send(stack, OPERATOR_DOC, "POST", mine, transfer(), "none")
    out[(*key, 404)] = lambda: _send(
        stack, OPERATOR_DOC, "POST", "/v1/operators/op-nobody/players/p1/transfers", transfer()
    )
    out[(*key, 409)] = lambda: _send(stack, OPERATOR_DOC, "POST", seamless, transfer())
    out[(*key, 413)] = lambda: as_delta(TOO_LARGE)
    out[(*key, 422)] = lambda: as_delta(transfer(direction="withdraw", amount=10**12))
    out[(*key, 503)] = lambda: _degraded(stack, "POST", mine, transfer(), delta_secret)
    _targeted_controls(stack, out)
    out.update(_campaign_targets(stack, as_delta))
    for method in pragmatic.ACTIONS:
        key = ("provider-pragmatic-v1", "/v1/providers/{provider_id}/" + method, "POST")
        out[(*key, 200)] = lambda m=method: _pragmatic(stack, m, PP)
        out[(*key, 404)] = lambda m=method: _pragmatic(stack, m, "prov-nobody")
    evo_doc = "provider-evolution-v1"
    for method in evolution.METHODS:
        key = (evo_doc, "/v1/providers/{provider_id}/" + method, "POST")
        out[(*key, 200)] = lambda m=method: _evolution(stack, m, EVO)
        out[(*key, 401)] = lambda m=method: _evolution(stack, m, EVO, auth="none")
        out[(*key, 404)] = lambda m=method: _evolution(stack, m, "prov-nobody")
        out[(*key, 413)] = lambda m=method: _send(
            stack, evo_doc, "POST", f"/v1/providers/{EVO}/{m}", TOO_LARGE
        )
    launch = ("launch-v1", "/v1/launch/{provider_id}/{game_id}", "GET")
    nova, pp = stack.nova[0][1], stack.pp[0][1]
    out[(*launch, 302)] = lambda: _launch(stack, PP, PP_GAME, session_token=pp)
    out[(*launch, 200)] = lambda: _launch(stack, PROVIDER, GAME, session_token=nova)
    out[(*launch, 400)] = lambda: _launch(stack, PROVIDER, GAME, session_token=nova,
                                          language="not a tag")  # fmt: skip
    out[(*launch, 403)] = lambda: _launch(stack, PROVIDER, "nova-gemrush", session_token=nova)
    out[(*launch, 404)] = lambda: _launch(stack, PROVIDER, GAME)
    out[(*launch, 410)] = lambda: _launch(stack, PROVIDER, GAME,
                                          session_token=_expired(stack, nova))  # fmt: skip
    service = "service-v1"
    out[(service, "/healthz", "GET", 200)] = lambda: _send(stack, service, "GET", "/healthz")
    out[(service, "/healthz", "GET", 503)] = lambda: _degraded(stack, "GET", "/healthz", b"",
                                                               None)  # fmt: skip
    out[(service, "/metrics", "GET", 200)] = lambda: _send(stack, service, "GET", "/metrics")
    out[(service, "/v1/openapi", "GET", 200)] = lambda: _send(stack, service, "GET",
                                                              "/v1/openapi")  # fmt: skip
    doc = (service, "/v1/openapi/{name}", "GET")
    out[(*doc, 200)] = lambda: _send(stack, service, "GET", "/v1/openapi/operator-v1.json")
    out[(*doc, 404)] = lambda: _send(stack, service, "GET", "/v1/openapi/no-such-document")
    return out


def _hub88(stack: Stack, tail: str, provider: str) -> requests.Response:
    player, token = stack.hub[0]
    body: dict[str, Any] = {"user": player, "token": token, "request_uuid": uuid.uuid4().hex,
                            "game_code": HUB_GAME}  # fmt: skip
    if tail != "user/balance":
        body.update(transaction_uuid=f"oa-{uuid.uuid4().hex[:12]}", round="rnd-oa",
                    round_closed=False)  # fmt: skip
    if tail in ("transaction/bet", "transaction/win"):
        body.update(currency="EUR", amount=1000)
    if tail == "transaction/rollback":
        body["reference_transaction_uuid"] = f"oa-{uuid.uuid4().hex[:12]}"
    return _send(stack, "provider-hub88-v1", "POST", f"/v1/providers/{provider}/{tail}",
                 encode_body(body))  # fmt: skip


def _pragmatic(stack: Stack, method: str, provider: str) -> requests.Response:
    """A well-formed call of ``method`` for the first pragmatic-v1 player (hashed by the
    session's signer)."""
    ref, token = stack.pp[0]
    params = {"providerId": "PragmaticPlay", "userId": ref, "gameId": PP_GAME,
              "roundId": f"oa-{uuid.uuid4().hex[:12]}", "reference": f"oa-{uuid.uuid4().hex[:12]}",
              "amount": "1.00", "currency": "EUR"}  # fmt: skip
    if method == pragmatic.Method.AUTHENTICATE:
        params = {"providerId": "PragmaticPlay", "token": token, "gameId": PP_GAME}
    return _send(stack, "provider-pragmatic-v1", "POST", f"/v1/providers/{provider}/{method}",
                 urlencode(params).encode(),
                 content_type=FORM)  # fmt: skip


def _evolution(stack: Stack, method: str, provider: str, auth: str = "signed"
               ) -> requests.Response:  # fmt: skip
    player, token = stack.evo[0]
    ref = f"oa-{uuid.uuid4().hex[:12]}"
    body = {"sid": token, "userId": player, "uuid": uuid.uuid4().hex, "currency": "EUR",
            "game": {"id": f"oa-{uuid.uuid4().hex[:12]}", "type": "roulette",
                     "details": {"table": {"id": EVO_GAME}}},
            "transaction": {"id": ref, "refId": ref, "amount": 1}}  # fmt: skip
    if method == evolution.PROMO_METHOD:
        del body["transaction"]
        body["game"] = None  # a free rounds' payout names no game: the session's
        body["promoTransaction"] = {"type": "JackpotWin", "id": ref, "amount": 1}
    return _send(stack, "provider-evolution-v1", "POST", f"/v1/providers/{provider}/{method}",
                 encode_body(body), auth)  # fmt: skip


def _launch(stack: Stack, provider: str, game: str, **query: str) -> requests.Response:
    return _session(None).get(f"{stack.base_url}/v1/launch/{provider}/{game}", params=query,
                              headers={"Accept": "application/json"}, allow_redirects=False,
                              timeout=15)  # fmt: skip


def _expired(stack: Stack, token: str) -> str:
    """``token``'s session, ended the millisecond after it began."""
    secret = stack.settings.session_secret.get_secret_value().encode()
    claims = verify_token(secret, token, time.time_ns() // 1_000_000).claims
    assert claims is not None
    return issue_token(secret, replace(claims, expires_at_ms=claims.issued_at_ms + 1))


def _targeted_controls(
    stack: Stack, out: dict[tuple[str, str, str, int], Callable[[], Any]]
) -> None:
    """The requests for the documented statuses of a player's controls (set and read)."""
    own = f"/v1/operators/{OPERATOR}/players/oa-{uuid.uuid4().hex[:10]}/controls"
    nobody = "/v1/operators/op-nobody/players/p1/controls"

    def controls(**fields: Any) -> bytes:
        return encode_body({"change_id": f"oa-{uuid.uuid4().hex[:10]}", **fields})

    def conflict() -> requests.Response:
        body = json.loads(controls(blocked=True))
        assert _send(stack, OPERATOR_DOC, "POST", own, encode_body(body)).status_code == 200
        return _send(stack, OPERATOR_DOC, "POST", own, encode_body({**body, "blocked": False}))

    def stated() -> requests.Response:
        player = f"/v1/operators/{OPERATOR}/players/oa-{uuid.uuid4().hex[:10]}/controls"
        assert _send(stack, OPERATOR_DOC, "POST", player, controls()).status_code == 200
        deadline = time.monotonic() + 60
        while True:
            response = _send(stack, OPERATOR_DOC, "GET", player)
            if response.status_code == 200 or time.monotonic() > deadline:
                return response
            time.sleep(0.2)

    key = (OPERATOR_DOC, PLAYER + "controls", "POST")
    secret = stack.pipeline.operator_secret
    out[(*key, 200)] = lambda: _send(
        stack,
        OPERATOR_DOC,
        "POST",
        own,
        controls(
            session_time_limit_s=3600,
            limits=[{"kind": "loss", "period": "week", "amount": 5000, "currency": "EUR"}],
        ),
    )
    out[(*key, 400)] = lambda: _send(stack, OPERATOR_DOC, "POST", own, b"{}")
    out[(*key, 401)] = lambda: _send(stack, OPERATOR_DOC, "POST", own, controls(), "none")
    out[(*key, 404)] = lambda: _send(stack, OPERATOR_DOC, "POST", nobody, controls())
    out[(*key, 409)] = conflict
    out[(*key, 413)] = lambda: _send(stack, OPERATOR_DOC, "POST", own, TOO_LARGE)
    out[(*key, 422)] = lambda: _send(
        stack,
        OPERATOR_DOC,
        "POST",
        own,
        controls(limits=[{"kind": "wager", "period": "day", "amount": 1, "currency": "GBP"}]),
    )
    out[(*key, 503)] = lambda: _degraded(stack, "POST", own, controls(), secret)
    key = (OPERATOR_DOC, PLAYER + "controls", "GET")
    out[(*key, 200)] = stated
    out[(*key, 400)] = lambda: _send(
        stack, OPERATOR_DOC, "GET", f"/v1/operators/{OPERATOR}/players/bad!id/controls"
    )
    out[(*key, 401)] = lambda: _send(stack, OPERATOR_DOC, "GET", own, auth="none")
    out[(*key, 404)] = lambda: _send(stack, OPERATOR_DOC, "GET", nobody)
    out[(*key, 413)] = lambda: _send(stack, OPERATOR_DOC, "GET", own, TOO_LARGE)
    out[(*key, 503)] = lambda: _degraded(stack, "GET", own, b"", secret)


def _projected(stack: Stack, path: str) -> requests.Response:
    """The read API's answer once the projector has the player's first bet."""
    bet = _money(stack, "bet", transaction_id=f"oa-{uuid.uuid4().hex[:12]}")
    assert _canonical(stack, "bet", bet).status_code == 200
    deadline = time.monotonic() + 60
    while True:
        response = _send(stack, OPERATOR_DOC, "GET", path)
        items = response.json().get("balances") or response.json().get("transactions")
        if (response.status_code == 200 and items) or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def _campaign_targets(stack: Stack, as_delta: Callable[..., requests.Response]
                      ) -> dict[tuple[str, str, str, int], Callable[[], Any]]:  # fmt: skip
    """The campaigns' statuses: grant, cancel and the read API's list."""
    op_secret = stack.pipeline.operator_secret
    out: dict[tuple[str, str, str, int], Callable[[], Any]] = {}
    player = f"oa-{uuid.uuid4().hex[:10]}"
    mine = f"/v1/operators/{OPERATOR}/players/{player}/campaigns"
    expires = "2099-01-01T00:00:00Z"

    def campaign(**fields: Any) -> bytes:
        base = {"campaign_id": f"oa-{uuid.uuid4().hex[:10]}", "provider_id": PROVIDER,
                "games": [GAME], "spins": 3, "bet_value": 10, "currency": "EUR",
                "expires_at": expires}  # fmt: skip
        return encode_body({**base, **fields})

    def conflict() -> requests.Response:
        cid = f"oa-{uuid.uuid4().hex[:10]}"
        assert _send(stack, OPERATOR_DOC, "POST", mine, campaign(campaign_id=cid)).ok
        return _send(stack, OPERATOR_DOC, "POST", mine, campaign(campaign_id=cid, spins=4))

    def cancelled() -> requests.Response:
        cid = f"oa-{uuid.uuid4().hex[:10]}"
        assert _send(stack, OPERATOR_DOC, "POST", mine, campaign(campaign_id=cid)).ok
        return _send(stack, OPERATOR_DOC, "POST", f"{mine}/{cid}/cancel", b"{}")

    def listed() -> requests.Response:
        assert _send(stack, OPERATOR_DOC, "POST", mine, campaign()).ok
        deadline = time.monotonic() + 60
        while True:
            response = _send(stack, OPERATOR_DOC, "GET", mine)
            if response.json().get("campaigns") or time.monotonic() > deadline:
                return response
            time.sleep(0.2)

    key = (OPERATOR_DOC, PLAYER + "campaigns", "POST")
    out[(*key, 200)] = lambda: _send(stack, OPERATOR_DOC, "POST", mine, campaign())
    out[(*key, 400)] = lambda: _send(stack, OPERATOR_DOC, "POST", mine, b"{}")
    out[(*key, 401)] = lambda: _send(stack, OPERATOR_DOC, "POST", mine, campaign(), "none")
    # the transfer operator offers prov-nova only: not the hub88 provider's games
    transfer_mine = f"/v1/operators/{TRANSFER_OPERATOR}/players/{player}/campaigns"
    out[(*key, 403)] = lambda: as_delta(campaign(provider_id=HUB, games=[HUB_GAME]),
                                        transfer_mine)  # fmt: skip
    out[(*key, 404)] = lambda: _send(stack, OPERATOR_DOC, "POST", mine,
                                     campaign(games=["no-such-game"]))  # fmt: skip
    out[(*key, 409)] = conflict
    out[(*key, 413)] = lambda: _send(stack, OPERATOR_DOC, "POST", mine, TOO_LARGE)
    out[(*key, 422)] = lambda: _send(stack, OPERATOR_DOC, "POST", mine,
                                     campaign(expires_at="2001-01-01T00:00:00Z"))  # fmt: skip
    out[(*key, 503)] = lambda: _degraded(stack, "POST", mine, campaign(), op_secret)
    key = (OPERATOR_DOC, PLAYER + "campaigns", "GET")
    out[(*key, 200)] = listed
    out[(*key, 400)] = lambda: _send(
        stack, OPERATOR_DOC, "GET", f"/v1/operators/{OPERATOR}/players/bad!id/campaigns"
    )
    out[(*key, 401)] = lambda: _send(stack, OPERATOR_DOC, "GET", mine, auth="none")
    out[(*key, 404)] = lambda: _send(
        stack, OPERATOR_DOC, "GET", "/v1/operators/op-nobody/players/p1/campaigns"
    )
    out[(*key, 413)] = lambda: _send(stack, OPERATOR_DOC, "GET", mine, TOO_LARGE)
    out[(*key, 503)] = lambda: _degraded(stack, "GET", mine, b"", op_secret)
    key = (OPERATOR_DOC, PLAYER + "campaigns/{campaign_id}/cancel", "POST")
    nope = f"{mine}/oa-nope/cancel"
    out[(*key, 200)] = cancelled
    out[(*key, 400)] = lambda: _send(stack, OPERATOR_DOC, "POST", nope, b'{"x": 1}')
    out[(*key, 401)] = lambda: _send(stack, OPERATOR_DOC, "POST", nope, b"{}", "none")
    out[(*key, 404)] = lambda: _send(stack, OPERATOR_DOC, "POST", nope, b"{}")
    out[(*key, 413)] = lambda: _send(stack, OPERATOR_DOC, "POST", nope, TOO_LARGE)
    out[(*key, 503)] = lambda: _degraded(stack, "POST", nope, b"{}", op_secret)
    return out


def test_every_documented_status_is_reached(stack: Stack) -> None:
    """After the generated requests: each documented status they did not get is asked for by
    a request made for it, whose answer is validated like theirs."""
    documented = _documented()
    targeted = _targeted(stack)
    statuses = {(*op, code) for op, codes in documented.items() for code in codes}
    assert set(targeted) <= statuses, "a targeted request for a status its document lacks"
    reached: dict[tuple[str, str, str], set[int]] = {op: set(SEEN[op]) for op in documented}
    for op, codes in documented.items():
        name, path, method = op
        for code in sorted(codes - reached[op]):
            make = targeted.get((*op, code))
            assert make is not None, f"{method} {path}: no request reaches documented {code}"
            response = make()
            assert response.status_code == code, (op, code, response.text[:300])
            params = {p: "x" for p in re.findall(r"\{(\w+)\}", path)}
            case = _SCHEMAS[name][path][method].Case(path_parameters=params)
            case.validate_response(response, checks=CHECKS)
            reached[op].add(code)
    assert reached == documented
    report = {f"{m} {p}": sorted(SEEN[(n, p, m)]) for n, p, m in documented}
    print(json.dumps(report, indent=1))
