"""The ``evolution-v1`` adapter: example exchanges table by table (requests read, answers
rendered), every status mapping, boundary and inexact amounts, authentication by
``authToken``, the canonical -> wire -> canonical round trip, and a fuzz of its parser (every
input answered in the protocol's own format, never an exception)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agg_domain.statuses import PROVIDER_ACTIONS, Action, Status, WinKind
from agg_ingress.adapters.base import Accepted, Credentials, Refused, Result, WireRequest
from agg_ingress.adapters.evolution import (
    CANCEL_SUFFIX,
    CREDIT_SUFFIX,
    DEBIT_STATUS,
    PROMO_WIN_KIND,
    STATUS,
    EvolutionAdapter,
    authenticated,
    decode_answer,
    encode_request,
)
from agg_ingress.launch import LaunchParams
from agg_ingress.protocol import Callback, Refusal
from tests.fuzz_budget import examples

ADAPTER = EvolutionAdapter()
TOKEN = "evo-auth-token-0001"
CREDENTIALS = Credentials(secret=TOKEN.encode())
NOW = 1_800_000_000.0
QUERY = f"authToken={TOKEN}"
STATUSES = {"OK", "TEMPORARY_ERROR", "INVALID_SID", "INVALID_TOKEN_ID", "INVALID_PARAMETER",
            "ACCOUNT_LOCKED", "INSUFFICIENT_FUNDS", "BET_DOES_NOT_EXIST", "BET_ALREADY_EXIST",
            "BET_ALREADY_SETTLED", "FINAL_ERROR_ACTION_FAILED", "UNKNOWN_ERROR"}  # fmt: skip


def _parse(method: str, body: dict[str, Any] | bytes, query: str = QUERY) -> Accepted | Refused:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ADAPTER.parse(WireRequest("POST", method, query, {}, raw), CREDENTIALS, NOW)


def _rendered(
    parsed: Accepted | Refused, result: Result | None = None, http: int = 200
) -> dict[str, Any]:
    if result is None:
        assert isinstance(parsed, Refused)
        result = Result(parsed.status, None)
    wire = ADAPTER.render(parsed.context, result, CREDENTIALS)
    assert wire.http == http and wire.content_type == "application/json"
    answer: dict[str, Any] = json.loads(wire.body)
    assert answer["status"] in STATUSES
    return answer


SID, UUID = "sid-token.abc", "5373b655-c3a4-41d3-abf3-8b68847251d5"
GAME = {"id": "g-1", "type": "roulette", "details": {"table": {"id": "t-9", "vid": None}}}
DEBIT: dict[str, Any] = {
    "sid": SID,
    "userId": "p-1",
    "uuid": UUID,
    "currency": "EUR",
    "game": GAME,
    "transaction": {"id": "D1", "refId": "R1", "amount": 2.5},
}
CHECK = {"sid": SID, "userId": "p-1", "uuid": UUID, "channel": {"type": "P"}}  # fmt: skip


def _tx(**changes: Any) -> dict[str, Any]:
    return {**DEBIT, "transaction": {**DEBIT["transaction"], **changes}}


def _raw_amount(method: str, literal: str, currency: str = "EUR") -> Accepted | Refused:
    body = json.dumps({**DEBIT, "currency": currency, "transaction": {
        "id": "D1", "refId": "R1", "amount": "AMOUNT"}}).replace('"AMOUNT"', literal)  # fmt: skip
    return _parse(method, body.encode())


# --- example exchanges ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "body", "expected"),
    [
        ("check", CHECK, Callback(Action.AUTHENTICATE, UUID, SID, "p-1")),
        ("check", {**CHECK, "channel": None, "currency": "EUR"},
         Callback(Action.AUTHENTICATE, UUID, SID, "p-1", currency="EUR")),
        ("balance", {"sid": SID, "userId": "p-1", "uuid": UUID, "currency": "EUR", "game": None},
         Callback(Action.BALANCE, UUID, SID, "p-1", currency="EUR")),
        ("balance", {**DEBIT, "transaction": None},
         Callback(Action.BALANCE, UUID, SID, "p-1", game_id="t-9", currency="EUR")),
        ("debit", DEBIT, Callback(Action.BET, UUID, SID, "p-1", transaction_id="R1",
                                  round_id="g-1", game_id="t-9", amount=250, currency="EUR")),
        ("credit", _tx(id="C1", amount=10.75), Callback(
            Action.WIN, UUID, SID, "p-1", transaction_id="R1:credit",
            reference_transaction_id="R1", round_id="g-1", game_id="t-9", amount=1075,
            currency="EUR", round_closed=True)),
        ("credit", _tx(id="C1", amount=0), Callback(
            Action.WIN, UUID, SID, "p-1", transaction_id="R1:credit",
            reference_transaction_id="R1", round_id="g-1", game_id="t-9", amount=0,
            currency="EUR", round_closed=True)),
        ("cancel", DEBIT, Callback(
            Action.ROLLBACK, UUID, SID, "p-1", transaction_id="R1:cancel",
            reference_transaction_id="R1", round_id="g-1", game_id="t-9", amount=250,
            currency="EUR")),
        ("cancel", {**DEBIT, "game": None}, Callback(
            Action.ROLLBACK, UUID, SID, "p-1", transaction_id="R1:cancel",
            reference_transaction_id="R1", amount=250, currency="EUR")),
        ("debit", {**_tx(amount=1500), "currency": "JPY"}, Callback(
            Action.BET, UUID, SID, "p-1", transaction_id="R1", round_id="g-1", game_id="t-9",
            amount=1500, currency="JPY")),
        ("debit", {**_tx(amount=0.001), "currency": "KWD"}, Callback(
            Action.BET, UUID, SID, "p-1", transaction_id="R1", round_id="g-1", game_id="t-9",
            amount=1, currency="KWD")),
        ("/debit/", {**DEBIT, "extra": {"ignored": True}}, Callback(
            Action.BET, UUID, SID, "p-1", transaction_id="R1", round_id="g-1", game_id="t-9",
            amount=250, currency="EUR")),
    ],
)  # fmt: skip
def test_requests_read_as_canonical_callbacks(
    method: str, body: dict[str, Any], expected: Callback
) -> None:
    parsed = _parse(method, body)
    assert isinstance(parsed, Accepted), parsed
    assert parsed.callback == expected


def test_a_second_credit_of_one_bet_is_the_same_win() -> None:
    """Evolution names the bet by ``refId``: two credits of it with their own ``transaction.id``
    are one WIN for the saga (the second gets the first's answer), never two payments."""
    first, second = _parse("credit", _tx(id="C1")), _parse("credit", _tx(id="C2"))
    assert isinstance(first, Accepted) and isinstance(second, Accepted)
    assert first.callback == second.callback


@pytest.mark.parametrize(
    ("literal", "currency", "minor"),
    [
        ("2.5", "EUR", 250), ("2.50", "EUR", 250), ("2.500000", "EUR", 250), ("0.01", "EUR", 1),
        ("7", "JPY", 7), ("7.000", "JPY", 7), ("0.001", "KWD", 1), ("1", "EUR", 100),
        ("92233720368547758.07", "EUR", 2**63 - 1),
    ],
)  # fmt: skip
def test_amounts_convert_exactly_from_their_literal(
    literal: str, currency: str, minor: int
) -> None:
    parsed = _raw_amount("debit", literal, currency)
    assert isinstance(parsed, Accepted), parsed
    assert parsed.callback.amount == minor


@pytest.mark.parametrize(
    ("method", "literal", "currency"),
    [
        ("debit", "0.001", "EUR"), ("debit", "0.5", "JPY"), ("debit", "0.0001", "KWD"),
        ("debit", "2.5000001", "EUR"), ("debit", "0", "EUR"), ("debit", "0.00", "EUR"),
        ("debit", "-1", "EUR"), ("credit", "-0.01", "EUR"), ("debit", "1e2", "EUR"),
        ("debit", "1E+2", "EUR"), ("debit", '"2.50"', "EUR"), ("debit", "true", "EUR"),
        ("debit", "null", "EUR"), ("debit", "92233720368547758.08", "EUR"),
        ("credit", "1" + "0" * 400, "EUR"), ("cancel", "0.001", "EUR"),
    ],
)  # fmt: skip
def test_inexact_or_malformed_amounts_are_refused(method: str, literal: str, currency: str) -> None:
    refused = _raw_amount(method, literal, currency)
    assert isinstance(refused, Refused) and refused.status is Status.INVALID_REQUEST
    assert _rendered(refused) == {"status": "INVALID_PARAMETER", "uuid": UUID}


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("debit", {**DEBIT, "currency": "BTC"}),
        ("debit", {**DEBIT, "currency": "eur"}),
        ("debit", {k: v for k, v in DEBIT.items() if k != "currency"}),
        ("balance", {k: v for k, v in DEBIT.items() if k != "currency"}),
        ("check", {**CHECK, "currency": "XBT"}),
        ("debit", {k: v for k, v in DEBIT.items() if k != "sid"}),
        ("debit", {**DEBIT, "sid": ""}),
        ("debit", {**DEBIT, "sid": 5}),
        ("debit", {**DEBIT, "userId": 7}),
        ("debit", {**DEBIT, "userId": "a b"}),
        ("debit", {k: v for k, v in DEBIT.items() if k != "game"}),
        ("credit", {**DEBIT, "game": {"id": "g-1"}}),
        ("debit", {**DEBIT, "game": {**GAME, "id": None}}),
        ("debit", {**DEBIT, "game": {**GAME, "type": 3}}),
        ("debit", {**DEBIT, "game": "g-1"}),
        ("debit", {k: v for k, v in DEBIT.items() if k != "transaction"}),
        ("cancel", {**DEBIT, "transaction": []}),
        ("debit", _tx(refId="R:1")),  # ':' is the derived ids' separator
        ("debit", _tx(refId="R" * 58)),
        ("credit", _tx(id=None)),
        ("debit", _tx(amount=None)),
        ("check", {**CHECK, "channel": "P"}),
        ("check", {**CHECK, "uuid": None}),
    ],
)  # fmt: skip
def test_bad_requests_are_invalid_parameter(method: str, body: dict[str, Any]) -> None:
    refused = _parse(method, body)
    assert isinstance(refused, Refused) and refused.status is Status.INVALID_REQUEST, refused
    assert _rendered(refused)["status"] == "INVALID_PARAMETER"


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"[]", b'"x"', b"\xff{}", b'{"uuid":"a","uuid":"b"}', b'{"a":NaN}',
     b"[" * 10_000],
)  # fmt: skip
def test_a_body_that_is_no_json_object_is_invalid_parameter(body: bytes) -> None:
    refused = _parse("debit", body)
    assert isinstance(refused, Refused) and refused.status is Status.INVALID_REQUEST
    assert _rendered(refused) == {"status": "INVALID_PARAMETER", "uuid": None}


