"""The Kafka-native wallet under test: commands on ``agg.wallet.commands.<operator>``,
replies read from ``agg.wallet.replies.<operator>``, both keyed ``operator:player``, Avro
single-object encoded, exactly as the saga does it.

Replies are read with no consumer group (every partition assigned, from the end as of
:meth:`KafkaWallet.start`), so the kit commits nothing and never takes partitions from the
saga. Replies to other players (the operator's real traffic) are skipped; a reply whose
command id no call waits for (late, or one too many) is counted in :attr:`stray_count`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict, deque
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agg_avro import AvroCodec, AvroDecodeError
from agg_certify.port import Command, Observed, Reply
from agg_config.settings import Settings
from agg_kafka.admin import topic_partitions
from agg_kafka.clients import make_consumer, make_producer, player_key
from agg_kafka.topics import TopicNames

COMMAND_RECORD = "casino.agg.WalletCommand"
REPLY_RECORD = "casino.agg.WalletReply"
FETCH_WAIT_MS = 100
"""Longest wait of one fetch of replies; bounds how late a stop is noticed."""

SIGNATURE_NOT_APPLICABLE = (
    "Kafka wallet commands carry no signature: the operator's wallet is reached only through "
    "its own topics, and who may write and read them is enforced by the broker (ACLs on "
    "agg.wallet.commands.<operator> and agg.wallet.replies.<operator>), not per message"
)


class KafkaWallet:
    mode = "kafka"
    signature_not_applicable: str | None = SIGNATURE_NOT_APPLICABLE

    def __init__(self, settings: Settings, operator_id: str, *, client_id: str = "certify"):
        self.settings = settings
        self.operator_id = operator_id
        names = TopicNames(settings.topic_prefix)
        self.commands_topic = names.wallet_commands(operator_id)
        self.replies_topic = names.wallet_replies(operator_id)
        self.client_id = client_id
        self.codec = AvroCodec()
        self.stray_count = 0
        self.undecodable_count = 0
        self._waiting: dict[str, deque[asyncio.Future[tuple[Reply, int]]]] = defaultdict(deque)
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect, and read replies from now on; raises LookupError when the operator's
        topics do not exist (then nothing is left open)."""
        settings = self.settings
        partitions = await topic_partitions(
            settings.kafka_bootstrap, self.replies_topic, settings.admin_timeout_ms
        )
        await topic_partitions(settings.kafka_bootstrap, self.commands_topic,
                               settings.admin_timeout_ms)  # fmt: skip
        self._producer = make_producer(settings, client_id=f"{self.client_id}-commands")
        await self._producer.start()
        consumer = make_consumer(settings, group_id=None, client_id=f"{self.client_id}-replies")
        self._consumer = consumer
        await consumer.start()
        tps = [TopicPartition(self.replies_topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end positions now, before anything is sent
            await consumer.position(tp)
        self._reader = asyncio.create_task(self._read(consumer))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def call(self, command: Command, timeout_ms: int) -> Observed:
        assert self._producer is not None, "start() first"
        future: asyncio.Future[tuple[Reply, int]] = asyncio.get_running_loop().create_future()
        queue = self._waiting[command.command_id]
        queue.append(future)
        value = self.codec.encode(COMMAND_RECORD, command.as_avro())
        started_ns = time.perf_counter_ns()
        try:
            await self._producer.send_and_wait(
                self.commands_topic, value, key=player_key(command.operator_id, command.player_id)
            )
            reply, arrived_ns = await asyncio.wait_for(future, timeout_ms / 1000)
        except TimeoutError:
            return Observed(command, None, None)
        finally:
            if future in queue:
                queue.remove(future)
            if not queue:
                self._waiting.pop(command.command_id, None)
        return Observed(command, reply, (arrived_ns - started_ns) // 1000)

    async def call_badly_signed(self, command: Command, timeout_ms: int) -> Observed:
        raise NotImplementedError(SIGNATURE_NOT_APPLICABLE)

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=FETCH_WAIT_MS)
            arrived_ns = time.perf_counter_ns()
            for records in batch.values():
                for record in records:
                    self._deliver(record.value, arrived_ns)

    def _deliver(self, value: bytes | None, arrived_ns: int) -> None:
        try:
            datum: dict[str, Any] = self.codec.decode(value or b"", reader=REPLY_RECORD).datum
        except AvroDecodeError:
            self.undecodable_count += 1
            return
        queue = self._waiting.get(datum["command_id"])
        if not queue:
            self.stray_count += 1
            return
        reply = Reply(
            command_id=datum["command_id"],
            player_id=datum["player_id"],
            status=datum["status"],
            balance=datum["balance"],
            currency=datum["currency"],
        )
        future = queue.popleft()
        if not future.done():
            future.set_result((reply, arrived_ns))
