"""The saga worker: consumes requests and wallet replies keyed by player, runs
:func:`agg_domain.saga.decide`, and publishes wallet commands, outcomes and journal events.

The invariant (``docs/saga.md``): after a crash at any point, every message is decided exactly
as in a run without the crash, and every output a decision implies is published at least
once, with the same id. The mechanism, per batch of messages:

1. decide every message of the batch in memory at the worker's clock (one player's messages
   in order), skipping any message that the player's state records as decided already;
2. send every touched player's state to the compacted ``agg.saga.state`` topic: the
   player's header record first, which holds the decisions (the changed transactions), the
   outputs they imply (the outbox, with the outputs of its earlier writes not yet known
   published), the input offsets decided and the write's sequence number, then the
   transaction records;
3. once the state is acknowledged, and the previous batch's outputs are sent, send the
   outputs (acks=all, idempotent);
4. once they are acknowledged, and the previous batch is finished, the batch is finished:
   its partitions' writes up to it are known published (the next batch's state carries a
   marker saying so) and its input offsets are committed on the next tick
   (``tick_interval_ms``), when partitions are revoked and when stopping; committed offsets
   only save work on a restart, correctness rests on the offsets in the state.

Steps 3 and 4 are pipelined: the loop fetches and decides the next batches (from the state
in memory) while earlier ones wait for their acknowledgements, at most
``PIPELINE_DEPTH`` batches behind. Per batch the order stays: state acknowledged before its
outputs are sent, outputs acknowledged before its offsets are committed, and outputs sent in
batch order.

A crash before a player's header is written leaves nothing of the batch's decisions for that
player outside the worker: they are made again from the old state, as if for the first time.
A crash after it leaves them recorded: the restore reads them, re-publishes the outbox of
every write not known to be published (a per-partition marker says up to where they are),
re-writes its transaction records (which a crash may have cut), and skips the re-delivered
messages. Time enters decisions only at step 1, so a decision is never made again at another
time. The inputs are co-partitioned (same key, same partition count) and assigned with the
range assignor, so one worker owns a player's requests, replies and state.

Failures: a message that cannot be decoded, or that the saga refuses as malformed, goes to
the dead-letter topic with the reason and is skipped. A player whose state cannot be read or
whose decision raises is parked: its messages go to the dead-letter topic (in order, with the
reason) and an alert metric is set, while every other player goes on. Any other exception
(the broker, the producer) stops the worker before the batch's offsets are committed.

The worker's I/O is the :class:`agg_ports.Transport` port and the :class:`agg_ports.Clock`:
the production adapters are :class:`agg_kafka.transport.RdKafkaTransport` (librdkafka, the
default) and :class:`agg_kafka.transport.KafkaTransport` (aiokafka), and the deterministic
simulator (``aggregator sim``) runs this same class on an in-memory broker.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from prometheus_client import Counter, Gauge, Histogram

from agg_avro import AvroCodec, AvroDecodeError
from agg_config.settings import Settings
from agg_domain.saga import (
    Answer,
    Command,
    Event,
    Message,
    PlayerState,
    Reply,
    Request,
    SagaConfig,
    Tick,
    TxnState,
    campaigns_due_ms,
    decide,
    pending_due_ms,
    rounds_due_ms,
    txn_key,
)
from agg_domain.statuses import CommandKind
from agg_kafka.topics import TopicNames
from agg_kafka.transport import SystemClock, make_transport
from agg_obs.logs import get_logger
from agg_obs.metrics import LATENCY_BUCKETS_S
from agg_ports.transport import Clock, InRecord, OutRecord, Transport, dead_letter_record
from agg_saga.mapping import (
    command_to_avro,
    event_to_avro,
    outcome_to_avro,
    reply_from_avro,
    request_from_avro,
)
from agg_saga.state_codec import (
    MARKER_KEY,
    RoundsCache,
    StateBuilder,
    StateDecodeError,
    WriteMeta,
    encode_marker,
    state_records,
)

log = get_logger("saga")

MESSAGES = Counter("agg_saga_messages_total", "Messages handled by the saga", ["kind"])
ANSWERS = Counter("agg_saga_decisions_total", "Answers decided, by status", ["action", "status"])
EVENTS = Counter("agg_saga_events_total", "Journal events written, by name", ["event"])
COMMANDS = Counter("agg_saga_commands_total", "Wallet commands sent (resends too)", ["kind"])
TIMEOUTS = Counter("agg_saga_timeouts_total", "Debits compensated after their deadline")
COMPENSATIONS = Counter(
    "agg_saga_compensations_total", "Compensating cancels issued (debit timed out or failed)"
)
DUPLICATES = Counter(
    "agg_saga_duplicates_total", "Requests whose transaction id was already known", ["outcome"]
)
DEAD_LETTERS = Counter("agg_saga_dead_letters_total", "Messages set aside", ["reason"])
PENDING = Gauge("agg_saga_pending_commands", "Wallet commands awaiting a reply")
PLAYERS = Gauge("agg_saga_players", "Players whose state this worker holds")
PARKED = Gauge(
    "agg_saga_parked_players",
    "Players whose messages are set aside (unreadable state or a failing decision): alert on > 0",
)
REPUBLISHED = Counter(
    "agg_saga_republished_total", "Outputs re-published on restore (a write not known published)"
)
BATCH_SECONDS = Histogram(
    "agg_saga_batch_seconds",
    "Time to decide, publish and persist one batch",
    buckets=LATENCY_BUCKETS_S,
)
REPLY_LATENCY = Histogram(
    "agg_saga_wallet_reply_seconds",
    "From a command's first issue to its reply",
    buckets=LATENCY_BUCKETS_S,
)
LAG = Gauge(
    "agg_saga_consumer_lag",
    "Messages behind the end of each input partition",
    ["topic", "partition"],
)

GROUP_ID = "agg-saga"
PIPELINE_DEPTH = 4
"""Batches decided whose state or outputs may still be on their way while the next one is
fetched and decided."""
LAG_INTERVAL_S = 1.0
"""How often the gauges that walk every player and partition are set."""


def _children(metric: Counter) -> Callable[..., Counter]:
    """``metric.labels`` remembered per label values: ``labels`` validates and locks on every
    call, and the saga counts several things per message."""
    children: dict[tuple[str, ...], Counter] = {}

    def child(*values: str) -> Counter:
        found = children.get(values)
        if found is None:
            found = children[values] = metric.labels(*values)
        return found

    return child


_messages = _children(MESSAGES)
_answers = _children(ANSWERS)
_events = _children(EVENTS)
_commands = _children(COMMANDS)
_duplicates = _children(DUPLICATES)


def split_key(key: bytes) -> tuple[str, str]:
    operator_id, _, player_id = key.decode().partition(":")
    if not operator_id or not player_id:
        raise ValueError(f"key {key!r} is not operator:player")
    return operator_id, player_id


@dataclass
class _Touched:
    """A player decided in this batch: its state before the batch, the transactions the
    batch changed, and the batch's outputs for it (topic, explicit partition, value)."""

    old: PlayerState | None
    changed: dict[str, None] = field(default_factory=dict)
    outbox: list[tuple[str, int | None, bytes]] = field(default_factory=list)


