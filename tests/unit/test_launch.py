"""Game launch (:mod:`agg_ingress.launch`): refusal precedence, the URL a provider gets."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agg_config.tenants import Game, Provider
from agg_ingress.adapters.canonical import CanonicalAdapter
from agg_ingress.adapters.hub88 import Hub88Adapter
from agg_ingress.adapters.pragmatic import PragmaticAdapter
from agg_ingress.launch import (
    LaunchParams,
    default_launch_query,
    game_url,
    launch_json,
    launch_page,
    launch_refusal,
)
from agg_ingress.sessions import SessionClaims, TokenCheck, TokenProblem

CLAIMS = SessionClaims("ses-1", "op-a", "pl-1", "EUR", "DE", "g-1", "prov-a", "demo", 0, 10)
PROVIDER = Provider(id="prov-a", name="A", secret={"value": "x" * 16})
GAME = Game(id="g-1", provider="prov-a", name="Game <One>", code="g_one")
PARAMS = LaunchParams("tok", "op-a", "pl-1", "g_one", "EUR", "DE", "en", "demo",
                      "https://c.example/lobby", "https://c.example/pay")  # fmt: skip


@pytest.mark.parametrize(
    ("check", "provider", "game", "path", "expected"),
    [
        (TokenCheck(None, problem=TokenProblem.BAD_MAC), PROVIDER, GAME, ("prov-a", "g-1"),
         (404, "SESSION_NOT_FOUND")),
        (TokenCheck(CLAIMS, expired=True, expired_for_ms=1), PROVIDER, GAME, ("prov-a", "g-1"),
         (410, "SESSION_EXPIRED")),
        (TokenCheck(CLAIMS), None, GAME, ("prov-x", "g-1"), (404, "UNKNOWN_GAME")),
        (TokenCheck(CLAIMS), PROVIDER.model_copy(update={"enabled": False}), GAME,
         ("prov-a", "g-1"), (404, "UNKNOWN_GAME")),
        (TokenCheck(CLAIMS), PROVIDER, None, ("prov-a", "g-x"), (404, "UNKNOWN_GAME")),
        (TokenCheck(CLAIMS), PROVIDER, GAME.model_copy(update={"id": "g-2"}), ("prov-a", "g-2"),
         (403, "GAME_NOT_ALLOWED")),
        (TokenCheck(CLAIMS), PROVIDER, GAME, ("prov-a", "g-1"), None),
    ],
)  # fmt: skip
def test_refusals_in_precedence_order(
    check: TokenCheck, provider: Provider | None, game: Game | None, path: tuple[str, str],
    expected: tuple[int, str] | None,
) -> None:  # fmt: skip
    refusal = launch_refusal(check, provider, game, *path)
    assert (None if refusal is None else (refusal.http, refusal.status)) == expected


def test_each_protocol_names_the_launch_its_own_way() -> None:
    assert CanonicalAdapter(300).launch_query(PARAMS) == default_launch_query(PARAMS) == [
        ("token", "tok"), ("player_id", "pl-1"), ("game", "g_one"), ("currency", "EUR"),
        ("language", "en"), ("mode", "demo"), ("lobby_url", "https://c.example/lobby"),
        ("cashier_url", "https://c.example/pay"),
    ]  # fmt: skip
    hub = dict(Hub88Adapter().launch_query(PARAMS))
    assert hub == {"token": "tok", "user": "pl-1", "game_code": "g_one", "currency": "EUR",
                   "lang": "en", "country": "DE", "platform": "GPL_DESKTOP",
                   "lobby_url": "https://c.example/lobby",
                   "deposit_url": "https://c.example/pay", "demo": "true"}  # fmt: skip
    assert dict(PragmaticAdapter().launch_query(PARAMS)) == {
        "token": "tok", "symbol": "g_one", "technology": "H5", "platform": "WEB",
        "language": "en", "currency": "EUR", "lobbyUrl": "https://c.example/lobby",
        "cashierUrl": "https://c.example/pay", "demo": "true",
    }  # fmt: skip
    real = Hub88Adapter().launch_query(LaunchParams("t", "o", "p", "g", "EUR", "DE", "en", "real"))
    assert "demo" not in dict(real) and "lobby_url" not in dict(real)


@given(
    base_query=st.lists(st.tuples(st.text(min_size=1), st.text()), max_size=3),
    query=st.lists(st.tuples(st.text(min_size=1), st.text()), max_size=5),
)
def test_game_url_keeps_the_providers_query_first_and_encodes_ours(
    base_query: list[tuple[str, str]], query: list[tuple[str, str]]
) -> None:
    from urllib.parse import urlencode

    base = "https://games.example/start" + (f"?{urlencode(base_query)}" if base_query else "")
    url = urlsplit(game_url(base, query))
    assert (url.scheme, url.netloc, url.path) == ("https", "games.example", "/start")
    assert parse_qsl(url.query, keep_blank_values=True) == base_query + query


def test_the_simulated_launch_never_repeats_the_token_and_escapes_names() -> None:
    body = launch_json(PARAMS, GAME, PROVIDER, "canonical-v1", default_launch_query(PARAMS))
    assert b"tok" not in body.replace(b"token", b"")
    page = launch_page(PARAMS, GAME, PROVIDER).decode()
    assert "Game &lt;One&gt;" in page and "<One>" not in page
    assert "demo balance" in page and 'href="https://c.example/lobby"' in page
