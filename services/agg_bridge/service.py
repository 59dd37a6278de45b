"""The bridge service: per HTTP operator, from its command topic through its seamless wallet
to its reply topic, with the reference Kafka wallet's guarantees.

Per batch of commands (one ``poll`` of the transport, at most ``wallet_batch_count_max``):

1. decode every message; one that cannot be decoded goes to the dead-letter topic (raw
   bytes, header ``reason``); a decoded command with bad fields
   (:func:`agg_wallet.rules.problem_of`, the checks the reference wallet makes) is answered
   ERROR without a call;
2. call the wallet for every command: the players of the batch concurrently (at most
   ``concurrency_max`` calls in flight), each player's commands one after the other in
   partition order, so a cancel never overtakes its debit;
3. send one reply per command (the command's key, so the reply lands on the partition the
   saga reads for that player);
4. once every reply and dead letter of the batch is acknowledged, and every earlier batch
   is finished, commit the batch's offsets.

Steps 3-4 of a batch run while the next batch is fetched and called (at most
``PIPELINE_DEPTH`` batches behind), as in the reference wallet; a revocation waits for them.
A crash anywhere before 4 redelivers the batch: its commands are called again with the same
command ids, which the wallet dedupes (same id, same answer), and the same replies are sent
again; the saga dedupes replies. So nothing is lost and nothing applied twice.

A call: the operator's protocol (``agg_protocols``) encodes and signs the command; the
client (httpx, keep-alive connections, at most ``concurrency_max`` of them) sends it with
the operator's ``timeout_ms``; the answer becomes a reply status. A retryable failure
(timeout, connection error, 429/5xx) is sent again, same command id, at most
``retry_count_max`` times; the whole budget must fit in the saga's ``wallet_timeout_ms``
(checked at start). A failure, or a call the circuit breaker holds back, is replied ERROR,
which the saga treats as transient: it compensates a debit and resends a credit or cancel.
One log line per call, with the correlation id; the signature headers are never logged.

:class:`WalletCaller` is that calling half, without Kafka (tested on httpx's in-process
transport); :class:`OperatorBridge` the Kafka loop around it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
from prometheus_client import Counter, Gauge, Histogram

from agg_avro import AvroCodec, AvroDecodeError
from agg_bridge.breaker import GAUGE_VALUE, Breaker, BreakerState
from agg_config.settings import Settings
from agg_config.tenants import Operator, Tenants, WalletConfig
from agg_domain.statuses import CommandKind, ReplyStatus
from agg_kafka.tenants_watch import Applied, OperatorTasks, TenantsHolder, TenantsWatcher
from agg_kafka.topics import TopicNames
from agg_kafka.transport import make_transport
from agg_obs.logs import get_logger
from agg_obs.metrics import LATENCY_BUCKETS_S
from agg_ports.transport import InRecord, OutRecord, Transport, dead_letter_record
from agg_protocols.operator_wallet import (
    BODY_BYTES_MAX,
    Answer,
    Failure,
    HttpCall,
    WalletCall,
    WalletClientProtocol,
)
from agg_protocols.signatures import load_private_key
from agg_protocols.wallet_canonical import CanonicalWalletClient
from agg_protocols.wallet_hub88 import Hub88WalletClient
from agg_wallet.rules import Command, problem_of

log = get_logger("bridge")

COMMAND_RECORD = "casino.agg.WalletCommand"
REPLY_RECORD = "casino.agg.WalletReply"
POLL_TIMEOUT_MS = 200
"""Longest wait for messages; also bounds how late a stop is noticed."""
PIPELINE_DEPTH = 4
"""Batches called whose replies may still be on their way while the next one is fetched."""
LAG_INTERVAL_S = 1.0
BUDGET_MARGIN_MS = 100
"""What the call budget leaves of the saga's wallet timeout: the reply's trip to the saga."""

CALLS = Counter(
    "agg_bridge_calls_total",
    "HTTP calls to operator wallets, by outcome (answered, failed)",
    ["operator", "kind", "outcome"],
)
FAILURES = Counter(
    "agg_bridge_call_failures_total",
    "Calls without a usable answer, by reason (timeout, connection, http_5xx, refused, ...)",
    ["operator", "reason"],
)
RETRIES = Counter("agg_bridge_call_retries_total", "Calls sent again", ["operator"])
SHORT_CIRCUITS = Counter(
    "agg_bridge_short_circuits_total",
    "Commands answered ERROR without a call because the breaker was open",
    ["operator"],
)
CALL_SECONDS = Histogram(
    "agg_bridge_call_seconds",
    "Time of one HTTP call to the operator's wallet",
    ["operator", "kind"],
    buckets=LATENCY_BUCKETS_S,
)
REPLIES = Counter(
    "agg_bridge_replies_total", "Replies sent, by kind and status", ["operator", "kind", "status"]
)
BREAKER_STATE = Gauge(
    "agg_bridge_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open", ["operator"]
)
BREAKER_OPENED = Counter(
    "agg_bridge_breaker_opened_total", "Times the breaker opened", ["operator"]
)
IN_FLIGHT = Gauge("agg_bridge_calls_in_flight", "Calls in flight", ["operator"])
DEAD_LETTERS = Counter(
    "agg_bridge_dead_letters_total", "Messages set aside", ["operator", "reason"]
)
BATCH_SECONDS = Histogram(
    "agg_bridge_batch_seconds",
    "Time from a batch's arrival to its committed offsets (calls, replies, commit)",
    ["operator"],
    buckets=LATENCY_BUCKETS_S,
)
LAG = Gauge(
    "agg_bridge_consumer_lag", "Commands behind the end of each partition", ["topic", "partition"]
)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _now() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def client_protocol(operator: Operator) -> WalletClientProtocol:
    """The operator's protocol with its credentials (resolved once, at start)."""
    wallet = operator.wallet
    if wallet.protocol == "hub88-v1":
        assert wallet.signing_key is not None
        return Hub88WalletClient(load_private_key(wallet.signing_key.reveal().decode()))
    assert wallet.secret is not None and wallet.url is not None
    return CanonicalWalletClient(wallet.secret.reveal(), urlsplit(wallet.url).path)


