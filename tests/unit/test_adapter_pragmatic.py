"""The ``pragmatic-v1`` adapter: the hash rule with a worked example, example exchanges table
by table, every status's error code, exact and inexact amounts, the canonical -> wire ->
canonical round trip, and a fuzz of its parser (every input answered in the protocol's own
format, never an exception)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agg_domain.statuses import Action, Status, WinKind
from agg_ingress.adapters.base import Accepted, Credentials, Refused, Result, WireRequest
from agg_ingress.adapters.pragmatic import (
    DESCRIPTION,
    ERROR,
    PragmaticAdapter,
    decode_answer,
    encode_request,
    request_hash,
)
from agg_ingress.protocol import Callback, Refusal
from agg_ingress.sessions import PlayerRef, issue_player_ref
from tests.fuzz_budget import examples

ADAPTER = PragmaticAdapter()
SECRET = b"testKey"
CREDENTIALS = Credentials(secret=SECRET)
NOW = 1_800_000_000.0
SESSION_SECRET = b"session-secret-0123456789abcdef"
USER = issue_player_ref(SESSION_SECRET, PlayerRef("op-alpha", "p-1", "prov-prag", "EUR", "real"))
USER_JPY = issue_player_ref(SESSION_SECRET, PlayerRef("op-beta", "p-1", "prov-prag", "JPY", "real"))
USER_KWD = issue_player_ref(SESSION_SECRET, PlayerRef("op-beta", "p-1", "prov-prag", "KWD", "real"))
CODES = set(DESCRIPTION)


def _body(params: dict[str, str], secret: bytes = SECRET) -> bytes:
    return urlencode({**params, "hash": request_hash(params, secret)}).encode()


def _parse(method: str, params: dict[str, str] | bytes) -> Accepted | Refused:
    body = params if isinstance(params, bytes) else _body(params)
    return ADAPTER.parse(WireRequest("POST", method, "", {}, body), CREDENTIALS, NOW)


def _answer(parsed: Accepted | Refused, result: Result | None = None) -> dict[str, Any]:
    if result is None:
        assert isinstance(parsed, Refused)
        result = Result(parsed.status, None)
    wire = ADAPTER.render(parsed.context, result, CREDENTIALS)
    assert wire.http == 200 and wire.content_type == "application/json"
    answer: dict[str, Any] = json.loads(wire.body)
    assert answer["error"] in CODES and isinstance(answer["description"], str)
    return answer


BET = {"providerId": "PragmaticPlay", "userId": USER, "gameId": "vs20doghouse",
       "roundId": "5103188801", "reference": "5c4f2b1e9a3d", "amount": "2.50",
       "timestamp": "1700000000000", "roundDetails": "spin"}  # fmt: skip


# --- the hash -----------------------------------------------------------------------------


def test_the_hash_is_md5_of_the_sorted_parameters_with_the_secret_appended() -> None:
    # worked example: sorted by name, hash left out, joined k=v with &, secret appended
    params = {"token": "5v93mto7jr7ghcn2", "providerId": "PragmaticPlay", "gameId": "vs20doghouse"}
    joined = "gameId=vs20doghouse&providerId=PragmaticPlay&token=5v93mto7jr7ghcn2"
    assert hashlib.md5((joined + "testKey").encode()).hexdigest() == (
        "fed845964ae8991b05b526aee608f48d")  # fmt: skip
    assert request_hash(params, SECRET) == "fed845964ae8991b05b526aee608f48d"
    assert request_hash({**params, "hash": "ignored"}, SECRET) == request_hash(params, SECRET)
    bet = {"userId": "U1", "amount": "2.50", "gameId": "vs20doghouse",
           "timestamp": "1700000000000", "providerId": "PragmaticPlay",
           "reference": "5c4f2b1e9a3d", "roundId": "5103188801"}  # fmt: skip
    assert request_hash(bet, SECRET) == "940be2700b7b2991c1530881f8056f6b"


@pytest.mark.parametrize(
    "body",
    [
        urlencode({**BET, "hash": "0" * 32}).encode(),
        urlencode(BET).encode(),  # no hash
        _body(BET, b"another-secret"),
        _body(BET)[:-1] + (b"1" if _body(BET).endswith(b"0") else b"0"),  # the hash's last digit
        _body(BET) + b"&extra=1",  # a parameter outside the hash
        urlencode({**BET, "hash": "é" * 32}).encode(),
    ],
)
def test_a_wrong_or_missing_hash_is_error_5_and_reads_nothing(body: bytes) -> None:
    refused = _parse("bet.html", body)
    assert isinstance(refused, Refused) and refused.status is Refusal.INVALID_SIGNATURE
    assert _answer(refused) == {"error": 5, "description": "Invalid hash"}


def test_the_hash_is_compared_without_regard_to_case() -> None:
    body = urlencode({**BET, "hash": request_hash(BET, SECRET).upper()}).encode()
    assert isinstance(_parse("bet.html", body), Accepted)


def test_a_provider_without_a_secret_verifies_nothing() -> None:
    parsed = ADAPTER.parse(WireRequest("POST", "bet.html", "", {}, _body(BET)), Credentials(), NOW)
    assert isinstance(parsed, Refused) and parsed.status is Refusal.INVALID_SIGNATURE


# --- example exchanges ---------------------------------------------------------------------

P = "PragmaticPlay"


@pytest.mark.parametrize(
    ("method", "params", "expected"),
    [
        ("authenticate.html", {"providerId": P, "token": "tok.en", "gameId": "vs20doghouse"},
         Callback(Action.AUTHENTICATE, "", "tok.en", "", game_id="vs20doghouse")),
        ("authenticate.html", {"providerId": P, "token": "tok.en"},
         Callback(Action.AUTHENTICATE, "", "tok.en", "")),
        ("balance.html", {"providerId": P, "userId": USER},
         Callback(Action.BALANCE, "", "", "", player_ref=USER)),
        ("balance.html", {"providerId": P, "userId": USER, "token": "tok.en"},
         Callback(Action.BALANCE, "", "tok.en", "", player_ref=USER)),
        ("bet.html", BET,
         Callback(Action.BET, "", "", "", transaction_id="5c4f2b1e9a3d", round_id="5103188801",
                  game_id="vs20doghouse", amount=250, currency="EUR", player_ref=USER)),
        ("result.html", {**BET, "amount": "0", "promoWinAmount": "0.00"},
         Callback(Action.WIN, "", "", "", transaction_id="5c4f2b1e9a3d", round_id="5103188801",
                  game_id="vs20doghouse", amount=0, currency="EUR", player_ref=USER)),
        ("result.html", {**BET, "amount": "12.3"},
         Callback(Action.WIN, "", "", "", transaction_id="5c4f2b1e9a3d", round_id="5103188801",
                  game_id="vs20doghouse", amount=1230, currency="EUR", player_ref=USER)),
        ("bonusWin.html", {"providerId": P, "userId": USER, "reference": "b-1", "amount": "5",
                           "bonusCode": "fs-77"},
         Callback(Action.WIN, "", "", "", transaction_id="bw:b-1", amount=500, currency="EUR",
                  player_ref=USER, win_kind=WinKind.BONUS, campaign_id="fs-77")),
        ("bet.html", {**BET, "bonusCode": "fs-77"},  # a free round of the campaign fs-77
         Callback(Action.BET, "", "", "", transaction_id="5c4f2b1e9a3d", round_id="5103188801",
                  game_id="vs20doghouse", amount=250, currency="EUR", player_ref=USER,
                  campaign_id="fs-77")),
        ("result.html", {**BET, "amount": "3", "bonusCode": "fs-77"},
         Callback(Action.WIN, "", "", "", transaction_id="5c4f2b1e9a3d", round_id="5103188801",
                  game_id="vs20doghouse", amount=300, currency="EUR", player_ref=USER,
                  campaign_id="fs-77")),
        ("jackpotWin.html", {**BET, "reference": "j-1", "jackpotId": "9", "amount": "1000.00"},
         Callback(Action.WIN, "", "", "", transaction_id="jw:j-1", round_id="5103188801",
                  game_id="vs20doghouse", amount=100_000, currency="EUR", player_ref=USER,
                  win_kind=WinKind.JACKPOT)),
        ("promoWin.html", {"providerId": P, "userId": USER, "reference": "p-1", "amount": "7.77",
                           "currency": "EUR", "campaignId": "c1", "campaignType": "T"},
         Callback(Action.WIN, "", "", "", transaction_id="pw:p-1", amount=777, currency="EUR",
                  player_ref=USER, win_kind=WinKind.PROMO)),
        ("promoWin.html", {"providerId": P, "userId": USER, "reference": "p-1", "amount": "7",
                           "currency": "USD"},
         Callback(Action.WIN, "", "", "", transaction_id="pw:p-1", amount=700, currency="USD",
                  player_ref=USER, win_kind=WinKind.PROMO)),  # the core refuses: not its currency
        ("refund.html", {"providerId": P, "userId": USER, "reference": "5c4f2b1e9a3d"},
         Callback(Action.ROLLBACK, "", "", "", transaction_id="rf:5c4f2b1e9a3d",
                  reference_transaction_id="5c4f2b1e9a3d", player_ref=USER)),
        ("refund.html", {**BET, "amount": "2.50"},
         Callback(Action.ROLLBACK, "", "", "", transaction_id="rf:5c4f2b1e9a3d",
                  reference_transaction_id="5c4f2b1e9a3d", round_id="5103188801",
                  game_id="vs20doghouse", player_ref=USER)),
        ("endRound.html", {"providerId": P, "userId": USER, "gameId": "vs20doghouse",
                           "roundId": "5103188801"},
         Callback(Action.WIN, "", "", "", transaction_id="er:5103188801",
                  round_id="5103188801", game_id="vs20doghouse", amount=0, currency="EUR",
                  round_closed=True, player_ref=USER)),
        ("bet.html", {**BET, "userId": USER_JPY, "amount": "15.00"},
         Callback(Action.BET, "", "", "", transaction_id="5c4f2b1e9a3d", round_id="5103188801",
                  game_id="vs20doghouse", amount=15, currency="JPY", player_ref=USER_JPY)),
        ("bet.html", {**BET, "userId": USER_KWD, "amount": "1.255"},
         Callback(Action.BET, "", "", "", transaction_id="5c4f2b1e9a3d", round_id="5103188801",
                  game_id="vs20doghouse", amount=1255, currency="KWD", player_ref=USER_KWD)),
    ],
)  # fmt: skip
def test_requests_read_as_canonical_callbacks(
    method: str, params: dict[str, str], expected: Callback
) -> None:
    parsed = _parse(method, params)
    assert isinstance(parsed, Accepted), parsed
    assert parsed.callback == replace(expected, request_id=parsed.callback.request_id)


def test_request_ids_a_retry_of_a_money_call_shares_one_and_a_balance_call_never() -> None:
    def request_id(method: str, params: dict[str, str], now_s: float) -> str:
        wire = WireRequest("POST", method, "", {}, _body(params))
        parsed = ADAPTER.parse(wire, CREDENTIALS, now_s)
        assert isinstance(parsed, Accepted)
        return parsed.callback.request_id

    assert request_id("bet.html", BET, NOW) == request_id("bet.html", BET, NOW + 5)
    assert request_id("bet.html", BET, NOW) != request_id("bet.html", {**BET, "amount": "3"}, NOW)
    balance = {"providerId": P, "userId": USER}
    assert request_id("balance.html", balance, NOW) != request_id("balance.html", balance, NOW + 1)


@pytest.mark.parametrize(
    ("method", "params", "status"),
    [
        ("bet.html", {**BET, "amount": "2.505"}, Status.INVALID_REQUEST),  # three places
        ("bet.html", {**BET, "amount": "2.500"}, Status.INVALID_REQUEST),  # three places
        ("bet.html", {**BET, "amount": "0"}, Status.INVALID_REQUEST),  # a free round
        ("bet.html", {**BET, "amount": "0.00"}, Status.INVALID_REQUEST),
        ("bet.html", {**BET, "amount": "-1"}, Status.INVALID_REQUEST),
        ("bet.html", {**BET, "amount": "+1"}, Status.INVALID_REQUEST),
        ("bet.html", {**BET, "amount": "1e2"}, Status.INVALID_REQUEST),
        ("bet.html", {**BET, "amount": " 1"}, Status.INVALID_REQUEST),
        ("bet.html", {**BET, "amount": "1."}, Status.INVALID_REQUEST),
        ("bet.html", {**BET, "amount": ".5"}, Status.INVALID_REQUEST),
        ("bet.html", {**BET, "amount": "1,5"}, Status.INVALID_REQUEST),
        ("bet.html", {**BET, "amount": "NaN"}, Status.INVALID_REQUEST),
        ("bet.html", {**BET, "amount": "٣"}, Status.INVALID_REQUEST),  # a non-ASCII digit
        ("bet.html", {**BET, "amount": ""}, Status.INVALID_REQUEST),
        ("bet.html", {**BET, "amount": "92233720368547758.08"}, Status.INVALID_REQUEST),
        ("bet.html", {**BET, "userId": USER_JPY, "amount": "15.50"}, Status.INVALID_REQUEST),
        ("bet.html", {**BET, "userId": USER_KWD, "amount": "1.2555"}, Status.INVALID_REQUEST),
        ("bet.html", {k: v for k, v in BET.items() if k != "reference"}, Status.INVALID_REQUEST),
        ("bet.html", {k: v for k, v in BET.items() if k != "gameId"}, Status.INVALID_REQUEST),
        ("bet.html", {k: v for k, v in BET.items() if k != "roundId"}, Status.INVALID_REQUEST),
        ("bet.html", {k: v for k, v in BET.items() if k != "providerId"},
         Status.INVALID_REQUEST),
        ("bet.html", {**BET, "reference": "a:b"}, Status.INVALID_REQUEST),  # no colon
        ("bet.html", {**BET, "reference": "r" * 61}, Status.INVALID_REQUEST),
        ("bet.html", {**BET, "gameId": "a b"}, Status.INVALID_REQUEST),
        ("bet.html", {**BET, "userId": ""}, Status.INVALID_REQUEST),
        ("bet.html", {**BET, "userId": "not-a-reference"}, Status.SESSION_NOT_FOUND),
        ("bet.html", {**BET, "userId": "e30.AAAAAAAAAAAAAAAAAAAAAA"}, Status.SESSION_NOT_FOUND),
        ("result.html", {**BET, "promoWinAmount": "1.00"}, Status.INVALID_REQUEST),
        ("promoWin.html", {"providerId": P, "userId": USER, "reference": "p", "amount": "1"},
         Status.INVALID_REQUEST),  # no currency
        ("promoWin.html", {"providerId": P, "userId": USER, "reference": "p", "amount": "1",
                           "currency": "XXX"}, Status.INVALID_REQUEST),
        ("endRound.html", {"providerId": P, "userId": USER, "gameId": "g"},
         Status.INVALID_REQUEST),
        ("refund.html", {"providerId": P, "userId": USER}, Status.INVALID_REQUEST),
        ("authenticate.html", {"providerId": P}, Status.INVALID_REQUEST),
        ("authenticate.html", {"providerId": P, "token": "a b"}, Status.INVALID_REQUEST),
        ("balance.html", {"providerId": P}, Status.INVALID_REQUEST),
        ("bet", BET, Status.INVALID_REQUEST),
        ("cancel.html", BET, Status.INVALID_REQUEST),
        ("wallet/bet", BET, Status.INVALID_REQUEST),
    ],
)  # fmt: skip
def test_bad_requests_are_refused_in_the_protocols_own_format(
    method: str, params: dict[str, str], status: Status
) -> None:
    refused = _parse(method, params)
    assert isinstance(refused, Refused) and refused.status is status, refused
    assert _answer(refused)["error"] == (7 if status is Status.INVALID_REQUEST else 2)


@pytest.mark.parametrize(
    "body",
    [b"a=1&a=2", b"%ff=1", b"=1&x", b"a", b"\xff", b"&".join([b"a%d=1" % i for i in range(80)])],
)
def test_bodies_that_are_no_form_are_error_7(body: bytes) -> None:
    refused = _parse("bet.html", body)
    assert isinstance(refused, Refused) and refused.status is Status.INVALID_REQUEST
    assert _answer(refused)["error"] == 7


def test_a_get_is_error_7() -> None:
    parsed = ADAPTER.parse(WireRequest("GET", "bet.html", "", {}, _body(BET)), CREDENTIALS, NOW)
    assert isinstance(parsed, Refused) and _answer(parsed)["error"] == 7


# --- answers -------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "code"), sorted(ERROR.items()))
def test_every_canonical_status_has_its_error_code(status: str, code: int) -> None:
    parsed = _parse("bet.html", BET)
    assert isinstance(parsed, Accepted)
    canonical = Status(status) if status in Status.__members__ else Refusal(status)
    answer = _answer(parsed, Result(canonical, "EUR", 1_234, "5c4f2b1e9a3d"))
    assert answer["error"] == code
    assert (answer["currency"], answer["cash"], answer["bonus"]) == ("EUR", 12.34, 0)
    assert ("transactionId" in answer) == (code == 0)


def test_a_bet_on_a_closed_round_is_bet_not_allowed_with_its_reason() -> None:
    parsed = _parse("bet.html", BET)
    assert isinstance(parsed, Accepted)
    answer = _answer(parsed, Result(Status.ROUND_CLOSED, "EUR", 1_234, None))
    assert (answer["error"], answer["description"]) == (3, "Bet not allowed: the round is closed")
    assert "transactionId" not in answer and answer["cash"] == 12.34


@pytest.mark.parametrize(
    ("method", "params", "code"),
    [
        ("authenticate.html", {"providerId": P, "token": "t"}, 4),
        ("balance.html", {"providerId": P, "userId": USER, "token": "t"}, 4),
        ("balance.html", {"providerId": P, "userId": USER}, 2),
        ("bet.html", BET, 2),
    ],
)
def test_session_not_found_is_a_bad_token_or_an_unknown_player(
    method: str, params: dict[str, str], code: int
) -> None:
    parsed = _parse(method, params)
    assert isinstance(parsed, Accepted)
    assert _answer(parsed, Result(Status.SESSION_NOT_FOUND, None))["error"] == code


def test_a_status_not_in_the_table_is_an_internal_error_without_retry() -> None:
    parsed = _parse("bet.html", BET)
    assert isinstance(parsed, Accepted)
    answer = _answer(parsed, Result(Status.OK, None, extra={}))
    assert answer["error"] == 0
    wire = ADAPTER.render(parsed.context, Result("SOMETHING_NEW", None), CREDENTIALS)  # type: ignore[arg-type]
    assert json.loads(wire.body) == {"error": 120, "description": "Internal error"}


@pytest.mark.parametrize(
    ("method", "params", "extra", "expected"),
    [
        ("authenticate.html", {"providerId": P, "token": "t"}, {"player_ref": USER},
         {"userId": USER, "currency": "EUR", "cash": 99.5, "bonus": 0, "error": 0,
          "description": "Success"}),
        ("balance.html", {"providerId": P, "userId": USER}, {"player_ref": USER},
         {"userId": USER, "currency": "EUR", "cash": 99.5, "bonus": 0, "error": 0,
          "description": "Success"}),
        ("bet.html", BET, {},
         {"transactionId": "T", "currency": "EUR", "cash": 99.5, "bonus": 0, "usedPromo": 0,
          "error": 0, "description": "Success"}),
        ("bonusWin.html", {"providerId": P, "userId": USER, "reference": "b", "amount": "1"}, {},
         {"transactionId": "T", "currency": "EUR", "cash": 99.5, "bonus": 0, "error": 0,
          "description": "Success"}),
        ("refund.html", {"providerId": P, "userId": USER, "reference": "b"}, {},
         {"transactionId": "T", "currency": "EUR", "cash": 99.5, "bonus": 0, "error": 0,
          "description": "Success"}),
        ("endRound.html", {"providerId": P, "userId": USER, "gameId": "g", "roundId": "r"}, {},
         {"currency": "EUR", "cash": 99.5, "bonus": 0, "error": 0, "description": "Success"}),
    ],
)  # fmt: skip
def test_answers_of_each_method(
    method: str, params: dict[str, str], extra: dict[str, str], expected: dict[str, Any]
) -> None:
    parsed = _parse(method, params)
    assert isinstance(parsed, Accepted)
    assert _answer(parsed, Result(Status.OK, "EUR", 9_950, "T", extra=extra)) == expected


@pytest.mark.parametrize(
    ("currency", "minor", "text"),
    [("EUR", 9_950, "99.50"), ("EUR", 7, "0.07"), ("EUR", 0, "0.00"), ("JPY", 15, "15.00"),
     ("KWD", 1_255, "1.255"), ("EUR", 2**63 - 1, "92233720368547758.07")],
)  # fmt: skip
def test_cash_is_written_exactly_with_two_places(currency: str, minor: int, text: str) -> None:
    parsed = _parse("balance.html", {"providerId": P, "userId": USER})
    assert isinstance(parsed, Accepted)
    wire = ADAPTER.render(parsed.context, Result(Status.OK, currency, minor), CREDENTIALS)
    assert f'"cash":{text},' in wire.body.decode()
    assert decode_answer(wire.body)["cash_minor"] == minor


def test_duplicate_conflict_and_currency_mismatch_say_why() -> None:
    parsed = _parse("bet.html", BET)
    assert isinstance(parsed, Accepted)
    conflict = _answer(parsed, Result(Status.DUPLICATE_CONFLICT, "EUR"))
    assert conflict["error"] == 7 and "already used" in conflict["description"]
    mismatch = _answer(parsed, Result(Status.CURRENCY_MISMATCH, "EUR"))
    assert mismatch["error"] == 7 and "currency" in mismatch["description"]


# --- round trip and fuzz -------------------------------------------------------------------

wire_refs = st.from_regex(r"[A-Za-z0-9_.-]{1,60}", fullmatch=True)
ids = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)
players = st.builds(
    PlayerRef, ids, ids, ids, st.sampled_from(["EUR", "USD", "JPY", "KWD", "GBP", "CLP"]),
    st.sampled_from(["real", "demo"]),
)  # fmt: skip


@st.composite
def callbacks(draw: st.DrawFn) -> Callback:
    player = draw(players)
    user = issue_player_ref(SESSION_SECRET, player)
    kind = draw(st.sampled_from(["authenticate", "balance", "bet", "result", "bonusWin",
                                 "jackpotWin", "promoWin", "refund", "endRound"]))  # fmt: skip
    token = draw(st.from_regex(r"[\x21-\x7e]{1,80}", fullmatch=True))
    if kind == "authenticate":
        return Callback(Action.AUTHENTICATE, "", token, "", game_id=draw(st.none() | ids))
    if kind == "balance":
        return Callback(Action.BALANCE, "", draw(st.just("") | st.just(token)), "",
                        player_ref=user)  # fmt: skip
    ref, round_id, game = draw(wire_refs), draw(wire_refs), draw(ids)
    amount = draw(st.integers(1 if kind == "bet" else 0, 10**15))
    c = player.currency
    if kind == "refund":
        return Callback(Action.ROLLBACK, "", "", "", transaction_id=f"rf:{ref}",
                        reference_transaction_id=ref, round_id=draw(st.none() | wire_refs),
                        game_id=draw(st.none() | ids), player_ref=user)  # fmt: skip
    if kind == "endRound":
        return Callback(Action.WIN, "", "", "", transaction_id=f"er:{round_id}",
                        round_id=round_id, game_id=game, amount=0, currency=c,
                        round_closed=True, player_ref=user)  # fmt: skip
    if kind in ("bonusWin", "promoWin"):
        prefix = "bw:" if kind == "bonusWin" else "pw:"
        win_kind = WinKind.BONUS if kind == "bonusWin" else WinKind.PROMO
        return Callback(Action.WIN, "", "", "", transaction_id=prefix + ref, amount=amount,
                        currency=c, player_ref=user, win_kind=win_kind)  # fmt: skip
    action = Action.BET if kind == "bet" else Action.WIN
    prefix = "jw:" if kind == "jackpotWin" else ""
    win_kind = WinKind.JACKPOT if kind == "jackpotWin" else WinKind.REGULAR
    return Callback(action, "", "", "", transaction_id=prefix + ref, round_id=round_id,
                    game_id=game, amount=amount, currency=c, player_ref=user,
                    win_kind=win_kind)  # fmt: skip


@settings(max_examples=examples(300, full=5_000), deadline=None)
@given(callbacks(), st.none() | st.integers(0, 2**45))
def test_canonical_to_wire_to_canonical_is_the_identity(
    callback: Callback, timestamp_ms: int | None
) -> None:
    method, body, headers = encode_request(callback, SECRET, timestamp_ms=timestamp_ms)
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    parsed = ADAPTER.parse(WireRequest("POST", method, "", {}, body), CREDENTIALS, NOW)
    assert isinstance(parsed, Accepted), parsed
    assert parsed.callback == replace(callback, request_id=parsed.callback.request_id)
    currency = callback.currency or "EUR"
    rendered = ADAPTER.render(parsed.context, Result(Status.OK, currency, 4_321), CREDENTIALS)
    answer = decode_answer(rendered.body)
    assert answer["cash_minor"] == 4_321 and answer["error"] == 0


form_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=30)
names = st.sampled_from(["providerId", "userId", "token", "gameId", "roundId", "reference",
                         "amount", "currency", "promoWinAmount", "timestamp", "x"])  # fmt: skip
values = form_text | st.sampled_from([USER, USER_JPY, "1", "0", "1.00", "-1", "9" * 30, "EUR"])


@pytest.mark.fuzz
@settings(max_examples=examples(500), deadline=None)
@given(
    st.sampled_from(["authenticate.html", "balance.html", "bet.html", "result.html",
                     "bonusWin.html", "jackpotWin.html", "promoWin.html", "refund.html",
                     "endRound.html", "x.html", ""]),
    st.dictionaries(names | form_text, values, max_size=12),
    st.booleans(),
    st.binary(max_size=200),
)  # fmt: skip
def test_the_parser_answers_every_input_in_its_own_format(
    method: str, params: dict[str, str], hashed: bool, raw: bytes
) -> None:
    for body in (_body(params) if hashed else urlencode(params).encode(), raw):
        parsed = ADAPTER.parse(WireRequest("POST", method, "", {}, body), CREDENTIALS, NOW)
        if isinstance(parsed, Refused):
            answer = _answer(parsed)
            assert answer["error"] in (2, 5, 7) and set(answer) == {"error", "description"}
        else:
            assert hashed and body != raw
            for status in (Status.OK, Status.RETRY_LATER, Status.SESSION_NOT_FOUND):
                _answer(parsed, Result(status, parsed.callback.currency, 1))
