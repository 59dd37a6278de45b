"""The per-player saga: the only place that decides.

``decide(state, message, now_ms, config) -> Decision(state, outputs)`` is a pure function:
no Kafka, HTTP, database or clock. ``now_ms`` is passed in; the shell around it loads the
player's state, calls it for each request, wallet reply or timer tick, stores the new state
and sends the outputs (wallet commands, answers to providers, journal events), all with ids
derived from their causes so that re-processing after a crash repeats them exactly.

Rules (design brief, section 3):
- idempotency per provider transaction id: an exact duplicate gets the original answer (or
  waits with the original while it is pending); the same id with other content is
  DUPLICATE_CONFLICT and changes nothing;
- rollback: of an accepted bet refunds it once (a CANCEL of its debit); of a rejected bet is
  an OK no-op; of an unknown bet records a tombstone and answers OK, and that bet arriving
  later is refused with BET_ROLLED_BACK; of a pending bet is applied when the debit resolves;
- a debit without a reply by its deadline is answered RETRY_LATER and compensated with a
  CANCEL that is resent until acknowledged; a retry of the bet after the cancel is
  acknowledged is a new debit attempt with a new command id;
- credits (wins) and refunds are owed money: resent with capped exponential backoff until
  the wallet acknowledges them, never dropped;
- demo play (a request of a ``demo`` session) never reaches the operator's wallet: it is
  decided at once against the player's demo balance held here (per currency, starting at
  ``demo_starting_balance``), with the same idempotency and rollback rules, its transactions
  kept under keys of their own (``demo|provider:transaction``, no real key contains ``|``)
  and its journal events marked ``mode: demo``;
- a transfer-wallet operator's player (``wallet: transfer`` requests) plays against a balance
  held here per currency, which only the operator's deposits and withdrawals fill and empty:
  decided at once like demo play (keys ``xfer|provider:transaction``, a transfer's own under
  provider ``""``), but real money: its rounds are kept and its money events say
  ``wallet: transfer``;
- free-spin campaigns (the operator's ``CAMPAIGN_GRANT`` and ``CAMPAIGN_CANCEL``) are held
  here per player: a bet naming one of the player's campaigns (``campaign_id``) is a free
  spin, accepted without a wallet command while the campaign is active, unexpired, of the
  bet's provider and game, for its bet value and currency, with spins left (else REJECTED,
  ``campaign:<rule>``); a win naming a campaign is credited as a BONUS win; a rollback of a
  free spin gives the spin back and moves no money; a campaign expires at its
  ``expires_at`` (the timer), and is journaled at every step (docs/saga.md, "Free-spin
  campaigns").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from agg_domain.compliance import REFUSAL_STATUSES, Refusal
from agg_domain.ids import derive_id
from agg_domain.limits import (
    NO_CONTROLS,
    Controls,
    LimitKind,
    Usage,
    add_usage,
    bet_refusal,
    deposit_refusal,
    limits_text,
)
from agg_domain.statuses import (
    REFUSAL_FOR_REPLY,
    Action,
    CommandKind,
    ReplyStatus,
    Status,
    WinKind,
)

MAX_AMOUNT = 2**63 - 1


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class SagaConfig:
    wallet_timeout_ms: int = 1_500
    """A debit unanswered this long is compensated; below the ingress's 2 s answer wait so
    the provider hears RETRY_LATER from the saga, with the state already decided."""
    retry_backoff_initial_ms: int = 500
    retry_backoff_max_ms: int = 60_000
    settled_retention_ms: int = 30 * 24 * 3600 * 1000
    """How long a settled transaction is remembered for idempotency. A duplicate arriving
    later than this would be processed as new, so it must exceed any provider's retry span."""
    round_retention_ms: int = 24 * 3600 * 1000
    """How long a closed round is kept after its close (so that a bet on it is still refused
    ``ROUND_CLOSED``, and money after the close still lands on it). An open round is never
    forgotten: it is auto-closed first (``round_auto_close_ms``)."""
    round_auto_close_ms: int = 1_800 * 1000
    """A round with no transaction for this long is closed by the saga (``RoundAutoClosed``),
    for providers without an entry in ``round_auto_close_ms_by_provider``. The tenants
    file's ``round_auto_close_s`` default, below the reconciliation's one-hour open-round age."""
    round_auto_close_ms_by_provider: Mapping[str, int] = field(default_factory=dict)
    """Per provider id, its auto-close idle time (the tenants file's ``round_auto_close_s``)."""
    prune_interval_ms: int = 3600 * 1000
    """How often a player's state is swept for expired transactions and rounds: the sweep
    reads every transaction, so it runs on the player's next message after this long."""

    demo_starting_balance: int = 100_000
    """Demo balance, in minor units, of a player's first demo play in a currency."""

    def auto_close_ms(self, provider_id: str) -> int:
        """Idle time after which ``provider_id``'s open rounds are closed by the saga."""
        return self.round_auto_close_ms_by_provider.get(provider_id, self.round_auto_close_ms)

    def backoff_ms(self, attempt: int) -> int:
        """Delay before resend number ``attempt`` (1-based), doubling up to the cap."""
        return min(self.retry_backoff_max_ms, self.retry_backoff_initial_ms << min(attempt - 1, 20))


# --- inputs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignGrant:
    """What an operator's ``CAMPAIGN_GRANT`` grants (the campaign's provider is the
    request's ``provider_id``, its currency the request's)."""

    campaign_id: str
    games: tuple[str, ...]
    spins: int
    bet_value: int
    """Stake of every free spin, in minor units: a free spin's bet names exactly this."""
    expires_at_ms: int


@dataclass(frozen=True)
class Request:
    """A canonical provider request, already authenticated and validated by ingress."""

    request_id: str
    correlation_id: str
    provider_id: str
    operator_id: str
    player_id: str
    action: Action
    currency: str
    received_at_ms: int
    transaction_id: str | None = None
    reference_transaction_id: str | None = None
    round_id: str | None = None
    game_id: str | None = None
    amount: int | None = None
    round_closed: bool = False
    reply_to: str | None = None
    reply_partition: int | None = None
    mode: str = "real"
    """The session's mode: ``real`` money, or ``demo`` play (never the operator's wallet)."""
    wallet: str = "seamless"
    """The operator's wallet model when the request was accepted: ``seamless`` (its wallet
    decides) or ``transfer`` (a balance held here decides; see :data:`TRANSFER`)."""
    win_kind: str = "REGULAR"
    """For a win: ``REGULAR`` (the round's payout), ``BONUS``, ``JACKPOT`` or ``PROMO``."""
    controls: Controls | None = None
    """For PLAYER_CONTROLS: the player's responsible-gaming controls as the operator states
    them now (they replace the previous ones; ``transaction_id`` is the change's id)."""
    session_started_at_ms: int | None = None
    """When the session the request came in was opened (a session time limit counts from
    here); None for requests without a session (the operator API's)."""
    refusal: Refusal | None = None
    """For a bet: the compliance rule that refuses it (ingress evaluates the tenants' rules).
    A new bet carrying one is REJECTED with its status, with no wallet command; an exact
    duplicate of a bet already decided gets the original answer, refusal or not. Ignored on
    every other action (a win or a rollback is owed money)."""
    campaign: CampaignGrant | None = None
    """For a CAMPAIGN_GRANT: the campaign granted."""
    campaign_id: str | None = None
    """For a bet or a win: the player's free-spin campaign it belongs to (a free spin, or its
    win); for a CAMPAIGN_GRANT or CAMPAIGN_CANCEL: the campaign it names."""


@dataclass(frozen=True)
class Reply:
    command_id: str
    status: ReplyStatus
    balance: int | None
    currency: str
    replied_at_ms: int


@dataclass(frozen=True)
class Tick:
    """A timer: deadlines and resends due at ``now_ms`` are acted on."""


Message = Request | Reply | Tick


# --- outputs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    command_id: str
    correlation_id: str
    kind: CommandKind
    amount: int
    currency: str
    provider_id: str
    transaction_id: str | None
    round_id: str | None
    game_id: str | None
    reference_command_id: str | None
    issued_at_ms: int
    win_kind: str = "REGULAR"
    """For a CREDIT: what kind of win it pays (the operator books jackpots and promotions
    apart)."""


@dataclass(frozen=True)
class Answer:
    request: Request
    status: Status
    balance: int | None
    currency: str
    amount: int | None = None
    """For a transfer: the amount moved (a withdrawal of everything names none)."""


@dataclass(frozen=True)
class Event:
    """A journal event; ``name`` is the record name under ``casino.agg.events``."""

    name: str
    event_id: str
    correlation_id: str
    provider_id: str
    fields: Mapping[str, object]


Output = Command | Answer | Event


# --- state ---------------------------------------------------------------------------------


class TxnState(StrEnum):
    PENDING = "PENDING"
    """Wallet command sent, no final reply yet."""
    ACCEPTED = "ACCEPTED"
    """Bet debited / win credited / refund done."""
    REJECTED = "REJECTED"
    """Refused, no money moved (final)."""
    COMPENSATING = "COMPENSATING"
    """Bet whose debit timed out (or failed): CANCEL sent, not yet acknowledged."""
    COMPENSATED = "COMPENSATED"
    """Bet whose cancel is acknowledged: no money moved; a retry starts a new attempt."""
    REFUNDING = "REFUNDING"
    """Accepted bet being rolled back: CANCEL sent, not yet acknowledged."""
    ROLLED_BACK = "ROLLED_BACK"
    """Accepted bet refunded (final)."""
    TOMBSTONE = "TOMBSTONE"
    """A bet id named by a rollback before the bet arrived (final)."""


@dataclass(frozen=True)
class Txn:
    """One provider transaction (bet, win or rollback) of this player."""

    key: str
    action: Action
    provider_id: str
    transaction_id: str
    correlation_id: str
    amount: int
    currency: str
    round_id: str | None
    game_id: str | None
    reference_transaction_id: str | None
    round_closed: bool
    state: TxnState
    command_id: str | None = None
    attempt: int = 0
    cancel_command_id: str | None = None
    status: Status | None = None
    balance: int | None = None
    waiters: tuple[Request, ...] = ()
    deadline_ms: int | None = None
    rollback_key: str | None = None
    """For a bet: the rollback transaction that asked to undo it."""
    settled_at_ms: int | None = None
    owed: bool = False
    """For a win: CreditOwed has been journaled."""
    whole: bool = False
    """For a withdrawal: it asked for the whole balance (``amount`` is what it took)."""
    win_kind: str = "REGULAR"
    """For a win: its kind (part of its content: the same id with another kind conflicts)."""
    campaign_id: str | None = None
    """For a free spin (a bet) or its win: the campaign it belongs to (part of its content)."""


