"""The canonical provider protocol v1 and the operator API, as pure functions: request
signatures, strict validation of callback and session bodies, answers and their HTTP codes.

Validation is strict on the fields the contract names and ignores fields it does not name,
so a provider that sends extra fields (a newer protocol revision, vendor extensions) keeps
working; an ignored field is never forwarded. Optional fields may also be given as ``null``.

Field rules (anything else is ``400 INVALID_REQUEST``):

- body: one JSON object, UTF-8, no duplicate keys, no NaN/Infinity;
- ``request_id``, ``player_id`` (all actions), ``transaction_id``, ``round_id``, ``game_id``,
  ``reference_transaction_id``: 1..64 characters of ``[A-Za-z0-9_.:-]``;
- ``session_token``: a non-empty string (its verification is a session check, not validation);
- ``amount``: a JSON integer (not a float such as ``1.0``, not a bool, not a string),
  ``1..2**63-1`` for bets, ``0..2**63-1`` otherwise;
- ``currency``: an ISO 4217 code in upper case; ``round_closed``: a bool, default false;
- bet, win: ``transaction_id``, ``round_id``, ``game_id``, ``amount``, ``currency`` required;
- rollback: ``transaction_id`` and ``reference_transaction_id`` required; ``round_id``,
  ``game_id``, ``amount``, ``currency`` optional;
- authenticate, balance: ``game_id`` and ``currency`` optional (checked against the session
  when given); the money fields are ignored.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from agg_config.tenants import Game, Operator, Tenants
from agg_domain.compliance import Rules
from agg_domain.currency import is_currency
from agg_domain.statuses import PROVIDER_ACTIONS, Action, Status, WinKind
from agg_ingress.sessions import PlayerRef, TokenProblem
from agg_protocols.jsonbody import parse_object as parse_object
from agg_protocols.signatures import hmac_sign as sign

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
COUNTRY_PATTERN = re.compile(r"^[A-Z]{2}$")
LANGUAGE_PATTERN = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,3}$")
TIMESTAMP_PATTERN = re.compile(r"^[0-9]{1,12}$")
AMOUNT_MAX = 2**63 - 1
URL_CHARS_MAX = 2_048

ACTIONS: dict[str, Action] = {a.value.lower(): a for a in PROVIDER_ACTIONS}
"""The canonical protocol's callback paths (a provider can never deposit or withdraw)."""
MONEY_ACTIONS = frozenset({Action.BET, Action.WIN, Action.ROLLBACK})
WIN_KINDS = frozenset(k.value for k in WinKind)


class Refusal(StrEnum):
    """Answers given before a request is read as a callback or operator call (not business
    statuses, so not in :class:`Status`)."""

    INVALID_SIGNATURE = "INVALID_SIGNATURE"
    REQUEST_EXPIRED = "REQUEST_EXPIRED"
    UNKNOWN_PROVIDER = "UNKNOWN_PROVIDER"
    UNKNOWN_OPERATOR = "UNKNOWN_OPERATOR"


class OperatorRefusal(StrEnum):
    """Refusals of the operator API's session opening, in precedence order."""

    UNKNOWN_GAME = "UNKNOWN_GAME"
    GAME_NOT_ALLOWED = "GAME_NOT_ALLOWED"
    CURRENCY_NOT_SUPPORTED = "CURRENCY_NOT_SUPPORTED"


HTTP_STATUS: dict[str, int] = {
    Status.INVALID_REQUEST: 400,
    Status.DUPLICATE_CONFLICT: 409,
    Status.RETRY_LATER: 503,
    Refusal.INVALID_SIGNATURE: 401,
    Refusal.REQUEST_EXPIRED: 401,
    Refusal.UNKNOWN_PROVIDER: 404,
    Refusal.UNKNOWN_OPERATOR: 404,
}
"""HTTP code of every callback answer that is not 200 (contract, section 5). A body over
``request_body_bytes_max`` is answered 413 with status INVALID_REQUEST, the one contract
status that describes it."""

