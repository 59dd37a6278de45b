"""The benchmark's traffic: an open-loop schedule of canonical wallet callbacks with a realistic
mix, written as signed request files for the load generator, and the reading of its answers.

Pure code apart from file writing: the same seed gives the same schedule.

The mix (of callbacks): about 60% bets, 35% wins, 4% rollbacks and 1% duplicate retries. Each
new bet decides its round's fate when it is placed: a win follows it (35 of 60 bets), a
rollback follows it (4 of 60), or the round is lost and closed with the bet (the rest); 1 bet in
60 is also sent a second time, byte for byte, as a provider's retry. A follow-up is sent between
``gap_s`` seconds after its bet, like a player watching the reels. A player plays one round at a
time: the bench draws players from a queue of idle ones, so with 10,000 players each plays a few
rounds a minute even at the highest rate.
"""

from __future__ import annotations

import heapq
import json
import random
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agg_ingress.client import encode_body, signed_headers

MIX = {"bet": 0.60, "win": 0.35, "rollback": 0.04, "duplicate": 0.01}
BET_AMOUNTS = (10, 20, 50, 100, 200)
WIN_MULTIPLES = (0.0, 0.5, 1.0, 2.0, 3.0)


@dataclass(frozen=True)
class Player:
    operator: str
    player: str
    currency: str
    game: str
    provider: str
    token: str = ""


@dataclass
class Call:
    """One callback of the schedule."""

    at_us: int
    kind: str  # bet | win | rollback | duplicate
    player: int  # index into the players
    action: str  # the endpoint: bet | win | rollback (a duplicate repeats a bet)
    txn: str
    amount: int = 0
    ref_txn: str | None = None
    round_id: str = ""
    round_closed: bool = False
    origin: int | None = None  # a duplicate's original call, index in the schedule


@dataclass
class Answer:
    code: int
    status: str
    latency_us: int
    late_us: int
    error: str = ""

    @property
    def final(self) -> bool:
        """An answer a provider would not retry (no transport error, no 5xx)."""
        return self.code != 0 and self.code < 500

    @property
    def label(self) -> str:
        return f"{self.code} {self.status}" if self.code else f"no answer ({self.error})"


@dataclass
class Schedule:
    calls: list[Call]
    offered_per_s: float
    seconds: float
    kinds: Counter[str] = field(default_factory=Counter)


def build_schedule(
    player_count: int,
    rate_per_s: float,
    seconds: float,
    *,
    prefix: str,
    rng: random.Random,
    gap_s: tuple[float, float] = (0.5, 1.5),
    duplicate_gap_s: tuple[float, float] = (0.2, 0.6),
) -> Schedule:
    """Callbacks at a constant offered rate, each slot taken by a due follow-up or a new bet."""
    n = int(rate_per_s * seconds)
    interval_us = 1e6 / rate_per_s
    idle: deque[int] = deque(rng.sample(range(player_count), player_count))
    due: list[tuple[int, int, Call]] = []  # (due_us, seq, follow-up)
    calls: list[Call] = []
    bets_by_txn: dict[str, int] = {}
    p_win = MIX["win"] / MIX["bet"]
    p_rollback = MIX["rollback"] / MIX["bet"]
    p_duplicate = MIX["duplicate"] / MIX["bet"]
    seq = 0
    for k in range(n):
        at = int(k * interval_us)
        if due and due[0][0] <= at:
            call = heapq.heappop(due)[2]
            call.at_us = at
            if call.kind == "duplicate":
                call.origin = bets_by_txn[call.txn]
            elif call.kind in ("win", "rollback"):
                idle.append(call.player)
            calls.append(call)
            continue
        if not idle:
            raise ValueError(f"{player_count} players are too few for {rate_per_s}/s")
        player = idle.popleft()
        seq += 1
        fate = rng.random()
        amount = rng.choice(BET_AMOUNTS)
        bet = Call(
            at,
            "bet",
            player,
            "bet",
            f"{prefix}-t{seq}",
            amount,
            round_id=f"{prefix}-r{seq}",
            round_closed=fate >= p_win + p_rollback,
        )
        bets_by_txn[bet.txn] = len(calls)
        calls.append(bet)
        follow_at = at + int(rng.uniform(*gap_s) * 1e6)
        if fate < p_win:
            win = int(amount * rng.choice(WIN_MULTIPLES))
            follow = Call(
                0,
                "win",
                player,
                "win",
                f"{prefix}-w{seq}",
                win,
                round_id=bet.round_id,
                round_closed=True,
            )
            heapq.heappush(due, (follow_at, len(calls) * 2, follow))
        elif fate < p_win + p_rollback:
            follow = Call(
                0,
                "rollback",
                player,
                "rollback",
                f"{prefix}-b{seq}",
                ref_txn=bet.txn,
                round_id=bet.round_id,
            )
            heapq.heappush(due, (follow_at, len(calls) * 2, follow))
        else:
            idle.append(player)
        if rng.random() < p_duplicate:
            again = Call(
                0,
                "duplicate",
                player,
                "bet",
                bet.txn,
                amount,
                round_id=bet.round_id,
                round_closed=bet.round_closed,
            )
            dup_at = at + int(rng.uniform(*duplicate_gap_s) * 1e6)
            heapq.heappush(due, (dup_at, len(calls) * 2 + 1, again))
    return Schedule(calls, rate_per_s, seconds, Counter(c.kind for c in calls))


