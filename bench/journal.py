"""A realistic journal for the replay benchmark, decided by the saga's own domain code.

Players of many operators play rounds at many providers' games: the requests go through
:func:`agg_domain.saga.decide` and the wallet commands it sends are answered by a small
in-memory wallet (debits refused for insufficient funds, some debits and credits left
unanswered so that the saga times them out, compensates or owes the money). The journal
events the decisions produce are the records, in the order a saga worker would publish them:

- per round, a bet (``BetAccepted``, ``BetRejected`` when funds are short), then mostly a
  win that closes the round (``WinCredited``, ``RoundClosed``), sometimes a rollback of the
  bet (``BetRolledBack``, ``RollbackRecorded``);
- now and then a debit the wallet does not answer (``DebitTimedOut``, ``DebitCancelled``), a
  credit it does not answer (``CreditOwed``, later ``WinCredited``), a rollback that overtakes
  its bet (``RollbackRecorded`` of an unknown bet, the bet ``BetRejected``), a duplicate with
  other content (``DuplicateConflictDetected``), an event published twice (as after a saga
  crash, same id at a new offset);
- each player's sessions (``SessionOpened``), a few percent of players in demo play;
- optionally (``Mix.round_idle``) rounds left open that the saga auto-closes
  (``RoundAutoClosed``), with a win paid or a bet refused on them after the close;
- optionally (``Mix.free_spins``) free-spin campaigns granted at a session's start
  (``CampaignGranted``, now and then ``CampaignCancelled`` or ``CampaignExpired``), played
  by its bets (``FreeSpinPlayed``, ``BetRejected`` once used up or expired), their wins
  ``WinCredited`` naming the campaign, their rollbacks ``FreeSpinRolledBack``.

Deterministic for a seed. Pure: the caller publishes the records.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from agg_domain.ids import derive_id
from agg_domain.saga import (
    CampaignGrant,
    CampaignState,
    Command,
    Decision,
    Event,
    Message,
    PlayerState,
    Reply,
    Request,
    SagaConfig,
    Tick,
    decide,
)
from agg_domain.statuses import Action, CommandKind, ReplyStatus
from agg_saga.mapping import event_to_avro

T0_MS = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)
CURRENCIES = ("EUR", "USD", "GBP", "SEK", "BRL", "CAD")
COUNTRIES = ("MT", "DE", "GB", "SE", "BR", "CA")


@dataclass(frozen=True)
class Mix:
    """Proportions, per round or per bet."""

    win: float = 0.58
    """Rounds settled with a (possibly zero) win that closes the round."""
    rollback: float = 0.04
    """Bets the provider rolls back."""
    rollback_first: float = 0.005
    """Bets whose rollback arrives before them (a tombstone; the bet is refused)."""
    debit_silent: float = 0.004
    """Debits the wallet does not answer: timed out, then compensated."""
    credit_silent: float = 0.003
    """Credits the wallet does not answer: owed, then paid on a resend."""
    conflict: float = 0.003
    """Bets repeated with another amount (refused as a duplicate conflict)."""
    rollback_after_failure: float = 0.5
    """Bets timed out (compensated) or refused that the provider then rolls back."""
    republished: float = 0.001
    """Events published a second time (same id, later offset), as after a saga crash."""
    round_idle: float = 0.0
    """Rounds left open until the saga auto-closes them after the provider's idle time (the
    player comes back later; ``RoundAutoClosed``), then now and then a win paid for the closed
    round (``WinCredited``, no second close) or a bet on it (``BetRejected`` ROUND_CLOSED)."""
    demo_players: float = 0.03
    kinded_wins: float = 0.0
    """Wins of another kind than the round's payout: bonus, jackpot or promotion money."""
    transfer_players: float = 0.0
    """Real-money players of a transfer wallet: each session starts with a deposit (and,
    after the first, a withdrawal of part or all of the held balance)."""
    session_rounds: int = 40
    """A player opens a new session about every this many rounds."""
    free_spins: float = 0.0
    """Sessions of real-money players that start with a free-spin campaign of their game
    (some cancelled later), whose spins the session's bets then play. 0 draws nothing, so a
    journal without campaigns is what it was before they existed."""


@dataclass
class _Player:
    operator_id: str
    player_id: str
    currency: str
    country: str
    mode: str
    state: PlayerState
    balance: int
    provider_id: str = ""
    game_id: str = ""
    rounds: int = 0
    now_ms: int = 0
    wallet: str = "seamless"


