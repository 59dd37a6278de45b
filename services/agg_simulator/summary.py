"""The traffic simulator's numbers and how they are shown: what a run has counted so far
(:class:`Stats`), the one-screen summary drawn from it (:func:`summary_lines`, a pure
function of the stats and the time), and the printer that redraws that screen in place on a
terminal or writes one plain line per interval when the output is a file or a pipe."""

from __future__ import annotations

import math
import shutil
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, TextIO

from agg_simulator.paytable import Paytable, format_percent

LATENCY_SAMPLES_MAX = 2_000_000
"""Latencies kept per row for the final percentiles (float32: 8 MB a row at most)."""
ROWS_MAX = 4
"""Operators, providers and games shown each on the live screen (then one "... and N more"
line): the live summary is 23 lines at most, one 80x24 screen. The final report, printed
once, shows them all."""
NAME_WIDTH = 19
"""Row names (``provider prov-orbit``) are cut to this: with it a row is 79 columns."""


@dataclass
class Scope:
    """The callbacks of one row of the summary: everything, one operator or one provider."""

    callbacks: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    latencies_ms: array[float] = field(default_factory=lambda: array("f"))
    window_ms: list[float] = field(default_factory=list)
    """Latencies since the last interval began."""

    def record(self, status: str, latency_ms: float) -> None:
        self.callbacks += 1
        self.statuses[status] += 1
        if len(self.latencies_ms) < LATENCY_SAMPLES_MAX:
            self.latencies_ms.append(latency_ms)
        self.window_ms.append(latency_ms)

    @property
    def refused(self) -> int:
        """Answers neither OK nor RETRY_LATER (refusals, HTTP errors without a status)."""
        return self.callbacks - self.statuses["OK"] - self.statuses["RETRY_LATER"]


@dataclass
class GameTally:
    """Settled rounds of one game: stakes and the wins the paytable drew for them."""

    paytable: Paytable
    rounds: int = 0
    stake: int = 0
    win: int = 0
    stake_squared: int = 0

    def settle(self, stake: int, win: int) -> None:
        self.rounds += 1
        self.stake += stake
        self.win += win
        self.stake_squared += stake * stake

    @property
    def observed_rtp(self) -> Fraction | None:
        return Fraction(self.win, self.stake) if self.stake else None

    @property
    def rtp_sigma(self) -> float:
        """Standard deviation of the observed RTP around the configured one: the sum of wins
        has variance ``Var(win / stake) * sum(stake**2)``, divided by the sum of stakes."""
        if not self.stake:
            return math.inf
        return math.sqrt(float(self.paytable.variance) * self.stake_squared) / self.stake


@dataclass
class Stats:
    started_s: float
    interval_started_s: float = -1.0
    total: Scope = field(default_factory=Scope)
    operators: dict[str, Scope] = field(default_factory=dict)
    providers: dict[str, Scope] = field(default_factory=dict)
    protocols: dict[str, Scope] = field(default_factory=dict)
    """By the provider's wire protocol (``canonical-v1``, ``pragmatic-v1``, ...)."""
    wallets: dict[str, Scope] = field(default_factory=dict)
    """By the operator's wallet mode (``kafka``, ``http``)."""
    games: dict[str, GameTally] = field(default_factory=dict)
    actions: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    bets_in: Counter[str] = field(default_factory=Counter)
    """Accepted stakes net of refunded ones, by currency (minor units)."""
    wins_out: Counter[str] = field(default_factory=Counter)
    """Credited wins, by currency (minor units)."""
    controls: Counter[str] = field(default_factory=Counter)
    """Players given responsible-gaming controls before play, by what they were given."""
    bonus: Counter[str] = field(default_factory=Counter)
    """Campaigns granted, free spins played, jackpots and promotions won (counts)."""
    bonus_out: Counter[str] = field(default_factory=Counter)
    """Bonus money credited (minor units), by ``KIND CCC``: free spins' wins (BONUS),
    jackpots, promotions; outside the game's wins and GGR, as revenue reports them."""

    def __post_init__(self) -> None:
        if self.interval_started_s < 0:
            self.interval_started_s = self.started_s

    def record(self, operator: str, provider: str, action: str, status: str,
               latency_ms: float, protocol: str | None = None,
               wallet: str | None = None) -> None:  # fmt: skip
        self.actions[action] += 1
        scopes = [self.total, self._scope(self.operators, operator),
                  self._scope(self.providers, provider)]  # fmt: skip
        if protocol is not None:
            scopes.append(self._scope(self.protocols, protocol))
        if wallet is not None:
            scopes.append(self._scope(self.wallets, wallet))
        for scope in scopes:
            scope.record(status, latency_ms)

    @staticmethod
    def _scope(scopes: dict[str, Scope], key: str) -> Scope:
        found = scopes.get(key)
        if found is None:
            found = scopes[key] = Scope()
        return found

    def next_interval(self, now_s: float) -> None:
        for scope in (self.total, *self.operators.values(), *self.providers.values(),
                      *self.protocols.values(), *self.wallets.values()):  # fmt: skip
            scope.window_ms = []
        self.interval_started_s = now_s


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return sorted_values[index]


