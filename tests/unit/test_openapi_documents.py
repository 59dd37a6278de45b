"""The API documents (``docs/openapi/``) are valid OpenAPI 3.1, cover every route of the
ingress and every provider protocol, say what the validators enforce (currencies, the
examples they give are accepted, what they generate is accepted), and are served as checked
in. The running ingress is checked against them in ``tests/e2e/test_openapi_conformance.py``."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode

import httpx
import pytest
import schemathesis
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV31SpecValidator
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

import agg_ingress
from agg_config.settings import Settings
from agg_config.tenants import load_tenants
from agg_domain.currency import CURRENCY_EXPONENTS
from agg_httpwallet.app import build_app as build_wallet_app
from agg_ingress import specs
from agg_ingress.adapters import adapters, evolution, hub88, pragmatic
from agg_ingress.adapters.base import Accepted, Credentials, WireRequest
from agg_ingress.app import build_app
from agg_ingress.campaigns import CampaignRequest, validate_campaign, validate_cancel
from agg_ingress.client import signed_headers
from agg_ingress.controls import ControlsRequest, validate_controls
from agg_ingress.protocol import (
    ACTIONS,
    Callback,
    SessionRequest,
    parse_callback,
    parse_object,
    validate_session_request,
)
from agg_ingress.transfers import TransferRequest, validate_transfer
from agg_protocols import wallet_canonical, wallet_hub88
from agg_protocols.signatures import hmac_sign, rsa_sign
from tests.fuzz_budget import examples

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "openapi"
DOCUMENTS = specs.load_documents(DOCS)
SECRET = "unit-test-session-secret-0123456789abcdef"
CONFORMANCE = [status_code_conformance, content_type_conformance, response_schema_conformance]

PROVIDER_PATHS: dict[str, set[str]] = {
    "canonical-v1": {f"wallet/{name}" for name in ACTIONS},
    "hub88-v1": set(hub88.PATHS),
    "pragmatic-v1": set(pragmatic.ACTIONS),
    "evolution-v1": set(evolution.METHODS),
}
"""Each protocol's paths below ``/v1/providers/{provider_id}/``, as its adapter reads them."""
WALLET_SURFACE = "operator-wallet"
"""The operator-wallet documents: paths below an operator's wallet URL, not the ingress's."""
WALLET_PATHS: dict[str, set[str]] = {
    "canonical-v1": set(wallet_canonical.PATHS.values()),
    "hub88-v1": set(wallet_hub88.PATHS.values()),
}


def _app() -> Any:
    settings = Settings(session_secret=SECRET)
    return build_app(settings, load_tenants(settings.tenants_file))