OPERATOR_HTTP_STATUS: dict[str, int] = {
    **HTTP_STATUS,
    OperatorRefusal.UNKNOWN_GAME: 404,
    OperatorRefusal.GAME_NOT_ALLOWED: 403,
    OperatorRefusal.CURRENCY_NOT_SUPPORTED: 422,
}
"""HTTP codes of the operator API (contract, section 6)."""


def http_status(status: str) -> int:
    return HTTP_STATUS.get(status, 200)


# --- signatures ----------------------------------------------------------------------------


def signature_problem(
    secret: bytes,
    *,
    timestamp: str | None,
    signature: str | None,
    method: str,
    path: str,
    body: bytes,
    now_s: float,
    window_s: int,
) -> Refusal | None:
    """None when the request is signed by ``secret`` within the window; else the refusal.

    The timestamp is checked first (a stale but well-signed request is REQUEST_EXPIRED, which
    tells an honest caller its clock is off); the MAC is compared in constant time.
    """
    if timestamp is None or signature is None or not TIMESTAMP_PATTERN.fullmatch(timestamp):
        return Refusal.INVALID_SIGNATURE
    if abs(now_s - int(timestamp)) > window_s:
        return Refusal.REQUEST_EXPIRED
    expected = sign(secret, timestamp, method, path, body).encode()
    if not hmac.compare_digest(signature.encode("latin-1", "replace"), expected):
        return Refusal.INVALID_SIGNATURE
    return None


# --- JSON ------------------------------------------------------------------------------------


class _Malformed(ValueError):
    pass


# parse_object (strict: one object, UTF-8, no duplicate keys, no NaN) is in
# agg_protocols.jsonbody, shared with the operator-wallet protocols


# --- callbacks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Callback:
    """A validated canonical callback."""

    action: Action
    request_id: str
    session_token: str
    player_id: str
    transaction_id: str | None = None
    reference_transaction_id: str | None = None
    round_id: str | None = None
    game_id: str | None = None
    amount: int | None = None
    currency: str | None = None
    round_closed: bool = False
    player_ref: str | None = None
    """The player reference (``agg_ingress.sessions``) a protocol names the player by where
    its call carries no session token (``session_token`` and ``player_id`` are then empty)."""
    win_kind: WinKind = WinKind.REGULAR
    """For a win: the game's payout, or bonus, jackpot or promotion money."""
    campaign_id: str | None = None
    """For a bet: the player's free-spin campaign it is a spin of (no money moves); for a
    win: the campaign whose spin won (credited as a BONUS win)."""


@dataclass(frozen=True)
class Invalid:
    """Why a body was refused (400 INVALID_REQUEST); for logs and the ``detail`` field."""

    reason: str


class _Fields:
    def __init__(self, body: dict[str, Any]):
        self.body = body

    def _get(self, name: str, required: bool) -> Any:
        value = self.body.get(name)
        if value is None and required:
            raise _Malformed(f"{name}: required")
        return value

    def ident(self, name: str, required: bool) -> str | None:
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
            raise _Malformed(f"{name}: 1..64 characters of [A-Za-z0-9_.:-]")
        return value

    def token(self, name: str) -> str:
        value = self._get(name, True)
        if not isinstance(value, str) or not value:
            raise _Malformed(f"{name}: a non-empty string")
        return value

    def amount(self, name: str, required: bool, low: int) -> int | None:
        value = self._get(name, required)
        if value is None:
            return None
        if type(value) is not int:  # bool is an int subclass; floats are refused outright
            raise _Malformed(f"{name}: a JSON integer of minor units")
        if not low <= value <= AMOUNT_MAX:
            raise _Malformed(f"{name}: out of range {low}..2**63-1")
        return value

    def currency(self, name: str, required: bool) -> str | None:
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, str) or not is_currency(value):
            raise _Malformed(f"{name}: an ISO 4217 code")
        return value

    def choice(self, name: str, required: bool, options: Collection[str], hint: str) -> str | None:
        """One of ``options``; anything else (another string, a number, a list, an object)
        is malformed with ``hint``."""
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, str) or value not in options:
            raise _Malformed(f"{name}: {hint}")
        return value

    def win_kind(self) -> WinKind:
        value = self.choice("win_kind", False, WIN_KINDS, "REGULAR, BONUS, JACKPOT or PROMO")
        return WinKind.REGULAR if value is None else WinKind(value)

    def flag(self, name: str) -> bool:
        value = self._get(name, False)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise _Malformed(f"{name}: true or false")
        return value