@pytest.mark.parametrize("method", ["sid", "promo", "debit/x", "", "wallet/bet"])
def test_a_method_not_served_is_404_in_the_protocols_format(method: str) -> None:
    refused = _parse(method, DEBIT)
    assert isinstance(refused, Refused) and refused.status is Status.INVALID_REQUEST
    assert _rendered(refused, http=404) == {"status": "INVALID_PARAMETER", "uuid": UUID}


# --- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    ["", "authToken=", "authToken=evo-auth-token-0002", "authtoken=" + TOKEN,
     f"authToken={TOKEN}x", f"authToken={TOKEN}&authToken={TOKEN}", f"token={TOKEN}",
     "authToken=%ff%fe", "authToken=" + "x" * 5_000],
)  # fmt: skip
def test_a_wrong_or_missing_auth_token_is_401_invalid_token_id(query: str) -> None:
    refused = _parse("debit", DEBIT, query)
    assert isinstance(refused, Refused) and refused.status is Refusal.INVALID_SIGNATURE
    assert _rendered(refused, http=401) == {"status": "INVALID_TOKEN_ID", "uuid": UUID}


def test_the_auth_token_is_read_among_other_parameters_and_percent_decoded() -> None:
    secret = b"a+b/c=d&e"
    assert authenticated("x=1&authToken=a%2Bb%2Fc%3Dd%26e&y=2", secret)
    assert not authenticated("authToken=a+b/c=d&e", secret)
    assert not authenticated(f"authToken={TOKEN}", None)
    assert isinstance(_parse("debit", DEBIT, f"channel=P&{QUERY}"), Accepted)