def _operations(wallets: bool = False) -> list[tuple[str, str, str]]:
    """(document, path, method) of every documented operation of the ingress (and of the
    operator-wallet documents with ``wallets``)."""
    return [
        (d.name, path, method)
        for d in DOCUMENTS.values()
        if wallets or d.surface != WALLET_SURFACE
        for path, item in d.spec["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    ]


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_every_document_is_valid_openapi_3_1(name: str) -> None:
    spec = yaml.safe_load((DOCS / f"{name}.yaml").read_text(encoding="utf-8"))
    assert spec["openapi"].startswith("3.1")
    validate(spec, cls=OpenAPIV31SpecValidator)
    # and schemathesis (the conformance test's loader) reads every operation of it
    loaded = schemathesis.openapi.from_dict(spec)
    assert len(list(loaded.get_all_operations())) == len(
        [op for op in _operations(wallets=True) if op[0] == name]
    )


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_paths_are_versioned_and_ids_unique(name: str) -> None:
    """The ingress's paths carry their version; an operator-wallet protocol's are its own
    (``/user/balance``), its version in the document's name."""
    for path in DOCUMENTS[name].spec["paths"]:
        if DOCUMENTS[name].surface == WALLET_SURFACE:
            assert path.startswith("/"), path
            continue
        assert path.startswith("/v1/") or path in {"/healthz", "/metrics"}, path
    ids = [
        op["operationId"]
        for d in DOCUMENTS.values()
        for item in d.spec["paths"].values()
        for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    ]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_currencies_are_the_iso_table(name: str) -> None:
    schemas = DOCUMENTS[name].spec.get("components", {}).get("schemas", {})
    if "Currency" in schemas:
        assert set(schemas["Currency"]["enum"]) == set(CURRENCY_EXPONENTS)


def test_hub88_exact_amounts_follow_each_currencys_minor_unit() -> None:
    """1/100,000 units convert exactly to minor units when a multiple of 10**(5 - exponent)."""
    rules = DOCUMENTS["provider-hub88-v1"].spec["components"]["schemas"]["ExactAmount"]["allOf"]
    by_step = {
        rule["then"]["properties"]["amount"]["multipleOf"]: set(
            rule["if"]["properties"]["currency"]["enum"]
        )
        for rule in rules
    }
    expected: dict[int, set[str]] = {}
    for code, exponent in CURRENCY_EXPONENTS.items():
        expected.setdefault(10 ** (hub88.SCALE_EXPONENT - exponent), set()).add(code)
    assert by_step == expected


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def test_every_route_has_a_documented_path_and_every_path_a_route() -> None:
    routes = [r for r in _app().routes if isinstance(r, Route)]
    documented = [(path, method.upper()) for _, path, method in _operations()]
    for route in routes:
        methods = (route.methods or set()) - {"HEAD"}
        for method in methods:
            matching = [p for p, m in documented if m == method and route.path_regex.match(
                _concrete(p))]  # fmt: skip
            assert matching, f"{method} {route.path} is in build_app but in no document"
    for path, method in documented:
        served = [r for r in routes if method in (r.methods or set())
                  and r.path_regex.match(_concrete(path))]  # fmt: skip
        assert served, f"{method} {path} is documented but no route serves it"


def test_every_provider_protocol_has_its_document_with_its_paths() -> None:
    by_protocol = {d.protocol: d for d in DOCUMENTS.values() if d.surface == "provider"}
    for protocol in adapters(300):
        assert protocol in by_protocol, f"{protocol}: no document in docs/openapi/registry.yaml"
        prefix = "/v1/providers/{provider_id}/"
        paths = {p.removeprefix(prefix) for p in by_protocol[protocol].spec["paths"]}
        if protocol in PROVIDER_PATHS:
            assert paths == PROVIDER_PATHS[protocol]


def test_the_package_holds_the_checked_in_documents() -> None:
    """The package's ``openapi`` (a link in a checkout, packaged into the wheel by
    ``[tool.setuptools.package-data]``) is ``docs/openapi``; the loader finds it."""
    packaged = Path(agg_ingress.__file__).parent / "openapi"
    assert packaged.resolve() == DOCS.resolve()
    assert specs.documents_dir().resolve() == DOCS.resolve()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'agg_ingress = ["openapi/*.yaml"]' in pyproject
    assert {p.name for p in DOCS.glob("*.yaml")} == {
        specs.REGISTRY_FILE,
        *(f"{n}.yaml" for n in DOCUMENTS),
    }


def _get_all(paths: list[str]) -> dict[str, httpx.Response]:
    """GETs of the app in-process; its lifespan does not run (no Kafka, no PostgreSQL)."""

    async def run() -> dict[str, httpx.Response]:
        transport = httpx.ASGITransport(app=_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
            return {p: await client.get(p) for p in paths}

    return asyncio.run(run())


MISSING = ["nope", "nope.yaml", "operator-v1.xml", "registry", "registry.yaml"]


def test_the_ingress_serves_the_documents_as_checked_in() -> None:
    names = list(DOCUMENTS)
    paths = [f"/v1/openapi/{n}{ext}" for n in names for ext in ("", ".yaml", ".json")]
    got = _get_all(["/v1/openapi", *paths, *(f"/v1/openapi/{m}" for m in MISSING)])
    index = got["/v1/openapi"]
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("application/json")
    entries = index.json()["documents"]
    assert [e["name"] for e in entries] == list(DOCUMENTS)
    for entry in entries:
        raw = (DOCS / f"{entry['name']}.yaml").read_bytes()
        as_yaml = got[entry["yaml"]]
        assert as_yaml.status_code == 200 and as_yaml.content == raw
        assert as_yaml.headers["content-type"].startswith("application/yaml")
        assert got[f"/v1/openapi/{entry['name']}"].content == raw
        as_json = got[entry["json"]]
        assert as_json.status_code == 200 and as_json.json() == yaml.safe_load(raw)
        assert entry["version"] == as_json.json()["info"]["version"]
    for name in MISSING:
        missing = got[f"/v1/openapi/{name}"]
        assert missing.status_code == 404, name
        assert missing.json() == {"status": "UNKNOWN_DOCUMENT"}


# --- what the documents say is what the validators enforce -------------------------------


def _request_examples(name: str) -> list[tuple[str, Any]]:
    spec = DOCUMENTS[name].spec
    out: list[tuple[str, Any]] = []
    for path, item in spec["paths"].items():
        for op in item.values():
            content = op.get("requestBody", {}).get("content", {})
            media = content.get("application/json") or content.get(FORM) or {}
            if "example" in media:
                out.append((path, media["example"]))
            for ex in media.get("examples", {}).values():
                ref = ex["$ref"].rsplit("/", 1)[-1]
                out.append((path, spec["components"]["examples"][ref]["value"]))
    return out


def _hub88_accepts(path: str, body: bytes) -> bool:
    key = _HUB_KEY
    wire = WireRequest(
        "POST", path, "", {"x-hub88-signature": hub88.sign(key, body)}, body, raw_path=path
    )
    parsed = hub88.Hub88Adapter().parse(wire, Credentials(public_key=key.public_key()), 0.0)
    return isinstance(parsed, Accepted)


def _pragmatic_accepts(method: str, body: dict[str, str]) -> bool:
    """Hashed with a secret of the test's: an example's ``hash`` stands for the caller's."""
    secret = b"unit-test-pragmatic-secret"
    params = {**body, "hash": pragmatic.request_hash(body, secret)}
    wire = WireRequest("POST", method, "", {}, urlencode(params).encode(), raw_path=method)
    parsed = pragmatic.PragmaticAdapter().parse(wire, Credentials(secret=secret), 0.0)
    return isinstance(parsed, Accepted)


def _evolution_accepts(method: str, raw: bytes) -> bool:
    secret = b"unit-test-evolution-secret"
    query = f"{evolution.AUTH_PARAMETER}={secret.decode()}"
    wire = WireRequest("POST", method, query, {}, raw, raw_path=method)
    parsed = evolution.EvolutionAdapter().parse(wire, Credentials(secret=secret), 0.0)
    return isinstance(parsed, Accepted)


def _accepted(name: str, path: str, body: Any) -> bool:
    raw = json.dumps(body).encode()
    tail = path.rsplit("}/", 1)[-1]
    if name == "provider-pragmatic-v1":
        return _pragmatic_accepts(tail, body)
    if name == "provider-evolution-v1":
        return _evolution_accepts(tail, raw)
    if name == "provider-canonical-v1":
        return isinstance(parse_callback(ACTIONS[tail.removeprefix("wallet/")], raw), Callback)
    if name == "provider-hub88-v1":
        return _hub88_accepts(tail, raw)
    parsed = parse_object(raw)
    assert isinstance(parsed, dict)
    if path.endswith("/transfers"):
        return isinstance(validate_transfer(parsed), TransferRequest)
    if path.endswith("/controls"):
        return isinstance(validate_controls(parsed), ControlsRequest)
    if path.endswith("/campaigns"):
        return isinstance(validate_campaign(parsed), CampaignRequest)
    if path.endswith("/cancel"):
        return validate_cancel(parsed) is None
    assert path.endswith("/sessions")
    return isinstance(validate_session_request(parsed), SessionRequest)


_HUB_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)

BODY_DOCUMENTS = ["provider-canonical-v1", "provider-hub88-v1", "operator-v1"]
"""Documents whose every schema-valid body the protocol's validator accepts (pragmatic-v1's
and evolution-v1's amounts must also be exact in the player's currency, which a schema
cannot say: their examples are checked, and the conformance test sends generated bodies)."""
FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize("name", [*BODY_DOCUMENTS, "provider-pragmatic-v1",
                                  "provider-evolution-v1"])  # fmt: skip
def test_the_documents_examples_are_accepted(name: str) -> None:
    found = _request_examples(name)
    assert found
    for path, body in found:
        assert _accepted(name, path, body), (path, body)


def integral_amount(body: Any) -> Any:
    """``body`` with every integer-valued float of an integer field (``amount``, also in a
    nested object or list, ``session_time_limit_s``) as an int: JSON Schema's ``integer``
    admits ``1.0``, which the documents say is refused (and the validators refuse), so a
    generator may draw one as a valid value."""
    if isinstance(body, list):
        return [integral_amount(item) for item in body]
    if not isinstance(body, dict):
        return body
    return {
        k: int(v) if k in INTEGER_FIELDS and isinstance(v, float) and v.is_integer()
        else integral_amount(v)
        for k, v in body.items()
    }  # fmt: skip


INTEGER_FIELDS = frozenset({"amount", "session_time_limit_s", "spins", "bet_value"})


BODY_OPERATIONS = [
    (name, path)
    for name, path, method in _operations()
    if name in BODY_DOCUMENTS and method == "post"
]


@pytest.mark.fuzz
@pytest.mark.parametrize(("name", "path"), BODY_OPERATIONS)
def test_every_body_the_document_allows_is_accepted(name: str, path: str) -> None:
    """Bodies drawn from the document's schema (bounds, patterns, enums, required fields):
    the protocol's own validator accepts each one."""
    operation = schemathesis.openapi.from_dict(DOCUMENTS[name].spec)[path]["POST"]
    strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE)

    @settings(max_examples=examples(25, 5_000), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=strategy)
    def check(case: Any) -> None:
        body = integral_amount(case.body)
        assert _accepted(name, path, body), body

    check()


COUNTRIES = [  # as sent (percent-encoded): the signed path is the sent one
    "MT",
    "DE",
    "A1",
    "1A",
    "mt",
    "Mt",
    "M",
    "MTA",
    "M_",
    "%C3%89U",
    "",
    "M%20",
]


def test_games_takes_the_countries_its_document_gives() -> None:
    """The catalogue needs no Kafka or PostgreSQL: the app in-process answers it, and a
    country is taken exactly when it matches the document's pattern."""
    operator = "op-alpha"
    secret = load_tenants(Settings().tenants_file).operator(operator)
    assert secret is not None
    pattern = DOCUMENTS["operator-v1"].spec["components"]["schemas"]["Country"]["pattern"]
    path = f"/v1/operators/{operator}/games"
    operation = schemathesis.openapi.from_dict(DOCUMENTS["operator-v1"].spec)[
        "/v1/operators/{operator_id}/games"
    ]["GET"]

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=_app())
        out = []
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
            for country in COUNTRIES:
                target = f"{path}?country={country}"
                out.append(await client.get(target, headers=signed_headers(
                    secret.secret.reveal(), "GET", target, b"")))  # fmt: skip
        return out

    for country, response in zip(COUNTRIES, asyncio.run(run()), strict=True):
        expected = 200 if re.search(pattern, unquote(country)) else 400
        assert response.status_code == expected, (country, response.text)
        case = operation.Case(path_parameters={"operator_id": operator})
        case.validate_response(response, checks=CONFORMANCE)


