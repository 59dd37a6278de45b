"""``pragmatic-v1``: a form-encoded seamless wallet protocol with an MD5 hash, shaped like
Pragmatic Play's (Integration API 3.x, Seamless Wallet).

The provider POSTs ``application/x-www-form-urlencoded`` bodies to one path per method
below its base URL and reads a JSON answer (always HTTP 200; the outcome is ``error``):

================  ============  ===============================================================
path              canonical     fields read (all others are hashed but ignored)
================  ============  ===============================================================
authenticate.html AUTHENTICATE  ``token`` (our session token), ``gameId`` (optional)
balance.html      BALANCE       ``userId``, ``token`` (optional: with it, the session is checked)
bet.html          BET           ``userId``, ``reference``, ``gameId``, ``roundId``, ``amount``,
                                ``bonusCode`` (optional: a free round of that campaign)
result.html       WIN           as bet (``amount`` may be 0); ``promoWinAmount`` must be absent/0
bonusWin.html     WIN           ``userId``, ``reference``, ``amount``, ``gameId``/``roundId``,
                                ``bonusCode`` optional
jackpotWin.html   WIN           ``userId``, ``reference``, ``gameId``, ``roundId``, ``amount``
promoWin.html     WIN           ``userId``, ``reference``, ``amount``, ``currency`` (checked)
refund.html       ROLLBACK      ``userId``, ``reference`` (the bet's), ``gameId``/``roundId`` opt.
endRound.html     WIN of 0      ``userId``, ``gameId``, ``roundId``: closes the round
================  ============  ===============================================================

Every request carries ``providerId`` and ``hash``: the lower-case hex MD5 of every received
parameter except ``hash``, sorted by name (byte order), joined ``name=value`` with ``&`` (the
decoded values, empty ones included) and the provider's shared secret appended with no
separator. A missing or wrong hash is error 5 and nothing is read further.

The player: only ``authenticate`` (and optionally ``balance``) carries our session token.
Authenticate answers ``userId`` = the player's *player reference* (``agg_ingress.sessions``),
and every later call names the player by it; the core verifies it (a forged or another
provider's reference is error 2) and forwards under it. Those calls are authorised by the
provider's hash plus an authentic reference, with no session lifetime: the trust model of
this protocol family. The reference names the currency, which a wire amount is read in.

Transaction ids: ``bet`` and ``result`` use ``reference`` as it is; ``bonusWin``,
``jackpotWin`` and ``promoWin`` are provider-funded or jackpot money credited as wins under
``bw:``, ``jw:``, ``pw:`` + reference, ``refund`` is a rollback with id ``rf:`` + reference of
the bet ``reference``, and ``endRound`` a win of 0 with id ``er:`` + roundId and the round
closed (the saga closes a round with its transaction; it has no separate close). A wire
reference or round id has no ``:``, so these spaces never collide. A repeated call with the
same content gets its first answer again (the saga's dedupe); a reference reused with other
content is error 7 (the call is refused and changes nothing).

Amounts are decimals (``12.5``, ``12.50``), read exactly in the currency's minor units: at
most two decimal places, or the currency's own places where it has three (KWD); a value
with more places, or that is no whole number of minor units (``0.50`` JPY), is error 7,
never rounded. A bet of 0 is error 7.

Free round bonuses (FRB): the operator grants a campaign through the operator API, its
``campaign_id`` being the FRB's bonus code; the provider's ``bet`` and ``result`` calls of a
free round carry it as ``bonusCode``, and so may the ``bonusWin`` that pays a campaign's
total. A bet with a ``bonusCode`` is a free spin of that campaign (its ``amount`` the
campaign's bet value; nothing is debited), its result a BONUS win.

Balances are answered with two places (the currency's three where it has three) as
``cash``; ``bonus`` is always 0.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from agg_domain.currency import is_currency, minor_unit_exponent
from agg_domain.ids import derive_id
from agg_domain.statuses import Action, Status, WinKind
from agg_ingress.adapters.base import (
    Accepted,
    Credentials,
    InexactAmount,
    Refused,
    Result,
    WireRequest,
    WireResponse,
    decimal_to_minor,
    minor_to_decimal,
)
from agg_ingress.launch import LaunchParams
from agg_ingress.protocol import ID_PATTERN, Callback, Refusal
from agg_ingress.sessions import PLAYER_REF_CHARS_MAX, peek_player_ref

PROTOCOL = "pragmatic-v1"
AMOUNT_MAX = 2**63 - 1
TOKEN_CHARS_MAX = 4_096
FIELDS_MAX = 64
WIRE_REF = re.compile(r"^[A-Za-z0-9_.-]{1,60}$")
"""A wire ``reference`` or ``roundId``: no ``:`` (so prefixed ids never collide), and short
enough that a prefixed id is still a canonical id (64 characters)."""
USER_ID = re.compile(rf"^[A-Za-z0-9_.-]{{1,{PLAYER_REF_CHARS_MAX}}}$")
TOKEN = re.compile(rf"^[\x21-\x7e]{{1,{TOKEN_CHARS_MAX}}}$")
"""Our session token: printable ASCII (its verification is the core's session check)."""
AMOUNT = re.compile(r"^[0-9]{1,20}(\.[0-9]{1,20})?$")
CURRENCY = re.compile(r"^[A-Z]{3}$")


class Method:
    AUTHENTICATE = "authenticate.html"
    BALANCE = "balance.html"
    BET = "bet.html"
    RESULT = "result.html"
    BONUS_WIN = "bonusWin.html"
    JACKPOT_WIN = "jackpotWin.html"
    PROMO_WIN = "promoWin.html"
    REFUND = "refund.html"
    END_ROUND = "endRound.html"


ACTIONS: dict[str, Action] = {
    Method.AUTHENTICATE: Action.AUTHENTICATE,
    Method.BALANCE: Action.BALANCE,
    Method.BET: Action.BET,
    Method.RESULT: Action.WIN,
    Method.BONUS_WIN: Action.WIN,
    Method.JACKPOT_WIN: Action.WIN,
    Method.PROMO_WIN: Action.WIN,
    Method.REFUND: Action.ROLLBACK,
    Method.END_ROUND: Action.WIN,
}
PREFIX: dict[str, str] = {
    Method.BONUS_WIN: "bw:",
    Method.JACKPOT_WIN: "jw:",
    Method.PROMO_WIN: "pw:",
    Method.REFUND: "rf:",
    Method.END_ROUND: "er:",
}
"""Transaction id prefix of the methods whose transactions are not the wire reference."""
WIN_KIND: dict[str, WinKind] = {
    Method.BONUS_WIN: WinKind.BONUS,
    Method.JACKPOT_WIN: WinKind.JACKPOT,
    Method.PROMO_WIN: WinKind.PROMO,
}
"""The win kind of each method that credits money the game did not pay (default REGULAR)."""

OK, INSUFFICIENT, PLAYER_NOT_FOUND, BET_NOT_ALLOWED, TOKEN_INVALID = 0, 1, 2, 3, 4
BAD_HASH, PLAYER_FROZEN, BAD_PARAMETERS, GAME_NOT_FOUND, BET_LIMIT = 5, 6, 7, 8, 50
RETRY, INTERNAL = 100, 120

DESCRIPTION: dict[int, str] = {
    OK: "Success",
    INSUFFICIENT: "Insufficient balance",
    PLAYER_NOT_FOUND: "Player not found",
    BET_NOT_ALLOWED: "Bet not allowed",
    TOKEN_INVALID: "Token invalid, not found or expired",
    BAD_HASH: "Invalid hash",
    PLAYER_FROZEN: "Player is blocked",
    BAD_PARAMETERS: "Bad parameters",
    GAME_NOT_FOUND: "Game not found or not offered",
    BET_LIMIT: "Bet limit reached",
    RETRY: "Internal error, retry",
    INTERNAL: "Internal error",
}

ERROR: dict[str, int] = {
    Status.OK: OK,
    Status.INVALID_REQUEST: BAD_PARAMETERS,
    Status.DUPLICATE_CONFLICT: BAD_PARAMETERS,
    Status.SESSION_NOT_FOUND: PLAYER_NOT_FOUND,
    Status.SESSION_EXPIRED: TOKEN_INVALID,
    Status.GAME_NOT_ALLOWED: GAME_NOT_FOUND,
    Status.CURRENCY_MISMATCH: BAD_PARAMETERS,
    Status.TRANSACTION_NOT_FOUND: BAD_PARAMETERS,
    Status.BET_ROLLED_BACK: BET_NOT_ALLOWED,
    Status.ROUND_CLOSED: BET_NOT_ALLOWED,
    Status.PLAYER_BLOCKED: PLAYER_FROZEN,
    Status.LIMIT_EXCEEDED: BET_LIMIT,
    Status.INSUFFICIENT_FUNDS: INSUFFICIENT,
    Status.RETRY_LATER: RETRY,
    Refusal.INVALID_SIGNATURE: BAD_HASH,
    Refusal.REQUEST_EXPIRED: BAD_HASH,
    Refusal.UNKNOWN_PROVIDER: INTERNAL,
    Refusal.UNKNOWN_OPERATOR: INTERNAL,
}
"""Canonical status -> the protocol's ``error``. SESSION_NOT_FOUND is 4 (token) on a call
that carried our session token, 2 (player) on one that named the player by reference; any
status not listed is 120."""

DETAIL: dict[str, str] = {
    Status.DUPLICATE_CONFLICT: "Bad parameters: reference already used with other content",
    Status.CURRENCY_MISMATCH: "Bad parameters: currency is not the player's, or not allowed",
    Status.TRANSACTION_NOT_FOUND: "Bad parameters: reference names no bet",
    Status.ROUND_CLOSED: "Bet not allowed: the round is closed",
}
"""Descriptions of the statuses that share a code with others."""


def request_hash(params: dict[str, str], secret: bytes) -> str:
    """The ``hash`` of ``params``: MD5 hex of ``k1=v1&k2=v2...`` (sorted by name, ``hash``
    left out) with the secret appended."""
    joined = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "hash")
    return hashlib.md5(joined.encode() + secret, usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class Context:
    """What an answer needs: the method (its answer's fields), whether the call carried our
    token (SESSION_NOT_FOUND is then error 4), the currency the call was read in and the
    transaction id to answer."""

    method: str | None = None
    token_call: bool = False
    currency: str | None = None
    transaction_id: str | None = None


class _Bad(ValueError):
    """A parameter this protocol does not accept (error 7)."""


class _NotFound(ValueError):
    """A ``userId`` that is no player reference at all (error 2, as the core would say)."""


def _form(body: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body),
                          encoding="utf-8", errors="strict", max_num_fields=FIELDS_MAX)  # fmt: skip
    except ValueError as exc:  # UnicodeDecodeError is one
        raise _Bad(f"body is not a form: {exc}"[:200]) from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise _Bad(f"{name[:40]!r}: given twice")
        params[name] = value
    return params


