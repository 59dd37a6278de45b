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

Player references are for protocols whose money calls carry no session token (pragmatic-v1:
only ``authenticate`` carries our token; bet, result and refund name the player by the
``userId`` we answered). A reference names operator, player, provider, currency and mode::

    base64url(payload JSON) "." base64url(first 16 bytes of
                                          HMAC-SHA256(session_secret, b"player-ref\x00" + payload))

with the compact payload ``{"c", "m", "o", "p", "pv", "v"}`` (currency, mode, operator,
player, provider, version 1). It is deterministic (the same player, currency and mode get
the same reference every time, as providers key their player records on it), never expires,
and is domain-separated from session tokens: its MAC covers a prefix no token payload starts
with and is 16 bytes where a token's is 32, so neither ever verifies as the other.
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
    zero_stake: bool = False,
) -> Status:
    """The session rules of a provider callback, in precedence order; OK when all hold.

    ``game_id`` and ``currency`` are the callback's (None where the action omits them); a
    money action always carries a game and must name the session's, except a
    ``zero_stake`` win (a jackpot or promotion credit with no bet, as evolution-v1's
    ``promo_payout`` with ``game`` null), which may name none and is then the session's
    game's, as a player reference's promotional win is its provider's. An expired session
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
    if (game_id is None and action in MONEY_ACTIONS and action is not Action.ROLLBACK
            and not (zero_stake and action is Action.WIN)):  # fmt: skip
        return Status.GAME_NOT_ALLOWED
    if game_id is not None and game_id != claims.game_id:
        return Status.GAME_NOT_ALLOWED
    if currency is not None and currency != claims.currency:
        return Status.CURRENCY_MISMATCH
    return Status.OK


# --- player references ----------------------------------------------------------------------

PLAYER_REF_VERSION = 1
PLAYER_REF_DOMAIN = b"player-ref\x00"
"""Prefix of what a reference's MAC covers: a session token's MAC covers the bare payload."""
PLAYER_REF_MAC_BYTES = 16
PLAYER_REF_CHARS_MAX = 512
"""Longest reference looked at; one of ids at their longest (64 characters) is about 330."""
_REF_FIELDS = {"o": "operator_id", "p": "player_id", "pv": "provider_id", "c": "currency",
               "m": "mode"}  # fmt: skip
_REF_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_REF_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True)
class PlayerRef:
    """Who a player reference names: a player of an operator, at a provider, in one currency
    and mode (a demo reference never reaches the operator's wallet)."""

    operator_id: str
    player_id: str
    provider_id: str
    currency: str
    mode: str


def player_ref_payload(ref: PlayerRef) -> bytes:
    body: dict[str, Any] = {"v": PLAYER_REF_VERSION}
    for short, name in _REF_FIELDS.items():
        body[short] = getattr(ref, name)
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _ref_mac(secret: bytes, payload: bytes) -> bytes:
    return _mac(secret, PLAYER_REF_DOMAIN + payload)[:PLAYER_REF_MAC_BYTES]


def issue_player_ref(secret: bytes, ref: PlayerRef) -> str:
    """The reference of ``ref``: a pure function of the secret and the five names."""
    payload = player_ref_payload(ref)
    return f"{_b64encode(payload)}.{_b64encode(_ref_mac(secret, payload))}"


def _ref_from(payload: bytes) -> PlayerRef | None:
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict) or set(body) != {"v", *_REF_FIELDS}:
        return None
    if body["v"] != PLAYER_REF_VERSION or type(body["v"]) is not int:
        return None
    values = {name: body[short] for short, name in _REF_FIELDS.items()}
    if not all(isinstance(v, str) for v in values.values()):
        return None
    if not all(_REF_ID.fullmatch(values[n]) for n in ("operator_id", "player_id", "provider_id")):
        return None
    if not _REF_CURRENCY.fullmatch(values["currency"]) or values["mode"] not in set(Mode):
        return None
    return PlayerRef(**values)


def _ref_parts(text: str) -> tuple[bytes, bytes] | None:
    if len(text) > PLAYER_REF_CHARS_MAX or text.count(".") != 1:
        return None
    payload_text, mac_text = text.split(".")
    payload, mac = _b64decode(payload_text), _b64decode(mac_text)
    if payload is None or mac is None or len(mac) != PLAYER_REF_MAC_BYTES:
        return None
    return payload, mac


def verify_player_ref(secret: bytes, text: str) -> PlayerRef | TokenProblem:
    """The player ``text`` names when it is a reference we issued; else why not (for logs:
    the provider only hears SESSION_NOT_FOUND). Constant-time MAC compare."""
    parts = _ref_parts(text)
    if parts is None:
        return TokenProblem.MALFORMED
    payload, mac = parts
    if not hmac.compare_digest(mac, _ref_mac(secret, payload)):
        return TokenProblem.BAD_MAC
    ref = _ref_from(payload)
    return TokenProblem.BAD_PAYLOAD if ref is None else ref


def peek_player_ref(text: str) -> PlayerRef | None:
    """What a reference says, UNVERIFIED: for an adapter that needs the currency to read a
    wire amount before the core verifies the reference (which then refuses a forged one, and
    a callback whose currency differs from the verified reference's)."""
    parts = _ref_parts(text)
    return None if parts is None else _ref_from(parts[0])


NO_EXPIRY_MS = 2**63 - 1


def claims_from_ref(ref: PlayerRef, text: str, game_id: str | None) -> SessionClaims:
    """The session a callback through a player reference is forwarded under: its id derived
    from the reference (one per player, provider, currency and mode), the callback's game,
    no country (a reference does not carry one) and no expiry (authorised by the provider's
    signature plus an authentic reference, not by a session's lifetime)."""
    return SessionClaims(
        session_id=derive_id("ses", "player-ref", text),
        operator_id=ref.operator_id,
        player_id=ref.player_id,
        currency=ref.currency,
        country="",
        game_id=game_id or "",
        provider_id=ref.provider_id,
        mode=ref.mode,
        issued_at_ms=0,
        expires_at_ms=NO_EXPIRY_MS,
    )


def ref_of(claims: SessionClaims) -> PlayerRef:
    """The player reference of a session's player (what authenticate answers as userId)."""
    return PlayerRef(claims.operator_id, claims.player_id, claims.provider_id, claims.currency,
                     claims.mode)  # fmt: skip
