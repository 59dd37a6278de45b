"""How the traffic simulator talks to the ingress: the operator API that opens sessions, and
one client per provider wire protocol that builds, signs and sends a callback and reads the
answer back as a canonical status and balance.

Every callback of a run goes through :meth:`ProviderClient.send` (the simulator's game logic
speaks only :class:`Call`, the canonical fields); a protocol is added by writing its client
and listing it in :data:`PROVIDER_CLIENTS`. Providers whose protocol has no client here are
left out of a run, with their games.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from agg_config.tenants import Operator, Provider
from agg_ingress.client import encode_body, signed_headers


@dataclass(frozen=True)
class Session:
    """A player's session at one game, as the operator API opened it."""

    operator: str
    player: str
    currency: str
    game: str
    provider: str
    token: str


@dataclass(frozen=True)
class Call:
    """One provider callback in canonical terms (``action``: bet, win, rollback, balance)."""

    action: str
    transaction_id: str | None = None
    round_id: str | None = None
    amount: int | None = None
    round_closed: bool | None = None
    reference_transaction_id: str | None = None


@dataclass(frozen=True)
class Answer:
    """The ingress's answer: the HTTP status, the canonical status (``HTTP_<code>`` when the
    body has none) and the balance when it gave one."""

    http_status: int
    status: str
    balance: int | None = None


class ProviderClient(Protocol):
    protocol: str

    async def send(
        self, http: httpx.AsyncClient, session: Session, call: Call, request_id: str
    ) -> Answer:
        """Send ``call`` for ``session``; raises only what the HTTP client raises."""
        ...


def _answer(response: httpx.Response) -> Answer:
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("status"), str):
        return Answer(response.status_code, f"HTTP_{response.status_code}")
    balance = body.get("balance")
    return Answer(
        response.status_code, body["status"], balance if isinstance(balance, int) else None
    )


class CanonicalV1Client:
    """canonical-v1: JSON bodies signed with the provider's shared secret (HMAC-SHA256 of
    timestamp, method, path and body; ``agg_ingress.client``), one path per action."""

    protocol = "canonical-v1"

    def __init__(self, provider: Provider):
        self.provider_id = provider.id
        self._secret = provider.shared_secret()

    async def send(
        self, http: httpx.AsyncClient, session: Session, call: Call, request_id: str
    ) -> Answer:
        fields: dict[str, Any] = {
            "request_id": request_id,
            "session_token": session.token,
            "player_id": session.player,
            "currency": session.currency,
            "game_id": session.game,
        }
        for name in ("transaction_id", "round_id", "amount", "round_closed",
                     "reference_transaction_id"):  # fmt: skip
            value = getattr(call, name)
            if value is not None:
                fields[name] = value
        path = f"/v1/providers/{self.provider_id}/wallet/{call.action}"
        body = encode_body(fields)
        response = await http.post(
            path, content=body, headers=signed_headers(self._secret, "POST", path, body)
        )
        return _answer(response)


PROVIDER_CLIENTS: dict[str, Callable[[Provider], ProviderClient]] = {
    CanonicalV1Client.protocol: CanonicalV1Client,
}
"""The simulator's client of each provider protocol, by the protocol's name in the tenants
file."""


async def open_session(
    http: httpx.AsyncClient, operator: Operator, player: str, currency: str, game: str,
    provider: str,
) -> Session:  # fmt: skip
    """A real-money session through the operator API (RuntimeError when refused)."""
    path = f"/v1/operators/{operator.id}/sessions"
    body = encode_body({"player_id": player, "currency": currency, "country": "MT",
                        "game_id": game, "mode": "real"})  # fmt: skip
    response = await http.post(
        path, content=body, headers=signed_headers(operator.secret.reveal(), "POST", path, body)
    )
    if response.status_code != 201:
        raise RuntimeError(f"opening a session failed: {response.status_code} {response.text}")
    token = response.json()["session_token"]
    return Session(operator.id, player, currency, game, provider, token)