def test_authentication_comes_before_the_method_and_the_body() -> None:
    for method, body in (("sid", DEBIT), ("debit", b"{")):
        refused = _parse(method, body, "authToken=wrong")
        assert isinstance(refused, Refused) and refused.status is Refusal.INVALID_SIGNATURE


# --- answers -------------------------------------------------------------------------------


def _canonical(status: str) -> Status | Refusal:
    return Status(status) if status in Status.__members__ else Refusal(status)


@pytest.mark.parametrize(("status", "wire"), sorted(STATUS.items()))
def test_every_canonical_status_has_its_answer(status: str, wire: str) -> None:
    canonical = _canonical(status)
    http = 401 if isinstance(canonical, Refusal) else 200
    for method in ("credit", "cancel", "balance"):
        parsed = _parse(method, DEBIT)
        assert isinstance(parsed, Accepted)
        answer = _rendered(parsed, Result(canonical, "EUR", 1_234), http=http)
        assert answer == {"status": wire, "balance": 12.34, "bonus": 0, "uuid": UUID}
    debit = _parse("debit", DEBIT)
    assert isinstance(debit, Accepted)
    answer = _rendered(debit, Result(canonical, "EUR", 1_234), http=http)
    assert answer["status"] == DEBIT_STATUS.get(status, wire)


