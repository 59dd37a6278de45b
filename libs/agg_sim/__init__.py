"""The deterministic simulator's port adapters: an in-memory broker with per-partition order,
at-least-once redelivery after a crash, rebalances, and a seeded clock. Everything is driven
by one thread and one seed, so a run is a pure function of its schedule."""

from agg_sim.broker import SimBroker, SimClock, SimCrash, SimTransport

__all__ = ["SimBroker", "SimClock", "SimCrash", "SimTransport"]
