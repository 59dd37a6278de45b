"""Ports: the I/O a service needs, as ``typing.Protocol``s, so that the same service code runs
on the production adapters (``agg_kafka``) and on the deterministic simulator (``agg_sim``)."""

from agg_ports.transport import (
    Clock,
    InRecord,
    OutRecord,
    RebalanceListener,
    Transport,
)

__all__ = ["Clock", "InRecord", "OutRecord", "RebalanceListener", "Transport"]
