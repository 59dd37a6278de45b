"""Player references (agg_ingress.sessions): deterministic, round trip, any tampering refused,
never confusable with a session token, bounded in length; and the rules of a callback that
names its player by one (agg_ingress.protocol.player_ref_status)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agg_config.tenants import parse_tenants
from agg_domain.statuses import Action, Status
from agg_ingress.protocol import player_ref_status
from agg_ingress.sessions import (
    NO_EXPIRY_MS,
    PLAYER_REF_CHARS_MAX,
    PlayerRef,
    SessionClaims,
    TokenProblem,
    claims_from_ref,
    issue_player_ref,
    issue_token,
    peek_player_ref,
    player_ref_payload,
    ref_of,
    verify_player_ref,
    verify_token,
)
from tests.fuzz_budget import examples

SECRET = b"test-session-secret-0123456789"
REF = PlayerRef("op-alpha", "player-1", "prov-prag", "EUR", "real")
CLAIMS = SessionClaims(
    session_id="ses-1", operator_id="op-alpha", player_id="player-1", currency="EUR",
    country="MT", game_id="vs20doghouse", provider_id="prov-prag", mode="real",
    issued_at_ms=1, expires_at_ms=2,
)  # fmt: skip


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_reference_is_payload_dot_a_domain_separated_truncated_mac() -> None:
    text = issue_player_ref(SECRET, REF)
    payload_text, mac_text = text.split(".")
    payload = base64.urlsafe_b64decode(payload_text + "=" * (-len(payload_text) % 4))
    assert payload == player_ref_payload(REF)
    assert json.loads(payload) == {"v": 1, "o": "op-alpha", "p": "player-1", "pv": "prov-prag",
                                   "c": "EUR", "m": "real"}  # fmt: skip
    mac = hmac.new(SECRET, b"player-ref\x00" + payload, hashlib.sha256).digest()[:16]
    assert mac_text == b64(mac)
    assert verify_player_ref(SECRET, text) == REF


def test_the_same_player_gets_the_same_reference_and_demo_another() -> None:
    text = issue_player_ref(SECRET, REF)
    assert issue_player_ref(SECRET, dataclasses.replace(REF)) == text
    others = {
        issue_player_ref(SECRET, dataclasses.replace(REF, **change))
        for change in ({"mode": "demo"}, {"currency": "USD"}, {"player_id": "player-2"},
                       {"operator_id": "op-beta"}, {"provider_id": "prov-nova"})
    }  # fmt: skip
    assert len(others) == 5 and text not in others
    assert issue_player_ref(b"another-secret-0123456789abcdef", REF) != text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", TokenProblem.MALFORMED),
        ("abc", TokenProblem.MALFORMED),
        ("a.b.c", TokenProblem.MALFORMED),
        ("e30.", TokenProblem.MALFORMED),
        ("e30=." + b64(b"x" * 16), TokenProblem.MALFORMED),
        ("e30." + b64(b"x" * 32), TokenProblem.MALFORMED),  # a token's MAC length
        ("e30." + b64(b"x" * 16), TokenProblem.BAD_MAC),
        ("x" * (PLAYER_REF_CHARS_MAX + 1), TokenProblem.MALFORMED),
    ],
)
def test_malformed_and_forged_references(text: str, problem: TokenProblem) -> None:
    assert verify_player_ref(SECRET, text) == problem
    assert problem is not TokenProblem.MALFORMED or peek_player_ref(text) is None


def _signed(payload: bytes) -> str:
    mac = hmac.new(SECRET, b"player-ref\x00" + payload, hashlib.sha256).digest()[:16]
    return f"{b64(payload)}.{b64(mac)}"


@pytest.mark.parametrize(
    "body",
    [
        {"v": 2, "o": "op", "p": "p", "pv": "pv", "c": "EUR", "m": "real"},
        {"v": True, "o": "op", "p": "p", "pv": "pv", "c": "EUR", "m": "real"},
        {"v": 1, "o": "op", "p": "p", "pv": "pv", "c": "EUR", "m": "test"},
        {"v": 1, "o": "op", "p": "p", "pv": "pv", "c": "eur", "m": "real"},
        {"v": 1, "o": "op", "p": "a b", "pv": "pv", "c": "EUR", "m": "real"},
        {"v": 1, "o": "op", "p": 7, "pv": "pv", "c": "EUR", "m": "real"},
        {"v": 1, "o": "op", "p": "p", "c": "EUR", "m": "real"},
        {"v": 1, "o": "op", "p": "p", "pv": "pv", "c": "EUR", "m": "real", "x": 1},
    ],
)
def test_a_right_mac_over_a_payload_this_version_cannot_read(body: dict[str, object]) -> None:
    assert verify_player_ref(SECRET, _signed(json.dumps(body).encode())) == (
        TokenProblem.BAD_PAYLOAD)  # fmt: skip


def test_a_reference_is_never_a_session_token_nor_a_token_a_reference() -> None:
    token = issue_token(SECRET, CLAIMS)
    assert verify_player_ref(SECRET, token) == TokenProblem.MALFORMED  # a 32-byte MAC
    assert verify_token(SECRET, issue_player_ref(SECRET, REF), 0).claims is None
    # a reference MAC'd the way a token is (no domain, whole MAC) is still no reference
    payload = player_ref_payload(REF)
    undomained = f"{b64(payload)}.{b64(hmac.new(SECRET, payload, hashlib.sha256).digest()[:16])}"
    assert verify_player_ref(SECRET, undomained) == TokenProblem.BAD_MAC


def test_claims_from_a_reference() -> None:
    text = issue_player_ref(SECRET, REF)
    claims = claims_from_ref(REF, text, "vs20doghouse")
    assert (claims.operator_id, claims.player_id, claims.provider_id, claims.currency,
            claims.mode, claims.game_id) == ("op-alpha", "player-1", "prov-prag", "EUR", "real",
                                             "vs20doghouse")  # fmt: skip
    assert claims.expires_at_ms == NO_EXPIRY_MS and claims.country == ""
    assert claims.session_id == claims_from_ref(REF, text, None).session_id
    assert claims_from_ref(REF, text, None).game_id == ""
    assert ref_of(claims) == REF and ref_of(CLAIMS) == REF


# --- properties ------------------------------------------------------------------------------

ids = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)
refs = st.builds(PlayerRef, ids, ids, ids, st.sampled_from(["EUR", "JPY", "KWD", "USD"]),
                 st.sampled_from(["real", "demo"]))  # fmt: skip


@settings(max_examples=examples(200, full=5_000), deadline=None)
@given(refs)
def test_round_trip_and_bounded_length(ref: PlayerRef) -> None:
    text = issue_player_ref(SECRET, ref)
    assert len(text) <= PLAYER_REF_CHARS_MAX
    assert verify_player_ref(SECRET, text) == ref
    assert peek_player_ref(text) == ref
    assert verify_token(SECRET, text, 0).claims is None


@settings(max_examples=examples(300, full=20_000), deadline=None)
@given(refs, st.data())
def test_any_tampering_is_refused(ref: PlayerRef, data: st.DataObject) -> None:
    text = issue_player_ref(SECRET, ref)
    i = data.draw(st.integers(0, len(text) - 1))
    replacement = data.draw(st.text(alphabet="ABCxyz019_-.=+/ ", min_size=0, max_size=3))
    tampered = text[:i] + replacement + text[i + 1 :]
    if tampered != text:
        assert isinstance(verify_player_ref(SECRET, tampered), TokenProblem)


@settings(max_examples=examples(200, full=5_000), deadline=None)
@given(st.text(max_size=600))
def test_any_text_is_a_problem_or_a_reference_never_an_exception(text: str) -> None:
    assert isinstance(verify_player_ref(SECRET, text), TokenProblem)


# --- the rules of a callback through a reference ----------------------------------------------

TENANTS = parse_tenants({
    "operators": [
        {"id": "op-alpha", "name": "A", "secret": {"value": "x" * 24}, "currencies": ["EUR"],
         "providers": ["prov-prag", "prov-nova"]},
        {"id": "op-beta", "name": "B", "secret": {"value": "y" * 24}, "currencies": ["EUR"],
         "providers": ["prov-nova"]},
    ],
    "providers": [
        {"id": "prov-prag", "name": "P", "protocol": "pragmatic-v1", "secret": {"value": "s" * 16}},
        {"id": "prov-nova", "name": "N", "secret": {"value": "n" * 16}},
        {"id": "prov-off", "name": "O", "protocol": "pragmatic-v1", "secret": {"value": "o" * 16},
         "enabled": False},
    ],
    "games": [
        {"id": "vs20doghouse", "provider": "prov-prag", "name": "Dog House"},
        {"id": "nova-starfall", "provider": "prov-nova", "name": "Starfall"},
    ],
})  # fmt: skip
BETA = dataclasses.replace(REF, operator_id="op-beta")
GONE = dataclasses.replace(REF, operator_id="op-gone")


@pytest.mark.parametrize(
    ("ref", "provider", "action", "game", "currency", "expected"),
    [
        (REF, "prov-prag", Action.BET, "vs20doghouse", "EUR", Status.OK),
        (REF, "prov-prag", Action.BALANCE, None, None, Status.OK),
        (REF, "prov-prag", Action.WIN, None, "EUR", Status.OK),  # a promo win: no game
        (REF, "prov-prag", Action.ROLLBACK, None, None, Status.OK),
        (TokenProblem.BAD_MAC, "prov-prag", Action.BET, "vs20doghouse", "EUR",
         Status.SESSION_NOT_FOUND),
        (REF, "prov-nova", Action.BET, "nova-starfall", "EUR", Status.SESSION_NOT_FOUND),
        (GONE, "prov-prag", Action.BET, "vs20doghouse", "EUR", Status.SESSION_NOT_FOUND),
        (BETA, "prov-prag", Action.BET, "vs20doghouse", "EUR", Status.GAME_NOT_ALLOWED),
        (REF, "prov-prag", Action.BET, None, "EUR", Status.GAME_NOT_ALLOWED),
        (REF, "prov-prag", Action.BET, "nova-starfall", "EUR", Status.GAME_NOT_ALLOWED),
        (REF, "prov-prag", Action.WIN, "no-such-game", "EUR", Status.GAME_NOT_ALLOWED),
        (REF, "prov-prag", Action.BET, "vs20doghouse", "USD", Status.CURRENCY_MISMATCH),
        (dataclasses.replace(REF, provider_id="prov-off"), "prov-off", Action.BET,
         "vs20doghouse", "EUR", Status.GAME_NOT_ALLOWED),
    ],
)  # fmt: skip
def test_player_ref_status(
    ref: PlayerRef | TokenProblem,
    provider: str,
    action: Action,
    game: str | None,
    currency: str | None,
    expected: Status,
) -> None:
    status = player_ref_status(TENANTS, ref, provider_id=provider, action=action, game_id=game,
                               currency=currency)  # fmt: skip
    assert status is expected
