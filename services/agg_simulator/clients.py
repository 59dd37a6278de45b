"""Where the traffic simulator talks to the ingress: the operator API that opens sessions,
and :func:`send`, the one place a provider callback is built, sent and its answer read.

The game logic (``agg_simulator.run``) says what a round does in canonical terms
(:class:`Call`); :func:`send` makes it the session's canonical callback, has the provider's
protocol client (``agg_simulator.providers``: one per wire protocol, on the adapters' own
provider-side helpers) encode and sign it, posts it, and reads the answer back as a
canonical status and balance. A protocol is added there, in ``providers.client_for``;
providers the simulator cannot speak for are left out of a run, with their games.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import httpx

from agg_config.tenants import Operator
from agg_domain.statuses import Action, WinKind
from agg_ingress.client import encode_body, signed_headers
from agg_ingress.protocol import Callback
from agg_simulator.providers import ProviderClient


@dataclass(frozen=True)
class Session:
    """A player's session at one game, as the operator API opened it."""

    operator: str
    player: str
    currency: str
    game: str
    provider: str
    token: str
    player_ref: str | None = None
    """The reference a protocol that names players by one answered when the session started
    (pragmatic's ``userId``), sent in every later call."""


@dataclass(frozen=True)
class Call:
    """One provider callback of a round, in canonical terms."""

    action: Action
    transaction_id: str | None = None
    round_id: str | None = None
    amount: int | None = None
    round_closed: bool = False
    reference_transaction_id: str | None = None
    win_kind: WinKind = WinKind.REGULAR
    """For a win: a jackpot's or a promotion's (zero-stake credits), or a free spin's."""
    campaign_id: str | None = None
    """For a bet: the free-spin campaign it is a spin of; for a win: the campaign it pays."""


@dataclass(frozen=True)
class Answer:
    """The ingress's answer: the HTTP status (503: the same request is sent again), the
    canonical status, the balance when it gave one, and the transaction id the protocol's
    adapter forwarded the call under (evolution's ``<refId>:credit``, pragmatic's ``rf:``
    + reference: the id the wallet knows it by)."""

    http_status: int
    status: str
    balance: int | None = None
    transaction_id: str | None = None


def callback_of(session: Session, call: Call, request_id: str) -> Callback:
    return Callback(
        call.action, request_id, session.token, session.player,
        transaction_id=call.transaction_id,
        reference_transaction_id=call.reference_transaction_id, round_id=call.round_id,
        game_id=session.game, amount=call.amount, currency=session.currency,
        round_closed=call.round_closed, player_ref=session.player_ref,
        win_kind=call.win_kind, campaign_id=call.campaign_id,
    )  # fmt: skip


async def send(
    http: httpx.AsyncClient, client: ProviderClient, session: Session, call: Call,
    request_id: str,
) -> Answer:  # fmt: skip
    """``call`` for ``session`` in the provider's protocol; raises only what the HTTP
    client raises."""
    callback = callback_of(session, call, request_id)
    path, body, headers = client.encode(callback)
    response = await http.post(f"/v1/providers/{session.provider}/{path}", content=body,
                               headers=headers)  # fmt: skip
    answer = client.decode(response.status_code, response.content, session.currency)
    return Answer(response.status_code, answer.status, answer.balance,
                  client.forwarded_id(callback))  # fmt: skip


async def start_session(
    http: httpx.AsyncClient, client: ProviderClient, session: Session, request_id: str
) -> Session:
    """The protocol's session step, where it has one (pragmatic's ``authenticate``, whose
    ``userId`` later calls name the player by; evolution's ``check`` of the sid): the
    session as later calls need it (RuntimeError when refused)."""
    if client.opening is None:
        return session
    callback = callback_of(session, Call(client.opening), request_id)
    path, body, headers = client.encode(callback)
    response = await http.post(f"/v1/providers/{session.provider}/{path}", content=body,
                               headers=headers)  # fmt: skip
    answer = client.decode(response.status_code, response.content, session.currency)
    if answer.status != "OK":
        raise RuntimeError(f"{client.protocol} session step refused: {answer.status}")
    return replace(session, player_ref=answer.player_ref or session.player_ref)


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


async def grant_campaign(http: httpx.AsyncClient, operator: Operator, player: str,
                         body: dict[str, object]) -> int:  # fmt: skip
    """A free-spin campaign through the operator API: its spins left (RuntimeError when
    refused)."""
    path = f"/v1/operators/{operator.id}/players/{player}/campaigns"
    raw = encode_body(body)
    response = await http.post(
        path, content=raw, headers=signed_headers(operator.secret.reveal(), "POST", path, raw)
    )
    if response.status_code != 200:
        raise RuntimeError(f"granting a campaign failed: {response.status_code} {response.text}")
    return int(response.json()["spins_left"])


async def state_controls(http: httpx.AsyncClient, operator: Operator, player: str,
                         change_id: str, controls: dict[str, object]) -> None:  # fmt: skip
    """A player's responsible-gaming controls through the operator API (RuntimeError when
    refused)."""
    path = f"/v1/operators/{operator.id}/players/{player}/controls"
    body = encode_body({"change_id": change_id, "actor": "simulator", **controls})
    response = await http.post(
        path, content=body, headers=signed_headers(operator.secret.reveal(), "POST", path, body)
    )
    if response.status_code != 200:
        raise RuntimeError(f"stating controls failed: {response.status_code} {response.text}")