@dataclass(frozen=True)
class Pending:
    """A wallet command that awaits its reply; resent until one arrives (except debits,
    which are compensated instead)."""

    command: Command
    txn_key: str | None
    next_send_ms: int | None
    sends: int = 1
    waiters: tuple[Request, ...] = ()
    """For BALANCE commands: the requests to answer."""


@dataclass(frozen=True)
class Round:
    round_id: str
    game_id: str | None
    currency: str
    provider_id: str = ""
    """Rounds are the provider's: two providers may use the same round id."""
    bet_total: int = 0
    win_total: int = 0
    refund_total: int = 0
    closed: bool = False
    updated_at_ms: int = 0
    """When its last transaction settled: the idle time of an open round counts from here."""
    closed_at_ms: int = 0
    """When it was closed (0: open, or closed by a version that did not record it, whose
    retention then counts from ``updated_at_ms``)."""
    closed_by: str = ""
    """``provider`` (the provider's flag or end-round call) or ``auto`` (the idle policy)."""
    correlation_id: str = ""
    """Of its last transaction: the auto-close's event links to it."""


class CampaignState(StrEnum):
    ACTIVE = "ACTIVE"
    """Free spins may be played."""
    CANCELLED = "CANCELLED"
    """Cancelled by the operator (final)."""
    EXPIRED = "EXPIRED"
    """Its ``expires_at`` has passed (final)."""
    USED_UP = "USED_UP"
    """Every spin played (active again if a rollback gives a spin back before it expires)."""


@dataclass(frozen=True)
class Campaign:
    """A free-spin campaign the operator granted this player."""

    campaign_id: str
    provider_id: str
    games: tuple[str, ...]
    spins: int
    spins_left: int
    bet_value: int
    currency: str
    expires_at_ms: int
    state: CampaignState
    granted_at_ms: int
    correlation_id: str
    """Of the grant: its expiry's event links to it."""
    ended_at_ms: int = 0
    """When it was cancelled, expired or used up (0: active)."""


@dataclass(frozen=True)
class PlayerState:
    operator_id: str
    player_id: str
    txns: Mapping[str, Txn] = field(default_factory=dict)
    pending: Mapping[str, Pending] = field(default_factory=dict)
    rounds: Mapping[str, Round] = field(default_factory=dict)
    balance: int | None = None
    balance_currency: str | None = None
    pruned_at_ms: int = 0
    """When expired transactions and rounds were last removed."""
    demo_balances: Mapping[str, int] = field(default_factory=dict)
    """Demo play's balances by currency, held by the aggregator (never the operator's)."""
    transfer_balances: Mapping[str, int] = field(default_factory=dict)
    """A transfer-wallet operator's player's balances by currency, held by the aggregator:
    the operator's deposits less its withdrawals, less bets, plus wins and refunds."""
    controls: Controls = NO_CONTROLS
    """The player's responsible-gaming controls (:mod:`agg_domain.limits`), as last stated."""
    usage: Mapping[str, Usage] = field(default_factory=dict)
    """Real-money play per currency and calendar period (``CCC|day``...), for the limits."""
    control_changes: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    """Change id -> (its content's digest, when applied): a repeat is answered, never
    applied again; kept as long as settled transactions are."""
    sessions: Mapping[str, int] = field(default_factory=dict)
    """Per provider, when the player's latest session with it opened (from the requests that
    carry it): a session time limit counts from here for the provider's calls that carry no
    session (those naming the player by reference). Kept only while a time limit is set."""
    campaigns: Mapping[str, Campaign] = field(default_factory=dict)
    """The player's free-spin campaigns by campaign id (the operator's, for this player)."""


@dataclass(frozen=True)
class Decision:
    state: PlayerState
    outputs: tuple[Output, ...]
    txns_changed: tuple[str, ...] = ()
    """Keys of the transactions this decision added, replaced or removed (every other one is
    the very object it was), so that the shell stores and indexes what changed without
    walking the player's history."""


def txn_key(provider_id: str, transaction_id: str) -> str:
    return f"{provider_id}:{transaction_id}"


# --- ids -------------------------------------------------------------------------------------
# A provider's ids (transaction, request, round) are unique only within what the provider
# sends for one player: the same transaction id may come for another player, of the same
# operator or of another one, and the round of a live table is shared by every player at it.
# So every id derived here names its owner (operator and player) besides its cause. The
# formulas are part of the history: a worker re-deciding a message after a crash must derive
# the very ids it derived before (docs/saga.md, "Ids").


def debit_command_id(operator_id: str, player_id: str, provider_id: str, transaction_id: str,
                     attempt: int) -> str:  # fmt: skip
    return derive_id("cmd", operator_id, player_id, provider_id, transaction_id, "DEBIT", attempt)


def credit_command_id(operator_id: str, player_id: str, provider_id: str,
                      transaction_id: str) -> str:  # fmt: skip
    return derive_id("cmd", operator_id, player_id, provider_id, transaction_id, "CREDIT")


def cancel_command_id(operator_id: str, player_id: str, debit_id: str) -> str:
    """The CANCEL of the debit ``debit_id``: one per debit, whatever scheme made its id."""
    return derive_id("cmd", operator_id, player_id, debit_id, "CANCEL")


def balance_command_id(operator_id: str, player_id: str, provider_id: str,
                       request_id: str) -> str:  # fmt: skip
    return derive_id("cmd", operator_id, player_id, provider_id, request_id, "BALANCE")


def event_id(operator_id: str, player_id: str, provider_id: str, name: str, cause: str) -> str:
    return derive_id("ev", operator_id, player_id, provider_id, name, cause)


# --- the decision ---------------------------------------------------------------------------


class _Draft:
    """Copy-on-write working set for one decision.

    ``txns`` and ``rounds`` are the state's own mappings until the decision first changes
    them (through :meth:`put`, :meth:`forget` and :meth:`put_round`): both grow with the
    player's history, and most decisions change one transaction and at most one round."""

    def __init__(self, state: PlayerState, now_ms: int, config: SagaConfig):
        self.base = state
        self.now = now_ms
        self.config = config
        self.txns: Mapping[str, Txn] = state.txns
        self._txns: dict[str, Txn] | None = None
        self.txns_changed: dict[str, None] = {}
        self.pending = dict(state.pending)
        self.rounds: Mapping[str, Round] = state.rounds
        self._rounds: dict[str, Round] | None = None
        self.balance = state.balance
        self.balance_currency = state.balance_currency
        self.pruned_at_ms = state.pruned_at_ms
        self.demo_balances = state.demo_balances
        self.transfer_balances = state.transfer_balances
        self.controls = state.controls
        self.usage = state.usage
        self.control_changes = state.control_changes
        self.sessions = state.sessions
        self.campaigns = state.campaigns
        self.outputs: list[Output] = []

    def finish(self) -> Decision:
        state = PlayerState(
            operator_id=self.base.operator_id,
            player_id=self.base.player_id,
            txns=self.txns,
            pending=self.pending,
            rounds=self.rounds,
            balance=self.balance,
            balance_currency=self.balance_currency,
            pruned_at_ms=self.pruned_at_ms,
            demo_balances=self.demo_balances,
            transfer_balances=self.transfer_balances,
            controls=self.controls,
            usage=self.usage,
            control_changes=self.control_changes,
            sessions=self.sessions,
            campaigns=self.campaigns,
        )
        return Decision(state, tuple(self.outputs), tuple(self.txns_changed))

    # transactions and rounds

    def _own_txns(self) -> dict[str, Txn]:
        if self._txns is None:
            self._txns = dict(self.txns)
            self.txns = self._txns
        return self._txns

    def put(self, txn: Txn) -> None:
        self._own_txns()[txn.key] = txn
        self.txns_changed[txn.key] = None

    def forget(self, key: str) -> None:
        del self._own_txns()[key]
        self.txns_changed[key] = None

    def put_campaign(self, campaign: Campaign) -> None:
        self.campaigns = {**self.campaigns, campaign.campaign_id: campaign}

    def put_round(self, key: str, rnd: Round) -> None:
        if self._rounds is None:
            self._rounds = dict(self.rounds)
            self.rounds = self._rounds
        self._rounds[key] = rnd

    def forget_round(self, key: str) -> None:
        if self._rounds is None:
            self._rounds = dict(self.rounds)
            self.rounds = self._rounds
        del self._rounds[key]

    # outputs

    def answer(self, request: Request, status: Status, balance: int | None = None) -> None:
        if balance is None and self.balance_currency == request.currency:
            balance = self.balance
        self.outputs.append(Answer(request, status, balance, request.currency))

    def event(
        self,
        name: str,
        cause: str,
        txn: Txn | None,
        *,
        correlation_id: str | None = None,
        provider_id: str | None = None,
        **fields: object,
    ) -> None:
        body: dict[str, object] = {}
        if txn is not None:
            body = {
                "transaction_id": txn.transaction_id,
                "round_id": txn.round_id or "",
                "game_id": txn.game_id or "",
                "amount": txn.amount,
                "currency": txn.currency,
            }
            correlation_id = correlation_id or txn.correlation_id
            provider_id = provider_id or txn.provider_id
        assert correlation_id is not None and provider_id is not None
        body.update(fields)
        ev_id = event_id(self.base.operator_id, self.base.player_id, provider_id, name, cause)
        self.outputs.append(Event(name, ev_id, correlation_id, provider_id, body))

    def send(self, command: Command, txn_key_: str | None, retry: bool,
             waiters: tuple[Request, ...] = ()) -> None:  # fmt: skip
        next_send = self.now + self.config.backoff_ms(1) if retry else None
        self.pending[command.command_id] = Pending(command, txn_key_, next_send, 1, waiters)
        self.outputs.append(command)

    def command(self, txn: Txn, kind: CommandKind, command_id: str,
                reference: str | None = None) -> Command:  # fmt: skip
        return Command(
            command_id=command_id,
            correlation_id=txn.correlation_id,
            kind=kind,
            amount=txn.amount,
            currency=txn.currency,
            provider_id=txn.provider_id,
            transaction_id=txn.transaction_id,
            round_id=txn.round_id,
            game_id=txn.game_id,
            reference_command_id=reference,
            issued_at_ms=self.now,
            win_kind=txn.win_kind,
        )

    def note_balance(self, balance: int | None, currency: str) -> None:
        if balance is not None:
            self.balance, self.balance_currency = balance, currency

    # rounds

    def add_to_round(self, txn: Txn, *, bet: int = 0, win: int = 0, refund: int = 0) -> None:
        """Count a settled transaction in its round, and close the round if the transaction
        closes it. Money settled after the round closed (a win or refund owed for it, a bet
        whose debit was in flight) is counted too: the journal's money events name the round,
        and the round's totals in the saga keep growing; no second close is journaled."""
        if txn.round_id is None:
            return
        key = txn_key(txn.provider_id, txn.round_id)
        current = self.rounds.get(key) or Round(
            txn.round_id, txn.game_id, txn.currency, txn.provider_id
        )
        updated = replace(
            current,  # totals stop at the largest long (the state's records are 64-bit)
            bet_total=min(current.bet_total + bet, MAX_AMOUNT),
            win_total=min(current.win_total + win, MAX_AMOUNT),
            refund_total=min(current.refund_total + refund, MAX_AMOUNT),
            updated_at_ms=self.now,
            correlation_id=txn.correlation_id,
        )
        self.put_round(key, updated)
        if txn.round_closed and not updated.closed:
            self.put_round(key, replace(updated, closed=True, closed_at_ms=self.now,
                                        closed_by=CLOSED_BY_PROVIDER))  # fmt: skip
            self.event(
                "RoundClosed",
                f"{txn.provider_id}:{txn.round_id}",
                None,
                correlation_id=txn.correlation_id,
                provider_id=txn.provider_id,
                round_id=txn.round_id,
                game_id=txn.game_id or "",
                currency=updated.currency,
                bet_total=updated.bet_total,
                win_total=updated.win_total,
                refund_total=updated.refund_total,
            )

    def auto_close_round(self, key: str, rnd: Round) -> None:
        """Close ``rnd``, idle past its provider's auto-close time, and journal it with its
        totals (``RoundAutoClosed``, once: the round is closed from then on)."""
        idle_ms = self.now - rnd.updated_at_ms
        self.put_round(key, replace(rnd, closed=True, closed_at_ms=self.now,
                                    closed_by=CLOSED_BY_AUTO))  # fmt: skip
        correlation_id = rnd.correlation_id or derive_id(
            "round", self.base.operator_id, self.base.player_id, rnd.provider_id, rnd.round_id
        )
        self.event(
            "RoundAutoClosed",
            f"{rnd.provider_id}:{rnd.round_id}",
            None,
            correlation_id=correlation_id,
            provider_id=rnd.provider_id,
            round_id=rnd.round_id,
            game_id=rnd.game_id or "",
            currency=rnd.currency,
            bet_total=rnd.bet_total,
            win_total=rnd.win_total,
            refund_total=rnd.refund_total,
            idle_ms=idle_ms,
            auto_close_ms=self.config.auto_close_ms(rnd.provider_id),
            reason="idle",
        )


