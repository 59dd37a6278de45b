"""The wallet service: one consumer loop per operator, from Kafka to Postgres and back.

Per batch of commands (one ``poll`` of the transport, at most ``wallet_batch_count_max``;
the transport is the port the saga uses, on the client ``kafka_client`` names):

1. decode every message; one that cannot be decoded goes to the dead-letter topic (raw
   bytes, header ``reason``) and is skipped; a decoded command with bad fields is kept and
   answered ERROR;
2. apply the batch in ONE Postgres transaction (:meth:`WalletStore.apply_batch`), which
   dedupes by command id: a command already in the ledger is not applied again and its
   stored reply is sent again; a command whose id the ledger holds for another player (or
   that names another operator) is answered ERROR, never with the stored reply, and goes to
   the dead-letter topic with the reason;
3. send every reply (same key as the command, so the default partitioner puts it on the
   partition the saga reads for that player);
4. once every reply and dead letter of the batch is acknowledged, and every earlier batch
   is finished, commit the batch's offsets.

Steps 3-4 of a batch run while the next batches are fetched and applied (at most
``PIPELINE_DEPTH`` batches behind): the loop never waits for an acknowledgement or a commit
before it fetches again. Replies keep their order (one producer, sends in batch order), and
offsets are committed in batch order, so a committed offset still means "every command
before it is in the ledger and answered". A revocation waits for the batches in flight.

A crash before 2 commits leaves nothing; a crash after it re-reads the batch, finds every
command in the ledger and re-sends the same replies. So delivery is at-least-once and the
effect exactly-once. A failure other than a bad message (Postgres or Kafka down) stops the
service before the offsets are committed; restarting it resumes from the last commit.

Per operator, the rules' :class:`~agg_wallet.rules.Policy`: the operator's currencies, its
provider sandbox (``wallet.sandbox`` in the tenants file) and the deliberate defects of
``AGG_WALLET_BROKEN`` (for the certification kit's tests; refused unless
``AGG_WALLET_BROKEN_ENABLED`` is true, and logged at start as ``wallet_broken``). A sandbox
``timeout`` debit gets no reply at all; the ``slow`` defect holds every batch's replies past
the saga's wallet deadline.

Test switches (:class:`Switches`, set at start or through the control endpoint):
``normal``; ``slow`` (each batch's replies wait ``delay_ms``); ``silent`` (the consumer is
paused: nothing is applied or answered until the mode changes, then the backlog is
processed in order); ``failing`` (every command is answered ERROR and nothing is applied or
recorded, so a resend after recovery is applied).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from agg_avro import AvroCodec, AvroDecodeError
from agg_config.settings import Settings
from agg_config.tenants import Operator, Tenants
from agg_kafka.tenants_watch import Applied, OperatorTasks, TenantsHolder, TenantsWatcher
from agg_kafka.topics import TopicNames
from agg_kafka.transport import make_transport
from agg_obs.logs import get_logger
from agg_obs.metrics import LATENCY_BUCKETS_S
from agg_ports.transport import InRecord, OutRecord, Transport, dead_letter_record
from agg_wallet.rules import (
    Command,
    Defect,
    Entry,
    Policy,
    Status,
    failing_entry,
    parse_defects,
    problem_of,
    reply_delay_ms,
)
from agg_wallet.store import Item, WalletStore

log = get_logger("wallet")

COMMAND_RECORD = "casino.agg.WalletCommand"
REPLY_RECORD = "casino.agg.WalletReply"
POLL_TIMEOUT_MS = 200
"""Longest wait for messages; also bounds how late a stop or a mode change is noticed."""
DELAY_MS_MAX = 60_000
"""Largest ``slow`` delay: the saga's wallet timeout is far below it."""
PIPELINE_DEPTH = 4
"""Batches applied whose replies may still be on their way while the next one is fetched
and applied."""
LAG_INTERVAL_S = 1.0
"""How often the lag gauges are measured."""

