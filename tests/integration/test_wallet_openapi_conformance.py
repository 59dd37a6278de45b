"""The reference HTTP wallet against the operator-wallet API documents
(``docs/openapi/operator-wallet-{canonical,hub88}-v1.yaml``): schemathesis generates valid and
invalid calls of every operation, signs each as the HTTP wallet bridge does (HMAC with the
operator's wallet secret for canonical-v1, RSA with the aggregator's key for hub88-v1) and
sends it to ``python -m agg_httpwallet`` on the session's PostgreSQL.

Every answer must be documented (status code, content type, body schema), none may be a 5xx,
a valid call is never refused as malformed, and every status code a document gives is
reached: by the generated calls, or else by a targeted one. Valid calls name one of a few
players of their operator half of the time, so they meet each other's commands (repeats,
cancels of real debits, debits beyond the balance).

Examples per operation: a few in ``make test``, many under ``make fuzz`` (``AGG_FUZZ=1``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from agg_ingress import specs
from agg_protocols.signatures import SIGNATURE_HEADER, TIMESTAMP_HEADER, hmac_sign, rsa_sign
from agg_protocols.wallet_hub88 import SIGNATURE_HEADER as HUB88_SIGNATURE_HEADER
from tests.fuzz_budget import examples

pytestmark = pytest.mark.fuzz

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = {d.protocol: d for d in specs.load_documents().values()
             if d.surface == "operator-wallet"}  # fmt: skip
CANONICAL, HUB88 = "op-wcan", "op-whub"
OPERATORS = {CANONICAL: ("canonical-v1", "/wallets/op-wcan"), HUB88: ("hub88-v1", "/op-whub")}
"""Each operator's protocol and the path the reference wallet serves it at."""
WALLET_SECRET = "oa-wallet-secret-op-wcan-01"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
"""The aggregator's signing key for the hub88-v1 operator (the wallet verifies its public half)."""
STARTING_BALANCE = 100_000
PLAYERS = 4
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
MALFORMED: dict[str, set[int | str]] = {
    "canonical-v1": {400},
    "hub88-v1": {"RS_ERROR_WRONG_SYNTAX", "RS_ERROR_WRONG_TYPES"},
}
"""What a refusal of a call as malformed looks like, per protocol."""
SEEN: dict[tuple[str, str], set[int]] = defaultdict(set)
"""(operator, path) -> the HTTP statuses the generated calls got."""
_SCHEMAS = {op: schemathesis.openapi.from_dict(DOCUMENTS[p].spec)
            for op, (p, _) in OPERATORS.items()}  # fmt: skip


class CanonicalAuth(requests.auth.AuthBase):
    """``X-Agg-Timestamp`` / ``X-Agg-Signature`` over the path as sent and the exact body."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        body = r.body or b""
        raw = body.encode() if isinstance(body, str) else body
        assert isinstance(raw, bytes)
        ts = int(time.time())
        r.headers[TIMESTAMP_HEADER] = str(ts)
        r.headers[SIGNATURE_HEADER] = hmac_sign(WALLET_SECRET, ts, r.method or "", r.path_url, raw)
        return r


class Hub88Auth(requests.auth.AuthBase):
    """``X-Hub88-Signature`` over the exact body."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        body = r.body or b""
        raw = body.encode() if isinstance(body, str) else body
        assert isinstance(raw, bytes)
        r.headers[HUB88_SIGNATURE_HEADER] = rsa_sign(KEY, raw)
        return r


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tenants(port: int) -> dict[str, Any]:
    dev = yaml.safe_load((REPO / "deploy" / "local" / "aggregator.yaml").read_text())
    pem = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()  # fmt: skip
    credentials = {CANONICAL: {"secret": {"value": WALLET_SECRET}},
                   HUB88: {"signing_key": {"value": pem}}}  # fmt: skip
    operators = [
        {"id": op, "name": op, "secret": {"value": f"{op}-api-secret-0001"},
         "currencies": ["EUR", "JPY"], "providers": ["prov-nova"],
         "wallet": {"mode": "http", "protocol": protocol,
                    "url": f"http://127.0.0.1:{port}{base}",
                    "starting_balance": STARTING_BALANCE, **credentials[op]}}
        for op, (protocol, base) in OPERATORS.items()
    ]  # fmt: skip
    return {"operators": operators, "providers": dev["providers"], "games": dev["games"]}


