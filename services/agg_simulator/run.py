"""``aggregator simulate``: simulated providers and players against a running ingress.

Opens a session per player through the operator API, then plays rounds like a real game:
a bet, a win drawn from the game's paytable (most rounds lose; the expected payout is the
game's configured RTP exactly: ``agg_simulator.paytable``), the round closed; now and then a
rollback of the bet, a duplicate callback, a retry after 503, and a rollback that overtakes
its bet. A live one-screen summary (``agg_simulator.summary``) shows rates, latency
percentiles, outcomes, money and each game's observed RTP; at the end every player's balance
at the operator's wallet is checked against the answers received.

A transfer-wallet operator's players (``wallet.mode: transfer``) are given funds first: the
reference operator (``agg_wallet.transfers``) debits each one's balance at the operator and
deposits it into the balance the aggregator holds, and at the end of the run withdraws all of
it back, so the money check reads the operator's balances the same way for every operator.

Callbacks are built and sent in one place, ``agg_simulator.clients.send`` (with the
provider's protocol client from ``agg_simulator.providers``); this module only decides what
a round does.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import httpx
import psycopg

from agg_config.settings import Settings
from agg_config.tenants import Game, Operator, Tenants
from agg_domain.statuses import Action, WinKind
from agg_ingress.adapters import evolution
from agg_simulator.clients import (
    Answer,
    Call,
    Session,
    grant_campaign,
    open_session,
    send,
    start_session,
    state_controls,
)
from agg_simulator.model import Expectation
from agg_simulator.paytable import RTP_DEFAULT, Paytable, paytable_for
from agg_simulator.providers import ProviderClient, client_for
from agg_simulator.summary import GameTally, Stats
from agg_wallet.store import WalletStore
from agg_wallet.transfers import ReferenceTransfers, TransferResult

PlayerKey = tuple[str, str, str]  # operator, player, currency
STAKES = (10, 20, 50, 100, 200, 500)
"""Stakes in minor units, drawn uniformly per round: multiples of every paytable's
``stake_step``, so that every win is a whole number of minor units."""
WAGER_LIMIT = 2_000
"""The day's wager limit of one player in ten (index 3 of each ten): reached after a few
rounds, after which that player's bets are refused LIMIT_EXCEEDED."""


def controls_for(index: int, currency: str) -> tuple[str, dict[str, object]] | None:
    """The responsible-gaming controls the run states for its player ``index`` before play:
    a day's wager limit for one in ten, a self-exclusion for one in twenty."""
    if index % 10 == 3:
        limit = {"kind": "wager", "period": "day", "amount": WAGER_LIMIT, "currency": currency}
        return "wager limit", {"limits": [limit]}
    if index % 20 == 7:
        return "self-excluded", {"self_excluded": True}
    return None


FREE_SPINS = 5
FREE_SPIN_BET = 20
"""One player in eight (index 5 of each eight) at a provider whose protocol carries free
rounds is granted a campaign of FREE_SPINS spins of FREE_SPIN_BET before play, and plays
them first: bets that move no money, wins credited as bonus money."""
FREE_ROUND_PROTOCOLS = frozenset({"canonical-v1", "pragmatic-v1", "hub88-v1"})
ZERO_STAKE_PROTOCOLS = frozenset({"canonical-v1", "pragmatic-v1", "evolution-v1"})
"""The protocols with zero-stake credits (jackpot and promotion wins)."""
JACKPOT = (0.002, 5_000)
PROMO = (0.004, 1_000)
"""(chance per settled round, amount): a jackpot won, a promotion's prize dropped."""


def gets_campaign(index: int, protocol: str) -> bool:
    return index % 8 == 5 and protocol in FREE_ROUND_PROTOCOLS


OnTick = Callable[[Stats, float, bool], None]
"""Called once per interval with the stats, the monotonic time and whether the run is over."""


