"""What the simulator expects money-wise: per player, the sum of what should have moved,
from the answers the aggregator gave. Pure bookkeeping, checked against the operator's
wallet at the end of a run."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Expectation:
    bets: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    wins: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    refunds: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    accepted_bets: dict[tuple[str, str], tuple[tuple[str, str, str], int]] = field(
        default_factory=dict
    )
    """(provider, transaction) -> (player key, amount) of every bet answered OK."""
    refunded: set[tuple[str, str]] = field(default_factory=set)
    credited: set[tuple[str, str]] = field(default_factory=set)

    def bet_answered(self, player: tuple[str, str, str], provider: str, txn: str,
                     amount: int, status: str) -> None:  # fmt: skip
        key = (provider, txn)
        if status == "OK" and key not in self.accepted_bets:
            self.accepted_bets[key] = (player, amount)
            self.bets[player] += amount

    def win_answered(self, player: tuple[str, str, str], provider: str, txn: str,
                     amount: int, status: str) -> None:  # fmt: skip
        key = (provider, txn)
        if status == "OK" and key not in self.credited:
            self.credited.add(key)
            self.wins[player] += amount

    def rollback_answered(self, provider: str, bet_txn: str, status: str) -> None:
        key = (provider, bet_txn)
        if status == "OK" and key in self.accepted_bets and key not in self.refunded:
            self.refunded.add(key)
            player, amount = self.accepted_bets[key]
            self.refunds[player] += amount

    def expected_change(self, player: tuple[str, str, str]) -> int:
        return -self.bets[player] + self.wins[player] + self.refunds[player]

    @property
    def players(self) -> set[tuple[str, str, str]]:
        return set(self.bets) | set(self.wins) | set(self.refunds)