@dataclass
class Wallet:
    port: int
    log: Path
    players: dict[str, list[str]]
    """A few players of each operator (valid calls name one of them half of the time)."""

    def url(self, op: str) -> str:
        return f"http://127.0.0.1:{self.port}{OPERATORS[op][1]}"

    def session(self, op: str) -> requests.Session:
        session = requests.Session()
        session.auth = CanonicalAuth() if OPERATORS[op][0] == "canonical-v1" else Hub88Auth()
        return session


@pytest.fixture(scope="module")
def wallet(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wallet]:
    root = tmp_path_factory.mktemp("wallet-openapi")
    port = _free_port()
    tenants = root / "tenants.yaml"
    tenants.write_text(yaml.safe_dump(_tenants(port)))
    log = root / "httpwallet.log"
    env = {**os.environ, "AGG_DATABASE_URL": settings.database_url,
           "AGG_TENANTS_FILE": str(tenants),
           "AGG_SESSION_SECRET": settings.session_secret.get_secret_value()}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "agg_httpwallet", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab"),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(OSError):
                if _http_status(f"http://127.0.0.1:{port}/healthz") == 200:
                    break
            assert time.monotonic() < deadline, "http wallet not ready\n" + log.read_text()
            time.sleep(0.1)
        players = {op: [f"oa-{op}-{i}-{uuid.uuid4().hex[:8]}" for i in range(PLAYERS)]
                   for op in OPERATORS}  # fmt: skip
        yield Wallet(port, log, players)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()[-3000:]


# --- generated calls ------------------------------------------------------------------------

OPERATIONS = [(op, path) for op, (protocol, _) in OPERATORS.items()
              for path in DOCUMENTS[protocol].spec["paths"]]  # fmt: skip


def _positive(op: str, path: str, body: Any, wallet: Wallet, inject: bool, which: int) -> Any:
    """A generated valid body as a call of this operator's wallet (its own operator id; an
    integer-valued float as the integer it means) and, with ``inject``, of one of its
    few players, in EUR, in whole cents."""
    if not isinstance(body, dict):
        return body
    # JSON Schema's ``integer`` admits ``1.0``, which the wallets refuse as the documents say
    body = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in body.items()}
    if OPERATORS[op][0] == "canonical-v1":
        body["operator"] = op  # the wallet's own operator (another's is refused 400)
        if inject:
            body.update(player=wallet.players[op][which], currency="EUR")
    elif inject:
        body.update(user=wallet.players[op][which], currency="EUR")
        if isinstance(body.get("amount"), int):
            body["amount"] -= body["amount"] % 1000
    return body


def _run(wallet: Wallet, op: str, path: str, mode: schemathesis.GenerationMode,
         count: int) -> None:  # fmt: skip
    operation = _SCHEMAS[op][path]["POST"]
    strategy = operation.as_strategy(generation_mode=mode)
    session = wallet.session(op)
    protocol = OPERATORS[op][0]
    positive = mode is schemathesis.GenerationMode.POSITIVE

    @settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=strategy, inject=st.booleans(), which=st.integers(0, PLAYERS - 1))
    def check(case: Any, inject: bool, which: int) -> None:
        if positive:
            case.body = _positive(op, path, case.body, wallet, inject, which)
        response = case.call(base_url=wallet.url(op), session=session, timeout=15)
        SEEN[(op, path)].add(response.status_code)
        assert response.status_code < 500, (
            f"{path}: {response.status_code} {response.text[:500]}\n{case.body!r}"
        )
        case.validate_response(response, checks=CHECKS)
        if positive:
            answer = response.json() if response.status_code == 200 else {}
            refused = {response.status_code, answer.get("status")} & MALFORMED[protocol]
            assert not refused, f"valid call refused: {case.body!r} -> {response.text}"

    check()


@pytest.mark.parametrize(
    "mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
    ids=["valid", "invalid"],
)  # fmt: skip
@pytest.mark.parametrize(("op", "path"), OPERATIONS, ids=[f"{o} {p}" for o, p in OPERATIONS])
def test_generated_calls_get_documented_answers(
    wallet: Wallet, op: str, path: str, mode: schemathesis.GenerationMode
) -> None:
    _run(wallet, op, path, mode, examples(12, 400))