def failure_reason(failure: Failure) -> str:
    """A bounded label for the failures counter."""
    reason = failure.reason
    if reason.startswith("HTTP "):
        return f"http_{reason[5]}xx"
    if reason in ("timeout", "connection"):
        return reason
    if reason.startswith("wallet refused"):
        return "refused"
    return "bad_answer"


@dataclass(frozen=True)
class Outcome:
    """What the saga is replied for one command, and how it came about."""

    status: ReplyStatus
    balance: int | None
    reason: str | None = None
    attempts: int = 0


@dataclass
class _Batch:
    commands: list[Command] = field(default_factory=list)
    problems: list[str | None] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    sent: list[Awaitable[None]] = field(default_factory=list)
    started: float = 0.0


class WalletCaller:
    """The calling half of an operator's bridge, without Kafka: the operator's protocol, its
    keep-alive HTTP client (at most ``concurrency_max`` connections and calls in flight),
    its retries and its circuit breaker. ``transport`` replaces the network (tests)."""

    def __init__(
        self,
        operator_id: str,
        wallet: WalletConfig,
        protocol: WalletClientProtocol,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        assert wallet.url is not None
        self.operator_id = operator_id
        self.wallet = wallet
        self.protocol = protocol
        limit = wallet.concurrency_max
        self.http = httpx.AsyncClient(
            base_url=wallet.url.rstrip("/"),
            timeout=httpx.Timeout(wallet.timeout_ms / 1000),
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            transport=transport,
        )
        self.slots = asyncio.Semaphore(limit)
        self.breaker = Breaker(wallet.breaker_failure_count, wallet.breaker_open_ms)
        BREAKER_STATE.labels(operator_id).set(GAUGE_VALUE[self.breaker.state])

    async def close(self) -> None:
        await self.http.aclose()

    async def call_all(
        self, commands: list[Command], problems: list[str | None], keys: list[bytes]
    ) -> list[Outcome]:
        """Every command's outcome: the players (keys) concurrently, each player's commands
        one after the other in the order given."""
        outcomes: list[Outcome | None] = [None] * len(commands)
        queues: dict[bytes, list[int]] = {}
        for index, key in enumerate(keys):
            queues.setdefault(key, []).append(index)

        async def player(indexes: list[int]) -> None:
            for i in indexes:
                outcomes[i] = await self.call(commands[i], problems[i])

        async with asyncio.TaskGroup() as group:
            for indexes in queues.values():
                group.create_task(player(indexes))
        done = [o for o in outcomes if o is not None]
        assert len(done) == len(outcomes)
        return done

    def _set_breaker(self, breaker: Breaker) -> None:
        before = self.breaker.state
        self.breaker = breaker
        if breaker.state is not before:
            BREAKER_STATE.labels(self.operator_id).set(GAUGE_VALUE[breaker.state])
            if breaker.state is BreakerState.OPEN:
                BREAKER_OPENED.labels(self.operator_id).inc()
            log.event("breaker_changed", operator_id=self.operator_id,
                      state=breaker.state.value, was=before.value,
                      failures=breaker.failure_count)  # fmt: skip

    async def call(self, command: Command, problem: str | None) -> Outcome:
        """The command's outcome: the wallet's answer, or ERROR (with the reason)."""
        if problem is not None:
            outcome = Outcome(ReplyStatus.ERROR, None, problem)
            self._log_call(command, outcome, None, None, 0.0)
            return outcome
        call = WalletCall(
            command_id=command.command_id,
            correlation_id=command.correlation_id,
            operator_id=command.operator_id,
            player_id=command.player_id,
            kind=CommandKind(command.kind),
            amount=command.amount,
            currency=command.currency,
            provider_id=command.provider_id,
            transaction_id=command.transaction_id,
            round_id=command.round_id,
            game_id=command.game_id,
            reference_command_id=command.reference_command_id,
            issued_at_ms=(command.issued_at - EPOCH) // timedelta(milliseconds=1),
        )
        attempts_max = self.wallet.retry_count_max + 1
        for attempt in range(1, attempts_max + 1):
            try:
                request = self.protocol.encode(call, int(time.time()))
            except ValueError as exc:  # an amount the wire cannot carry: no call can help
                outcome = Outcome(ReplyStatus.ERROR, None, f"cannot encode: {exc}", attempt - 1)
                self._log_call(command, outcome, None, None, 0.0)
                return outcome
            breaker, admitted = self.breaker.admit(time.monotonic_ns() // 1_000_000)
            self._set_breaker(breaker)
            if not admitted:
                SHORT_CIRCUITS.labels(self.operator_id).inc()
                outcome = Outcome(ReplyStatus.ERROR, None, "breaker open", attempt - 1)
                self._log_call(command, outcome, None, None, 0.0)
                return outcome
            if attempt > 1:
                RETRIES.labels(self.operator_id).inc()
            result, http_status, seconds = await self._send(call, request)
            answered = isinstance(result, Answer)
            now_ms = time.monotonic_ns() // 1_000_000
            self._set_breaker(self.breaker.record(answered, now_ms))
            CALLS.labels(self.operator_id, call.kind.value,
                         "answered" if answered else "failed").inc()  # fmt: skip
            CALL_SECONDS.labels(self.operator_id, call.kind.value).observe(seconds)
            if isinstance(result, Answer):
                outcome = Outcome(result.status, result.balance, None, attempt)
                self._log_call(command, outcome, result.wire_status, http_status, seconds)
                return outcome
            FAILURES.labels(self.operator_id, failure_reason(result)).inc()
            outcome = Outcome(ReplyStatus.ERROR, None, result.reason, attempt)
            self._log_call(command, outcome, None, http_status, seconds)
            if not result.retryable or attempt == attempts_max:
                return outcome
            if self.wallet.retry_backoff_ms:
                await asyncio.sleep(self.wallet.retry_backoff_ms / 1000)
        raise AssertionError("unreachable")

    async def _send(
        self, call: WalletCall, request: HttpCall
    ) -> tuple[Answer | Failure, int | None, float]:
        """One HTTP call, ``timeout_ms`` in all (httpx's timeouts are per read: a wallet
        that drips its answer is cut off too), the answer read up to ``BODY_BYTES_MAX``."""
        async with self.slots:
            IN_FLIGHT.labels(self.operator_id).inc()
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self.wallet.timeout_ms / 1000):
                    http_status, body = await self._post(request)
            except (TimeoutError, httpx.TimeoutException):
                return Failure("timeout", True), None, time.perf_counter() - started
            except httpx.TransportError:
                return Failure("connection", True), None, time.perf_counter() - started
            except httpx.HTTPError as exc:  # e.g. a body that does not decode
                failure = Failure(f"answer: {type(exc).__name__}", retryable=False)
                return failure, None, time.perf_counter() - started
            finally:
                IN_FLIGHT.labels(self.operator_id).dec()
            seconds = time.perf_counter() - started
        return self.protocol.decode(call, http_status, body), http_status, seconds

    async def _post(self, request: HttpCall) -> tuple[int, bytes]:
        headers = dict(request.headers)
        async with self.http.stream(
            "POST", request.path, content=request.body, headers=headers
        ) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > BODY_BYTES_MAX:  # the protocol refuses it as too large
                    break
            return response.status_code, bytes(body)

    def _log_call(
        self, command: Command, outcome: Outcome, wire_status: str | None,
        http_status: int | None, seconds: float,
    ) -> None:  # fmt: skip
        fields = dict(
            operator_id=self.operator_id,
            correlation_id=command.correlation_id,
            command_id=command.command_id,
            player_id=command.player_id,
            kind=command.kind,
            amount=command.amount,
            currency=command.currency,
            status=outcome.status.value,
            wire_status=wire_status,
            http_status=http_status,
            attempts=outcome.attempts,
            latency_ms=round(seconds * 1000, 1),
            breaker=self.breaker.state.value,
        )
        if outcome.reason is None:
            log.event("wallet_call", **fields)
        else:
            log.warning("wallet_call", reason=outcome.reason, **fields)


class OperatorBridge:
    """One HTTP operator: its consumer group ``agg-bridge-<operator>``, its transport, its
    HTTP client, its breaker."""

    def __init__(self, service: BridgeService, operator: Operator):
        wallet = operator.wallet
        assert wallet.mode == "http" and wallet.url is not None
        self.service = service
        self.settings = service.settings
        self.operator_id = operator.id
        self.wallet = wallet
        names = service.names
        self.commands_topic = names.wallet_commands(operator.id)
        self.replies_topic = names.wallet_replies(operator.id)
        self.group_id = f"agg-bridge-{operator.id}"
        self.assigned = asyncio.Event()
        self.transport: Transport = make_transport(
            self.settings,
            group_id=self.group_id,
            client_id=f"{service.client_id}-{operator.id}",
            batch_max=self.settings.wallet_batch_count_max,
            instance_id=f"{service.instance_id}-{operator.id}" if service.instance_id else None,
        )
        self.caller = WalletCaller(operator.id, wallet, client_protocol(operator))
        self.lock = asyncio.Lock()
        self.finishing: deque[asyncio.Task[None]] = deque()
        self._next_lag = 0.0

    # --- the rebalance listener ----------------------------------------------------------------

    async def on_revoked(self, partitions: set[tuple[str, int]]) -> None:
        async with self.lock:
            await self._drain()
        log.event("partitions_revoked", operator_id=self.operator_id,
                  partitions=sorted(p for _, p in partitions))  # fmt: skip

    async def on_assigned(self, partitions: set[tuple[str, int]]) -> None:
        log.event("partitions_assigned", operator_id=self.operator_id,
                  partitions=sorted(p for _, p in partitions))  # fmt: skip
        if partitions:
            self.assigned.set()

    # --- the loop ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self.transport.start([self.commands_topic], self)
            log.event("bridge_consuming", operator_id=self.operator_id,
                      topic=self.commands_topic, group=self.group_id,
                      protocol=self.wallet.protocol, url=self.wallet.url,
                      client=self.settings.kafka_client)  # fmt: skip
            while not stop.is_set():
                await self._step()
            await self._drain()
        finally:
            try:
                for task in self.finishing:
                    task.cancel()
                await self.transport.stop()
            finally:
                await self.caller.close()
                log.event("bridge_stopped", operator_id=self.operator_id)

    async def _step(self) -> None:
        self._raise_failed()
        transport = self.transport
        records = await transport.poll(POLL_TIMEOUT_MS, self.settings.wallet_batch_count_max)
        if not records:
            return
        async with self.lock:
            batch = self._decode(records)
            outcomes = await self._call_all(batch)
            batch.sent.append(transport.send(self._replies(batch, outcomes)))
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
        if batch.sent:
            await asyncio.gather(*batch.sent)
        if previous is not None:
            await previous
        if not await self.transport.commit(batch.offsets):
            log.warning("commit_failed", operator_id=self.operator_id,
                        partitions=sorted(p for _, p in batch.offsets))  # fmt: skip
        BATCH_SECONDS.labels(self.operator_id).observe(time.perf_counter() - batch.started)

    def _forget_finished(self) -> None:
        while self.finishing and self.finishing[0].done():
            self.finishing.popleft().result()

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
            batch.offsets[(record.topic, record.partition)] = record.offset + 1
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
                DEAD_LETTERS.labels(self.operator_id, exc.reason).inc()
                dead = dead_letter_record(
                    self.service.names.dead_letters, record, str(exc), self.group_id
                )
                batch.sent.append(self.transport.send([dead]))
                continue
            batch.commands.append(command)
            batch.problems.append(problem_of(command, self.operator_id, record.key))
            batch.keys.append(record.key)
        return batch

    async def _call_all(self, batch: _Batch) -> list[Outcome]:
        return await self.caller.call_all(batch.commands, batch.problems, batch.keys)

    def _replies(self, batch: _Batch, outcomes: list[Outcome]) -> list[OutRecord]:
        encode = self.service.codec.encode
        replied_at = _now()
        replies = []
        for command, key, outcome in zip(batch.commands, batch.keys, outcomes, strict=True):
            REPLIES.labels(self.operator_id, command.kind, outcome.status.value).inc()
            value = encode(REPLY_RECORD, {
                "command_id": command.command_id,
                "operator_id": command.operator_id,
                "player_id": command.player_id,
                "status": outcome.status.value,
                "balance": outcome.balance,
                "currency": command.currency,
                "replied_at": replied_at,
                "correlation_id": command.correlation_id,
            })  # fmt: skip
            replies.append(OutRecord(self.replies_topic, key, value))
        return replies


def budget_problem(operator: Operator, wallet_timeout_ms: int) -> str | None:
    """Why ``operator``'s calls could outlast the saga's wait for the reply, or None."""
    budget = operator.wallet.call_budget_ms()
    if budget <= wallet_timeout_ms - BUDGET_MARGIN_MS:
        return None
    return (
        f"operator {operator.id}: timeout_ms x (retry_count_max + 1) plus the backoffs is "
        f"{budget} ms, more than the saga's wallet_timeout_ms ({wallet_timeout_ms}) minus "
        f"{BUDGET_MARGIN_MS} ms"
    )


def http_operators(tenants: Tenants, operator_ids: Iterable[str] | None) -> list[Operator]:
    """The operators to bridge: every one with an HTTP wallet, or those named."""
    found = [o for o in tenants.operators if o.wallet.mode == "http"]
    if operator_ids is None:
        return found
    wanted = set(operator_ids)
    known = {o.id for o in found}
    if wanted - known:
        raise ValueError(f"not HTTP-wallet operators of the tenants file: {sorted(wanted - known)}")
    return [o for o in found if o.id in wanted]


class BridgeService:
    """The HTTP wallet bridge for some operators of the tenants. Build it inside the running
    event loop, then ``await service.run(stop)``.

    It follows the tenants document (:mod:`agg_kafka.tenants_watch`): an operator that a new
    document gives an HTTP wallet starts being bridged, one that loses it (or leaves) is
    stopped after its current batch, and one whose wallet settings changed (URL, protocol,
    credentials, limits) is stopped and started again with them. A document whose call
    budgets do not fit the saga's wallet timeout is refused (the previous one stays)."""

    def __init__(
        self,
        settings: Settings,
        tenants: Tenants,
        operator_ids: Iterable[str] | None = None,
        *,
        client_id: str = "bridge",
        instance_id: str | None = None,
    ):
        self.settings = settings
        self.wanted_ids = None if operator_ids is None else frozenset(operator_ids)
        # the file's tenants must name every operator asked for; a later document may drop
        # one (its loop stops) without stopping the others
        chosen = http_operators(tenants, self.wanted_ids)
        if not chosen:
            raise ValueError("no operator with wallet mode 'http' to bridge")
        self.names = TopicNames(settings.topic_prefix)
        self.client_id = client_id
        self.instance_id = instance_id
        self.codec = AvroCodec()
        self.tenants = TenantsHolder("bridge", self.plan, tenants)
        """The operators to bridge, per tenants document."""
        self.bridges: dict[str, OperatorBridge] = {}
        """The running loop of each operator bridged now."""

    def plan(self, tenants: Tenants) -> dict[str, Operator]:
        """The operators ``tenants`` asks this bridge to serve; ValueError refuses them."""
        chosen = [o for o in tenants.operators if o.wallet.mode == "http"]
        if self.wanted_ids is not None:
            chosen = [o for o in chosen if o.id in self.wanted_ids]
        for operator in chosen:
            problem = budget_problem(operator, self.settings.wallet_timeout_ms)
            if problem is not None:
                raise ValueError(problem)
            client_protocol(operator)  # its keys load, or the document is refused
        return {o.id: o for o in chosen}

    @property
    def operator_ids(self) -> list[str]:
        return sorted(self.bridges)

    def ready(self) -> bool:
        return all(b.assigned.is_set() for b in self.bridges.values())

    def breakers(self) -> dict[str, str]:
        return {i: b.caller.breaker.state.value for i, b in self.bridges.items()}

    async def _bridge(self, operator_id: str, operator: Operator, stop: asyncio.Event) -> None:
        bridge = OperatorBridge(self, operator)
        self.bridges[operator_id] = bridge
        try:
            await bridge.run(stop)
        finally:
            if self.bridges.get(operator_id) is bridge:
                del self.bridges[operator_id]

    async def run(self, stop: asyncio.Event) -> None:
        watcher = TenantsWatcher(self.settings, self.tenants, client_id=f"{self.client_id}-config")
        await watcher.start()
        async with asyncio.TaskGroup() as group:
            loops: OperatorTasks[str, Operator] = OperatorTasks(group, self._bridge)

            def follow(
                old: Applied[dict[str, Operator]], new: Applied[dict[str, Operator]]
            ) -> None:
                started, stopped = loops.reconcile(new.view)
                log.event("bridge_operators_changed", sequence=new.document.sequence,
                          started=started, stopped=stopped, operators=sorted(new.view))  # fmt: skip

            loops.reconcile(self.tenants.view)
            self.tenants.listeners.append(follow)
            log.event("bridge_started", operators=sorted(self.tenants.view))
            group.create_task(watcher.follow(stop))
            await stop.wait()
            loops.stop_all()
