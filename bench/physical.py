"""The benchmark's physical floor: the pipeline's HTTP front and its four Kafka hops, with relays
that do no work, written as tightly as librdkafka (``confluent-kafka``) allows.

    python -m bench.physical saga               # requests -> commands, replies -> outcomes
    python -m bench.physical wallet             # commands -> replies
    python -m bench.physical front --port 8093  # POST /v1/providers/{provider}/wallet/{action}

The hops are those of :mod:`bench.floor` (the relay floor) on topics of their own:
``bench.physical.requests`` -> ``saga`` relay -> ``bench.physical.commands`` -> ``wallet``
relay -> ``bench.physical.replies`` -> ``saga`` relay -> ``bench.physical.outcomes`` at the
partition the front named in the ``reply_partition`` header, and the front answers the callback
whose ``corr`` header the outcome carries. Where the relay floor keeps production's batch
protocol (publish a batch, await every acknowledgement, commit, fetch again) on aiokafka, this
one shows what the same broker and the same guarantees cost when nothing waits that need not:

- Same correctness settings as production: producers ``acks=all`` with idempotence; consumers
  ``isolation.level=read_committed`` without auto-commit; the same keys (``player_key``), placed
  by the Java client's murmur2 partitioner (librdkafka's default would place them elsewhere), on
  topics with the pipeline's partition count and replication; the saga relay uses the range
  assignor like the saga worker. An input offset is committed only once everything produced
  from it and before it has been acknowledged (at least once, as in production).
- The relay is one thread: ``poll(timeout)`` for the first message, then ``consume(N,
  timeout=0)`` for what is already fetched (never ``consume(N, timeout>0)``, which waits for
  N), every message produced at once, then ``poll(0)`` on the producer to serve the delivery
  reports, which count a batch's acknowledgements down. Completed batches, in order, give the
  offsets that an asynchronous commit sends at most every ``COMMIT_INTERVAL_S``: no fetch ever
  waits for an acknowledgement or a commit.
- ``linger.ms`` is 0 (``--linger-ms``; librdkafka takes fractions): measured on the 2-core
  machine at 100/s, p50 4.3 ms with 0 against 9.0 ms with production's 1 ms (a linger per hop,
  four hops), at 500/s 8.1 against 12.4 ms, for the same CPU per callback; librdkafka still
  batches what gathers while a request is in flight. ``socket.nagle.disable`` is on:
  librdkafka leaves Nagle's algorithm on by default, which holds small requests back on a
  loopback socket until the previous one is acknowledged.
- The front is the relay floor's: uvicorn on uvloop with httptools, the same endpoint, the
  same body check (:func:`bench.floor.player_of`), the same pending bound and outcome wait,
  the same answers. Its producer produces on the event loop's thread (``produce`` only queues)
  and reports failed deliveries only (``delivery.report.only.error``); one thread polls the
  outcome consumer the same way as a relay and hands each batch to the loop with ONE
  ``call_soon_threadsafe``, and failed deliveries likewise, one hand-off per poll. That
  thread needs the interpreter lock for a moment per batch while the loop thread, busy with
  HTTP, holds it; Python makes a waiting thread wait up to its switch interval (5 ms), so the
  front sets 0.5 ms (``--switch-interval-ms``): measured on the shared 2-core machine (load
  average 3-7 from other work, two runs each), p99 at
  100/s 16-26 ms against 43-64 ms, at 500/s 97-169 against 230-1549 ms. It reads
  every partition of ``bench.physical.outcomes`` from its end (the offsets are read before
  ``GET /healthz`` is 200) and names the lowest one as its reply partition.

A relay logs ``{"event":"partitions_assigned",...}`` once its consumer has its assignment.
Not production code: no dead letters, a failed delivery stops a relay (its batch is not
committed, so a restart relays it again).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, TypeAlias

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

from agg_config.settings import Settings, load_settings
from agg_kafka.clients import player_key
from agg_obs.logs import configure_logging, get_logger
from bench.floor import ensure, front_app, player_of

REQUESTS = "bench.physical.requests"
COMMANDS = "bench.physical.commands"
REPLIES = "bench.physical.replies"
OUTCOMES = "bench.physical.outcomes"
TOPICS = (REQUESTS, COMMANDS, REPLIES, OUTCOMES)
POLL_TIMEOUT_S = 0.1
"""Longest wait for a first message; bounds how late a stop is noticed when idle."""
COMMIT_INTERVAL_S = 0.1
"""Offsets of acknowledged batches are committed (asynchronously) at most this often."""
LINGER_MS = 0.0
"""The producers' linger.ms unless ``--linger-ms`` says otherwise (see above)."""
SWITCH_INTERVAL_MS = 0.5
"""The front's thread switch interval (``sys.setswitchinterval``), see above."""
BATCH_COUNT_MAX = 500
"""Messages taken by one ``consume`` after the first: the saga's and the wallet's batch size."""

