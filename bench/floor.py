"""The benchmark's floor: the pipeline's HTTP front and its four Kafka hops, with no work.

    python -m bench.floor saga               # requests -> commands, replies -> outcomes
    python -m bench.floor wallet             # commands -> replies
    python -m bench.floor front --port 8090  # POST /v1/providers/{provider}/wallet/{action}

A callback's raw body goes from the front to ``bench.floor.requests``; the ``saga`` relay copies
it to ``bench.floor.commands``, the ``wallet`` relay copies that to ``bench.floor.replies``, the
``saga`` relay copies the reply to ``bench.floor.outcomes`` at the partition the front named in
the ``reply_partition`` header, and the front answers the callback whose ``corr`` header it
carries. No Avro, no Postgres, no decisions: what is left is what the pipeline cannot go below
on the same broker. Everything else is production's: uvicorn on uvloop with httptools, the
clients of :mod:`agg_kafka.clients` (acks=all, idempotence, linger, read_committed), keys from
:func:`~agg_kafka.clients.player_key`, the saga's range assignor and batch size, the outcome
wait of the ingress, and the relays' batch order (publish, await every ack, commit offsets).

Like one ingress instance, the front reads every partition of ``bench.floor.outcomes`` from its
end and names the lowest one as its reply partition. It answers ``200 {"status": "OK"}`` only
when the outcome is byte for byte the body it published, ``503 RETRY_LATER`` when none came in
time; ``GET /healthz`` is 200 once its producer and outcome consumer run. A relay logs
``{"event":"partitions_assigned",...}`` once its consumer has its assignment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agg_config.settings import Settings, load_settings
from agg_kafka.admin import ensure_topics, topic_partitions
from agg_kafka.clients import make_consumer, make_producer, player_key
from agg_kafka.topics import DAY_MS, TopicSpec
from agg_obs.logs import configure_logging, get_logger

REQUESTS = "bench.floor.requests"
COMMANDS = "bench.floor.commands"
REPLIES = "bench.floor.replies"
OUTCOMES = "bench.floor.outcomes"
POLL_TIMEOUT_MS = 200
"""Longest wait of a relay's poll; bounds how late a stop is noticed."""

log = get_logger("bench-floor")

Record: TypeAlias = ConsumerRecord[bytes, bytes]
Destination: TypeAlias = Callable[[Record], tuple[str, int | None]]
"""Where a relay sends a record: topic, and partition (None: by key, like the input's)."""


async def ensure(
    settings: Settings, names: tuple[str, ...] = (REQUESTS, COMMANDS, REPLIES, OUTCOMES)
) -> None:
    """The floor's topics, shaped like the catalogue's (same partition count and replication)."""
    configs = {
        "min.insync.replicas": str(settings.min_insync_replicas),
        "cleanup.policy": "delete",
        "retention.ms": str(DAY_MS),
    }
    specs = [
        TopicSpec(name, settings.partition_count, settings.replication_factor, configs)
        for name in names
    ]
    report = await ensure_topics(settings.kafka_bootstrap, specs, settings.admin_timeout_ms)
    if not report.ok:
        log.warning("topics_differ", differences=report.differences)
    log.event("topics_ensured", created=report.created, unchanged=report.unchanged)


def player_of(body: bytes) -> tuple[dict[str, Any], str] | None:
    """The callback's document and its player, or None when the body is not such an object:
    the one check the fronts make (answered ``400 INVALID_REQUEST``)."""
    try:
        doc = json.loads(body)
        player_id = doc["player_id"]
    except (ValueError, KeyError, TypeError):
        return None
    return (doc, player_id) if isinstance(player_id, str) else None


def header(record: Record, name: str) -> bytes | None:
    return next((value for key, value in record.headers if key == name), None)


# --- the relays (saga, wallet) --------------------------------------------------------------


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, role: str):
        self.role = role

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked:
            log.event("partitions_revoked", role=self.role,
                      partitions=sorted({tp.partition for tp in revoked}))  # fmt: skip

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.event("partitions_assigned", role=self.role,
                  partitions=sorted({tp.partition for tp in assigned}))  # fmt: skip


def saga_destination(record: Record) -> tuple[str, int | None]:
    if record.topic == REQUESTS:
        return COMMANDS, None
    partition = header(record, "reply_partition")
    if partition is None:
        raise ValueError(f"reply {record.partition}/{record.offset} names no reply_partition")
    return OUTCOMES, int(partition)


async def relay(
    settings: Settings,
    role: str,
    inputs: list[str],
    destination: Destination,
    stop: asyncio.Event,
    **consumer_overrides: Any,
) -> None:
    """Per batch: send every record on, await every acknowledgement, then commit the offsets."""
    group_id = f"bench-floor-{role}"
    producer = make_producer(settings, client_id=f"floor-{role}-producer")
    consumer = make_consumer(
        settings, group_id=group_id, client_id=f"floor-{role}", **consumer_overrides
    )
    await producer.start()
    try:
        await consumer.start()
        try:
            consumer.subscribe(inputs, listener=_Listener(role))
            log.event("relay_started", role=role, inputs=inputs, group=group_id)
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
                futures = []
                offsets: dict[TopicPartition, int] = {}
                for tp, records in batch.items():
                    for record in records:
                        topic, partition = destination(record)
                        futures.append(
                            await producer.send(topic, record.value, key=record.key,
                                                partition=partition, headers=list(record.headers))
                        )  # fmt: skip
                    offsets[tp] = records[-1].offset + 1
                if not offsets:
                    continue
                await asyncio.gather(*futures)
                try:
                    await consumer.commit(offsets)
                except (CommitFailedError, IllegalStateError) as exc:
                    # partitions moved during the batch: the new owner relays it again
                    log.warning("commit_failed", role=role, error=str(exc))
        finally:
            await consumer.stop()
    finally:
        await producer.stop()
        log.event("relay_stopped", role=role)