# --- every documented status, reached -------------------------------------------------------

TOO_LARGE = json.dumps({"pad": "x" * 70_000}).encode()


def _call(wallet: Wallet, op: str, path: str, body: bytes, signed: bool = True
          ) -> requests.Response:  # fmt: skip
    session = wallet.session(op) if signed else requests.Session()
    return session.post(wallet.url(op) + path, data=body, timeout=15,
                        headers={"Content-Type": "application/json"})  # fmt: skip


def _valid(op: str, path: str, wallet: Wallet) -> bytes:
    """A well-formed call of ``path`` for the operator's first player."""
    command_id = f"oa-{uuid.uuid4().hex}"
    player = wallet.players[op][0]
    if OPERATORS[op][0] == "canonical-v1":
        fields: dict[str, Any] = {"command_id": command_id, "operator": op, "player": player,
                                  "currency": "EUR", "amount": 1,
                                  "reference_command_id": f"oa-{uuid.uuid4().hex}"}  # fmt: skip
    else:
        fields = {"user": player, "request_uuid": command_id, "currency": "EUR",
                  "transaction_uuid": command_id, "amount": 1000,
                  "reference_transaction_uuid": f"oa-{uuid.uuid4().hex}"}  # fmt: skip
    return json.dumps(fields).encode()


def _targeted(wallet: Wallet, op: str, path: str, code: int) -> requests.Response | None:
    if code == 200:
        return _call(wallet, op, path, _valid(op, path, wallet))
    if code == 400:
        return _call(wallet, op, path, b"{}")
    if code == 401:
        return _call(wallet, op, path, _valid(op, path, wallet), signed=False)
    if code == 413:
        return _call(wallet, op, path, TOO_LARGE)
    return None


def test_every_documented_status_is_reached(wallet: Wallet) -> None:
    """After the generated calls: each documented status they did not get is asked for by a
    call made for it, whose answer is validated like theirs."""
    for op, path in OPERATIONS:
        responses = DOCUMENTS[OPERATORS[op][0]].spec["paths"][path]["post"]["responses"]
        documented = {int(code) for code in responses}
        reached = set(SEEN[(op, path)])
        for code in sorted(documented - reached):
            response = _targeted(wallet, op, path, code)
            assert response is not None, f"{op} {path}: no call reaches documented {code}"
            assert response.status_code == code, (op, path, code, response.text[:300])
            _SCHEMAS[op][path]["POST"].Case().validate_response(response, checks=CHECKS)
            reached.add(code)
        assert reached == documented, (op, path)
    print(json.dumps({f"{o} {p}": sorted(SEEN[(o, p)]) for o, p in OPERATIONS}, indent=1))


def test_the_largest_hub88_win_is_answered_within_the_documented_balance(
    wallet: Wallet,
) -> None:
    """hub88-v1 balances are longs of 1/100,000 units: a win of the largest amount the
    document allows would take a EUR balance past them. It is refused (``RS_ERROR_UNKNOWN``,
    nothing moves), and the answer validates; a win that fits is credited up to the edge."""
    player = f"big-{uuid.uuid4().hex[:8]}"
    largest = (2**63 - 1) // 1000 * 1000  # the largest EUR balance hub88-v1 can carry
    answers = []
    for amount in (largest, largest - STARTING_BALANCE * 1000):
        command_id = f"oa-{uuid.uuid4().hex}"
        body = json.dumps({"user": player, "request_uuid": command_id, "currency": "EUR",
                           "transaction_uuid": command_id, "amount": amount}).encode()  # fmt: skip
        response = _call(wallet, HUB88, "/transaction/win", body)
        _SCHEMAS[HUB88]["/transaction/win"]["POST"].Case().validate_response(
            response, checks=CHECKS
        )
        answers.append(response.json())
    assert answers[0]["status"] == "RS_ERROR_UNKNOWN", answers[0]
    assert answers[0]["balance"] == STARTING_BALANCE * 1000, answers[0]
    assert (answers[1]["status"], answers[1]["balance"]) == ("RS_OK", largest), answers[1]
