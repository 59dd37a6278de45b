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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from agg_domain.currency import is_currency, minor_unit_exponent
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


# --- exact amount conversions ------------------------------------------------------------


class InexactAmount(ValueError):
    """A wire amount that is no whole number of minor units (never rounded)."""


def _pow10(n: int) -> int:
    return int(10**n)


def scaled_to_minor(value: int, scale_exponent: int, currency: str) -> int:
    """``value`` in units of ``10**-scale_exponent`` of ``currency``'s major unit, as minor
    units; :class:`InexactAmount` when it is not a whole number of them."""
    exponent = minor_unit_exponent(currency)
    if scale_exponent >= exponent:
        factor = _pow10(scale_exponent - exponent)
        minor, rest = divmod(value, factor)
        if rest:
            raise InexactAmount(f"{value} is not a whole number of {currency} minor units")
        return minor
    return value * _pow10(exponent - scale_exponent)


def minor_to_scaled(minor: int, scale_exponent: int, currency: str) -> int:
    """The reverse of :func:`scaled_to_minor` (exact when the scale is at least as fine as
    the minor unit; else :class:`InexactAmount`)."""
    exponent = minor_unit_exponent(currency)
    if scale_exponent >= exponent:
        return minor * _pow10(scale_exponent - exponent)
    factor = _pow10(exponent - scale_exponent)
    value, rest = divmod(minor, factor)
    if rest:
        raise InexactAmount(f"{minor} {currency} minor units do not fit the wire's scale")
    return value


def decimal_to_minor(text: str, currency: str, places_max: int | None = None) -> int:
    """A decimal string (``12.50``) as minor units of ``currency``, exactly: at most the
    currency's decimal places (or ``places_max``) of which the extra ones must be zeros;
    no sign, exponent, spaces or leading ``+``. :class:`InexactAmount` or ``ValueError``."""
    if not is_currency(currency):
        raise ValueError(f"{currency!r}: not an ISO 4217 currency")
    whole, dot, fraction = text.partition(".")
    if (
        not whole.isascii()
        or not whole.isdigit()
        or (dot and not fraction)
        or (fraction and (not fraction.isascii() or not fraction.isdigit()))
    ):
        raise ValueError(f"{text[:40]!r}: not a decimal amount")
    if places_max is not None and len(fraction) > places_max:
        raise ValueError(f"{text[:40]!r}: more than {places_max} decimal places")
    exponent = minor_unit_exponent(currency)
    kept, dropped = fraction[:exponent], fraction[exponent:]
    if dropped.strip("0"):
        raise InexactAmount(f"{text[:40]} is not a whole number of {currency} minor units")
    return int(whole) * _pow10(exponent) + int(kept.ljust(exponent, "0") or "0")


def minor_to_decimal(minor: int, currency: str, places: int | None = None) -> str:
    """Minor units as a decimal string with the currency's places (or ``places``, which must
    not be fewer)."""
    exponent = minor_unit_exponent(currency)
    places = exponent if places is None else places
    if places < exponent:
        raise InexactAmount(f"{currency} needs {exponent} decimal places")
    sign = "-" if minor < 0 else ""
    whole, fraction = divmod(abs(minor), _pow10(exponent))
    if places == 0:
        return f"{sign}{whole}"
    digits = str(fraction).rjust(exponent, "0") if exponent else ""
    return f"{sign}{whole}.{digits.ljust(places, '0')}"