CLOSED_BY_PROVIDER = "provider"
CLOSED_BY_AUTO = "auto"


def decide(state: PlayerState, message: Message, now_ms: int, config: SagaConfig) -> Decision:
    draft = _Draft(state, now_ms, config)
    if isinstance(message, Request) and message.action == Action.PLAYER_CONTROLS:
        _on_controls(draft, message)
    elif isinstance(message, Request) and message.action in CAMPAIGN_ACTIONS:
        _on_campaign_request(draft, message)
    elif isinstance(message, Request) and message.mode != REAL:
        _on_held_request(draft, message, _DEMO)
    elif isinstance(message, Request) and (
        message.wallet == TRANSFER or message.action in TRANSFER_ACTIONS
    ):
        _on_held_request(draft, message, _TRANSFER)
    elif isinstance(message, Request):
        _on_request(draft, message)
    elif isinstance(message, Reply):
        _on_reply(draft, message)
    else:
        _on_tick(draft)
    if now_ms - draft.pruned_at_ms >= config.prune_interval_ms:
        _prune(draft)
    return draft.finish()


# --- requests ------------------------------------------------------------------------------


def _invalid(request: Request) -> bool:
    if request.action in (Action.BALANCE, Action.AUTHENTICATE):
        return False
    if request.action in TRANSFER_ACTIONS:  # the operator's, for a transfer wallet only
        if (request.wallet != TRANSFER or request.provider_id != ""
                or request.transaction_id is None):  # fmt: skip
            return True
        if request.amount is None:
            return request.action != Action.WITHDRAW  # a withdrawal of everything
        return not 1 <= request.amount <= MAX_AMOUNT
    if request.transaction_id is None or (
        request.amount is None and request.action != Action.ROLLBACK
    ):
        return True
    if request.action == Action.ROLLBACK:
        return request.reference_transaction_id is None
    assert request.amount is not None
    low = 1 if request.action == Action.BET else 0
    return not low <= request.amount <= MAX_AMOUNT


def _new_txn(request: Request, state: TxnState) -> Txn:
    assert request.transaction_id is not None
    return Txn(
        key=txn_key(request.provider_id, request.transaction_id),
        action=request.action,
        provider_id=request.provider_id,
        transaction_id=request.transaction_id,
        correlation_id=request.correlation_id,
        amount=request.amount or 0,
        currency=request.currency,
        round_id=request.round_id,
        game_id=request.game_id,
        reference_transaction_id=request.reference_transaction_id,
        round_closed=request.round_closed,
        state=state,
        win_kind=_win_kind(request),
        campaign_id=request.campaign_id,
    )


def _win_kind(request: Request) -> str:
    """A campaign's win is a bonus win, whatever kind the provider named."""
    if request.action == Action.WIN and request.campaign_id is not None:
        return WinKind.BONUS.value
    return request.win_kind


def _same_content(txn: Txn, request: Request) -> bool:
    return (
        txn.action == request.action
        and txn.amount == (request.amount or 0)
        and txn.currency == request.currency
        and txn.round_id == request.round_id
        and txn.reference_transaction_id == request.reference_transaction_id
        and txn.win_kind == _win_kind(request)
        and txn.campaign_id == request.campaign_id
    )


def _on_request(d: _Draft, request: Request) -> None:
    if request.operator_id != d.base.operator_id or request.player_id != d.base.player_id:
        # routing bug: this request belongs to another player's saga
        raise ValueError(f"request {request.request_id} routed to the wrong player state")
    if _invalid(request):
        d.answer(request, Status.INVALID_REQUEST)
        return
    _note_session(d, request)
    if request.action in (Action.BALANCE, Action.AUTHENTICATE):
        _on_balance(d, request)
        return
    assert request.transaction_id is not None
    key = txn_key(request.provider_id, request.transaction_id)
    existing = d.txns.get(key)
    if request.action == Action.BET and _refused_on_closed_round(d, request, existing):
        return
    if existing is not None and existing.state != TxnState.TOMBSTONE:
        _on_repeat(d, existing, request)
    elif request.action == Action.BET:
        _on_new_bet(d, request, tombstone=existing)
    elif request.action == Action.WIN:
        if existing is not None:  # a tombstone names a bet id; a win may not reuse it
            d.answer(request, Status.DUPLICATE_CONFLICT)
            return
        _on_new_win(d, request)
    else:
        if existing is not None:
            d.answer(request, Status.DUPLICATE_CONFLICT)
            return
        _on_new_rollback(d, request)


def _refused_on_closed_round(d: _Draft, request: Request, existing: Txn | None) -> bool:
    """A bet that would debit (a new one, or the retry of a compensated one) on a closed
    round is refused ``ROUND_CLOSED`` and journaled ``BetRejected``; no wallet command. A
    round idle past its provider's auto-close time is closed here first, so the policy holds
    to the millisecond whenever the timer comes. Exact duplicates of a decided bet keep
    their answer; a tombstone's bet keeps ``BET_ROLLED_BACK``."""
    if request.round_id is None:
        return False
    if existing is not None and not (
        existing.state == TxnState.COMPENSATED
        and existing.rollback_key is None
        and _same_content(existing, request)
    ):
        return False
    if not _round_closed_for_bet(d, request):
        return False
    txn = replace(_new_txn(request, TxnState.REJECTED), status=Status.ROUND_CLOSED,
                  settled_at_ms=d.now)  # fmt: skip
    if existing is not None:  # the compensated attempts stay on record
        txn = replace(existing, correlation_id=request.correlation_id, state=TxnState.REJECTED,
                      status=Status.ROUND_CLOSED, settled_at_ms=d.now, waiters=(),
                      deadline_ms=None)  # fmt: skip
    d.put(txn)
    d.answer(request, Status.ROUND_CLOSED)
    d.event("BetRejected", f"{txn.key}:round_closed", txn, status=Status.ROUND_CLOSED.value,
            command_id=None, balance=None, rule=RULE_ROUND_CLOSED)  # fmt: skip
    return True


def _round_closed_for_bet(d: _Draft, request: Request) -> bool:
    """Whether the round a bet names is closed; one idle past its provider's auto-close time
    (with no debit in flight on it) is closed, and journaled, here first."""
    if request.round_id is None:
        return False
    key = txn_key(request.provider_id, request.round_id)
    rnd = d.rounds.get(key)
    if rnd is None:
        return False
    if not rnd.closed:
        if not _idle_past(d, rnd) or key in _rounds_with_pending_bets(d):
            return False
        d.auto_close_round(key, rnd)
    return True


def _on_balance(d: _Draft, request: Request) -> None:
    command_id = balance_command_id(
        d.base.operator_id, d.base.player_id, request.provider_id, request.request_id
    )
    if command_id in d.pending:
        waiting = d.pending[command_id]
        d.pending[command_id] = replace(waiting, waiters=(*waiting.waiters, request))
        return
    command = Command(
        command_id=command_id,
        correlation_id=request.correlation_id,
        kind=CommandKind.BALANCE,
        amount=0,
        currency=request.currency,
        provider_id=request.provider_id,
        transaction_id=None,
        round_id=None,
        game_id=request.game_id,
        reference_command_id=None,
        issued_at_ms=d.now,
    )
    d.pending[command_id] = Pending(command, None, None, 1, (request,))
    d.outputs.append(command)


