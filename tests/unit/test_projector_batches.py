"""The projector's batches without a broker or a database: records beyond a full batch start
the next one, what was gathered before a rebalance is not written after it, records of
partitions not assigned are dropped, newly assigned partitions start at the stored positions
(or the beginning), and a batch's dead letters are acknowledged before it is written."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from agg_avro import AvroCodec
from agg_config.settings import Settings
from agg_ports.transport import OFFSET_BEGINNING, InRecord, OutRecord
from agg_projector.apply import JournalEvent
from agg_projector.projector import Projector

CODEC = AvroCodec()
SETTINGS = Settings(kafka_bootstrap="127.0.0.1:1", database_url="postgresql://unused",
                    projector_batch_wait_ms=20)  # fmt: skip
TOPIC = "agg.events"
T0 = datetime(2026, 5, 1, tzinfo=UTC)

Step = list[InRecord] | Callable[[], Awaitable[list[InRecord]]]


def record(partition: int, offset: int, value: bytes | None = None) -> InRecord:
    if value is None:
        value = CODEC.encode("casino.agg.events.RoundClosed", {
            "event_id": f"ev-{partition}-{offset}", "correlation_id": "c", "operator_id": "op",
            "player_id": "pl", "provider_id": "prov", "occurred_at": T0, "round_id": "r",
            "game_id": "g", "currency": "EUR", "bet_total": 0, "win_total": 0,
            "refund_total": 0})  # fmt: skip
    return InRecord(TOPIC, partition, offset, b"op:pl", value, 0)


class ScriptedTransport:
    """Each poll takes the next step of the script: records to return, or a coroutine run
    during the poll (a rebalance) that returns them; once the script is done, polls wait out
    their timeout and return nothing."""

    def __init__(self, steps: Sequence[Step]):
        self.steps = list(steps)
        self.log: list[str] = []

    async def poll(self, timeout_ms: int, max_records: int) -> list[InRecord]:
        if not self.steps:
            await asyncio.sleep(timeout_ms / 1000)
            return []
        step = self.steps.pop(0)
        return step if isinstance(step, list) else await step()

    def send(self, records: Sequence[OutRecord]) -> Awaitable[None]:
        async def acknowledged() -> None:
            await asyncio.sleep(0.01)
            self.log.append(f"acknowledged {len(records)} dead letters")

        self.log.append(f"sent {len(records)} dead letters")
        return asyncio.ensure_future(acknowledged())


class OfflineProjector(Projector):
    """The projector with its database calls noted instead of made."""

    def __init__(self, transport: ScriptedTransport, stored: dict[int, int] | None = None):
        super().__init__(SETTINGS, batch_count_max=3)
        self.transport = transport  # type: ignore[assignment]
        self.conn = object()  # type: ignore[assignment]
        self.stored = stored or {}
        self.writes: list[tuple[list[tuple[int, int]], dict[int, int]]] = []

    def _stored_positions(self, partitions: Sequence[int]) -> dict[int, int]:
        return {p: o for p, o in self.stored.items() if p in partitions}

    def _write_sync(self, events: list[JournalEvent], last: dict[int, int],
                    *args: Any) -> list[JournalEvent]:  # fmt: skip
        assert isinstance(self.transport, ScriptedTransport)
        self.transport.log.append("written")
        self.writes.append(([(e.partition, e.offset) for e in events], dict(last)))
        return events


async def assigned(projector: Projector, *partitions: int) -> None:
    tps = {(TOPIC, p) for p in partitions}
    await projector._start_at(tps)
    await projector.on_assigned(tps)


def offsets(batch: list[InRecord]) -> list[tuple[int, int]]:
    return [(r.partition, r.offset) for r in batch]


def test_records_beyond_a_full_batch_start_the_next() -> None:
    async def scenario() -> None:
        transport = ScriptedTransport([[record(0, o) for o in range(5)]])
        projector = OfflineProjector(transport)
        await assigned(projector, 0)
        batch, _ = await projector._gather()
        assert offsets(batch) == [(0, 0), (0, 1), (0, 2)]
        batch, _ = await projector._gather()
        assert offsets(batch) == [(0, 3), (0, 4)]

    asyncio.run(scenario())


def test_what_was_gathered_before_a_rebalance_is_not_written_after_it() -> None:
    async def scenario() -> None:
        async def rebalanced() -> list[InRecord]:
            await projector.on_revoked({(TOPIC, 0)})
            projector.stored = {0: 0}
            await assigned(projector, 0)
            return [record(0, 0), record(0, 1)]  # read again from the stored position

        transport = ScriptedTransport([[record(0, 0), record(0, 1)], rebalanced])
        projector = OfflineProjector(transport)
        await assigned(projector, 0)
        batch, epoch = await projector._gather()
        assert offsets(batch) == [(0, 0), (0, 1)] and epoch == projector._epoch

    asyncio.run(scenario())


def test_a_batch_gathered_before_a_revocation_is_dropped() -> None:
    async def scenario() -> None:
        transport = ScriptedTransport([[record(0, 0)]])
        projector = OfflineProjector(transport)
        await assigned(projector, 0)
        batch, epoch = await projector._gather()
        await projector.on_revoked({(TOPIC, 0)})
        assert batch and epoch != projector._epoch  # run() does not write it

    asyncio.run(scenario())


def test_records_of_partitions_not_assigned_are_dropped() -> None:
    async def scenario() -> None:
        transport = ScriptedTransport([[record(0, 5), record(1, 0), record(2, 7)]])
        projector = OfflineProjector(transport)
        await assigned(projector, 0, 2)
        batch, _ = await projector._gather()
        assert offsets(batch) == [(0, 5), (2, 7)]

    asyncio.run(scenario())


def test_partitions_start_at_the_stored_positions_or_the_beginning() -> None:
    async def scenario() -> None:
        projector = OfflineProjector(ScriptedTransport([]), stored={1: 42})
        starts = await projector._start_at({(TOPIC, 0), (TOPIC, 1)})
        assert starts == {(TOPIC, 0): OFFSET_BEGINNING, (TOPIC, 1): 42}

    asyncio.run(scenario())


def test_dead_letters_are_acknowledged_before_the_batch_is_written() -> None:
    async def scenario() -> None:
        transport = ScriptedTransport([])
        projector = OfflineProjector(transport)
        await projector._write([record(0, 0), record(0, 1, b"\x00junk"), record(0, 2)])
        assert transport.log == ["sent 1 dead letters", "acknowledged 1 dead letters", "written"]
        assert projector.writes == [([(0, 0), (0, 2)], {0: 2})]

    asyncio.run(scenario())
