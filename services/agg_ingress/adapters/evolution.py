"""``evolution-v1``: a JSON seamless-wallet protocol shaped like Evolution's One Wallet API.

The provider POSTs JSON to six methods below its base URL, each with the shared secret in
the ``authToken`` query parameter (``.../debit?authToken=...``), compared in constant time:

- ``check`` {sid, userId, uuid, channel}: the player arriving (AUTHENTICATE), answered
  ``{"status", "sid", "uuid"}``;
- ``balance`` {sid, userId, uuid, currency, game}: BALANCE;
- ``debit`` {..., game {id, type, details {table {id}}}, transaction {id, refId, amount}}: BET;
- ``credit`` {same}: WIN, the result of the bet ``refId`` (an amount of 0 is a lost bet);
- ``cancel`` {same}: ROLLBACK of the bet ``refId``;
- ``promo_payout`` {sid, userId, currency, uuid, optionally game, promoTransaction {type, id,
  amount, ...}}: money that is no bet's result, a zero-stake WIN (see *Promotional payouts*).

Money answers are ``{"status", "balance", "bonus", "uuid"}``. ``sid`` is the session token the
operator API issued (checked on every call, as a canonical token is; ``check`` answers the
same ``sid``: tokens are not rotated), ``userId`` the player id, ``uuid`` the request id,
``game.id`` the round, ``game.details.table.id`` the game (the tenants file's game id: a session
is for one table), ``currency`` an ISO 4217 code.

Ids. The bet is named by ``transaction.refId`` in all three money methods (Evolution links a
debit with its credit and its cancel by it; a cancel repeats the debit's ``transaction.id``, a
credit has one of its own). So ``refId`` is the canonical BET's transaction id, and the credit
and the cancel get ids derived from it: ``<refId>:credit`` and ``<refId>:cancel``, with
``refId`` as their reference. A bet is then settled once: a second credit of the same bet with
another ``transaction.id`` is the same WIN (the first answer again, or ``BET_ALREADY_SETTLED``
for another amount), never a second payment. ``refId`` is 1..57 characters of
``[A-Za-z0-9_.-]`` (no ``:``, so a derived id never equals a bet's); ``transaction.id`` is
checked (1..64 of ``[A-Za-z0-9_.:-]``) and not forwarded. A credit closes the round
(``round_closed``): Evolution settles a player's round with one credit.

Amounts are JSON numbers in major units (``2.50``), read exactly from their literal: a value
that is no whole number of the currency's minor units (``0.001`` EUR), a negative one, an
exponent (``1e2``) or a string is refused ``INVALID_PARAMETER``, never rounded. Balances are
rendered with the currency's decimal places (``bonus`` is always 0: no bonus money here).

Promotional payouts. ``promo_payout`` credits money the provider pays outside a bet: a
jackpot, free rounds' winnings, a reward game's, a tournament's prize. Its
``promoTransaction.type`` decides the canonical ``win_kind`` (:data:`PROMO_WIN_KIND`):
``JackpotWin`` is JACKPOT; ``FreeRoundPlayableSpent`` (the winnings of free rounds, paid when
the voucher is spent), ``RewardGamePlayableSpent``, ``RewardGameWinCapReached`` and
``RewardGameMinBetLimitReached`` (a reward game's winnings, paid when it ends) are BONUS;
``RtrMonetaryReward``, ``SmartTournamentMonetaryReward`` and ``CashReward`` (tournament-like
promotions' and other cash prizes) are PROMO. Any other type is refused
``INVALID_PARAMETER`` (HTTP 200): the provider then sees the payout not made, rather than
money booked under a kind nobody chose. These type names are those of integrations of the
One Wallet API, not of a published specification; a type Evolution adds is refused until it
is mapped here. The payout is a WIN without a bet: transaction id ``promo:<id>`` (the
``promoTransaction.id``, 1..58 of ``[A-Za-z0-9_.:-]``, but not ``credit`` or ``cancel``, so it
never equals a bet's ``refId``, which has no ``:``, nor a bet's derived ``promo:credit`` /
``promo:cancel``), no reference, the round ``game.id`` when a game is given (the round the
jackpot fell in), else the transaction id itself; it closes its round. ``game`` is optional
(both its ``id`` and ``details.table.id`` then too: without a table the payout is the
session's game's, ``agg_ingress.sessions.check_session``'s zero-stake rule); the amount
follows the credit's rules (0 allowed: free rounds that won nothing). A repeat of the same
``promoTransaction.id`` is the same WIN (the first answer again), the same id with another
amount, game or kind ``BET_ALREADY_SETTLED``. The rest of ``promoTransaction``
(``voucherId``, ``remainingRounds``, ``jackpots`` [{id, winAmount}], ``origin``, ...) is not
forwarded: a voucher is Evolution's own free-round grant, not a campaign of the operator
API, so ``campaign_id`` stays empty.

HTTP codes: every answer is HTTP 200 with its status in the body (Evolution reads the status;
``TEMPORARY_ERROR`` is the one it retries), except a wrong or missing ``authToken`` (401
``INVALID_TOKEN_ID``), a method this adapter does not serve (404 ``INVALID_PARAMETER``: ``sid``
and any other) and a body over the size limit (413 ``INVALID_PARAMETER``).
``sid`` (a new session for a player, asked by the provider) is not offered: a session is
opened by the operator API, which knows the operator, game, currency and country it is for.
"""

