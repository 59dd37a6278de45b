"""Latency percentiles by the nearest-rank method: every percentile is a latency that was
measured (no interpolation between two replies), so a p99 below the deadline means at least
99 of every 100 replies really came before it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[int], percent: int) -> int:
    """The nearest-rank ``percent``-th percentile (1..100) of ``values`` (not empty): the
    smallest value that at least ``percent`` % of the values are less than or equal to."""
    if not values:
        raise ValueError("no values")
    if not 1 <= percent <= 100:
        raise ValueError("percent must be within 1..100")
    ordered = sorted(values)
    rank = (percent * len(ordered) + 99) // 100  # ceil(percent / 100 * n), in integers
    return ordered[rank - 1]


@dataclass(frozen=True)
class LatencySummary:
    """Reply latencies of a run, in microseconds, against the saga's wallet deadline."""

    count: int
    missing_count: int
    """Commands that got no reply within the kit's reply timeout."""
    p50_us: int | None
    p95_us: int | None
    p99_us: int | None
    max_us: int | None
    deadline_ms: int

    @classmethod
    def of(
        cls, latencies_us: Sequence[int], missing_count: int, deadline_ms: int
    ) -> LatencySummary:
        if not latencies_us:
            return cls(0, missing_count, None, None, None, None, deadline_ms)
        return cls(
            count=len(latencies_us),
            missing_count=missing_count,
            p50_us=percentile(latencies_us, 50),
            p95_us=percentile(latencies_us, 95),
            p99_us=percentile(latencies_us, 99),
            max_us=max(latencies_us),
            deadline_ms=deadline_ms,
        )

    @property
    def within_deadline(self) -> bool:
        """Every reply came, and p99 (so p50 and p95 too) is below the deadline."""
        return (
            self.count > 0
            and self.missing_count == 0
            and self.p99_us is not None
            and self.p99_us < self.deadline_ms * 1000
        )
