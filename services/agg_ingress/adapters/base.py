"""What every provider protocol adapter is: a pure translator between one wire protocol and
the canonical callback and answer.

The ingress has one core path for every protocol: the adapter parses and authenticates the
wire request into a :class:`~agg_ingress.protocol.Callback` (or refuses it), the core checks
the session, forwards the callback and waits for its outcome, and the adapter renders the
canonical :class:`Result` in its own format. An adapter does no I/O and keeps no state: it
gets the request's bytes, the provider's credentials and the time, and returns values.

A refusal carries the canonical status that describes it (``INVALID_REQUEST`` for a body the
protocol does not accept, ``INVALID_SIGNATURE`` for a failed authentication, ...) and is
rendered by the same adapter, so a provider always gets its own protocol's error format,
never ours.

The exact amount conversions live in :mod:`agg_domain.amounts` (the operator-wallet
protocols use them too) and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from agg_domain.amounts import InexactAmount as InexactAmount
from agg_domain.amounts import decimal_to_minor as decimal_to_minor
from agg_domain.amounts import minor_to_decimal as minor_to_decimal
from agg_domain.amounts import minor_to_scaled as minor_to_scaled
from agg_domain.amounts import scaled_to_minor as scaled_to_minor
from agg_domain.statuses import Status
from agg_ingress.launch import LaunchParams
from agg_ingress.protocol import Callback, Refusal


@dataclass(frozen=True)
class WireRequest:
    """A provider's HTTP request as it arrived."""

    method: str
    path: str
    """The path below ``/v1/providers/{provider_id}/`` (no leading slash), without the query."""
    query: str
    headers: Mapping[str, str]
    """Names in lower case."""
    body: bytes
    raw_path: str = ""
    """The whole path and query string as the client sent them (what some protocols sign)."""


@dataclass(frozen=True)
class WireResponse:
    http: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Credentials:
    """What a provider authenticates with, resolved once at start (from the tenants file)."""

    secret: bytes | None = None
    """A shared secret (HMAC, MD5 hash protocols)."""
    public_key: Any = None
    """The provider's public key (RSA-signed protocols), loaded."""
    signing_key: Any = None
    """Our private key for signing answers, where the protocol signs them."""


@dataclass(frozen=True)
class Accepted:
    """A request read as a canonical callback; ``context`` is what the adapter needs to
    render the answer (the wire's own ids and names, echoed back)."""

    callback: Callback
    context: Any = None


@dataclass(frozen=True)
class Refused:
    """A request refused before the core sees it: nothing is published."""

    status: Status | Refusal
    reason: str
    context: Any = None


@dataclass(frozen=True)
class Result:
    """The canonical answer to a callback, for the adapter to render."""

    status: Status | Refusal
    currency: str | None
    balance: int | None = None
    """Minor units of ``currency``."""
    transaction_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ProviderAdapter(Protocol):
    protocol: str
    """The tenants file's ``protocol`` value that selects this adapter."""

    def parse(
        self, request: WireRequest, credentials: Credentials, now_s: float
    ) -> Accepted | Refused:
        """Authenticate and read ``request``."""
        ...

    def launch_query(self, params: LaunchParams) -> list[tuple[str, str]]:
        """The query parameters of the provider's game URL for a launch, in the protocol's
        names (:mod:`agg_ingress.launch`)."""
        ...

    def render(self, context: Any, result: Result, credentials: Credentials) -> WireResponse:
        """The answer to an accepted request (``context`` from :class:`Accepted`) or to a
        refused one (``context`` from :class:`Refused`, possibly None), signed where the
        protocol signs answers."""
        ...
