"""Game launch: the operator API's ``launch_url`` answered by the ingress.

An operator opens a session (``POST /v1/operators/{id}/sessions``) and sends the player's
browser to the ``launch_url`` it gets back::

    GET /v1/launch/{provider_id}/{game_id}?session_token=...&language=en&return_url=...

The ingress checks the token (authentic, not expired, naming this provider and game), then
answers with a redirect (302) to the provider's game URL, built by the provider's protocol
adapter from the provider's ``game_url`` in the tenants file: the session token as the
protocol names it (``token``, ``sid``, ...), the provider's game code, language, currency,
lobby and cashier URLs and the demo flag. A provider without a ``game_url`` (the local
simulated ones) gets no redirect: the ingress answers the same launch as JSON (``Accept:
application/json``) or as a small HTML page that shows it.

Demo play is decided by the session, not by the URL: a demo session's token carries
``mode: demo`` and every callback made with it plays against the demo balance, never the
operator's wallet (``docs/saga.md``); the ``mode`` in the URL is only what the game shows.

Everything here is pure: the handler in :mod:`agg_ingress.app` passes the verified claims.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from agg_config.tenants import Game, Provider
from agg_domain.statuses import Status
from agg_ingress.sessions import SessionClaims, TokenCheck

LAUNCH_PATH = "/v1/launch/{provider_id}/{game_id}"


@dataclass(frozen=True)
class LaunchParams:
    """What a provider's game needs to start, in our names (an adapter renames them)."""

    token: str
    operator_id: str
    player_id: str
    game_code: str
    """The provider's own name for the game (the tenants file's ``code``, else its id)."""
    currency: str
    country: str
    language: str
    mode: str
    lobby_url: str | None = None
    cashier_url: str | None = None


def default_launch_query(params: LaunchParams) -> list[tuple[str, str]]:
    """The query a canonical-v1 game URL gets (``docs/providers.md``)."""
    query = [
        ("token", params.token),
        ("player_id", params.player_id),
        ("game", params.game_code),
        ("currency", params.currency),
        ("language", params.language),
        ("mode", params.mode),
    ]
    if params.lobby_url:
        query.append(("lobby_url", params.lobby_url))
    if params.cashier_url:
        query.append(("cashier_url", params.cashier_url))
    return query


def game_url(base: str, query: list[tuple[str, str]]) -> str:
    """``base`` with ``query`` added to whatever query it already has (kept first)."""
    parts = urlsplit(base)
    kept = parse_qsl(parts.query, keep_blank_values=True)
    return urlunsplit(parts._replace(query=urlencode(kept + query)))


@dataclass(frozen=True)
class LaunchRefusal:
    http: int
    status: str
    detail: str


def launch_refusal(
    check: TokenCheck, provider: Provider | None, game: Game | None, provider_id: str,
    game_id: str,
) -> LaunchRefusal | None:  # fmt: skip
    """Why this launch is refused, in precedence order; None when the game may start."""
    claims = check.claims
    if claims is None:
        return LaunchRefusal(404, Status.SESSION_NOT_FOUND, "no such session")
    if check.expired:
        return LaunchRefusal(410, Status.SESSION_EXPIRED, "the session has expired")
    if provider is None or not provider.enabled or game is None or game.provider != provider.id:
        return LaunchRefusal(404, "UNKNOWN_GAME", "no such game of this provider")
    if claims.provider_id != provider_id or claims.game_id != game_id:
        return LaunchRefusal(403, Status.GAME_NOT_ALLOWED, "the session is for another game")
    return None


def launch_params(
    token: str, claims: SessionClaims, game: Game, language: str | None,
    lobby_url: str | None, cashier_url: str | None,
) -> LaunchParams:  # fmt: skip
    return LaunchParams(
        token=token,
        operator_id=claims.operator_id,
        player_id=claims.player_id,
        game_code=game.code or game.id,
        currency=claims.currency,
        country=claims.country,
        language=language or "en",
        mode=claims.mode,
        lobby_url=lobby_url,
        cashier_url=cashier_url,
    )


def launch_json(params: LaunchParams, game: Game, provider: Provider, protocol: str,
                query: list[tuple[str, str]]) -> bytes:  # fmt: skip
    """The launch of a provider without a game URL, as JSON (the token is not repeated)."""
    fields = asdict(params)
    del fields["token"]
    body = {
        "status": "OK",
        "provider_id": provider.id,
        "protocol": protocol,
        "game_id": game.id,
        "game_name": game.name,
        **fields,
        "provider_query": [name for name, _ in query],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def launch_page(params: LaunchParams, game: Game, provider: Provider) -> bytes:
    """The launch of a provider without a game URL, as a page a person can read."""
    e = html.escape
    demo = params.mode == "demo"
    rows = [
        ("Operator", params.operator_id),
        ("Player", params.player_id),
        ("Currency", params.currency),
        ("Language", params.language),
        ("Mode", "demo (demo balance, no real money)" if demo else "real money"),
    ]
    links = []
    if params.lobby_url:
        links.append(f'<a href="{e(params.lobby_url, quote=True)}">Back to the lobby</a>')
    if params.cashier_url:
        links.append(f'<a href="{e(params.cashier_url, quote=True)}">Cashier</a>')
    table = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(game.name)} · {e(provider.name)}</title></head><body>"
        f"<h1>{e(game.name)}</h1><p>{e(provider.name)} · simulated game "
        f"({e(game.code or game.id)})</p><table>{table}</table>"
        f"<p>{' · '.join(links)}</p></body></html>"
    )
    return page.encode()
