"""Unit tests of the responsible-gaming rules (agg_domain.limits): calendar periods in UTC,
usage rolling over, each rule's exact refusal at and around its boundary, and the digest
that tells a repeated statement from a conflicting one."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from agg_domain.compliance import Refusal
from agg_domain.limits import (
    DAY_MS,
    Controls,
    Limit,
    LimitKind,
    Period,
    Usage,
    add_usage,
    bet_refusal,
    current_usage,
    deposit_refusal,
    period_start_ms,
    usage_key,
)
from agg_domain.statuses import Status

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ms(y: int, m: int, d: int, h: int = 0, mi: int = 0, s: int = 0, milli: int = 0) -> int:
    delta = datetime(y, m, d, h, mi, s, tzinfo=UTC) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + milli


NOW = ms(2024, 2, 29, 12)  # a Thursday, leap day
W, L, D = LimitKind.WAGER, LimitKind.LOSS, LimitKind.DEPOSIT


@pytest.mark.parametrize(
    ("period", "now", "start"),
    [
        (Period.DAY, ms(2024, 2, 29, 12), ms(2024, 2, 29)),
        (Period.DAY, ms(2024, 2, 29), ms(2024, 2, 29)),
        (Period.DAY, ms(2024, 2, 28, 23, 59, 59, 999), ms(2024, 2, 28)),
        (Period.DAY, ms(2024, 12, 31, 23, 59, 59, 999), ms(2024, 12, 31)),
        (Period.DAY, ms(2025, 1, 1), ms(2025, 1, 1)),
        (Period.WEEK, ms(2024, 2, 29, 12), ms(2024, 2, 26)),  # Thursday -> Monday
        (Period.WEEK, ms(2024, 2, 26), ms(2024, 2, 26)),  # Monday midnight
        (Period.WEEK, ms(2024, 2, 25, 23, 59, 59, 999), ms(2024, 2, 19)),  # Sunday
        (Period.WEEK, ms(2025, 1, 1), ms(2024, 12, 30)),  # a week across the year end
        (Period.WEEK, ms(1970, 1, 1), ms(1969, 12, 29)),
        (Period.MONTH, ms(2024, 2, 29, 23, 59, 59, 999), ms(2024, 2, 1)),
        (Period.MONTH, ms(2024, 3, 1), ms(2024, 3, 1)),
        (Period.MONTH, ms(2024, 12, 31, 23, 59, 59, 999), ms(2024, 12, 1)),
        (Period.MONTH, ms(2025, 1, 1), ms(2025, 1, 1)),
        (Period.MONTH, ms(2023, 2, 28, 23), ms(2023, 2, 1)),
    ],
)
def test_periods_start_in_utc(period: Period, now: int, start: int) -> None:
    assert period_start_ms(period, now) == start


def test_add_usage_adds_to_the_day_week_and_month_and_rolls_over() -> None:
    usage = add_usage({}, "EUR", NOW, wagered=100, lost=100)
    usage = add_usage(usage, "EUR", NOW + 1, lost=-30)
    assert usage == {
        "EUR|day": Usage(ms(2024, 2, 29), 100, 70, 0),
        "EUR|week": Usage(ms(2024, 2, 26), 100, 70, 0),
        "EUR|month": Usage(ms(2024, 2, 1), 100, 70, 0),
    }
    # the next day (1 March, still the same week): day and month start again
    later = add_usage(usage, "EUR", ms(2024, 3, 1), deposited=5)
    assert later == {
        "EUR|day": Usage(ms(2024, 3, 1), 0, 0, 5),
        "EUR|week": Usage(ms(2024, 2, 26), 100, 70, 5),
        "EUR|month": Usage(ms(2024, 3, 1), 0, 0, 5),
    }
    # another currency is counted apart
    both = add_usage(later, "USD", ms(2024, 3, 1), wagered=1)
    assert both["USD|day"] == Usage(ms(2024, 3, 1), 1, 0, 0)
    assert both["EUR|day"] == later["EUR|day"]


def test_current_usage_is_nothing_once_the_period_is_over() -> None:
    usage = add_usage({}, "EUR", NOW, wagered=100)
    assert current_usage(usage, "EUR", Period.DAY, NOW + 1) == Usage(ms(2024, 2, 29), 100)
    assert current_usage(usage, "EUR", Period.DAY, ms(2024, 3, 1)) == Usage(ms(2024, 3, 1))
    assert current_usage(usage, "USD", Period.DAY, NOW) == Usage(ms(2024, 2, 29))
    assert usage_key("EUR", Period.WEEK) == "EUR|week"


def bet(controls: Controls, usage: dict[str, Usage] | None = None, *, amount: int = 10,
        in_flight: int = 0, now: int = NOW, currency: str = "EUR",
        started: int | None = None) -> Refusal | None:  # fmt: skip
    return bet_refusal(controls, usage or {}, currency=currency, amount=amount,
                       in_flight=in_flight, now_ms=now, session_started_at_ms=started)  # fmt: skip


def deposit(controls: Controls, usage: dict[str, Usage] | None = None, *, amount: int = 10,
            now: int = NOW, currency: str = "EUR") -> Refusal | None:  # fmt: skip
    return deposit_refusal(controls, usage or {}, currency=currency, amount=amount, now_ms=now)


BLOCKED = Refusal(Status.PLAYER_BLOCKED, "rg:blocked")
EXCLUDED = Refusal(Status.PLAYER_BLOCKED, "rg:self_excluded")


def test_no_controls_refuse_nothing() -> None:
    assert bet(Controls(), amount=10**12, started=0) is None
    assert deposit(Controls(), amount=10**12) is None


def test_a_block_refuses_bets_and_deposits_before_any_other_rule() -> None:
    controls = Controls(blocked=True, self_excluded=True, session_time_limit_ms=1,
                        limits=(Limit(W, Period.DAY, 0, "EUR"),))  # fmt: skip
    assert bet(controls, started=0) == BLOCKED
    assert deposit(controls) == BLOCKED


def test_a_self_exclusion_refuses_until_it_ends() -> None:
    until = NOW + 1_000
    controls = Controls(self_excluded=True, self_excluded_until_ms=until)
    assert bet(controls, now=until - 1) == EXCLUDED
    assert deposit(controls, now=until - 1) == EXCLUDED
    assert bet(controls, now=until) is None
    assert deposit(controls, now=until) is None
    forever = Controls(self_excluded=True)
    assert bet(forever, now=NOW + 10**12) == EXCLUDED
    assert deposit(forever, now=NOW + 10**12) == EXCLUDED
    # an end without the exclusion is no exclusion
    assert bet(Controls(self_excluded_until_ms=until)) is None


def test_a_session_time_limit_refuses_at_exactly_the_limit() -> None:
    controls = Controls(session_time_limit_ms=3_600_000)
    refusal = Refusal(Status.LIMIT_EXCEEDED, "rg:session_time:3600")
    assert bet(controls, started=NOW - 3_599_999) is None
    assert bet(controls, started=NOW - 3_600_000) == refusal
    assert bet(controls, started=NOW - 3_600_001) == refusal
    assert bet(controls, started=None) is None, "no session: nothing to count from"
    assert deposit(controls) is None, "deposits have no session"


@pytest.mark.parametrize("period", list(Period))
def test_a_wager_limit_allows_exactly_the_limit_counting_in_flight(period: Period) -> None:
    controls = Controls(limits=(Limit(W, period, 1_000, "EUR"),))
    refusal = Refusal(Status.LIMIT_EXCEEDED, f"rg:wager:{period.value}:EUR:1000")
    usage = add_usage({}, "EUR", NOW, wagered=600, lost=-5_000)
    assert bet(controls, usage, amount=300, in_flight=100) is None
    assert bet(controls, usage, amount=301, in_flight=100) == refusal
    assert bet(controls, usage, amount=400) is None
    assert bet(controls, usage, amount=401) == refusal
    assert bet(controls, usage, amount=1, in_flight=400) == refusal
    assert bet(controls, amount=1_000) is None
    assert bet(controls, amount=1_001) == refusal
    assert deposit(controls, usage, amount=10**9) is None, "a wager limit is not a deposit's"


def test_a_wager_limit_of_another_currency_or_an_earlier_period_is_ignored() -> None:
    controls = Controls(limits=(Limit(W, Period.DAY, 100, "USD"),))
    assert bet(controls, amount=101) is None
    assert bet(controls, amount=101, currency="USD") == Refusal(Status.LIMIT_EXCEEDED,
                                                                "rg:wager:day:USD:100")  # fmt: skip
    yesterday = add_usage({}, "USD", NOW - DAY_MS, wagered=100)
    assert bet(controls, yesterday, amount=100, currency="USD") is None


def test_a_zero_limit_refuses_every_stake() -> None:
    controls = Controls(limits=(Limit(W, Period.DAY, 0, "EUR"),))
    assert bet(controls, amount=1) == Refusal(Status.LIMIT_EXCEEDED, "rg:wager:day:EUR:0")


@pytest.mark.parametrize("period", list(Period))
def test_a_loss_limit_counts_stakes_less_wins_and_refunds(period: Period) -> None:
    controls = Controls(limits=(Limit(L, period, 500, "EUR"),))
    refusal = Refusal(Status.LIMIT_EXCEEDED, f"rg:loss:{period.value}:EUR:500")
    usage = add_usage({}, "EUR", NOW, wagered=900, lost=900)
    usage = add_usage(usage, "EUR", NOW, lost=-700)  # wins and refunds
    assert bet(controls, usage, amount=300) is None
    assert bet(controls, usage, amount=301) == refusal
    assert bet(controls, usage, amount=250, in_flight=50) is None
    assert bet(controls, usage, amount=251, in_flight=50) == refusal
    net_win = add_usage({}, "EUR", NOW, lost=-200)
    assert bet(controls, net_win, amount=700) is None
    assert bet(controls, net_win, amount=701) == refusal


def test_the_first_limit_reached_is_the_one_named() -> None:
    controls = Controls(limits=(Limit(D, Period.DAY, 1, "EUR"), Limit(L, Period.WEEK, 50, "EUR"),
                                Limit(W, Period.MONTH, 50, "EUR")))  # fmt: skip
    assert bet(controls, amount=51) == Refusal(Status.LIMIT_EXCEEDED, "rg:loss:week:EUR:50")


@pytest.mark.parametrize("period", list(Period))
def test_a_deposit_limit_allows_exactly_the_limit(period: Period) -> None:
    controls = Controls(limits=(Limit(D, period, 1_000, "EUR"), Limit(D, period, 10, "USD")))
    refusal = Refusal(Status.LIMIT_EXCEEDED, f"rg:deposit:{period.value}:EUR:1000")
    usage = add_usage({}, "EUR", NOW, deposited=700)
    assert deposit(controls, usage, amount=300) is None
    assert deposit(controls, usage, amount=301) == refusal
    assert bet(controls, usage, amount=10**9) is None, "a deposit limit is not a bet's"
    assert deposit(controls, usage, amount=10, currency="USD") is None
    assert deposit(controls, usage, amount=11, currency="USD") == Refusal(
        Status.LIMIT_EXCEEDED, f"rg:deposit:{period.value}:USD:10")  # fmt: skip


def test_deposits_of_last_month_do_not_count_on_the_first() -> None:
    controls = Controls(limits=(Limit(D, Period.MONTH, 100, "EUR"),))
    usage = add_usage({}, "EUR", ms(2024, 1, 31, 23, 59, 59, 999), deposited=100)
    assert deposit(controls, usage, amount=1, now=ms(2024, 1, 31, 23, 59, 59, 999)) is not None
    assert deposit(controls, usage, amount=100, now=ms(2024, 2, 1)) is None


BASE = Controls(change_id="ch", blocked=False, self_excluded=True, self_excluded_until_ms=NOW,
                session_time_limit_ms=60_000, actor="staff-1", changed_at_ms=1,
                limits=(Limit(W, Period.DAY, 100, "EUR"),
                        Limit(L, Period.WEEK, 50, "USD")))  # fmt: skip


def test_the_digest_is_the_content_whatever_the_limits_order_or_the_change_id() -> None:
    same = replace(BASE, limits=tuple(reversed(BASE.limits)), change_id="other",
                   changed_at_ms=99)  # fmt: skip
    assert same.digest() == BASE.digest()


@pytest.mark.parametrize(
    "changes",
    [
        {"blocked": True},
        {"self_excluded": False},
        {"self_excluded_until_ms": None},
        {"self_excluded_until_ms": NOW + 1},
        {"session_time_limit_ms": None},
        {"session_time_limit_ms": 60_001},
        {"actor": "player"},
        {"limits": ()},
        {"limits": (Limit(W, Period.DAY, 100, "EUR"),)},
        {"limits": (Limit(W, Period.DAY, 101, "EUR"), Limit(L, Period.WEEK, 50, "USD"))},
        {"limits": (Limit(L, Period.DAY, 100, "EUR"), Limit(L, Period.WEEK, 50, "USD"))},
        {"limits": (Limit(W, Period.MONTH, 100, "EUR"), Limit(L, Period.WEEK, 50, "USD"))},
        {"limits": (Limit(W, Period.DAY, 100, "USD"), Limit(L, Period.WEEK, 50, "USD"))},
        {"limits": (*BASE.limits, Limit(D, Period.DAY, 1, "EUR"))},
    ],
)
def test_the_digest_changes_with_any_change_of_content(changes: dict[str, object]) -> None:
    assert replace(BASE, **changes).digest() != BASE.digest()  # type: ignore[arg-type]


def test_usage_saturates_at_the_largest_long() -> None:
    """Stakes of the largest amount add up past what a long holds (the state's JSON and the
    records are 64-bit): the counters stop there, past every limit."""
    big = 2**63 - 1
    usage = add_usage({}, "EUR", NOW, wagered=big, lost=big)
    usage = add_usage(usage, "EUR", NOW, wagered=big, lost=big)
    day = current_usage(usage, "EUR", Period.DAY, NOW)
    assert (day.wagered, day.lost) == (big, big)
    usage = add_usage(usage, "EUR", NOW, lost=-big)
    usage = add_usage(usage, "EUR", NOW, lost=-big)
    usage = add_usage(usage, "EUR", NOW, lost=-big)
    assert current_usage(usage, "EUR", Period.DAY, NOW).lost == -big
