"""The simulated providers' side of each wire protocol: a canonical callback encoded as that
protocol's request (path, body, signed headers) and its answer read back as a canonical
status and balance, so that ``aggregator simulate`` plays the same rounds through every
protocol of the tenants file and checks the money the same way.

Each client uses the protocol adapter's own provider-side helpers
(``agg_ingress.adapters.*.encode_request`` / ``decode_answer``): the simulator is a provider
of that protocol, not a second implementation of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agg_config.paths import repo_root
from agg_config.tenants import Provider
from agg_domain.statuses import Action, Status, WinKind
from agg_ingress.adapters import evolution, hub88, pragmatic
from agg_ingress.client import encode_body
from agg_ingress.client import signed_headers as canonical_headers
from agg_ingress.protocol import Callback

DEV_KEYS = Path("deploy/local/keys")
"""Where the local stack's development provider keys are (``<provider>-provider.key.pem``
signs a simulated provider's requests)."""


@dataclass(frozen=True)
class Answer:
    """A protocol's answer read as canonical: the status, the balance in minor units, and
    the player reference a protocol that names players by one answered (``userId``)."""

    status: str
    balance: int | None = None
    player_ref: str | None = None


class ProviderClient(Protocol):
    protocol: str
    opening: Action | None
    """The call a session starts with in this protocol (pragmatic's ``authenticate``,
    evolution's ``check``), or None when the first money call needs none."""

    def encode(self, cb: Callback) -> tuple[str, bytes, dict[str, str]]:
        """The request for ``cb``: path below ``/v1/providers/{id}/``, body, headers."""
        ...

    def decode(self, http: int, body: bytes, currency: str) -> Answer:
        """The answer as canonical; ``RETRY_LATER`` where the protocol says "try again"
        (``currency``: the session's, which a protocol's balance may be read in)."""
        ...

    def forwarded_id(self, cb: Callback) -> str | None:
        """The transaction id the adapter forwards for ``cb`` (the id the saga and the wallet
        know it by: the money model keys its transactions by it)."""
        ...

    def end_of_round(self, round_id: str) -> str | None:
        """The transaction id of the separate call that closes a settled round in this
        protocol (a win of 0, pragmatic's ``endRound``), or None where the win closes it."""
        ...


class CanonicalClient:
    protocol = "canonical-v1"
    opening: Action | None = None

    def __init__(self, provider_id: str, secret: bytes):
        self.provider_id = provider_id
        self.secret = secret

    def encode(self, cb: Callback) -> tuple[str, bytes, dict[str, str]]:
        fields: dict[str, Any] = {
            "request_id": cb.request_id,
            "session_token": cb.session_token,
            "player_id": cb.player_id,
        }
        optional = {
            "currency": cb.currency,
            "transaction_id": cb.transaction_id,
            "reference_transaction_id": cb.reference_transaction_id,
            "round_id": cb.round_id,
            "game_id": cb.game_id,
            "amount": cb.amount,
            "campaign_id": cb.campaign_id,
        }
        fields.update({k: v for k, v in optional.items() if v is not None})
        if cb.action is Action.WIN and cb.win_kind is not WinKind.REGULAR:
            fields["win_kind"] = cb.win_kind.value
        if cb.transaction_id is not None:
            fields["round_closed"] = cb.round_closed
        path = f"wallet/{cb.action.value.lower()}"
        body = encode_body(fields)
        full = f"/v1/providers/{self.provider_id}/{path}"
        return path, body, canonical_headers(self.secret, "POST", full, body)

    def forwarded_id(self, cb: Callback) -> str | None:
        return cb.transaction_id

    def end_of_round(self, round_id: str) -> str | None:
        return None

    def decode(self, http: int, body: bytes, currency: str = "") -> Answer:
        try:
            answer = json.loads(body)
        except ValueError:
            return Answer(Status.RETRY_LATER if http == 503 else f"HTTP_{http}")
        if http == 503:
            return Answer(Status.RETRY_LATER)
        balance = answer.get("balance")
        return Answer(str(answer.get("status")), balance if isinstance(balance, int) else None)


_HUB88_CANONICAL: dict[str, str] = {}
for _status, _wire in hub88.STATUS.items():
    _HUB88_CANONICAL.setdefault(_wire, str(_status))


class Hub88Client:
    protocol = "hub88-v1"
    opening: Action | None = None

    def __init__(self, private_key: Any):
        self.private_key = private_key

    def encode(self, cb: Callback) -> tuple[str, bytes, dict[str, str]]:
        return hub88.encode_request(cb, self.private_key)

    def forwarded_id(self, cb: Callback) -> str | None:
        return cb.transaction_id

    def end_of_round(self, round_id: str) -> str | None:
        return None

    def decode(self, http: int, body: bytes, currency: str = "") -> Answer:
        if http == 503:
            return Answer(Status.RETRY_LATER)
        try:
            answer = hub88.decode_answer(body)
        except ValueError:
            return Answer(f"HTTP_{http}")
        status = _HUB88_CANONICAL.get(str(answer.get("status")), str(answer.get("status")))
        return Answer(status, answer.get("balance_minor"))