async def run_relay(settings: Settings, role: str) -> None:
    await ensure(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if role == "saga":
        await relay(settings, role, [REQUESTS, REPLIES], saga_destination, stop,
                    partition_assignment_strategy=(RangePartitionAssignor,),
                    max_poll_records=settings.saga_batch_count_max)  # fmt: skip
    else:
        await relay(settings, role, [COMMANDS], lambda _: (REPLIES, None), stop,
                    max_poll_records=settings.wallet_batch_count_max)  # fmt: skip


# --- the front ------------------------------------------------------------------------------


class Front:
    """One idempotent producer, one outcome consumer of every partition, the waiting callbacks."""

    producer: AIOKafkaProducer
    consumer: AIOKafkaConsumer
    """Made by :meth:`start`: aiokafka clients belong to the running loop."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.waiting: dict[str, asyncio.Future[bytes]] = {}
        self.reply_partition = b"0"
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        await ensure(self.settings)
        self.producer = make_producer(self.settings, client_id="floor-front-producer")
        self.consumer = make_consumer(self.settings, group_id=None, client_id="floor-front")
        await self.producer.start()
        partitions = await topic_partitions(self.settings.kafka_bootstrap, OUTCOMES)
        tps = [TopicPartition(OUTCOMES, p) for p in partitions]
        await self.consumer.start()
        self.consumer.assign(tps)
        # from the end, resolved before the first request names a partition
        await self.consumer.seek_to_end(*tps)
        for tp in tps:
            await self.consumer.position(tp)
        self.reply_partition = str(partitions[0]).encode()
        self._task = asyncio.create_task(self._consume(), name="floor-outcomes")
        log.event("front_started", outcome_partitions=partitions,
                  reply_partition=partitions[0])  # fmt: skip

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.consumer.stop()
        await self.producer.stop()
        for fut in self.waiting.values():
            fut.cancel()
        self.waiting.clear()
        log.event("front_stopped")

    async def _consume(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=1_000)
            for records in batch.values():
                for record in records:
                    corr = header(record, "corr")
                    fut = self.waiting.pop(corr.decode(), None) if corr else None
                    if fut is not None and not fut.done():
                        fut.set_result(record.value or b"")

    async def callback(self, request: Request) -> JSONResponse:
        if not self.ready or len(self.waiting) >= self.settings.ingress_pending_count_max:
            return JSONResponse({"status": "RETRY_LATER"}, 503)
        body = await request.body()
        parsed = player_of(body)
        if parsed is None:
            return JSONResponse({"status": "INVALID_REQUEST"}, 400)
        doc, player_id = parsed
        corr = uuid.uuid4().hex
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.waiting[corr] = fut
        key = player_key(request.path_params["provider"], player_id)
        headers = [("corr", corr.encode()), ("reply_partition", self.reply_partition)]
        try:
            async with asyncio.timeout(self.settings.ingress_outcome_wait_ms / 1000):
                await self.producer.send_and_wait(REQUESTS, body, key=key, headers=headers)
                outcome = await fut
        except (TimeoutError, KafkaError):
            return JSONResponse({"status": "RETRY_LATER", "corr": corr}, 503)
        finally:
            self.waiting.pop(corr, None)
        if outcome != body:
            log.error("outcome_mismatch", corr=corr)
            return JSONResponse({"status": "MISMATCH", "corr": corr}, 500)
        return JSONResponse({"status": "OK", "corr": corr, "request_id": doc.get("request_id")})

    async def healthz(self, request: Request) -> JSONResponse:
        ok = self.ready
        return JSONResponse({"status": "ok" if ok else "unavailable"}, 200 if ok else 503)


def build_app(settings: Settings) -> Starlette:
    """The front's ASGI app; its Kafka clients start and stop with the app's lifespan."""
    return front_app(Front(settings))


def front_app(front: Any) -> Starlette:
    """The ASGI app of a front (this one's or the physical floor's: ``start``, ``stop``,
    ``callback``, ``healthz``); its clients start and stop with the app's lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await front.start()
        try:
            yield
        finally:
            await front.stop()

    routes = [
        Route("/v1/providers/{provider}/wallet/{action}", front.callback, methods=["POST"]),
        Route("/healthz", front.healthz, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.floor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    roles = parser.add_subparsers(dest="role", required=True)
    front = roles.add_parser("front", help="the HTTP front (ingress without the work)")
    front.add_argument("--port", type=int, required=True)
    front.add_argument("--host", default="127.0.0.1")
    roles.add_parser("saga", help="relay requests to commands and replies to outcomes")
    roles.add_parser("wallet", help="relay commands to replies")
    args = parser.parse_args(argv)
    configure_logging()
    settings = load_settings()
    if args.role != "front":
        asyncio.run(run_relay(settings, args.role))
        return 0
    import uvicorn

    uvicorn.run(build_app(settings), host=args.host, port=args.port, loop="uvloop",
                http="httptools", workers=1, lifespan="on", access_log=False,
                log_level="warning")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