def test_every_status_and_refusal_is_mapped_and_the_debit_conflict_is_bet_already_exist() -> None:
    assert set(STATUS) == set(Status) | {Refusal.INVALID_SIGNATURE, Refusal.REQUEST_EXPIRED}
    assert set(STATUS.values()) | set(DEBIT_STATUS.values()) <= STATUSES
    parsed = _parse("debit", DEBIT)
    assert isinstance(parsed, Accepted)
    assert _rendered(parsed, Result(Status.DUPLICATE_CONFLICT, "EUR", 5))["status"] == (
        "BET_ALREADY_EXIST")  # fmt: skip
    assert _rendered(parsed, Result(Refusal.UNKNOWN_PROVIDER, None), http=200) == {
        "status": "UNKNOWN_ERROR", "uuid": UUID}  # fmt: skip


def test_check_answers_the_same_sid_and_no_balance() -> None:
    parsed = _parse("check", CHECK)
    assert isinstance(parsed, Accepted)
    assert _rendered(parsed, Result(Status.OK, "EUR", 100)) == {
        "status": "OK", "sid": SID, "uuid": UUID}  # fmt: skip
    assert _rendered(parsed, Result(Status.SESSION_EXPIRED, "EUR")) == {
        "status": "INVALID_SID", "uuid": UUID}  # fmt: skip


def test_balances_are_rendered_exactly_with_the_currencys_places() -> None:
    parsed = _parse("balance", {"sid": SID, "userId": "p", "uuid": "u", "currency": "EUR"})
    assert isinstance(parsed, Accepted)
    for currency, minor, text in (
        ("EUR", 10_050, b'"balance":100.50,"bonus":0.00'),
        ("JPY", 7, b'"balance":7,"bonus":0'),
        ("KWD", 1, b'"balance":0.001,"bonus":0.000'),
        ("EUR", 2**63 - 1, b'"balance":92233720368547758.07'),
    ):
        wire = ADAPTER.render(parsed.context, Result(Status.OK, currency, minor), CREDENTIALS)
        assert text in wire.body
        assert decode_answer(wire.body, currency)["balance_minor"] == minor  # fmt: skip


def test_an_oversized_body_keeps_the_cores_http_code() -> None:
    wire = ADAPTER.render(None, Result(Status.INVALID_REQUEST, None, extra={"http": 413}),
                          CREDENTIALS)  # fmt: skip
    assert wire.http == 413 and json.loads(wire.body) == {"status": "INVALID_PARAMETER",
                                                          "uuid": None}  # fmt: skip


def test_a_launch_is_named_as_evolutions_player_authentication_names_it() -> None:
    params = LaunchParams("tok", "op-a", "pl-1", "LightningTable01", "EUR", "DE", "en", "demo",
                          "https://c.example/lobby", "https://c.example/pay")  # fmt: skip
    assert dict(ADAPTER.launch_query(params)) == {
        "sid": "tok", "userId": "pl-1", "tableId": "LightningTable01", "currency": "EUR",
        "language": "en", "country": "DE", "mode": "demo", "lobby": "https://c.example/lobby",
        "cashier": "https://c.example/pay"}  # fmt: skip
    real = ADAPTER.launch_query(replace(params, mode="real", lobby_url=None, cashier_url=None))
    assert ("mode", "real") in real and "lobby" not in dict(real) and "cashier" not in dict(real)


# --- round trip and fuzz -------------------------------------------------------------------

