"""``python -m agg_simulator`` (also ``aggregator simulate``): drive traffic through a running
ingress for a while, then check every player's money at the operator's wallet, one verdict
per operator (the Kafka reference wallet, the reference HTTP wallet behind the bridge and
the reference operator of a transfer wallet keep the same ledger, ``wallet.players``; a
transfer-wallet player's funds are all withdrawn back to it before the check).

Exit status: 0 when every player's balance change at the wallet equals what the answers
promised (minus accepted bets, plus credited wins and refunds), 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

import psycopg

from agg_config.settings import load_settings
from agg_config.tenants import load_tenants
from agg_simulator.model import Expectation
from agg_simulator.paytable import RTP_DEFAULT, parse_rtp_percent
from agg_simulator.run import Simulator
from agg_simulator.summary import LivePrinter


@dataclass(frozen=True)
class OperatorVerdict:
    """The money check of one operator's players: how many, and the mismatches."""

    operator: str
    wallet_mode: str
    players: int
    problems: tuple[str, ...]

    def line(self) -> str:
        head = f"money check {self.operator} ({self.wallet_mode})"
        if self.problems:
            return f"{head}: FAILED for {len(self.problems)} of {self.players} players"
        return f"{head}: OK for {self.players} players"


def per_operator(expect: Expectation, problems: list[tuple[str, str]],
                 wallet_modes: Mapping[str, str]) -> list[OperatorVerdict]:  # fmt: skip
    """The verdict of every operator that had players in the run or mismatches."""
    players: Counter[str] = Counter(op for op, _, _ in expect.players)
    found: dict[str, list[str]] = {}
    for op, line in problems:
        found.setdefault(op, []).append(line)
    return [
        OperatorVerdict(op, wallet_modes.get(op, "?"), players[op], tuple(found.get(op, ())))
        for op in sorted(set(players) | set(found))
    ]


def money_check(
    expect: Expectation, player_prefix: str, database_url: str, settle_s: float = 20.0
) -> list[tuple[str, str]]:
    """Mismatches between the wallet and the answers, as (operator, description), for the
    players whose id starts with ``player_prefix``; waits up to ``settle_s`` for credits
    still owed (a win answered RETRY_LATER is retried by the saga until acknowledged)."""
    deadline = time.monotonic() + settle_s
    while True:
        problems = []
        with psycopg.connect(database_url) as conn:
            rows = conn.execute(
                "select operator_id, player_id, currency, balance - opening_balance "
                "from wallet.players where player_id like %s",
                (f"{player_prefix}%",),
            ).fetchall()
        changes = {(op, player, cur): change for op, player, cur, change in rows}
        for key in expect.players | set(changes):
            expected = expect.expected_change(key)
            actual = changes.get(key, 0)
            if expected != actual:
                problems.append((key[0], f"{key}: wallet moved {actual}, answers say {expected}"))
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(1)


def projection_check(
    player_prefix: str,
    database_url: str,
    settle_s: float = 30.0,
    held: Mapping[tuple[str, str, str], int | None] | None = None,
) -> list[str]:
    """Players whose projected balance (the last one the wallet reported in the journal)
    differs from the wallet's own; for a transfer-wallet player (``held``) the projected
    balance is the one the aggregator holds, and must be the one the last transfer answered.
    Waits up to ``settle_s`` for the projector to catch up."""
    held = held or {}
    deadline = time.monotonic() + settle_s
    while True:
        with psycopg.connect(database_url) as conn:
            if conn.execute("select to_regclass('projection.balances')").fetchone() == (None,):
                return ["the projection schema does not exist: is the projector running?"]
            rows = conn.execute(
                "select w.operator_id, w.player_id, w.currency, w.balance, p.balance"
                " from wallet.players w"
                " left join projection.balances p using (operator_id, player_id, currency)"
                " where w.player_id like %s",
                (f"{player_prefix}%",),
            ).fetchall()
        problems = []
        for op, player, currency, wallet, projected in rows:
            key = (op, player, currency)
            if key in held and held[key] != projected:
                problems.append(f"{op}/{player}: held {held[key]}, projection {projected}")
            elif key not in held and wallet != projected:
                problems.append(f"{op}/{player}: wallet {wallet}, projection {projected}")
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(1)


def _rtp(text: str) -> Fraction:
    try:
        return parse_rtp_percent(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _game_rtp(text: str) -> tuple[str, Fraction]:
    game, sep, percent = text.partition("=")
    if not sep or not game.strip():
        raise argparse.ArgumentTypeError(f"GAME=PERCENT, such as nova-starfall=94.5, not {text!r}")
    return game.strip(), _rtp(percent)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aggregator simulate", description=__doc__)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of traffic")
    parser.add_argument("--players", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32, help="callbacks in flight")
    parser.add_argument("--base-url", default=None, help="ingress URL (default from settings)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--rtp", type=_rtp, default=RTP_DEFAULT, metavar="PERCENT",
        help="every game's return to player, in percent (default 96)",
    )  # fmt: skip
    parser.add_argument(
        "--game-rtp", type=_game_rtp, action="append", default=[], metavar="GAME=PERCENT",
        help="one game's own RTP (repeatable), e.g. --game-rtp nova-starfall=94.5",
    )  # fmt: skip
    parser.add_argument(
        "--skip-projections", action="store_true", help="no projector runs: skip its check"
    )
    args = parser.parse_args(argv)
    settings = load_settings()
    tenants = load_tenants(settings.tenants_file)
    base_url = args.base_url or f"http://{settings.ingress_host}:{settings.ingress_port}"
    try:
        sim = Simulator(settings, tenants, base_url, players=args.players,
                        concurrency=args.concurrency, seed=args.seed, rtp=args.rtp,
                        game_rtp=dict(args.game_rtp))  # fmt: skip
    except ValueError as exc:
        parser.error(str(exc))
    print(f"opening {args.players} sessions (players sim-{sim.run_id}-*) at {base_url} ...",
          flush=True)  # fmt: skip
    asyncio.run(sim.run(args.duration, LivePrinter(sys.stdout)))
    prefix = f"sim-{sim.run_id}-"
    mismatches = money_check(sim.expect, prefix, settings.database_url)
    mismatches += [(line.split("/", 1)[0], line) for line in sim.transfer_problems]
    players = len(sim.expect.players)
    for verdict in per_operator(sim.expect, mismatches, sim.wallet_modes):
        print(verdict.line())
    if mismatches:
        print(f"MONEY CHECK FAILED for {len(mismatches)} of {players} players:")
        for _, line in mismatches[:20]:
            print("  " + line)
        return 1
    print(f"money check: OK for all {players} players (wallet balances match every answer)")
    if args.skip_projections:
        return 0
    problems = projection_check(prefix, settings.database_url, held=sim.held)
    if problems:
        print(f"PROJECTION CHECK FAILED for {len(problems)} players:")
        for line in problems[:20]:
            print("  " + line)
        return 1
    print(f"projection check: OK (projected balances equal the wallet's for all {players})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