# --- the operator-wallet documents are what the reference HTTP wallet serves ---------------

WALLET_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
WALLET_SECRET = b"unit-test-wallet-secret-0001"
WALLET_OPERATORS = {"op-wcan": ("canonical-v1", "/wallets/op-wcan"), "op-whub": ("hub88-v1",
                    "/op-whub")}  # fmt: skip


def test_each_wallet_protocol_has_its_document_with_its_paths() -> None:
    by_protocol = {d.protocol: d for d in DOCUMENTS.values() if d.surface == WALLET_SURFACE}
    assert set(by_protocol) == set(WALLET_PATHS)
    for protocol, document in by_protocol.items():
        assert set(document.spec["paths"]) == WALLET_PATHS[protocol], protocol


def _wallet_tenants(path: Path) -> Path:
    dev = yaml.safe_load(Settings().tenants_file.read_text())
    pem = _pem_private(WALLET_KEY)
    operators = []
    for op, (protocol, base) in WALLET_OPERATORS.items():
        credential = ({"secret": {"value": WALLET_SECRET.decode()}} if protocol == "canonical-v1"
                      else {"signing_key": {"value": pem}})  # fmt: skip
        wallet = {"mode": "http", "protocol": protocol, "url": f"http://127.0.0.1:9186{base}",
                  **credential}  # fmt: skip
        operators.append({"id": op, "name": op, "secret": {"value": f"{op}-api-secret-0001"},
                          "currencies": ["EUR"], "providers": ["prov-nova"],
                          "wallet": wallet})  # fmt: skip
    path.write_text(yaml.safe_dump({**dev, "operators": operators}))
    return path


