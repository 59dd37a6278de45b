"""Publishing the tenants document: what ``aggregator config apply`` (and the local stack's
start) does on Kafka.

One apply is one Kafka transaction of two records: the document on the config topic (key
``tenants``) and its ``TenantsChanged`` event on the journal (key ``_config``): both or
neither, so the journal names every document any service could have run. The transactional
id is fixed per topic prefix, so two applies at once fence each other: the older one's
commit fails and it publishes nothing (run it again: it then reads the newer document as
its previous one). Every reader of the two topics reads committed records only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition

from agg_avro import AvroCodec
from agg_config.document import (
    DOCUMENT_KEY,
    ChangeSummary,
    DocumentError,
    TenantsDocument,
    decode_document,
    new_document,
    summarize_change,
    tenants_sha256,
)
from agg_config.settings import Settings
from agg_config.tenants import Tenants
from agg_domain.ids import derive_id
from agg_kafka.admin import ensure_topics, topic_partitions
from agg_kafka.clients import make_consumer, make_producer
from agg_kafka.topics import TopicNames, catalogue

JOURNAL_KEY = b"_config"
"""Key of ``TenantsChanged`` on the journal. Not ``operator:player``: the change belongs to
no operator; one key keeps every change on one partition, in order. No player id can be it
(tenant ids start with a letter or digit and operator keys hold a colon)."""
TENANTS_CHANGED = "casino.agg.events.TenantsChanged"


@dataclass(frozen=True)
class Published:
    document: TenantsDocument
    previous: TenantsDocument | None
    summary: ChangeSummary
    event_id: str


async def read_latest(settings: Settings) -> TenantsDocument | None:
    """The last decodable document on the config topic (None when it has none). Raises
    :class:`~agg_kafka.admin.TopicMissingError` when the topic does not exist."""
    topic = TopicNames(settings.topic_prefix).config
    await topic_partitions(settings.kafka_bootstrap, topic, settings.admin_timeout_ms)
    tp = TopicPartition(topic, 0)
    consumer = make_consumer(settings, group_id=None, client_id="agg-config-read")
    await consumer.start()
    latest: TenantsDocument | None = None
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            batches = await consumer.getmany(tp, timeout_ms=500)
            for record in batches.get(tp, []):
                if record.key != DOCUMENT_KEY:
                    continue
                try:
                    latest = decode_document(record.value, f"{topic} offset {record.offset}")
                except DocumentError:
                    continue  # the services refuse it too; the last usable one is current
    finally:
        await consumer.stop()
    return latest


def tenants_changed(published: Published) -> dict[str, Any]:
    doc = published.document
    return {
        "event_id": published.event_id,
        "correlation_id": published.event_id,
        "operator_id": JOURNAL_KEY.decode(),
        "player_id": "",
        "provider_id": "",
        "occurred_at": doc.applied_at,
        "actor": doc.actor,
        "reason": doc.reason,
        "sequence": doc.sequence,
        "sha256": doc.sha256,
        "previous_sha256": doc.previous_sha256,
        "operators": published.summary.operators.as_avro(),
        "providers": published.summary.providers.as_avro(),
        "games": published.summary.games.as_avro(),
    }


async def publish_tenants(
    settings: Settings,
    tenants: Tenants,
    *,
    actor: str,
    reason: str = "",
    previous: TenantsDocument | None,
    now: datetime | None = None,
) -> Published:
    """Publish ``tenants`` as the document after ``previous``, with its journal event, in one
    transaction."""
    names = TopicNames(settings.topic_prefix)
    document = new_document(
        tenants, previous=previous, actor=actor, reason=reason, now=now or datetime.now(UTC)
    )
    published = Published(
        document=document,
        previous=previous,
        summary=summarize_change(previous.tenants if previous else None, tenants),
        event_id=derive_id("cfg", settings.topic_prefix, document.sequence, document.sha256),
    )
    event = AvroCodec().encode(TENANTS_CHANGED, tenants_changed(published))
    producer = make_producer(
        settings,
        client_id="agg-config-apply",
        transactional_id=f"{settings.topic_prefix}-config-apply",
        linger_ms=0,
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send(names.config, document.encode(), key=DOCUMENT_KEY)
            await producer.send(names.events, event, key=JOURNAL_KEY)
    finally:
        await producer.stop()
    return published


async def apply_tenants(
    settings: Settings, tenants: Tenants, *, actor: str, reason: str = ""
) -> tuple[TenantsDocument | None, Published | None]:
    """Publish ``tenants`` unless they are the current document already: (current document
    before, what was published or None when unchanged). The wallet topics of operators new
    in ``tenants`` are created first (as ``aggregator topics ensure`` would), so that their
    loops find them."""
    previous = await read_latest(settings)
    if previous is not None and previous.sha256 == tenants_sha256(tenants):
        return previous, None
    known = {o.id for o in previous.tenants.operators} if previous else set()
    names = TopicNames(settings.topic_prefix)
    new_topics = {
        name
        for o in tenants.operators
        if o.id not in known
        for name in (names.wallet_commands(o.id), names.wallet_replies(o.id))
    }
    specs = [
        spec
        for spec in catalogue(
            [o.id for o in tenants.operators],
            partitions=settings.partition_count,
            replication_factor=settings.replication_factor,
            min_insync_replicas=settings.min_insync_replicas,
            prefix=settings.topic_prefix,
        )
        if spec.name in new_topics
    ]
    if specs:
        await ensure_topics(settings.kafka_bootstrap, specs, settings.admin_timeout_ms)
    published = await publish_tenants(
        settings, tenants, actor=actor, reason=reason, previous=previous
    )
    return previous, published