def _on_repeat(d: _Draft, txn: Txn, request: Request) -> None:
    if not _same_content(txn, request):
        d.answer(request, Status.DUPLICATE_CONFLICT)
        d.event(
            "DuplicateConflictDetected",
            f"{txn.key}:{request.request_id}",
            txn,
            correlation_id=request.correlation_id,  # the refused request's, like its answer
            amount=request.amount or 0,
            currency=request.currency,
            original_amount=txn.amount,
            original_currency=txn.currency,
        )
        return
    if txn.state == TxnState.PENDING:
        deadline = txn.deadline_ms or d.now + d.config.wallet_timeout_ms
        d.put(replace(txn, waiters=(*txn.waiters, request), deadline_ms=deadline))
        return
    if (
        txn.action == Action.BET
        and txn.rollback_key is not None
        and txn.state
        in (
            TxnState.COMPENSATED,
            TxnState.REFUNDING,
            TxnState.ROLLED_BACK,
        )
    ):
        # the provider rolled this bet back: it is never debited again. A bet that was
        # answered (accepted, then refunded) gets its original answer, as every exact
        # duplicate does; one that never had a final answer (compensated) is refused.
        if txn.state != TxnState.COMPENSATED and txn.status is not None:
            d.answer(request, txn.status, txn.balance)
        else:
            d.answer(request, Status.BET_ROLLED_BACK)
        return
    if txn.action == Action.BET and txn.state == TxnState.COMPENSATED:
        # never answered finally: a retry is a new decision, refused if a rule refuses it now
        if request.refusal is not None:
            _refuse_bet(d, txn, request, request.refusal)
            return
        if _refused_by_controls(d, txn, request):
            return
        _start_debit(d, replace(txn, correlation_id=request.correlation_id), request)
        return
    if txn.state == TxnState.COMPENSATING:
        d.answer(request, Status.RETRY_LATER)
        return
    assert txn.status is not None
    d.answer(request, txn.status, txn.balance)


def _start_debit(d: _Draft, txn: Txn, request: Request) -> None:
    attempt = txn.attempt + 1
    command_id = debit_command_id(
        d.base.operator_id, d.base.player_id, txn.provider_id, txn.transaction_id, attempt
    )
    txn = replace(
        txn,
        state=TxnState.PENDING,
        attempt=attempt,
        command_id=command_id,
        cancel_command_id=None,
        status=None,
        waiters=(request,),
        deadline_ms=d.now + d.config.wallet_timeout_ms,
        settled_at_ms=None,
    )
    d.put(txn)
    d.send(d.command(txn, CommandKind.DEBIT, command_id), txn.key, retry=False)


def _on_new_bet(d: _Draft, request: Request, tombstone: Txn | None) -> None:
    if tombstone is not None:
        txn = replace(
            _new_txn(request, TxnState.REJECTED),
            status=Status.BET_ROLLED_BACK,
            rollback_key=tombstone.rollback_key,
            settled_at_ms=d.now,
        )
        d.put(txn)
        d.answer(request, Status.BET_ROLLED_BACK)
        d.event("BetRejected", f"{txn.key}:rejected", txn, status=Status.BET_ROLLED_BACK.value,
                command_id=None, balance=None, rule=RULE_ROLLED_BACK)  # fmt: skip
        return
    if request.refusal is not None:
        _refuse_bet(d, _new_txn(request, TxnState.PENDING), request, request.refusal)
        return
    txn = _new_txn(request, TxnState.PENDING)
    if d.controls is not NO_CONTROLS and _refused_by_controls(d, txn, request):
        return
    if request.campaign_id is not None:
        balance = d.balance if d.balance_currency == request.currency else None
        _on_free_bet(d, None, txn, request, balance)
        return
    _start_debit(d, txn, request)


RULE_ROLLED_BACK = "rolled_back"
RULE_ROUND_CLOSED = "round_closed"
"""The rule of a bet refused because its round is closed (by the provider or by policy)."""
"""The rule of a bet refused because its id was rolled back before it came."""


def wallet_rule(status: ReplyStatus, *, wallet: str = "operator_wallet") -> str:
    """The rule of a bet a wallet refused: the operator's (``operator_wallet``), or one the
    saga holds (``demo_wallet``, ``transfer_wallet``)."""
    return f"{wallet}:{status.value}"


def _refuse_bet(d: _Draft, txn: Txn, request: Request, refusal: Refusal,
                carried: bool = True) -> None:  # fmt: skip
    """A bet a compliance rule refuses: REJECTED with the rule's status, answered, journaled
    with the rule; no wallet command. Remembered like every decided bet, so a duplicate gets
    the same answer. A refusal carried on the request whose status is not a rule's is a
    malformed request (``carried``: False for the saga's own, the player's controls')."""
    if carried and (refusal.status not in REFUSAL_STATUSES or not refusal.rule):
        d.answer(request, Status.INVALID_REQUEST)
        return
    rejected = replace(txn, state=TxnState.REJECTED, status=refusal.status, waiters=(),
                       deadline_ms=None, correlation_id=request.correlation_id,
                       settled_at_ms=d.now)  # fmt: skip
    d.put(rejected)
    d.answer(request, refusal.status)
    cause = f"{rejected.key}:refused:{rejected.attempt}"
    d.event("BetRejected", cause, rejected, status=refusal.status.value, command_id=None,
            balance=None, rule=refusal.rule)  # fmt: skip


def _in_flight(d: _Draft, currency: str) -> int:
    """Stakes in ``currency`` whose debit awaits the operator's wallet."""
    debits = (p.command for p in d.pending.values() if p.command.kind == CommandKind.DEBIT)
    return sum(c.amount for c in debits if c.currency == currency)


def _controls_refusal(d: _Draft, request: Request, amount: int) -> Refusal | None:
    controls = d.controls
    if controls is NO_CONTROLS:
        return None
    in_flight = 0
    if any(x.kind is not LimitKind.DEPOSIT and x.currency == request.currency
           for x in controls.limits):  # fmt: skip
        in_flight = _in_flight(d, request.currency)
    started = request.session_started_at_ms or d.sessions.get(request.provider_id)
    return bet_refusal(controls, d.usage, currency=request.currency, amount=amount,
                       in_flight=in_flight, now_ms=d.now,
                       session_started_at_ms=started)  # fmt: skip


def _note_session(d: _Draft, request: Request) -> None:
    """Remember when the request's session opened, per provider, while the player has a
    session time limit (a later call without a session is held to the same start)."""
    started = request.session_started_at_ms
    if started is None or d.controls.session_time_limit_ms is None or request.mode != REAL:
        return
    if d.sessions.get(request.provider_id, -1) < started:
        d.sessions = {**d.sessions, request.provider_id: started}


def _stake(request: Request, txn: Txn) -> int:
    """What a bet stakes of the player's money: nothing for a free spin (the campaign's)."""
    return 0 if request.campaign_id is not None else txn.amount


def _refused_by_controls(d: _Draft, txn: Txn, request: Request) -> bool:
    """A real-money bet the player's controls refuse (:mod:`agg_domain.limits`): REJECTED
    with the control's status and rule before any debit is sent. A free spin stakes
    nothing, but a blocked or self-excluded player, or a session past its time, plays none."""
    refusal = _controls_refusal(d, request, _stake(request, txn))
    if refusal is None:
        return False
    _refuse_bet(d, txn, request, refusal, carried=False)
    return True


def _count(d: _Draft, currency: str, *, wagered: int = 0, lost: int = 0,
           deposited: int = 0) -> None:  # fmt: skip
    """Real money settled: counted in the current day, week and month for the limits."""
    d.usage = add_usage(d.usage, currency, d.now, wagered=wagered, lost=lost,
                        deposited=deposited)  # fmt: skip


def _on_new_win(d: _Draft, request: Request) -> None:
    txn = _new_txn(request, TxnState.PENDING)
    command_id = credit_command_id(
        d.base.operator_id, d.base.player_id, txn.provider_id, txn.transaction_id
    )
    txn = replace(
        txn,
        command_id=command_id,
        attempt=1,
        waiters=(request,),
        deadline_ms=d.now + d.config.wallet_timeout_ms,
    )
    d.put(txn)
    d.send(d.command(txn, CommandKind.CREDIT, command_id), txn.key, retry=True)


def _on_new_rollback(d: _Draft, request: Request) -> None:
    assert request.reference_transaction_id is not None
    rollback = _new_txn(request, TxnState.PENDING)
    bet_key = txn_key(request.provider_id, request.reference_transaction_id)
    bet = d.txns.get(bet_key)
    if bet is None:
        # tombstone: the bet, if it ever arrives, is refused
        d.put(
            Txn(
                key=bet_key,
                action=Action.BET,
                provider_id=request.provider_id,
                transaction_id=request.reference_transaction_id,
                correlation_id=request.correlation_id,
                amount=0,
                currency=request.currency,
                round_id=request.round_id,
                game_id=request.game_id,
                reference_transaction_id=None,
                round_closed=False,
                state=TxnState.TOMBSTONE,
                rollback_key=rollback.key,
                settled_at_ms=d.now,
            )
        )
        _settle_rollback_noop(d, rollback, request, bet_known=False)
        return
    if bet.action != Action.BET or bet.state == TxnState.TOMBSTONE:
        status = Status.TRANSACTION_NOT_FOUND if bet.action != Action.BET else Status.OK
        if status == Status.OK:
            _settle_rollback_noop(d, rollback, request, bet_known=False)
        else:
            d.answer(request, status)
        return
    if bet.rollback_key is not None and bet.rollback_key != rollback.key:
        # another rollback already undoes (or will undo) this bet: nothing more to refund
        _settle_rollback_noop(d, rollback, request, bet_known=True)
    elif bet.state in (TxnState.REJECTED, TxnState.COMPENSATED):
        d.put(replace(bet, rollback_key=rollback.key))
        _settle_rollback_noop(d, rollback, request, bet_known=True)
    else:
        waiting = replace(
            rollback, waiters=(request,), deadline_ms=d.now + d.config.wallet_timeout_ms
        )
        if bet.state == TxnState.ACCEPTED and bet.campaign_id is not None:
            balance = d.balance if d.balance_currency == bet.currency else None
            _restore_free_spin(d, None, bet, rollback, request, balance)
            return
        d.put(waiting)
        if bet.state == TxnState.ACCEPTED:
            _start_refund(d, bet, rollback.key)
        else:  # PENDING or COMPENSATING: resolved when the debit or its cancel resolves
            d.put(replace(bet, rollback_key=rollback.key))


def _settle_rollback_noop(d: _Draft, rollback: Txn, request: Request, bet_known: bool) -> None:
    _settle(d, replace(rollback, waiters=(request,)), TxnState.ACCEPTED, Status.OK, None)
    _journal_rollback_recorded(d, rollback, bet_known)


