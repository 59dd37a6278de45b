"""The operator-wallet protocols (``canonical-v1``, ``hub88-v1``): the bridge's call read by
the operator's side (round trip, every kind, hypothesis), signatures that must verify and
tampering that must not, the answer -> reply status tables, and answers the bridge must not
trust (each a failure, retryable or not)."""

from __future__ import annotations

import hashlib
import hmac as std_hmac
import json
from functools import cache
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from agg_domain.currency import CURRENCY_EXPONENTS
from agg_domain.statuses import CommandKind, ReplyStatus
from agg_protocols.operator_wallet import (
    Answer,
    Failure,
    Rejection,
    WalletCall,
    WalletClientProtocol,
    WalletServerProtocol,
)
from agg_protocols.signatures import hmac_problem, hmac_sign, rsa_sign, rsa_verify
from agg_protocols.wallet_canonical import CanonicalWalletClient, CanonicalWalletServer
from agg_protocols.wallet_hub88 import Hub88WalletClient, Hub88WalletServer

SECRET = b"wallet-secret-of-op-gamma-0001"
NOW = 1_800_000_000
BASE = "/op-gamma"


@cache
def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pair(protocol: str) -> tuple[WalletClientProtocol, WalletServerProtocol]:
    if protocol == "canonical-v1":
        return CanonicalWalletClient(SECRET, BASE), CanonicalWalletServer(SECRET, BASE)
    return Hub88WalletClient(_key()), Hub88WalletServer(_key().public_key())


def call(kind: CommandKind = CommandKind.DEBIT, **fields: Any) -> WalletCall:
    values: dict[str, Any] = {
        "command_id": "c-1f2e3d",
        "correlation_id": "corr-1",
        "operator_id": "op-gamma",
        "player_id": "p-1",
        "kind": kind,
        "amount": 0 if kind is CommandKind.BALANCE else 250,
        "currency": "EUR",
        "provider_id": "prov-nova",
        "transaction_id": "t-1",
        "round_id": "r-1",
        "game_id": "nova-starfall",
        "reference_command_id": "c-debit" if kind is CommandKind.CANCEL else None,
        "issued_at_ms": NOW * 1000,
    }
    values.update(fields)
    return WalletCall(**values)


def parse(server: WalletServerProtocol, path: str, body: bytes, headers: dict[str, str],
          now_s: float = NOW) -> WalletCall | Rejection:  # fmt: skip
    lower = {k.lower(): v for k, v in headers.items()}
    return server.parse("op-gamma", "POST", path, lower, body, now_s)


PROTOCOLS = ["canonical-v1", "hub88-v1"]

# --- the round trip ------------------------------------------------------------------------------


def expected_on_server(protocol: str, sent: WalletCall) -> WalletCall:
    """What the operator's side reads: hub88 carries no issue time, and a balance no round."""
    if protocol == "canonical-v1":
        return sent
    if sent.kind is CommandKind.BALANCE:
        return WalletCall(sent.command_id, sent.command_id, sent.operator_id, sent.player_id,
                          sent.kind, 0, sent.currency, game_id=sent.game_id)  # fmt: skip
    return WalletCall(**{**sent.__dict__, "issued_at_ms": 0})


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", list(CommandKind))
def test_every_kind_round_trips(protocol: str, kind: CommandKind) -> None:
    client, server = pair(protocol)
    sent = call(kind)
    request = client.encode(sent, NOW)
    got = parse(server, request.path, request.body, dict(request.headers))
    assert got == expected_on_server(protocol, sent)
    answer = Answer(ReplyStatus.OK, 99_750, "")
    rendered = server.render(got, answer)
    decoded = client.decode(sent, rendered.http, rendered.body)
    assert isinstance(decoded, Answer)
    assert (decoded.status, decoded.balance) == (ReplyStatus.OK, 99_750)


ids = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
              max_size=60)  # fmt: skip