PROMO: dict[str, Any] = {
    "sid": SID,
    "userId": "p-1",
    "currency": "EUR",
    "game": None,
    "promoTransaction": {"type": "JackpotWin", "id": "9AotBIvi23", "amount": 350.76,
                         "jackpots": [{"id": "444041xyz", "winAmount": 325.12}]},
    "uuid": UUID,
}  # fmt: skip


def _promo(**changes: Any) -> dict[str, Any]:
    return {**PROMO, "promoTransaction": {**PROMO["promoTransaction"], **changes}}


@pytest.mark.parametrize(
    ("kind", "win_kind"),
    [
        ("JackpotWin", WinKind.JACKPOT),
        ("FreeRoundPlayableSpent", WinKind.BONUS),
        ("RewardGamePlayableSpent", WinKind.BONUS),
        ("RewardGameWinCapReached", WinKind.BONUS),
        ("RewardGameMinBetLimitReached", WinKind.BONUS),
        ("RtrMonetaryReward", WinKind.PROMO),
        ("SmartTournamentMonetaryReward", WinKind.PROMO),
        ("CashReward", WinKind.PROMO),
    ],
)
def test_a_promo_payout_is_a_zero_stake_win_of_its_types_kind(kind: str, win_kind: WinKind) -> None:
    parsed = _parse("promo_payout", _promo(type=kind, id="TD1459zzz", amount=1.55))
    assert isinstance(parsed, Accepted), parsed
    assert parsed.callback == Callback(
        Action.WIN, UUID, SID, "p-1", transaction_id="promo:TD1459zzz",
        round_id="promo:TD1459zzz", amount=155, currency="EUR", round_closed=True,
        win_kind=win_kind,
    )  # fmt: skip
    assert set(PROMO_WIN_KIND) == {
        "JackpotWin", "FreeRoundPlayableSpent", "RewardGamePlayableSpent",
        "RewardGameWinCapReached", "RewardGameMinBetLimitReached", "RtrMonetaryReward",
        "SmartTournamentMonetaryReward", "CashReward",
    }  # fmt: skip


def test_a_promo_payout_in_a_game_is_in_its_round_and_answers_like_a_credit() -> None:
    parsed = _parse("promo_payout", {**_promo(amount=0), "game": GAME})
    assert isinstance(parsed, Accepted), parsed
    cb = parsed.callback
    assert (cb.transaction_id, cb.reference_transaction_id, cb.round_id, cb.game_id, cb.amount,
            cb.campaign_id) == ("promo:9AotBIvi23", None, "g-1", "t-9", 0, None)  # fmt: skip
    assert _rendered(parsed, Result(Status.OK, "EUR", 12_345)) == {
        "status": "OK", "balance": 123.45, "bonus": 0.0, "uuid": UUID}  # fmt: skip
    conflict = _rendered(parsed, Result(Status.DUPLICATE_CONFLICT, "EUR", 12_345))
    assert conflict["status"] == "BET_ALREADY_SETTLED"


def test_a_repeated_promo_payout_is_the_same_win_and_never_a_bets() -> None:
    """The same promoTransaction id is the same canonical WIN (the core answers a repeat
    with the first answer, other content with a conflict); no promo id names a bet's
    transaction."""
    first = _parse("promo_payout", PROMO)
    again = _parse("promo_payout", {**PROMO, "uuid": "other-request"})
    other = _parse("promo_payout", _promo(amount=1))
    assert isinstance(first, Accepted) and isinstance(again, Accepted)
    assert isinstance(other, Accepted)
    assert first.callback == replace(again.callback, request_id=UUID)
    assert other.callback.transaction_id == first.callback.transaction_id
    assert other.callback.amount != first.callback.amount
    bet = _parse("credit", _tx(refId="promo"))
    assert isinstance(bet, Accepted) and bet.callback.transaction_id == "promo:credit"
    for taken in ("credit", "cancel"):
        assert _parse("promo_payout", _promo(id=taken)).status is Status.INVALID_REQUEST


