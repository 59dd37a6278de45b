"""Session tokens (agg_ingress.sessions): issue, verify, forgery, tampering, expiry, and the
session rules of a callback in precedence order (an expired session still settles: wins and
rollbacks within the settlement window)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json

import pytest

from agg_domain.statuses import Action, Status
from agg_ingress.sessions import (
    SETTLE_WINDOW_MS,
    TOKEN_CHARS_MAX,
    SessionClaims,
    TokenCheck,
    TokenProblem,
    check_session,
    issue_token,
    new_session_id,
    payload_bytes,
    verify_token,
)

SECRET = b"test-session-secret-0123456789"
NOW_MS = 1_700_000_000_000
CLAIMS = SessionClaims(
    session_id=new_session_id("op-alpha", "player-1", "nova-starfall", NOW_MS, "00" * 16),
    operator_id="op-alpha",
    player_id="player-1",
    currency="EUR",
    country="DE",
    game_id="nova-starfall",
    provider_id="prov-nova",
    mode="real",
    issued_at_ms=NOW_MS,
    expires_at_ms=NOW_MS + 3_600_000,
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_round_trip() -> None:
    token = issue_token(SECRET, CLAIMS)
    check = verify_token(SECRET, token, NOW_MS)
    assert check == TokenCheck(CLAIMS, expired=False, problem=None)


def test_token_format_is_base64url_payload_dot_mac() -> None:
    token = issue_token(SECRET, CLAIMS)
    payload_text, mac_text = token.split(".")
    payload = base64.urlsafe_b64decode(payload_text + "=" * (-len(payload_text) % 4))
    assert payload == payload_bytes(CLAIMS)
    body = json.loads(payload)
    assert body["v"] == 1
    assert body["expires_at"] == CLAIMS.expires_at_ms
    assert body["operator_id"] == "op-alpha"
    assert mac_text == b64(hmac.new(SECRET, payload, hashlib.sha256).digest())
    assert "=" not in token


def test_session_id_is_deterministic_in_its_inputs() -> None:
    a = new_session_id("op-alpha", "p", "g", 1, "nonce-a")
    assert a == new_session_id("op-alpha", "p", "g", 1, "nonce-a")
    assert a != new_session_id("op-alpha", "p", "g", 1, "nonce-b")
    assert a != new_session_id("op-alpha", "p", "g", 2, "nonce-a")
    assert a.startswith("ses-")


@pytest.mark.parametrize(
    ("now_ms", "expired"),
    [
        (NOW_MS, False),
        (CLAIMS.expires_at_ms - 1, False),
        (CLAIMS.expires_at_ms, True),
        (CLAIMS.expires_at_ms + 1, True),
    ],
)
def test_expiry_boundary(now_ms: int, expired: bool) -> None:
    check = verify_token(SECRET, issue_token(SECRET, CLAIMS), now_ms)
    assert check.claims == CLAIMS
    assert check.expired is expired


@pytest.mark.parametrize(
    ("now_ms", "expired_for_ms"),
    [(NOW_MS, 0), (CLAIMS.expires_at_ms - 1, 0), (CLAIMS.expires_at_ms, 0),
     (CLAIMS.expires_at_ms + 1, 1), (CLAIMS.expires_at_ms + 86_400_000, 86_400_000)],
)  # fmt: skip
def test_how_long_ago_the_session_expired(now_ms: int, expired_for_ms: int) -> None:
    check = verify_token(SECRET, issue_token(SECRET, CLAIMS), now_ms)
    assert check.expired_for_ms == expired_for_ms


def test_forged_with_another_secret() -> None:
    forged = issue_token(b"not-the-session-secret-000000", CLAIMS)
    assert verify_token(SECRET, forged, NOW_MS) == TokenCheck(None, problem=TokenProblem.BAD_MAC)


@pytest.mark.parametrize(
    "change",
    [
        {"player_id": "player-2"},
        {"operator_id": "op-beta"},
        {"expires_at_ms": CLAIMS.expires_at_ms + 86_400_000},
        {"currency": "USD"},
        {"game_id": "orbit-roulette", "provider_id": "prov-orbit"},
    ],
)
def test_tampered_payload_with_the_original_mac(change: dict[str, object]) -> None:
    _, mac_text = issue_token(SECRET, CLAIMS).split(".")
    tampered = dataclasses.replace(CLAIMS, **change)  # type: ignore[arg-type]
    token = f"{b64(payload_bytes(tampered))}.{mac_text}"
    assert verify_token(SECRET, token, NOW_MS).problem is TokenProblem.BAD_MAC


def test_tampered_mac() -> None:
    payload_text, mac_text = issue_token(SECRET, CLAIMS).split(".")
    flipped = ("A" if mac_text[0] != "A" else "B") + mac_text[1:]
    check = verify_token(SECRET, f"{payload_text}.{flipped}", NOW_MS)
    assert check.claims is None
    assert check.problem in (TokenProblem.BAD_MAC, TokenProblem.MALFORMED)


def _good() -> str:
    return issue_token(SECRET, CLAIMS)


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "abc",
        _good().replace(".", ""),
        _good() + ".x",
        _good() + "=",  # padding is not part of the format
        "!!!." + _good().split(".")[1],
        _good().split(".")[0] + ".",
        "a" * (TOKEN_CHARS_MAX + 1),
        "é." + _good().split(".")[1],
    ],
)
def test_malformed_tokens(token: str) -> None:
    check = verify_token(SECRET, token, NOW_MS)
    assert check.claims is None
    assert check.problem in (TokenProblem.MALFORMED, TokenProblem.BAD_MAC)


def test_non_canonical_base64_is_refused() -> None:
    payload_text, mac_text = _good().split(".")
    # a 43-character encoding of 32 bytes has 2 unused bits; setting them keeps the bytes
    last = mac_text[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    alt = alphabet[alphabet.index(last) | 1]
    if alt == last:
        alt = alphabet[alphabet.index(last) | 2]
    assert base64.urlsafe_b64decode(mac_text[:-1] + alt + "=") == base64.urlsafe_b64decode(
        mac_text + "="
    )
    check = verify_token(SECRET, f"{payload_text}.{mac_text[:-1]}{alt}", NOW_MS)
    assert check.problem is TokenProblem.MALFORMED


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        json.dumps({"v": 2}).encode(),
        payload_bytes(CLAIMS).replace(b'"v":1', b'"v":2'),
        payload_bytes(CLAIMS).replace(b'"player_id":"player-1"', b'"player_id":7'),
        payload_bytes(CLAIMS).replace(b'"mode":"real",', b""),
        payload_bytes(CLAIMS).replace(
            f'"expires_at":{CLAIMS.expires_at_ms}'.encode(), b'"expires_at":"soon"'
        ),
    ],
)
def test_right_mac_over_an_unreadable_payload(payload: bytes) -> None:
    token = f"{b64(payload)}.{b64(hmac.new(SECRET, payload, hashlib.sha256).digest())}"
    assert verify_token(SECRET, token, NOW_MS) == TokenCheck(None, problem=TokenProblem.BAD_PAYLOAD)


# --- the session rules of a callback ---------------------------------------------------------

VALID = TokenCheck(CLAIMS)
EXPIRED = TokenCheck(CLAIMS, expired=True, expired_for_ms=1)
EXPIRED_DAYS_AGO = TokenCheck(CLAIMS, expired=True, expired_for_ms=3 * 86_400_000)
EXPIRED_LONG_AGO = TokenCheck(CLAIMS, expired=True, expired_for_ms=SETTLE_WINDOW_MS)
NONE = TokenCheck(None, problem=TokenProblem.BAD_MAC)


@pytest.mark.parametrize(
    ("check", "provider", "player", "action", "game", "currency", "expected"),
    [
        (VALID, "prov-nova", "player-1", Action.BET, "nova-starfall", "EUR", Status.OK),
        (VALID, "prov-nova", "player-1", Action.BALANCE, None, None, Status.OK),
        (VALID, "prov-nova", "player-1", Action.ROLLBACK, None, None, Status.OK),
        (NONE, "prov-nova", "player-1", Action.BET, "nova-starfall", "EUR",
         Status.SESSION_NOT_FOUND),
        (VALID, "prov-nova", "player-2", Action.BET, "nova-starfall", "EUR",
         Status.SESSION_NOT_FOUND),
        # another player's expired token: not found comes first
        (EXPIRED, "prov-nova", "player-2", Action.BET, "nova-starfall", "EUR",
         Status.SESSION_NOT_FOUND),
        (EXPIRED, "prov-nova", "player-1", Action.BET, "nova-starfall", "EUR",
         Status.SESSION_EXPIRED),
        (EXPIRED, "prov-orbit", "player-1", Action.BET, "nova-starfall", "USD",
         Status.SESSION_EXPIRED),
        (VALID, "prov-orbit", "player-1", Action.BALANCE, None, None, Status.GAME_NOT_ALLOWED),
        (VALID, "prov-nova", "player-1", Action.BET, "nova-gemrush", "EUR",
         Status.GAME_NOT_ALLOWED),
        (VALID, "prov-nova", "player-1", Action.WIN, None, "EUR", Status.GAME_NOT_ALLOWED),
        (VALID, "prov-nova", "player-1", Action.BALANCE, "nova-gemrush", None,
         Status.GAME_NOT_ALLOWED),
        (VALID, "prov-nova", "player-1", Action.BET, "nova-gemrush", "USD",
         Status.GAME_NOT_ALLOWED),
        (VALID, "prov-nova", "player-1", Action.BET, "nova-starfall", "USD",
         Status.CURRENCY_MISMATCH),
        (VALID, "prov-nova", "player-1", Action.AUTHENTICATE, None, "USD",
         Status.CURRENCY_MISMATCH),
        # an expired session refuses play ...
        (EXPIRED, "prov-nova", "player-1", Action.BALANCE, None, None, Status.SESSION_EXPIRED),
        (EXPIRED, "prov-nova", "player-1", Action.AUTHENTICATE, None, None,
         Status.SESSION_EXPIRED),
        (EXPIRED_DAYS_AGO, "prov-nova", "player-1", Action.BET, "nova-starfall", "EUR",
         Status.SESSION_EXPIRED),
        # ... but settles what is owed: wins and rollbacks, days later too
        (EXPIRED, "prov-nova", "player-1", Action.WIN, "nova-starfall", "EUR", Status.OK),
        (EXPIRED, "prov-nova", "player-1", Action.ROLLBACK, None, None, Status.OK),
        (EXPIRED, "prov-nova", "player-1", Action.ROLLBACK, "nova-starfall", "EUR", Status.OK),
        (EXPIRED_DAYS_AGO, "prov-nova", "player-1", Action.WIN, "nova-starfall", "EUR",
         Status.OK),
        (EXPIRED_DAYS_AGO, "prov-nova", "player-1", Action.ROLLBACK, None, None, Status.OK),
        # only for the session's own provider, player, game and currency
        (EXPIRED, "prov-nova", "player-2", Action.WIN, "nova-starfall", "EUR",
         Status.SESSION_NOT_FOUND),
        (NONE, "prov-nova", "player-1", Action.WIN, "nova-starfall", "EUR",
         Status.SESSION_NOT_FOUND),
        (EXPIRED, "prov-orbit", "player-1", Action.WIN, "nova-starfall", "EUR",
         Status.GAME_NOT_ALLOWED),
        (EXPIRED, "prov-orbit", "player-1", Action.ROLLBACK, None, None,
         Status.GAME_NOT_ALLOWED),
        (EXPIRED, "prov-nova", "player-1", Action.WIN, "nova-gemrush", "EUR",
         Status.GAME_NOT_ALLOWED),
        (EXPIRED, "prov-nova", "player-1", Action.WIN, "nova-starfall", "USD",
         Status.CURRENCY_MISMATCH),
        # and not beyond the settlement window
        (EXPIRED_LONG_AGO, "prov-nova", "player-1", Action.WIN, "nova-starfall", "EUR",
         Status.SESSION_EXPIRED),
        (EXPIRED_LONG_AGO, "prov-nova", "player-1", Action.ROLLBACK, None, None,
         Status.SESSION_EXPIRED),
    ],
)  # fmt: skip
def test_check_session(
    check: TokenCheck,
    provider: str,
    player: str,
    action: Action,
    game: str | None,
    currency: str | None,
    expected: Status,
) -> None:
    got = check_session(
        check,
        provider_id=provider,
        player_id=player,
        action=action,
        game_id=game,
        currency=currency,
    )
    assert got is expected


def test_a_zero_stake_win_may_name_no_game() -> None:
    """A jackpot or promotion credit with no bet and no game is the session's game's; a
    game it names must still be the session's, and a bet always names one."""
    rules = {"provider_id": "prov-nova", "player_id": "player-1", "currency": "EUR"}
    assert check_session(VALID, action=Action.WIN, game_id=None, zero_stake=True,
                         **rules) is Status.OK  # fmt: skip
    assert check_session(VALID, action=Action.WIN, game_id="nova-gemrush", zero_stake=True,
                         **rules) is Status.GAME_NOT_ALLOWED  # fmt: skip
    assert check_session(VALID, action=Action.BET, game_id=None, zero_stake=True,
                         **rules) is Status.GAME_NOT_ALLOWED  # fmt: skip


