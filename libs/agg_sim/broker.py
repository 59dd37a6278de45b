"""An in-memory broker and the :class:`agg_ports.Transport` adapter on it.

The adapter gives what the port promises and nothing more: per-partition order, delivery
from the committed offset after an assignment (so a crash redelivers what was not committed),
and on a crash during ``produce``, any prefix of each partition's records written. What is
``send``-ed is acknowledged late: a random number of the oldest sends at every later port
call, and at least one whenever the event loop runs while sends are unacknowledged (so
whoever waits for one gets on). A crash is an exception (:class:`SimCrash`) raised inside
the worker at a chosen port call, after which the worker object is thrown away, as a killed
process's memory is; of what was sent and not acknowledged, any prefix of each partition's
records is written then, and the waiting sends fail.
"""

from __future__ import annotations

import asyncio
import random
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from agg_ports.transport import InRecord, OutRecord, RebalanceListener


class SimCrash(Exception):
    """The simulated process died at a port call."""


@dataclass
class SimClock:
    """Wall clock (may jump, either way) and a monotonic clock (never goes back)."""

    wall_ms: int = 1_767_225_600_000
    mono_ms: int = 0

    def now_ms(self) -> int:
        return self.wall_ms

    def monotonic_s(self) -> float:
        return self.mono_ms / 1000

    def advance(self, ms: int) -> None:
        self.wall_ms += ms
        self.mono_ms += ms


class SimBroker:
    def __init__(self, clock: SimClock, partitions: int):
        self.clock = clock
        self.partitions = partitions
        self.logs: dict[tuple[str, int], list[InRecord]] = {}
        """Per topic and partition, its records as a consumer reads them."""
        self.record_headers: dict[tuple[str, int, int], tuple[tuple[str, bytes], ...]] = {}
        """The headers of the records that have any (the port's records carry none; tests
        read them with :meth:`headers_of`)."""
        self.committed: dict[tuple[str, int], int] = {}
        self.appended = 0
        """Records written so far, on every topic (lets idle readers skip their turn)."""

    def partition_for(self, key: bytes | None) -> int:
        return zlib.crc32(key or b"") % self.partitions

    def log(self, topic: str, partition: int) -> list[InRecord]:
        found = self.logs.get((topic, partition))
        if found is None:
            found = self.logs[(topic, partition)] = []
        return found

    def append(self, record: OutRecord) -> tuple[int, int]:
        partition = record.partition
        if partition is None:
            partition = self.partition_for(record.key)
        log = self.log(record.topic, partition)
        self.appended += 1
        offset = len(log)
        if record.headers:
            self.record_headers[(record.topic, partition, offset)] = record.headers
        log.append(InRecord(record.topic, partition, offset, record.key, record.value,
                            self.clock.wall_ms))  # fmt: skip
        return partition, offset

    def read(self, topic: str, partition: int, offset: int, count: int) -> list[InRecord]:
        log = self.logs.get((topic, partition))
        if log is None or offset >= len(log):
            return []
        return log[offset : offset + count]

    def headers_of(self, record: InRecord) -> tuple[tuple[str, bytes], ...]:
        return self.record_headers.get((record.topic, record.partition, record.offset), ())

    def end(self, topic: str, partition: int) -> int:
        log = self.logs.get((topic, partition))
        return 0 if log is None else len(log)


CrashHook = Callable[[str, "SimTransport"], bool]
"""Called at every port call with its name; True kills the process there."""