COMMANDS = Counter(
    "agg_wallet_commands_total",
    "Commands answered, by kind and status",
    ["operator", "kind", "status"],
)
DUPLICATES = Counter(
    "agg_wallet_duplicates_total", "Commands already in the ledger (reply re-sent)", ["operator"]
)
CONFLICTS = Counter(
    "agg_wallet_conflicts_total",
    "Repeated command ids whose content differs from the stored command",
    ["operator"],
)
COMMAND_ID_CONFLICTS = Counter(
    "agg_wallet_command_id_conflicts_total",
    "Commands refused because their id is in the ledger for another player or operator",
    ["operator"],
)
DEAD_LETTERS = Counter(
    "agg_wallet_dead_letters_total", "Messages set aside", ["operator", "reason"]
)
RETRIES = Counter(
    "agg_wallet_batch_retries_total", "Batch transactions retried after a lost race", ["operator"]
)
BATCH_SIZE = Histogram(
    "agg_wallet_batch_commands",
    "Commands per applied batch",
    ["operator"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
)
APPLY_SECONDS = Histogram(
    "agg_wallet_apply_seconds",
    "Time of one batch's Postgres transaction",
    ["operator"],
    buckets=LATENCY_BUCKETS_S,
)
BATCH_SECONDS = Histogram(
    "agg_wallet_batch_seconds",
    "Time from a batch's arrival to its committed offsets (apply, replies, commit)",
    ["operator"],
    buckets=LATENCY_BUCKETS_S,
)
LAG = Gauge(
    "agg_wallet_consumer_lag", "Commands behind the end of each partition", ["topic", "partition"]
)
MODE = Gauge("agg_wallet_mode", "1 for the current test mode", ["mode"])
DELAY = Gauge("agg_wallet_delay_ms", "Reply delay of the slow mode")


class Mode(StrEnum):
    NORMAL = "normal"
    SLOW = "slow"
    SILENT = "silent"
    FAILING = "failing"


@dataclass
class Switches:
    """Fault-test switches shared by every operator loop of one process."""

    mode: Mode = Mode.NORMAL
    delay_ms: int = 0

    def __post_init__(self) -> None:
        self.set(self.mode, self.delay_ms)

    def set(self, mode: Mode | str, delay_ms: int | None = None) -> None:
        mode = Mode(mode)
        if delay_ms is not None:
            if not 0 <= delay_ms <= DELAY_MS_MAX:
                raise ValueError(f"delay_ms must be within 0..{DELAY_MS_MAX}")
            self.delay_ms = delay_ms
        self.mode = mode
        for m in Mode:
            MODE.labels(m.value).set(1 if m is mode else 0)
        DELAY.set(self.delay_ms)
        log.event("mode_set", mode=mode.value, delay_ms=self.delay_ms)

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode.value, "delay_ms": self.delay_ms}


@dataclass
class _Batch:
    items: list[Item] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)
    records: list[InRecord] = field(default_factory=list)
    """The message of each item, for the dead-letter topic."""
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    dead_count: int = 0
    silent: set[int] = field(default_factory=set)
    """Indexes of the items that get no reply (sandbox ``timeout``)."""
    sent: list[Awaitable[None]] = field(default_factory=list)
    """What was sent for the batch (dead letters, replies): acknowledged before its offsets
    are committed."""
    started: float = 0.0


