"""The deterministic simulator's world: the real saga worker (:class:`agg_saga.worker.SagaWorker`,
two of them) on the simulated broker and clock, the ingress's part of the money path (a
provider request published keyed by player, the outcome awaited for a bounded time, else
RETRY_LATER), the reference wallet's rules (:class:`agg_wallet.rules.Book`, the code the
reference wallet runs), and providers that retry as real ones do. One schedule runs to the
end, the faults are healed, every unanswered callback is retried until it has a final
answer, and then :mod:`agg_simulator.invariants` checks the outcome.

Everything runs on one asyncio loop without any real waiting, so a run is a function of its
schedule only.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agg_avro import AvroCodec
from agg_config.settings import Settings
from agg_domain.ids import derive_id
from agg_kafka.topics import TopicNames
from agg_ports.transport import OutRecord
from agg_saga.worker import SagaWorker
from agg_sim.broker import SimBroker, SimClock, SimCrash, SimTransport
from agg_simulator.schedule import Call, Fault, Schedule
from agg_wallet.rules import Book, Effect, failing_entry, problem_of
from agg_wallet.rules import Command as WalletCommand

STEP_MS_MAX = 40
IDLE_STEP_MS_MAX = 1_000
YIELDS = (0, 0, 1, 3)
"""How many times the world lets the event loop run after the workers' turn: the batches
the workers have in flight are acknowledged and finished then, or stay in flight."""
"""With nothing in flight, time moves to the next moment something can happen, at most this."""
SETTLE_MS_MAX = 180_000
"""How long the healed world may take to answer every callback finally."""
RETRY_MS = (150, 900)
OUTCOME_WAIT_MS = 2_000
RESTART_DELAYS_MS = (0, 0, 100, 500, 1_500, 3_000)
"""How long a killed worker stays down before it is back (a supervisor's restart)."""
WORKERS = 2
INGRESS_PARTITION = 0

_codec = AvroCodec()


_SETTINGS: Settings | None = None


def sim_settings() -> Settings:
    global _SETTINGS
    if _SETTINGS is None:
        _SETTINGS = _build_settings()
    return _SETTINGS


def _build_settings() -> Settings:
    return Settings(
        kafka_bootstrap="sim:0",
        database_url="postgresql://sim/unused",
        topic_prefix="agg",
        wallet_timeout_ms=1_500,
        retry_backoff_initial_ms=500,
        retry_backoff_max_ms=8_000,
        tick_interval_ms=100,
        saga_batch_count_max=500,
        ingress_outcome_wait_ms=OUTCOME_WAIT_MS,
    )


@dataclass
class Track:
    """What a provider knows of one of its callbacks."""

    call: Call
    finals: list[tuple[str, int | None]] = field(default_factory=list)
    amounts: list[int | None] = field(default_factory=list)
    """The amount each final answer moved (a transfer's; None for other calls)."""
    answers: list[str] = field(default_factory=list)
    inflight: int = 0
    sends: int = 0
    next_send_ms: int | None = None
    dup_sent: bool = False
    first_sent_wall_ms: int | None = None
    """The saga's clock when the call was first sent (for the rounds' invariants)."""
    expires_at_ms: int | None = None
    """A campaign grant's expiry by the saga's clock: fixed at its first send, so that every
    resend is the same grant."""

    @property
    def final(self) -> str | None:
        return self.finals[0][0] if self.finals else None


@dataclass
class Waiter:
    track: Track
    deadline_ms: int


@dataclass
class Stats:
    crashes: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    messages: int = 0
    restores: int = 0


def _controls_datum(control: tuple[str, int], currency: str) -> dict[str, Any]:
    """A schedule's control as the ProviderRequest's ``controls`` record."""
    kind, limit = control
    limits = "" if kind in ("block", "exclude") else f"{kind}:day:{currency}:{limit}"
    return {"blocked": kind == "block", "self_excluded": kind == "exclude",
            "self_excluded_until": None, "session_time_limit_s": None, "limits": limits,
            "actor": "sim"}  # fmt: skip


class World:
    def __init__(self, schedule: Schedule, worker_class: type[SagaWorker] = SagaWorker):
        self.schedule = schedule
        self.worker_class = worker_class
        self.rng = random.Random(schedule.exec_seed)
        self.settings = sim_settings()
        self.names = TopicNames(self.settings.topic_prefix)
        self.clock = SimClock()
        self.start_ms = self.clock.mono_ms
        self.broker = SimBroker(self.clock, schedule.partitions)
        self.stats = Stats()
        self.round_stats: Counter[str] = Counter()
        """What the rounds' invariants saw (filled in by the check)."""
        self.failures: list[str] = []
        self.tracks = [Track(c) for c in schedule.calls]
        self.waiters: dict[tuple[str, str, str, str], list[Waiter]] = {}
        self.books = {
            op: Book(op, schedule.starting_balance, {}, {}, {}) for op in schedule.operators
        }
        self.wallet_commands: dict[str, dict[str, WalletCommand]] = {
            op: {} for op in schedule.operators
        }
        self.wallet_positions: dict[tuple[str, int], int] = {}
        self.outcome_position = 0
        self.wallet_silent_until = -1
        self.wallet_failing_until = -1
        self.wallet_slow_until = -1
        self.wallet_slow_ms = 0
        self.armed: list[Fault] = []
        self.storm_until = -1
        self.storm_per_mille = 0
        self.pending_faults = list(schedule.faults)
        self.healed = False
        self.workers: list[SagaWorker | None] = [None] * WORKERS
        self.transports: list[SimTransport | None] = [None] * WORKERS
        self.ownership: list[set[int]] = [set() for _ in range(WORKERS)]
        self.down_until = [0] * WORKERS
        self.request_n = 0
        self.demo_correlations: set[str] = set()
        self.settings_demo_start = self.settings.demo_starting_balance_minor
        self._providers_due = 0
        self._wallet_seen = -1
        """No provider sends anything before this (recomputed as they send and hear back)."""

    # --- time -------------------------------------------------------------------------------

    def t(self) -> int:
        """Milliseconds since the schedule began (monotonic: clock jumps do not move it)."""
        return self.clock.mono_ms - self.start_ms

    # --- workers ----------------------------------------------------------------------------

    def _crash_hook(self, slot: int) -> Any:
        def hook(point: str, transport: SimTransport) -> bool:
            if self.healed:
                return False
            if self.t() < self.storm_until and self.rng.random() * 1000 < self.storm_per_mille:
                self.stats.crashes[point] += 1
                return True
            for fault in self.armed:
                if fault.worker == slot and fault.point == point:
                    if fault.skip > 0:
                        self.armed[self.armed.index(fault)] = Fault(
                            fault.at_ms, fault.kind, fault.worker, fault.point, fault.skip - 1
                        )
                        return False
                    self.armed.remove(fault)
                    self.stats.crashes[point] += 1
                    return True
            return False

        return hook

    async def _start_worker(self, slot: int) -> None:
        transport = SimTransport(
            self.broker, random.Random(self.rng.getrandbits(32)), self._crash_hook(slot),
            batch_max=self.rng.choice((1, 3, 20, 100)),
            label=self._label,
        )  # fmt: skip
        worker = self.worker_class(
            self.settings, self.schedule.operators, client_id=f"saga-{slot}",
            transport=transport, clock=self.clock,
            round_auto_close_ms=dict(self.schedule.round_auto_close_ms),
        )  # fmt: skip
        await worker.start()
        self.workers[slot], self.transports[slot] = worker, transport
        self.ownership[slot] = set()

    def _label(self, records: Sequence[OutRecord]) -> str:
        state = self.names.saga_state
        return "state" if all(r.topic == state for r in records) else "outputs"

    async def _assign(self, split: list[set[int]]) -> None:
        """Give each worker its partitions: revocations first, as a rebalance does."""
        order = sorted(range(WORKERS), key=lambda s: len(split[s] - self.ownership[s]))
        for slot in order:  # those that only lose partitions go first
            await self._guarded(slot, self._assign_one(slot, split[slot] & self.ownership[slot]))
        for slot in range(WORKERS):
            await self._guarded(slot, self._assign_one(slot, split[slot]))

    async def _assign_one(self, slot: int, partitions: set[int]) -> None:
        transport = self.transports[slot]
        self.ownership[slot] = set(partitions)
        if transport is not None:  # a dead one gets them when it is back
            await transport.assign(partitions)

    async def _guarded(self, slot: int, work: Any) -> None:
        """Run a worker's coroutine; a simulated crash restarts that worker (its memory gone)
        and any other exception is a failure of the run."""
        try:
            await work
        except SimCrash:
            await self._restart(slot)
        except Exception as exc:
            self.failures.append(f"worker {slot} raised {type(exc).__name__}: {exc}")
            raise _Abort from exc

    async def _restart(self, slot: int) -> None:
        """The process is dead: it comes back after a while (a supervisor restarts it), its
        memory gone; meanwhile its partitions wait, and the world goes on."""
        self.workers[slot] = self.transports[slot] = None
        self.down_until[slot] = self.t() + self.rng.choice(RESTART_DELAYS_MS)

    async def _revive(self, slot: int) -> None:
        owned = self.ownership[slot]
        await self._start_worker(slot)
        self.stats.restores += 1
        # the restarted process gets its partitions back (the group's next generation)
        await self._guarded(slot, self._assign_one(slot, owned))

    def _split(self) -> list[set[int]]:
        parts = list(range(self.schedule.partitions))
        self.rng.shuffle(parts)
        cut = self.rng.randint(0, len(parts))
        return [set(parts[:cut]), set(parts[cut:])]

    # --- faults -----------------------------------------------------------------------------

    async def _apply_faults(self) -> None:
        while self.pending_faults and self.pending_faults[0].at_ms <= self.t():
            fault = self.pending_faults.pop(0)
            self.stats.faults[fault.kind] += 1
            now = self.t()
            if fault.kind == "crash":
                self.armed.append(fault)
            elif fault.kind == "crash_storm":
                self.storm_until = now + fault.duration_ms
                self.storm_per_mille = fault.amount_ms
            elif fault.kind == "rebalance":
                await self._assign(self._split())
            elif fault.kind == "wallet_silent":
                self.wallet_silent_until = now + fault.duration_ms
            elif fault.kind == "wallet_failing":
                self.wallet_failing_until = now + fault.duration_ms
            elif fault.kind == "wallet_slow":
                self.wallet_slow_until = now + fault.duration_ms
                self.wallet_slow_ms = fault.amount_ms
            elif fault.kind == "wallet_redeliver":
                self._wallet_seen = -1
                for tp, position in self.wallet_positions.items():
                    self.wallet_positions[tp] = max(0, position - fault.amount_ms)
            elif fault.kind == "clock_jump":
                self.clock.wall_ms += fault.amount_ms

    def _heal(self) -> None:
        self.healed = True
        self.armed.clear()
        self.pending_faults.clear()
        self.wallet_silent_until = self.wallet_failing_until = self.wallet_slow_until = -1
        self.storm_until = -1

    # --- providers and ingress ----------------------------------------------------------------

    def _send(self, track: Track, same_request: bool = False) -> None:
        c = track.call
        if same_request and track.sends:
            request_id = f"q{c.n}-{track.sends - 1}"
        else:
            request_id = f"q{c.n}-{track.sends}"
            track.sends += 1
        correlation = derive_id("corr", c.provider_id, request_id)
        datum = {
            "request_id": request_id,
            "correlation_id": correlation,
            "provider_id": c.provider_id,
            "operator_id": c.operator_id,
            "player_id": c.player_id,
            "action": "AUTHENTICATE" if c.action == "AUTH" else c.action,
            "session_token": "sim",
            "transaction_id": c.transaction_id,
            "reference_transaction_id": c.reference_transaction_id,
            "round_id": c.round_id,
            "game_id": "game-1",
            "amount": c.amount,
            "currency": c.currency,
            "round_closed": c.round_closed,
            "received_at": datetime.fromtimestamp(self.clock.wall_ms / 1000, tz=UTC),
            "reply_to": "ingress-sim",
            "reply_partition": INGRESS_PARTITION,
            "mode": c.mode,
            "wallet": "transfer" if c.operator_id in self.schedule.transfer_operators
            else "seamless",
            "refusal": (
                None if c.refusal is None else {"status": c.refusal[0], "rule": c.refusal[1]}
            ),
            "controls": None if c.controls is None else _controls_datum(c.controls, c.currency),
            "campaign_id": c.campaign_id,
            "campaign": None,
        }  # fmt: skip
        if c.action == "CAMPAIGN_GRANT":
            assert c.campaign_id is not None and c.amount is not None
            if track.expires_at_ms is None:
                track.expires_at_ms = self.clock.wall_ms + c.expires_in_ms
            datum["amount"] = None
            grant: dict[str, Any] = {
                "campaign_id": c.campaign_id, "games": ["game-1"], "spins": c.spins,
                "bet_value": c.amount,
                "expires_at": datetime.fromtimestamp(track.expires_at_ms / 1000, tz=UTC),
            }  # fmt: skip
            datum["campaign"] = grant
        if c.mode != "real":
            self.demo_correlations.add(correlation)
        key = f"{c.operator_id}:{c.player_id}".encode()
        value = _codec.encode("casino.agg.ProviderRequest", datum)
        self.broker.append(OutRecord(self.names.requests, key, value))
        wait_key = (c.operator_id, c.player_id, c.provider_id, request_id)
        self.waiters.setdefault(wait_key, []).append(Waiter(track, self.t() + OUTCOME_WAIT_MS))
        track.inflight += 1
        track.next_send_ms = None
        if track.first_sent_wall_ms is None:
            track.first_sent_wall_ms = self.clock.wall_ms

    def _providers(self) -> None:
        now = self.t()
        if now < self._providers_due:
            return
        due = SETTLE_MS_MAX * 10
        for track in self.tracks:
            c = track.call
            if track.sends == 0:
                due = min(due, c.at_ms)
            elif not track.dup_sent and c.dup_after_ms is not None:
                due = min(due, c.at_ms + c.dup_after_ms)
            if track.next_send_ms is not None:
                due = min(due, track.next_send_ms)
            if track.sends == 0 and c.at_ms <= now:
                self._send(track)
            elif (
                not track.dup_sent
                and c.dup_after_ms is not None
                and track.sends
                and c.at_ms + c.dup_after_ms <= now
            ):
                track.dup_sent = True
                self._send(track, same_request=True)
            elif (
                track.final is None
                and track.inflight == 0
                and track.next_send_ms is not None
                and track.next_send_ms <= now
            ):
                self._send(track)
        self._providers_due = due if due > now else now

    def _answer(self, track: Track, status: str, balance: int | None,
                amount: int | None = None) -> None:  # fmt: skip
        track.inflight -= 1
        track.answers.append(status)
        if status == "RETRY_LATER":
            if track.final is None and track.inflight == 0:
                track.next_send_ms = self.t() + self.rng.randint(*RETRY_MS)
                self._providers_due = min(self._providers_due, track.next_send_ms)
        else:
            track.finals.append((status, balance))
            track.amounts.append(amount)

    def _ingress(self) -> None:
        topic = self.names.outcomes
        while self.outcome_position < self.broker.end(topic, INGRESS_PARTITION):
            [record] = self.broker.read(topic, INGRESS_PARTITION, self.outcome_position, 1)
            self.outcome_position += 1
            assert record.value is not None
            d = _codec.decode(record.value).datum
            wait_key = (d["operator_id"], d["player_id"], d["provider_id"], d["request_id"])
            for waiter in self.waiters.pop(wait_key, []):
                self._answer(waiter.track, d["status"], d["balance"], d["amount"])
        now = self.t()
        for wait_key, waiters in list(self.waiters.items()):
            late = [w for w in waiters if w.deadline_ms <= now]
            if late:
                kept = [w for w in waiters if w.deadline_ms > now]
                if kept:
                    self.waiters[wait_key] = kept
                else:
                    del self.waiters[wait_key]
                for w in late:
                    self._answer(w.track, "RETRY_LATER", None)

    # --- the operator's wallet ----------------------------------------------------------------

    def _wallet(self) -> None:
        now = self.t()
        if self.broker.appended == self._wallet_seen:
            return  # nothing new anywhere since a full pass: nothing new for the wallet
        if now < self.wallet_silent_until:
            return
        # a full pass sees everything written before it (it also appends replies)
        seen = self.broker.appended if now >= self.wallet_slow_until else -1
        slow_ms = self.wallet_slow_ms if now < self.wallet_slow_until else 0
        failing = now < self.wallet_failing_until
        when = datetime.fromtimestamp(self.clock.wall_ms / 1000, tz=UTC)
        for op in self.schedule.operators:
            topic = self.names.wallet_commands(op)
            book = self.books[op]
            for p in range(self.schedule.partitions):
                position = self.wallet_positions.get((topic, p), 0)
                end = self.broker.end(topic, p)
                if position >= end:
                    continue
                while position < end:
                    [record] = self.broker.read(topic, p, position, 1)
                    if slow_ms and record.timestamp_ms > self.clock.wall_ms - slow_ms:
                        break
                    position += 1
                    assert record.value is not None
                    datum = _codec.decode(record.value).datum
                    command = WalletCommand.from_avro(datum)
                    if failing:
                        entry = failing_entry(command, when)
                    else:
                        decision = book.apply(command, problem_of(command, op, record.key), when)
                        entry = decision.entry
                        self.wallet_commands[op].setdefault(command.command_id, command)
                    if command.correlation_id in self.demo_correlations:
                        self.failures.append(f"demo play reached the wallet: {command}")
                    if op in self.schedule.transfer_operators:
                        self.failures.append(
                            f"a transfer wallet's play reached a wallet: {command}"
                        )
                    reply = {
                        "command_id": entry.command_id,
                        "operator_id": op,
                        "player_id": command.player_id,
                        "status": entry.status.value,
                        "balance": entry.balance,
                        "currency": entry.currency,
                        "replied_at": entry.replied_at,
                        "correlation_id": entry.correlation_id,
                    }
                    value = _codec.encode("casino.agg.WalletReply", reply)
                    self.broker.append(OutRecord(self.names.wallet_replies(op), record.key, value))
                self.wallet_positions[(topic, p)] = position
        self._wallet_seen = seen if seen < 0 else self.broker.appended

    # --- the run ------------------------------------------------------------------------------

    async def _step_workers(self) -> None:
        for slot in range(WORKERS):
            worker = self.workers[slot]
            if worker is None:
                if self.t() >= self.down_until[slot]:
                    await self._guarded(slot, self._revive(slot))
                continue
            await self._guarded(slot, worker.step())

    def _in_flight(self) -> bool:
        """Whether a worker has a batch whose outputs are not all acknowledged, or a record
        waits for a worker, the wallet or the ingress."""
        return self._backlog() or any(
            not task.done()
            for worker in self.workers
            if worker is not None
            for _, task in worker.in_flight
        )

    def _quiet(self) -> bool:
        if any(t.final is None or t.inflight for t in self.tracks):
            return False
        for worker in self.workers:
            if worker is None:
                return False
            for states in worker.states.values():
                for state in states.values():
                    if any(p.command.kind.value != "BALANCE" for p in state.pending.values()):
                        return False
        return True

    async def run(self) -> None:
        try:
            for slot in range(WORKERS):
                await self._start_worker(slot)
            await self._assign(self._split())
            end_ms = max([c.at_ms + (c.dup_after_ms or 0) for c in self.schedule.calls] +
                         [f.at_ms for f in self.schedule.faults] + [0]) + 500  # fmt: skip
            while self.t() < end_ms:
                await self._turn()
            self._heal()
            deadline = self.t() + SETTLE_MS_MAX
            while not self._quiet():
                if self.t() > deadline:
                    unanswered = [t.call.n for t in self.tracks if t.final is None]
                    self.failures.append(
                        f"not settled {SETTLE_MS_MAX} ms after healing: calls {unanswered} "
                        "without a final answer, or owed credits/refunds still pending"
                    )
                    return
                await self._turn()
            # the rounds of providers with a short idle time are auto-closed; then a little
            # longer: re-published outputs, late replies and the closes' events land
            idle_end = self.t() + self._short_idle_ms()
            while self.t() < idle_end:
                await self._turn()
            for _ in range(10):
                await self._turn()
            # what the last decisions (an auto-close's tick) imply is published before the
            # world is looked at: a batch still in flight is the run's end, not a loss
            deadline = self.t() + SETTLE_MS_MAX
            while self._in_flight() and self.t() < deadline:
                await self._turn()
        except _Abort:
            return
        finally:
            # the run is over: what a worker still has in flight goes with its process (the
            # loop is shared by the next schedules)
            for worker in self.workers:
                for _, task in worker.in_flight if worker is not None else ():
                    task.cancel()

    async def _turn(self) -> None:
        await self._apply_faults()
        self._providers()
        await self._step_workers()
        for _ in range(self.rng.choice(YIELDS)):
            await asyncio.sleep(0)  # the workers' batches in flight get on (or not)
        self._wallet()
        self._ingress()
        if self._backlog() or self.rng.random() < 0.15:
            self.clock.advance(self.rng.randint(1, STEP_MS_MAX))
        else:
            # nothing in flight: straight on to the next moment something can happen
            self.clock.advance(max(1, min(self._next_moment() - self.t(), IDLE_STEP_MS_MAX)))

    def _short_idle_ms(self) -> int:
        """The longest auto-close idle time a schedule can wait for (with a tick's margin)."""
        short = [ms for _, ms in self.schedule.round_auto_close_ms if ms <= 60_000]
        return max(short) + 2 * self.settings.tick_interval_ms if short else 0

    def _next_moment(self) -> int:
        now = self.t()
        moments = [self._providers_due]
        if self.pending_faults:
            moments.append(self.pending_faults[0].at_ms)
        moments += [w.deadline_ms for waiters in self.waiters.values() for w in waiters]
        moments += [until for until in (self.wallet_silent_until, self.wallet_slow_until,
                                        self.wallet_failing_until, self.storm_until)
                    if until > now]  # fmt: skip
        if self.wallet_slow_until > now:
            moments.append(now + STEP_MS_MAX)
        wall_offset = self.clock.wall_ms - now
        for slot, worker in enumerate(self.workers):
            if worker is None:
                moments.append(self.down_until[slot])
                continue
            for due in worker.due.values():
                moments += [at - wall_offset for at in due.values()]
        future = [m for m in moments if m > now]
        return min(future) if future else now + IDLE_STEP_MS_MAX

    def _backlog(self) -> bool:
        """Whether any record waits for a worker, the wallet or the ingress."""
        for slot, transport in enumerate(self.transports):
            if transport is None:
                continue
            for tp in transport.assigned:
                if transport.positions.get(tp, 0) < self.broker.end(*tp):
                    return True
            if slot == 0 and self.outcome_position < self.broker.end(
                self.names.outcomes, INGRESS_PARTITION
            ):
                return True
        return any(
            position < self.broker.end(*tp) for tp, position in self.wallet_positions.items()
        )


class _Abort(Exception):
    """A worker failed in a way that is a violation: stop the run, report it."""


def run_schedule(schedule: Schedule, worker_class: type[SagaWorker] = SagaWorker) -> World:
    """Run one schedule to the end (no checks)."""
    logger = logging.getLogger("agg")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # a schedule logs what a real worker would, thousands
    try:
        world = World(schedule, worker_class)
        _loop().run_until_complete(world.run())
    finally:
        logger.setLevel(level)
    return world


_LOOP: asyncio.AbstractEventLoop | None = None


def _loop() -> asyncio.AbstractEventLoop:
    global _LOOP
    if _LOOP is None:
        _LOOP = asyncio.new_event_loop()
    return _LOOP


def effects_by_transaction(world: World) -> dict[tuple[str, str, str, str], Counter[str]]:
    """Per (operator, player, provider, transaction): the wallet's effects, counted."""
    out: dict[tuple[str, str, str, str], Counter[str]] = {}
    for op, book in world.books.items():
        commands = world.wallet_commands[op]
        for entry in book.entries.values():
            if entry.effect in (Effect.INVALID, Effect.BALANCE):
                continue
            command = commands.get(entry.command_id)
            if command is None or command.transaction_id is None:
                continue
            key = (op, command.player_id, command.provider_id, command.transaction_id)
            out.setdefault(key, Counter())[entry.effect.value] += 1
    return out