def _journal_rollback_recorded(d: _Draft, rollback: Txn, bet_known: bool) -> None:
    d.event(
        "RollbackRecorded",
        rollback.key,
        None,
        correlation_id=rollback.correlation_id,
        provider_id=rollback.provider_id,
        rollback_transaction_id=rollback.transaction_id,
        reference_transaction_id=rollback.reference_transaction_id,
        round_id=rollback.round_id or "",
        game_id=rollback.game_id or "",
        bet_known=bet_known,
    )


def _settle(d: _Draft, txn: Txn, state: TxnState, status: Status, balance: int | None) -> Txn:
    """Store ``txn`` in a final state and give every waiting request that answer."""
    settled = replace(txn, state=state, status=status, balance=balance, waiters=(),
                      deadline_ms=None, settled_at_ms=d.now)  # fmt: skip
    d.put(settled)
    for waiter in txn.waiters:
        d.answer(waiter, status, balance)
    return settled


def _cancel_debit(d: _Draft, bet: Txn, state: TxnState, **changes: Any) -> Txn:
    """Move ``bet`` to ``state`` and send the CANCEL of its debit (one id per debit, resent
    until the wallet acknowledges it)."""
    assert bet.command_id is not None
    cancel_id = cancel_command_id(d.base.operator_id, d.base.player_id, bet.command_id)
    bet = replace(bet, state=state, cancel_command_id=cancel_id, **changes)
    d.put(bet)
    d.send(d.command(bet, CommandKind.CANCEL, cancel_id, bet.command_id), bet.key, retry=True)
    return bet


def _start_refund(d: _Draft, bet: Txn, rollback_key: str) -> None:
    _cancel_debit(d, bet, TxnState.REFUNDING, rollback_key=rollback_key, settled_at_ms=None)


def _start_compensation(d: _Draft, bet: Txn) -> Txn:
    assert bet.command_id is not None
    # a late reply to the debit changes nothing now: the cancel settles the money
    d.pending.pop(bet.command_id, None)
    return _cancel_debit(d, bet, TxnState.COMPENSATING, waiters=(), status=None, deadline_ms=None)


# --- wallet replies ------------------------------------------------------------------------


def _on_reply(d: _Draft, reply: Reply) -> None:
    pending = d.pending.get(reply.command_id)
    if pending is None:
        return  # a duplicate or late reply to a command already settled: nothing to do
    command = pending.command
    if command.kind == CommandKind.BALANCE:
        del d.pending[reply.command_id]
        d.note_balance(reply.balance, reply.currency)
        status = Status.OK if reply.status == ReplyStatus.OK else (
            REFUSAL_FOR_REPLY.get(reply.status, Status.RETRY_LATER))  # fmt: skip
        for waiter in pending.waiters:
            d.answer(waiter, status, reply.balance if reply.currency == waiter.currency else None)
        return
    assert pending.txn_key is not None
    txn = d.txns[pending.txn_key]
    if command.kind == CommandKind.DEBIT:
        _on_debit_reply(d, txn, pending, reply)
    elif command.kind == CommandKind.CREDIT:
        _on_credit_reply(d, txn, pending, reply)
    else:
        _on_cancel_reply(d, txn, pending, reply)


def _on_debit_reply(d: _Draft, bet: Txn, pending: Pending, reply: Reply) -> None:
    assert bet.state == TxnState.PENDING and bet.command_id == reply.command_id
    del d.pending[reply.command_id]
    d.note_balance(reply.balance, reply.currency)
    if reply.status == ReplyStatus.OK:
        accepted = _settle(d, bet, TxnState.ACCEPTED, Status.OK, reply.balance)
        d.event("BetAccepted", reply.command_id, accepted, command_id=reply.command_id,
                balance=reply.balance, round_closed=accepted.round_closed)  # fmt: skip
        d.add_to_round(accepted, bet=accepted.amount)
        _count(d, accepted.currency, wagered=accepted.amount, lost=accepted.amount)
        if bet.rollback_key is not None:
            _start_refund(d, accepted, bet.rollback_key)
        return
    if reply.status.is_transient:
        # the wallet says it failed: make sure nothing stays debited, answer retryable
        for waiter in bet.waiters:
            d.answer(waiter, Status.RETRY_LATER)
        _start_compensation(d, bet)
        return
    status = REFUSAL_FOR_REPLY[reply.status]
    rejected = _settle(d, bet, TxnState.REJECTED, status, reply.balance)
    d.event("BetRejected", reply.command_id, rejected, status=status.value,
            command_id=reply.command_id, balance=reply.balance,
            rule=wallet_rule(reply.status))  # fmt: skip
    if bet.rollback_key is not None:
        _finish_rollback(d, bet.rollback_key, refunded=False)


def _on_credit_reply(d: _Draft, win: Txn, pending: Pending, reply: Reply) -> None:
    if reply.status != ReplyStatus.OK:
        # owed money: keep resending on the backoff schedule; the provider hears RETRY_LATER
        for waiter in win.waiters:
            d.answer(waiter, Status.RETRY_LATER)
        d.put(replace(win, waiters=(), deadline_ms=None, owed=True))
        if not win.owed:
            d.event("CreditOwed", f"{reply.command_id}:owed", win, command_id=reply.command_id,
                    reason=f"wallet replied {reply.status.value}")  # fmt: skip
        return
    del d.pending[reply.command_id]
    d.note_balance(reply.balance, reply.currency)
    credited = _settle(d, win, TxnState.ACCEPTED, Status.OK, reply.balance)
    d.event("WinCredited", reply.command_id, credited, command_id=reply.command_id,
            balance=reply.balance, round_closed=credited.round_closed,
            win_kind=credited.win_kind, campaign_id=credited.campaign_id)  # fmt: skip
    d.add_to_round(credited, win=credited.amount)
    _count(d, credited.currency, lost=-credited.amount)


def _on_cancel_reply(d: _Draft, bet: Txn, pending: Pending, reply: Reply) -> None:
    if reply.status != ReplyStatus.OK:
        return  # resent on the backoff schedule until acknowledged
    del d.pending[reply.command_id]
    d.note_balance(reply.balance, reply.currency)
    if bet.state == TxnState.REFUNDING:
        refunded = replace(bet, state=TxnState.ROLLED_BACK, settled_at_ms=d.now,
                           balance=reply.balance)  # fmt: skip
        d.put(refunded)
        assert bet.rollback_key is not None
        rollback = d.txns[bet.rollback_key]
        d.event("BetRolledBack", reply.command_id, refunded,
                rollback_transaction_id=rollback.transaction_id, command_id=reply.command_id,
                balance=reply.balance)  # fmt: skip
        d.add_to_round(refunded, refund=refunded.amount)
        _count(d, refunded.currency, wagered=-refunded.amount, lost=-refunded.amount)
        _finish_rollback(d, bet.rollback_key, refunded=True, balance=reply.balance)
        return
    # compensation of a timed-out or failed debit acknowledged: no money moved
    compensated = replace(bet, state=TxnState.COMPENSATED, settled_at_ms=d.now)
    d.put(compensated)
    d.event("DebitCancelled", reply.command_id, compensated, command_id=bet.command_id,
            cancel_command_id=reply.command_id, balance=reply.balance)  # fmt: skip
    if bet.rollback_key is not None:
        _finish_rollback(d, bet.rollback_key, refunded=False)


def _finish_rollback(d: _Draft, rollback_key: str, *, refunded: bool,
                     balance: int | None = None) -> None:  # fmt: skip
    rollback = d.txns[rollback_key]
    if rollback.status is not None:
        return
    _settle(d, rollback, TxnState.ACCEPTED, Status.OK, balance)
    if not refunded:
        _journal_rollback_recorded(d, rollback, bet_known=True)


# --- wallets held here: demo play and transfer-wallet operators ------------------------------

REAL = "real"
DEMO = "demo"
SEAMLESS = "seamless"
"""A request's ``wallet``: the operator's wallet decides (commands, replies)."""
TRANSFER = "transfer"
"""A request's ``wallet``: the operator moved funds into a balance held here, and play is
decided against it (``deposit`` and ``withdraw`` move funds in and out)."""
TRANSFER_ACTIONS = frozenset({Action.DEPOSIT, Action.WITHDRAW})
TRANSFER_EVENTS = frozenset({"BetAccepted", "WinCredited", "BetRolledBack"})
"""The money events that say ``wallet: transfer`` (the others need not: no money moved)."""


@dataclass(frozen=True)
class _Held:
    """A wallet the saga holds itself and decides against at once, with the same idempotency
    and rollback rules as the operator's: demo play's, or a transfer-wallet operator's."""

    name: str
    """Prefix of its transactions' keys (``name|provider:transaction``; no real key holds a
    ``|``) and of its decisions' ids."""
    keeps_rounds: bool
    """Rounds (and RoundClosed) are kept for real money only."""

    def key(self, provider_id: str, transaction_id: str) -> str:
        return f"{self.name}|{provider_id}:{transaction_id}"

    def marks(self, event: str) -> dict[str, object]:
        if self.name == DEMO:
            return {"mode": DEMO}
        return {"wallet": TRANSFER} if event in TRANSFER_EVENTS else {}


_DEMO = _Held(DEMO, keeps_rounds=False)
_TRANSFER = _Held("xfer", keeps_rounds=True)


def demo_key(provider_id: str, transaction_id: str) -> str:
    """A demo transaction's key: never a real one's (ids and provider ids exclude ``|``)."""
    return _DEMO.key(provider_id, transaction_id)


def transfer_key(provider_id: str, transaction_id: str) -> str:
    """A transfer-wallet transaction's key (a transfer's own: provider ``""``)."""
    return _TRANSFER.key(provider_id, transaction_id)


def _held_id(d: _Draft, held: _Held, txn: Txn, kind: str) -> str:
    """The id of a decision against a held wallet (in the journal's ``command_id``: no
    command is sent)."""
    return derive_id(held.name, d.base.operator_id, d.base.player_id, txn.provider_id,
                     txn.transaction_id, kind)  # fmt: skip


def _held_balance(d: _Draft, held: _Held, currency: str) -> int:
    if held is _DEMO:
        return d.demo_balances.get(currency, d.config.demo_starting_balance)
    return d.transfer_balances.get(currency, 0)


def _held_move(d: _Draft, held: _Held, currency: str, balance: int) -> None:
    if held is _DEMO:
        d.demo_balances = {**d.demo_balances, currency: balance}
    else:
        d.transfer_balances = {**d.transfer_balances, currency: balance}


