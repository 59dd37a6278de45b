"""Responsible gaming: a player's controls, held by the aggregator per operator and enforced
by the saga before any money leaves the player.

An operator states a player's controls through the operator API
(``POST /v1/operators/{operator_id}/players/{player_id}/controls``); the statement replaces
the previous one whole, is carried to the player's saga in order with the player's bets, and
is journaled (``PlayerControlsChanged``) with who made it. From then on the saga refuses,
with no wallet command:

===============================  ====================  =====================================
rule                             status                refuses
===============================  ====================  =====================================
``rg:blocked``                   ``PLAYER_BLOCKED``    every bet and deposit (the operator's
                                                       block)
``rg:self_excluded``             ``PLAYER_BLOCKED``    every bet and deposit until the
                                                       exclusion ends (or for ever)
``rg:session_time:S``            ``LIMIT_EXCEEDED``    a bet of a session open S seconds or
                                                       more
``rg:wager:P:CCC:N``             ``LIMIT_EXCEEDED``    a bet that takes the period P's stakes
                                                       in CCC above N
``rg:loss:P:CCC:N``              ``LIMIT_EXCEEDED``    a bet that, lost, takes the period's
                                                       net loss (stakes less wins and
                                                       refunds) in CCC above N
``rg:deposit:P:CCC:N``           ``LIMIT_EXCEEDED``    a transfer-wallet deposit that takes
                                                       the period's deposits above N
===============================  ====================  =====================================

Periods are calendar periods in UTC: ``day``, ``week`` (from Monday 00:00) and ``month``.
Wins, refunds and withdrawals are never refused (money owed to the player). Bets whose debit
is still in flight count against wager and loss limits, so two bets sent together cannot
pass a limit that either alone would reach. Usage is counted for every real-money player
whether limits are set or not, so a limit set during a period counts the period's play so
far. Demo play (no real money) is outside these controls.

Pure: no I/O, no clock; the saga passes its decision time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import NamedTuple

from agg_domain.compliance import Refusal
from agg_domain.ids import derive_id
from agg_domain.statuses import Status


class LimitKind(StrEnum):
    WAGER = "wager"
    """Stakes placed in the period."""
    LOSS = "loss"
    """Net loss in the period: stakes less wins and refunds."""
    DEPOSIT = "deposit"
    """Funds deposited into a transfer wallet in the period."""


class Period(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


@dataclass(frozen=True)
class Limit:
    kind: LimitKind
    period: Period
    amount: int
    """In minor units of ``currency``; 0 refuses everything the limit counts."""
    currency: str


@dataclass(frozen=True)
class Controls:
    """A player's responsible-gaming controls as the operator last stated them."""

    change_id: str = ""
    """The operator's id of the statement (its idempotency key)."""
    blocked: bool = False
    self_excluded: bool = False
    self_excluded_until_ms: int | None = None
    """When a self-exclusion ends; None with ``self_excluded``: it never ends."""
    session_time_limit_ms: int | None = None
    limits: tuple[Limit, ...] = ()
    actor: str = ""
    """Who made the change, as the operator names them (staff id, ``player``...)."""
    changed_at_ms: int = 0
    """When the saga applied it (0 in a request: set on apply)."""

    def digest(self) -> str:
        """The statement's content, for telling a repeat from a conflicting reuse of its id."""
        limits = sorted((x.kind.value, x.period.value, x.currency, x.amount) for x in self.limits)
        return derive_id("controls", int(self.blocked), int(self.self_excluded),
                         str(self.self_excluded_until_ms), str(self.session_time_limit_ms),
                         repr(limits), self.actor)  # fmt: skip

    def excluded(self, now_ms: int) -> bool:
        if not self.self_excluded:
            return False
        return self.self_excluded_until_ms is None or now_ms < self.self_excluded_until_ms


class Usage(NamedTuple):
    """What one currency's play added up to in one period (a tuple: one is made for each
    period of every settled stake)."""

    period_start_ms: int
    wagered: int = 0
    lost: int = 0
    """Net: negative when wins and refunds exceed stakes."""
    deposited: int = 0


NO_CONTROLS = Controls()


DAY_MS = 86_400_000


@lru_cache(maxsize=64)
def _month_start_ms(day: int) -> int:
    """The first of the month holding day number ``day`` (days since 1970-01-01), in ms."""
    first = (date(1970, 1, 1) + timedelta(days=day)).replace(day=1)
    return (first - date(1970, 1, 1)).days * DAY_MS


def period_start_ms(period: Period, now_ms: int) -> int:
    """The start, in UTC, of the calendar period holding ``now_ms`` (integer arithmetic for
    days and weeks: this runs for every settled stake)."""
    day = now_ms // DAY_MS
    if period is Period.DAY:
        return day * DAY_MS
    if period is Period.WEEK:
        return (day - (day + 3) % 7) * DAY_MS  # 1970-01-01 was a Thursday
    return _month_start_ms(day)


def usage_key(currency: str, period: Period) -> str:
    return f"{currency}|{period.value}"


def current_usage(usage: Mapping[str, Usage], currency: str, period: Period,
                  now_ms: int) -> Usage:  # fmt: skip
    """This period's usage (nothing yet if what is held is an earlier period's)."""
    start = period_start_ms(period, now_ms)
    held = usage.get(usage_key(currency, period))
    if held is None or held.period_start_ms != start:
        return Usage(start)
    return held