def _row(name: str, scope: Scope, seconds: float, final: bool) -> str:
    values = sorted(scope.latencies_ms) if final else sorted(scope.window_ms)
    rate = (scope.callbacks if final else len(scope.window_ms)) / seconds
    p50, p90, p99 = (percentile(values, q) for q in (0.5, 0.9, 0.99))
    return (
        f"{name[:NAME_WIDTH]:<{NAME_WIDTH}}{scope.callbacks:>9,} {rate:>6,.0f} {p50:>6.1f}"
        f" {p90:>6.1f} {p99:>6.1f} {scope.statuses['OK']:>8,} {scope.refused:>7,}"
        f" {scope.statuses['RETRY_LATER']:>5,}"
    )


def _capped(rows: list[str], hidden: int, what: str) -> list[str]:
    return [*rows, f"  ... and {hidden} more {what}"] if hidden > 0 else rows


def _counts(counter: Counter[str]) -> str:
    return "  ".join(f"{k} {v:,}" for k, v in counter.most_common()) or "-"


def game_line(game: str, tally: GameTally) -> str:
    observed = tally.observed_rtp
    shown = "-" if observed is None else format_percent(observed)
    band = "-" if not tally.stake else f"+/-{2 * tally.rtp_sigma * 100:.1f}"
    return (
        f"{game[:NAME_WIDTH]:<{NAME_WIDTH}}{tally.rounds:>8,} {tally.stake:>10,}"
        f" {tally.win:>10,} {shown:>8} {format_percent(tally.paytable.rtp):>10} {band:>9}"
    )


def summary_lines(stats: Stats, now_s: float, final: bool) -> list[str]:
    """The one-screen summary: rows per operator and provider (callbacks, rate, latency
    percentiles and outcomes; rate and latency over the last interval, or over the whole run
    when ``final``; the final report has a row per provider protocol and per wallet mode
    too, which the live screen leaves out to stay one screen), the statuses and actions,
    each game's observed RTP next to its configured one (with two standard deviations of the
    rounds played so far), and money."""
    elapsed = max(1e-3, now_s - stats.started_s)
    interval = max(1e-3, now_s - stats.interval_started_s)
    seconds = elapsed if final else interval
    window = "whole run" if final else f"last {interval:.1f} s"
    lines = [
        f"simulation {elapsed:,.1f} s  {stats.total.callbacks:,} callbacks"
        f"  {stats.total.callbacks / elapsed:,.0f}/s  (per s and ms: {window})",
        f"{'':<{NAME_WIDTH}}{'callbacks':>9} {'per s':>6} {'p50 ms':>6} {'p90 ms':>6}"
        f" {'p99 ms':>6} {'OK':>8} {'refused':>7} {'retry':>5}",
        _row("all", stats.total, seconds, final),
    ]
    shown = None if final else ROWS_MAX  # the final report is printed once: every row
    groups = [("operator", stats.operators), ("provider", stats.providers)]
    if final:
        groups += [("proto", stats.protocols), ("wallet", stats.wallets)]
    for label, scopes in groups:
        names = sorted(scopes)
        rows = [_row(f"{label} {n}", scopes[n], seconds, final) for n in names[:shown]]
        lines += _capped(rows, len(names) - len(rows), f"{label}s")
    lines += [
        f"outcomes: {_counts(stats.total.statuses)}",
        f"actions:  {_counts(stats.actions)}",
        f"{'game':<{NAME_WIDTH}}{'rounds':>8} {'stakes':>10} {'wins':>10} {'RTP':>8}"
        f" {'configured':>10} {'2 sigma':>9}",
    ]
    games = sorted(stats.games, key=lambda g: -stats.games[g].rounds)
    rows = [game_line(g, stats.games[g]) for g in games[:shown]]
    lines += _capped(rows, len(games) - len(rows), "games")
    money = "  ".join(
        f"{cur} in {stats.bets_in[cur]:,} out {stats.wins_out[cur]:,}"
        f" GGR {stats.bets_in[cur] - stats.wins_out[cur]:,}"
        for cur in sorted(set(stats.bets_in) | set(stats.wins_out))
    )
    lines.append(f"money (minor units): {money or '-'}")
    if final and (stats.bonus or stats.bonus_out):
        lines.append(f"bonus money (outside GGR): {_counts(stats.bonus)};"
                     f" credited: {_counts(stats.bonus_out)}")  # fmt: skip
    if final and stats.controls:  # the live screen has no line to spare
        refused = Counter({s: stats.total.statuses[s] for s in ("PLAYER_BLOCKED", "LIMIT_EXCEEDED")
                           if stats.total.statuses[s]})  # fmt: skip
        lines.append(f"player controls: {_counts(stats.controls)}; refused: {_counts(refused)}")
    if stats.errors:
        lines.append(f"errors:   {_counts(stats.errors)}")
    return lines