def _now() -> datetime:
    """Now, to the millisecond (what an Avro timestamp-millis keeps), so a reply re-sent
    from the ledger encodes to the same bytes as the first one."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class OperatorLoop:
    """Consumes one operator's command topic with its own group, transport and database
    connection."""

    def __init__(
        self,
        service: WalletService,
        operator_id: str,
        starting_balance: int,
        policy: Policy | None = None,
    ):
        self.service = service
        self.settings = service.settings
        self.operator_id = operator_id
        self.starting_balance = starting_balance
        self.policy = policy or Policy()
        self.reply_delay_ms = reply_delay_ms(self.policy.defects, self.settings.wallet_timeout_ms)
        names = service.names
        self.commands_topic = names.wallet_commands(operator_id)
        self.replies_topic = names.wallet_replies(operator_id)
        self.group_id = f"agg-wallet-{operator_id}"
        self.assigned = asyncio.Event()
        self.transport: Transport = make_transport(
            self.settings,
            group_id=self.group_id,
            client_id=f"{service.client_id}-{operator_id}",
            batch_max=self.settings.wallet_batch_count_max,
            instance_id=f"{service.instance_id}-{operator_id}" if service.instance_id else None,
        )
        self.lock = asyncio.Lock()
        """Held while a batch is decoded and applied: a rebalance waits for it."""
        self.finishing: deque[asyncio.Task[None]] = deque()
        """Batches applied whose replies and offsets are on their way, oldest first."""
        self._paused: set[tuple[str, int]] = set()
        self._next_lag = 0.0

    # --- the rebalance listener (the transport calls it) --------------------------------------

    async def on_revoked(self, partitions: set[tuple[str, int]]) -> None:
        async with self.lock:
            await self._drain()  # the replies are sent and the offsets committed first
        self._paused -= partitions
        log.event("partitions_revoked", operator_id=self.operator_id,
                  partitions=sorted(p for _, p in partitions))  # fmt: skip

    async def on_assigned(self, partitions: set[tuple[str, int]]) -> None:
        log.event("partitions_assigned", operator_id=self.operator_id,
                  partitions=sorted(p for _, p in partitions))  # fmt: skip
        if partitions:
            self.assigned.set()

    # --- the loop ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        store = await WalletStore.connect(self.settings.database_url)
        try:
            await self.transport.start([self.commands_topic], self)
            log.event("wallet_consuming", operator_id=self.operator_id,
                      topic=self.commands_topic, group=self.group_id,
                      client=self.settings.kafka_client)  # fmt: skip
            while not stop.is_set():
                await self._step(store)
            await self._drain()
        finally:
            try:
                for task in self.finishing:
                    task.cancel()
                await self.transport.stop()
            finally:
                await store.close()
                log.event("wallet_stopped", operator_id=self.operator_id)

    async def _step(self, store: WalletStore) -> None:
        transport = self.transport
        switches = self.service.switches
        if switches.mode is Mode.SILENT:
            wanted = transport.assignment() - self._paused
            if wanted:
                transport.pause(wanted)
                self._paused |= wanted
        elif self._paused:
            transport.resume(self._paused)
            self._paused = set()
        self._raise_failed()
        records = await transport.poll(POLL_TIMEOUT_MS, self.settings.wallet_batch_count_max)
        if not records:
            return
        async with self.lock:
            if switches.mode is Mode.SILENT:
                # fetched just before the switch: put them back, they are handled after it
                firsts: dict[tuple[str, int], int] = {}
                for r in records:
                    firsts.setdefault((r.topic, r.partition), r.offset)
                assigned = transport.assignment()
                for (topic, partition), offset in firsts.items():
                    if (topic, partition) in assigned:  # else its next owner starts from
                        transport.seek(topic, partition, offset)  # the committed offset
                return
            batch = self._decode(records)
            entries = await self._apply(batch, store)
            if switches.mode is Mode.SLOW and switches.delay_ms:
                await asyncio.sleep(switches.delay_ms / 1000)
            if self.reply_delay_ms:  # the ``slow`` defect
                await asyncio.sleep(self.reply_delay_ms / 1000)
            batch.sent.append(transport.send(self._replies(batch, entries)))
            previous = self.finishing[-1] if self.finishing else None
            self.finishing.append(asyncio.create_task(self._finish(batch, previous)))
        while len(self.finishing) > PIPELINE_DEPTH:
            await self.finishing.popleft()
        self._forget_finished()
        now = time.monotonic()
        if now >= self._next_lag:
            self._next_lag = now + LAG_INTERVAL_S
            for (topic, partition), lag in (await transport.lag()).items():
                LAG.labels(topic, str(partition)).set(lag)

    async def _finish(self, batch: _Batch, previous: asyncio.Task[None] | None) -> None:
        """Once the batch's records are acknowledged, and every earlier batch is finished, its
        offsets are committed."""
        if batch.sent:
            await asyncio.gather(*batch.sent)
        if previous is not None:
            await previous
        if not await self.transport.commit(batch.offsets):
            # the partitions moved during the batch: their new owner reads these commands
            # again, finds them in the ledger and re-sends the same replies
            log.warning("commit_failed", operator_id=self.operator_id,
                        partitions=sorted(p for _, p in batch.offsets))  # fmt: skip
        BATCH_SECONDS.labels(self.operator_id).observe(time.perf_counter() - batch.started)

    def _forget_finished(self) -> None:
        while self.finishing and self.finishing[0].done():
            self.finishing.popleft().result()  # a failure stops the service: raised here

    def _raise_failed(self) -> None:
        for task in self.finishing:
            if task.done() and not task.cancelled() and task.exception() is not None:
                task.result()
        self._forget_finished()

    async def _drain(self) -> None:
        while self.finishing:
            await self.finishing.popleft()

    def _decode(self, records: list[InRecord]) -> _Batch:
        batch = _Batch(started=time.perf_counter())
        codec = self.service.codec
        for record in records:
            tp = (record.topic, record.partition)
            batch.offsets[tp] = record.offset + 1
            try:
                if record.key is None or record.value is None:
                    raise AvroDecodeError("no_key_or_value", "message without key or value")
                decoded = codec.decode(record.value, reader=COMMAND_RECORD)
                if decoded.writer.name != COMMAND_RECORD:
                    raise AvroDecodeError(
                        "wrong_record", f"{decoded.writer.name} on {record.topic}"
                    )
                command = Command.from_avro(decoded.datum)
            except AvroDecodeError as exc:
                log.error("dead_letter", operator_id=self.operator_id, topic=record.topic,
                          partition=record.partition, offset=record.offset,
                          reason=str(exc))  # fmt: skip
                self._set_aside(batch, record, exc.reason, str(exc))
                batch.dead_count += 1
                continue
            problem = problem_of(command, self.operator_id, record.key)
            batch.items.append(Item(command, problem, record.partition, record.offset))
            batch.keys.append(record.key)
            batch.records.append(record)
        return batch

    async def _apply(self, batch: _Batch, store: WalletStore) -> list[Entry]:
        if not batch.items:
            return []
        now = _now()
        op = self.operator_id
        if self.service.switches.mode is Mode.FAILING:
            entries = [failing_entry(i.command, now) for i in batch.items]
            duplicate_count = conflict_count = foreign_count = 0
            seconds = 0.0
        else:
            started = time.perf_counter()
            result = await store.apply_batch(
                op, self.starting_balance, batch.items, now, self.policy
            )
            seconds = time.perf_counter() - started
            APPLY_SECONDS.labels(op).observe(seconds)
            BATCH_SIZE.labels(op).observe(len(batch.items))
            if result.attempts > 1:
                RETRIES.labels(op).inc(result.attempts - 1)
            entries = [d.entry for d in result.decisions]
            duplicate_count = sum(d.duplicate for d in result.decisions)
            conflict_count = sum(d.conflict for d in result.decisions)
            foreign_count = sum(d.foreign for d in result.decisions)
            DUPLICATES.labels(op).inc(duplicate_count)
            CONFLICTS.labels(op).inc(conflict_count)
            for index, (item, record, decision) in enumerate(
                zip(batch.items, batch.records, result.decisions, strict=True)
            ):
                if decision.silent:
                    batch.silent.add(index)
                    log.warning("command_unanswered", operator_id=op,
                                correlation_id=item.command.correlation_id,
                                command_id=item.command.command_id,
                                reason="sandbox timeout scenario",
                                partition=item.partition, offset=item.offset)  # fmt: skip
                if decision.conflict:
                    # the same id with other content: refused, never the stored reply
                    log.warning("command_conflict", operator_id=op,
                                correlation_id=item.command.correlation_id,
                                command_id=item.command.command_id,
                                partition=item.partition, offset=item.offset)  # fmt: skip
                    self._set_aside(batch, record, "command_conflict", decision.entry.reason)
                if decision.foreign:
                    # ids that leave their owner out, upstream: the asking player gets
                    # ERROR, the other player's reply stays with it, and a person looks
                    COMMAND_ID_CONFLICTS.labels(op).inc()
                    log.error("command_id_conflict", operator_id=op,
                              correlation_id=item.command.correlation_id,
                              command_id=item.command.command_id,
                              player_id=item.command.player_id,
                              reason=decision.entry.reason,
                              partition=item.partition, offset=item.offset)  # fmt: skip
                    self._set_aside(batch, record, "command_id_conflict", decision.entry.reason)
        statuses: Tally[str] = Tally()
        for index, (item, entry) in enumerate(zip(batch.items, entries, strict=True)):
            if index in batch.silent:
                continue
            COMMANDS.labels(op, item.command.kind, entry.status.value).inc()
            statuses[entry.status.value] += 1
            if entry.status is not Status.OK:
                log.warning(
                    "command_refused",
                    operator_id=op,
                    correlation_id=item.command.correlation_id,
                    command_id=entry.command_id,
                    player_id=entry.player_id,
                    kind=item.command.kind,
                    amount=item.command.amount,
                    status=entry.status.value,
                    reason=entry.reason or entry.effect.value,
                    partition=item.partition,
                    offset=item.offset,
                )
        log.event(
            "batch_applied",
            operator_id=op,
            mode=self.service.switches.mode.value,
            commands=len(batch.items),
            duplicates=duplicate_count,
            conflicts=conflict_count,
            command_id_conflicts=foreign_count,
            dead_letters=batch.dead_count + foreign_count,
            apply_ms=round(seconds * 1000, 1),
            statuses=dict(statuses),
            partitions={str(p): end for (_, p), end in batch.offsets.items()},
        )
        return entries

    def _replies(self, batch: _Batch, entries: list[Entry]) -> list[OutRecord]:
        """One reply per command, with the command's key, so the default partitioner puts it
        on the partition the saga reads for that player."""
        encode = self.service.codec.encode
        replies = []
        for index, (item, key, entry) in enumerate(
            zip(batch.items, batch.keys, entries, strict=True)
        ):
            if index in batch.silent:
                continue
            value = encode(REPLY_RECORD, {
                "command_id": entry.command_id,
                "operator_id": item.command.operator_id,
                "player_id": entry.player_id,
                "status": entry.status.value,
                "balance": entry.balance,
                "currency": entry.currency,
                "replied_at": entry.replied_at,
                "correlation_id": entry.correlation_id,
            })  # fmt: skip
            replies.append(OutRecord(self.replies_topic, key, value))
        return replies

    def _set_aside(self, batch: _Batch, record: InRecord, reason: str, detail: str | None) -> None:
        """The message, as read, to the dead-letter topic (header ``reason`` = ``detail``),
        acknowledged before the batch's offsets are committed."""
        DEAD_LETTERS.labels(self.operator_id, reason).inc()
        dead = dead_letter_record(
            self.service.names.dead_letters, record, detail or reason, self.group_id
        )
        batch.sent.append(self.transport.send([dead]))


