"""The ``hub88-v1`` adapter: Hub88's published signature vectors, example exchanges table by
table, the canonical -> wire -> canonical round trip, and a fuzz of its parser (every input
answered in the protocol's own format, never an exception)."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from agg_domain.statuses import Action, Status
from agg_ingress.adapters.base import Accepted, Credentials, Refused, Result, WireRequest
from agg_ingress.adapters.hub88 import (
    STATUS,
    Hub88Adapter,
    decode_answer,
    encode_request,
    load_public_key,
    sign,
    verify,
)
from agg_ingress.protocol import Callback, Refusal
from tests.fuzz_budget import examples

FIXTURES = Path(__file__).parent.parent / "fixtures" / "hub88"
ADAPTER = Hub88Adapter()
NOW = 1_800_000_000.0


@cache
def _keys() -> tuple[rsa.RSAPrivateKey, Credentials]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return private, Credentials(public_key=private.public_key(), signing_key=private)


def _request(path: str, body: dict[str, Any] | bytes, signature: str | None = None) -> WireRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    private, _ = _keys()
    headers = {"x-hub88-signature": signature if signature is not None else sign(private, raw)}
    return WireRequest("POST", path, "", headers, raw)


def _parse(
    path: str, body: dict[str, Any] | bytes, signature: str | None = None
) -> Accepted | Refused:
    return ADAPTER.parse(_request(path, body, signature), _keys()[1], NOW)


def _rendered(parsed: Accepted | Refused, result: Result | None = None) -> dict[str, Any]:
    if result is None:
        assert isinstance(parsed, Refused)
        result = Result(parsed.status, None)
    wire = ADAPTER.render(parsed.context, result, _keys()[1])
    assert wire.http == 200 and wire.content_type == "application/json"
    ((name, value),) = wire.headers
    assert name == "X-Hub88-Signature" and verify(_keys()[0].public_key(), wire.body, value)
    answer: dict[str, Any] = json.loads(wire.body)
    assert set(answer) == {"user", "status", "request_uuid", "currency", "balance"}
    return answer


RQ, TX = "583c985f-fee6-4c0e-bbf5-308aad6265af", "16d2dcfe-b89e-11e7-854a-58404eea6d16"
BET: dict[str, Any] = {
    "user": "p-1", "token": "tok", "request_uuid": RQ,
    "game_code": "g-1", "transaction_uuid": TX,
    "supplier_transaction_id": "41ecc3ad-b181-4235-bf9d-acf0a7ad9730", "round": "r-1",
    "round_closed": False, "currency": "EUR", "amount": 100_000, "is_free": False,
}  # fmt: skip


# --- the published vectors -----------------------------------------------------------------


def _vectors() -> list[tuple[str, str]]:
    lines = (FIXTURES / "signatures.csv").read_text().splitlines()[1:]
    return [tuple(line.rsplit(";", 1)) for line in lines if line]  # type: ignore[misc]


def test_hub88_published_signatures_verify_with_its_demo_key() -> None:
    key = load_public_key((FIXTURES / "public.pem").read_text())
    vectors = _vectors()
    assert len(vectors) == 5
    for data, signature in vectors:
        assert verify(key, data.encode(), signature), data
        assert not verify(key, data.encode() + b" ", signature)
        flipped = bytearray(base64.b64decode(signature))
        flipped[10] ^= 1
        assert not verify(key, data.encode(), base64.b64encode(flipped).decode())


def test_a_request_signed_by_another_key_or_unsigned_is_refused() -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raw = json.dumps(BET).encode()
    for signature in (sign(other, raw), "", "not base64!", "QUJD"):
        refused = _parse("transaction/bet", raw, signature)
        assert isinstance(refused, Refused) and refused.status is Refusal.INVALID_SIGNATURE
        answer = _rendered(refused)
        assert answer["status"] == "RS_ERROR_INVALID_SIGNATURE"
        assert answer["request_uuid"] == BET["request_uuid"] and answer["user"] == "p-1"


# --- example exchanges -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("transaction/bet", BET, Callback(
            Action.BET, RQ, "tok", "p-1", transaction_id=TX,
            round_id="r-1", game_id="g-1", amount=100, currency="EUR")),
        ("transaction/win", {**BET, "amount": 250_000, "round_closed": True,
                             "reference_transaction_uuid": "bet-1"}, Callback(
            Action.WIN, RQ, "tok", "p-1", transaction_id=TX,
            reference_transaction_id="bet-1", round_id="r-1", game_id="g-1", amount=250,
            currency="EUR", round_closed=True)),
        ("transaction/win", {**BET, "amount": 0}, Callback(
            Action.WIN, RQ, "tok", "p-1", transaction_id=TX,
            round_id="r-1", game_id="g-1", amount=0, currency="EUR")),
        ("transaction/bet", {**BET, "is_free": True, "reward_uuid": "welcome-50"}, Callback(
            Action.BET, RQ, "tok", "p-1", transaction_id=TX, round_id="r-1", game_id="g-1",
            amount=100, currency="EUR", campaign_id="welcome-50")),
        ("transaction/bet", {**BET, "reward_uuid": "welcome-50"}, Callback(  # not free
            Action.BET, RQ, "tok", "p-1", transaction_id=TX,
            round_id="r-1", game_id="g-1", amount=100, currency="EUR")),
        ("transaction/win", {**BET, "is_free": True, "reward_uuid": "welcome-50"}, Callback(
            Action.WIN, RQ, "tok", "p-1", transaction_id=TX, round_id="r-1", game_id="g-1",
            amount=100, currency="EUR", campaign_id="welcome-50")),
        ("transaction/bet", {**BET, "currency": "JPY", "amount": 1_500_000}, Callback(
            Action.BET, RQ, "tok", "p-1", transaction_id=TX,
            round_id="r-1", game_id="g-1", amount=15, currency="JPY")),
        ("transaction/bet", {**BET, "currency": "KWD", "amount": 100}, Callback(
            Action.BET, RQ, "tok", "p-1", transaction_id=TX,
            round_id="r-1", game_id="g-1", amount=1, currency="KWD")),
        ("transaction/rollback", {"user": "p-1", "token": "tok", "request_uuid": "rq-9",
                                  "transaction_uuid": "rb-1", "reference_transaction_uuid": "bet-1",
                                  "round": "r-1", "round_closed": True, "game_code": "g-1"},
         Callback(Action.ROLLBACK, "rq-9", "tok", "p-1", transaction_id="rb-1",
                  reference_transaction_id="bet-1", round_id="r-1", game_id="g-1",
                  round_closed=True)),
        ("user/balance", {"user": "p-1", "token": "tok", "request_uuid": "rq-2",
                          "game_code": "g-1"},
         Callback(Action.BALANCE, "rq-2", "tok", "p-1", game_id="g-1")),
    ],
)  # fmt: skip
def test_requests_read_as_canonical_callbacks(
    path: str, body: dict[str, Any], expected: Callback
) -> None:
    parsed = _parse(path, body)
    assert isinstance(parsed, Accepted), parsed
    assert parsed.callback == expected


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("transaction/bet", {**BET, "amount": 1}, "RS_ERROR_WRONG_TYPES"),  # 1/1000 of a cent
        ("transaction/bet", {**BET, "amount": 150}, "RS_ERROR_WRONG_TYPES"),
        ("transaction/bet", {**BET, "amount": "100000"}, "RS_ERROR_WRONG_TYPES"),
        ("transaction/bet", {**BET, "amount": 1000.0}, "RS_ERROR_WRONG_TYPES"),
        ("transaction/bet", {**BET, "amount": True}, "RS_ERROR_WRONG_TYPES"),
        ("transaction/bet", {**BET, "amount": -100_000}, "RS_ERROR_WRONG_TYPES"),
        ("transaction/bet", {**BET, "amount": 0}, "RS_ERROR_WRONG_TYPES"),
        ("transaction/bet", {**BET, "is_free": True}, "RS_ERROR_WRONG_TYPES"),
        ("transaction/bet", {**BET, "is_free": True, "reward_uuid": 7}, "RS_ERROR_WRONG_TYPES"),
        ("transaction/bet", {**BET, "is_free": True, "amount": 0, "reward_uuid": "c"},
         "RS_ERROR_WRONG_TYPES"),
        ("transaction/bet", {**BET, "currency": "BTC"}, "RS_ERROR_WRONG_TYPES"),
        ("transaction/bet", {**BET, "round_closed": "no"}, "RS_ERROR_WRONG_TYPES"),
        ("transaction/bet", {**BET, "user": 7}, "RS_ERROR_WRONG_TYPES"),
        ("transaction/bet", {k: v for k, v in BET.items() if k != "round"},
         "RS_ERROR_WRONG_SYNTAX"),
        ("transaction/bet", {k: v for k, v in BET.items() if k != "currency"},
         "RS_ERROR_WRONG_SYNTAX"),
        ("transaction/rollback", {k: v for k, v in BET.items() if k != "token"},
         "RS_ERROR_WRONG_SYNTAX"),
        ("transaction/rollback", BET, "RS_ERROR_WRONG_SYNTAX"),  # no reference
        ("transaction/bet", {**BET, "user": "a b"}, "RS_ERROR_WRONG_SYNTAX"),
        ("transaction/bet", b"{", "RS_ERROR_WRONG_SYNTAX"),
        ("transaction/bet", b'{"user":"a","user":"b"}', "RS_ERROR_WRONG_SYNTAX"),
        ("transaction/bet", b"[]", "RS_ERROR_WRONG_SYNTAX"),
        ("transaction/refund", BET, "RS_ERROR_WRONG_SYNTAX"),
        ("user/info", BET, "RS_ERROR_WRONG_SYNTAX"),
    ],
)  # fmt: skip
def test_bad_requests_are_refused_in_the_protocols_own_format(
    path: str, body: dict[str, Any] | bytes, status: str
) -> None:
    refused = _parse(path, body)
    assert isinstance(refused, Refused) and refused.status is Status.INVALID_REQUEST
    assert _rendered(refused)["status"] == status


@pytest.mark.parametrize(("status", "wire"), sorted(STATUS.items()))
def test_every_canonical_status_has_its_answer(status: str, wire: str) -> None:
    parsed = _parse("transaction/bet", BET)
    assert isinstance(parsed, Accepted)
    canonical = Status(status) if status in Status.__members__ else Refusal(status)
    answer = _rendered(parsed, Result(canonical, "EUR", 1_234))
    assert answer == {"user": "p-1", "status": wire, "request_uuid": BET["request_uuid"],
                      "currency": "EUR", "balance": 1_234_000}  # fmt: skip


def test_an_answer_balance_is_in_units_of_one_hundred_thousandth() -> None:
    parsed = _parse("user/balance", {"user": "p", "token": "t", "request_uuid": "r",
                                     "game_code": "g"})  # fmt: skip
    assert isinstance(parsed, Accepted)
    assert _rendered(parsed, Result(Status.OK, "EUR", 10_050))["balance"] == 10_050_000
    assert _rendered(parsed, Result(Status.OK, "JPY", 7))["balance"] == 700_000
    assert _rendered(parsed, Result(Status.OK, "KWD", 1))["balance"] == 100


# --- round trip and fuzz -------------------------------------------------------------------

ids = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)
currencies = st.sampled_from(["EUR", "USD", "JPY", "KWD", "GBP", "CLP"])


@st.composite
def callbacks(draw: st.DrawFn) -> Callback:
    action = draw(st.sampled_from([Action.BALANCE, Action.BET, Action.WIN, Action.ROLLBACK]))
    base = Callback(action, draw(ids), draw(st.text(min_size=1, max_size=80)), draw(ids),
                    game_id=draw(ids))  # fmt: skip
    if action is Action.BALANCE:
        return base
    money = action in (Action.BET, Action.WIN)
    return replace(
        base,
        transaction_id=draw(ids),
        reference_transaction_id=draw(ids) if action is Action.ROLLBACK else draw(st.none() | ids),
        round_id=draw(ids),
        amount=draw(st.integers(1 if action is Action.BET else 0, 10**13)) if money else None,
        currency=draw(currencies) if money else None,
        round_closed=draw(st.booleans()),
        campaign_id=draw(st.none() | ids) if money else None,
    )


@settings(max_examples=examples(300, full=5_000), deadline=None)
@given(callbacks())
def test_canonical_to_wire_to_canonical_is_the_identity(callback: Callback) -> None:
    private, credentials = _keys()
    path, body, headers = encode_request(callback, private)
    wire = WireRequest("POST", path, "", {k.lower(): v for k, v in headers.items()}, body)
    parsed = ADAPTER.parse(wire, credentials, NOW)
    assert isinstance(parsed, Accepted), parsed
    assert parsed.callback == callback
    if callback.currency is not None:
        rendered = ADAPTER.render(parsed.context, Result(Status.OK, callback.currency, 4_321),
                                  credentials)  # fmt: skip
        answer = decode_answer(rendered.body)
        assert answer["balance_minor"] == 4_321 and answer["status"] == "RS_OK"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                       children, max_size=4),
    max_leaves=12,
)  # fmt: skip
fields = st.dictionaries(
    st.sampled_from(sorted({*BET, "reference_transaction_uuid", "meta", "bet"})),
    json_values | st.sampled_from(list(BET.values())), max_size=14,
)  # fmt: skip
bodies = st.one_of(
    st.binary(max_size=200),
    fields.map(lambda d: json.dumps(d).encode()),
    fields.map(lambda d: json.dumps({**BET, **d}).encode()),
)
paths = st.sampled_from(["transaction/bet", "transaction/win", "transaction/rollback",
                         "user/balance", "", "transaction", "x/../user/balance"])  # fmt: skip


@pytest.mark.fuzz
@settings(max_examples=examples(2_000), deadline=None)
@given(paths, bodies, st.booleans())
def test_the_parser_answers_every_input_in_its_format(path: str, body: bytes, signed: bool) -> None:
    """Fuzz: whatever arrives, the adapter accepts it as a valid callback or refuses it, and
    the refusal renders as a signed protocol answer with an RS_ status; nothing raises."""
    parsed = _parse(path, body, None if signed else "")
    if isinstance(parsed, Accepted):
        assert signed and parsed.callback.request_id
        if parsed.callback.amount is not None:
            assert parsed.callback.amount >= 0
        return
    answer = _rendered(parsed)
    assert answer["status"].startswith("RS_ERROR_")