class _Fields:
    def __init__(self, params: dict[str, str]):
        self.params = params

    def text(self, name: str, pattern: re.Pattern[str], required: bool = True) -> str | None:
        value = self.params.get(name)
        if value is None or value == "":
            if required:
                raise _Bad(f"{name}: required")
            return None
        if not pattern.fullmatch(value):
            raise _Bad(f"{name}: not a valid value")
        return value

    def need(self, name: str, pattern: re.Pattern[str]) -> str:
        value = self.text(name, pattern)
        assert value is not None
        return value

    def amount(self, name: str, currency: str, low: int) -> int:
        value = self.need(name, AMOUNT)
        places = max(2, minor_unit_exponent(currency))
        try:
            minor = decimal_to_minor(value, currency, places_max=places)
        except (InexactAmount, ValueError) as exc:
            raise _Bad(f"{name}: {exc}") from None
        if not low <= minor <= AMOUNT_MAX:
            raise _Bad(f"{name}: out of range")
        return minor


def _currency_of(user_id: str) -> str:
    """The currency a reference names (unverified: the core verifies the reference and
    refuses a callback in another currency than the verified one's)."""
    ref = peek_player_ref(user_id)
    if ref is None or not is_currency(ref.currency):
        raise _NotFound("userId: not a player reference")
    return ref.currency