class Simulator:
    def __init__(self, settings: Settings, tenants: Tenants, base_url: str, *,
                 players: int, concurrency: int, seed: int = 7,
                 rtp: Fraction = RTP_DEFAULT,
                 game_rtp: Mapping[str, Fraction] | None = None):  # fmt: skip
        """``rtp``: every game's return to player, unless ``game_rtp`` gives the game's own
        (ValueError for a game the tenants file does not have, or an RTP out of range)."""
        self.settings = settings
        self.tenants = tenants
        self.base_url = base_url
        self.player_count = players
        self.concurrency = concurrency
        self.random = random.Random(seed)
        unknown = sorted(set(game_rtp or {}) - {g.id for g in tenants.games})
        if unknown:
            raise ValueError(f"no such game in the tenants file: {', '.join(unknown)}")
        self.paytables: dict[str, Paytable] = {
            g.id: paytable_for((game_rtp or {}).get(g.id, rtp)) for g in tenants.games
        }
        self.clients: dict[str, ProviderClient] = {}
        """The client of each provider the simulator can speak for (``providers``)."""
        for provider in tenants.providers:
            client = client_for(provider) if provider.enabled else None
            if client is not None:
                self.clients[provider.id] = client
        self.wallet_modes = {op.id: op.wallet.mode for op in tenants.operators}
        self.stats = Stats(time.monotonic())
        self.expect = Expectation()
        self.sessions: list[Session] = []
        self.http: httpx.AsyncClient | None = None
        self.run_id = f"{int(time.time()):x}"
        self._txn = 0
        self.transfers: dict[str, ReferenceTransfers] = {}
        """The reference operator of each transfer-wallet operator, during a run."""
        self.held: dict[PlayerKey, int | None] = {}
        """A transfer-wallet player's held balance as the last transfer answered it."""
        self.transfer_problems: list[str] = []
        self.controls: Counter[str] = Counter()
        """Players given responsible-gaming controls before play, by what they were given."""
        self.free_spins: dict[tuple[str, str], tuple[str, int]] = {}
        self.campaigns_granted = 0
        """(operator, player) -> (campaign id, spins left) of the players granted one."""

    def _next_id(self, prefix: str) -> str:
        self._txn += 1
        return f"{prefix}-{self.run_id}-{self._txn}"

    def playable(self) -> list[tuple[Operator, list[Game]]]:
        """The operators a run plays at (every one: in the local stack the Kafka and the HTTP
        wallets are reference wallets, whose ledger in ``wallet.*`` the money check reads) with
        the games each offers that the simulator can play: of a provider it has a client for,
        and restricted in no country."""
        found = []
        for op in self.tenants.operators:
            games = [g for g in self.tenants.games if g.provider in op.providers
                     and g.provider in self.clients and not g.restricted_countries]  # fmt: skip
            if games:
                found.append((op, games))
        return found

    async def open_sessions(self) -> None:
        assert self.http is not None
        playable = self.playable()
        if not playable:
            raise RuntimeError("no operator offers a game this can play")
        for i in range(self.player_count):
            op, games = playable[i % len(playable)]
            game = games[(i // len(playable)) % len(games)]  # each operator's games in turn
            player = f"sim-{self.run_id}-{i}"
            session = await open_session(
                self.http, op, player, op.currencies[0], game.id, game.provider
            )
            client = self.clients[game.provider]
            transfers = self.transfers.get(op.id)
            if transfers is not None:  # funds into the held balance before play
                await self._transfer(transfers.deposit(player, op.currencies[0],
                                                       op.wallet.starting_balance,
                                                       self._next_id("dep")), op.id, player,
                                     op.currencies[0])  # fmt: skip
            stated = controls_for(i, op.currencies[0])  # after the deposit: it may refuse one
            if stated is not None:
                kind, controls = stated
                await state_controls(self.http, op, player, self._next_id("rg"), controls)
                self.controls[kind] += 1
            session = await start_session(self.http, client, session, self._next_id("rq"))
            if gets_campaign(i, client.protocol):
                campaign_id = self._next_id("fs")
                expires = datetime.now(UTC) + timedelta(hours=1)
                left = await grant_campaign(self.http, op, player, {
                    "campaign_id": campaign_id, "provider_id": game.provider,
                    "games": [game.id], "spins": FREE_SPINS, "bet_value": FREE_SPIN_BET,
                    "currency": op.currencies[0],
                    "expires_at": expires.isoformat().replace("+00:00", "Z")})  # fmt: skip
                self.free_spins[(op.id, player)] = (campaign_id, left)
                self.campaigns_granted += 1
            self.sessions.append(session)

    async def _transfer(self, pending: Awaitable[TransferResult], operator: str, player: str,
                        currency: str) -> TransferResult:  # fmt: skip
        result = await pending
        self.held[(operator, player, currency)] = result.held_balance
        if result.status != "OK":
            self.transfer_problems.append(
                f"{operator}/{player}: {result.direction} {result.transfer_id} {result.status}"
            )
        return result

    async def withdraw_all(self) -> None:
        """Every transfer-wallet player's held balance back to the operator."""
        for session in self.sessions:
            transfers = self.transfers.get(session.operator)
            if transfers is not None:
                await self._transfer(
                    transfers.withdraw(session.player, session.currency, None,
                                       self._next_id("wd")),
                    session.operator, session.player, session.currency,
                )  # fmt: skip

    async def callback(self, session: Session, call: Call, retries_max: int = 20) -> Answer:
        """One callback, retried with the same request and transaction ids while the answer
        is 503 or, in a protocol that answers HTTP 200 to everything, RETRY_LATER; every
        attempt is counted in the stats."""
        assert self.http is not None
        client = self.clients[session.provider]
        action = call.action.value.lower()
        request_id = self._next_id("rq")
        for attempt in range(retries_max):
            started = time.perf_counter()
            try:
                answer = await send(self.http, client, session, call, request_id)
            except httpx.HTTPError as exc:
                self.stats.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.2)
                continue
            latency_ms = (time.perf_counter() - started) * 1000
            self.stats.record(session.operator, session.provider, action, answer.status,
                              latency_ms, client.protocol,
                              self.wallet_modes[session.operator])  # fmt: skip
            if answer.http_status != 503 and answer.status != "RETRY_LATER":
                return answer
            await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
        self.stats.errors["gave up after 503s"] += 1
        return Answer(503, "GAVE_UP")

    async def play_free_spin(self, session: Session, campaign_id: str, left: int) -> None:
        """One spin of the player's campaign: a bet that moves no money, its win (drawn from
        the game's paytable, as a paid spin's) credited as bonus money."""
        rnd = self._next_id("rnd")
        player: PlayerKey = (session.operator, session.player, session.currency)
        bet = Call(Action.BET, self._next_id("tx"), rnd, FREE_SPIN_BET, False,
                   campaign_id=campaign_id)  # fmt: skip
        answer = await self.callback(session, bet)
        if answer.status != "OK":
            self.stats.errors[f"free spin {answer.status}"] += 1
            self.free_spins.pop((session.operator, session.player), None)
            return
        self.free_spins[(session.operator, session.player)] = (campaign_id, left - 1)
        self.stats.bonus["free spins"] += 1
        win = self.paytables[session.game].play(FREE_SPIN_BET, self.random)
        win_txn = self._next_id("tx")
        credited = await self.callback(session, Call(Action.WIN, win_txn, rnd, win, True,
                                                     reference_transaction_id=bet.transaction_id,
                                                     campaign_id=campaign_id))  # fmt: skip
        self.expect.win_answered(player, session.provider, credited.transaction_id or win_txn,
                                 win, credited.status)  # fmt: skip
        if credited.status == "OK":
            self.stats.bonus_out[f"BONUS {session.currency}"] += win
        close_txn = self.clients[session.provider].end_of_round(rnd)
        if credited.status == "OK" and close_txn is not None:
            await self.callback(session, Call(Action.WIN, close_txn, rnd, 0, True))

    async def zero_stake_win(self, session: Session, kind: WinKind, amount: int) -> None:
        """A jackpot won or a promotion's prize: a credit with no stake, in a round of its
        own (pragmatic-v1's jackpotWin and promoWin, evolution-v1's promo_payout,
        canonical-v1's win_kind)."""
        player: PlayerKey = (session.operator, session.player, session.currency)
        txn = self._next_id("tx")
        client = self.clients.get(session.provider)
        protocol = client.protocol if client is not None else None
        if protocol == "pragmatic-v1":
            txn = ("jw:" if kind is WinKind.JACKPOT else "pw:") + txn
        elif protocol == "evolution-v1":
            txn = evolution.PROMO_PREFIX + txn
        answer = await self.callback(session, Call(Action.WIN, txn, self._next_id("rnd"),
                                                   amount, True, win_kind=kind))  # fmt: skip
        self.expect.win_answered(player, session.provider, answer.transaction_id or txn,
                                 amount, answer.status)  # fmt: skip
        if answer.status == "OK":
            self.stats.bonus["jackpots" if kind is WinKind.JACKPOT else "promotions"] += 1
            self.stats.bonus_out[f"{kind.value} {session.currency}"] += amount

    async def play_round(self, session: Session) -> None:
        free = self.free_spins.get((session.operator, session.player))
        if free is not None and free[1] > 0:
            await self.play_free_spin(session, *free)
            return
        rnd = self._next_id("rnd")
        player: PlayerKey = (session.operator, session.player, session.currency)
        provider = session.provider
        amount = self.random.choice(STAKES)
        roll = self.random.random()
        if roll < 0.01:  # a rollback that overtakes its bet: the bet must then be refused
            bet_txn = self._next_id("tx")
            rb = await self.callback(session, self._rollback(bet_txn, rnd, amount))
            answer = await self.callback(session, Call(Action.BET, bet_txn, rnd, amount, True))
            self.expect.bet_answered(player, provider, bet_txn, amount, answer.status)
            self.expect.rollback_answered(provider, bet_txn, rb.status)
            if answer.status == "OK":
                self.stats.bets_in[session.currency] += amount
            if answer.status == "OK" and rb.status == "OK":
                self.stats.bets_in[session.currency] -= amount
            return
        bet_txn = self._next_id("tx")
        bet = Call(Action.BET, bet_txn, rnd, amount, False)
        answer = await self.callback(session, bet)
        self.expect.bet_answered(player, provider, bet_txn, amount, answer.status)
        if answer.status == "OK":
            self.stats.bets_in[session.currency] += amount
        if self.random.random() < 0.02:  # the provider repeats the callback
            again = await self.callback(session, bet)
            if again.status != answer.status:
                self.stats.errors["duplicate answered differently"] += 1
        if answer.status != "OK":
            return
        if roll < 0.05:  # the game is cancelled: roll the bet back
            rb = await self.callback(session, self._rollback(bet_txn, rnd, amount))
            self.expect.rollback_answered(provider, bet_txn, rb.status)
            if rb.status == "OK":
                self.stats.bets_in[session.currency] -= amount
            return
        win = self.paytables[session.game].play(amount, self.random)
        self._tally(session.game).settle(amount, win)
        win_txn = self._next_id("tx")
        answer = await self.callback(
            session, Call(Action.WIN, win_txn, rnd, win, True, reference_transaction_id=bet_txn)
        )
        # keyed by the id the adapter forwarded (evolution's is derived from the bet's)
        self.expect.win_answered(player, provider, answer.transaction_id or win_txn, win,
                                 answer.status)  # fmt: skip
        if answer.status == "OK":
            self.stats.wins_out[session.currency] += win
        close_txn = self.clients[provider].end_of_round(rnd)
        if answer.status == "OK" and close_txn is not None:  # pragmatic's endRound: no money
            await self.callback(session, Call(Action.WIN, close_txn, rnd, 0, True))
        if self.clients[provider].protocol in ZERO_STAKE_PROTOCOLS:
            roll = self.random.random()
            if roll < JACKPOT[0]:
                await self.zero_stake_win(session, WinKind.JACKPOT, JACKPOT[1])
            elif roll < JACKPOT[0] + PROMO[0]:
                await self.zero_stake_win(session, WinKind.PROMO, PROMO[1])

    def _rollback(self, bet_txn: str, round_id: str, bet_amount: int) -> Call:
        """The rollback of ``bet_txn``, naming it and carrying its amount (evolution's cancel
        repeats the debit's amount; the other protocols send no amount or an ignored one)."""
        return Call(Action.ROLLBACK, self._next_id("rb"), round_id, bet_amount,
                    reference_transaction_id=bet_txn)  # fmt: skip

    def _tally(self, game: str) -> GameTally:
        tally = self.stats.games.get(game)
        if tally is None:
            tally = self.stats.games[game] = GameTally(self.paytables[game])
        return tally

    async def run(self, duration_s: float, on_tick: OnTick, interval_s: float = 1.0) -> None:
        limits = httpx.Limits(
            max_connections=self.concurrency, max_keepalive_connections=self.concurrency
        )
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10, limits=limits) as http:
            self.http = http
            transfer_ops = [op for op in self.tenants.operators if op.wallet.mode == "transfer"]
            conn = None
            if transfer_ops:
                conn = await psycopg.AsyncConnection.connect(self.settings.database_url,
                                                             autocommit=True)  # fmt: skip
                await WalletStore(conn).ensure_schema()
                self.transfers = {op.id: ReferenceTransfers(conn, http, op) for op in transfer_ops}
            try:
                await self._run(duration_s, on_tick, interval_s)
            finally:
                if conn is not None:
                    await conn.close()

    async def _run(self, duration_s: float, on_tick: OnTick, interval_s: float) -> None:
        await self.open_sessions()
        self.stats = Stats(time.monotonic(), controls=self.controls)
        self.stats.bonus["campaigns granted"] = self.campaigns_granted
        for game in sorted({s.game for s in self.sessions}):
            self._tally(game)
        deadline = time.monotonic() + duration_s

        turns = itertools.cycle(self.sessions)  # every player in turn, evenly

        async def player_loop() -> None:
            while time.monotonic() < deadline:
                await self.play_round(next(turns))

        async def ticker() -> None:
            while time.monotonic() < deadline:
                await asyncio.sleep(interval_s)
                now = time.monotonic()
                on_tick(self.stats, now, False)
                self.stats.next_interval(now)

        tick = asyncio.create_task(ticker())
        await asyncio.gather(*(player_loop() for _ in range(self.concurrency)))
        tick.cancel()
        on_tick(self.stats, time.monotonic(), True)
        await self.withdraw_all()