from __future__ import annotations

import hmac
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

from agg_domain.currency import is_currency
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

PROTOCOL = "evolution-v1"
AUTH_PARAMETER = "authToken"
AMOUNT_MAX = 2**63 - 1
TOKEN_CHARS_MAX = 4_096
AUTH_TOKEN_CHARS_MAX = 1_024
AMOUNT_PLACES_MAX = 6
"""Decimal places a wire amount may have (the extra ones beyond the currency's must be 0)."""
CREDIT_SUFFIX, CANCEL_SUFFIX = ":credit", ":cancel"
REF_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,57}$")
"""A ``refId``: short enough for ``<refId>:cancel`` to be a canonical id, and without ``:``."""
PROMO_METHOD, PROMO_PREFIX = "promo_payout", "promo:"
PROMO_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,58}$")
"""A ``promoTransaction.id``: short enough for ``promo:<id>`` to be a canonical id."""
PROMO_ID_TAKEN = frozenset({CREDIT_SUFFIX[1:], CANCEL_SUFFIX[1:]})
"""The promo ids whose ``promo:<id>`` is the credit or cancel id of a bet ``refId`` ``promo``."""
PROMO_WIN_KIND: dict[str, WinKind] = {
    "JackpotWin": WinKind.JACKPOT,
    "FreeRoundPlayableSpent": WinKind.BONUS,
    "RewardGamePlayableSpent": WinKind.BONUS,
    "RewardGameWinCapReached": WinKind.BONUS,
    "RewardGameMinBetLimitReached": WinKind.BONUS,
    "RtrMonetaryReward": WinKind.PROMO,
    "SmartTournamentMonetaryReward": WinKind.PROMO,
    "CashReward": WinKind.PROMO,
}
"""``promoTransaction.type`` -> the win kind of its payout; any other type is refused."""

METHODS: dict[str, Action] = {
    "check": Action.AUTHENTICATE,
    "balance": Action.BALANCE,
    "debit": Action.BET,
    "credit": Action.WIN,
    "cancel": Action.ROLLBACK,
    PROMO_METHOD: Action.WIN,
}

STATUS: dict[str, str] = {
    Status.OK: "OK",
    Status.INVALID_REQUEST: "INVALID_PARAMETER",
    Status.DUPLICATE_CONFLICT: "BET_ALREADY_SETTLED",
    Status.SESSION_NOT_FOUND: "INVALID_SID",
    Status.SESSION_EXPIRED: "INVALID_SID",
    Status.GAME_NOT_ALLOWED: "FINAL_ERROR_ACTION_FAILED",
    Status.CURRENCY_MISMATCH: "INVALID_PARAMETER",
    Status.TRANSACTION_NOT_FOUND: "BET_DOES_NOT_EXIST",
    Status.BET_ROLLED_BACK: "FINAL_ERROR_ACTION_FAILED",
    Status.ROUND_CLOSED: "FINAL_ERROR_ACTION_FAILED",
    Status.PLAYER_BLOCKED: "ACCOUNT_LOCKED",
    Status.LIMIT_EXCEEDED: "FINAL_ERROR_ACTION_FAILED",
    Status.INSUFFICIENT_FUNDS: "INSUFFICIENT_FUNDS",
    Status.RETRY_LATER: "TEMPORARY_ERROR",
    Refusal.INVALID_SIGNATURE: "INVALID_TOKEN_ID",
    Refusal.REQUEST_EXPIRED: "INVALID_TOKEN_ID",
}
"""Canonical status -> the protocol's. A debit's DUPLICATE_CONFLICT (the bet ``refId`` exists
with other content) is ``BET_ALREADY_EXIST`` (:data:`DEBIT_STATUS`); ``UNKNOWN_ERROR`` for
anything not listed (UNKNOWN_PROVIDER and UNKNOWN_OPERATOR are answered by the core)."""