@lru_cache(maxsize=256)
def _keys(currency: str) -> tuple[str, str, str]:
    """The usage keys of ``currency``'s day, week and month."""
    return (usage_key(currency, Period.DAY), usage_key(currency, Period.WEEK),
            usage_key(currency, Period.MONTH))  # fmt: skip


def add_usage(usage: Mapping[str, Usage], currency: str, now_ms: int, *, wagered: int = 0,
              lost: int = 0, deposited: int = 0) -> dict[str, Usage]:  # fmt: skip
    """``usage`` with the amounts added to the current day, week and month of ``currency``."""
    out = dict(usage)
    day = now_ms // DAY_MS
    starts = (day * DAY_MS, (day - (day + 3) % 7) * DAY_MS, _month_start_ms(day))
    for key, start in zip(_keys(currency), starts, strict=True):
        held = usage.get(key)
        if held is None or held[0] != start:
            out[key] = Usage(start, _bounded(wagered), _bounded(lost), _bounded(deposited))
        else:
            out[key] = Usage(start, _bounded(held[1] + wagered), _bounded(held[2] + lost),
                             _bounded(held[3] + deposited))  # fmt: skip
    return out


COUNT_MAX = 2**63 - 1
"""Usage counters saturate at the largest long (as the state and the records hold them):
every limit is at most that, so a counter there is past every limit."""


def _bounded(value: int) -> int:
    return COUNT_MAX if value > COUNT_MAX else -COUNT_MAX if value < -COUNT_MAX else value


RULE_BLOCKED = "rg:blocked"
RULE_SELF_EXCLUDED = "rg:self_excluded"


def _limit_rule(limit: Limit) -> str:
    return f"rg:{limit.kind.value}:{limit.period.value}:{limit.currency}:{limit.amount}"


def _blocked(controls: Controls, now_ms: int) -> Refusal | None:
    if controls.blocked:
        return Refusal(Status.PLAYER_BLOCKED, RULE_BLOCKED)
    if controls.excluded(now_ms):
        return Refusal(Status.PLAYER_BLOCKED, RULE_SELF_EXCLUDED)
    return None


def bet_refusal(controls: Controls, usage: Mapping[str, Usage], *, currency: str, amount: int,
                in_flight: int, now_ms: int,
                session_started_at_ms: int | None) -> Refusal | None:  # fmt: skip
    """Why a real-money bet of ``amount`` may not be debited now, if a control says so.
    ``in_flight``: the stakes in ``currency`` whose debit awaits the wallet."""
    refusal = _blocked(controls, now_ms)
    if refusal is not None:
        return refusal
    limit_ms = controls.session_time_limit_ms
    if (limit_ms is not None and session_started_at_ms is not None
            and now_ms - session_started_at_ms >= limit_ms):  # fmt: skip
        return Refusal(Status.LIMIT_EXCEEDED, f"rg:session_time:{limit_ms // 1000}")
    for limit in controls.limits:
        if limit.currency != currency or limit.kind is LimitKind.DEPOSIT:
            continue
        used = current_usage(usage, currency, limit.period, now_ms)
        so_far = used.wagered if limit.kind is LimitKind.WAGER else used.lost
        if so_far + in_flight + amount > limit.amount:
            return Refusal(Status.LIMIT_EXCEEDED, _limit_rule(limit))
    return None


def deposit_refusal(controls: Controls, usage: Mapping[str, Usage], *, currency: str,
                    amount: int, now_ms: int) -> Refusal | None:  # fmt: skip
    """Why a transfer-wallet deposit of ``amount`` may not be taken now, if a control says
    so."""
    refusal = _blocked(controls, now_ms)
    if refusal is not None:
        return refusal
    for limit in controls.limits:
        if limit.currency != currency or limit.kind is not LimitKind.DEPOSIT:
            continue
        used = current_usage(usage, currency, limit.period, now_ms)
        if used.deposited + amount > limit.amount:
            return Refusal(Status.LIMIT_EXCEEDED, _limit_rule(limit))
    return None


def limits_text(limits: Iterable[Limit]) -> str:
    """The limits as the records carry them: ``kind:period:CCC:amount``, comma-separated
    (``loss:week:EUR:50000,wager:day:EUR:20000``; empty: none)."""
    return ",".join(f"{x.kind.value}:{x.period.value}:{x.currency}:{x.amount}" for x in limits)


def limits_from_text(text: str) -> tuple[Limit, ...]:
    """:func:`limits_text` read back (ValueError on anything else: an unknown kind or
    period, an amount that is not a non-negative integer)."""
    if not text:
        return ()
    out = []
    for item in text.split(","):
        kind, period, currency, amount = item.split(":")
        if not (amount.isascii() and amount.isdigit()) or len(currency) != 3:
            raise ValueError(f"not a limit: {item!r}")
        out.append(Limit(LimitKind(kind), Period(period), int(amount), currency))
    return tuple(out)


def limits_of(items: Iterable[tuple[str, str, int, str]]) -> tuple[Limit, ...]:
    """``(kind, period, amount, currency)`` tuples as limits (ValueError on an unknown kind
    or period)."""
    return tuple(Limit(LimitKind(k), Period(p), int(a), c) for k, p, a, c in items)