@pytest.mark.parametrize(
    "body",
    [
        _promo(type="FromGame"),
        _promo(type="jackpotwin"),
        _promo(type=None),
        _promo(type=7),
        _promo(id=None),
        _promo(id="x" * 59),
        _promo(id="a b"),
        _promo(amount=None),
        _promo(amount="1.00"),
        _promo(amount=-1),
        _promo(amount=0.001),
        _promo(jackpots={"id": "j"}),
        {**PROMO, "promoTransaction": None},
        {**PROMO, "promoTransaction": [1]},
        {k: v for k, v in PROMO.items() if k != "currency"},
        {**PROMO, "currency": "XXY"},
        {**PROMO, "sid": ""},
        {**PROMO, "userId": None},
        {**PROMO, "uuid": None},
        {**PROMO, "game": {"id": "g 1"}},
        {**PROMO, "game": "g-1"},
    ],
)
def test_a_bad_or_unknown_promo_payout_is_invalid_parameter(body: dict[str, Any]) -> None:
    parsed = _parse("promo_payout", body)
    assert isinstance(parsed, Refused) and parsed.status is Status.INVALID_REQUEST, parsed
    assert _rendered(parsed)["status"] == "INVALID_PARAMETER"


def test_a_promo_payout_amount_is_exact() -> None:
    body = json.dumps(_promo(amount="AMOUNT")).replace('"AMOUNT"', "1e2").encode()
    assert _parse("promo_payout", body).status is Status.INVALID_REQUEST
    body = json.dumps(_promo(amount="AMOUNT")).replace('"AMOUNT"', "350.760000").encode()
    exact = _parse("promo_payout", body)
    assert isinstance(exact, Accepted) and exact.callback.amount == 35_076
    body = json.dumps(_promo(amount="AMOUNT")).replace('"AMOUNT"', "350.762048").encode()
    assert _parse("promo_payout", body).status is Status.INVALID_REQUEST  # never rounded


def test_encode_request_sends_a_zero_stake_win_as_a_promo_payout() -> None:
    for kind, wire in ((WinKind.JACKPOT, "JackpotWin"), (WinKind.BONUS, "FreeRoundPlayableSpent"),
                       (WinKind.PROMO, "RtrMonetaryReward")):  # fmt: skip
        cb = Callback(Action.WIN, "rq-1", SID, "p-1", transaction_id="promo:P1",
                      round_id="promo:P1", amount=500, currency="EUR", round_closed=True,
                      win_kind=kind)  # fmt: skip
        path, body, _ = encode_request(cb, TOKEN)
        assert path == f"promo_payout?authToken={TOKEN}"
        assert json.loads(body)["promoTransaction"] == {"type": wire, "id": "P1", "amount": 5.0}
    regular = Callback(Action.WIN, "rq-1", SID, "p-1", transaction_id="R1:credit",
                       reference_transaction_id="R1", round_id="g-1", game_id="t-9", amount=1,
                       currency="EUR", round_closed=True)  # fmt: skip
    assert encode_request(regular, TOKEN)[0].startswith("credit?")


ids = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)
refs = st.from_regex(r"[A-Za-z0-9_.-]{1,57}", fullmatch=True)
currencies = st.sampled_from(["EUR", "USD", "JPY", "KWD", "GBP", "CLP", "BHD"])
tokens = st.text(min_size=1, max_size=80)
promo_ids = st.from_regex(r"[A-Za-z0-9_.:-]{1,58}", fullmatch=True).filter(
    lambda i: i not in ("credit", "cancel")
)


@st.composite
def callbacks(draw: st.DrawFn) -> Callback:
    """Canonical callbacks as this protocol produces them: a credit's and a cancel's ids are
    derived from the bet's ``refId``, a credit closes the round."""
    action = draw(st.sampled_from(PROVIDER_ACTIONS))
    base = Callback(action, draw(ids), draw(tokens), draw(ids))
    if action is Action.WIN and draw(st.booleans()):  # a promo_payout
        promo = "promo:" + draw(promo_ids)
        game_id = draw(st.none() | ids)
        round_id = draw(ids) if game_id is not None and draw(st.booleans()) else promo
        return replace(base, transaction_id=promo, round_id=round_id, game_id=game_id,
                       amount=draw(st.integers(0, 2**63 - 1)), currency=draw(currencies),
                       round_closed=True,
                       win_kind=draw(st.sampled_from([WinKind.JACKPOT, WinKind.BONUS,
                                                      WinKind.PROMO])))  # fmt: skip
    if action is Action.AUTHENTICATE:
        return replace(base, currency=draw(st.none() | currencies))
    if action is Action.BALANCE:
        return replace(base, game_id=draw(st.none() | ids), currency=draw(currencies))
    ref = draw(refs)
    low = 1 if action is Action.BET else 0
    round_id: str | None = draw(ids)
    game_id: str | None = draw(ids)
    if action is Action.ROLLBACK and draw(st.booleans()):
        round_id = game_id = None  # a cancel may name no game
    money = replace(base, amount=draw(st.integers(low, 2**63 - 1)), currency=draw(currencies),
                    round_id=round_id, game_id=game_id)  # fmt: skip
    if action is Action.BET:
        return replace(money, transaction_id=ref)
    suffix = CREDIT_SUFFIX if action is Action.WIN else CANCEL_SUFFIX
    return replace(money, transaction_id=ref + suffix, reference_transaction_id=ref,
                   round_closed=action is Action.WIN)  # fmt: skip


