"""A Kafka-native operator wallet on the plain aiokafka client and PostgreSQL.

    python plain_wallet.py --operator op-alpha --bootstrap 127.0.0.1:9092 \\
        --database-url postgresql://... [--starting-balance 100000]

The loop, per batch of commands (one ``getmany``, at most ``--batch-max`` records):

1. decode every message (:func:`agg_operator_sdk.decode_command`); one that cannot be decoded
   is logged with its offset (``undecodable``) and skipped: it has no command id to answer;
2. apply the batch in ONE PostgreSQL transaction (:meth:`Ledger.handle_batch`), deduplicated
   by command id; a lost race rolls back and runs again (bounded);
3. send every reply, with the command's key, to the partition the command came from (the
   topics are co-partitioned, so that is the partition the aggregator reads for the player),
   and wait until the broker has acknowledged every one (``acks=all``, idempotent producer);
4. commit the batch's offsets.

A crash before 2 commits leaves nothing; a crash after it re-reads the batch, finds every
command in the ledger and sends the same replies again. Delivery is at-least-once, the
effect exactly-once. Any other failure (PostgreSQL or Kafka down) raises out of the loop
before the offsets are committed and the process exits non-zero; restarted, it resumes from
the last commit. SIGTERM finishes the current batch, commits it and exits 0.

Settings are flags with environment defaults (``OPERATOR_ID``, ``KAFKA_BOOTSTRAP``,
``DATABASE_URL``, ...; ``--help`` lists them). Metrics on ``--metrics-port`` (Prometheus),
one JSON log line per batch and per refused command on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import Counter as Tally
from collections.abc import Sequence
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from prometheus_client import Counter, Histogram, start_http_server

from agg_operator_sdk import DecodeError, WalletCommand, decode_command, encode_reply
from agg_operator_sdk.ledger import Handled, Ledger, Resolution, is_retryable
from agg_operator_sdk.logs import JsonLog

ATTEMPT_COUNT_MAX = 5
"""Transactions of one batch before giving up: a retry only follows a lost race."""

log = JsonLog("plain_wallet")

COMMANDS = Counter("operator_wallet_commands_total", "Commands answered",
                   ["operator", "kind", "status", "resolution"])  # fmt: skip
UNDECODABLE = Counter("operator_wallet_undecodable_total", "Messages skipped", ["operator"])
RETRIES = Counter("operator_wallet_batch_retries_total", "Batch transactions re-run", ["operator"])
BATCH_SECONDS = Histogram("operator_wallet_batch_seconds", "Poll to commit", ["operator"])


def arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Each flag's default comes from the environment: "
        "OPERATOR_ID, KAFKA_BOOTSTRAP, DATABASE_URL, TOPIC_PREFIX, GROUP_ID, "
        "LEDGER_SCHEMA, STARTING_BALANCE, BATCH_MAX, METRICS_PORT, "
        "REPLY_DELAY_MS.",
    )
    p.add_argument("--operator", default=env("OPERATOR_ID"), required=not env("OPERATOR_ID"))
    p.add_argument("--bootstrap", default=env("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    p.add_argument("--database-url", default=env("DATABASE_URL"), required=not env("DATABASE_URL"))
    p.add_argument("--topic-prefix", default=env("TOPIC_PREFIX", "agg"))
    p.add_argument("--group-id", default=env("GROUP_ID"),
                   help="default operator-wallet-<operator>")  # fmt: skip
    p.add_argument("--schema", default=env("LEDGER_SCHEMA", "operator_wallet"))
    p.add_argument("--starting-balance", type=int, default=_int(env("STARTING_BALANCE")),
                   help="open unknown players at this balance (else UNKNOWN_PLAYER)")  # fmt: skip
    p.add_argument("--batch-max", type=int, default=int(env("BATCH_MAX", "200")),
                   help="records per batch (one transaction): bounds memory, latency")  # fmt: skip
    p.add_argument("--metrics-port", type=int, default=int(env("METRICS_PORT", "0")),
                   help="Prometheus metrics on 127.0.0.1:PORT (0: none)")  # fmt: skip
    p.add_argument("--reply-delay-ms", type=int, default=int(env("REPLY_DELAY_MS", "0")),
                   help="test switch: wait between database commit and replies")  # fmt: skip
    args = p.parse_args(argv)
    if not 1 <= args.batch_max <= 10_000:
        p.error("--batch-max must be 1..10000")
    if not 0 <= args.reply_delay_ms <= 60_000:
        p.error("--reply-delay-ms must be 0..60000")
    return args


def _int(value: str | None) -> int | None:
    return None if value in (None, "") else int(value)


class PlainWallet:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.operator_id: str = args.operator
        self.commands_topic = f"{args.topic_prefix}.wallet.commands.{self.operator_id}"
        self.replies_topic = f"{args.topic_prefix}.wallet.replies.{self.operator_id}"
        self.group_id: str = args.group_id or f"operator-wallet-{self.operator_id}"
        self.ledger = Ledger(self.operator_id, schema=args.schema,
                             starting_balance=args.starting_balance)  # fmt: skip

    async def run(self, stop: asyncio.Event) -> None:
        conn = await psycopg.AsyncConnection.connect(
            self.args.database_url, autocommit=True, application_name=self.group_id
        )
        consumer = AIOKafkaConsumer(
            self.commands_topic,
            bootstrap_servers=self.args.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,  # committed by hand, after the replies are acknowledged
            auto_offset_reset="earliest",  # a new group answers every command on the topic
            max_poll_records=self.args.batch_max,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self.args.bootstrap, acks="all", enable_idempotence=True
        )
        try:
            await self.ledger.ensure_schema(conn)
            await producer.start()
            await consumer.start()
            log.event("wallet_consuming", operator_id=self.operator_id,
                      topic=self.commands_topic, group=self.group_id)  # fmt: skip
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=self.args.batch_max)
                for tp, records in batches.items():
                    await self._batch(conn, consumer, producer, tp, records)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
            with contextlib.suppress(Exception):
                await producer.stop()
            await conn.close()
            log.event("wallet_stopped", operator_id=self.operator_id)

    async def _batch(
        self,
        conn: psycopg.AsyncConnection[Any],
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        tp: TopicPartition,
        records: list[ConsumerRecord[bytes, bytes]],
    ) -> None:
        started = time.perf_counter()
        items: list[tuple[WalletCommand, bytes | None]] = []
        sources: list[ConsumerRecord[bytes, bytes]] = []
        for record in records:
            try:
                if record.value is None:
                    raise DecodeError("no_value", "message without a value")
                items.append((decode_command(record.value), record.key))
                sources.append(record)
            except DecodeError as exc:
                UNDECODABLE.labels(self.operator_id).inc()
                log.error("undecodable", operator_id=self.operator_id, topic=tp.topic,
                          partition=tp.partition, offset=record.offset,
                          reason=str(exc))  # fmt: skip
        handled = await self._apply(conn, items) if items else []
        log.event("batch_applied", operator_id=self.operator_id, partition=tp.partition,
                  commands=len(handled), end_offset=records[-1].offset + 1,
                  resolutions=dict(Tally(h.resolution.value for h in handled)))  # fmt: skip
        if self.args.reply_delay_ms:
            await asyncio.sleep(self.args.reply_delay_ms / 1000)
        acks = [
            await producer.send(
                self.replies_topic,
                encode_reply(h.reply),
                key=source.key,
                partition=source.partition,
            )
            for h, source in zip(handled, sources, strict=True)
        ]
        await asyncio.gather(*acks)
        for h in handled:
            self._observe(h)
        try:
            await consumer.commit({tp: records[-1].offset + 1})
        except (CommitFailedError, IllegalStateError) as exc:
            # the partition moved during the batch: its new owner reads these commands again,
            # finds them in the ledger and sends the same replies
            log.warning("commit_failed", operator_id=self.operator_id,
                        partition=tp.partition, reason=str(exc))  # fmt: skip
        BATCH_SECONDS.labels(self.operator_id).observe(time.perf_counter() - started)

    async def _apply(
        self,
        conn: psycopg.AsyncConnection[Any],
        items: list[tuple[WalletCommand, bytes | None]],
    ) -> list[Handled]:
        for attempt in range(1, ATTEMPT_COUNT_MAX + 1):
            try:
                async with conn.transaction():
                    return await self.ledger.handle_batch(conn, items)
            except psycopg.Error as exc:
                if not is_retryable(exc) or attempt == ATTEMPT_COUNT_MAX:
                    raise
                RETRIES.labels(self.operator_id).inc()
        raise AssertionError("unreachable")

    def _observe(self, h: Handled) -> None:
        c, reply = h.command, h.reply
        COMMANDS.labels(self.operator_id, c.kind.value, reply.status.value,
                        h.resolution.value).inc()  # fmt: skip
        if h.resolution in (Resolution.FOREIGN, Resolution.CONFLICT):
            log.error("command_id_refused", operator_id=self.operator_id,
                      correlation_id=c.correlation_id, command_id=c.command_id,
                      player_id=c.player_id, resolution=h.resolution.value,
                      reason=h.reason)  # fmt: skip
        elif reply.status.value != "OK" and h.resolution is Resolution.APPLIED:
            log.warning("command_refused", operator_id=self.operator_id,
                        correlation_id=c.correlation_id, command_id=c.command_id,
                        player_id=c.player_id, kind=c.kind.value, amount=c.amount,
                        status=reply.status.value, reason=h.reason)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = arguments(argv)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr="127.0.0.1")

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await PlainWallet(args).run(stop)

    try:
        asyncio.run(serve())
    except Exception as exc:
        log.error("wallet_failed", operator_id=args.operator, reason=f"{type(exc).__name__}: {exc}")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
