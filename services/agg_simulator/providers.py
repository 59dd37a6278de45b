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
from agg_domain.statuses import Status
from agg_ingress.adapters import hub88
from agg_ingress.client import encode_body
from agg_ingress.client import signed_headers as canonical_headers
from agg_ingress.protocol import Callback

DEV_KEYS = Path("deploy/local/keys")
"""Where the local stack's development provider keys are (``<provider>-provider.key.pem``
signs a simulated provider's requests)."""


@dataclass(frozen=True)
class Answer:
    """A protocol's answer read as canonical: the status, the balance in minor units."""

    status: str
    balance: int | None = None


class ProviderClient(Protocol):
    protocol: str

    def encode(self, cb: Callback) -> tuple[str, bytes, dict[str, str]]:
        """The request for ``cb``: path below ``/v1/providers/{id}/``, body, headers."""
        ...

    def decode(self, http: int, body: bytes) -> Answer:
        """The answer as canonical; ``RETRY_LATER`` where the protocol says "try again"."""
        ...


class CanonicalClient:
    protocol = "canonical-v1"

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
        }
        fields.update({k: v for k, v in optional.items() if v is not None})
        if cb.transaction_id is not None:
            fields["round_closed"] = cb.round_closed
        path = f"wallet/{cb.action.value.lower()}"
        body = encode_body(fields)
        full = f"/v1/providers/{self.provider_id}/{path}"
        return path, body, canonical_headers(self.secret, "POST", full, body)

    def decode(self, http: int, body: bytes) -> Answer:
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

    def __init__(self, private_key: Any):
        self.private_key = private_key

    def encode(self, cb: Callback) -> tuple[str, bytes, dict[str, str]]:
        return hub88.encode_request(cb, self.private_key)

    def decode(self, http: int, body: bytes) -> Answer:
        if http == 503:
            return Answer(Status.RETRY_LATER)
        try:
            answer = hub88.decode_answer(body)
        except ValueError:
            return Answer(f"HTTP_{http}")
        status = _HUB88_CANONICAL.get(str(answer.get("status")), str(answer.get("status")))
        return Answer(status, answer.get("balance_minor"))


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
    return None