class PragmaticAdapter:
    protocol = PROTOCOL
    issues_player_ref = True
    """Authenticate and balance answer the player's reference as ``userId``."""

    def parse(
        self, request: WireRequest, credentials: Credentials, now_s: float
    ) -> Accepted | Refused:
        method = request.path.strip("/")
        echo = Context(method if method in ACTIONS else None)
        try:
            params = _form(request.body)
        except _Bad as exc:
            return Refused(Status.INVALID_REQUEST, str(exc), echo)
        given = params.get("hash", "")
        if (
            credentials.secret is None
            or not given.isascii()
            or not hmac.compare_digest(
                given.lower().encode(), request_hash(params, credentials.secret).encode()
            )
        ):
            return Refused(Refusal.INVALID_SIGNATURE, "hash does not verify", echo)
        if request.method != "POST" or echo.method is None:
            return Refused(Status.INVALID_REQUEST, f"unknown method {method[:64]!r}", echo)
        # a retry of a money call (same parameters, same hash) shares one request id and so
        # one trace; authenticate and balance carry no transaction, so each arrival is new
        request_id = derive_id("pp", method, given.lower())
        if method in (Method.AUTHENTICATE, Method.BALANCE):
            request_id = derive_id("pp", method, given.lower(), int(now_s * 1_000_000))
        try:
            callback, context = self._callback(method, _Fields(params), request_id)
        except _NotFound as exc:
            return Refused(Status.SESSION_NOT_FOUND, str(exc), echo)
        except _Bad as exc:
            return Refused(Status.INVALID_REQUEST, str(exc), echo)
        return Accepted(callback, context)

    def _callback(self, method: str, f: _Fields, request_id: str) -> tuple[Callback, Context]:
        f.need("providerId", ID_PATTERN)  # the route and the secret say which provider
        action = ACTIONS[method]
        if method == Method.AUTHENTICATE:
            token = f.need("token", TOKEN)
            game_id = f.text("gameId", ID_PATTERN, required=False)
            return (Callback(action, request_id, token, "", game_id=game_id),
                    Context(method, token_call=True))  # fmt: skip
        user_id = f.need("userId", USER_ID)
        if method == Method.BALANCE:
            given = f.text("token", TOKEN, required=False)
            return (Callback(action, request_id, given or "", "", player_ref=user_id),
                    Context(method, token_call=given is not None))  # fmt: skip
        currency = _currency_of(user_id)
        prefix = PREFIX.get(method, "")
        if method == Method.END_ROUND:
            closed = f.need("roundId", WIRE_REF)
            txn = prefix + closed
            return (Callback(action, request_id, "", "", transaction_id=txn, round_id=closed,
                             game_id=f.need("gameId", ID_PATTERN), amount=0, currency=currency,
                             round_closed=True, player_ref=user_id),
                    Context(method, currency=currency, transaction_id=txn))  # fmt: skip
        reference = f.need("reference", WIRE_REF)
        txn = prefix + reference
        context = Context(method, currency=currency, transaction_id=txn)
        optional_game = method in (Method.BONUS_WIN, Method.PROMO_WIN, Method.REFUND)
        game_id = f.text("gameId", ID_PATTERN, required=not optional_game)
        round_id = f.text("roundId", WIRE_REF, required=not optional_game)
        if method == Method.REFUND:
            return (Callback(action, request_id, "", "", transaction_id=txn,
                             reference_transaction_id=reference, round_id=round_id,
                             game_id=game_id, player_ref=user_id), context)  # fmt: skip
        if method == Method.PROMO_WIN:
            # the call names its currency: the core refuses one that is not the reference's
            currency = f.need("currency", CURRENCY)
            if not is_currency(currency):
                raise _Bad("currency: not an ISO 4217 code")
        if method == Method.RESULT and f.params.get("promoWinAmount", "").strip("0.") != "":
            raise _Bad("promoWinAmount: a promo win on a result is not taken (send promoWin)")
        amount = f.amount("amount", currency, 1 if action is Action.BET else 0)
        campaign_id = None
        if method in (Method.BET, Method.RESULT, Method.BONUS_WIN):
            campaign_id = f.text("bonusCode", ID_PATTERN, required=False)
        return (Callback(action, request_id, "", "", transaction_id=txn, round_id=round_id,
                         game_id=game_id, amount=amount, currency=currency,
                         player_ref=user_id, win_kind=WIN_KIND.get(method, WinKind.REGULAR),
                         campaign_id=campaign_id), context)  # fmt: skip

    def launch_query(self, params: LaunchParams) -> list[tuple[str, str]]:
        """The game URL's query in this family's launch names: the session token the game
        hands to ``authenticate``, the game symbol, ``lobbyUrl`` / ``cashierUrl``."""
        query = [
            ("token", params.token),
            ("symbol", params.game_code),
            ("technology", "H5"),
            ("platform", "WEB"),
            ("language", params.language),
            ("currency", params.currency),
        ]
        if params.lobby_url:
            query.append(("lobbyUrl", params.lobby_url))
        if params.cashier_url:
            query.append(("cashierUrl", params.cashier_url))
        if params.mode == "demo":
            query.append(("demo", "true"))
        return query

    def render(self, context: Any, result: Result, credentials: Credentials) -> WireResponse:
        ctx = context if isinstance(context, Context) else Context()
        if result.status is Status.SESSION_NOT_FOUND and ctx.token_call:
            error = TOKEN_INVALID
        else:
            error = ERROR.get(result.status, INTERNAL)
        fields: list[tuple[str, Any]] = []
        currency = result.currency or ctx.currency
        if error == OK and ctx.method in (Method.AUTHENTICATE, Method.BALANCE):
            if "player_ref" in result.extra:
                fields.append(("userId", result.extra["player_ref"]))
        if error == OK and ctx.method not in (None, Method.AUTHENTICATE, Method.BALANCE,
                                              Method.END_ROUND):  # fmt: skip
            fields.append(("transactionId", result.transaction_id or ctx.transaction_id))
        if result.balance is not None and currency is not None and is_currency(currency):
            places = max(2, minor_unit_exponent(currency))
            fields += [("currency", currency),
                       ("cash", _Number(minor_to_decimal(result.balance, currency, places))),
                       ("bonus", _Number(minor_to_decimal(0, currency, places)))]  # fmt: skip
            if error == OK and ctx.method == Method.BET:
                fields.append(("usedPromo", _Number(minor_to_decimal(0, currency, places))))
        description = DETAIL.get(result.status) or DESCRIPTION[error]
        fields += [("error", error), ("description", description)]
        return WireResponse(200, _json(fields))