def validate_callback(action: Action, body: dict[str, Any]) -> Callback | Invalid:
    f = _Fields(body)
    try:
        request_id = f.ident("request_id", True)
        token = f.token("session_token")
        player_id = f.ident("player_id", True)
        assert request_id is not None and player_id is not None
        if action not in MONEY_ACTIONS:
            return Callback(
                action, request_id, token, player_id,
                game_id=f.ident("game_id", False),
                currency=f.currency("currency", False),
            )  # fmt: skip
        rollback = action is Action.ROLLBACK
        return Callback(
            action,
            request_id,
            token,
            player_id,
            transaction_id=f.ident("transaction_id", True),
            reference_transaction_id=f.ident("reference_transaction_id", rollback),
            round_id=f.ident("round_id", not rollback),
            game_id=f.ident("game_id", not rollback),
            amount=f.amount("amount", not rollback, 1 if action is Action.BET else 0),
            currency=f.currency("currency", not rollback),
            round_closed=f.flag("round_closed"),
            win_kind=f.win_kind() if action is Action.WIN else WinKind.REGULAR,
            campaign_id=(
                f.ident("campaign_id", False) if action in (Action.BET, Action.WIN) else None
            ),
        )
    except _Malformed as exc:
        return Invalid(str(exc))


def parse_callback(action: Action, body: bytes) -> Callback | Invalid:
    parsed = parse_object(body)
    if isinstance(parsed, str):
        return Invalid(parsed)
    return validate_callback(action, parsed)


def echo_fields(body: bytes) -> dict[str, str | None]:
    """``request_id``, ``transaction_id`` and ``currency`` of a refused body, where they are
    well-formed (a refusal still tells the caller which request it answers)."""
    parsed = parse_object(body) if body else None
    out: dict[str, str | None] = {"request_id": None, "transaction_id": None, "currency": None}
    if isinstance(parsed, dict):
        for name in ("request_id", "transaction_id"):
            value = parsed.get(name)
            if isinstance(value, str) and ID_PATTERN.fullmatch(value):
                out[name] = value
        currency = parsed.get("currency")
        if isinstance(currency, str) and is_currency(currency):
            out["currency"] = currency
    return out


def refusal_answer(status: Status | Refusal, body: bytes) -> dict[str, Any]:
    """The answer to a refused request, echoing what the body identifies."""
    echo = echo_fields(body)
    return answer(
        status,
        request_id=echo["request_id"],
        transaction_id=echo["transaction_id"],
        currency=echo["currency"],
    )


def answer(
    status: Status | Refusal,
    *,
    request_id: str | None,
    transaction_id: str | None,
    currency: str | None,
    balance: int | None = None,
) -> dict[str, Any]:
    """The response body of every callback answer (contract field order)."""
    return {
        "status": status.value,
        "balance": balance,
        "currency": currency,
        "transaction_id": transaction_id,
        "request_id": request_id,
    }


# --- operator API ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionRequest:
    player_id: str
    currency: str
    country: str
    game_id: str
    mode: str
    language: str | None = None
    return_url: str | None = None
    """Where the game sends the player back (the lobby)."""
    cashier_url: str | None = None
    """Where the game sends the player to deposit."""


def _url(f: _Fields, name: str) -> str | None:
    value = f._get(name, False)
    if value is not None and (
        not isinstance(value, str)
        or len(value) > URL_CHARS_MAX
        or not re.fullmatch(r"https?://[^\s]+", value)
    ):
        raise _Malformed(f"{name}: an http(s) URL")
    return value