@settings(max_examples=examples(300, full=5_000), deadline=None)
@given(callbacks(), st.integers(-(2**63), 2**63 - 1), st.sampled_from(list(Status)))
def test_canonical_to_wire_to_canonical_is_the_identity(
    callback: Callback, balance: int, status: Status
) -> None:
    path, body, headers = encode_request(callback, TOKEN)
    method, _, query = path.partition("?")
    assert headers["Content-Type"] == "application/json"
    parsed = ADAPTER.parse(WireRequest("POST", method, query, {}, body), CREDENTIALS, NOW)
    assert isinstance(parsed, Accepted), parsed
    assert parsed.callback == callback
    currency = callback.currency or "EUR"
    rendered = ADAPTER.render(parsed.context, Result(status, currency, balance), CREDENTIALS)
    answer = decode_answer(rendered.body, currency)
    assert rendered.http == 200 and answer["uuid"] == callback.request_id
    if callback.action is Action.AUTHENTICATE:
        assert answer.get("sid") == (callback.session_token if status is Status.OK else None)
    else:
        assert answer["balance_minor"] == balance


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                       children, max_size=4),
    max_leaves=12,
)  # fmt: skip
fields = st.dictionaries(
    st.sampled_from(sorted({*DEBIT, "channel", "promoTransaction"})),
    json_values | st.sampled_from([*DEBIT.values(), GAME["details"]]), max_size=10,
)  # fmt: skip
transactions = st.dictionaries(
    st.sampled_from(["id", "refId", "amount"]),
    json_values | st.sampled_from(["R1", "D1", 2.5, 0, "1"]),
)
promos = st.dictionaries(
    st.sampled_from(["type", "id", "amount", "jackpots", "voucherId"]),
    json_values | st.sampled_from([*PROMO_WIN_KIND, "P1", "credit", 2.5, 0, "1", []]),
)
bodies = st.one_of(
    promos.map(lambda t: json.dumps({**PROMO, "promoTransaction": t}).encode()),
    st.binary(max_size=200),
    fields.map(lambda d: json.dumps(d).encode()),
    fields.map(lambda d: json.dumps({**DEBIT, **d}).encode()),
    transactions.map(lambda t: json.dumps({**DEBIT, "transaction": t}).encode()),
)
methods = st.sampled_from(["check", "balance", "debit", "credit", "cancel", "sid",
                           "promo_payout", "", "debit/", "x/../debit"])  # fmt: skip
queries = st.sampled_from([QUERY, "", "authToken=x", f"{QUERY}&{QUERY}", f"a=%zz&{QUERY}"])


@pytest.mark.fuzz
@settings(max_examples=examples(2_000), deadline=None)
@given(methods, bodies, queries)
def test_the_parser_answers_every_input_in_its_format(method: str, body: bytes, query: str) -> None:
    """Fuzz: whatever arrives, the adapter accepts it as a valid callback or refuses it, and
    the refusal renders as a protocol answer with a protocol status; nothing raises."""
    parsed = _parse(method, body, query)
    if isinstance(parsed, Accepted):
        cb = parsed.callback
        assert authenticated(query, CREDENTIALS.secret) and cb.request_id and cb.session_token
        if cb.amount is not None:
            assert (1 if cb.action is Action.BET else 0) <= cb.amount <= 2**63 - 1
        return
    http = 401 if parsed.status is Refusal.INVALID_SIGNATURE else None
    if http is None:
        assert parsed.context.unknown_method == (
            method.strip("/")
            not in ("check", "balance", "debit", "credit", "cancel", "promo_payout")
        )
        http = 404 if parsed.context.unknown_method else 200
    answer = _rendered(parsed, http=http)
    assert answer["status"] in ("INVALID_PARAMETER", "INVALID_TOKEN_ID")