@pytest.mark.parametrize("protocol", PROTOCOLS)
@given(
    kind=st.sampled_from(list(CommandKind)),
    command_id=ids,
    player=ids,
    amount=st.integers(0, 2**63 - 1),
    currency=st.sampled_from(sorted(CURRENCY_EXPONENTS)),
    balance=st.none() | st.integers(0, 2**63 - 1),
    status=st.sampled_from(list(ReplyStatus)),
)
def test_any_call_and_answer_round_trip_exactly(
    protocol: str, kind: CommandKind, command_id: str, player: str, amount: int, currency: str,
    balance: int | None, status: ReplyStatus,
) -> None:  # fmt: skip
    client, server = pair(protocol)
    if kind is CommandKind.BALANCE:
        amount = 0
    sent = call(kind, command_id=command_id, player_id=player, amount=amount, currency=currency)
    try:
        request = client.encode(sent, NOW)
    except ValueError:
        # hub88 only: the amount at 1/100000 exceeds a signed 64-bit integer; refused, and
        # only then
        assert protocol == "hub88-v1"
        assert amount * 10 ** (5 - CURRENCY_EXPONENTS[currency]) > 2**63 - 1
        return
    got = parse(server, request.path, request.body, dict(request.headers))
    assert got == expected_on_server(protocol, sent)
    if protocol == "hub88-v1" and balance is not None:
        balance = min(balance, (2**63 - 1) // 10 ** (5 - CURRENCY_EXPONENTS[currency]))
    rendered = server.render(got, Answer(status, balance, ""))
    decoded = client.decode(sent, rendered.http, rendered.body)
    assert isinstance(decoded, Answer)
    assert (decoded.status, decoded.balance) == (status, balance)


# --- signatures ---------------------------------------------------------------------------------


def test_hmac_signature_is_the_contracts_formula() -> None:
    # the provider protocol's worked example (docs/ingress.md): same formula, other secret
    body = b'{"request_id":"r-1"}'
    expected = std_hmac.new(
        SECRET, b"1700000000.POST./op-gamma/v1/debit." + body, hashlib.sha256
    ).hexdigest()
    assert hmac_sign(SECRET, 1700000000, "post", "/op-gamma/v1/debit", body) == expected


@pytest.mark.parametrize(
    ("change", "code"),
    [
        pytest.param(lambda h, b, n: (h, b + b" ", n), "INVALID_SIGNATURE", id="body changed"),
        pytest.param(lambda h, b, n: ({**h, "X-Agg-Signature": "0" * 64}, b, n),
                     "INVALID_SIGNATURE", id="signature replaced"),
        pytest.param(lambda h, b, n: ({k: v for k, v in h.items() if k != "X-Agg-Signature"},
                     b, n), "INVALID_SIGNATURE", id="no signature"),
        pytest.param(lambda h, b, n: ({**h, "X-Agg-Timestamp": "12a"}, b, n),
                     "INVALID_SIGNATURE", id="timestamp not a number"),
        pytest.param(lambda h, b, n: (h, b, n + 301), "REQUEST_EXPIRED", id="301 s late"),
        pytest.param(lambda h, b, n: (h, b, n - 301), "REQUEST_EXPIRED", id="301 s early"),
    ],
)  # fmt: skip
def test_canonical_tampering_is_refused_401(change: Any, code: str) -> None:
    client, server = pair("canonical-v1")
    request = client.encode(call(), NOW)
    headers, body, now = change(dict(request.headers), request.body, NOW)
    got = parse(server, request.path, body, headers, now)
    assert isinstance(got, Rejection) and (got.code, got.http) == (code, 401)


def test_canonical_signature_covers_the_base_path() -> None:
    request = CanonicalWalletClient(SECRET, "/other").encode(call(), NOW)
    got = parse(CanonicalWalletServer(SECRET, BASE), request.path, request.body,
                dict(request.headers))  # fmt: skip
    assert isinstance(got, Rejection) and got.code == "INVALID_SIGNATURE"


def test_canonical_window_edges_are_accepted() -> None:
    client, server = pair("canonical-v1")
    request = client.encode(call(), NOW)
    for now in (NOW - 300, NOW + 300):
        assert isinstance(parse(server, request.path, request.body, dict(request.headers), now),
                          WalletCall)  # fmt: skip


def test_hub88_signature_tampering_is_refused() -> None:
    client, server = pair("hub88-v1")
    request = client.encode(call(), NOW)
    headers = dict(request.headers)
    assert rsa_verify(_key().public_key(), request.body, headers["X-Hub88-Signature"])
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for body, signature in (
        (request.body + b" ", headers["X-Hub88-Signature"]),
        (request.body, rsa_sign(other, request.body)),
        (request.body, "not base64!"),
        (request.body, ""),
    ):
        got = parse(server, request.path, body, {**headers, "X-Hub88-Signature": signature})
        assert isinstance(got, Rejection) and got.code == "RS_ERROR_INVALID_SIGNATURE"


def test_hmac_problem_on_missing_headers() -> None:
    kwargs = dict(method="POST", path="/v1/debit", body=b"{}", now_s=NOW, window_s=300)
    assert hmac_problem(SECRET, timestamp=None, signature="x", **kwargs) == "INVALID_SIGNATURE"
    assert hmac_problem(SECRET, timestamp=str(NOW), signature=None, **kwargs) == (
        "INVALID_SIGNATURE"
    )


# --- hub88 amounts: 1/100000 of the currency, exact -------------------------------------------


@pytest.mark.parametrize(
    ("currency", "minor", "wire"),
    [("EUR", 250, 250_000), ("JPY", 250, 25_000_000), ("BHD", 1, 100), ("EUR", 0, 0)],
)
def test_hub88_amounts_are_scaled_exactly(currency: str, minor: int, wire: int) -> None:
    client, _ = pair("hub88-v1")
    request = client.encode(call(amount=minor, currency=currency), NOW)
    assert json.loads(request.body)["amount"] == wire


def test_hub88_server_refuses_an_amount_that_is_not_whole_minor_units() -> None:
    _, server = pair("hub88-v1")
    body = json.dumps({"user": "p-1", "request_uuid": "c-1", "transaction_uuid": "c-1",
                       "currency": "EUR", "amount": 250_001}).encode()  # fmt: skip
    got = parse(server, "/transaction/bet", body, {"X-Hub88-Signature": rsa_sign(_key(), body)})
    assert isinstance(got, Rejection) and got.code == "RS_ERROR_WRONG_TYPES"


@pytest.mark.parametrize(
    ("meta", "code"),
    [
        ({"correlation_id": "corr\u0000-1"}, "RS_ERROR_WRONG_SYNTAX"),
        ({"provider": "prov nova"}, "RS_ERROR_WRONG_SYNTAX"),
        ({"provider": 7}, "RS_ERROR_WRONG_TYPES"),
    ],
)
def test_hub88_server_refuses_meta_values_that_are_no_ids(meta: dict[str, Any], code: str) -> None:
    """``meta``'s ids are logged and kept in the ledger like the others (a NUL is no text
    PostgreSQL takes)."""
    _, server = pair("hub88-v1")
    body = json.dumps({"user": "p-1", "request_uuid": "c-1", "transaction_uuid": "c-1",
                       "currency": "EUR", "amount": 250_000, "meta": meta}).encode()  # fmt: skip
    got = parse(server, "/transaction/bet", body, {"X-Hub88-Signature": rsa_sign(_key(), body)})
    assert isinstance(got, Rejection) and got.code == code, got


@pytest.mark.parametrize(
    ("fields", "echoed"),
    [
        ({"user": "p-1", "request_uuid": "c-1", "currency": "EUR"},
         {"user": "p-1", "request_uuid": "c-1", "currency": "EUR"}),
        ({"user": "p 1", "request_uuid": "", "currency": "\u00ca\u0006"},
         {"user": None, "request_uuid": None, "currency": None}),
        ({"user": "x" * 201, "request_uuid": 7, "currency": "XXX"},
         {"user": None, "request_uuid": None, "currency": None}),
    ],
)  # fmt: skip
def test_hub88_refusals_echo_only_well_formed_values(
    fields: dict[str, Any], echoed: dict[str, Any]
) -> None:
    """A refusal's answer repeats the call's ids and currency only where they are ones (its
    document says what an answer holds), never what a malformed call put there."""
    _, server = pair("hub88-v1")
    body = json.dumps({**fields, "game_code": 5}).encode()  # refused: a number for an id
    got = parse(server, "/user/balance", body, {"X-Hub88-Signature": rsa_sign(_key(), body)})
    assert isinstance(got, Rejection) and got.code.startswith("RS_ERROR_WRONG_")
    answer = json.loads(server.render_rejection(got).body)
    assert {k: answer[k] for k in echoed} == echoed


# --- answers -> reply statuses --------------------------------------------------------------------


def hub88_answer(status: str, balance: int | None = 9_975_000, **extra: Any) -> bytes:
    return json.dumps({"user": "p-1", "status": status, "request_uuid": "c-1f2e3d",
                       "currency": "EUR", "balance": balance, **extra}).encode()  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "wire", "status"),
    [
        (CommandKind.DEBIT, "RS_OK", ReplyStatus.OK),
        (CommandKind.DEBIT, "RS_ERROR_NOT_ENOUGH_MONEY", ReplyStatus.INSUFFICIENT_FUNDS),
        (CommandKind.DEBIT, "RS_ERROR_USER_DISABLED", ReplyStatus.PLAYER_BLOCKED),
        (CommandKind.DEBIT, "RS_ERROR_LIMIT_REACHED", ReplyStatus.LIMIT_REACHED),
        (CommandKind.DEBIT, "RS_ERROR_INVALID_TOKEN", ReplyStatus.UNKNOWN_PLAYER),
        (CommandKind.CREDIT, "RS_ERROR_TOKEN_EXPIRED", ReplyStatus.UNKNOWN_PLAYER),
        (CommandKind.DEBIT, "RS_ERROR_UNKNOWN", ReplyStatus.ERROR),
        (CommandKind.DEBIT, "RS_ERROR_TIMEOUT", ReplyStatus.ERROR),
        (CommandKind.DEBIT, "RS_ERROR_DUPLICATE_TRANSACTION", ReplyStatus.ERROR),
        (CommandKind.DEBIT, "RS_ERROR_TRANSACTION_ROLLED_BACK", ReplyStatus.ERROR),
        (CommandKind.CREDIT, "RS_ERROR_TRANSACTION_DOES_NOT_EXIST", ReplyStatus.ERROR),
        (CommandKind.CANCEL, "RS_ERROR_TRANSACTION_DOES_NOT_EXIST", ReplyStatus.OK),
        (CommandKind.DEBIT, "RS_ERROR_SOMETHING_NEW", ReplyStatus.ERROR),
    ],
)
def test_hub88_status_table(kind: CommandKind, wire: str, status: ReplyStatus) -> None:
    client, _ = pair("hub88-v1")
    decoded = client.decode(call(kind), 200, hub88_answer(wire))
    assert isinstance(decoded, Answer)
    assert (decoded.status, decoded.balance, decoded.wire_status) == (status, 9_975, wire)