_PRAGMATIC_CANONICAL: dict[int, str] = {}
for _status, _code in pragmatic.ERROR.items():
    _PRAGMATIC_CANONICAL.setdefault(_code, str(_status))


class PragmaticClient:
    """``pragmatic-v1``: a session starts with ``authenticate`` (the only call with our
    session token); every later call names the player by the ``userId`` it answered, which
    :func:`agg_simulator.clients.send` puts in the callback as ``player_ref``. A rollback is
    a ``refund`` of the bet's ``reference``, forwarded as ``rf:`` + reference; a settled
    round is closed by ``endRound``."""

    protocol = pragmatic.PROTOCOL
    opening: Action | None = Action.AUTHENTICATE

    def __init__(self, secret: bytes):
        self.secret = secret

    def encode(self, cb: Callback) -> tuple[str, bytes, dict[str, str]]:
        return pragmatic.encode_request(cb, self.secret)

    def forwarded_id(self, cb: Callback) -> str | None:
        method = pragmatic.method_of(cb)
        if method == pragmatic.Method.REFUND:
            return pragmatic.PREFIX[method] + (cb.reference_transaction_id or "")
        return cb.transaction_id

    def end_of_round(self, round_id: str) -> str | None:
        """``result`` settles a round without closing it; ``endRound`` closes it (a win of 0
        under ``er:`` + roundId)."""
        return pragmatic.PREFIX[pragmatic.Method.END_ROUND] + round_id

    def decode(self, http: int, body: bytes, currency: str = "") -> Answer:
        if http == 503:
            return Answer(Status.RETRY_LATER)
        try:
            answer = pragmatic.decode_answer(body)
        except ValueError:
            return Answer(f"HTTP_{http}")
        code = answer.get("error")
        status = _PRAGMATIC_CANONICAL.get(code, f"ERROR_{code}") if isinstance(code, int) else (
            f"HTTP_{http}")  # fmt: skip
        user_id = answer.get("userId")
        return Answer(status, answer.get("cash_minor"),
                      user_id if isinstance(user_id, str) else None)  # fmt: skip


_EVOLUTION_CANONICAL: dict[str, str] = {}
for _status, _wire in (*evolution.STATUS.items(), *evolution.DEBIT_STATUS.items()):
    _EVOLUTION_CANONICAL.setdefault(_wire, str(_status))


class EvolutionClient:
    """``evolution-v1``: a session starts with ``check`` of the ``sid`` (our session token,
    sent on every call); bets are named by ``refId`` (the canonical BET's id), a credit and
    a cancel name their bet by it and are forwarded as ``<refId>:credit`` and
    ``<refId>:cancel``; a cancel repeats the bet's amount. A zero-stake win (a jackpot, a
    promotion's prize: no bet, id ``promo:<id>``) is a ``promo_payout``, forwarded under its
    own id."""

    protocol = evolution.PROTOCOL
    opening: Action | None = Action.AUTHENTICATE

    def __init__(self, auth_token: str):
        self.auth_token = auth_token

    def encode(self, cb: Callback) -> tuple[str, bytes, dict[str, str]]:
        return evolution.encode_request(cb, self.auth_token)

    def forwarded_id(self, cb: Callback) -> str | None:
        if evolution.is_promo(cb):
            return cb.transaction_id
        if cb.action is Action.WIN:
            return evolution.bet_reference(cb) + evolution.CREDIT_SUFFIX
        if cb.action is Action.ROLLBACK:
            return evolution.bet_reference(cb) + evolution.CANCEL_SUFFIX
        return cb.transaction_id

    def end_of_round(self, round_id: str) -> str | None:
        return None  # a credit closes the round

    def decode(self, http: int, body: bytes, currency: str = "") -> Answer:
        if http == 503:
            return Answer(Status.RETRY_LATER)
        try:
            answer = evolution.decode_answer(body, currency or None)
        except ValueError:
            return Answer(f"HTTP_{http}")
        wire = str(answer.get("status"))
        return Answer(_EVOLUTION_CANONICAL.get(wire, wire), answer.get("balance_minor"))


def provider_key_file(provider_id: str) -> Path:
    return repo_root() / DEV_KEYS / f"{provider_id}-provider.key.pem"


def client_for(provider: Provider) -> ProviderClient | None:
    """The simulated provider's client, or None when the simulator cannot speak for it (a
    protocol without a client here, or an RSA provider without a development key file)."""
    if provider.protocol == "canonical-v1" and provider.secret is not None:
        return CanonicalClient(provider.id, provider.shared_secret())
    if provider.protocol == "hub88-v1":
        key_file = provider_key_file(provider.id)
        if not key_file.is_file():
            return None
        return Hub88Client(hub88.load_private_key(key_file.read_text()))
    if provider.protocol == pragmatic.PROTOCOL and provider.secret is not None:
        return PragmaticClient(provider.shared_secret())
    if provider.protocol == evolution.PROTOCOL and provider.secret is not None:
        return EvolutionClient(provider.shared_secret().decode())
    return None