def interval_line(stats: Stats, now_s: float) -> str:
    """One plain line for the last interval, for logs and pipes."""
    window = sorted(stats.total.window_ms)
    interval = max(1e-3, now_s - stats.interval_started_s)
    rtps = " ".join(
        f"{g}={'-' if t.observed_rtp is None else format_percent(t.observed_rtp)}"
        f"/{format_percent(t.paytable.rtp)}"
        for g, t in sorted(stats.games.items())
    )
    total = stats.total
    return (
        f"t={now_s - stats.started_s:.1f}s callbacks={total.callbacks}"
        f" rate={len(window) / interval:.0f}/s p50={percentile(window, 0.5):.1f}ms"
        f" p90={percentile(window, 0.9):.1f}ms p99={percentile(window, 0.99):.1f}ms"
        f" ok={total.statuses['OK']} refused={total.refused}"
        f" retried={total.statuses['RETRY_LATER']} errors={sum(stats.errors.values())}"
        f" rtp(observed/configured) {rtps}"
    )


CLEAR_SCREEN = "\x1b[2J"
HOME = "\x1b[H"
CLEAR_LINE_END = "\x1b[K"
CLEAR_SCREEN_END = "\x1b[J"


def frame(lines: Iterable[str], columns: int, rows: int, first: bool) -> str:
    """One redraw of the screen: cursor home, each line cut to the terminal's width and
    cleared to its end, the rest of the screen cleared (the whole screen the first time), so
    that the summary replaces itself instead of scrolling."""
    shown = [line[:columns] for line in lines][: max(1, rows - 1)]
    body = "".join(f"{line}{CLEAR_LINE_END}\n" for line in shown)
    return (CLEAR_SCREEN if first else "") + HOME + body + CLEAR_SCREEN_END


def is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


class LivePrinter:
    """Redraws the summary in place each interval on a terminal; on anything else writes one
    plain line per interval. The final report is the whole summary, plain, either way."""

    def __init__(self, stream: TextIO, terminal: bool | None = None):
        self.stream = stream
        self.terminal = is_terminal(stream) if terminal is None else terminal
        self._drawn = False

    def __call__(self, stats: Stats, now_s: float, final: bool) -> None:
        if final:
            if self.terminal and self._drawn:
                self.stream.write(HOME + CLEAR_SCREEN_END)
            self.stream.write("\n".join(summary_lines(stats, now_s, final=True)) + "\n")
        elif self.terminal:
            size = shutil.get_terminal_size()
            lines = summary_lines(stats, now_s, final=False)
            self.stream.write(frame(lines, size.columns, size.lines, first=not self._drawn))
            self._drawn = True
        else:
            self.stream.write(interval_line(stats, now_s) + "\n")
        self.stream.flush()