def callback_fields(call: Call, player: Player, request_id: str) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "request_id": request_id,
        "session_token": player.token,
        "player_id": player.player,
        "currency": player.currency,
        "game_id": player.game,
        "transaction_id": call.txn,
        "round_id": call.round_id,
    }
    if call.action == "rollback":
        fields["reference_transaction_id"] = call.ref_txn
    else:
        fields["amount"] = call.amount
        fields["round_closed"] = call.round_closed
    return fields


def request_line(
    secret: bytes, method: str, path: str, body: bytes, at_us: int, timestamp: int
) -> str:
    headers = signed_headers(secret, method, path, body, timestamp)
    return json.dumps(
        {"at_us": at_us, "method": method, "path": path, "headers": headers, "body": body.decode()},
        separators=(",", ":"),
    )


def callback_lines(
    calls: Sequence[Call],
    indices: Iterable[int],
    players: Sequence[Player],
    secrets: dict[str, bytes],
    *,
    timestamp: int,
    prefix: str,
) -> Iterator[str]:
    """Signed request lines; a duplicate repeats its original's bytes (same request id)."""
    for i in indices:
        call = calls[i]
        player = players[call.player]
        origin = call.origin if call.origin is not None else i
        body = encode_body(callback_fields(calls[origin], player, f"{prefix}-q{origin}"))
        path = f"/v1/providers/{player.provider}/wallet/{call.action}"
        yield request_line(secrets[player.provider], "POST", path, body, call.at_us, timestamp)


def write_lines(path: Path, lines: Iterable[str]) -> int:
    count = 0
    with path.open("w") as out:
        for line in lines:
            out.write(line)
            out.write("\n")
            count += 1
    return count


def read_answers(path: Path) -> list[tuple[Answer, dict[str, Any]]]:
    """The load generator's output, in request order: each answer and its decoded body."""
    answers = []
    with path.open() as f:
        for line in f:
            row = json.loads(line)
            if row.get("err"):  # e.g. the timeout struck while the body was being read
                row["code"] = 0
            body: dict[str, Any] = {}
            if row.get("body"):
                try:
                    decoded = json.loads(row["body"])
                    body = decoded if isinstance(decoded, dict) else {}
                except ValueError:
                    body = {}
            status = str(body.get("status", "")) if row["code"] else ""
            answers.append(
                (
                    Answer(row["code"], status, row["lat_us"], row["late_us"], row.get("err", "")),
                    body,
                )
            )
    return answers
