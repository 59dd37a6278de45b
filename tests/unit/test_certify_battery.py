"""The battery against an in-memory wallet made of the reference wallet's rules
(:class:`agg_wallet.rules.Book`) behind the :class:`~agg_certify.port.WalletUnderTest` port:
it passes on the plain rules and fails, for each deliberate defect of the rules, exactly
the checks that defect breaks (the slow one lives in the service and is tested on the real
wallet, tests/integration/test_certify.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from agg_certify.checks import Battery, Config, Outcome
from agg_certify.port import Command, Observed, Reply
from agg_wallet.rules import Book, Defect, Policy
from agg_wallet.rules import Command as WalletCommand

OPERATOR = "op-1"


@dataclass
class BookWallet:
    """Each call is one batch of one command; ``silent`` answers nothing (a lost reply)."""

    policy: Policy
    mode: str = "memory"
    signature_not_applicable: str | None = "an in-memory wallet has no signatures"
    book: Book = field(init=False)

    def __post_init__(self) -> None:
        self.book = Book(OPERATOR, 100_000, {}, {}, {}, policy=self.policy)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def call(self, command: Command, timeout_ms: int) -> Observed:
        await asyncio.sleep(0)  # let concurrent copies interleave
        decision = self.book.apply(
            WalletCommand.from_avro(command.as_avro()), None, datetime.now(UTC)
        )
        e = decision.entry
        reply = Reply(e.command_id, e.player_id, e.status.value, e.balance, e.currency)
        return Observed(command, reply, 1_000)

    async def call_badly_signed(self, command: Command, timeout_ms: int) -> Observed:
        raise NotImplementedError


def run(policy: Policy) -> dict[str, Outcome]:
    config = Config(operator_id=OPERATOR, run_id="unit", currency="EUR", wrong_currency="GBP",
                    deadline_ms=1_500, latency_sample_count=20)  # fmt: skip
    results, _ = asyncio.run(Battery(BookWallet(policy), config).run())
    return {r.check_id: r.outcome for r in results}


OFFERED = frozenset({"EUR", "USD"})


@pytest.mark.parametrize(
    ("defects", "failing"),
    [
        (frozenset(), set()),
        (frozenset({Defect.NO_DEDUPE}),
         {"duplicate_exact", "duplicate_concurrent", "duplicate_conflict"}),
        (frozenset({Defect.NEGATIVE_BALANCE}), {"insufficient_funds", "rollback_refused_debit"}),
        (frozenset({Defect.DOUBLE_ROLLBACK}), {"rollback_twice"}),
        (frozenset({Defect.WRONG_CURRENCY}), {"wrong_currency"}),
    ],
)  # fmt: skip
def test_the_battery_fails_exactly_what_a_defect_breaks(
    defects: frozenset[Defect], failing: set[str]
) -> None:
    outcomes = run(Policy(currencies=OFFERED, defects=defects))
    assert {c for c, o in outcomes.items() if o is Outcome.FAIL} == failing
    assert outcomes["signature"] is Outcome.NOT_APPLICABLE


def test_a_wallet_that_takes_any_currency_fails_the_currency_check() -> None:
    assert run(Policy(currencies=None))["wrong_currency"] is Outcome.FAIL