@dataclass
class _Wallet:
    """Debits, credits and cancels of one player, answered at once unless told not to."""

    debited: dict[str, int] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)


@dataclass
class JournalShape:
    operators: int = 8
    providers: int = 6
    games_per_provider: int = 5
    players: int = 0
    """0: one player per 50 events."""


class JournalWriter:
    """Yields ``(record name, datum, key)`` journal records, ``events`` of them."""

    def __init__(self, events: int, *, seed: int = 1, shape: JournalShape | None = None,
                 mix: Mix | None = None):  # fmt: skip
        self.events = events
        self.rng = random.Random(seed)
        self.shape = shape or JournalShape()
        self.mix = mix or Mix()
        self.config = SagaConfig()
        self.now_ms = T0_MS
        self.operators = [f"op-{i:02d}" for i in range(self.shape.operators)]
        self.providers = [f"prov-{i:02d}" for i in range(self.shape.providers)]
        players = self.shape.players or max(20, events // 50)
        self.players: list[_Player] = []
        for i in range(players):
            operator = self.operators[i % len(self.operators)]
            player = f"pl-{i:06d}"
            currency = CURRENCIES[self.rng.randrange(len(CURRENCIES))]
            mode = "demo" if self.rng.random() < self.mix.demo_players else "real"
            transfer = mode == "real" and self.rng.random() < self.mix.transfer_players
            self.players.append(_Player(
                operator, player, currency, COUNTRIES[CURRENCIES.index(currency)], mode,
                PlayerState(operator, player), balance=self.rng.randrange(5_000, 200_000),
                wallet="transfer" if transfer else "seamless",
            ))  # fmt: skip
        self.wallets: dict[str, _Wallet] = {}
        self.counter = 0

    # --- the saga and the wallet --------------------------------------------------------

    def _decide(self, p: _Player, message: Message, out: list[tuple[str, dict[str, Any]]],
                *, silent: frozenset[CommandKind] = frozenset()) -> None:  # fmt: skip
        decision: Decision = decide(p.state, message, p.now_ms, self.config)
        p.state = decision.state
        replies: list[Reply] = []
        for output in decision.outputs:
            if isinstance(output, Event):
                out.append(event_to_avro(output, p.operator_id, p.player_id, p.now_ms))
            elif isinstance(output, Command) and output.kind not in silent:
                replies.append(self._wallet(p, output))
        for reply in replies:
            p.now_ms += self.rng.randrange(3, 40)
            self._decide(p, reply, out)

    def _wallet(self, p: _Player, c: Command) -> Reply:
        w = self.wallets.setdefault(p.player_id, _Wallet())
        status = ReplyStatus.OK
        if c.kind == CommandKind.DEBIT:
            if c.command_id in w.cancelled:
                status = ReplyStatus.ERROR
            elif c.command_id not in w.debited:
                if p.balance < c.amount:
                    status = ReplyStatus.INSUFFICIENT_FUNDS
                else:
                    p.balance -= c.amount
                    w.debited[c.command_id] = c.amount
        elif c.kind == CommandKind.CREDIT:
            p.balance += c.amount
        elif c.kind == CommandKind.CANCEL:
            debit = c.reference_command_id or ""
            if debit not in w.cancelled:
                w.cancelled.add(debit)
                p.balance += w.debited.pop(debit, 0)
        return Reply(c.command_id, status, p.balance, c.currency, p.now_ms)

    def _tick_until_quiet(self, p: _Player, out: list[tuple[str, dict[str, Any]]],
                          silent: frozenset[CommandKind]) -> None:  # fmt: skip
        """Timers until nothing is due; ``silent`` commands stay unanswered (an outage) until
        the wallet timeout has passed."""
        outage_end_ms = p.now_ms + self.config.wallet_timeout_ms
        for _ in range(10):
            due = [t.deadline_ms for t in p.state.txns.values() if t.deadline_ms is not None]
            due += [q.next_send_ms for q in p.state.pending.values() if q.next_send_ms]
            if not due:
                return
            p.now_ms = max(p.now_ms, min(due))
            self._decide(p, Tick(), out,
                         silent=silent if p.now_ms <= outage_end_ms else frozenset())  # fmt: skip

    # --- providers ------------------------------------------------------------------------

    def _request(self, p: _Player, action: Action, **fields: Any) -> Request:
        self.counter += 1
        return Request(
            request_id=f"req-{self.counter}",
            correlation_id=f"corr-{self.counter}",
            provider_id=p.provider_id,
            operator_id=p.operator_id,
            player_id=p.player_id,
            action=action,
            currency=p.currency,
            received_at_ms=p.now_ms,
            game_id=p.game_id,
            mode=p.mode,
            wallet=p.wallet,
            **fields,
        )

    def _transfers(self, p: _Player, out: list[tuple[str, dict[str, Any]]]) -> None:
        """A transfer-wallet player's session starts with the operator's transfers: after the
        first session a withdrawal (of everything, or of part), then a deposit."""
        rng = self.rng
        if p.rounds:
            self.counter += 1
            amount = None if rng.random() < 0.5 else rng.randrange(1, 2_000)
            self._decide(p, replace(self._request(p, Action.WITHDRAW,
                                                  transaction_id=f"wd-{self.counter}",
                                                  amount=amount), provider_id=""), out)  # fmt: skip
        self.counter += 1
        self._decide(p, replace(self._request(p, Action.DEPOSIT,
                                              transaction_id=f"dep-{self.counter}",
                                              amount=rng.randrange(1_000, 50_000)),
                                provider_id=""), out)  # fmt: skip

    def _session(self, p: _Player, out: list[tuple[str, dict[str, Any]]]) -> None:
        if p.wallet == "transfer":
            self._transfers(p, out)
        p.provider_id = self.providers[self.rng.randrange(len(self.providers))]
        p.game_id = f"{p.provider_id}-game-{self.rng.randrange(self.shape.games_per_provider)}"
        if self.mix.free_spins and p.mode == "real":
            self._campaign(p, out)
        self.counter += 1
        session_id = f"ses-{self.counter}"
        at = datetime.fromtimestamp(p.now_ms / 1000, tz=UTC)
        out.append(("casino.agg.events.SessionOpened", {
            "event_id": derive_id("ev", "SessionOpened", session_id),
            "correlation_id": derive_id("corr", "session", session_id),
            "operator_id": p.operator_id, "player_id": p.player_id,
            "provider_id": p.provider_id, "occurred_at": at, "session_id": session_id,
            "game_id": p.game_id, "currency": p.currency, "country": p.country,
            "mode": p.mode, "expires_at": at + timedelta(hours=4),
        }))  # fmt: skip

    def _campaign(self, p: _Player, out: list[tuple[str, dict[str, Any]]]) -> None:
        """Now and then cancel the player's campaign; then, for some sessions, a new one
        of a few spins of the session's game, expiring within a minute."""
        rng = self.rng
        active = [c for c in p.state.campaigns.values() if c.state == CampaignState.ACTIVE]
        if active and rng.random() < 0.3:
            cancel = self._request(p, Action.CAMPAIGN_CANCEL, transaction_id=active[0].campaign_id,
                                   campaign_id=active[0].campaign_id)  # fmt: skip
            self._decide(p, replace(cancel, provider_id=""), out)
        if rng.random() >= self.mix.free_spins:
            return
        self.counter += 1
        cid = f"cmp-{self.counter}"
        grant = CampaignGrant(cid, (p.game_id,), rng.randint(1, 5), rng.choice((10, 20, 50)),
                              p.now_ms + rng.randrange(1_000, 60_000))  # fmt: skip
        self._decide(p, self._request(p, Action.CAMPAIGN_GRANT, transaction_id=cid,
                                      campaign_id=cid, campaign=grant), out)  # fmt: skip

    def _free_spin(self, p: _Player) -> tuple[str, int] | None:
        """The campaign (and its stake) a bet of this round plays, if it plays one: a
        campaign granted for the session's game (used up or expired ones too, refused)."""
        if not self.mix.free_spins or p.mode != "real":
            return None
        usable = [c for c in p.state.campaigns.values()
                  if c.provider_id == p.provider_id and p.game_id in c.games
                  and c.state != CampaignState.CANCELLED]  # fmt: skip
        if not usable or self.rng.random() < 0.4:
            return None
        return usable[-1].campaign_id, usable[-1].bet_value

    def _round(self, p: _Player, out: list[tuple[str, dict[str, Any]]]) -> None:
        rng, mix = self.rng, self.mix
        if p.rounds % mix.session_rounds == 0:
            self._session(p, out)
        p.rounds += 1
        self.counter += 1
        round_id = f"rnd-{self.counter}"
        bet_id = f"bet-{self.counter}"
        amount = rng.choice((10, 20, 50, 100, 100, 200, 500, 1_000, 2_500))
        campaign_id = None
        free = self._free_spin(p)
        if free is not None:
            campaign_id, amount = free
        bet = self._request(p, Action.BET, transaction_id=bet_id, round_id=round_id,
                            amount=amount, campaign_id=campaign_id)  # fmt: skip
        roll = rng.random()
        if roll < mix.rollback_first:
            self._decide(p, self._request(p, Action.ROLLBACK, transaction_id=f"rb-{bet_id}",
                                          reference_transaction_id=bet_id,
                                          round_id=round_id), out)  # fmt: skip
            p.now_ms += rng.randrange(5, 200)
            self._decide(p, bet, out)
            return
        if roll < mix.rollback_first + mix.debit_silent:
            silent = frozenset({CommandKind.DEBIT})
            self._decide(p, bet, out, silent=silent)
            self._tick_until_quiet(p, out, silent)
            if rng.random() < mix.rollback_after_failure:
                self._rollback(p, bet_id, round_id, out)
            return
        before = len(out)
        self._decide(p, bet, out)
        if any(name.endswith(".BetRejected") for name, _ in out[before:]):
            if rng.random() < mix.rollback_after_failure:
                self._rollback(p, bet_id, round_id, out)
            return
        p.now_ms += rng.randrange(20, 3_000)
        if rng.random() < mix.conflict:
            self._decide(p, self._request(p, Action.BET, transaction_id=bet_id,
                                          round_id=round_id, amount=amount + 1), out)  # fmt: skip
        if rng.random() < mix.rollback:
            self._rollback(p, bet_id, round_id, out)
        elif rng.random() < mix.win / (1 - mix.rollback):
            win = rng.choice((0, 0, 0, amount // 2, amount, 2 * amount, 5 * amount))
            kind = "REGULAR"
            if rng.random() < mix.kinded_wins:
                kind = rng.choice(("BONUS", "JACKPOT", "PROMO"))
            request = self._request(
                p,
                Action.WIN,
                transaction_id=f"win-{self.counter}",
                round_id=round_id,
                amount=win,
                round_closed=True,
                win_kind=kind,
                campaign_id=campaign_id,
            )
            if rng.random() < mix.credit_silent:
                silent = frozenset({CommandKind.CREDIT})
                self._decide(p, request, out, silent=silent)
                self._tick_until_quiet(p, out, silent)
            else:
                self._decide(p, request, out)
            return
        if p.mode == "real" and rng.random() < mix.round_idle:
            self._idle(p, round_id, amount, out)

    def _idle(self, p: _Player, round_id: str, amount: int,
              out: list[tuple[str, dict[str, Any]]]) -> None:  # fmt: skip
        """The player leaves the round open: the saga's timer closes it after the provider's
        idle time; what comes for it later is paid (a win) or refused (a bet)."""
        rng = self.rng
        p.now_ms += self.config.auto_close_ms(p.provider_id) + rng.randrange(0, 1_000)
        self._decide(p, Tick(), out)
        p.now_ms += rng.randrange(20, 2_000)
        if rng.random() < 0.5:
            self._decide(p, self._request(p, Action.WIN, transaction_id=f"late-{round_id}",
                                          round_id=round_id, amount=amount,
                                          round_closed=True), out)  # fmt: skip
        else:
            self._decide(p, self._request(p, Action.BET, transaction_id=f"late-{round_id}",
                                          round_id=round_id, amount=amount), out)  # fmt: skip

    def _rollback(self, p: _Player, bet_id: str, round_id: str,
                  out: list[tuple[str, dict[str, Any]]]) -> None:  # fmt: skip
        p.now_ms += self.rng.randrange(20, 2_000)
        self._decide(
            p,
            self._request(
                p,
                Action.ROLLBACK,
                transaction_id=f"rb-{bet_id}",
                reference_transaction_id=bet_id,
                round_id=round_id,
            ),
            out,
        )

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(record full name, datum)``, ``events`` of them, each player's in order."""
        produced = 0
        rng = self.rng
        while produced < self.events:
            p = self.players[rng.randrange(len(self.players))]
            self.now_ms += rng.randrange(1, 8)
            p.now_ms = max(p.now_ms, self.now_ms)
            out: list[tuple[str, dict[str, Any]]] = []
            self._round(p, out)
            for record in out:
                yield record
                produced += 1
                if produced >= self.events:
                    return
                if rng.random() < self.mix.republished:
                    yield record
                    produced += 1
                    if produced >= self.events:
                        return
