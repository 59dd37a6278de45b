"""The saga worker's I/O: a consumer-group member that also produces, and a clock.

What an adapter must guarantee (the worker's correctness rests on exactly this, and the
simulated adapter gives no more):

- ``poll`` returns records of assigned, unpaused partitions, each partition in offset order,
  starting after the group's committed offset when a partition is assigned. After a crash
  or a rebalance, records past the last commit are delivered again (at least once).
- ``produce`` returns once every record is acknowledged (written to every in-sync replica).
  Records to one partition are written in the order given; if ``produce`` raises, or the
  process dies while it runs, any prefix of each partition's records may have been written.
- ``send`` hands the records to the producer in call order, after those of every earlier
  ``send`` or ``produce`` (so each partition's records are written in call order), and returns an
  awaitable that is done once every one is acknowledged; it fails if any is not. If the
  process dies before it is done, any prefix of each partition's records not acknowledged
  may have been written (and nothing of a partition after a record that was not).
- ``commit`` stores the offsets of the next records to consume; it may fail, after which the
  records are delivered again to whoever owns the partition then.
- ``read_to_end`` reads every record of the given partitions from the beginning up to the end
  offsets taken when it starts.
- the rebalance listener's callbacks run between two ``poll`` calls of this worker's loop
  (revocation first), never while the worker handles a batch.
- ``Clock.now_ms`` is the wall clock in epoch milliseconds; ``monotonic_s`` never goes back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class InRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    """An explicit partition; ``None`` partitions by key (the Java client's murmur2)."""
    headers: tuple[tuple[str, bytes], ...] = ()


def dead_letter_record(topic: str, record: InRecord, reason: str, consumer: str) -> OutRecord:
    """``record`` as read, for the dead-letter topic ``topic``: headers ``reason``,
    ``source`` (topic/partition/offset) and ``consumer`` (the group that set it aside)."""
    headers = (
        ("reason", reason.encode()),
        ("source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ("consumer", consumer.encode()),
    )
    return OutRecord(topic, record.key, record.value or b"", None, headers)


OFFSET_BEGINNING = -2
"""A partition's first record, as a start offset (librdkafka's value of the same name)."""

StartAt = Callable[[set[tuple[str, int]]], Awaitable[Mapping[tuple[str, int], int]]]
"""Where newly assigned partitions are to be read from: an offset (or ``OFFSET_BEGINNING``)
per partition; a partition left out starts after the group's committed offset."""


class RebalanceListener(Protocol):
    async def on_revoked(self, partitions: set[tuple[str, int]]) -> None: ...

    async def on_assigned(self, partitions: set[tuple[str, int]]) -> None: ...


class Transport(Protocol):
    async def start(self, topics: Sequence[str], listener: RebalanceListener) -> None: ...

    async def stop(self) -> None: ...

    async def poll(self, timeout_ms: int, max_records: int) -> list[InRecord]: ...

    def assignment(self) -> set[tuple[str, int]]: ...

    def pause(self, partitions: set[tuple[str, int]]) -> None: ...

    def resume(self, partitions: set[tuple[str, int]]) -> None: ...

    def seek(self, topic: str, partition: int, offset: int) -> None: ...

    async def produce(self, records: Sequence[OutRecord]) -> None: ...

    def send(self, records: Sequence[OutRecord]) -> Awaitable[None]: ...

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> bool:
        """True when committed; False when the group moved on (the records are redelivered
        to their new owner)."""
        ...

    async def read_to_end(self, topic: str, partitions: set[int]) -> list[InRecord]: ...

    async def lag(self) -> dict[tuple[str, int], int]: ...


class Clock(Protocol):
    def now_ms(self) -> int: ...

    def monotonic_s(self) -> float: ...


Sleep = Callable[[float], Awaitable[None]]