DEBIT_STATUS: dict[str, str] = {Status.DUPLICATE_CONFLICT: "BET_ALREADY_EXIST"}
"""Where a debit's answer differs from :data:`STATUS`."""

HTTP_AUTH, HTTP_UNKNOWN_METHOD = 401, 404


@dataclass(frozen=True)
class Context:
    """What an answer echoes (the request's ``uuid`` and ``sid`` when well-formed, its
    currency) and what decides its shape and HTTP code."""

    uuid: str | None = None
    sid: str | None = None
    currency: str | None = None
    action: Action | None = None
    unknown_method: bool = False


@dataclass(frozen=True)
class _Number:
    """A JSON number as its literal text: amounts are converted from it exactly."""

    text: str


class _Bad(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:  # two values for one field: different parsers would read different requests
            raise _Bad(f"duplicate field {key!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise _Bad(f"{name} is not JSON")


def parse_body(body: bytes) -> dict[str, Any] | str:
    """The JSON object of ``body`` with every number as a :class:`_Number`, or the reason it
    is not one (not UTF-8, not JSON, duplicate fields, NaN, not an object)."""
    try:
        text = body.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_float=_Number,
                           parse_int=_Number, parse_constant=_no_constants)  # fmt: skip
    except UnicodeDecodeError:
        return "body is not UTF-8"
    except (ValueError, RecursionError) as exc:  # _Bad and JSONDecodeError are ValueErrors
        return f"body is not valid JSON: {exc}"[:200]
    if not isinstance(value, dict):
        return "body is not a JSON object"
    return value


def _ident(body: dict[str, Any], name: str, required: bool = True,
           pattern: re.Pattern[str] = ID_PATTERN) -> str | None:  # fmt: skip
    value = body.get(name)
    if value is None:
        if required:
            raise _Bad(f"{name}: required")
        return None
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _Bad(f"{name}: {pattern.pattern.strip('^$')}")
    return value


def _object(body: dict[str, Any], name: str, required: bool) -> dict[str, Any] | None:
    value = body.get(name)
    if value is None:
        if required:
            raise _Bad(f"{name}: required")
        return None
    if not isinstance(value, dict):
        raise _Bad(f"{name}: an object")
    return value


def _game(body: dict[str, Any], required: bool) -> tuple[str | None, str | None]:
    """The round (``game.id``) and the game (``game.details.table.id``); both required in a
    game given on a debit or credit, either optional elsewhere."""
    game = _object(body, "game", required)
    if game is None:
        return None, None
    kind = game.get("type")
    if kind is not None and (not isinstance(kind, str) or len(kind) > 64):
        raise _Bad("game.type: a string")
    details = _object(game, "details", required)
    table = _object(details, "table", required) if details is not None else None
    table_id = _ident(table, "id", required) if table is not None else None
    try:
        round_id = _ident(game, "id", required)
    except _Bad as exc:
        raise _Bad(f"game.{exc}") from None
    return round_id, table_id


def _amount(value: Any, currency: str, low: int) -> int:
    if not isinstance(value, _Number):
        raise _Bad("transaction.amount: a JSON number" if value is not None
                   else "transaction.amount: required")  # fmt: skip
    try:
        minor = decimal_to_minor(value.text, currency, AMOUNT_PLACES_MAX)
    except InexactAmount as exc:
        raise _Bad(f"transaction.amount: {exc}") from None
    except ValueError:
        raise _Bad("transaction.amount: a decimal number without sign or exponent") from None
    if not low <= minor <= AMOUNT_MAX:
        raise _Bad(f"transaction.amount: out of range for a {'debit' if low else 'credit'}")
    return minor


def _echo(body: dict[str, Any] | None, action: Action | None) -> Context:
    if body is None:
        return Context(action=action)
    uuid, sid, currency = body.get("uuid"), body.get("sid"), body.get("currency")
    return Context(
        uuid=uuid if isinstance(uuid, str) and ID_PATTERN.fullmatch(uuid) else None,
        sid=sid if isinstance(sid, str) and 0 < len(sid) <= TOKEN_CHARS_MAX else None,
        currency=currency if isinstance(currency, str) and is_currency(currency) else None,
        action=action,
    )


def authenticated(query: str, secret: bytes | None) -> bool:
    """Does ``query`` carry exactly one ``authToken``, equal to ``secret``? (constant time)"""
    if secret is None:
        return False
    try:
        pairs = parse_qsl(query, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        return False
    tokens = [value for name, value in pairs if name == AUTH_PARAMETER]
    if len(tokens) != 1 or len(tokens[0]) > AUTH_TOKEN_CHARS_MAX:
        return False
    return hmac.compare_digest(tokens[0].encode(), secret)


def _caller(body: dict[str, Any], currency_required: bool
            ) -> tuple[str, str, str, str | None]:  # fmt: skip
    """(request id, sid, player, currency) of a call; the currency optional on ``check``."""
    request_id = _ident(body, "uuid")
    player_id = _ident(body, "userId")
    sid = body.get("sid")
    if not isinstance(sid, str) or not sid or len(sid) > TOKEN_CHARS_MAX:
        raise _Bad("sid: a non-empty string")
    assert request_id is not None and player_id is not None
    currency = body.get("currency")
    if currency is not None or currency_required:
        if not isinstance(currency, str) or not is_currency(currency):
            raise _Bad("currency: an ISO 4217 code")
    return request_id, sid, player_id, currency


class EvolutionAdapter:
    protocol = PROTOCOL

    def parse(
        self, request: WireRequest, credentials: Credentials, now_s: float
    ) -> Accepted | Refused:
        parsed = parse_body(request.body) if request.body else "empty body"
        body = parsed if isinstance(parsed, dict) else None
        name = request.path.strip("/")
        action = METHODS.get(name)
        echo = _echo(body, action)
        if not authenticated(request.query, credentials.secret):
            return Refused(Refusal.INVALID_SIGNATURE, "authToken does not match", echo)
        if request.method != "POST" or action is None:
            reason = ("sid renewal is not offered: sessions are opened by the operator API"
                      if name == "sid" else f"unknown method {name[:64]!r}")  # fmt: skip
            return Refused(Status.INVALID_REQUEST, reason, Context(
                echo.uuid, echo.sid, echo.currency, unknown_method=True))  # fmt: skip
        if body is None:
            return Refused(Status.INVALID_REQUEST, str(parsed), echo)
        try:
            callback = self._promo(body) if name == PROMO_METHOD else self._callback(action, body)
        except _Bad as exc:
            return Refused(Status.INVALID_REQUEST, str(exc), echo)
        return Accepted(callback, echo)

    def _promo(self, body: dict[str, Any]) -> Callback:
        """A ``promo_payout``: a zero-stake WIN named by its ``promoTransaction.id``."""
        request_id, sid, player_id, currency = _caller(body, currency_required=True)
        assert currency is not None
        round_id, game_id = _game(body, required=False)
        promo = _object(body, "promoTransaction", True)
        assert promo is not None
        kind = promo.get("type")
        if not isinstance(kind, str):
            raise _Bad("promoTransaction.type: required, a string")
        win_kind = PROMO_WIN_KIND.get(kind)
        if win_kind is None:
            raise _Bad(f"promoTransaction.type: {kind[:64]!r} is not a known promotional payout")
        try:
            promo_id = _ident(promo, "id", pattern=PROMO_ID_PATTERN)
        except _Bad as exc:
            raise _Bad(f"promoTransaction.{exc}") from None
        assert promo_id is not None
        if promo_id in PROMO_ID_TAKEN:
            raise _Bad(f"promoTransaction.id: {promo_id!r} is reserved")
        jackpots = promo.get("jackpots")
        if jackpots is not None and not isinstance(jackpots, list):
            raise _Bad("promoTransaction.jackpots: an array")
        try:
            amount = _amount(promo.get("amount"), currency, 0)
        except _Bad as exc:
            raise _Bad(f"promoTransaction.{str(exc).removeprefix('transaction.')}") from None
        txn = PROMO_PREFIX + promo_id
        return Callback(Action.WIN, request_id, sid, player_id, transaction_id=txn,
                        round_id=round_id or txn, game_id=game_id, amount=amount,
                        currency=currency, round_closed=True, win_kind=win_kind)  # fmt: skip

    def _callback(self, action: Action, body: dict[str, Any]) -> Callback:
        request_id, sid, player_id, currency = _caller(
            body, currency_required=action is not Action.AUTHENTICATE
        )
        if action is Action.AUTHENTICATE:
            channel = body.get("channel")
            if channel is not None and not isinstance(channel, dict):
                raise _Bad("channel: an object")
            return Callback(action, request_id, sid, player_id, currency=currency)
        assert currency is not None
        money = action in (Action.BET, Action.WIN)
        round_id, game_id = _game(body, required=money)
        if action is Action.BALANCE:
            return Callback(action, request_id, sid, player_id, game_id=game_id,
                            currency=currency)  # fmt: skip
        transaction = _object(body, "transaction", True)
        assert transaction is not None
        try:
            _ident(transaction, "id")
            ref = _ident(transaction, "refId", pattern=REF_PATTERN)
        except _Bad as exc:
            raise _Bad(f"transaction.{exc}") from None
        assert ref is not None
        amount = _amount(transaction.get("amount"), currency, 1 if action is Action.BET else 0)
        if action is Action.BET:
            return Callback(action, request_id, sid, player_id, transaction_id=ref,
                            round_id=round_id, game_id=game_id, amount=amount,
                            currency=currency)  # fmt: skip
        suffix = CREDIT_SUFFIX if action is Action.WIN else CANCEL_SUFFIX
        return Callback(action, request_id, sid, player_id, transaction_id=ref + suffix,
                        reference_transaction_id=ref, round_id=round_id, game_id=game_id,
                        amount=amount, currency=currency,
                        round_closed=action is Action.WIN)  # fmt: skip

    def launch_query(self, params: LaunchParams) -> list[tuple[str, str]]:
        """The game URL's query in the names of Evolution's player authentication (the
        session as ``sid``, the player as ``userId``, the table as ``tableId``: the tenants
        file's game ``code``, else its id), flattened into one query."""
        query = [
            ("sid", params.token),
            ("userId", params.player_id),
            ("tableId", params.game_code),
            ("currency", params.currency),
            ("language", params.language),
            ("country", params.country),
            ("mode", params.mode),
        ]
        if params.lobby_url:
            query.append(("lobby", params.lobby_url))
        if params.cashier_url:
            query.append(("cashier", params.cashier_url))
        return query

    def render(self, context: Any, result: Result, credentials: Credentials) -> WireResponse:
        ctx = context if isinstance(context, Context) else Context()
        status = STATUS.get(result.status, "UNKNOWN_ERROR")
        if ctx.action is Action.BET:
            status = DEBIT_STATUS.get(result.status, status)
        fields: dict[str, Any] = {"status": status}
        currency = result.currency or ctx.currency
        if ctx.action is Action.AUTHENTICATE:
            if result.status is Status.OK:
                fields["sid"] = ctx.sid
        elif result.balance is not None and currency is not None:
            fields["balance"] = _Number(minor_to_decimal(result.balance, currency))
            fields["bonus"] = _Number(minor_to_decimal(0, currency))
        fields["uuid"] = ctx.uuid
        http = result.extra.get("http")
        if http is None:
            if result.status in (Refusal.INVALID_SIGNATURE, Refusal.REQUEST_EXPIRED):
                http = HTTP_AUTH
            elif ctx.unknown_method:
                http = HTTP_UNKNOWN_METHOD
            else:
                http = 200
        return WireResponse(http, dumps(fields))


def dumps(value: Any) -> bytes:
    """Compact JSON of ``value``, a :class:`_Number` written as its literal (an amount is
    never a float on the way out either)."""

    def write(v: Any) -> str:
        if isinstance(v, _Number):
            return v.text
        if isinstance(v, dict):
            return "{" + ",".join(f"{json.dumps(k)}:{write(x)}" for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ",".join(write(x) for x in v) + "]"
        return json.dumps(v)

    return write(value).encode()


# --- the provider's side (the simulator, the sandbox and the tests speak it) --------------

METHOD_OF = {action: method for method, action in METHODS.items() if method != PROMO_METHOD}
PROMO_TYPE_OF: dict[WinKind, str] = {
    WinKind.JACKPOT: "JackpotWin",
    WinKind.BONUS: "FreeRoundPlayableSpent",
    WinKind.PROMO: "RtrMonetaryReward",
}
"""The ``promoTransaction.type`` the encoder sends for a zero-stake win of each kind."""


def is_promo(callback: Callback) -> bool:
    """Is ``callback`` a zero-stake win, sent as a ``promo_payout``?"""
    return (callback.action is Action.WIN and callback.reference_transaction_id is None
            and callback.win_kind in PROMO_TYPE_OF)  # fmt: skip


def bet_reference(callback: Callback) -> str:
    """The ``refId`` a canonical callback of this protocol names (its bet)."""
    if callback.action is Action.BET:
        assert callback.transaction_id is not None
        return callback.transaction_id
    assert callback.reference_transaction_id is not None
    return callback.reference_transaction_id


def encode_request(
    callback: Callback, auth_token: str, *, wire_transaction_id: str | None = None,
    game_type: str = "roulette",
) -> tuple[str, bytes, dict[str, str]]:  # fmt: skip
    """The wire request a provider of this protocol sends for ``callback`` (one as
    :meth:`EvolutionAdapter.parse` reads them: a credit's and a cancel's transaction ids are
    derived from the bet's): its path and query below the provider's base URL, its body and
    its headers. ``wire_transaction_id`` is the wire's ``transaction.id`` (by default the
    ``refId`` for a debit and a cancel, which repeats its debit's, and the canonical id for a
    credit). A WIN without a bet and of a kind other than REGULAR is a ``promo_payout`` (its
    transaction id ``promo:<id>``; the game, with its round, only when ``game_id`` is set)."""
    cb = callback
    if is_promo(cb):
        return _encode_promo(cb, auth_token, game_type)
    body: dict[str, Any] = {"sid": cb.session_token, "userId": cb.player_id}
    if cb.action is Action.AUTHENTICATE:
        body["channel"] = {"type": "P"}
        if cb.currency is not None:
            body["currency"] = cb.currency
    else:
        assert cb.currency is not None
        body["currency"] = cb.currency
    if cb.action is not Action.AUTHENTICATE and (cb.game_id is not None or cb.round_id):
        body["game"] = {"id": cb.round_id, "type": game_type,
                        "details": {"table": {"id": cb.game_id, "vid": None}}}  # fmt: skip
    if cb.action in (Action.BET, Action.WIN, Action.ROLLBACK):
        assert cb.currency is not None and cb.amount is not None
        ref = bet_reference(cb)
        default_id = cb.transaction_id if cb.action is Action.WIN else ref
        body["transaction"] = {
            "id": wire_transaction_id or default_id,
            "refId": ref,
            "amount": _Number(minor_to_decimal(cb.amount, cb.currency)),
        }
    body["uuid"] = cb.request_id
    path = f"{METHOD_OF[cb.action]}?{AUTH_PARAMETER}={quote(auth_token, safe='')}"
    return path, dumps(body), {"Content-Type": "application/json"}


def _encode_promo(cb: Callback, auth_token: str, game_type: str
                  ) -> tuple[str, bytes, dict[str, str]]:  # fmt: skip
    assert cb.currency is not None and cb.amount is not None and cb.transaction_id is not None
    assert cb.transaction_id.startswith(PROMO_PREFIX)
    body: dict[str, Any] = {"sid": cb.session_token, "userId": cb.player_id,
                            "currency": cb.currency}  # fmt: skip
    if cb.game_id is not None:
        body["game"] = {"id": cb.round_id, "type": game_type,
                        "details": {"table": {"id": cb.game_id, "vid": None}}}  # fmt: skip
    else:
        body["game"] = None
    body["promoTransaction"] = {
        "type": PROMO_TYPE_OF[cb.win_kind],
        "id": cb.transaction_id.removeprefix(PROMO_PREFIX),
        "amount": _Number(minor_to_decimal(cb.amount, cb.currency)),
    }
    body["uuid"] = cb.request_id
    path = f"{PROMO_METHOD}?{AUTH_PARAMETER}={quote(auth_token, safe='')}"
    return path, dumps(body), {"Content-Type": "application/json"}


def decode_answer(body: bytes, currency: str | None = None) -> dict[str, Any]:
    """An answer's fields, amounts as their decimal text; with ``currency``, the balance in
    minor units too (``balance_minor``)."""
    parsed = parse_body(body)
    if isinstance(parsed, str):
        raise ValueError(parsed)
    answer = {k: v.text if isinstance(v, _Number) else v for k, v in parsed.items()}
    balance = answer.get("balance")
    if isinstance(balance, str) and currency is not None:
        negative = balance.startswith("-")
        minor = decimal_to_minor(balance.removeprefix("-"), currency)
        answer["balance_minor"] = -minor if negative else minor
    return answer