log = get_logger("bench-physical")

Destination: TypeAlias = Callable[[Message], tuple[str, int]]
"""Where a relay sends a message: topic, and partition (-1: by key, like the input's)."""


def producer_config(
    settings: Settings, client_id: str, linger_ms: float, **extra: Any
) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "client.id": client_id,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": linger_ms,
        "request.timeout.ms": settings.producer_request_timeout_ms,
        "partitioner": "murmur2_random",
        "socket.nagle.disable": True,
        **extra,
    }


def consumer_config(settings: Settings, client_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "client.id": client_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": settings.consumer_session_timeout_ms,
        "socket.nagle.disable": True,
        **extra,
    }


def header(message: Message, name: str) -> bytes | None:
    headers = message.headers()  # a consumed message's are a list of (name, bytes)
    if isinstance(headers, list):
        for key, value in headers:
            if key == name:
                return value.encode() if isinstance(value, str) else value
    return None


# --- the relays (saga, wallet) --------------------------------------------------------------


class _Batch:
    """One ``consume``'s messages: acknowledgements still due, and the offsets to commit."""

    __slots__ = ("error", "offsets", "remaining")

    def __init__(self) -> None:
        self.remaining = 0
        self.offsets: dict[tuple[str, int], int] = {}
        self.error: KafkaError | None = None

    def acknowledged(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.error = error
        self.remaining -= 1


def saga_destination(message: Message) -> tuple[str, int]:
    if message.topic() == REQUESTS:
        return COMMANDS, -1
    partition = header(message, "reply_partition")
    if partition is None:
        raise ValueError(f"reply {message.partition()}/{message.offset()} names no reply_partition")
    return OUTCOMES, int(partition)


def wallet_destination(message: Message) -> tuple[str, int]:
    return REPLIES, -1


def relay(
    settings: Settings,
    role: str,
    inputs: list[str],
    destination: Destination,
    stop: threading.Event,
    linger_ms: float = LINGER_MS,
    **consumer_extra: Any,
) -> None:
    """Consume, produce every message on at once, count acknowledgements down, commit later."""
    group_id = f"bench-physical-{role}"
    producer = Producer(producer_config(settings, f"physical-{role}-producer", linger_ms))
    consumer = Consumer(
        consumer_config(settings, f"physical-{role}", **{"group.id": group_id, **consumer_extra})
    )

    def assigned(_: Consumer, partitions: list[TopicPartition]) -> None:
        log.event("partitions_assigned", role=role,
                  partitions=sorted({tp.partition for tp in partitions}))  # fmt: skip

    def revoked(_: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions:
            log.event("partitions_revoked", role=role,
                      partitions=sorted({tp.partition for tp in partitions}))  # fmt: skip

    consumer.subscribe(inputs, on_assign=assigned, on_revoke=revoked)
    log.event("relay_started", role=role, inputs=inputs, group=group_id)
    pending: deque[_Batch] = deque()
    done: dict[tuple[str, int], int] = {}
    committed_at = time.monotonic()
    produce, poll = producer.produce, producer.poll

    def settle() -> None:
        while pending and pending[0].remaining == 0:
            batch = pending.popleft()
            if batch.error is not None:
                raise KafkaException(batch.error)
            done.update(batch.offsets)

    def commit(asynchronous: bool) -> None:
        if done:
            offsets = [TopicPartition(t, p, o) for (t, p), o in done.items()]
            done.clear()
            with contextlib.suppress(KafkaException):  # partitions moved: the new owner relays
                if asynchronous:
                    consumer.commit(offsets=offsets, asynchronous=True)
                else:
                    consumer.commit(offsets=offsets, asynchronous=False)

    try:
        while not stop.is_set():
            first = consumer.poll(POLL_TIMEOUT_S)
            if first is not None:
                batch = _Batch()
                for message in (first, *consumer.consume(BATCH_COUNT_MAX, timeout=0)):
                    if message.error() is not None:
                        log.warning("consume_error", role=role, error=str(message.error()))
                        continue
                    topic, partition = destination(message)
                    produce(topic, message.value(), message.key(), partition,
                            on_delivery=batch.acknowledged,
                            headers=message.headers())  # fmt: skip
                    batch.remaining += 1
                    where = (message.topic() or "", message.partition() or 0)
                    batch.offsets[where] = (message.offset() or 0) + 1
                pending.append(batch)
            poll(0)
            settle()
            now = time.monotonic()
            if done and now - committed_at >= COMMIT_INTERVAL_S:
                commit(asynchronous=True)
                committed_at = now
    finally:
        producer.flush(10)
        with contextlib.suppress(KafkaException):
            settle()
        commit(asynchronous=False)
        consumer.close()
        log.event("relay_stopped", role=role)


def run_relay(settings: Settings, role: str, linger_ms: float = LINGER_MS) -> None:
    asyncio.run(ensure(settings, TOPICS))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if role == "saga":
        relay(settings, role, [REQUESTS, REPLIES], saga_destination, stop, linger_ms,
              **{"partition.assignment.strategy": "range"})  # fmt: skip
    else:
        relay(settings, role, [COMMANDS], wallet_destination, stop, linger_ms)


# --- the front ------------------------------------------------------------------------------


class Front:
    """One idempotent producer, one outcome consumer of every partition and its polling thread,
    the waiting callbacks."""

    producer: Producer
    consumer: Consumer
    """Made by :meth:`start`."""

    def __init__(self, settings: Settings, linger_ms: float = LINGER_MS):
        self.settings = settings
        self.linger_ms = linger_ms
        self.waiting: dict[bytes, asyncio.Future[bytes]] = {}
        self.reply_partition = b"0"
        self._failed: list[bytes] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def start(self) -> None:
        await ensure(self.settings, TOPICS)
        self.loop = asyncio.get_running_loop()
        self.producer = Producer(
            producer_config(
                self.settings,
                "physical-front-producer",
                self.linger_ms,
                **{"delivery.report.only.error": True, "on_delivery": self._delivery_failed},
            )
        )
        self.consumer = Consumer(
            consumer_config(self.settings, "physical-front", **{"group.id": "bench-physical-front"})
        )
        await asyncio.to_thread(self._assign)
        self._thread = threading.Thread(target=self._poll, name="physical-outcomes", daemon=True)
        self._thread.start()

    def _assign(self) -> None:
        """Every outcome partition from its current end, read now: an outcome of a request
        published after ``start`` cannot be missed."""
        topic = self.consumer.list_topics(OUTCOMES, timeout=30).topics[OUTCOMES]
        partitions = sorted(topic.partitions)
        tps = [TopicPartition(OUTCOMES, p, self._end_of(p)) for p in partitions]
        self.consumer.assign(tps)
        self.reply_partition = str(partitions[0]).encode()
        log.event("front_started", outcome_partitions=partitions,
                  reply_partition=partitions[0])  # fmt: skip

    def _end_of(self, partition: int, timeout_s: float = 30) -> int:
        """The partition's end; a topic just created has no leader for a moment."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                _, high = self.consumer.get_watermark_offsets(
                    TopicPartition(OUTCOMES, partition), timeout=timeout_s
                )
                return int(high)
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _delivery_failed(self, error: KafkaError | None, message: Message) -> None:
        corr = header(message, "corr")
        if error is not None and corr is not None:
            self._failed.append(corr)

    def _poll(self) -> None:
        """The outcome consumer's thread: one hand-off to the loop per batch of outcomes."""
        poll, consume = self.consumer.poll, self.consumer.consume
        hand_off = self.loop.call_soon_threadsafe
        while not self._stop.is_set():
            first = poll(POLL_TIMEOUT_S)
            if first is not None:
                outcomes = []
                for message in (first, *consume(BATCH_COUNT_MAX, timeout=0)):
                    if message.error() is None:
                        corr = header(message, "corr")
                        if corr is not None:
                            outcomes.append((corr, message.value() or b""))
                if outcomes:
                    hand_off(self._answer, outcomes)
            self.producer.poll(0)
            if self._failed:
                failed, self._failed = self._failed, []
                hand_off(self._fail, failed)

    def _answer(self, outcomes: list[tuple[bytes, bytes]]) -> None:
        waiting = self.waiting
        for corr, value in outcomes:
            fut = waiting.pop(corr, None)
            if fut is not None and not fut.done():
                fut.set_result(value)

    def _fail(self, corrs: list[bytes]) -> None:
        for corr in corrs:
            fut = self.waiting.pop(corr, None)
            if fut is not None and not fut.done():
                fut.set_exception(KafkaException("delivery failed"))

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        await asyncio.to_thread(self.producer.flush, 10)
        await asyncio.to_thread(self.consumer.close)
        for fut in self.waiting.values():
            fut.cancel()
        self.waiting.clear()
        log.event("front_stopped")

    async def callback(self, request: Request) -> JSONResponse:
        if not self.ready or len(self.waiting) >= self.settings.ingress_pending_count_max:
            return JSONResponse({"status": "RETRY_LATER"}, 503)
        body = await request.body()
        parsed = player_of(body)
        if parsed is None:
            return JSONResponse({"status": "INVALID_REQUEST"}, 400)
        doc, player_id = parsed
        corr = uuid.uuid4().hex
        corr_bytes = corr.encode()
        fut: asyncio.Future[bytes] = self.loop.create_future()
        self.waiting[corr_bytes] = fut
        key = player_key(request.path_params["provider"], player_id)
        headers: list[tuple[str, str | bytes | None]] = [
            ("corr", corr_bytes),
            ("reply_partition", self.reply_partition),
        ]
        try:
            self.producer.produce(REQUESTS, body, key, headers=headers)
            async with asyncio.timeout(self.settings.ingress_outcome_wait_ms / 1000):
                outcome = await fut
        except (TimeoutError, KafkaException, BufferError):
            return JSONResponse({"status": "RETRY_LATER", "corr": corr}, 503)
        finally:
            self.waiting.pop(corr_bytes, None)
        if outcome != body:
            log.error("outcome_mismatch", corr=corr)
            return JSONResponse({"status": "MISMATCH", "corr": corr}, 500)
        return JSONResponse({"status": "OK", "corr": corr, "request_id": doc.get("request_id")})

    async def healthz(self, request: Request) -> JSONResponse:
        ok = self.ready
        return JSONResponse({"status": "ok" if ok else "unavailable"}, 200 if ok else 503)


def build_app(settings: Settings, linger_ms: float = LINGER_MS) -> Starlette:
    """The front's ASGI app; its Kafka clients start and stop with the app's lifespan."""
    return front_app(Front(settings, linger_ms))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.physical",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    roles = parser.add_subparsers(dest="role", required=True)
    front = roles.add_parser("front", help="the HTTP front (the relay floor's)")
    front.add_argument("--port", type=int, required=True)
    front.add_argument("--host", default="127.0.0.1")
    front.add_argument(
        "--switch-interval-ms",
        type=float,
        default=SWITCH_INTERVAL_MS,
        help="the interpreter's thread switch interval (0: Python's own, 5 ms)",
    )
    saga = roles.add_parser("saga", help="relay requests to commands and replies to outcomes")
    wallet = roles.add_parser("wallet", help="relay commands to replies")
    for role in (front, saga, wallet):
        role.add_argument("--linger-ms", type=float, default=LINGER_MS, help="producer linger")
    args = parser.parse_args(argv)
    configure_logging()
    settings = load_settings()
    if args.role != "front":
        run_relay(settings, args.role, args.linger_ms)
        return 0
    import uvicorn

    if args.switch_interval_ms:
        sys.setswitchinterval(args.switch_interval_ms / 1000)
    uvicorn.run(build_app(settings, args.linger_ms), host=args.host, port=args.port, loop="uvloop",
                http="httptools", workers=1, lifespan="on", access_log=False,
                log_level="warning")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
