"""The operator API's responsible-gaming controls of a player.

``POST /v1/operators/{operator_id}/players/{player_id}/controls`` states the player's
controls whole (they replace the previous statement; to change one, send all)::

    {"change_id": "rg-2041", "actor": "staff-17",
     "blocked": false,
     "self_excluded": true, "self_excluded_until": "2027-06-01T00:00:00Z",
     "session_time_limit_s": 3600,
     "limits": [{"kind": "loss", "period": "week", "amount": 50000, "currency": "EUR"}]}

Every field but ``change_id`` may be left out (false, none, no limits). ``change_id`` is the
idempotency key per operator and player: a repeat with the same content is answered as the
first time and changes nothing (a later statement stays in force); with other content
``409 DUPLICATE_CONFLICT``. The statement reaches the player's saga in order with the
player's bets: every bet decided after the answer is decided under it. What each control
refuses, and with which rule, is :mod:`agg_domain.limits`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agg_domain.limits import Controls, Limit, LimitKind, Period, limits_text
from agg_ingress.protocol import ID_PATTERN, Invalid, _Fields, _Malformed

FIELDS = frozenset({"change_id", "actor", "blocked", "self_excluded", "self_excluded_until",
                    "session_time_limit_s", "limits"})  # fmt: skip
LIMIT_FIELDS = frozenset({"kind", "period", "amount", "currency"})
MAX_LIMITS = 16
SESSION_TIME_MAX_S = 7 * 24 * 3600


@dataclass(frozen=True)
class ControlsRequest:
    change_id: str
    controls: Controls

    def currencies(self) -> set[str]:
        return {x.currency for x in self.controls.limits}

    def deposit_limits(self) -> bool:
        return any(x.kind is LimitKind.DEPOSIT for x in self.controls.limits)


def _time_ms(value: Any, name: str) -> int:
    if not isinstance(value, str) or len(value) > 40:
        raise _Malformed(f"{name}: an RFC 3339 time with its offset")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _Malformed(f"{name}: an RFC 3339 time with its offset") from None
    if parsed.tzinfo is None:
        raise _Malformed(f"{name}: an RFC 3339 time with its offset")
    return int(parsed.timestamp() * 1000)


def _limit(item: Any, i: int) -> Limit:
    where = f"limits[{i}]"
    if not isinstance(item, dict):
        raise _Malformed(f"{where}: an object")
    unknown = sorted(set(item) - LIMIT_FIELDS)
    if unknown:
        raise _Malformed(f"{where}.{unknown[0]}: not a field of a limit")
    f = _Fields(item)
    kind = f.choice("kind", True, {k.value for k in LimitKind}, "wager, loss or deposit")
    period = f.choice("period", True, {p.value for p in Period}, "day, week or month")
    amount = f.amount("amount", True, 0)
    currency = f.currency("currency", True)
    assert kind is not None and period is not None and amount is not None
    assert currency is not None
    return Limit(LimitKind(kind), Period(period), amount, currency)


def validate_controls(body: dict[str, Any]) -> ControlsRequest | Invalid:
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        return Invalid(f"{unknown[0]}: not a field of a player's controls")
    f = _Fields(body)
    try:
        change_id = f.ident("change_id", True)
        actor = body.get("actor")
        if actor is not None and (not isinstance(actor, str) or not ID_PATTERN.fullmatch(actor)):
            raise _Malformed("actor: 1..64 characters of [A-Za-z0-9_.:-]")
        blocked = f.flag("blocked")
        excluded = f.flag("self_excluded")
        until = body.get("self_excluded_until")
        until_ms = None if until is None else _time_ms(until, "self_excluded_until")
        if until_ms is not None and not excluded:
            raise _Malformed("self_excluded_until: only with self_excluded true")
        session_s = body.get("session_time_limit_s")
        if session_s is not None and (
            type(session_s) is not int or not 1 <= session_s <= SESSION_TIME_MAX_S
        ):
            raise _Malformed(f"session_time_limit_s: seconds, 1..{SESSION_TIME_MAX_S}")
        items = body.get("limits") or []
        if not isinstance(items, list) or len(items) > MAX_LIMITS:
            raise _Malformed(f"limits: a list of at most {MAX_LIMITS} limits")
        limits = tuple(_limit(item, i) for i, item in enumerate(items))
    except _Malformed as exc:
        return Invalid(str(exc))
    assert change_id is not None
    return ControlsRequest(change_id, Controls(
        blocked=blocked, self_excluded=excluded, self_excluded_until_ms=until_ms,
        session_time_limit_ms=None if session_s is None else session_s * 1000,
        limits=limits, actor=actor or "",
    ))  # fmt: skip


def controls_avro(c: Controls) -> dict[str, Any]:
    """The ProviderRequest's ``controls`` record."""
    until = c.self_excluded_until_ms
    return {
        "blocked": c.blocked,
        "self_excluded": c.self_excluded,
        "self_excluded_until": None if until is None else datetime.fromtimestamp(until / 1000,
                                                                                 tz=UTC),
        "session_time_limit_s": (None if c.session_time_limit_ms is None
                                 else c.session_time_limit_ms // 1000),
        "limits": limits_text(c.limits),
        "actor": c.actor,
    }  # fmt: skip


def limits_json(limits: tuple[Limit, ...]) -> list[dict[str, Any]]:
    return [{"kind": x.kind.value, "period": x.period.value, "amount": x.amount,
             "currency": x.currency} for x in limits]  # fmt: skip


def controls_json(c: Controls) -> dict[str, Any]:
    """The controls as the operator API answers them (the request's normalised form)."""
    body = controls_avro(c)
    at = body["self_excluded_until"]
    if at is not None:
        body["self_excluded_until"] = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    body["limits"] = limits_json(c.limits)
    return body