@dataclass
class _Batch:
    players: dict[tuple[int, bytes], _Touched] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)


@dataclass
class _InFlight:
    """A batch whose state is sent: what finishing it takes."""

    state_sent: Awaitable[None]
    outputs: list[OutRecord]
    seqs: dict[int, int]
    """Per partition, the batch's write sequence number."""
    keys: list[tuple[int, bytes]]
    offsets: dict[tuple[str, int], int]
    started: float
    enqueued: asyncio.Future[None]
    """Done when its outputs are handed to the producer (the next batch's are sent after)."""


def _retrieved(task: asyncio.Task[None]) -> None:
    """A failed batch stops the worker (the loop raises it); marks it seen for asyncio."""
    if not task.cancelled():
        task.exception()


class SagaWorker:
    def __init__(
        self,
        settings: Settings,
        operator_ids: Iterable[str],
        *,
        client_id: str = "saga",
        transport: Transport | None = None,
        clock: Clock | None = None,
        round_auto_close_ms: Mapping[str, int] | None = None,
    ):
        self.settings = settings
        self.names = TopicNames(settings.topic_prefix)
        self.operator_ids = sorted(set(operator_ids))
        self.client_id = client_id
        self.config = SagaConfig(
            wallet_timeout_ms=settings.wallet_timeout_ms,
            retry_backoff_initial_ms=settings.retry_backoff_initial_ms,
            retry_backoff_max_ms=settings.retry_backoff_max_ms,
            demo_starting_balance=settings.demo_starting_balance_minor,
            round_auto_close_ms_by_provider=dict(round_auto_close_ms or {}),
        )
        """``round_auto_close_ms``: per provider, its rounds' auto-close idle time (the
        tenants file's ``round_auto_close_s``); others get the saga's default."""
        self.codec = AvroCodec()
        self.reply_topics = {self.names.wallet_replies(op) for op in self.operator_ids}
        self.inputs = [self.names.requests, *sorted(self.reply_topics)]
        self.transport: Transport = transport or make_transport(
            settings, group_id=GROUP_ID, client_id=client_id
        )
        self.clock: Clock = clock or SystemClock()
        self.states: dict[int, dict[bytes, PlayerState]] = {}
        self.meta: dict[int, dict[bytes, WriteMeta]] = {}
        """Per partition and player: input offsets decided, and why it is parked (if it is)."""
        self.broken: dict[int, set[bytes]] = {}
        """Players whose stored state could not be read: parked, and never written over."""
        self.seq: dict[int, int] = {}
        """Sequence number of the last state write in each partition."""
        self.published: dict[int, int] = {}
        """The sequence number that the partition's marker record says is published."""
        self.acked: dict[int, int] = {}
        """Per partition, the sequence number up to which every write's outputs are
        acknowledged (the next marker's value)."""
        self.unacked: dict[int, dict[bytes, tuple[int, list[tuple[str, int | None, bytes]]]]]
        self.unacked = {}
        """Per partition and player, the outbox of its writes whose outputs are not known
        acknowledged, and the sequence number of the last of them: carried in the player's
        next header, so that a restore re-publishes them."""
        self.in_flight: deque[tuple[_InFlight, asyncio.Task[None]]] = deque()
        """Batches decided and not finished, oldest first."""
        self.due: dict[int, dict[bytes, int]] = {}
        self.pending_count: dict[int, int] = {}
        """Per partition, the wallet commands awaiting a reply (kept by each decision, so the
        gauge does not walk every player)."""
        self.round_due: dict[int, dict[bytes, int]] = {}
        """Per partition and player, its earliest round auto-close (recomputed only when a
        decision changes the player's rounds)."""
        self.deadlines: dict[int, dict[bytes, dict[str, int]]] = {}
        """Per partition and player, the transactions with a deadline and when it is: what
        :func:`agg_domain.saga.next_due_ms` would walk the player's history for."""
        self.rounds_cache = RoundsCache()
        self.lock = asyncio.Lock()
        self.ready = asyncio.Event()
        self._restore_pending: set[int] = set()
        """Partitions assigned whose state is still to be read (they are paused until then)."""
        self._offsets: dict[tuple[str, int], int] = {}
        """Offsets of finished batches, committed on the next tick."""
        self._next_tick = 0.0
        self._next_lag = 0.0

    def set_round_auto_close(self, round_auto_close_ms: Mapping[str, int]) -> bool:
        """Use new per-provider auto-close idle times (a tenants document applied while the
        worker runs): the saga decides with them from the next message on, and every player's
        next auto-close is recomputed at once (a shorter time closes idle rounds on the next
        tick, a longer one keeps them open). Whether anything changed."""
        wanted = dict(round_auto_close_ms)
        if wanted == dict(self.config.round_auto_close_ms_by_provider):
            return False
        self.config = replace(self.config, round_auto_close_ms_by_provider=wanted)
        for partition, states in self.states.items():
            for key, state in states.items():
                self._note_due(partition, key, state, (), rounds_changed=True)
        return True

    # --- state ------------------------------------------------------------------------------

    async def _restore(self, partitions: set[int]) -> None:
        """Read the latest state of every player of ``partitions`` from the changelog, then
        finish what a crash may have cut short: re-write the transaction records and
        re-publish the outputs of every write above the partition's marker."""
        if not partitions:
            return
        started = time.monotonic()
        records = await self.transport.read_to_end(self.names.saga_state, partitions)
        builders = {p: StateBuilder() for p in partitions}
        for record in records:
            if record.key is not None:
                builders[record.partition].add(record.key, record.value)
        repair: list[OutRecord] = []
        republish: list[OutRecord] = []
        parked = 0
        for p in sorted(partitions):
            builder = builders[p]
            players = builder.players()
            states: dict[bytes, PlayerState] = {}
            metas: dict[bytes, WriteMeta] = {}
            seq = builder.marker_seq
            for key, restored in players.items():
                states[key] = restored.state
                meta = restored.meta
                metas[key] = WriteMeta(meta.seq, meta.applied, [], meta.parked)
                seq = max(seq, meta.seq)
                if meta.seq > builder.marker_seq:
                    repair += [
                        OutRecord(self.names.saga_state, k, v, p) for k, v in restored.delta_records
                    ]
                    republish += [OutRecord(t, key, v, part) for t, part, v in meta.outbox]
                if meta.parked:
                    parked += 1
            self.broken[p] = set(builder.broken)
            for key, reason in builder.broken.items():
                metas[key] = WriteMeta(parked=f"state unreadable: {reason}")
                parked += 1
                log.error("player_parked", partition=p, player_key=key.decode(errors="replace"),
                          reason=reason)  # fmt: skip
            self.states[p], self.meta[p] = states, metas
            self.seq[p], self.published[p] = seq, builder.marker_seq
            self.unacked[p] = {}
            self.due[p], self.deadlines[p], self.round_due[p] = {}, {}, {}
            self.pending_count[p] = sum(len(s.pending) for s in states.values())
            for key, state in states.items():
                self._note_due(p, key, state, state.txns, rounds_changed=True)
        await self.transport.produce(repair)
        await self.transport.produce(republish)
        markers = [
            OutRecord(self.names.saga_state, MARKER_KEY, encode_marker(self.seq[p]), p)
            for p in sorted(partitions)
            if self.seq[p] > self.published[p]
        ]
        await self.transport.produce(markers)
        for p in partitions:
            self.published[p] = self.acked[p] = self.seq[p]
        REPUBLISHED.inc(len(republish))
        self._set_player_gauges()
        log.event(
            "state_restored",
            partitions=sorted(partitions),
            records=len(records),
            players=sum(len(self.states[p]) for p in partitions),
            republished=len(republish),
            repaired=len(repair),
            parked=parked,
            seconds=round(time.monotonic() - started, 3),
        )

    def _drop(self, partitions: set[int]) -> None:
        for p in partitions:
            self.rounds_cache.forget(self.states.pop(p, {}))
            for table in (self.meta, self.broken, self.seq, self.published, self.acked,
                          self.unacked, self.due, self.deadlines, self.round_due,
                          self.pending_count):  # fmt: skip
                table.pop(p, None)
        self._set_player_gauges()

    def _set_player_gauges(self) -> None:
        PLAYERS.set(sum(len(s) for s in self.states.values()))
        PARKED.set(sum(1 for metas in self.meta.values() for m in metas.values() if m.parked))

    # --- rebalances (the transport calls these between two polls) --------------------------

    async def on_revoked(self, partitions: set[tuple[str, int]]) -> None:
        async with self.lock:
            # what is decided is finished, and committed, before its partitions move on
            await self.drain()
            await self._commit_offsets()
            gone = {p for _, p in partitions}
            self._drop(gone)
            self._restore_pending -= gone
            log.event("partitions_revoked", partitions=sorted(gone))

    async def on_assigned(self, partitions: set[tuple[str, int]]) -> None:
        # The state is read in the loop, not here: the rebalance is not over while this
        # callback runs (aiokafka sends no heartbeats meanwhile, and librdkafka's consumer
        # thread waits for it), and a restore longer than the session timeout would get the
        # worker expelled, and restoring again, forever. New partitions stay paused until then.
        async with self.lock:
            wanted = {p for _, p in partitions} - set(self.states)
            self._restore_pending |= wanted
            paused = {tp for tp in partitions if tp[1] in wanted}
            if paused:
                self.transport.pause(paused)
            if not wanted:
                log.event("partitions_assigned", partitions=sorted({p for _, p in partitions}))
                self.ready.set()

    # --- the loop ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.transport.start(self.inputs, self)
        self._next_tick = self._next_lag = self.clock.monotonic_s()
        log.event("saga_started", inputs=self.inputs, group=GROUP_ID)

    async def stop(self) -> None:
        try:
            await self.drain()
            await self._commit_offsets()
        finally:
            await self.transport.stop()
            log.event("saga_stopped")

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            while not stop.is_set():
                await self.step()
        finally:
            await self.stop()

    async def step(self) -> None:
        """One turn of the loop: restore what was assigned, decide one batch (and the timers
        when due), persist and publish it, and commit on the tick."""
        self._raise_failed()
        if self._restore_pending:
            await self._restore_assigned()
        records = await self.transport.poll(
            self.settings.tick_interval_ms, self.settings.saga_batch_count_max
        )
        now = self.clock.monotonic_s()
        tick = now >= self._next_tick
        if not records and not tick:
            return
        if tick:
            self._next_tick = now + self.settings.tick_interval_ms / 1000
        await self._handle(records, tick)
        while len(self.in_flight) > PIPELINE_DEPTH:
            await self.in_flight.popleft()[1]
        self._forget_finished()
        if tick:
            await self._commit_offsets()
            if now >= self._next_lag:
                self._next_lag = now + LAG_INTERVAL_S
                await self._measure_lag()

    async def _restore_assigned(self) -> None:
        """Read the state of the partitions assigned since the last batch, then resume them."""
        async with self.lock:
            assigned = self.transport.assignment()
            numbers = {p for _, p in assigned}
            wanted = (self._restore_pending & numbers) - set(self.states)
            self._restore_pending = set()
            await self._restore(wanted)
            self.transport.resume({tp for tp in assigned if tp[1] in wanted})
            log.event("partitions_assigned", partitions=sorted(numbers))
            self.ready.set()

    # --- offsets ------------------------------------------------------------------------------

    async def _commit_offsets(self) -> None:
        """Commit the offsets of the batches finished so far (their state and outputs are
        acknowledged)."""
        offsets, self._offsets = self._offsets, {}
        if offsets and not await self.transport.commit(offsets):
            # partitions moved since the batch: the new owner skips what the state it reads
            # says was decided
            log.warning("commit_failed", partitions=sorted(p for _, p in offsets))

    # --- a batch -----------------------------------------------------------------------------

    async def _handle(self, records: Sequence[InRecord], tick: bool) -> None:
        started = time.perf_counter()
        async with self.lock:
            now = self.clock.now_ms()
            work = _Batch()
            seek_back: dict[tuple[str, int], int] = {}
            assigned: set[tuple[str, int]] | None = None
            for record in records:
                tp = (record.topic, record.partition)
                if record.partition not in self.states:
                    if assigned is None:
                        assigned = self.transport.assignment()
                    if tp in assigned and tp not in seek_back:
                        # assigned, state not read yet: fetched again once it is
                        seek_back[tp] = record.offset
                    continue  # otherwise revoked while fetched: its new owner handles it
                await self._handle_record(work, record, now)
                work.offsets[tp] = record.offset + 1
            for (topic, partition), offset in seek_back.items():
                self.transport.seek(topic, partition, offset)
            if tick:
                self._handle_ticks(work, now)
            self._persist_and_publish(work, started)

    def _parse(self, record: InRecord) -> Message:
        if record.key is None or record.value is None:
            raise ValueError("message without key or value")
        split_key(record.key)
        decoded = self.codec.decode(record.value)
        if record.topic == self.names.requests:
            if decoded.name != "casino.agg.ProviderRequest":
                raise ValueError(f"{decoded.name} on {record.topic}")
            _messages("request").inc()
            return request_from_avro(decoded.datum)
        if decoded.name != "casino.agg.WalletReply":
            raise ValueError(f"{decoded.name} on {record.topic}")
        _messages("reply").inc()
        if record.key.decode().split(":", 1)[0] != decoded.datum["operator_id"]:
            raise ValueError("reply's operator differs from its key")
        return reply_from_avro(decoded.datum)

    async def _handle_record(self, work: _Batch, record: InRecord, now: int) -> None:
        try:
            message = self._parse(record)
        except (AvroDecodeError, ValueError, KeyError) as exc:
            await self._dead_letter(record, str(exc))
            return
        assert record.key is not None
        partition, key = record.partition, record.key
        meta = self._meta(partition, key)
        slot = f"{record.topic}/{partition}"
        if meta.applied.get(slot, -1) >= record.offset:
            _messages("redelivered").inc()  # decided before a crash; its outputs are stored
            return
        if meta.parked:
            await self._dead_letter(record, f"parked: {meta.parked}")
            self._applied(work, partition, key, meta, slot, record.offset)
            return
        try:
            self._decide(work, partition, key, message, now)
        except ValueError as exc:  # the saga refused the message as malformed
            await self._dead_letter(record, f"refused: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - a bug or a bad state: park this player only
            reason = self._park(work, partition, key, exc, offset=record.offset,
                                topic=record.topic)  # fmt: skip
            await self._dead_letter(record, f"parked: {reason}")
        self._applied(work, partition, key, meta, slot, record.offset)

    def _park(
        self,
        work: _Batch,
        partition: int,
        key: bytes,
        exc: Exception,
        offset: int | None = None,
        topic: str | None = None,
    ) -> str:
        """Set the player's messages aside from now on (kept in its header, so a restart does
        not resume it out of order); every other player goes on."""
        reason = f"{type(exc).__name__}: {exc}"[:500]
        self._meta(partition, key).parked = reason
        self._set_player_gauges()
        log.error("player_parked", partition=partition, player_key=key.decode(),
                  reason=reason, offset=offset, topic=topic)  # fmt: skip
        if (partition, key) not in work.players:
            work.players[(partition, key)] = _Touched(self.states[partition].get(key))
        return reason

    def _meta(self, partition: int, key: bytes) -> WriteMeta:
        metas = self.meta[partition]
        meta = metas.get(key)
        if meta is None:
            meta = metas[key] = WriteMeta()
        return meta

    def _applied(
        self, work: _Batch, partition: int, key: bytes, meta: WriteMeta, slot: str, offset: int
    ) -> None:
        meta.applied[slot] = offset
        if (partition, key) not in work.players:
            work.players[(partition, key)] = _Touched(self.states[partition].get(key))

    def _handle_ticks(self, work: _Batch, now: int) -> None:
        for partition, due in self.due.items():
            metas = self.meta[partition]
            for key, due_ms in list(due.items()):
                if due_ms <= now and not (key in metas and metas[key].parked):
                    _messages("tick").inc()
                    try:
                        self._decide(work, partition, key, Tick(), now)
                    except Exception as exc:  # noqa: BLE001 - park this player only
                        self._park(work, partition, key, exc)

    def _decide(self, work: _Batch, partition: int, key: bytes, message: Message, now: int) -> None:
        """Decide ``message``; nothing changes unless it all succeeds (decision and encoding)."""
        states = self.states[partition]
        state = states.get(key)
        if state is None:
            operator_id, player_id = split_key(key)
            state = PlayerState(operator_id, player_id)
        decision = decide(state, message, now, self.config)
        outbox = self._encode(decision.state, decision.outputs, now)
        if (
            isinstance(message, Request)
            and message.transaction_id is not None
            and txn_key(message.provider_id, message.transaction_id) in state.txns
        ):
            _duplicates("repeat").inc()
        if isinstance(message, Reply):
            pending = state.pending.get(message.command_id)
            if pending is not None:
                REPLY_LATENCY.observe(max(0, now - pending.command.issued_at_ms) / 1000)
        touched = work.players.get((partition, key))
        if touched is None:
            touched = work.players[(partition, key)] = _Touched(states.get(key))
        touched.changed.update(dict.fromkeys(decision.txns_changed))
        touched.outbox.extend(outbox)
        self.pending_count[partition] += len(decision.state.pending) - len(state.pending)
        states[key] = decision.state
        self._note_due(partition, key, decision.state, decision.txns_changed,
                       rounds_changed=decision.state.rounds is not state.rounds)  # fmt: skip
        self._count(decision.state, decision.outputs)

    def _note_due(
        self,
        partition: int,
        key: bytes,
        state: PlayerState,
        changed: Iterable[str],
        *,
        rounds_changed: bool,
    ) -> None:
        """Update the player's deadlines from the transactions in ``changed`` (and its next
        round auto-close if ``rounds_changed``) and set when its next Tick is due:
        ``next_due_ms(state)``, without walking every transaction."""
        round_index = self.round_due[partition]
        if rounds_changed:
            round_due = rounds_due_ms(state, self.config) if state.rounds else None
            if round_due is None:
                round_index.pop(key, None)
            else:
                round_index[key] = round_due
        index = self.deadlines[partition]
        deadlines = index.get(key)
        for txn_key_ in changed:
            txn = state.txns.get(txn_key_)
            if txn is not None and txn.deadline_ms is not None:
                if deadlines is None:
                    deadlines = index[key] = {}
                deadlines[txn_key_] = txn.deadline_ms
            elif deadlines is not None:
                deadlines.pop(txn_key_, None)
        due = pending_due_ms(state, self.config) if state.pending else None
        if deadlines:
            earliest = min(deadlines.values())
            due = earliest if due is None else min(due, earliest)
        elif deadlines is not None:
            del index[key]
        round_due = round_index.get(key)
        if round_due is not None:
            due = round_due if due is None else min(due, round_due)
        campaign_due = campaigns_due_ms(state) if state.campaigns else None
        if campaign_due is not None:
            due = campaign_due if due is None else min(due, campaign_due)
        if due is None:
            self.due[partition].pop(key, None)
        else:
            self.due[partition][key] = due

    def _encode(
        self, state: PlayerState, outputs: Iterable[object], now: int
    ) -> list[tuple[str, int | None, bytes]]:
        """The outputs as (topic, explicit partition, value), all keyed by the player."""
        op, player = state.operator_id, state.player_id
        encoded: list[tuple[str, int | None, bytes]] = []
        for output in outputs:
            if isinstance(output, Command):
                value = self.codec.encode(
                    "casino.agg.WalletCommand", command_to_avro(output, op, player)
                )
                encoded.append((self.names.wallet_commands(op), None, value))
            elif isinstance(output, Answer):
                if output.request.reply_partition is None:
                    continue
                value = self.codec.encode(
                    "casino.agg.ProviderOutcome", outcome_to_avro(output, now)
                )
                encoded.append((self.names.outcomes, output.request.reply_partition, value))
            elif isinstance(output, Event):
                name, record = event_to_avro(output, op, player, now)
                encoded.append((self.names.events, None, self.codec.encode(name, record)))
        return encoded

    def _count(self, state: PlayerState, outputs: Iterable[object]) -> None:
        op, player = state.operator_id, state.player_id
        for output in outputs:
            if isinstance(output, Command):
                _commands(output.kind.value).inc()
                if output.kind == CommandKind.CANCEL:
                    pending = state.pending.get(output.command_id)
                    txn = state.txns.get(pending.txn_key or "") if pending else None
                    # first send of a cancel for a debit that timed out or failed
                    if (
                        pending
                        and pending.sends == 1
                        and txn
                        and txn.state == TxnState.COMPENSATING
                    ):
                        COMPENSATIONS.inc()
            elif isinstance(output, Answer):
                _answers(output.request.action.value, output.status.value).inc()
            elif isinstance(output, Event):
                _events(output.name).inc()
                if output.name == "DebitTimedOut":
                    TIMEOUTS.inc()
                elif output.name == "DuplicateConflictDetected":
                    _duplicates("conflict").inc()
                log.event(
                    output.name,
                    correlation_id=output.correlation_id,
                    event_id=output.event_id,
                    operator_id=op,
                    player_id=player,
                    transaction_id=output.fields.get("transaction_id"),
                    amount=output.fields.get("amount"),
                )

    def _persist_and_publish(self, work: _Batch, started: float) -> None:
        """Step 2 (every touched player's state, header first) now; steps 3 and 4 when the
        acknowledgements come (:meth:`_finish`)."""
        if not work.players and not work.offsets:
            return
        state_topic = self.names.saga_state
        records: list[OutRecord] = []
        outputs: list[OutRecord] = []
        markers: dict[int, int] = {}
        seqs: dict[int, int] = {}
        by_partition: dict[int, list[tuple[bytes, _Touched]]] = {}
        for (partition, key), touched in work.players.items():
            by_partition.setdefault(partition, []).append((key, touched))
        for partition, players in by_partition.items():
            if self.published[partition] < self.acked[partition]:
                # every write up to acked[partition] had its outputs acknowledged
                markers[partition] = self.acked[partition]
                marker = encode_marker(self.acked[partition])
                records.append(OutRecord(state_topic, MARKER_KEY, marker, partition))
            seq = self.seq[partition] = seqs[partition] = self.seq[partition] + 1
            states, metas = self.states[partition], self.meta[partition]
            broken, unacked = self.broken[partition], self.unacked[partition]
            for key, touched in players:
                if key in broken:
                    continue
                meta = metas[key] if key in metas else WriteMeta()
                state = states.get(key)
                if state is None:
                    operator_id, player_id = split_key(key)
                    state = PlayerState(operator_id, player_id)
                outbox = touched.outbox
                carried = unacked.get(key)
                if carried is not None:
                    outbox = carried[1] + outbox
                if outbox:
                    unacked[key] = (seq, outbox)
                write = WriteMeta(seq, dict(meta.applied), outbox, meta.parked)
                records.extend(
                    OutRecord(state_topic, record_key, value, partition)
                    for record_key, value in state_records(
                        touched.old, state, key, self.rounds_cache, touched.changed, write
                    )
                )
                outputs.extend(OutRecord(t, key, v, p) for t, p, v in touched.outbox)
        batch = _InFlight(
            self.transport.send(records), outputs, seqs, list(work.players), work.offsets,
            started, asyncio.get_running_loop().create_future(),
        )  # fmt: skip
        self.published.update(markers)
        previous = self.in_flight[-1] if self.in_flight else None
        task = asyncio.ensure_future(self._finish(batch, previous))
        task.add_done_callback(_retrieved)
        self.in_flight.append((batch, task))

    async def _finish(
        self, batch: _InFlight, previous: tuple[_InFlight, asyncio.Task[None]] | None
    ) -> None:
        """Steps 3 and 4 of a batch: its outputs once its state is acknowledged (and after the
        previous batch's outputs), then, once they are acknowledged and the previous batch is
        finished, its writes known published and its offsets ready to commit."""
        await batch.state_sent
        if previous is not None and not previous[0].enqueued.done():
            await asyncio.wait((previous[0].enqueued, previous[1]),
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            if not previous[0].enqueued.done():
                previous[1].result()  # it failed: so does this one
        sent = self.transport.send(batch.outputs)
        batch.enqueued.set_result(None)
        await sent
        if previous is not None:
            await previous[1]
        for partition, seq in batch.seqs.items():
            if partition in self.acked:
                self.acked[partition] = max(self.acked[partition], seq)
        for partition, key in batch.keys:
            unacked = self.unacked.get(partition)
            if unacked is not None:
                carried = unacked.get(key)
                if carried is not None and carried[0] <= batch.seqs.get(partition, 0):
                    del unacked[key]
        self._offsets.update(batch.offsets)
        BATCH_SECONDS.observe(time.perf_counter() - batch.started)

    def _forget_finished(self) -> None:
        while self.in_flight and self.in_flight[0][1].done():
            self.in_flight.popleft()[1].result()  # a failure stops the worker: raised here

    def _raise_failed(self) -> None:
        for _, task in self.in_flight:
            if task.done():
                task.result()
        self._forget_finished()

    async def drain(self) -> None:
        """Wait until every batch decided is finished (raises the first failure)."""
        while self.in_flight:
            await self.in_flight.popleft()[1]

    async def _dead_letter(self, record: InRecord, reason: str) -> None:
        """Set a message aside with where it came from and why; awaited before the batch
        goes on, so a set-aside message is never lost."""
        DEAD_LETTERS.labels(reason.split(":")[0][:40]).inc()
        log.error(
            "dead_letter",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=reason,
        )
        await self.transport.produce(
            [dead_letter_record(self.names.dead_letters, record, reason, GROUP_ID)]
        )

    async def _measure_lag(self) -> None:
        """Gauges that walk every player or partition: on the timer, not per batch."""
        PENDING.set(sum(self.pending_count.values()))
        for (topic, partition), lag in (await self.transport.lag()).items():
            LAG.labels(topic, str(partition)).set(lag)


__all__ = ["SagaWorker", "StateDecodeError"]