@dataclass(frozen=True)
class _Number:
    """A decimal written as a JSON number exactly as given (``12.50``, not a float's
    ``12.5``)."""

    text: str


def _json(fields: list[tuple[str, Any]]) -> bytes:
    parts = [
        json.dumps(name) + ":" + (v.text if isinstance(v, _Number) else json.dumps(v))
        for name, v in fields
    ]
    return ("{" + ",".join(parts) + "}").encode()


# --- the provider's side (the simulator, the sandbox and the tests speak it) --------------


def method_of(callback: Callback) -> str:
    """The wire method that reads as ``callback`` (the inverse of the id prefixes)."""
    cb = callback
    if cb.action is Action.AUTHENTICATE:
        return Method.AUTHENTICATE
    if cb.action is Action.BALANCE:
        return Method.BALANCE
    if cb.action is Action.BET:
        return Method.BET
    if cb.action is Action.ROLLBACK:
        return Method.REFUND
    txn = cb.transaction_id or ""
    for method in (Method.BONUS_WIN, Method.JACKPOT_WIN, Method.PROMO_WIN, Method.END_ROUND):
        if txn.startswith(PREFIX[method]):
            return method
    return Method.RESULT


def encode_request(
    callback: Callback,
    secret: bytes,
    provider_name: str = "PragmaticPlay",
    timestamp_ms: int | None = None,
    extra: dict[str, str] | None = None,
) -> tuple[str, bytes, dict[str, str]]:
    """The wire request a provider of this protocol sends for ``callback`` (in the shape
    :meth:`PragmaticAdapter.parse` reads: the player by ``player_ref``, ids with their
    prefixes): its path below the provider's base URL, its form body and its headers."""
    cb = callback
    method = method_of(cb)
    params: dict[str, str] = {"providerId": provider_name}
    if method == Method.AUTHENTICATE:
        params["token"] = cb.session_token
    else:
        assert cb.player_ref is not None
        params["userId"] = cb.player_ref
    if method == Method.BALANCE and cb.session_token:
        params["token"] = cb.session_token
    if cb.game_id is not None:
        params["gameId"] = cb.game_id
    if cb.round_id is not None:
        params["roundId"] = cb.round_id
    txn = cb.transaction_id or ""
    prefix = PREFIX.get(method, "")
    if method == Method.REFUND:
        assert cb.reference_transaction_id is not None
        params["reference"] = cb.reference_transaction_id
    elif method not in (Method.AUTHENTICATE, Method.BALANCE, Method.END_ROUND):
        params["reference"] = txn[len(prefix) :]
        assert cb.amount is not None and cb.currency is not None
        places = max(2, minor_unit_exponent(cb.currency))
        params["amount"] = minor_to_decimal(cb.amount, cb.currency, places)
        if method == Method.PROMO_WIN:
            params["currency"] = cb.currency
        if cb.campaign_id is not None and method in (Method.BET, Method.RESULT, Method.BONUS_WIN):
            params["bonusCode"] = cb.campaign_id  # a free round bonus's
    if timestamp_ms is not None and method not in (Method.AUTHENTICATE, Method.BALANCE):
        params["timestamp"] = str(timestamp_ms)
    params.update(extra or {})
    params["hash"] = request_hash(params, secret)
    body = urlencode(sorted(params.items())).encode()
    return method, body, {"Content-Type": "application/x-www-form-urlencoded"}


def decode_answer(body: bytes) -> dict[str, Any]:
    """An answer's fields, ``cash`` in minor units as ``cash_minor`` when given (read from
    the answer's text, exactly)."""
    answer: dict[str, Any] = json.loads(body, parse_float=str)
    cash, currency = answer.get("cash"), answer.get("currency")
    if isinstance(cash, str | int) and isinstance(currency, str) and is_currency(currency):
        places = max(2, minor_unit_exponent(currency))
        answer["cash_minor"] = decimal_to_minor(str(cash), currency, places_max=places)
    return answer