def _held_answer(d: _Draft, request: Request, status: Status, balance: int | None,
                 amount: int | None = None) -> None:  # fmt: skip
    """An answer with the held balance: never the one :meth:`_Draft.answer` would add."""
    d.outputs.append(Answer(request, status, balance, request.currency, amount))


def _held_settle(d: _Draft, txn: Txn, request: Request, state: TxnState, status: Status,
                 balance: int) -> Txn:  # fmt: skip
    settled = replace(txn, state=state, status=status, balance=balance, settled_at_ms=d.now)
    d.put(settled)
    amount = txn.amount if txn.action in TRANSFER_ACTIONS else None
    _held_answer(d, request, status, balance, amount)
    return settled


def _held_event(d: _Draft, held: _Held, name: str, cause: str, txn: Txn | None, *,
                correlation_id: str | None = None, provider_id: str | None = None,
                **fields: object) -> None:  # fmt: skip
    fields.update(held.marks(name))
    d.event(name, cause, txn, correlation_id=correlation_id, provider_id=provider_id, **fields)


def _same_held_content(txn: Txn, request: Request) -> bool:
    if txn.action in TRANSFER_ACTIONS:  # a withdrawal of everything names no amount
        return (txn.action == request.action and txn.currency == request.currency
                and txn.whole == (request.amount is None)
                and (txn.whole or txn.amount == request.amount))  # fmt: skip
    return _same_content(txn, request)


def _on_held_request(d: _Draft, request: Request, held: _Held) -> None:
    """A request decided here and now against a held wallet: no wallet command, and never
    the operator's balance."""
    if request.operator_id != d.base.operator_id or request.player_id != d.base.player_id:
        raise ValueError(f"request {request.request_id} routed to the wrong player state")
    balance = _held_balance(d, held, request.currency)
    valid_mode = request.mode == DEMO if held is _DEMO else request.mode == REAL
    if held is _DEMO and request.campaign_id is not None:  # campaigns are real players'
        valid_mode = False
    if not valid_mode or _invalid(request):
        _held_answer(d, request, Status.INVALID_REQUEST, balance if valid_mode else None)
        return
    if held is _TRANSFER:
        _note_session(d, request)
    if request.action in (Action.BALANCE, Action.AUTHENTICATE):
        _held_answer(d, request, Status.OK, balance)
        return
    assert request.transaction_id is not None
    key = held.key(request.provider_id, request.transaction_id)
    txn = replace(_new_txn(request, TxnState.PENDING), key=key)
    existing = d.txns.get(key)
    if existing is not None and existing.state != TxnState.TOMBSTONE:
        if not _same_held_content(existing, request):
            _held_answer(d, request, Status.DUPLICATE_CONFLICT, balance)
            _held_event(d, held, "DuplicateConflictDetected", f"{key}:{request.request_id}",
                        existing, correlation_id=request.correlation_id,
                        amount=request.amount or 0, currency=request.currency,
                        original_amount=existing.amount,
                        original_currency=existing.currency)  # fmt: skip
        else:  # every transaction held here is final at once: the original answer
            assert existing.status is not None
            amount = existing.amount if existing.action in TRANSFER_ACTIONS else None
            _held_answer(d, request, existing.status, existing.balance, amount)
        return
    if existing is not None and request.action != Action.BET:
        _held_answer(d, request, Status.DUPLICATE_CONFLICT, balance)  # a bet id's tombstone
        return
    if request.action == Action.BET:
        if held.keeps_rounds and existing is None and _round_closed_for_bet(d, request):
            # a bet on a closed round, as the operator's wallet's are: refused, nothing held
            refused = replace(txn, command_id=_held_id(d, held, txn, "DEBIT"), attempt=1)
            refused = _held_settle(d, refused, request, TxnState.REJECTED, Status.ROUND_CLOSED,
                                   balance)  # fmt: skip
            _held_event(d, held, "BetRejected", f"{key}:round_closed", refused,
                        status=Status.ROUND_CLOSED.value, command_id=None,
                        balance=balance, rule=RULE_ROUND_CLOSED)  # fmt: skip
            return
        _on_held_bet(d, held, txn, request, balance, tombstone=existing)
    elif request.action == Action.WIN:
        _on_held_win(d, held, txn, request, balance)
    elif request.action == Action.ROLLBACK:
        _on_held_rollback(d, held, txn, request, balance)
    else:
        _on_transfer(d, txn, request, balance)


def _on_held_bet(d: _Draft, held: _Held, txn: Txn, request: Request, balance: int,
                 tombstone: Txn | None) -> None:  # fmt: skip
    decision_id = _held_id(d, held, txn, "DEBIT")
    txn = replace(txn, command_id=decision_id, attempt=1)
    refusal = request.refusal  # the rules of play hold for every wallet, play money too
    if refusal is not None and (refusal.status not in REFUSAL_STATUSES or not refusal.rule):
        _held_answer(d, request, Status.INVALID_REQUEST, balance)
        return
    if refusal is None and tombstone is None and held is _TRANSFER:  # real money: controls
        refusal = _controls_refusal(d, request, _stake(request, txn))
    if tombstone is None and refusal is None and request.campaign_id is not None:
        _on_free_bet(d, held, txn, request, balance)
        return
    if tombstone is not None or refusal is not None or txn.amount > balance:
        if tombstone is not None:
            status, rule = Status.BET_ROLLED_BACK, RULE_ROLLED_BACK
            txn = replace(txn, rollback_key=tombstone.rollback_key)
        elif refusal is not None:
            status, rule = refusal.status, refusal.rule
        else:
            status = Status.INSUFFICIENT_FUNDS
            held_wallet = "demo_wallet" if held is _DEMO else "transfer_wallet"
            rule = wallet_rule(ReplyStatus.INSUFFICIENT_FUNDS, wallet=held_wallet)
        rejected = _held_settle(d, txn, request, TxnState.REJECTED, status, balance)
        _held_event(d, held, "BetRejected", f"{decision_id}:rejected", rejected,
                    status=status.value, command_id=None, balance=balance,
                    rule=rule)  # fmt: skip
        return
    balance -= txn.amount
    _held_move(d, held, txn.currency, balance)
    accepted = _held_settle(d, txn, request, TxnState.ACCEPTED, Status.OK, balance)
    _held_event(d, held, "BetAccepted", decision_id, accepted, command_id=decision_id,
                balance=balance, round_closed=accepted.round_closed)  # fmt: skip
    if held.keeps_rounds:
        d.add_to_round(accepted, bet=accepted.amount)
    if held is _TRANSFER:
        _count(d, accepted.currency, wagered=accepted.amount, lost=accepted.amount)


def _on_held_win(d: _Draft, held: _Held, txn: Txn, request: Request, balance: int) -> None:
    decision_id = _held_id(d, held, txn, "CREDIT")
    txn = replace(txn, command_id=decision_id, attempt=1)
    if balance > MAX_AMOUNT - txn.amount:  # beyond what a long holds
        _held_settle(d, txn, request, TxnState.REJECTED, Status.LIMIT_EXCEEDED, balance)
        return
    balance += txn.amount
    _held_move(d, held, txn.currency, balance)
    credited = _held_settle(d, txn, request, TxnState.ACCEPTED, Status.OK, balance)
    _held_event(d, held, "WinCredited", decision_id, credited, command_id=decision_id,
                balance=balance, round_closed=credited.round_closed,
                win_kind=credited.win_kind, campaign_id=credited.campaign_id)  # fmt: skip
    if held.keeps_rounds:
        d.add_to_round(credited, win=credited.amount)
    if held is _TRANSFER:
        _count(d, credited.currency, lost=-credited.amount)


def _on_held_rollback(d: _Draft, held: _Held, rollback: Txn, request: Request,
                      balance: int) -> None:  # fmt: skip
    assert request.reference_transaction_id is not None
    bet_key = held.key(request.provider_id, request.reference_transaction_id)
    bet = d.txns.get(bet_key)
    if bet is not None and bet.action != Action.BET:
        _held_answer(d, request, Status.TRANSACTION_NOT_FOUND, balance)
        return
    refund = bet is not None and bet.state == TxnState.ACCEPTED and bet.rollback_key is None
    if bet is None:  # a tombstone: the bet, if it ever comes, is refused
        d.put(replace(rollback, key=bet_key, action=Action.BET,
                      transaction_id=request.reference_transaction_id, amount=0,
                      reference_transaction_id=None, round_closed=False,
                      state=TxnState.TOMBSTONE, rollback_key=rollback.key,
                      settled_at_ms=d.now))  # fmt: skip
    elif bet.rollback_key is None and bet.state != TxnState.TOMBSTONE:
        bet = replace(bet, rollback_key=rollback.key)
        d.put(bet)
    if not refund:
        _held_settle(d, rollback, request, TxnState.ACCEPTED, Status.OK, balance)
        _held_event(d, held, "RollbackRecorded", rollback.key, None,
                    correlation_id=rollback.correlation_id, provider_id=rollback.provider_id,
                    rollback_transaction_id=rollback.transaction_id,
                    reference_transaction_id=rollback.reference_transaction_id,
                    round_id=rollback.round_id or "", game_id=rollback.game_id or "",
                    bet_known=bet is not None and bet.state != TxnState.TOMBSTONE)  # fmt: skip
        return
    assert bet is not None
    if bet.campaign_id is not None:
        _restore_free_spin(d, held, bet, rollback, request, balance)
        return
    # the stake goes back in the bet's currency, whatever the rollback names; its answer
    # carries the balance of the rollback's currency, as every answer does
    refunded_balance = _held_balance(d, held, bet.currency) + bet.amount
    _held_move(d, held, bet.currency, refunded_balance)
    decision_id = _held_id(d, held, bet, "CANCEL")
    refunded = replace(bet, state=TxnState.ROLLED_BACK, settled_at_ms=d.now,
                       cancel_command_id=decision_id)  # fmt: skip
    d.put(refunded)
    _held_settle(d, rollback, request, TxnState.ACCEPTED, Status.OK,
                 _held_balance(d, held, request.currency))  # fmt: skip
    _held_event(d, held, "BetRolledBack", decision_id, refunded,
                rollback_transaction_id=rollback.transaction_id, command_id=decision_id,
                balance=refunded_balance)  # fmt: skip
    if held.keeps_rounds:
        d.add_to_round(refunded, refund=refunded.amount)
    if held is _TRANSFER:
        _count(d, refunded.currency, wagered=-refunded.amount, lost=-refunded.amount)


