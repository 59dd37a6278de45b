"""``hub88-v1``: a JSON wallet protocol signed with RSA-SHA256, shaped like Hub88's.

The provider POSTs JSON to four paths below its base URL:

- ``user/balance``: ``user``, ``token``, ``request_uuid``, ``game_code``;
- ``transaction/bet``: those and ``transaction_uuid``, ``round``, ``round_closed``,
  ``currency``, ``amount``, optionally ``supplier_transaction_id``, ``is_free``, ``bet``,
  ``reward_uuid``, ``meta``;
- ``transaction/win``: as a bet, with ``reference_transaction_uuid`` (the round's bet);
- ``transaction/rollback``: ``user``, ``token``, ``request_uuid``, ``transaction_uuid`` (of the
  rollback itself), ``reference_transaction_uuid`` (the bet it undoes), ``round``,
  ``round_closed``, ``game_code``.

Every request carries ``X-Hub88-Signature``: base64 of an RSA PKCS#1 v1.5 signature with
SHA-256 over the raw body, by the provider's private key; it is verified with the provider's
public key from the tenants file (``public_key``). Answers are HTTP 200 with
``{"user", "status", "request_uuid", "currency", "balance"}`` and, when the tenants file gives
a ``signing_key`` for the provider, signed the same way in the same header.

Amounts are integers in units of 1/100,000 of the currency (``100000`` is one euro): a value
that is no whole number of the currency's minor units (``1`` for EUR, a thousandth of a cent)
is refused ``RS_ERROR_WRONG_TYPES``, never rounded. Balances are given in the same units.

Idempotency: ``transaction_uuid`` is the canonical transaction id, ``request_uuid`` the request
id; a repeated transaction gets the first answer again (the saga's dedupe), a reused one with
other content ``RS_ERROR_DUPLICATE_TRANSACTION``. A rollback of a bet never seen is recorded
(a tombstone, so the late bet is refused) and answered ``RS_OK``, as the canonical protocol
does.

Free bets: a bet with ``is_free`` true is a free spin of the player's campaign named by its
``reward_uuid`` (the operator grants the campaign through the operator API, its
``campaign_id`` being the reward's id): nothing is debited, its ``amount`` must be the
campaign's bet value. A win with ``is_free`` true and a ``reward_uuid`` is that campaign's,
credited as a BONUS win. A free bet without ``reward_uuid``, and a bet of 0, are refused
``RS_ERROR_WRONG_TYPES``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from agg_domain.currency import is_currency
from agg_domain.statuses import Action, Status
from agg_ingress.adapters.base import (
    Accepted,
    Credentials,
    InexactAmount,
    Refused,
    Result,
    WireRequest,
    WireResponse,
    minor_to_scaled,
    scaled_to_minor,
)
from agg_ingress.launch import LaunchParams
from agg_ingress.protocol import ID_PATTERN, Callback, Refusal, parse_object
from agg_protocols.signatures import load_private_key as load_private_key
from agg_protocols.signatures import load_public_key as load_public_key
from agg_protocols.signatures import rsa_sign as sign
from agg_protocols.signatures import rsa_verify as verify

PROTOCOL = "hub88-v1"
SIGNATURE_HEADER = "x-hub88-signature"
SCALE_EXPONENT = 5
"""Wire amounts are units of 10**-5 of the currency."""
AMOUNT_MAX = 2**63 - 1
TOKEN_CHARS_MAX = 4_096

PATHS: dict[str, Action] = {
    "user/balance": Action.BALANCE,
    "transaction/bet": Action.BET,
    "transaction/win": Action.WIN,
    "transaction/rollback": Action.ROLLBACK,
}

STATUS: dict[str, str] = {
    Status.OK: "RS_OK",
    Status.INVALID_REQUEST: "RS_ERROR_WRONG_SYNTAX",
    Status.DUPLICATE_CONFLICT: "RS_ERROR_DUPLICATE_TRANSACTION",
    Status.SESSION_NOT_FOUND: "RS_ERROR_INVALID_TOKEN",
    Status.SESSION_EXPIRED: "RS_ERROR_TOKEN_EXPIRED",
    Status.GAME_NOT_ALLOWED: "RS_ERROR_INVALID_GAME",
    Status.CURRENCY_MISMATCH: "RS_ERROR_WRONG_CURRENCY",
    Status.TRANSACTION_NOT_FOUND: "RS_ERROR_TRANSACTION_DOES_NOT_EXIST",
    Status.BET_ROLLED_BACK: "RS_ERROR_TRANSACTION_ROLLED_BACK",
    Status.ROUND_CLOSED: "RS_ERROR_INVALID_GAME",
    Status.PLAYER_BLOCKED: "RS_ERROR_USER_DISABLED",
    Status.LIMIT_EXCEEDED: "RS_ERROR_LIMIT_REACHED",
    Status.INSUFFICIENT_FUNDS: "RS_ERROR_NOT_ENOUGH_MONEY",
    Status.RETRY_LATER: "RS_ERROR_TIMEOUT",
    Refusal.INVALID_SIGNATURE: "RS_ERROR_INVALID_SIGNATURE",
    Refusal.REQUEST_EXPIRED: "RS_ERROR_INVALID_SIGNATURE",
    Refusal.UNKNOWN_PROVIDER: "RS_ERROR_INVALID_PARTNER",
    Refusal.UNKNOWN_OPERATOR: "RS_ERROR_INVALID_PARTNER",
}
"""Canonical status -> the protocol's. ``RS_ERROR_WRONG_TYPES`` is given for a field of the
wrong type or an amount that does not convert (``Context.types``); ``RS_ERROR_UNKNOWN`` for
anything not listed."""


@dataclass(frozen=True)
class Context:
    """What an answer echoes: the request's ``user`` and ``request_uuid`` (when they were
    well-formed), its currency, and whether a refusal is one of types."""

    user: str | None = None
    request_uuid: str | None = None
    currency: str | None = None
    types: bool = False


class _Bad(ValueError):
    def __init__(self, reason: str, types: bool = False):
        super().__init__(reason)
        self.types = types


def _ident(body: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise _Bad(f"{name}: required")
        return None
    if not isinstance(value, str):
        raise _Bad(f"{name}: a string", types=True)
    if not ID_PATTERN.fullmatch(value):
        raise _Bad(f"{name}: 1..64 characters of [A-Za-z0-9_.:-]")
    return value


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _Bad(f"{name}: true or false", types=True)
    return value


def _echo(body: dict[str, Any] | None) -> Context:
    if body is None:
        return Context()
    user, request_uuid, currency = body.get("user"), body.get("request_uuid"), body.get("currency")
    return Context(
        user=user if isinstance(user, str) and ID_PATTERN.fullmatch(user) else None,
        request_uuid=(
            request_uuid
            if isinstance(request_uuid, str) and ID_PATTERN.fullmatch(request_uuid)
            else None
        ),
        currency=currency if isinstance(currency, str) and is_currency(currency) else None,
    )


class Hub88Adapter:
    protocol = PROTOCOL

    def parse(
        self, request: WireRequest, credentials: Credentials, now_s: float
    ) -> Accepted | Refused:
        parsed = parse_object(request.body) if request.body else "empty body"
        body = parsed if isinstance(parsed, dict) else None
        echo = _echo(body)
        if credentials.public_key is None or not verify(
            credentials.public_key, request.body, request.headers.get(SIGNATURE_HEADER)
        ):
            return Refused(Refusal.INVALID_SIGNATURE, "signature does not verify", echo)
        action = PATHS.get(request.path.strip("/"))
        if request.method != "POST" or action is None:
            return Refused(Status.INVALID_REQUEST, f"unknown method {request.path[:64]!r}", echo)
        if body is None:
            return Refused(Status.INVALID_REQUEST, str(parsed), echo)
        try:
            callback = self._callback(action, body)
        except _Bad as exc:
            return Refused(Status.INVALID_REQUEST, str(exc), Context(
                echo.user, echo.request_uuid, echo.currency, types=exc.types))  # fmt: skip
        return Accepted(callback, echo)

    def _callback(self, action: Action, body: dict[str, Any]) -> Callback:
        request_id = _ident(body, "request_uuid")
        player_id = _ident(body, "user")
        token = body.get("token")
        if not isinstance(token, str) or not token or len(token) > TOKEN_CHARS_MAX:
            raise _Bad("token: a non-empty string", types=token is not None)
        game_id = _ident(body, "game_code", required=action is not Action.ROLLBACK)
        assert request_id is not None and player_id is not None
        if action is Action.BALANCE:
            return Callback(action, request_id, token, player_id, game_id=game_id)
        transaction_id = _ident(body, "transaction_uuid")
        round_id = _ident(body, "round", required=action is not Action.ROLLBACK)
        reference = _ident(body, "reference_transaction_uuid",
                           required=action is Action.ROLLBACK)  # fmt: skip
        round_closed = _flag(body, "round_closed")
        if action is Action.ROLLBACK:
            return Callback(action, request_id, token, player_id, transaction_id=transaction_id,
                            reference_transaction_id=reference, round_id=round_id,
                            game_id=game_id, round_closed=round_closed)  # fmt: skip
        currency = body.get("currency")
        if not isinstance(currency, str) or not is_currency(currency):
            raise _Bad("currency: an ISO 4217 code", types=currency is not None)
        amount = body.get("amount")
        if type(amount) is not int:
            raise _Bad("amount: an integer of 1/100000 units", types=amount is not None)
        if not 0 <= amount <= AMOUNT_MAX:
            raise _Bad("amount: out of range", types=True)
        free = _flag(body, "is_free")
        campaign_id = _ident(body, "reward_uuid", required=False) if free else None
        if action is Action.BET and amount == 0:
            raise _Bad("amount: a bet of 0 (a free bet names its stake and reward_uuid)",
                       types=True)  # fmt: skip
        if action is Action.BET and free and campaign_id is None:
            raise _Bad("reward_uuid: a free bet names its reward", types=True)
        try:
            minor = scaled_to_minor(amount, SCALE_EXPONENT, currency)
        except InexactAmount as exc:
            raise _Bad(str(exc), types=True) from None
        return Callback(action, request_id, token, player_id, transaction_id=transaction_id,
                        reference_transaction_id=reference, round_id=round_id, game_id=game_id,
                        amount=minor, currency=currency, round_closed=round_closed,
                        campaign_id=campaign_id)  # fmt: skip

    def launch_query(self, params: LaunchParams) -> list[tuple[str, str]]:
        """The game URL's query, in the names of Hub88's game launch (``lobby_url``,
        ``deposit_url``; ``demo`` for a demo session)."""
        query = [
            ("token", params.token),
            ("user", params.player_id),
            ("game_code", params.game_code),
            ("currency", params.currency),
            ("lang", params.language),
            ("country", params.country),
            ("platform", "GPL_DESKTOP"),
        ]
        if params.lobby_url:
            query.append(("lobby_url", params.lobby_url))
        if params.cashier_url:
            query.append(("deposit_url", params.cashier_url))
        if params.mode == "demo":
            query.append(("demo", "true"))
        return query

    def render(self, context: Any, result: Result, credentials: Credentials) -> WireResponse:
        ctx = context if isinstance(context, Context) else Context()
        if ctx.types and result.status is Status.INVALID_REQUEST:
            status = "RS_ERROR_WRONG_TYPES"
        else:
            status = STATUS.get(result.status, "RS_ERROR_UNKNOWN")
        currency = result.currency or ctx.currency
        balance = None
        if result.balance is not None and currency is not None:
            balance = minor_to_scaled(result.balance, SCALE_EXPONENT, currency)
        body = json.dumps(
            {"user": ctx.user, "status": status, "request_uuid": ctx.request_uuid,
             "currency": currency, "balance": balance},
            separators=(",", ":"),
        ).encode()  # fmt: skip
        if credentials.signing_key is None:
            return WireResponse(200, body)
        signature = sign(credentials.signing_key, body)
        return WireResponse(200, body, headers=(("X-Hub88-Signature", signature),))


# --- the provider's side (the simulator, the sandbox and the tests speak it) --------------

PATH_OF = {action: path for path, action in PATHS.items()}


def encode_request(
    callback: Callback, private_key: rsa.RSAPrivateKey
) -> tuple[str, bytes, dict[str, str]]:
    """The wire request a provider of this protocol sends for ``callback``: its path below
    the provider's base URL, its body and its headers (signed with ``private_key``)."""
    cb = callback
    body: dict[str, Any] = {
        "user": cb.player_id,
        "token": cb.session_token,
        "request_uuid": cb.request_id,
        "game_code": cb.game_id,
    }
    if cb.action is not Action.BALANCE:
        body["transaction_uuid"] = cb.transaction_id
        body["round"] = cb.round_id
        body["round_closed"] = cb.round_closed
        if cb.reference_transaction_id is not None:
            body["reference_transaction_uuid"] = cb.reference_transaction_id
    if cb.action in (Action.BET, Action.WIN):
        assert cb.amount is not None and cb.currency is not None
        body["currency"] = cb.currency
        body["amount"] = minor_to_scaled(cb.amount, SCALE_EXPONENT, cb.currency)
        body["supplier_transaction_id"] = cb.transaction_id
        body["is_free"] = cb.campaign_id is not None
        if cb.campaign_id is not None:
            body["reward_uuid"] = cb.campaign_id
    raw = json.dumps(body, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "X-Hub88-Signature": sign(private_key, raw)}
    return PATH_OF[cb.action], raw, headers


def decode_answer(body: bytes) -> dict[str, Any]:
    """An answer's fields, the balance in minor units (``balance_minor``) when given."""
    answer: dict[str, Any] = json.loads(body)
    balance, currency = answer.get("balance"), answer.get("currency")
    if isinstance(balance, int) and isinstance(currency, str) and is_currency(currency):
        answer["balance_minor"] = scaled_to_minor(balance, SCALE_EXPONENT, currency)
    return answer
