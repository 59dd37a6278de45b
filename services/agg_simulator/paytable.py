"""Paytables of the traffic simulator's games: what a round pays, drawn so that the expected
payout is exactly the game's return to player (RTP).

A real game's RTP is a property of its paytable: the outcomes, what each pays as a multiple
of the stake, and how often each comes. Here the winning outcomes have one fixed, slot-like
shape (:data:`WIN_SHAPE`: many wins below or at the stake, fewer bigger ones, a very rare
500x) and the weight of the losing outcome is what brings the expectation to the configured
RTP. Probabilities are integer weights over an integer total and payouts are rational
multiples of the stake, so ``E[win] = stake * RTP`` holds exactly, in fractions, with no
rounding anywhere; a stake for which a payout is not a whole number of minor units is refused
instead of rounded (every stake that is a multiple of :attr:`Paytable.stake_step` works).
"""

from __future__ import annotations

import math
import random
import re
from bisect import bisect_right
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import accumulate

WIN_SHAPE: tuple[tuple[int, Fraction], ...] = (
    (700, Fraction(1, 2)),
    (500, Fraction(1)),
    (500, Fraction(2)),
    (250, Fraction(5)),
    (100, Fraction(10)),
    (40, Fraction(25)),
    (8, Fraction(100)),
    (1, Fraction(500)),
)
"""(relative weight, payout in stakes) of each winning outcome. At 96 % about one round in
three wins (the hit rate of a typical video slot), a third of the wins pay back less than
the stake, one round in about 830 pays 100 times it and one in about 6,700 500 times."""

RTP_DEFAULT = Fraction(96, 100)
RTP_MAX = Fraction(1)
"""No real game pays back more than it takes; a higher RTP is refused."""

_PERCENT = re.compile(r"\d{1,3}(\.\d{1,6})?")


@dataclass(frozen=True)
class Outcome:
    weight: int
    multiplier: Fraction
    """What the outcome pays, in stakes (0 for the losing outcome)."""


@dataclass(frozen=True)
class Paytable:
    rtp: Fraction
    outcomes: tuple[Outcome, ...]
    _bounds: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        assert self.outcomes and all(o.weight >= 0 for o in self.outcomes)
        assert self.expectation == self.rtp, (self.expectation, self.rtp)
        object.__setattr__(self, "_bounds", tuple(accumulate(o.weight for o in self.outcomes)))

    @property
    def total_weight(self) -> int:
        return sum(o.weight for o in self.outcomes)

    def probability(self, outcome: Outcome) -> Fraction:
        return Fraction(outcome.weight, self.total_weight)

    @property
    def expectation(self) -> Fraction:
        """Expected payout per unit of stake."""
        return sum((self.probability(o) * o.multiplier for o in self.outcomes), Fraction(0))

    @property
    def variance(self) -> Fraction:
        """Variance of the payout per unit of stake (of ``win / stake``)."""
        second = sum((self.probability(o) * o.multiplier**2 for o in self.outcomes), Fraction(0))
        return second - self.expectation**2

    @property
    def hit_rate(self) -> Fraction:
        return sum((self.probability(o) for o in self.outcomes if o.multiplier), Fraction(0))

    @property
    def stake_step(self) -> int:
        """The smallest stake (in minor units) whose every payout is whole."""
        return math.lcm(*(o.multiplier.denominator for o in self.outcomes))

    def draw(self, rng: random.Random) -> Outcome:
        """One round's outcome, each with probability exactly weight / total weight."""
        return self.outcomes[bisect_right(self._bounds, rng.randrange(self._bounds[-1]))]

    def payout(self, stake: int, outcome: Outcome) -> int:
        """What ``outcome`` pays on ``stake``, in minor units; a payout that is not a whole
        number of minor units is refused (ValueError), never rounded."""
        if stake <= 0:
            raise ValueError(f"a stake is a positive number of minor units, not {stake}")
        win = stake * outcome.multiplier
        if win.denominator != 1:
            raise ValueError(
                f"a stake of {stake} minor units pays {win} on {outcome.multiplier}x: "
                f"stakes must be multiples of {self.stake_step}"
            )
        return win.numerator

    def play(self, stake: int, rng: random.Random) -> int:
        """One round's win on ``stake``, in minor units."""
        return self.payout(stake, self.draw(rng))


def paytable_for(rtp: Fraction, shape: tuple[tuple[int, Fraction], ...] = WIN_SHAPE) -> Paytable:
    """The paytable of ``shape`` whose expected payout is exactly ``rtp``: the winning
    weights scaled by the smallest integer that makes the total weight, ``sum(w * m) / rtp``,
    whole, and the losing outcome given the rest."""
    if not 0 <= rtp <= RTP_MAX:
        raise ValueError(f"an RTP is between 0 and {float(RTP_MAX):.0%}, not {float(rtp):.4%}")
    if rtp == 0:
        return Paytable(rtp, (Outcome(1, Fraction(0)),))
    paid = sum((w * m for w, m in shape), Fraction(0))
    total = paid / rtp
    scale = total.denominator
    lose = total.numerator - scale * sum(w for w, _ in shape)
    if lose < 0:
        most = paid / sum(w for w, _ in shape)
        raise ValueError(f"this paytable pays back at most {float(most):.2%}")
    outcomes = (Outcome(lose, Fraction(0)), *(Outcome(w * scale, m) for w, m in shape))
    return Paytable(rtp, outcomes)


def parse_rtp_percent(text: str) -> Fraction:
    """``"96"`` or ``"94.25"`` (a percentage, decimal) as the exact fraction 24/25 or
    377/400; anything else, or a value above 100, is refused (ValueError)."""
    if not _PERCENT.fullmatch(text.strip()):
        raise ValueError(f"an RTP is a percentage such as 96 or 94.5, not {text!r}")
    rtp = Fraction(text.strip()) / 100
    if rtp > RTP_MAX:
        raise ValueError(f"an RTP is at most 100 %, not {text}")
    return rtp


def format_percent(value: Fraction | float) -> str:
    return f"{float(value) * 100:.2f}%"