@dataclass
class SimTransport:
    broker: SimBroker
    rng: random.Random
    crash_hook: CrashHook = lambda point, transport: False
    batch_max: int = 50
    label: Callable[[Sequence[OutRecord]], str] = lambda records: "outputs"
    """Names what a ``produce`` call writes (crash points are ``produce:<label>`` before the
    call and ``torn:<label>`` for a crash while it runs)."""
    listener: RebalanceListener | None = None
    topics: tuple[str, ...] = ()
    assigned: set[tuple[str, int]] = field(default_factory=set)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    paused: set[tuple[str, int]] = field(default_factory=set)
    dead: bool = False
    in_flight: list[tuple[list[OutRecord], asyncio.Future[None], str]] = field(default_factory=list)
    """Sends not acknowledged yet, oldest first: (records, their future, their label)."""
    _acks_scheduled: bool = False

    def _point(self, name: str) -> None:
        if self.dead:
            raise SimCrash(f"{name} after death")
        if self.crash_hook(name, self):
            self._die(name)
        if self.in_flight:
            self._acknowledge(self.rng.randint(0, len(self.in_flight)))

    def _die(self, name: str) -> None:
        """The process dies: of what was sent and not acknowledged, any prefix of each
        partition's records is written; the waiting sends fail."""
        self.dead = True
        self._tear([r for records, _, _ in self.in_flight for r in records])
        for _, future, _ in self.in_flight:
            if not future.done():
                future.set_exception(SimCrash(name))
                future.exception()  # seen: the worker learns of the death at its next call
        self.in_flight.clear()
        raise SimCrash(name)

    def _tear(self, records: Sequence[OutRecord]) -> None:
        """A random prefix of each partition's part of ``records`` is written (in order)."""
        by_partition: dict[tuple[str, int], list[OutRecord]] = {}
        for r in records:
            p = r.partition if r.partition is not None else self.broker.partition_for(r.key)
            by_partition.setdefault((r.topic, p), []).append(r)
        for tp in sorted(by_partition):
            part = by_partition[tp]
            for r in part[: self.rng.randint(0, len(part))]:
                self.broker.append(r)

    def _acknowledge(self, count: int) -> None:
        """The ``count`` oldest sends are written and acknowledged; ``torn:<label>`` is
        asked of each (a crash while it is on its way)."""
        for _ in range(count):
            records, future, kind = self.in_flight[0]
            if self.crash_hook(f"torn:{kind}", self):
                self._die(f"torn:{kind}")
            del self.in_flight[0]
            for r in records:
                self.broker.append(r)
            future.set_result(None)

    def _schedule_acks(self) -> None:
        if self.in_flight and not self._acks_scheduled and not self.dead:
            self._acks_scheduled = True
            asyncio.get_running_loop().call_soon(self._acks_later)

    def _acks_later(self) -> None:
        self._acks_scheduled = False
        if self.dead or not self.in_flight:
            return
        try:
            self._acknowledge(self.rng.randint(1, len(self.in_flight)))
        except SimCrash:
            return  # the worker learns of it at its next call
        self._schedule_acks()

    # group membership: the world calls these between two steps of the worker

    async def assign(self, partitions: set[int]) -> None:
        """Make this member own exactly ``partitions`` of every subscribed topic."""
        wanted = {(t, p) for t in self.topics for p in partitions}
        revoked = self.assigned - wanted
        added = wanted - self.assigned
        if revoked and self.listener is not None:
            await self.listener.on_revoked(revoked)
        self.assigned -= revoked
        for tp in revoked:
            self.positions.pop(tp, None)
            self.paused.discard(tp)
        for tp in added:
            self.positions[tp] = self.broker.committed.get(tp, 0)
        self.assigned |= added
        if added and self.listener is not None:
            await self.listener.on_assigned(added)

    # the port

    async def start(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        self.topics = tuple(topics)
        self.listener = listener

    async def stop(self) -> None:
        pass

    async def poll(self, timeout_ms: int, max_records: int) -> list[InRecord]:
        self._point("poll")
        out: list[InRecord] = []
        budget = min(max_records, self.rng.randint(1, self.batch_max))
        logs = self.broker.logs
        for tp in sorted(self.assigned - self.paused):
            if len(out) >= budget:
                break
            log = logs.get(tp)
            if log is None or self.positions[tp] >= len(log):
                continue
            got = self.broker.read(tp[0], tp[1], self.positions[tp], budget - len(out))
            if got:
                self.positions[tp] = got[-1].offset + 1
                out.extend(got)
        return out

    def assignment(self) -> set[tuple[str, int]]:
        return set(self.assigned)

    def pause(self, partitions: set[tuple[str, int]]) -> None:
        self.paused |= partitions

    def resume(self, partitions: set[tuple[str, int]]) -> None:
        self.paused -= partitions

    def seek(self, topic: str, partition: int, offset: int) -> None:
        if (topic, partition) in self.assigned:
            self.positions[(topic, partition)] = offset

    def send(self, records: Sequence[OutRecord]) -> asyncio.Future[None]:
        """Enqueued now (crash point ``send:<label>`` first), acknowledged later."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not records:
            future.set_result(None)
            return future
        kind = self.label(records)
        self._point(f"send:{kind}")
        self.in_flight.append((list(records), future, kind))
        self._schedule_acks()
        return future

    async def produce(self, records: Sequence[OutRecord]) -> None:
        if not records:
            return
        kind = self.label(records)
        self._point(f"produce:{kind}")
        if self.in_flight:  # what was sent before goes first
            self._acknowledge(len(self.in_flight))
        if self.crash_hook(f"torn:{kind}", self):
            # the process dies while the records are on their way: a prefix of each
            # partition's records is written
            self.dead = True
            self._tear(records)
            raise SimCrash(f"torn:{kind}")
        for r in records:
            self.broker.append(r)

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> bool:
        self._point("commit")
        ours = {tp: o for tp, o in offsets.items() if tp in self.assigned}
        self.broker.committed.update(ours)
        return len(ours) == len(offsets)

    async def read_to_end(self, topic: str, partitions: set[int]) -> list[InRecord]:
        self._point("restore")
        out: list[InRecord] = []
        for p in sorted(partitions):
            out.extend(self.broker.read(topic, p, 0, self.broker.end(topic, p)))
        return out

    async def lag(self) -> dict[tuple[str, int], int]:
        return {tp: self.broker.end(*tp) - self.positions.get(tp, 0) for tp in self.assigned}
