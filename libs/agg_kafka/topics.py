"""The topic catalogue: every topic of the design brief (section 4) with its partition count,
replication factor and configuration. Pure data, derived from settings and tenants.

All topics share one partition count: the ones the saga reads (requests, wallet replies) must
be co-partitioned so that one worker owns each player on every input, and keeping the rest
equal means a key lands on the same partition number everywhere, which makes tracing simple.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agg_config.settings import Settings

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str] = field(default_factory=dict)
    purpose: str = ""
    co_partitioned: bool = True


@dataclass(frozen=True)
class TopicNames:
    prefix: str = "agg"

    @property
    def requests(self) -> str:
        return f"{self.prefix}.requests"

    @property
    def outcomes(self) -> str:
        return f"{self.prefix}.outcomes"

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}.deadletters"

    @property
    def saga_state(self) -> str:
        return f"{self.prefix}.saga.state"

    @property
    def config(self) -> str:
        """The current tenants document (key ``tenants``; ``agg_config.document``)."""
        return f"{self.prefix}.config"

    def wallet_commands(self, operator_id: str) -> str:
        return f"{self.prefix}.wallet.commands.{operator_id}"

    def wallet_replies(self, operator_id: str) -> str:
        return f"{self.prefix}.wallet.replies.{operator_id}"


def catalogue(
    operator_ids: Iterable[str],
    *,
    partitions: int,
    replication_factor: int,
    min_insync_replicas: int,
    prefix: str = "agg",
) -> list[TopicSpec]:
    """Every topic the aggregator needs for these operators."""
    if min_insync_replicas > replication_factor:
        raise ValueError(
            f"min.insync.replicas {min_insync_replicas} exceeds replication factor "
            f"{replication_factor}: no acks=all write could ever succeed"
        )
    names = TopicNames(prefix)
    durable = {"min.insync.replicas": str(min_insync_replicas), "cleanup.policy": "delete"}

    def spec(name: str, retention_ms: int, purpose: str) -> TopicSpec:
        configs = MappingProxyType({**durable, "retention.ms": str(retention_ms)})
        return TopicSpec(name, partitions, replication_factor, configs, purpose)

    topics = [
        spec(names.requests, 7 * DAY_MS, "canonical provider requests (ingress -> saga)"),
        spec(names.outcomes, 1 * DAY_MS, "saga decisions answered to ingress"),
        spec(names.events, -1, "the journal: every domain event, kept forever"),
        spec(names.dead_letters, -1, "messages no consumer could process, with the reason"),
        TopicSpec(
            names.saga_state,
            partitions,
            replication_factor,
            MappingProxyType(
                {
                    "min.insync.replicas": str(min_insync_replicas),
                    # the latest state per player is all a restarting worker needs; compact
                    # only (never delete), so no player's state can age out
                    "cleanup.policy": "compact",
                    "min.compaction.lag.ms": str(60 * 1000),
                    "segment.ms": str(DAY_MS),
                }
            ),
            "saga state per player (changelog, read back on partition assignment)",
        ),
        TopicSpec(
            names.config,
            # one document, read whole by every instance: one partition keeps it in order
            1,
            replication_factor,
            MappingProxyType(
                {
                    "min.insync.replicas": str(min_insync_replicas),
                    # only the latest document matters; compact, never delete, so a service
                    # starting a year later still finds the tenants it must run
                    "cleanup.policy": "compact",
                    "min.compaction.lag.ms": str(60 * 1000),
                    "segment.ms": str(DAY_MS),
                }
            ),
            "the current tenants document (aggregator config apply; every service follows it)",
            co_partitioned=False,
        ),
    ]
    for op in sorted(set(operator_ids)):
        topics.append(spec(names.wallet_commands(op), 7 * DAY_MS, f"wallet commands to {op}"))
        topics.append(spec(names.wallet_replies(op), 7 * DAY_MS, f"wallet replies from {op}"))
    return topics


def catalogue_from_settings(settings: Settings) -> list[TopicSpec]:
    """The catalogue for the operators of the configured tenants file."""
    from agg_config.tenants import load_tenants

    tenants = load_tenants(settings.tenants_file)
    return catalogue(
        [o.id for o in tenants.operators],
        partitions=settings.partition_count,
        replication_factor=settings.replication_factor,
        min_insync_replicas=settings.min_insync_replicas,
        prefix=settings.topic_prefix,
    )
