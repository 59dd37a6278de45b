"""A circuit breaker per operator wallet, as a pure state machine (the clock is an argument).

======================  ===========================================================
state                   what a call gets
======================  ===========================================================
``closed``              called; ``failure_count_max`` consecutive failures open it
``open``                not called (answered ERROR at once) for ``open_ms``; then the
                        next call is let through as the probe (``half_open``)
``half_open``           only the probe is in flight, every other call is refused;
                        the probe's success closes, its failure opens again
======================  ===========================================================

Any successful call closes the breaker (the wallet answered, whatever the call's age), and
a failure while it is open changes nothing: the open period runs from the failure that
opened it. Why a breaker at all: a wallet that is down would otherwise hold every command
for the whole call budget, each player's queue behind it, and be hit by every retry as it
comes back; with the breaker open the saga hears ERROR at once and compensates.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


GAUGE_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
"""The value of the state gauge ``agg_bridge_breaker_state``."""


@dataclass(frozen=True)
class Breaker:
    failure_count_max: int
    open_ms: int
    state: BreakerState = BreakerState.CLOSED
    failure_count: int = 0
    """Consecutive failures while closed."""
    opened_at_ms: int = 0
    probing: bool = False
    """A half-open probe is in flight."""

    def __post_init__(self) -> None:
        assert self.failure_count_max >= 1 and self.open_ms >= 0

    def admit(self, now_ms: int) -> tuple[Breaker, bool]:
        """Whether a call may go now, and the breaker after the decision."""
        if self.state is BreakerState.CLOSED:
            return self, True
        if self.state is BreakerState.OPEN:
            if now_ms - self.opened_at_ms >= self.open_ms:
                return replace(self, state=BreakerState.HALF_OPEN, probing=True), True
            return self, False
        if self.probing:
            return self, False
        return replace(self, probing=True), True

    def record(self, succeeded: bool, now_ms: int) -> Breaker:
        """The breaker after a call admitted earlier finished."""
        if succeeded:
            return replace(
                self, state=BreakerState.CLOSED, failure_count=0, opened_at_ms=0, probing=False
            )
        if self.state is BreakerState.OPEN:
            return self
        if self.state is BreakerState.HALF_OPEN:
            return replace(self, state=BreakerState.OPEN, opened_at_ms=now_ms, probing=False)
        failures = self.failure_count + 1
        if failures >= self.failure_count_max:
            return replace(
                self, state=BreakerState.OPEN, failure_count=failures, opened_at_ms=now_ms
            )
        return replace(self, failure_count=failures)
