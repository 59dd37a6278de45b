"""Exact conversions between integer minor units and the other ways wire protocols write
amounts: integers at a finer scale (units of ``10**-n`` of the major unit) and decimal
strings. A value that is no whole number of minor units is refused with
:class:`InexactAmount`, never rounded.

Shared by the provider protocol adapters of the ingress and the operator-wallet protocols of
the bridge, so both sides of the aggregator convert the same way.
"""

from __future__ import annotations

from agg_domain.currency import is_currency, minor_unit_exponent


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