def _on_transfer(d: _Draft, txn: Txn, request: Request, balance: int) -> None:
    """A deposit or withdrawal of the operator's: funds in or out of the balance held here.

    Stakes leave the balance when their bet is accepted, so an open round's stakes are never
    withdrawable; what may still come for an open round (a win, a refund) only adds to it, so
    everything the balance holds may leave. A withdrawal without an amount takes all of it
    (possibly nothing); one of more than the balance is refused."""
    inbound = request.action == Action.DEPOSIT
    amount = balance if request.amount is None else request.amount
    txn = replace(txn, amount=amount, whole=request.amount is None,
                  command_id=_held_id(d, _TRANSFER, txn, request.action.value))  # fmt: skip
    refusal = None
    if inbound and d.controls is not NO_CONTROLS:
        refusal = deposit_refusal(d.controls, d.usage, currency=txn.currency, amount=amount,
                                  now_ms=d.now)  # fmt: skip
    rule: str | None = None
    if refusal is not None:
        status: Status | None = refusal.status
        rule = refusal.rule
    elif inbound and balance > MAX_AMOUNT - amount:
        status = Status.LIMIT_EXCEEDED
    elif not inbound and amount > balance:
        status = Status.INSUFFICIENT_FUNDS
    else:
        status = None
    direction = "IN" if inbound else "OUT"
    if status is not None:
        rejected = _held_settle(d, txn, request, TxnState.REJECTED, status, balance)
        d.event("TransferRejected", f"{txn.key}:rejected", rejected, direction=direction,
                status=status.value, balance=balance, rule=rule)  # fmt: skip
        return
    balance = balance + amount if inbound else balance - amount
    _held_move(d, _TRANSFER, txn.currency, balance)
    if inbound:
        _count(d, txn.currency, deposited=amount)
    done = _held_settle(d, txn, request, TxnState.ACCEPTED, Status.OK, balance)
    d.event("FundsTransferred", f"{txn.key}:{direction}", done, direction=direction,
            balance=balance)  # fmt: skip


# --- responsible gaming: the player's controls -------------------------------------------


