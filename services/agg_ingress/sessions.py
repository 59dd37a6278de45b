"""Game session tokens: issued by the operator API, verified on every provider callback.

A token is stateless to verify, so any ingress instance accepts a session another one opened
and nothing is stored per session::

    base64url(payload JSON) "." base64url(HMAC-SHA256(session_secret, payload JSON bytes))

both parts without padding. The payload is compact JSON with sorted keys and carries ``v``
(format version, 1), ``session_id``, ``operator_id``, ``player_id``, ``currency``, ``country``,
``game_id``, ``provider_id``, ``mode``, ``issued_at`` and ``expires_at`` (unix milliseconds).

The session id is ``derive_id("ses", operator, player, game, issued_at_ms, nonce)`` with a
random 128-bit nonce chosen by the caller: unique per opening (two sessions of one player in
the same millisecond differ), and still a pure function of its inputs for tests and replays.

Everything here is pure (no clock, no randomness): the caller passes ``now_ms`` and the nonce.
A token that fails any check verifies as "not found"; the reason is only for logs.

Expiry ends play, not settlement. A bet, a balance or an authenticate call with an expired
token is refused ``SESSION_EXPIRED``; a win or a rollback is money the player is owed (a
provider settles a round, or cancels a bet, hours or days after the player left), so it is
accepted with an expired token for ``settle_window_ms`` after the expiry, as long as the token
is authentic and names this provider, player, game and currency. Our MAC over the claims
stays proof that we opened that session. The window is bounded so that the saga still
remembers the bet a late rollback names (it keeps settled transactions 30 days: a session of
at most 7 days plus a window of at most 21 days stays inside that).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from agg_domain.ids import derive_id
from agg_domain.statuses import Action, Status

TOKEN_VERSION = 1
TOKEN_CHARS_MAX = 4_096
"""Longest token looked at; a real one is about 500 characters."""

_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")
MONEY_ACTIONS = frozenset({Action.BET, Action.WIN, Action.ROLLBACK})
SETTLEMENT_ACTIONS = frozenset({Action.WIN, Action.ROLLBACK})
"""Owed money: accepted after the session expired, within the settlement window."""
SETTLE_WINDOW_MS = 7 * 24 * 3600 * 1000
"""Default settlement window after expiry (``AGG_SESSION_SETTLE_WINDOW_S``)."""


class Mode(StrEnum):
    REAL = "real"
    DEMO = "demo"


@dataclass(frozen=True)
class SessionClaims:
    session_id: str
    operator_id: str
    player_id: str
    currency: str
    country: str
    game_id: str
    provider_id: str
    mode: str
    issued_at_ms: int
    expires_at_ms: int


_WIRE_NAMES = {"issued_at_ms": "issued_at", "expires_at_ms": "expires_at"}
_STR_FIELDS = ("session_id", "operator_id", "player_id", "currency", "country", "game_id",
               "provider_id", "mode")  # fmt: skip
_INT_FIELDS = ("issued_at_ms", "expires_at_ms")


class TokenProblem(StrEnum):
    """Why a token did not verify (for logs; the provider only hears SESSION_NOT_FOUND)."""

    MALFORMED = "malformed"
    BAD_MAC = "bad_mac"
    BAD_PAYLOAD = "bad_payload"


@dataclass(frozen=True)
class TokenCheck:
    """Result of :func:`verify_token`: claims when the MAC is right (expired or not)."""

    claims: SessionClaims | None
    expired: bool = False
    problem: TokenProblem | None = None
    expired_for_ms: int = 0
    """How long ago the session expired (0 while it has not)."""


def new_session_id(
    operator_id: str, player_id: str, game_id: str, issued_at_ms: int, nonce: str
) -> str:
    return derive_id("ses", operator_id, player_id, game_id, issued_at_ms, nonce)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes | None:
    """Strict base64url without padding; None unless ``text`` is the canonical encoding."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    # non-zero trailing bits decode to the same bytes; accept one spelling per token only
    return data if _b64encode(data) == text else None


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, payload, hashlib.sha256).digest()


def payload_bytes(claims: SessionClaims) -> bytes:
    body: dict[str, Any] = {"v": TOKEN_VERSION}
    for name, value in asdict(claims).items():
        body[_WIRE_NAMES.get(name, name)] = value
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def issue_token(secret: bytes, claims: SessionClaims) -> str:
    payload = payload_bytes(claims)
    return f"{_b64encode(payload)}.{_b64encode(_mac(secret, payload))}"


def _claims_from(payload: bytes) -> SessionClaims | None:
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict) or body.get("v") != TOKEN_VERSION:
        return None
    values: dict[str, Any] = {}
    for name in _STR_FIELDS:
        value = body.get(name)
        if not isinstance(value, str) or not value:
            return None
        values[name] = value
    for name in _INT_FIELDS:
        value = body.get(_WIRE_NAMES[name])
        if type(value) is not int or value < 0:
            return None
        values[name] = value
    return SessionClaims(**values)


def verify_token(secret: bytes, token: str, now_ms: int) -> TokenCheck:
    """Check the token's form and MAC, then read its claims. Constant-time MAC compare."""
    if len(token) > TOKEN_CHARS_MAX or token.count(".") != 1:
        return TokenCheck(None, problem=TokenProblem.MALFORMED)
    payload_text, mac_text = token.split(".")
    payload = _b64decode(payload_text)
    mac = _b64decode(mac_text)
    if payload is None or mac is None:
        return TokenCheck(None, problem=TokenProblem.MALFORMED)
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        return TokenCheck(None, problem=TokenProblem.BAD_MAC)
    claims = _claims_from(payload)
    if claims is None:
        # a right MAC over a payload this version cannot read: issued by a newer format
        return TokenCheck(None, problem=TokenProblem.BAD_PAYLOAD)
    expired = now_ms >= claims.expires_at_ms
    return TokenCheck(
        claims, expired=expired, expired_for_ms=now_ms - claims.expires_at_ms if expired else 0
    )


def check_session(
    check: TokenCheck,
    *,
    provider_id: str,
    player_id: str,
    action: Action,
    game_id: str | None,
    currency: str | None,
    settle_window_ms: int = SETTLE_WINDOW_MS,
) -> Status:
    """The session rules of a provider callback, in precedence order; OK when all hold.

    ``game_id`` and ``currency`` are the callback's (None where the action omits them); a
    money action always carries a game and must name the session's. An expired session
    still settles: a win or a rollback up to ``settle_window_ms`` after the expiry goes on to
    the other rules; anything else, or later, is ``SESSION_EXPIRED``.
    """
    claims = check.claims
    if claims is None or claims.player_id != player_id:
        return Status.SESSION_NOT_FOUND
    if check.expired and not (
        action in SETTLEMENT_ACTIONS and check.expired_for_ms < settle_window_ms
    ):
        return Status.SESSION_EXPIRED
    if claims.provider_id != provider_id:
        return Status.GAME_NOT_ALLOWED
    if game_id is None and action in MONEY_ACTIONS and action is not Action.ROLLBACK:
        return Status.GAME_NOT_ALLOWED
    if game_id is not None and game_id != claims.game_id:
        return Status.GAME_NOT_ALLOWED
    if currency is not None and currency != claims.currency:
        return Status.CURRENCY_MISMATCH
    return Status.OK
