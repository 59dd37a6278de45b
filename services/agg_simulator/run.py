"""``aggregator simulate``: simulated providers and players against a running ingress.

Opens a session per player through the operator API, then plays rounds like a real game:
a bet, usually a win (sometimes zero), the round closed; now and then a rollback of the bet,
a duplicate callback, a retry after 503, and a rollback that overtakes its bet. A live
one-screen summary shows rates, latency percentiles, statuses and money; at the end every
player's balance at the operator's wallet is checked against the answers received.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from agg_config.settings import Settings
from agg_config.tenants import Tenants
from agg_ingress.client import encode_body, signed_headers
from agg_simulator.model import Expectation

PlayerKey = tuple[str, str, str]  # operator, player, currency


@dataclass
class Stats:
    started: float = field(default_factory=time.monotonic)
    statuses: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    latencies_ms: array[float] = field(default_factory=lambda: array("f"))
    window: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    money_in: int = 0
    money_out: int = 0
    latency_samples_max: int = 2_000_000

    def record(self, action: str, status: str, latency_ms: float) -> None:
        self.actions[action] += 1
        self.statuses[status] += 1
        if len(self.latencies_ms) < self.latency_samples_max:
            self.latencies_ms.append(latency_ms)
        self.window.append(latency_ms)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return sorted_values[index]


class Simulator:
    def __init__(self, settings: Settings, tenants: Tenants, base_url: str, *,
                 players: int, concurrency: int, seed: int = 7):  # fmt: skip
        self.settings = settings
        self.tenants = tenants
        self.base_url = base_url
        self.player_count = players
        self.concurrency = concurrency
        self.random = random.Random(seed)
        self.stats = Stats()
        self.expect = Expectation()
        self.sessions: list[dict[str, Any]] = []
        self.http: httpx.AsyncClient | None = None
        self.run_id = f"{int(time.time()):x}"
        self._txn = 0

    def _next_id(self, prefix: str) -> str:
        self._txn += 1
        return f"{prefix}-{self.run_id}-{self._txn}"

    async def _post(
        self, secret: bytes, path: str, fields: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        assert self.http is not None
        body = encode_body(fields)
        response = await self.http.post(
            path, content=body, headers=signed_headers(secret, "POST", path, body)
        )
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, {"status": f"HTTP_{response.status_code}"}

    async def open_sessions(self) -> None:
        kafka_ops = [o for o in self.tenants.operators if o.wallet.mode == "kafka"]
        for i in range(self.player_count):
            op = kafka_ops[i % len(kafka_ops)]
            games = [g for g in self.tenants.games if g.provider in op.providers
                     and not g.restricted_countries]  # fmt: skip
            game = games[i % len(games)]
            currency = op.currencies[0]
            player = f"sim-{self.run_id}-{i}"
            status, body = await self._post(
                op.secret.reveal(),
                f"/v1/operators/{op.id}/sessions",
                {"player_id": player, "currency": currency, "country": "MT",
                 "game_id": game.id, "mode": "real"},
            )  # fmt: skip
            if status != 201:
                raise RuntimeError(f"opening a session failed: {status} {body}")
            provider = self.tenants.provider(game.provider)
            assert provider is not None
            self.sessions.append({
                "operator": op.id, "player": player, "currency": currency, "game": game.id,
                "provider": provider.id, "secret": provider.shared_secret(),
                "token": body["session_token"],
            })  # fmt: skip

    async def callback(self, session: dict[str, Any], action: str, fields: dict[str, Any],
                       retries_max: int = 20) -> dict[str, Any]:  # fmt: skip
        """One callback, retried with the same transaction id while the answer is 503."""
        body = {"request_id": self._next_id("rq"), "session_token": session["token"],
                "player_id": session["player"], "currency": session["currency"],
                **fields}  # fmt: skip
        path = f"/v1/providers/{session['provider']}/wallet/{action}"
        for attempt in range(retries_max):
            started = time.perf_counter()
            try:
                status, answer = await self._post(session["secret"], path, body)
            except httpx.HTTPError as exc:
                self.stats.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.2)
                continue
            latency = (time.perf_counter() - started) * 1000
            self.stats.record(action, str(answer.get("status")), latency)
            if status != 503:
                return answer
            await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
        return {"status": "GAVE_UP"}

    async def play_round(self, session: dict[str, Any]) -> None:
        rnd = self._next_id("rnd")
        player: PlayerKey = (session["operator"], session["player"], session["currency"])
        provider = session["provider"]
        amount = self.random.choice([10, 20, 50, 100, 200, 500])
        roll = self.random.random()
        if roll < 0.01:  # a rollback that overtakes its bet: the bet must then be refused
            bet_txn = self._next_id("tx")
            rb = await self.callback(session, "rollback", {
                "transaction_id": self._next_id("rb"), "reference_transaction_id": bet_txn,
                "round_id": rnd, "game_id": session["game"]})  # fmt: skip
            answer = await self.callback(session, "bet", {
                "transaction_id": bet_txn, "round_id": rnd, "game_id": session["game"],
                "amount": amount, "round_closed": True})  # fmt: skip
            self.expect.bet_answered(player, provider, bet_txn, amount, answer["status"])
            self.expect.rollback_answered(provider, bet_txn, rb["status"])
            return
        bet_txn = self._next_id("tx")
        bet_fields = {"transaction_id": bet_txn, "round_id": rnd, "game_id": session["game"],
                      "amount": amount, "round_closed": False}  # fmt: skip
        answer = await self.callback(session, "bet", bet_fields)
        self.expect.bet_answered(player, provider, bet_txn, amount, answer["status"])
        if answer["status"] == "OK":
            self.stats.money_in += amount
        if self.random.random() < 0.02:  # the provider repeats the callback
            again = await self.callback(session, "bet", bet_fields)
            if again["status"] != answer["status"]:
                self.stats.errors["duplicate answered differently"] += 1
        if answer["status"] != "OK":
            return
        if roll < 0.05:  # the game is cancelled: roll the bet back
            rb = await self.callback(session, "rollback", {
                "transaction_id": self._next_id("rb"), "reference_transaction_id": bet_txn,
                "round_id": rnd, "game_id": session["game"]})  # fmt: skip
            self.expect.rollback_answered(provider, bet_txn, rb["status"])
            if rb["status"] == "OK":
                self.stats.money_in -= amount
            return
        win = self.random.choice([0, 0, 0, amount // 2, amount, amount * 2, amount * 5])
        win_txn = self._next_id("tx")
        answer = await self.callback(session, "win", {
            "transaction_id": win_txn, "round_id": rnd, "game_id": session["game"],
            "amount": win, "round_closed": True})  # fmt: skip
        self.expect.win_answered(player, provider, win_txn, win, answer["status"])
        if answer["status"] == "OK":
            self.stats.money_out += win

    async def run(self, duration_s: float, on_tick: Callable[[Simulator, bool], None]) -> None:
        limits = httpx.Limits(
            max_connections=self.concurrency, max_keepalive_connections=self.concurrency
        )
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10, limits=limits) as http:
            self.http = http
            await self.open_sessions()
            self.stats = Stats()
            deadline = time.monotonic() + duration_s

            async def player_loop(index: int) -> None:
                while time.monotonic() < deadline:
                    session = self.sessions[(index + self._txn) % len(self.sessions)]
                    await self.play_round(session)

            async def ticker() -> None:
                while time.monotonic() < deadline:
                    await asyncio.sleep(1)
                    on_tick(self, False)

            tick = asyncio.create_task(ticker())
            await asyncio.gather(*(player_loop(i) for i in range(self.concurrency)))
            tick.cancel()
            on_tick(self, True)


def render(sim: Simulator, final: bool) -> str:
    s = sim.stats
    elapsed = max(0.001, time.monotonic() - s.started)
    total = sum(s.actions.values())
    window = sorted(s.window)
    s.window = []
    overall = sorted(s.latencies_ms) if final else window
    label = "whole run" if final else "last second"
    lines = [
        f"casino aggregator simulation  {elapsed:6.1f}s  {total} callbacks  "
        f"{total / elapsed:7.1f}/s  ({len(window)} in the last second)",
        f"latency ms ({label}): p50 {percentile(overall, 0.5):6.1f}  p90 "
        f"{percentile(overall, 0.9):6.1f}  p99 {percentile(overall, 0.99):6.1f}  "
        f"max {overall[-1] if overall else 0:6.1f}",
        "actions:  " + "  ".join(f"{k} {v}" for k, v in sorted(s.actions.items())),
        "statuses: " + "  ".join(f"{k} {v}" for k, v in s.statuses.most_common()),
        f"money (minor units): bets in {s.money_in}  wins out {s.money_out}  "
        f"GGR {s.money_in - s.money_out}",
    ]
    if s.errors:
        lines.append("errors:   " + "  ".join(f"{k} {v}" for k, v in s.errors.items()))
    return "\n".join(lines)


def live_printer(stream: Any = sys.stdout) -> Callable[[Simulator, bool], None]:
    tty = hasattr(stream, "isatty") and stream.isatty()

    def on_tick(sim: Simulator, final: bool) -> None:
        text = render(sim, final)
        if tty and not final:
            stream.write("\x1b[2J\x1b[H" + text + "\n")
        else:
            stream.write(text + "\n\n")
        stream.flush()

    return on_tick