def defects_of(settings: Settings) -> frozenset[Defect]:
    """The deliberate defects asked for (``AGG_WALLET_BROKEN``); ValueError unless
    ``AGG_WALLET_BROKEN_ENABLED`` allows them, or naming an unknown one. Every reference
    wallet (Kafka and HTTP) reads them here, so both refuse and allow alike."""
    defects = parse_defects(settings.wallet_broken)
    if defects and not settings.wallet_broken_enabled:
        raise ValueError(
            "AGG_WALLET_BROKEN asks for deliberate defects "
            f"({', '.join(sorted(defects))}), which are for testing the certification "
            "kit only: set AGG_WALLET_BROKEN_ENABLED=true to run a broken wallet"
        )
    return defects


def policy_of(
    operator: Operator, defects: frozenset[Defect], wire_exponent: int | None = None
) -> Policy:
    """The rules' policy of one operator of the tenants file; ``wire_exponent``: the unit of
    the HTTP protocol it answers on (:attr:`Policy.wire_exponent`)."""
    return Policy(
        currencies=frozenset(operator.currencies),
        sandbox=operator.wallet.sandbox,
        defects=defects,
        max_stake=operator.wallet.max_stake,
        wire_exponent=wire_exponent,
    )


class WalletService:
    """The reference operator wallet for some operators of the tenants.

    Build it inside the running event loop (the Kafka clients belong to it), then
    ``await service.run(stop)``; setting ``stop`` finishes the current batch of every
    operator, commits it and returns.

    It follows the tenants document (:mod:`agg_kafka.tenants_watch`): an operator that a new
    document gives a Kafka wallet starts being served, one that loses it (or leaves) is
    stopped after its current batch, and the policy of the others (currencies, sandbox,
    starting balance) is replaced between two batches."""

    def __init__(
        self,
        settings: Settings,
        tenants: Tenants,
        operator_ids: Iterable[str] | None = None,
        *,
        switches: Switches | None = None,
        client_id: str = "wallet",
        instance_id: str | None = None,
    ):
        kafka_operators = [o for o in tenants.operators if o.wallet.mode == "kafka"]
        self.wanted_ids = None if operator_ids is None else frozenset(operator_ids)
        if self.wanted_ids is not None:
            known = {o.id for o in kafka_operators}
            if self.wanted_ids - known:
                raise ValueError(
                    "not Kafka-wallet operators of the tenants file: "
                    f"{sorted(self.wanted_ids - known)}"
                )
        self.defects = defects_of(settings)
        self.settings = settings
        self.names = TopicNames(settings.topic_prefix)
        self.switches = switches or Switches()
        self.client_id = client_id
        self.instance_id = instance_id
        self.codec = AvroCodec()
        self.tenants = TenantsHolder("wallet", self.plan, tenants)
        """The operators to serve and their policies, per tenants document."""
        if not self.tenants.view:
            raise ValueError("no operator with wallet mode 'kafka' to serve")
        self.loops = [
            OperatorLoop(self, op_id, balance, policy)
            for op_id, (balance, policy) in self.tenants.view.items()
        ]
        """The running loop of each operator served now."""
        self._unstarted = {lp.operator_id: lp for lp in self.loops}
        """Loops built here, before :meth:`run` starts them."""

    def plan(self, tenants: Tenants) -> dict[str, tuple[int, Policy]]:
        """Per operator ``tenants`` asks this wallet to serve: its starting balance and policy."""
        chosen = [o for o in tenants.operators if o.wallet.mode == "kafka"]
        if self.wanted_ids is not None:
            chosen = [o for o in chosen if o.id in self.wanted_ids]
        return {o.id: (o.wallet.starting_balance, policy_of(o, self.defects)) for o in chosen}

    @property
    def operator_ids(self) -> list[str]:
        return [lp.operator_id for lp in self.loops]

    def ready(self) -> bool:
        """Every operator loop has been assigned partitions."""
        return all(lp.assigned.is_set() for lp in self.loops)

    def _warn(self, lp: OperatorLoop) -> None:
        if lp.policy.sandbox:
            log.warning("wallet_sandbox", operator_id=lp.operator_id,
                        reason="provider sandbox scenarios by player id prefix")  # fmt: skip
        if lp.policy.defects:
            log.warning("wallet_broken", operator_id=lp.operator_id,
                        defects=sorted(lp.policy.defects), reply_delay_ms=lp.reply_delay_ms,
                        reason="deliberate defects for certification tests; not a wallet "
                        "for real money")  # fmt: skip

    async def _loop(self, operator_id: str, _spec: None, stop: asyncio.Event) -> None:
        lp = self._unstarted.pop(operator_id, None)
        if lp is None:
            balance, policy = self.tenants.view[operator_id]
            lp = OperatorLoop(self, operator_id, balance, policy)
            self.loops.append(lp)
            self._warn(lp)
        try:
            await lp.run(stop)
        finally:
            self.loops.remove(lp)

    def _follow(self, loops: OperatorTasks[str, None]) -> Callable[..., None]:
        def follow(old: Applied[dict[str, tuple[int, Policy]]],
                   new: Applied[dict[str, tuple[int, Policy]]]) -> None:  # fmt: skip
            # a loop reads its policy once per batch: replaced between two batches
            for lp in self.loops:
                if lp.operator_id in new.view:
                    lp.starting_balance, lp.policy = new.view[lp.operator_id]
            started, stopped = loops.reconcile(dict.fromkeys(new.view))
            log.event("wallet_operators_changed", sequence=new.document.sequence,
                      started=started, stopped=stopped, operators=sorted(new.view))  # fmt: skip

        return follow

    async def run(self, stop: asyncio.Event) -> None:
        store = await WalletStore.connect(self.settings.database_url)
        try:
            await store.ensure_schema()
        finally:
            await store.close()
        watcher = TenantsWatcher(self.settings, self.tenants, client_id=f"{self.client_id}-config")
        await watcher.start()
        # the topic's document may differ from the file's: serve the topic's
        for lp in list(self.loops):
            if lp.operator_id in self.tenants.view:
                lp.starting_balance, lp.policy = self.tenants.view[lp.operator_id]
            else:
                self.loops.remove(lp)
                del self._unstarted[lp.operator_id]
        log.event("wallet_started", operators=sorted(self.tenants.view), **self.switches.as_dict())
        for lp in self.loops:
            self._warn(lp)
        async with asyncio.TaskGroup() as group:
            loops: OperatorTasks[str, None] = OperatorTasks(group, self._loop)
            loops.reconcile(dict.fromkeys(self.tenants.view))
            self.tenants.listeners.append(self._follow(loops))
            group.create_task(watcher.follow(stop))
            await stop.wait()
            loops.stop_all()
