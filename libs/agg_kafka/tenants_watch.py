"""Following the tenants document: the one watcher every long-running service uses.

A service hands the watcher a ``build`` function that turns a :class:`Tenants` into what it
serves from (the ingress's secrets and lookups, the bridge's operator set, ...). The watcher:

1. starts from the service's tenants file (the document of sequence 0), built once;
2. at start, reads the config topic (``<prefix>.config``, one compacted partition) from its
   beginning to its end, offering every document in log order, and only then lets the
   service serve: every instance, started at any time, ends up on the last document of the
   log; an empty topic leaves the file's tenants;
3. then follows the topic, offering each new document as it comes.

Offering a document (:meth:`TenantsHolder.offer`, no I/O, unit-tested) decodes and validates
it, skips it when its sha256 is the one in use, calls ``build`` once, and then swaps
``current`` in one assignment: a request reads one ``Applied`` and sees one document's
tenants and lookups, never a mix. A document that does not decode or validate, or that
``build`` refuses (a secret variable not set in this service's environment, a bad key), is
refused with an error log line and ``agg_config_refused_total{service,reason}``; the previous
one stays. Each applied document gets a log line ``tenants_applied`` with its sequence,
actor, sha256 and what changed, and sets ``agg_config_version{service}`` (its sequence) and
``agg_config_info{service,sha256}``.

Listeners (``on_change``) run after a swap, for what a lookup cannot do (start the loop of a
new operator); one that fails is logged and counted, the swap stands.

:class:`OperatorTasks` is the other shared piece: services with one loop per operator (the
HTTP wallet bridge, the reference wallet) keep their running loops equal to what the
current document asks for with it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from agg_config.document import (
    DocumentError,
    TenantsDocument,
    decode_document,
    file_document,
    summarize_change,
)
from agg_config.settings import Settings
from agg_config.tenants import Tenants
from agg_kafka.admin import TopicMissingError, topic_partitions
from agg_kafka.clients import make_consumer
from agg_kafka.topics import TopicNames
from agg_obs.logs import get_logger

log = get_logger("config")

T = TypeVar("T")

CONFIG_VERSION = Gauge(
    "agg_config_version",
    "Sequence of the tenants document in use (0: the service's tenants file)",
    ["service"],
)
CONFIG_INFO = Gauge(
    "agg_config_info", "1 for the sha256 of the tenants document in use", ["service", "sha256"]
)
CONFIG_APPLIED = Counter(
    "agg_config_applied_total", "Tenants documents applied without a restart", ["service"]
)
CONFIG_REFUSED = Counter(
    "agg_config_refused_total",
    "Tenants documents refused (the previous one stays), by reason",
    ["service", "reason"],
)
POLL_TIMEOUT_MS = 500
"""Longest wait for a new document; also bounds how late a stop is noticed."""
UNREQUIRED_TIMEOUT_MS = 5_000
"""How long a service that can run without Kafka waits for it at start."""
RETRY_PAUSE_S = 1.0
"""Pause before the watcher reconnects after a failed fetch."""


class ConfigUnavailableError(RuntimeError):
    """The config topic could not be read to its end at start: the service does not start
    on tenants that may be out of date."""


@dataclass(frozen=True)
class Applied(Generic[T]):
    """A document in use and what the service built from it, swapped as one."""

    document: TenantsDocument
    view: T

    @property
    def tenants(self) -> Tenants:
        return self.document.tenants


class TenantsHolder(Generic[T]):
    """The current document of one service and the swap logic (no I/O)."""

    def __init__(
        self,
        service: str,
        build: Callable[[Tenants], T],
        initial: Tenants | TenantsDocument,
    ):
        self.service = service
        self.build = build
        document = (
            initial
            if isinstance(initial, TenantsDocument)
            else file_document(initial, datetime.now(UTC))
        )
        # the first build is not guarded: a service whose own file it refuses does not start
        self._current: Applied[T] = Applied(document, build(document.tenants))
        self.listeners: list[Callable[[Applied[T], Applied[T]], None]] = []
        self._publish_metrics(None, document)

    @property
    def current(self) -> Applied[T]:
        return self._current

    @property
    def view(self) -> T:
        return self._current.view

    @property
    def tenants(self) -> Tenants:
        return self._current.document.tenants

    def _publish_metrics(self, old: TenantsDocument | None, new: TenantsDocument) -> None:
        if old is not None and old.sha256 != new.sha256:
            with contextlib.suppress(KeyError):
                CONFIG_INFO.remove(self.service, old.sha256)
        CONFIG_VERSION.labels(self.service).set(new.sequence)
        CONFIG_INFO.labels(self.service, new.sha256).set(1)

    def _refuse(self, reason: str, detail: str, offset: int | None) -> str:
        CONFIG_REFUSED.labels(self.service, reason).inc()
        log.error("tenants_refused", service=self.service, reason=reason, detail=detail,
                  offset=offset, kept_sequence=self._current.document.sequence,
                  kept_sha256=self._current.document.sha256)  # fmt: skip
        return "refused"

    def offer(self, value: bytes | None, offset: int | None = None) -> str:
        """Take the document in a config-topic value if it is usable and new: ``applied``,
        ``unchanged`` (the tenants in use already) or ``refused``."""
        try:
            document = decode_document(value, f"config topic offset {offset}")
        except DocumentError as exc:
            return self._refuse(exc.reason, str(exc), offset)
        return self.offer_document(document, offset)

    def offer_document(self, document: TenantsDocument, offset: int | None = None) -> str:
        old = self._current
        if document.sha256 == old.document.sha256:
            if document.sequence != old.document.sequence:
                # same tenants republished (or the file's own): take its sequence and actor
                self._current = Applied(document, old.view)
                self._publish_metrics(old.document, document)
            return "unchanged"
        try:
            view = self.build(document.tenants)
        except Exception as exc:  # noqa: BLE001 - any refusal of build keeps the old one
            return self._refuse("build_failed", f"{type(exc).__name__}: {exc}", offset)
        new = Applied(document, view)
        self._current = new
        self._publish_metrics(old.document, document)
        CONFIG_APPLIED.labels(self.service).inc()
        log.event("tenants_applied", service=self.service, sequence=document.sequence,
                  actor=document.actor, reason=document.reason, sha256=document.sha256,
                  previous_sha256=old.document.sha256, offset=offset,
                  changes=summarize_change(old.tenants, document.tenants).lines())  # fmt: skip
        for listener in self.listeners:
            try:
                listener(old, new)
            except Exception:  # the swap stands; the listener's fault is logged
                CONFIG_REFUSED.labels(self.service, "listener_failed").inc()
                log.error("tenants_listener_failed", service=self.service,
                          sequence=document.sequence, exc_info=True)  # fmt: skip
        return "applied"


class TenantsWatcher(Generic[T]):
    """Reads the config topic into a :class:`TenantsHolder` and follows it. Build it inside
    the running event loop (its consumer belongs to it); ``await start()`` before serving,
    then run :meth:`follow` as a task until ``stop``."""

    def __init__(
        self,
        settings: Settings,
        holder: TenantsHolder[T],
        *,
        client_id: str,
        required: bool = True,
    ):
        """``required=False``: a service that needs no Kafka otherwise (the reference HTTP
        wallet) starts on its file when the broker does not answer within
        ``UNREQUIRED_TIMEOUT_MS``, and does not follow."""
        self.settings = settings
        self.required = required
        self.holder = holder
        self.client_id = client_id
        self.topic = TopicNames(settings.topic_prefix).config
        self.partition = TopicPartition(self.topic, 0)
        self.consumer: AIOKafkaConsumer | None = None
        self.next_offset = 0
        self.following = False
        """False when the topic does not exist: the service runs its file's tenants."""

    async def _connect(self) -> AIOKafkaConsumer:
        consumer = make_consumer(self.settings, group_id=None, client_id=self.client_id)
        await consumer.start()
        consumer.assign([self.partition])
        consumer.seek(self.partition, self.next_offset)
        return consumer

    async def start(self) -> None:
        """Read the topic from its beginning to its end (bounded by ``admin_timeout_ms``)."""
        timeout_ms = self.settings.admin_timeout_ms
        if not self.required:
            timeout_ms = min(timeout_ms, UNREQUIRED_TIMEOUT_MS)
        timeout_s = timeout_ms / 1000
        try:
            async with asyncio.timeout(timeout_s):
                await topic_partitions(self.settings.kafka_bootstrap, self.topic, timeout_ms)
        except TopicMissingError:
            log.warning("config_topic_missing", service=self.holder.service, topic=self.topic,
                        detail="run `aggregator topics ensure`; serving the tenants file, "
                        "not following")  # fmt: skip
            return
        except (TimeoutError, KafkaError, OSError) as exc:
            if self.required:
                raise ConfigUnavailableError(f"{self.topic}: {exc!r}") from exc
            log.warning("config_unreachable", service=self.holder.service, topic=self.topic,
                        detail=f"{exc!r}; serving the tenants file, not following")  # fmt: skip
            return
        self.consumer = await self._connect()
        try:
            async with asyncio.timeout(timeout_s):
                end = (await self.consumer.end_offsets([self.partition]))[self.partition]
                while self.next_offset < end:
                    await self._fetch()
                    self.next_offset = max(
                        self.next_offset, await self.consumer.position(self.partition)
                    )
        except TimeoutError:
            await self.close()
            raise ConfigUnavailableError(
                f"{self.topic} not read to its end within {timeout_s:.0f} s"
            ) from None
        self.following = True
        document = self.holder.current.document
        log.event("tenants_in_use", service=self.holder.service, topic=self.topic,
                  sequence=document.sequence, actor=document.actor, sha256=document.sha256,
                  end_offset=end)  # fmt: skip

    async def _fetch(self) -> None:
        assert self.consumer is not None
        batches = await self.consumer.getmany(self.partition, timeout_ms=POLL_TIMEOUT_MS)
        for record in batches.get(self.partition, []):
            self.next_offset = record.offset + 1
            if record.key is not None and record.key != b"tenants":
                continue
            self.holder.offer(record.value, record.offset)

    async def follow(self, stop: asyncio.Event) -> None:
        """Offer every new document until ``stop``; a failed fetch reconnects and goes on
        from the next offset (never ends the service's following silently)."""
        if not self.following:
            await stop.wait()
            return
        while not stop.is_set():
            try:
                if self.consumer is None:
                    self.consumer = await self._connect()
                await self._fetch()
            except Exception:  # logged, counted, reconnected
                CONFIG_REFUSED.labels(self.holder.service, "fetch_failed").inc()
                log.error("config_fetch_failed", service=self.holder.service, exc_info=True)
                await self.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RETRY_PAUSE_S)
        await self.close()

    async def close(self) -> None:
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            await consumer.stop()


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class OperatorTasks(Generic[K, V]):
    """One task per key (an operator) with its own stop event, kept equal to a wanted set.

    :meth:`reconcile` stops the tasks of keys no longer wanted, or whose spec changed, and
    starts those of new keys (a changed spec is stopped and started anew). A stopped task
    finishes its work first (the loops drain and commit on their stop event), and a key's
    new task starts only once its previous one has finished: two loops of one operator never
    run at once (they would share a consumer group membership)."""

    def __init__(
        self, group: asyncio.TaskGroup, run: Callable[[K, V, asyncio.Event], Awaitable[None]]
    ):
        self.group = group
        self.run = run
        self.running: dict[K, tuple[V, asyncio.Event, asyncio.Task[None]]] = {}
        self.stopping: dict[K, asyncio.Task[None]] = {}
        """Tasks told to stop that may still be finishing, by key."""

    def reconcile(self, wanted: Mapping[K, V]) -> tuple[list[K], list[K]]:
        """Make the running tasks those of ``wanted``; returns (started, stopped) keys."""
        stopped = []
        for key, (spec, stop, task) in list(self.running.items()):
            if key not in wanted or wanted[key] != spec:
                stop.set()
                del self.running[key]
                self.stopping[key] = task
                stopped.append(key)
        started = []
        for key, spec in wanted.items():
            if key not in self.running:
                stop = asyncio.Event()
                previous = self.stopping.get(key)
                task = self.group.create_task(self._run(key, spec, stop, previous))
                self.running[key] = (spec, stop, task)
                started.append(key)
        return started, stopped

    async def _run(
        self, key: K, spec: V, stop: asyncio.Event, previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # its failure, if any, is the group's to raise
            if self.stopping.get(key) is previous:
                del self.stopping[key]
        if not stop.is_set():
            await self.run(key, spec, stop)

    def stop_all(self) -> None:
        for key, (_spec, stop, task) in self.running.items():
            stop.set()
            self.stopping[key] = task
        self.running.clear()