@pytest.mark.parametrize("status", list(ReplyStatus))
def test_canonical_status_table(status: ReplyStatus) -> None:
    client, _ = pair("canonical-v1")
    body = json.dumps({"command_id": "c-1f2e3d", "status": status.value, "balance": 10,
                       "currency": "EUR"}).encode()  # fmt: skip
    decoded = client.decode(call(), 200, body)
    assert isinstance(decoded, Answer) and (decoded.status, decoded.balance) == (status, 10)


CANONICAL_OK = {"command_id": "c-1f2e3d", "status": "OK", "balance": 10, "currency": "EUR"}


@pytest.mark.parametrize(
    ("protocol", "http", "body", "retryable"),
    [
        ("canonical-v1", 503, b"", True),
        ("canonical-v1", 502, b"<html>", True),
        ("canonical-v1", 500, b"{}", True),
        ("canonical-v1", 429, b"", True),
        ("canonical-v1", 401, b'{"status":"INVALID_SIGNATURE"}', False),
        ("canonical-v1", 400, b'{"status":"INVALID_REQUEST"}', False),
        ("canonical-v1", 404, b"", False),
        ("canonical-v1", 200, b"not json", False),
        ("canonical-v1", 200, b"[]", False),
        ("canonical-v1", 200, json.dumps({**CANONICAL_OK, "status": "MAYBE"}).encode(), False),
        ("canonical-v1", 200, json.dumps({**CANONICAL_OK, "command_id": "other"}).encode(),
         False),
        ("canonical-v1", 200, json.dumps({**CANONICAL_OK, "balance": 1.5}).encode(), False),
        ("canonical-v1", 200, json.dumps({**CANONICAL_OK, "balance": -1}).encode(), False),
        ("canonical-v1", 200, json.dumps({**CANONICAL_OK, "currency": "USD"}).encode(), False),
        ("canonical-v1", 200, b'{"status":"OK","status":"ERROR"}', False),
        ("hub88-v1", 503, b"", True),
        ("hub88-v1", 200, hub88_answer("RS_ERROR_INVALID_SIGNATURE"), False),
        ("hub88-v1", 200, hub88_answer("RS_ERROR_WRONG_TYPES"), False),
        ("hub88-v1", 200, hub88_answer("RS_ERROR_WRONG_SYNTAX"), False),
        ("hub88-v1", 200, hub88_answer("RS_ERROR_INVALID_PARTNER"), False),
        ("hub88-v1", 200, hub88_answer("OK"), False),
        ("hub88-v1", 200, hub88_answer("RS_OK", balance=9_975_001), False),  # not whole cents
        ("hub88-v1", 200, hub88_answer("RS_OK", request_uuid="other"), False),
        ("hub88-v1", 200, hub88_answer("RS_OK", currency="GBP"), False),
        ("hub88-v1", 200, b"", False),
    ],
)  # fmt: skip
def test_unusable_answers_are_failures(
    protocol: str, http: int, body: bytes, retryable: bool
) -> None:
    client, _ = pair(protocol)
    decoded = client.decode(call(), http, body)
    assert isinstance(decoded, Failure) and decoded.retryable is retryable


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("command_id", ""),
        ("command_id", 7),
        ("command_id", "has space"),
        ("player", None),
        ("operator", "op-alpha"),
        ("currency", "eur"),
        ("currency", "XXX"),
        ("amount", 1.0),
        ("amount", "250"),
        ("amount", True),
        ("amount", -1),
        ("amount", 2**63),
        ("reference_command_id", None),
        ("issued_at_ms", "yesterday"),
        ("issued_at_ms", -1),
        ("issued_at_ms", 253_402_300_800_000),  # after 9999: no timestamp holds it
        ("issued_at_ms", 2**63),
    ],
)
def test_canonical_server_refuses_bad_fields_400(field: str, value: Any) -> None:
    client, server = pair("canonical-v1")
    request = client.encode(call(CommandKind.CANCEL), NOW)
    body = json.loads(request.body)
    body[field] = value
    raw = json.dumps(body).encode()
    headers = {
        "X-Agg-Timestamp": str(NOW),
        "X-Agg-Signature": hmac_sign(SECRET, NOW, "POST", BASE + request.path, raw),
    }
    got = parse(server, request.path, raw, headers)
    assert isinstance(got, Rejection) and got.http == 400, got
    rendered = server.render_rejection(got)
    assert json.loads(rendered.body)["status"] == "INVALID_REQUEST"  # fmt: skip


def test_unknown_paths_are_refused() -> None:
    for protocol, path in (("canonical-v1", "/v2/debit"), ("hub88-v1", "/user/info")):
        client, server = pair(protocol)
        request = client.encode(call(), NOW)
        headers = dict(request.headers)
        if protocol == "canonical-v1":
            headers["X-Agg-Signature"] = hmac_sign(SECRET, NOW, "POST", BASE + path, request.body)
        got = parse(server, path, request.body, headers)
        assert isinstance(got, Rejection) and got.http == 404