@pytest.mark.parametrize(
    ("expired_for_ms", "window_ms", "expected"),
    [
        (0, 0, Status.SESSION_EXPIRED),  # a window of 0 settles nothing after expiry
        (999, 1_000, Status.OK),
        (1_000, 1_000, Status.SESSION_EXPIRED),
        (1_001, 1_000, Status.SESSION_EXPIRED),
        (SETTLE_WINDOW_MS - 1, SETTLE_WINDOW_MS, Status.OK),
    ],
)
def test_settlement_window_boundary(expired_for_ms: int, window_ms: int, expected: Status) -> None:
    check = TokenCheck(CLAIMS, expired=True, expired_for_ms=expired_for_ms)
    for action in (Action.WIN, Action.ROLLBACK):
        got = check_session(check, provider_id="prov-nova", player_id="player-1", action=action,
                            game_id="nova-starfall", currency="EUR",
                            settle_window_ms=window_ms)  # fmt: skip
        assert got is expected, action


def test_a_win_with_a_token_that_expired_days_ago_is_accepted_end_to_end() -> None:
    """Issue, let it expire, verify days later: the win passes the rules, a bet does not."""
    token = issue_token(SECRET, CLAIMS)
    check = verify_token(SECRET, token, CLAIMS.expires_at_ms + 2 * 86_400_000)
    assert check.expired and check.claims == CLAIMS
    rules = {"provider_id": "prov-nova", "player_id": "player-1", "game_id": "nova-starfall",
             "currency": "EUR"}  # fmt: skip
    assert check_session(check, action=Action.WIN, **rules) is Status.OK
    assert check_session(check, action=Action.BET, **rules) is Status.SESSION_EXPIRED
