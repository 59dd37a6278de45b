"""The bridge's circuit breaker: a table of transitions, and a property against a tiny model
(the breaker lets a call through exactly when the model says, whatever the sequence)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agg_bridge.breaker import Breaker, BreakerState
from agg_bridge.service import failure_reason
from agg_protocols.operator_wallet import Failure

CLOSED, OPEN, HALF = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
B = Breaker(failure_count_max=3, open_ms=1_000)


@pytest.mark.parametrize(
    ("before", "now_ms", "admitted", "after"),
    [
        (B, 0, True, B),
        (replace(B, failure_count=2), 0, True, replace(B, failure_count=2)),
        (replace(B, state=OPEN, opened_at_ms=100), 1_099, False,
         replace(B, state=OPEN, opened_at_ms=100)),
        (replace(B, state=OPEN, opened_at_ms=100), 1_100, True,
         replace(B, state=HALF, opened_at_ms=100, probing=True)),
        (replace(B, state=HALF, probing=True), 5_000, False, replace(B, state=HALF, probing=True)),
        (replace(B, state=HALF, probing=False), 5_000, True, replace(B, state=HALF, probing=True)),
    ],
)  # fmt: skip
def test_admit(before: Breaker, now_ms: int, admitted: bool, after: Breaker) -> None:
    assert before.admit(now_ms) == (after, admitted)


@pytest.mark.parametrize(
    ("before", "succeeded", "after"),
    [
        (replace(B, failure_count=2), True, B),
        (B, False, replace(B, failure_count=1)),
        (replace(B, failure_count=1), False, replace(B, failure_count=2)),
        (replace(B, failure_count=2), False,
         replace(B, state=OPEN, failure_count=3, opened_at_ms=50)),
        (replace(B, state=OPEN, opened_at_ms=10), False, replace(B, state=OPEN, opened_at_ms=10)),
        (replace(B, state=OPEN, opened_at_ms=10), True, B),
        (replace(B, state=HALF, probing=True), True, B),
        (replace(B, state=HALF, probing=True), False, replace(B, state=OPEN, opened_at_ms=50)),
    ],
)  # fmt: skip
def test_record(before: Breaker, succeeded: bool, after: Breaker) -> None:
    assert before.record(succeeded, 50) == after


def test_a_down_wallet_opens_the_breaker_and_a_probe_closes_it() -> None:
    b = B
    for t in range(3):
        b, ok = b.admit(t)
        assert ok
        b = b.record(False, t)
    assert b.state is OPEN
    assert b.admit(500) == (b, False)
    b, ok = b.admit(1_002)
    assert ok and b.state is HALF
    assert b.admit(1_003)[1] is False  # only the probe
    b = b.record(True, 1_010)
    assert b.state is CLOSED and b.admit(1_011)[1]


steps = st.lists(
    st.tuples(st.sampled_from(["call_ok", "call_fail", "wait"]), st.integers(0, 1_500)),
    max_size=60,
)


@given(steps)
def test_matches_a_model(script: list[tuple[str, int]]) -> None:
    """Calls complete at once (no overlap): the model is 'open after 3 consecutive failures,
    one probe after 1 s, closed by any success'."""
    b, now = B, 0
    failures, open_since = 0, None
    for step, delay in script:
        now += delay
        if step == "wait":
            continue
        model_admits = open_since is None or now - open_since >= 1_000
        b, admitted = b.admit(now)
        assert admitted is model_admits
        if not admitted:
            continue
        ok = step == "call_ok"
        b = b.record(ok, now)
        if ok:
            failures, open_since = 0, None
        elif open_since is not None:  # the probe failed
            open_since = now
        else:
            failures += 1
            if failures >= 3:
                open_since = now
        assert (b.state is CLOSED) is (open_since is None)


@pytest.mark.parametrize(
    ("reason", "label"),
    [("HTTP 503", "http_5xx"), ("HTTP 401", "http_4xx"), ("timeout", "timeout"),
     ("connection", "connection"), ("wallet refused the call: RS_ERROR_WRONG_TYPES", "refused"),
     ("answer: body is not valid JSON", "bad_answer")],
)  # fmt: skip
def test_failure_labels_are_bounded(reason: str, label: str) -> None:
    assert failure_reason(Failure(reason, False)) == label
