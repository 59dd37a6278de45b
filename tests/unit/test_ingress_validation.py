"""The canonical protocol's pure rules (agg_ingress.protocol, agg_ingress.client.sign):
signature vectors, every validation refusal, boundary amounts, the operator API's rules."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import replace
from typing import Any

import pytest

from agg_config.compliance import rules_of
from agg_config.tenants import parse_tenants
from agg_domain.statuses import PROVIDER_ACTIONS, Action, Status, WinKind
from agg_ingress.campaigns import (
    CampaignRequest,
    campaign_refusal,
    rfc3339,
    validate_campaign,
    validate_cancel,
)
from agg_ingress.client import curl_command, sign
from agg_ingress.protocol import (
    AMOUNT_MAX,
    Callback,
    Invalid,
    OperatorRefusal,
    Refusal,
    SessionRequest,
    echo_fields,
    http_status,
    offered_games,
    parse_callback,
    session_refusal,
    signature_problem,
    validate_session_request,
)
from agg_ingress.transfers import TransferRequest, validate_transfer

SECRET = b"dev-secret-prov-nova-001"
TS = 1_700_000_000


# --- signatures ------------------------------------------------------------------------------


def reference(secret: bytes, message: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def test_sign_vector_post() -> None:
    body = b'{"request_id":"r1"}'
    path = "/v1/providers/prov-nova/wallet/bet"
    message = b'1700000000.POST./v1/providers/prov-nova/wallet/bet.{"request_id":"r1"}'
    expected = reference(SECRET, message)
    # a fixed vector too, so the scheme cannot drift unnoticed
    assert expected == "9725203465a3b3aacd93fa46e4b826b5e235c6781d44d3f810a87b49a4d2ecaa"
    assert sign(SECRET, TS, "POST", path, body) == expected
    assert sign(SECRET, str(TS), "post", path, body.decode()) == expected
    assert sign(SECRET.decode(), TS, "POST", path, body) == expected


def test_sign_vector_get_with_query_and_empty_body() -> None:
    path = "/v1/operators/op-alpha/games?country=DE"
    got = sign(b"dev-secret-op-alpha-0001", TS, "GET", path, b"")
    assert got == reference(
        b"dev-secret-op-alpha-0001", b"1700000000.GET./v1/operators/op-alpha/games?country=DE."
    )
    assert got != sign(b"dev-secret-op-alpha-0001", TS, "GET", path.split("?")[0], b"")
    assert got != sign(b"dev-secret-op-alpha-0001", TS, "GET", path + "&x=1", b"")
    assert got == got.lower() and len(got) == 64


def test_sign_includes_query_string_exactly() -> None:
    a = sign(SECRET, TS, "POST", "/p?a=1&b=2", b"{}")
    b = sign(SECRET, TS, "POST", "/p?b=2&a=1", b"{}")
    c = sign(SECRET, TS, "POST", "/p?a=%31&b=2", b"{}")
    assert len({a, b, c}) == 3


def check(
    signature: str | None,
    *,
    timestamp: str | None = str(TS),
    method: str = "POST",
    path: str = "/v1/providers/prov-nova/wallet/bet?x=1",
    body: bytes = b"{}",
    now_s: float = TS,
    window_s: int = 300,
) -> Refusal | None:
    return signature_problem(
        SECRET,
        timestamp=timestamp,
        signature=signature,
        method=method,
        path=path,
        body=body,
        now_s=now_s,
        window_s=window_s,
    )


GOOD = sign(SECRET, TS, "POST", "/v1/providers/prov-nova/wallet/bet?x=1", b"{}")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, None),
        ({"now_s": TS + 300}, None),
        ({"now_s": TS - 300}, None),
        ({"now_s": TS + 301}, Refusal.REQUEST_EXPIRED),
        ({"now_s": TS - 301}, Refusal.REQUEST_EXPIRED),
        ({"timestamp": None}, Refusal.INVALID_SIGNATURE),
        ({"timestamp": ""}, Refusal.INVALID_SIGNATURE),
        ({"timestamp": "-1700000000"}, Refusal.INVALID_SIGNATURE),
        ({"timestamp": "1700000000.0"}, Refusal.INVALID_SIGNATURE),
        ({"timestamp": "17e8"}, Refusal.INVALID_SIGNATURE),
        ({"timestamp": f"{TS}\n"}, Refusal.INVALID_SIGNATURE),
        ({"timestamp": str(TS + 1), "now_s": TS + 1}, Refusal.INVALID_SIGNATURE),
        ({"method": "PUT"}, Refusal.INVALID_SIGNATURE),
        ({"path": "/v1/providers/prov-nova/wallet/bet"}, Refusal.INVALID_SIGNATURE),
        ({"path": "/v1/providers/prov-nova/wallet/bet?x=2"}, Refusal.INVALID_SIGNATURE),
        ({"body": b"{} "}, Refusal.INVALID_SIGNATURE),
    ],
)
def test_signature_problem(kwargs: dict[str, Any], expected: Refusal | None) -> None:
    assert check(GOOD, **kwargs) is expected


@pytest.mark.parametrize(
    "signature",
    [None, "", GOOD.upper(), GOOD[:-1], GOOD + "0", "é" * 64, GOOD.replace(GOOD[0], "g", 1)],
)
def test_bad_signature_values(signature: str | None) -> None:
    assert check(signature) is Refusal.INVALID_SIGNATURE


def test_stale_timestamp_is_expired_even_when_well_signed() -> None:
    old = TS - 10_000
    sig = sign(SECRET, old, "POST", "/p", b"{}")
    assert check(sig, timestamp=str(old), path="/p") is Refusal.REQUEST_EXPIRED


def test_curl_command_carries_the_signature() -> None:
    cmd = curl_command("http://127.0.0.1:8080", SECRET.decode(), "POST", "/p", "{}", TS)
    assert f"X-Agg-Signature: {sign(SECRET, TS, 'POST', '/p', b'{}')}" in cmd
    assert "X-Agg-Timestamp: 1700000000" in cmd and "http://127.0.0.1:8080/p" in cmd


# --- callbacks -------------------------------------------------------------------------------

BET: dict[str, Any] = {
    "request_id": "req-1",
    "session_token": "tok",
    "player_id": "player-1",
    "transaction_id": "tx-1",
    "round_id": "round-1",
    "game_id": "nova-starfall",
    "amount": 100,
    "currency": "EUR",
}


def parse(action: Action, fields: dict[str, Any]) -> Callback | Invalid:
    return parse_callback(action, json.dumps(fields).encode())


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = dict(base)
    for name, value in changes.items():
        if value is _DROP:
            out.pop(name, None)
        else:
            out[name] = value
    return out


_DROP = object()


def test_valid_bet() -> None:
    assert parse(Action.BET, BET) == Callback(
        Action.BET, "req-1", "tok", "player-1", transaction_id="tx-1", round_id="round-1",
        game_id="nova-starfall", amount=100, currency="EUR", round_closed=False,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["REGULAR", "BONUS", "JACKPOT", "PROMO"])
def test_a_win_names_its_kind(kind: str) -> None:
    got = parse(Action.WIN, with_(BET, win_kind=kind))
    assert isinstance(got, Callback) and got.win_kind == WinKind(kind)
    assert parse(Action.WIN, BET) == replace(got, win_kind=WinKind.REGULAR)
    # a bet's kind is not read: only wins have one
    bet = parse(Action.BET, with_(BET, win_kind=kind))
    assert isinstance(bet, Callback) and bet.win_kind == WinKind.REGULAR


@pytest.mark.parametrize("kind", ["jackpot", "FREE", 3, True, "", ["BONUS"], {"k": "BONUS"}])
def test_an_unknown_win_kind_is_refused(kind: object) -> None:
    got = parse(Action.WIN, with_(BET, win_kind=kind))
    assert isinstance(got, Invalid) and "win_kind" in got.reason


def test_unknown_fields_are_ignored() -> None:
    got = parse(Action.BET, with_(BET, vendor_extension={"x": [1, 2]}, bonus_code="B1"))
    assert isinstance(got, Callback) and got == parse(Action.BET, BET)


def test_optional_fields_may_be_null() -> None:
    got = parse(Action.BET, with_(BET, round_closed=None, reference_transaction_id=None))
    assert isinstance(got, Callback) and got.round_closed is False


@pytest.mark.parametrize(
    ("action", "amount", "ok"),
    [
        (Action.BET, 0, False),
        (Action.BET, 1, True),
        (Action.BET, AMOUNT_MAX, True),
        (Action.BET, AMOUNT_MAX + 1, False),
        (Action.BET, -1, False),
        (Action.WIN, 0, True),
        (Action.WIN, 1, True),
        (Action.WIN, AMOUNT_MAX, True),
        (Action.WIN, AMOUNT_MAX + 1, False),
        (Action.WIN, -1, False),
        (Action.ROLLBACK, 0, True),
        (Action.ROLLBACK, AMOUNT_MAX, True),
        (Action.ROLLBACK, AMOUNT_MAX + 1, False),
        (Action.ROLLBACK, -5, False),
        (Action.BET, 1.0, False),
        (Action.BET, 100.5, False),
        (Action.WIN, 0.0, False),
        (Action.BET, True, False),
        (Action.WIN, False, False),
        (Action.BET, "100", False),
        (Action.BET, [100], False),
        (Action.BET, {"value": 100}, False),
        (Action.BET, None, False),
        (Action.WIN, None, False),
        (Action.ROLLBACK, None, True),
        (Action.BET, 10**400, False),
    ],
)
def test_amount_boundaries(action: Action, amount: Any, ok: bool) -> None:
    fields = with_(BET, amount=amount, reference_transaction_id="tx-0")
    got = parse(action, fields)
    assert isinstance(got, Callback) is ok, got
    if ok:
        assert isinstance(got, Callback) and got.amount == amount


def test_float_literal_with_integral_value_is_refused() -> None:
    body = json.dumps(BET).replace('"amount": 100', '"amount": 1e2').encode()
    assert b"1e2" in body
    assert isinstance(parse_callback(Action.BET, body), Invalid)


ID_FIELDS = ["request_id", "player_id", "transaction_id", "round_id", "game_id"]


@pytest.mark.parametrize("name", ID_FIELDS)
@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("a", True),
        ("A-z_0.9:x", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("", False),
        ("a b", False),
        ("a/b", False),
        ("é", False),
        ("a\n", False),
        (123, False),
        (True, False),
        (["a"], False),
    ],
)
def test_id_fields(name: str, value: Any, ok: bool) -> None:
    assert isinstance(parse(Action.BET, with_(BET, **{name: value})), Callback) is ok


@pytest.mark.parametrize("name", [*ID_FIELDS, "session_token", "amount", "currency"])
def test_required_fields_of_a_bet(name: str) -> None:
    assert isinstance(parse(Action.BET, with_(BET, **{name: _DROP})), Invalid)
    assert isinstance(parse(Action.BET, with_(BET, **{name: None})), Invalid)


@pytest.mark.parametrize("name", ["request_id", "session_token", "player_id"])
def test_required_fields_of_every_action(name: str) -> None:
    for action in PROVIDER_ACTIONS:
        fields = with_(BET, reference_transaction_id="tx-0", **{name: _DROP})
        assert isinstance(parse(action, fields), Invalid), action


@pytest.mark.parametrize(
    "fields",
    [
        with_(BET, reference_transaction_id="tx-0", round_id=_DROP, game_id=_DROP,
              amount=_DROP, currency=_DROP),
        with_(BET, reference_transaction_id="tx-0"),
    ],
)  # fmt: skip
def test_rollback_needs_only_its_references(fields: dict[str, Any]) -> None:
    got = parse(Action.ROLLBACK, fields)
    assert isinstance(got, Callback) and got.reference_transaction_id == "tx-0"


@pytest.mark.parametrize("missing", ["transaction_id", "reference_transaction_id"])
def test_rollback_refusals(missing: str) -> None:
    fields = with_(with_(BET, reference_transaction_id="tx-0"), **{missing: _DROP})
    assert isinstance(parse(Action.ROLLBACK, fields), Invalid)


def test_rollback_reference_must_be_an_id() -> None:
    fields = with_(BET, reference_transaction_id="bad id")
    assert isinstance(parse(Action.ROLLBACK, fields), Invalid)


@pytest.mark.parametrize("action", [Action.AUTHENTICATE, Action.BALANCE])
def test_non_money_actions_ignore_money_fields(action: Action) -> None:
    fields = {"request_id": "r", "session_token": "t", "player_id": "p", "amount": -1,
              "transaction_id": "bad id", "round_closed": "yes"}  # fmt: skip
    got = parse(action, fields)
    assert got == Callback(action, "r", "t", "p")
    assert isinstance(parse(action, with_(fields, currency="eur")), Invalid)
    assert isinstance(parse(action, with_(fields, game_id="a b")), Invalid)


@pytest.mark.parametrize(
    ("currency", "ok"),
    [("EUR", True), ("JPY", True), ("eur", False), ("XXX", False), ("EURO", False),
     ("", False), (978, False)],
)  # fmt: skip
def test_currency(currency: Any, ok: bool) -> None:
    assert isinstance(parse(Action.WIN, with_(BET, currency=currency)), Callback) is ok


@pytest.mark.parametrize(
    ("value", "ok"), [(True, True), (False, True), ("true", False), (1, False), (0, False)]
)
def test_round_closed(value: Any, ok: bool) -> None:
    got = parse(Action.WIN, with_(BET, round_closed=value))
    assert isinstance(got, Callback) is ok
    if ok:
        assert isinstance(got, Callback) and got.round_closed is value


@pytest.mark.parametrize("value", ["", 5, None, ["t"]])
def test_session_token_must_be_a_non_empty_string(value: Any) -> None:
    assert isinstance(parse(Action.BALANCE, with_(BET, session_token=value)), Invalid)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"null",
        b"[]",
        b'"text"',
        b"100",
        b'{"request_id": "a", "request_id": "b"}',
        b'{"amount": NaN}',
        b'{"amount": Infinity}',
        b"\xff\xfe{}",
        b'{"request_id": "\xe9"}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_malformed_bodies(body: bytes) -> None:
    assert isinstance(parse_callback(Action.BET, body), Invalid)


def test_echo_fields_of_a_refused_body() -> None:
    body = json.dumps(with_(BET, amount=-1)).encode()
    assert echo_fields(body) == {"request_id": "req-1", "transaction_id": "tx-1",
                                 "currency": "EUR"}  # fmt: skip
    bad = json.dumps(with_(BET, request_id="x" * 100, currency="eur")).encode()
    assert echo_fields(bad) == {"request_id": None, "transaction_id": "tx-1", "currency": None}
    assert echo_fields(b"not json") == {"request_id": None, "transaction_id": None,
                                        "currency": None}  # fmt: skip


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (Status.OK, 200),
        (Status.INSUFFICIENT_FUNDS, 200),
        (Status.PLAYER_BLOCKED, 200),
        (Status.LIMIT_EXCEEDED, 200),
        (Status.GAME_NOT_ALLOWED, 200),
        (Status.SESSION_NOT_FOUND, 200),
        (Status.SESSION_EXPIRED, 200),
        (Status.CURRENCY_MISMATCH, 200),
        (Status.TRANSACTION_NOT_FOUND, 200),
        (Status.BET_ROLLED_BACK, 200),
        (Status.ROUND_CLOSED, 200),
        (Status.INVALID_REQUEST, 400),
        (Refusal.INVALID_SIGNATURE, 401),
        (Refusal.REQUEST_EXPIRED, 401),
        (Refusal.UNKNOWN_PROVIDER, 404),
        (Status.DUPLICATE_CONFLICT, 409),
        (Status.RETRY_LATER, 503),
    ],
)
def test_http_codes_of_the_contract(status: str, code: int) -> None:
    assert http_status(status) == code


# --- operator API ----------------------------------------------------------------------------

SESSION: dict[str, Any] = {
    "player_id": "player-1",
    "currency": "EUR",
    "country": "DE",
    "game_id": "nova-starfall",
    "mode": "real",
}


def test_valid_session_request() -> None:
    got = validate_session_request(with_(SESSION, language="pt-BR",
                                         return_url="https://casino.example/lobby"))  # fmt: skip
    assert got == SessionRequest("player-1", "EUR", "DE", "nova-starfall", "real", "pt-BR",
                                 "https://casino.example/lobby")  # fmt: skip


@pytest.mark.parametrize(
    "change",
    [
        {"player_id": _DROP}, {"player_id": "a b"}, {"currency": "eur"}, {"currency": _DROP},
        {"country": "de"}, {"country": "DEU"}, {"country": "DE\n"}, {"country": _DROP},
        {"country": 49},
        {"game_id": _DROP}, {"game_id": "x" * 65}, {"mode": "fun"}, {"mode": _DROP},
        {"mode": True}, {"language": "english language"}, {"language": 1},
        {"return_url": "javascript:alert(1)"}, {"return_url": "https://x/" + "a" * 2100},
        {"return_url": "https://x.example/a b"},
    ],
)  # fmt: skip
def test_session_request_refusals(change: dict[str, Any]) -> None:
    assert isinstance(validate_session_request(with_(SESSION, **change)), Invalid)


TENANTS = parse_tenants(
    {
        "operators": [
            {"id": "op-alpha", "name": "A", "secret": {"value": "dev-secret-op-alpha-0001"},
             "currencies": ["EUR", "USD"], "providers": ["prov-nova", "prov-orbit", "prov-off"],
             "blocked_countries": ["US"]},
            {"id": "op-beta", "name": "B", "secret": {"value": "dev-secret-op-beta-00002"},
             "currencies": ["EUR", "GBP"], "providers": ["prov-nova"]},
        ],
        "providers": [
            {"id": "prov-nova", "name": "N", "secret": {"value": "dev-secret-prov-nova-001"}},
            {"id": "prov-orbit", "name": "O", "secret": {"value": "dev-secret-prov-orbit-01"}},
            {"id": "prov-off", "name": "X", "secret": {"value": "dev-secret-prov-off-0001"},
             "enabled": False},
        ],
        "games": [
            {"id": "nova-starfall", "provider": "prov-nova", "name": "Starfall"},
            {"id": "nova-gemrush", "provider": "prov-nova", "name": "Gem Rush",
             "restricted_countries": ["GB"]},
            {"id": "orbit-roulette", "provider": "prov-orbit", "name": "Roulette",
             "restricted_countries": ["DE", "NL"]},
            {"id": "off-slots", "provider": "prov-off", "name": "Off"},
        ],
    }
)  # fmt: skip
RULES = rules_of(TENANTS)
NOW_MS = 1_764_000_000_000


@pytest.mark.parametrize(
    ("operator", "change", "expected"),
    [
        ("op-alpha", {}, None),
        ("op-alpha", {"game_id": "no-such-game"}, OperatorRefusal.UNKNOWN_GAME),
        ("op-alpha", {"game_id": "orbit-roulette"}, OperatorRefusal.GAME_NOT_ALLOWED),
        ("op-alpha", {"game_id": "orbit-roulette", "country": "FR"}, None),
        ("op-alpha", {"country": "US"}, OperatorRefusal.GAME_NOT_ALLOWED),
        ("op-alpha", {"game_id": "off-slots"}, OperatorRefusal.GAME_NOT_ALLOWED),
        ("op-beta", {"game_id": "orbit-roulette", "country": "FR"},
         OperatorRefusal.GAME_NOT_ALLOWED),
        ("op-beta", {"game_id": "nova-gemrush", "country": "GB", "currency": "GBP"},
         OperatorRefusal.GAME_NOT_ALLOWED),
        ("op-beta", {"game_id": "nova-gemrush", "country": "IE"}, None),
        ("op-beta", {"currency": "USD"}, OperatorRefusal.CURRENCY_NOT_SUPPORTED),
        # the game question is settled before the currency one
        ("op-beta", {"currency": "USD", "game_id": "orbit-roulette"},
         OperatorRefusal.GAME_NOT_ALLOWED),
        ("op-beta", {"currency": "USD", "game_id": "nope"}, OperatorRefusal.UNKNOWN_GAME),
    ],
)  # fmt: skip
def test_session_refusal(
    operator: str, change: dict[str, Any], expected: OperatorRefusal | None
) -> None:
    op = TENANTS.operator(operator)
    assert op is not None
    req = validate_session_request(with_(SESSION, **change))
    assert isinstance(req, SessionRequest)
    refused = session_refusal(TENANTS, RULES, op, req, NOW_MS)
    assert (refused.refusal if refused is not None else None) is expected


@pytest.mark.parametrize(
    ("operator", "country", "games"),
    [
        ("op-alpha", "DE", ["nova-starfall", "nova-gemrush"]),
        ("op-alpha", "FR", ["nova-starfall", "nova-gemrush", "orbit-roulette"]),
        ("op-alpha", "GB", ["nova-starfall", "orbit-roulette"]),
        ("op-alpha", "US", []),
        ("op-beta", "US", ["nova-starfall", "nova-gemrush"]),
        ("op-beta", "GB", ["nova-starfall"]),
    ],
)
def test_offered_games(operator: str, country: str, games: list[str]) -> None:
    op = TENANTS.operator(operator)
    assert op is not None
    assert [g.id for g in offered_games(TENANTS, op, country)] == games


TRANSFER = {"transfer_id": "tr-1", "direction": "deposit", "amount": 500, "currency": "EUR"}


@pytest.mark.parametrize("direction", ["DEPOSIT", "in", "", 1, True, ["deposit"], {"d": 1}])
def test_a_transfer_direction_is_deposit_or_withdraw(direction: object) -> None:
    got = validate_transfer({**TRANSFER, "direction": direction})
    assert isinstance(got, Invalid) and got.reason == "direction: deposit or withdraw"


def test_a_withdrawal_may_leave_out_its_amount() -> None:
    got = validate_transfer({**TRANSFER, "direction": "withdraw", "amount": None})
    assert got == TransferRequest("tr-1", Action.WITHDRAW, None, "EUR")
    assert isinstance(validate_transfer({**TRANSFER, "amount": None}), Invalid)


# --- free-spin campaigns ---------------------------------------------------------------------

CAMPAIGN = {"campaign_id": "fs-1", "provider_id": "prov-nova", "games": ["nova-starfall"],
            "spins": 10, "bet_value": 20, "currency": "EUR",
            "expires_at": "2026-02-01T00:00:00Z"}  # fmt: skip


def test_a_campaign_reads_with_its_expiry_in_utc_to_the_millisecond() -> None:
    got = validate_campaign({**CAMPAIGN, "expires_at": "2026-02-01T01:00:00.123456+01:00"})
    assert isinstance(got, CampaignRequest)
    assert got.games == ("nova-starfall",) and got.expires_at_ms == 1_769_904_000_123
    assert rfc3339(got.expires_at_ms) == "2026-02-01T00:00:00.123Z"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"extra": 1}, "extra: not a field of a campaign"),
        ({"campaign_id": "a b"}, "campaign_id: 1..64 characters of [A-Za-z0-9_.:-]"),
        ({"provider_id": None}, "provider_id: required"),
        ({"games": []}, "games: a list of 1..50 game ids"),
        ({"games": "nova-starfall"}, "games: a list of 1..50 game ids"),
        ({"games": [f"g{i}" for i in range(51)]}, "games: a list of 1..50 game ids"),
        ({"games": ["a", 1]}, "games: a list of 1..50 game ids"),
        ({"games": ["a", "a"]}, "games: each game once"),
        ({"spins": 0}, "spins: a JSON integer 1..1000000"),
        ({"spins": 1_000_001}, "spins: a JSON integer 1..1000000"),
        ({"spins": 2.0}, "spins: a JSON integer 1..1000000"),
        ({"spins": True}, "spins: a JSON integer 1..1000000"),
        ({"bet_value": 0}, "bet_value: out of range 1..2**63-1"),
        ({"bet_value": 2**63}, "bet_value: out of range 1..2**63-1"),
        ({"currency": "eur"}, "currency: an ISO 4217 code"),
        ({"expires_at": None}, "expires_at: required"),
        ({"expires_at": "2026-02-01T00:00:00"}, "expires_at: give a time zone (e.g. Z)"),
        ({"expires_at": "tomorrow"}, "expires_at: an RFC 3339 date-time"),
        ({"expires_at": 1769904000}, "expires_at: an RFC 3339 date-time"),
    ],
)  # fmt: skip
def test_a_malformed_campaign_is_refused_naming_its_field(changes: dict[str, Any],
                                                          reason: str) -> None:  # fmt: skip
    got = validate_campaign({**CAMPAIGN, **changes})
    assert isinstance(got, Invalid) and got.reason == reason


def test_an_expiry_beyond_utcs_range_is_the_earliest_or_latest_instant() -> None:
    early = validate_campaign({**CAMPAIGN, "expires_at": "0001-01-01T00:00:00+01:00"})
    late = validate_campaign({**CAMPAIGN, "expires_at": "9999-12-31T23:59:59-01:00"})
    assert isinstance(early, CampaignRequest) and early.expires_at_ms < NOW_MS
    assert isinstance(late, CampaignRequest) and late.expires_at.year == 9999


@pytest.mark.parametrize(
    ("operator", "changes", "expected"),
    [
        ("op-alpha", {}, None),
        ("op-alpha", {"games": ["nova-starfall", "nova-gemrush"]}, None),
        ("op-alpha", {"games": ["no-such-game"]}, OperatorRefusal.UNKNOWN_GAME),
        ("op-alpha", {"games": ["orbit-roulette"]}, OperatorRefusal.UNKNOWN_GAME),  # not nova's
        ("op-beta", {"provider_id": "prov-orbit", "games": ["orbit-roulette"]},
         OperatorRefusal.GAME_NOT_ALLOWED),  # not a provider of op-beta's
        ("op-alpha", {"provider_id": "prov-off", "games": ["off-slots"]},
         OperatorRefusal.GAME_NOT_ALLOWED),  # disabled
        ("op-beta", {"currency": "USD"}, OperatorRefusal.CURRENCY_NOT_SUPPORTED),
    ],
)  # fmt: skip
def test_campaign_refusals_in_precedence(operator: str, changes: dict[str, Any],
                                         expected: OperatorRefusal | None) -> None:  # fmt: skip
    op = TENANTS.operator(operator)
    req = validate_campaign({**CAMPAIGN, **changes})
    assert op is not None and isinstance(req, CampaignRequest)
    assert campaign_refusal(TENANTS, op, req) is expected


@pytest.mark.parametrize(("body", "ok"), [({}, True), ({"x": 1}, False), ("[]", False)])
def test_a_cancel_takes_an_empty_object(body: object, ok: bool) -> None:
    assert (validate_cancel(body) is None) is ok