def validate_session_request(body: dict[str, Any]) -> SessionRequest | Invalid:
    f = _Fields(body)
    try:
        player_id = f.ident("player_id", True)
        currency = f.currency("currency", True)
        game_id = f.ident("game_id", True)
        country = f._get("country", True)
        if not isinstance(country, str) or not COUNTRY_PATTERN.fullmatch(country):
            raise _Malformed("country: ISO 3166-1 alpha-2, upper case")
        mode = f._get("mode", True)
        if mode not in ("real", "demo"):
            raise _Malformed("mode: real or demo")
        language = f._get("language", False)
        if language is not None and (
            not isinstance(language, str) or not LANGUAGE_PATTERN.fullmatch(language)
        ):
            raise _Malformed("language: a language tag such as en or pt-BR")
        return_url = _url(f, "return_url")
        cashier_url = _url(f, "cashier_url")
    except _Malformed as exc:
        return Invalid(str(exc))
    assert player_id is not None and currency is not None and game_id is not None
    return SessionRequest(
        player_id, currency, country, game_id, mode, language, return_url, cashier_url
    )


def game_offered(tenants: Tenants, operator: Operator, game: Game, country: str) -> bool:
    """May ``operator`` offer ``game`` to a player in ``country``?"""
    provider = tenants.provider(game.provider)
    return (
        provider is not None
        and provider.enabled
        and game.provider in operator.providers
        and country not in game.restricted_countries
        and country not in operator.blocked_countries
    )


@dataclass(frozen=True)
class SessionRefused:
    """Why a session may not open: the operator API's refusal and the rule behind it."""

    refusal: OperatorRefusal
    rule: str


SESSION_REFUSAL_FOR: dict[Status, OperatorRefusal] = {
    Status.GAME_NOT_ALLOWED: OperatorRefusal.GAME_NOT_ALLOWED,
    Status.CURRENCY_MISMATCH: OperatorRefusal.CURRENCY_NOT_SUPPORTED,
}


def session_refusal(
    tenants: Tenants, rules: Rules, operator: Operator, request: SessionRequest, now_ms: int
) -> SessionRefused | None:
    """Why ``operator`` may not open this session at ``now_ms``, in precedence order (an
    unknown game, then the compliance rules of play of :mod:`agg_domain.compliance`, the
    max bet aside); None when it may."""
    game = tenants.game(request.game_id)
    if game is None:
        return SessionRefused(OperatorRefusal.UNKNOWN_GAME, "unknown_game")
    refused = rules.play_refusal(operator_id=operator.id, provider_id=game.provider,
                                 game_id=game.id, country=request.country,
                                 currency=request.currency, now_ms=now_ms)  # fmt: skip
    if refused is None:
        return None
    return SessionRefused(SESSION_REFUSAL_FOR[refused.status], refused.rule)


def offered_games(tenants: Tenants, operator: Operator, country: str) -> list[Game]:
    return [g for g in tenants.games if game_offered(tenants, operator, g, country)]


def player_ref_status(
    tenants: Tenants,
    ref: PlayerRef | TokenProblem,
    *,
    provider_id: str,
    action: Action,
    game_id: str | None,
    currency: str | None,
) -> Status:
    """The rules of a callback that names its player by a player reference instead of a
    session token, in the precedence order of the session rules; OK when all hold.

    The reference must be authentic, name this provider and an operator still in the
    tenants file that offers this provider; a game, where the callback names one (a bet
    always does), must be one of this provider's games; the callback's currency, where it
    gives one, the reference's. There is no expiry: these calls are authorised by the
    provider's signature plus an authentic reference. Country restrictions were applied
    when the session was opened (a reference carries no country)."""
    if isinstance(ref, TokenProblem) or ref.provider_id != provider_id:
        return Status.SESSION_NOT_FOUND
    operator = tenants.operator(ref.operator_id)
    if operator is None:
        return Status.SESSION_NOT_FOUND
    provider = tenants.provider(provider_id)
    if provider is None or not provider.enabled or provider_id not in operator.providers:
        return Status.GAME_NOT_ALLOWED
    if game_id is None and action is Action.BET:
        return Status.GAME_NOT_ALLOWED
    if game_id is not None:
        game = tenants.game(game_id)
        if game is None or game.provider != provider_id:
            return Status.GAME_NOT_ALLOWED
    if currency is not None and currency != ref.currency:
        return Status.CURRENCY_MISMATCH
    return Status.OK