def _on_controls(d: _Draft, request: Request) -> None:
    """The operator states the player's controls: applied once per change id, in the
    player's order (every bet after it is decided under them), and journaled with who made
    the change. A repeat of a change id with the same content gets OK and changes nothing
    (a later change stays in force); with other content, DUPLICATE_CONFLICT."""
    if request.operator_id != d.base.operator_id or request.player_id != d.base.player_id:
        raise ValueError(f"request {request.request_id} routed to the wrong player state")
    controls = request.controls
    change_id = request.transaction_id
    if controls is None or not change_id or request.provider_id != "" or request.mode != REAL:
        d.outputs.append(Answer(request, Status.INVALID_REQUEST, None, request.currency))
        return
    digest = controls.digest()
    seen = d.control_changes.get(change_id)
    if seen is not None:
        status = Status.OK if seen[0] == digest else Status.DUPLICATE_CONFLICT
        d.outputs.append(Answer(request, status, None, request.currency))
        return
    applied = replace(controls, change_id=change_id, changed_at_ms=d.now)
    d.controls = applied
    if applied.session_time_limit_ms is None:
        d.sessions = {}
    d.control_changes = {**d.control_changes, change_id: (digest, d.now)}
    d.event("PlayerControlsChanged", f"controls:{change_id}", None,
            correlation_id=request.correlation_id, provider_id="", change_id=change_id,
            actor=applied.actor, blocked=applied.blocked, self_excluded=applied.self_excluded,
            self_excluded_until=applied.self_excluded_until_ms,
            session_time_limit_s=(None if applied.session_time_limit_ms is None
                                  else applied.session_time_limit_ms // 1000),
            limits=limits_text(applied.limits))  # fmt: skip
    d.outputs.append(Answer(request, Status.OK, None, request.currency))


# --- free-spin campaigns ----------------------------------------------------------------------

CAMPAIGN_ACTIONS = frozenset({Action.CAMPAIGN_GRANT, Action.CAMPAIGN_CANCEL})
"""The operator's campaign calls (operator API): decided here, whatever the wallet."""

RULE_CAMPAIGN = "campaign"
"""Prefix of the rule of a free spin refused: ``campaign:<why>``."""
CAMPAIGN_RULES: dict[str, Status] = {
    "unknown": Status.LIMIT_EXCEEDED,
    "provider": Status.GAME_NOT_ALLOWED,
    "game": Status.GAME_NOT_ALLOWED,
    "currency": Status.CURRENCY_MISMATCH,
    "bet_value": Status.LIMIT_EXCEEDED,
    "cancelled": Status.LIMIT_EXCEEDED,
    "expired": Status.LIMIT_EXCEEDED,
    "used_up": Status.LIMIT_EXCEEDED,
}
"""Why a free spin is refused, in the order checked, and the status it is answered: the
campaign is not this player's (``unknown``), is another provider's, does not include the
game, is in another currency, names another stake than the bet's, or is cancelled, expired
or used up. No new status: a provider hears what it hears of a stake its player may not
place."""


def _campaign_grant_invalid(request: Request) -> bool:
    g = request.campaign
    return (
        g is None
        or request.mode != REAL
        or not request.provider_id
        or request.campaign_id != g.campaign_id
        or request.transaction_id != g.campaign_id
        or not g.games
        or not 1 <= g.spins <= MAX_SPINS
        or not 1 <= g.bet_value <= MAX_AMOUNT
    )


MAX_SPINS = 1_000_000
"""Spins one campaign may grant: a bound on what a spin counter holds."""


def _same_grant(c: Campaign, request: Request) -> bool:
    g = request.campaign
    assert g is not None
    return (c.provider_id == request.provider_id and c.games == g.games and c.spins == g.spins
            and c.bet_value == g.bet_value and c.currency == request.currency
            and c.expires_at_ms == g.expires_at_ms)  # fmt: skip


def _campaign_answer(d: _Draft, request: Request, status: Status,
                     spins_left: int | None) -> None:  # fmt: skip
    """The answer to a campaign call: ``amount`` is the campaign's spins left."""
    d.outputs.append(Answer(request, status, None, request.currency, spins_left))


def _campaign_event(d: _Draft, name: str, campaign: Campaign, correlation_id: str,
                    **fields: object) -> None:  # fmt: skip
    d.event(name, campaign.campaign_id, None, correlation_id=correlation_id,
            provider_id=campaign.provider_id, campaign_id=campaign.campaign_id,
            spins=campaign.spins, spins_left=campaign.spins_left,
            **fields)  # fmt: skip


def _on_campaign_request(d: _Draft, request: Request) -> None:
    if request.operator_id != d.base.operator_id or request.player_id != d.base.player_id:
        raise ValueError(f"request {request.request_id} routed to the wrong player state")
    if request.action == Action.CAMPAIGN_GRANT:
        _on_campaign_grant(d, request)
        return
    campaign = d.campaigns.get(request.campaign_id or "")
    if request.campaign_id is None or campaign is None:
        _campaign_answer(d, request, Status.TRANSACTION_NOT_FOUND, None)
        return
    campaign = _expire_if_due(d, campaign)
    if campaign.state == CampaignState.ACTIVE:
        campaign = replace(campaign, state=CampaignState.CANCELLED, ended_at_ms=d.now)
        d.put_campaign(campaign)
        _campaign_event(d, "CampaignCancelled", campaign, request.correlation_id)
    # a campaign that has already ended: nothing to cancel, the same answer
    _campaign_answer(d, request, Status.OK, campaign.spins_left)


def _on_campaign_grant(d: _Draft, request: Request) -> None:
    if _campaign_grant_invalid(request):
        _campaign_answer(d, request, Status.INVALID_REQUEST, None)
        return
    g = request.campaign
    assert g is not None
    existing = d.campaigns.get(g.campaign_id)
    if existing is not None:
        if not _same_grant(existing, request):
            _campaign_answer(d, request, Status.DUPLICATE_CONFLICT, None)
        else:  # the original answer: the grant (its spins left now)
            _campaign_answer(d, request, Status.OK, existing.spins_left)
        return
    if g.expires_at_ms <= d.now:  # nothing to play: not granted
        _campaign_answer(d, request, Status.INVALID_REQUEST, None)
        return
    campaign = Campaign(
        campaign_id=g.campaign_id, provider_id=request.provider_id, games=g.games,
        spins=g.spins, spins_left=g.spins, bet_value=g.bet_value, currency=request.currency,
        expires_at_ms=g.expires_at_ms, state=CampaignState.ACTIVE, granted_at_ms=d.now,
        correlation_id=request.correlation_id,
    )  # fmt: skip
    d.put_campaign(campaign)
    _campaign_event(d, "CampaignGranted", campaign, request.correlation_id,
                    games=list(campaign.games), bet_value=campaign.bet_value,
                    currency=campaign.currency, expires_at=campaign.expires_at_ms,
                    wallet=request.wallet)  # fmt: skip
    _campaign_answer(d, request, Status.OK, campaign.spins_left)


def _expire_if_due(d: _Draft, campaign: Campaign) -> Campaign:
    """``campaign``, expired (and journaled) first if its time has come: expiry holds to the
    millisecond whenever the timer comes."""
    if campaign.state != CampaignState.ACTIVE or campaign.expires_at_ms > d.now:
        return campaign  # one that has ended (used up too) has nothing left to expire
    campaign = replace(campaign, state=CampaignState.EXPIRED, ended_at_ms=d.now)
    d.put_campaign(campaign)
    _campaign_event(d, "CampaignExpired", campaign, campaign.correlation_id,
                    expires_at=campaign.expires_at_ms)  # fmt: skip
    return campaign


def _expire_campaigns(d: _Draft) -> None:
    for campaign in list(d.campaigns.values()):
        if campaign.state == CampaignState.ACTIVE and campaign.expires_at_ms <= d.now:
            _expire_if_due(d, campaign)


def campaigns_due_ms(state: PlayerState) -> int | None:
    """The part of :func:`next_due_ms` that the campaigns set: the earliest expiry of an
    active one."""
    times = [c.expires_at_ms for c in state.campaigns.values()
             if c.state == CampaignState.ACTIVE]  # fmt: skip
    return min(times) if times else None


def _free_spin_refusal(d: _Draft, request: Request) -> str | None:
    """Why the bet ``request`` may not be a free spin of the campaign it names, if it may
    not (a key of :data:`CAMPAIGN_RULES`)."""
    campaign = d.campaigns.get(request.campaign_id or "")
    if campaign is None:
        return "unknown"
    campaign = _expire_if_due(d, campaign)
    if campaign.provider_id != request.provider_id:
        return "provider"
    if request.game_id not in campaign.games:
        return "game"
    if request.currency != campaign.currency:
        return "currency"
    if request.amount != campaign.bet_value:
        return "bet_value"
    if campaign.state != CampaignState.ACTIVE:
        return campaign.state.value.lower()
    return None


def _on_free_bet(d: _Draft, held: _Held | None, txn: Txn, request: Request,
                 balance: int | None) -> None:  # fmt: skip
    """A bet naming a campaign: a free spin, decided here at once (no wallet command, no
    balance moved; the answer carries the balance last known). Its stake is the campaign's,
    not the player's: its round's ``bet_total`` does not count it."""
    decision_id = derive_id("free", d.base.operator_id, d.base.player_id, txn.provider_id,
                            txn.transaction_id)  # fmt: skip
    txn = replace(txn, command_id=decision_id, attempt=1, waiters=(), deadline_ms=None)
    # the journal reports a balance only where it is exact (a held one): the operator's may
    # have moved since the saga last heard it, and a money event's balance is a fact
    reported = balance if held is not None else None
    why = _free_spin_refusal(d, request)
    if why is not None:
        status = CAMPAIGN_RULES[why]
        rejected = replace(txn, state=TxnState.REJECTED, status=status, balance=balance,
                           settled_at_ms=d.now)  # fmt: skip
        d.put(rejected)
        d.outputs.append(Answer(request, status, balance, request.currency))
        # no mark: demo play has no campaigns, and a transfer's BetRejected carries none
        d.event("BetRejected", f"{txn.key}:campaign", rejected, status=status.value,
                command_id=None, balance=reported, rule=f"{RULE_CAMPAIGN}:{why}")  # fmt: skip
        return
    campaign = d.campaigns[request.campaign_id or ""]
    spins_left = campaign.spins_left - 1
    campaign = replace(campaign, spins_left=spins_left)
    if spins_left == 0:
        campaign = replace(campaign, state=CampaignState.USED_UP, ended_at_ms=d.now)
    d.put_campaign(campaign)
    accepted = replace(txn, state=TxnState.ACCEPTED, status=Status.OK, balance=balance,
                       settled_at_ms=d.now)  # fmt: skip
    d.put(accepted)
    d.outputs.append(Answer(request, Status.OK, balance, request.currency))
    d.event("FreeSpinPlayed", decision_id, accepted, campaign_id=campaign.campaign_id,
            spins_left=spins_left, command_id=decision_id, balance=reported,
            round_closed=accepted.round_closed,
            wallet=TRANSFER if held is _TRANSFER else SEAMLESS)  # fmt: skip
    if held is None or held.keeps_rounds:
        d.add_to_round(accepted)


def _restore_free_spin(d: _Draft, held: _Held | None, bet: Txn, rollback: Txn,
                       request: Request, balance: int | None) -> None:  # fmt: skip
    """The rollback of an accepted free spin: the spin goes back to its campaign (active
    again if it was used up and has not expired), no money moves."""
    assert bet.campaign_id is not None
    campaign = d.campaigns.get(bet.campaign_id)
    spins_left = None
    if campaign is not None:
        spins_left = campaign.spins_left + 1
        campaign = replace(campaign, spins_left=spins_left)
        if campaign.state == CampaignState.USED_UP:
            campaign = replace(campaign, state=CampaignState.ACTIVE, ended_at_ms=0)
            campaign = _expire_if_due(d, campaign)
        d.put_campaign(campaign)
    restored = replace(bet, state=TxnState.ROLLED_BACK, settled_at_ms=d.now,
                       rollback_key=rollback.key)  # fmt: skip
    d.put(restored)
    settled = replace(rollback, state=TxnState.ACCEPTED, status=Status.OK, balance=balance,
                      waiters=(), deadline_ms=None, settled_at_ms=d.now)  # fmt: skip
    d.put(settled)
    d.outputs.append(Answer(request, Status.OK, balance, request.currency))
    d.event("FreeSpinRolledBack", f"{bet.key}:restored", restored,
            campaign_id=bet.campaign_id, spins_left=spins_left,
            rollback_transaction_id=rollback.transaction_id,
            balance=balance if held is not None else None)  # fmt: skip


# --- timers --------------------------------------------------------------------------------


FINAL_STATES = frozenset(
    {TxnState.ACCEPTED, TxnState.REJECTED, TxnState.COMPENSATED, TxnState.ROLLED_BACK,
     TxnState.TOMBSTONE}
)  # fmt: skip


def _on_tick(d: _Draft) -> None:
    for txn in list(d.txns.values()):
        if txn.deadline_ms is None or txn.deadline_ms > d.now:
            continue
        for waiter in txn.waiters:
            d.answer(waiter, Status.RETRY_LATER)
        if txn.state == TxnState.PENDING and txn.action == Action.BET:
            compensating = _start_compensation(d, txn)
            d.event("DebitTimedOut", f"{txn.command_id}:timeout", compensating,
                    command_id=txn.command_id,
                    cancel_command_id=compensating.cancel_command_id)  # fmt: skip
        elif txn.state == TxnState.PENDING and txn.action == Action.WIN:
            d.put(replace(txn, waiters=(), deadline_ms=None, owed=True))
            if not txn.owed:
                d.event("CreditOwed", f"{txn.command_id}:owed", txn, command_id=txn.command_id,
                        reason="no wallet reply before the deadline")  # fmt: skip
        else:  # a rollback waiting on its bet's debit, cancel or refund
            d.put(replace(txn, waiters=(), deadline_ms=None))
    for command_id, pending in list(d.pending.items()):
        command = pending.command
        if command.kind == CommandKind.BALANCE:
            if command.issued_at_ms + d.config.wallet_timeout_ms <= d.now:
                del d.pending[command_id]
                for waiter in pending.waiters:
                    d.answer(waiter, Status.RETRY_LATER)
            continue
        if pending.next_send_ms is None or pending.next_send_ms > d.now:
            continue
        sends = pending.sends + 1
        d.pending[command_id] = replace(
            pending, sends=sends, next_send_ms=d.now + d.config.backoff_ms(sends)
        )
        d.outputs.append(command)
    _auto_close_idle_rounds(d)
    _expire_campaigns(d)


def _round_due_ms(rnd: Round, config: SagaConfig) -> int:
    return rnd.updated_at_ms + config.auto_close_ms(rnd.provider_id)


def _idle_past(d: _Draft, rnd: Round) -> bool:
    return not rnd.closed and _round_due_ms(rnd, d.config) <= d.now


def _rounds_with_pending_bets(d: _Draft) -> set[str]:
    """Rounds with a bet whose debit awaits the wallet: not idle, whatever their clock says
    (the bet lands on the round within the wallet timeout, or is compensated)."""
    # a bet is PENDING exactly while its DEBIT awaits a reply: the pending commands say it
    # without walking the player's history
    return {
        txn_key(p.command.provider_id, p.command.round_id)
        for p in d.pending.values()
        if p.command.kind == CommandKind.DEBIT and p.command.round_id is not None
    }


def _auto_close_idle_rounds(d: _Draft) -> None:
    """Close every open round idle past its provider's auto-close time (credits owed for it
    stay owed and are paid: they are wallet commands, not the round's)."""
    due = [(key, rnd) for key, rnd in d.rounds.items() if _idle_past(d, rnd)]
    if not due:
        return
    busy = _rounds_with_pending_bets(d)
    for key, rnd in due:
        if key not in busy:
            d.auto_close_round(key, rnd)


def _prune(d: _Draft) -> None:
    """Forget settled transactions past their retention, and closed rounds past theirs
    (counted from the close). An open round is never forgotten: one idle past its auto-close
    time is closed (and journaled) first, and kept."""
    for key, txn in list(d.txns.items()):
        if (
            txn.state in FINAL_STATES
            and txn.settled_at_ms is not None
            and d.now - txn.settled_at_ms > d.config.settled_retention_ms
        ):
            d.forget(key)
    _auto_close_idle_rounds(d)
    for key, rnd in list(d.rounds.items()):
        closed_at_ms = rnd.closed_at_ms or rnd.updated_at_ms
        if rnd.closed and d.now - closed_at_ms > d.config.round_retention_ms:
            d.forget_round(key)
    retention = d.config.settled_retention_ms
    if any(d.now - at > retention for _, at in d.control_changes.values()):
        d.control_changes = {c: seen for c, seen in d.control_changes.items()
                             if d.now - seen[1] <= retention}  # fmt: skip
    ended = [c.campaign_id for c in d.campaigns.values()
             if c.ended_at_ms and c.state != CampaignState.ACTIVE
             and d.now - c.ended_at_ms > d.config.settled_retention_ms]  # fmt: skip
    if ended:
        d.campaigns = {k: c for k, c in d.campaigns.items() if k not in ended}
    d.pruned_at_ms = d.now


def next_due_ms(state: PlayerState, config: SagaConfig) -> int | None:
    """When this player's saga next needs a Tick (earliest deadline, resend or round
    auto-close), if ever."""
    times = [t.deadline_ms for t in state.txns.values() if t.deadline_ms is not None]
    for due in (pending_due_ms(state, config), rounds_due_ms(state, config),
                campaigns_due_ms(state)):  # fmt: skip
        if due is not None:
            times.append(due)
    return min(times) if times else None


def rounds_due_ms(state: PlayerState, config: SagaConfig) -> int | None:
    """The part of :func:`next_due_ms` that the open rounds set: the earliest auto-close. A
    round whose time has come while a bet on it awaits the wallet stays due (in the past)
    until the bet settles; the shell recomputes this only when the rounds change."""
    times = [_round_due_ms(r, config) for r in state.rounds.values() if not r.closed]
    return min(times) if times else None


def pending_due_ms(state: PlayerState, config: SagaConfig) -> int | None:
    """The part of :func:`next_due_ms` that the pending commands set (resends and balance
    deadlines): a shell that keeps the transactions' deadlines up to date from each
    decision's ``txns_changed`` adds this instead of walking every transaction."""
    times = [p.next_send_ms for p in state.pending.values() if p.next_send_ms is not None]
    times += [
        p.command.issued_at_ms + config.wallet_timeout_ms
        for p in state.pending.values()
        if p.command.kind == CommandKind.BALANCE
    ]
    return min(times) if times else None
