"""The saga worker: consumes requests and wallet replies keyed by player, runs
:func:`agg_domain.saga.decide`, and publishes wallet commands, outcomes and journal events.

Why not faust tables: faust sends a table's changelog as soon as the value is set, while the
messages an agent sends are held ("attached") until the offset commit. A crash between the
two leaves a state that claims a wallet command or journal event was sent when it never was.
Here the order is explicit, per batch of messages:

1. decide every message of the batch in memory (one player's messages in order);
2. publish the outputs (acks=all, idempotent) and wait for every acknowledgement;
3. publish the new state of every touched player to the compacted ``agg.saga.state`` topic
   (same partition number as the input) and wait;
4. commit the input offsets, those of every batch finished since, on the next tick
   (``tick_interval_ms``), when partitions are revoked and when stopping: a commit is a
   broker round trip, which at one per batch was a third of the saga's round trips and of
   its time per batch. A crash re-processes at most one tick more of messages, against
   the state written for them, where they are duplicates.

A crash before 3 re-processes the batch from the old state and re-emits the same outputs with
the same deterministic ids (every consumer dedupes); a crash before 4 re-processes it against
the new state, where every message is a duplicate that changes nothing. Nothing is lost and
no money moves twice. The inputs are co-partitioned (same key, same partition count) and
assigned with the range assignor, so one worker owns a player's requests, replies and state.
Timers (deadlines, resends) run in the worker for the players of its partitions and go
through the same steps.

Failures: a message that cannot be decoded, or that the saga refuses as malformed, goes to
the dead-letter topic with the reason and is skipped; any other exception stops the worker
before the batch's offsets are committed, so nothing is acknowledged that was not done.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, IllegalStateError
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
    decide,
    pending_due_ms,
    txn_key,
)
from agg_domain.statuses import CommandKind
from agg_kafka.clients import consumer_lag, dead_letter, make_consumer, make_producer
from agg_kafka.topics import TopicNames
from agg_obs.logs import get_logger, now_ms
from agg_obs.metrics import LATENCY_BUCKETS_S
from agg_saga.mapping import (
    command_to_avro,
    event_to_avro,
    outcome_to_avro,
    reply_from_avro,
    request_from_avro,
)
from agg_saga.state_codec import RoundsCache, StateBuilder, StateDecodeError, state_records

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
class _Batch:
    outputs: list[tuple[str, bytes, bytes, int | None]] = field(default_factory=list)
    records: dict[tuple[int, bytes], bytes | None] = field(default_factory=dict)
    """State changelog records to write: (partition, record key) -> value or tombstone."""
    offsets: dict[TopicPartition, int] = field(default_factory=dict)


class SagaWorker:
    def __init__(self, settings: Settings, operator_ids: Iterable[str], *, client_id: str = "saga"):
        self.settings = settings
        self.names = TopicNames(settings.topic_prefix)
        self.operator_ids = sorted(set(operator_ids))
        self.client_id = client_id
        self.config = SagaConfig(
            wallet_timeout_ms=settings.wallet_timeout_ms,
            retry_backoff_initial_ms=settings.retry_backoff_initial_ms,
            retry_backoff_max_ms=settings.retry_backoff_max_ms,
            demo_starting_balance=settings.demo_starting_balance_minor,
        )
        self.codec = AvroCodec()
        self.reply_topics = {self.names.wallet_replies(op) for op in self.operator_ids}
        self.inputs = [self.names.requests, *sorted(self.reply_topics)]
        self.states: dict[int, dict[bytes, PlayerState]] = {}
        self.due: dict[int, dict[bytes, int]] = {}
        self.deadlines: dict[int, dict[bytes, dict[str, int]]] = {}
        """Per partition and player, the transactions with a deadline and when it is: what
        :func:`agg_domain.saga.next_due_ms` would walk the player's history for."""
        self.rounds_cache = RoundsCache()
        self.lock = asyncio.Lock()
        self.producer = make_producer(settings, client_id=f"{client_id}-producer")
        self.consumer: AIOKafkaConsumer | None = None
        self.ready = asyncio.Event()
        self._restore_pending: set[int] = set()
        """Partitions assigned whose state is still to be read (they are paused until then)."""
        self._offsets: dict[TopicPartition, int] = {}
        """Offsets of finished batches, committed on the next tick."""

    # --- state ------------------------------------------------------------------------------

    async def _restore(self, partitions: set[int]) -> None:
        """Read the latest state of every player of ``partitions`` from the changelog."""
        if not partitions:
            return
        started = time.monotonic()
        reader = make_consumer(
            self.settings, group_id=None, client_id=f"{self.client_id}-restore",
            isolation_level="read_uncommitted",
        )  # fmt: skip
        await reader.start()
        try:
            tps = [TopicPartition(self.names.saga_state, p) for p in partitions]
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            ends = await reader.end_offsets(tps)
            builders = {p: StateBuilder() for p in partitions}
            remaining = {tp for tp in tps if ends[tp] > 0}
            count = 0
            while remaining:
                batch = await reader.getmany(*remaining, timeout_ms=1000)
                for tp, records in batch.items():
                    for record in records:
                        if record.key is not None:
                            builders[tp.partition].add(record.key, record.value)
                            count += 1
                        if record.offset + 1 >= ends[tp]:
                            remaining.discard(tp)
            for p in partitions:
                self.states[p] = builders[p].states()
                self.due[p] = {}
                self.deadlines[p] = {}
            for p in partitions:
                for key, state in self.states[p].items():
                    self._note_due(p, key, state, state.txns)
        finally:
            await reader.stop()
        PLAYERS.set(sum(len(s) for s in self.states.values()))
        log.event(
            "state_restored",
            partitions=sorted(partitions),
            records=count,
            players=sum(len(self.states[p]) for p in partitions),
            seconds=round(time.monotonic() - started, 3),
        )

    def _drop(self, partitions: set[int]) -> None:
        for p in partitions:
            self.rounds_cache.forget(self.states.pop(p, {}))
            self.due.pop(p, None)
            self.deadlines.pop(p, None)
        PLAYERS.set(sum(len(s) for s in self.states.values()))

    # --- the loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        worker = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                # what is done is committed before its partitions move on
                await worker._commit_offsets()
                async with worker.lock:
                    gone = {tp.partition for tp in revoked}
                    worker._drop(gone)
                    worker._restore_pending -= gone
                    log.event("partitions_revoked", partitions=sorted(gone))

            async def on_partitions_assigned(self, assigned: Any) -> None:
                # The state is read in the loop, not here: aiokafka sends no heartbeats
                # while this callback runs, and a restore longer than the session timeout
                # would get the worker expelled, and restoring again, forever. New
                # partitions stay paused until their state is read.
                async with worker.lock:
                    wanted = {tp.partition for tp in assigned} - set(worker.states)
                    worker._restore_pending |= wanted
                    paused = [tp for tp in assigned if tp.partition in wanted]
                    if paused and worker.consumer is not None:
                        worker.consumer.pause(*paused)
                    if not wanted:
                        log.event("partitions_assigned", partitions=sorted(
                            {tp.partition for tp in assigned}))  # fmt: skip
                        worker.ready.set()

        self.consumer = make_consumer(
            self.settings,
            group_id=GROUP_ID,
            client_id=self.client_id,
            partition_assignment_strategy=(RangePartitionAssignor,),
            max_poll_records=self.settings.saga_batch_count_max,
        )
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe(self.inputs, listener=Listener())
        log.event("saga_started", inputs=self.inputs, group=GROUP_ID)
        try:
            tick_s = self.settings.tick_interval_ms / 1000
            next_tick = next_lag = time.monotonic()
            while not stop.is_set():
                if self._restore_pending:
                    await self._restore_assigned()
                batch = await self.consumer.getmany(timeout_ms=self.settings.tick_interval_ms)
                tick = time.monotonic() >= next_tick
                if not batch and not tick:
                    continue
                if tick:
                    next_tick = time.monotonic() + tick_s
                self._offsets.update(await self._handle(batch, tick))
                if tick:
                    await self._commit_offsets()
                if tick and time.monotonic() >= next_lag:
                    next_lag = time.monotonic() + LAG_INTERVAL_S
                    await self._measure_lag()
            await self._commit_offsets()
        finally:
            await self.consumer.stop()
            await self.producer.stop()
            log.event("saga_stopped")

    async def _restore_assigned(self) -> None:
        """Read the state of the partitions assigned since the last batch, then resume them."""
        assert self.consumer is not None
        async with self.lock:
            assigned = self.consumer.assignment()
            numbers = {tp.partition for tp in assigned}
            wanted = (self._restore_pending & numbers) - set(self.states)
            self._restore_pending = set()
            await self._restore(wanted)
            self.consumer.resume(*[tp for tp in assigned if tp.partition in wanted])
            log.event("partitions_assigned", partitions=sorted(numbers))
            self.ready.set()

    # --- offsets ------------------------------------------------------------------------------

    async def _commit_offsets(self) -> None:
        """Commit the offsets of the batches finished so far (their outputs and state are
        acknowledged)."""
        offsets, self._offsets = self._offsets, {}
        if not offsets or self.consumer is None:
            return
        # a batch that finished while its partitions were revoked is their new owner's now
        assigned = self.consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # partitions moved since the batch: the new owner re-processes them against the
            # state written for it, where they are duplicates
            log.warning("commit_failed", error=str(exc))

    # --- a batch -----------------------------------------------------------------------------

    async def _handle(
        self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]], tick: bool
    ) -> dict[TopicPartition, int]:
        started = time.perf_counter()
        async with self.lock:
            work = _Batch()
            for tp, records in batch.items():
                if tp.partition not in self.states:
                    if self.consumer is not None and tp in self.consumer.assignment():
                        # assigned, state not read yet: fetched again once it is
                        self.consumer.seek(tp, records[0].offset)
                    continue  # otherwise revoked while fetched: its new owner handles it
                for record in records:
                    await self._handle_record(work, tp, record)
                    work.offsets[tp] = record.offset + 1
            if tick:
                self._handle_ticks(work)
            await self._publish(work)
        if work.offsets or work.outputs:
            BATCH_SECONDS.observe(time.perf_counter() - started)
        return work.offsets

    async def _handle_record(
        self, work: _Batch, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]
    ) -> None:
        try:
            if record.key is None or record.value is None:
                raise ValueError("message without key or value")
            split_key(record.key)
            decoded = self.codec.decode(record.value)
            message: Message
            if tp.topic == self.names.requests:
                if decoded.name != "casino.agg.ProviderRequest":
                    raise ValueError(f"{decoded.name} on {tp.topic}")
                message = request_from_avro(decoded.datum)
                _messages("request").inc()
            else:
                if decoded.name != "casino.agg.WalletReply":
                    raise ValueError(f"{decoded.name} on {tp.topic}")
                message = reply_from_avro(decoded.datum)
                _messages("reply").inc()
                if record.key.decode().split(":", 1)[0] != decoded.datum["operator_id"]:
                    raise ValueError("reply's operator differs from its key")
        except (AvroDecodeError, ValueError, KeyError) as exc:
            await self._dead_letter(record, tp, str(exc))
            return
        try:
            self._decide(work, tp.partition, record.key, message, record.timestamp)
        except ValueError as exc:  # the saga refused the message as malformed
            await self._dead_letter(record, tp, f"refused: {exc}")

    def _handle_ticks(self, work: _Batch) -> None:
        now = now_ms()
        for partition, due in self.due.items():
            for key, due_ms in list(due.items()):
                if due_ms <= now:
                    _messages("tick").inc()
                    self._decide(work, partition, key, Tick(), now)

    def _decide(self, work: _Batch, partition: int, key: bytes, message: Message, now: int) -> None:
        states = self.states[partition]
        state = states.get(key)
        if state is None:
            operator_id, player_id = split_key(key)
            state = PlayerState(operator_id, player_id)
        if (
            isinstance(message, Request)
            and message.transaction_id is not None
            and txn_key(message.provider_id, message.transaction_id) in state.txns
        ):
            _duplicates("repeat").inc()
        decision = decide(state, message, now, self.config)
        states[key] = decision.state
        changed = decision.txns_changed
        for record_key, value in state_records(
            state, decision.state, key, self.rounds_cache, changed
        ):
            work.records[(partition, record_key)] = value
        self._note_due(partition, key, decision.state, changed)
        if isinstance(message, Reply):
            pending = state.pending.get(message.command_id)
            if pending is not None:
                REPLY_LATENCY.observe(max(0, now - pending.command.issued_at_ms) / 1000)
        self._collect(work, decision.state, key, decision.outputs, now)

    def _note_due(
        self, partition: int, key: bytes, state: PlayerState, changed: Iterable[str]
    ) -> None:
        """Update the player's deadlines from the transactions in ``changed`` and set when
        its next Tick is due: ``next_due_ms(state)``, without walking every transaction."""
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
        if due is None:
            self.due[partition].pop(key, None)
        else:
            self.due[partition][key] = due

    def _collect(
        self, work: _Batch, state: PlayerState, key: bytes, outputs: Iterable[object], now: int
    ) -> None:
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
                value = self.codec.encode(
                    "casino.agg.WalletCommand", command_to_avro(output, op, player)
                )
                work.outputs.append((self.names.wallet_commands(op), key, value, None))
            elif isinstance(output, Answer):
                _answers(output.request.action.value, output.status.value).inc()
                if output.request.reply_partition is None:
                    continue
                value = self.codec.encode(
                    "casino.agg.ProviderOutcome", outcome_to_avro(output, now)
                )
                work.outputs.append(
                    (self.names.outcomes, key, value, output.request.reply_partition)
                )
            elif isinstance(output, Event):
                _events(output.name).inc()
                if output.name == "DebitTimedOut":
                    TIMEOUTS.inc()
                elif output.name == "DuplicateConflictDetected":
                    _duplicates("conflict").inc()
                name, record = event_to_avro(output, op, player, now)
                work.outputs.append((self.names.events, key, self.codec.encode(name, record), None))
                log.event(
                    output.name,
                    correlation_id=output.correlation_id,
                    event_id=output.event_id,
                    operator_id=op,
                    player_id=player,
                    transaction_id=output.fields.get("transaction_id"),
                    amount=output.fields.get("amount"),
                )

    async def _publish(self, work: _Batch) -> None:
        send = self.producer.send
        futures = [await send(t, v, key=k, partition=p) for t, k, v, p in work.outputs]
        if futures:
            await asyncio.gather(*futures)
        futures = [
            await send(self.names.saga_state, value, key=key, partition=partition)
            for (partition, key), value in work.records.items()
        ]
        if futures:
            await asyncio.gather(*futures)

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], tp: TopicPartition, reason: str
    ) -> None:
        DEAD_LETTERS.labels(reason.split(":")[0][:40]).inc()
        log.error(
            "dead_letter",
            topic=tp.topic,
            partition=tp.partition,
            offset=record.offset,
            reason=reason,
        )
        await dead_letter(
            self.producer, self.names.dead_letters, record, reason=reason, consumer_group=GROUP_ID
        )

    async def _measure_lag(self) -> None:
        """Gauges that walk every player or partition: on the timer, not per batch."""
        PENDING.set(sum(len(s.pending) for states in self.states.values() for s in states.values()))
        if self.consumer is not None:
            for tp, lag in (await consumer_lag(self.consumer)).items():
                LAG.labels(tp.topic, str(tp.partition)).set(lag)


__all__ = ["SagaWorker", "StateDecodeError"]
