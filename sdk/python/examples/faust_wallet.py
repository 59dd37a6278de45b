"""A Kafka-native operator wallet as a faust-streaming agent, with PostgreSQL.

    python faust_wallet.py --operator op-alpha --bootstrap 127.0.0.1:9092 \\
        --database-url postgresql://... [--starting-balance 100000]

Per command, in the agent (one at a time, in partition order: ``concurrency=1``):

1. decode it (:func:`agg_operator_sdk.decode_command`); a message that cannot be decoded is
   logged with its offset (``undecodable``) and acknowledged: it has no command id to answer;
2. apply it in ONE PostgreSQL transaction (:meth:`Ledger.handle`), deduplicated by command
   id; a lost race rolls back and runs again (bounded);
3. send the reply with the command's key to the command's partition (the topics are
   co-partitioned) and wait for the broker's acknowledgement (``producer_acks=-1``);
4. only then acknowledge the event, so that faust's periodic commit can move past it.

faust's own traps, and what this does about them:

- an agent that raises has its message acknowledged (and committed by the next periodic
  commit) and is restarted on the next message: a command whose database write failed
  would never be answered. So the agent iterates ``stream.noack()`` and acknowledges by
  hand after step 3; on an unknown failure it acknowledges nothing, stops consuming and
  stops the worker with exit status 70: the offset stays where it was and the restarted
  worker reads the command again (the ledger dedupes whatever was already applied);
- a message sent with ``topic.send()`` from inside an agent is held until the next offset
  commit ("attachments"); the reply is sent with ``app.producer.send_and_wait`` instead, so
  it is acknowledged before the event is;
- ``processing_guarantee="exactly_once"`` has open bugs (duplicates and crashes on
  rebalance): the default at-least-once, with the ledger's dedupe, gives the same effect;
- faust would declare its own topics; ``topic_allow_declare=False`` and
  ``topic_disable_leader=True`` keep it from creating anything on the aggregator's broker.

Settings are flags with environment defaults (``OPERATOR_ID``, ``KAFKA_BOOTSTRAP``,
``DATABASE_URL``, ...; ``--help`` lists them). Metrics on ``--metrics-port`` (Prometheus),
one JSON log line per command not answered OK and per failure on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any, cast

import faust
import psycopg
from faust.types import StreamT
from prometheus_client import Counter, start_http_server

from agg_operator_sdk import DecodeError, ReplyStatus, decode_command, encode_reply
from agg_operator_sdk.ledger import Handled, Ledger, Resolution, is_retryable
from agg_operator_sdk.logs import JsonLog

ATTEMPT_COUNT_MAX = 5
"""Transactions of one command before giving up: a retry only follows a lost race."""
EXIT_FAILED = 70
"""Exit status after an unknown failure (EX_SOFTWARE): restart the worker."""

log = JsonLog("faust_wallet")

COMMANDS = Counter("operator_wallet_commands_total", "Commands answered",
                   ["operator", "kind", "status", "resolution"])  # fmt: skip
UNDECODABLE = Counter("operator_wallet_undecodable_total", "Messages skipped", ["operator"])
RETRIES = Counter("operator_wallet_retries_total", "Transactions re-run", ["operator"])


def arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Each flag's default comes from the environment: "
        "OPERATOR_ID, KAFKA_BOOTSTRAP, DATABASE_URL, TOPIC_PREFIX, GROUP_ID, "
        "LEDGER_SCHEMA, STARTING_BALANCE, COMMIT_INTERVAL_S, "
        "SESSION_TIMEOUT_S, METRICS_PORT, REPLY_DELAY_MS.",
    )
    p.add_argument("--operator", default=env("OPERATOR_ID"), required=not env("OPERATOR_ID"))
    p.add_argument("--bootstrap", default=env("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    p.add_argument("--database-url", default=env("DATABASE_URL"), required=not env("DATABASE_URL"))
    p.add_argument("--topic-prefix", default=env("TOPIC_PREFIX", "agg"))
    p.add_argument("--group-id", default=env("GROUP_ID"),
                   help="faust app id and group, default operator-wallet-<operator>")  # fmt: skip
    p.add_argument("--schema", default=env("LEDGER_SCHEMA", "operator_wallet"))
    p.add_argument("--starting-balance", type=int, default=_int(env("STARTING_BALANCE")),
                   help="open unknown players at this balance (else UNKNOWN_PLAYER)")  # fmt: skip
    p.add_argument("--commit-interval-s", type=float,
                   default=float(env("COMMIT_INTERVAL_S", "1.0")),
                   help="faust's offset commit interval: work redone after a crash")  # fmt: skip
    p.add_argument("--session-timeout-s", type=float,
                   default=float(env("SESSION_TIMEOUT_S", "30")),
                   help="consumer session timeout: how long the partitions of a crashed worker "
                        "wait for it before the group moves them")  # fmt: skip
    p.add_argument("--metrics-port", type=int, default=int(env("METRICS_PORT", "0")),
                   help="Prometheus metrics on 127.0.0.1:PORT (0: none)")  # fmt: skip
    p.add_argument("--reply-delay-ms", type=int, default=int(env("REPLY_DELAY_MS", "0")),
                   help="test switch: wait between database commit and reply")  # fmt: skip
    args = p.parse_args(argv)
    if not 0 <= args.reply_delay_ms <= 60_000:
        p.error("--reply-delay-ms must be 0..60000")
    if not 0.1 <= args.commit_interval_s <= 60:
        p.error("--commit-interval-s must be 0.1..60")
    if not 6 <= args.session_timeout_s <= 300:  # the broker's default group.min/max.session
        p.error("--session-timeout-s must be 6..300")
    return args


def _int(value: str | None) -> int | None:
    return None if value in (None, "") else int(value)


def build(args: argparse.Namespace) -> faust.App:
    operator_id: str = args.operator
    replies_topic = f"{args.topic_prefix}.wallet.replies.{operator_id}"
    ledger = Ledger(operator_id, schema=args.schema, starting_balance=args.starting_balance)
    app = faust.App(
        args.group_id or f"operator-wallet-{operator_id}",
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        web_enabled=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",  # a new group answers every command on the topic
        producer_acks=-1,
        broker_commit_interval=args.commit_interval_s,
        broker_session_timeout=args.session_timeout_s,
        broker_heartbeat_interval=min(3.0, args.session_timeout_s / 3),
        key_serializer="raw",
        value_serializer="raw",
    )
    commands = app.topic(
        f"{args.topic_prefix}.wallet.commands.{operator_id}",
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,
    )
    db: dict[str, psycopg.AsyncConnection[Any]] = {}

    async def connection() -> psycopg.AsyncConnection[Any]:
        """The agent's one connection, opened on its first command (a failure to open it is
        a failure of that command, handled like any other)."""
        if "conn" not in db:
            conn = await psycopg.AsyncConnection.connect(
                args.database_url, autocommit=True, application_name=app.conf.id
            )
            await ledger.ensure_schema(conn)
            db["conn"] = conn
        return db["conn"]

    async def apply(message: Any) -> Handled | None:
        try:
            if message.value is None:
                raise DecodeError("no_value", "message without a value")
            command = decode_command(message.value)
        except DecodeError as exc:
            UNDECODABLE.labels(operator_id).inc()
            log.error("undecodable", operator_id=operator_id, topic=message.topic,
                      partition=message.partition, offset=message.offset,
                      reason=str(exc))  # fmt: skip
            return None
        conn = await connection()
        for attempt in range(1, ATTEMPT_COUNT_MAX + 1):
            try:
                async with conn.transaction():
                    return await ledger.handle(conn, command, key=message.key)
            except psycopg.Error as exc:
                if not is_retryable(exc) or attempt == ATTEMPT_COUNT_MAX:
                    raise
                RETRIES.labels(operator_id).inc()
        raise AssertionError("unreachable")

    @app.agent(commands, concurrency=1)
    async def wallet(stream: StreamT[bytes]) -> None:
        log.event("wallet_consuming", operator_id=operator_id, group=app.conf.id,
                  topic=f"{args.topic_prefix}.wallet.commands.{operator_id}")  # fmt: skip
        manual = cast(faust.Stream[bytes], stream).noack()  # StreamT declares no noack()
        async for event in manual.events():
            message = event.message
            try:
                handled = await apply(message)
                if handled is not None:
                    if args.reply_delay_ms:
                        await asyncio.sleep(args.reply_delay_ms / 1000)
                    await app.producer.send_and_wait(
                        replies_topic, message.key, encode_reply(handled.reply),
                        partition=message.partition, timestamp=None, headers=None,
                    )  # fmt: skip
                    observe(operator_id, handled)
            except Exception as exc:  # noqa: BLE001 - stop without acknowledging, see above
                log.error("wallet_failed", operator_id=operator_id, partition=message.partition,
                          offset=message.offset, reason=f"{type(exc).__name__}: {exc}")  # fmt: skip
                sys.stderr.flush()
                # Not acknowledged, and nothing after it is processed: the committed offset
                # stays before this command. os._exit skips faust's shutdown, which would
                # otherwise wait for this very agent.
                os._exit(EXIT_FAILED)
            await manual.ack(event)

    return app


def observe(operator_id: str, h: Handled) -> None:
    c, reply = h.command, h.reply
    COMMANDS.labels(operator_id, c.kind.value, reply.status.value, h.resolution.value).inc()
    if h.resolution in (Resolution.FOREIGN, Resolution.CONFLICT):
        log.error("command_id_refused", operator_id=operator_id,
                  correlation_id=c.correlation_id, command_id=c.command_id,
                  player_id=c.player_id, resolution=h.resolution.value,
                  reason=h.reason)  # fmt: skip
    elif reply.status is not ReplyStatus.OK and h.resolution is Resolution.APPLIED:
        log.warning("command_refused", operator_id=operator_id,
                    correlation_id=c.correlation_id, command_id=c.command_id,
                    player_id=c.player_id, kind=c.kind.value, amount=c.amount,
                    status=reply.status.value, reason=h.reason)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = arguments(argv)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr="127.0.0.1")
    app = build(args)
    # redirect_stdouts=False: the JSON lines stay lines, not faust log records
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()  # returns on SIGTERM/SIGINT, after faust's last commit
    return 0


if __name__ == "__main__":
    sys.exit(main())