def _pem_private(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()  # fmt: skip


def test_the_reference_http_wallet_serves_exactly_the_documented_paths(tmp_path: Path) -> None:
    """A signed call to each path of either protocol, at each operator's mount: answered by
    the protocol (a refusal of the empty command, read without PostgreSQL) exactly where the
    operator's document has the path, 404 elsewhere."""
    tenants = load_tenants(_wallet_tenants(tmp_path / "tenants.yaml"))
    app = build_wallet_app(Settings(session_secret=SECRET), tenants)
    every = set().union(*WALLET_PATHS.values(), {"/v1/nope", "/transaction/nope"})
    body = b"{}"

    def headers(protocol: str, path: str) -> dict[str, str]:
        if protocol == "hub88-v1":
            return {wallet_hub88.SIGNATURE_HEADER: rsa_sign(WALLET_KEY, body)}
        ts = int(time.time())
        return {"X-Agg-Timestamp": str(ts),
                "X-Agg-Signature": hmac_sign(WALLET_SECRET, ts, "POST", path, body)}  # fmt: skip

    async def run() -> dict[tuple[str, str], httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        out = {}
        async with httpx.AsyncClient(transport=transport, base_url="http://wallet") as client:
            for op, (protocol, base) in WALLET_OPERATORS.items():
                for path in sorted(every):
                    out[(op, path)] = await client.post(
                        base + path, content=body, headers=headers(protocol, base + path)
                    )
        return out

    got = asyncio.run(run())
    for (op, path), response in got.items():
        protocol = WALLET_OPERATORS[op][0]
        documented = path in WALLET_PATHS[protocol]
        assert (response.status_code != 404) == documented, (op, path, response.text)
        if documented:
            name = f"operator-wallet-{protocol.removesuffix('-v1')}-v1"
            case = schemathesis.openapi.from_dict(DOCUMENTS[name].spec)[path]["POST"].Case()
            case.validate_response(response, checks=CONFORMANCE)
