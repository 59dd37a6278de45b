"""The systems the benchmark drives with the same load generator, as real processes:

- ``pipeline``: the product (ingress, saga worker, reference operator wallet, projector);
- ``floor``: the relay floor, the same HTTP front and the same four Kafka hops with no work,
  relayed by production's batch protocol on aiokafka (``bench.floor``);
- ``physical``: the physical floor, the same front and hops with no-op relays as tight as
  librdkafka allows, under the same guarantees (``bench.physical``);
- ``direct``: a synchronous HTTP aggregator calling an HTTP seamless wallet on the same
  PostgreSQL ledger, no Kafka (``bench.direct``).
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agg_config.paths import repo_root
from agg_devstack.process import free_port
from agg_devstack.services import ServiceProcess

DESCRIPTIONS = {
    "pipeline": "provider -> ingress -> Kafka -> saga -> Kafka -> operator wallet (PostgreSQL) "
    "-> Kafka -> saga -> Kafka -> ingress; projector builds PostgreSQL views from the journal",
    "floor": "relay floor: same HTTP front technology and the same 4 Kafka hops through the "
    "same broker, relays do no work (no Avro, no decisions, no PostgreSQL) but keep the batch "
    "protocol (aiokafka: publish, await every ack, commit)",
    "physical": "physical floor: same HTTP front, same 4 Kafka hops, same guarantees (acks=all, "
    "idempotence, read_committed, committed offsets); no-op relays on librdkafka that never "
    "wait for an ack or a commit before fetching again",
    "direct": "provider -> HTTP aggregator -> HTTP seamless wallet (same PostgreSQL ledger, "
    "idempotent by transaction) -> response; no Kafka, no journal",
}


def scrape(url: str, metric: str) -> float | None:
    """The sum of every sample of ``metric`` on a Prometheus text page (None if unreachable)."""
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            text = response.read().decode()
    except OSError:
        return None
    pattern = re.compile(rf"^{re.escape(metric)}(?:\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    return sum(float(v) for v in pattern.findall(text))


@dataclass
class System:
    name: str
    base_url: str
    processes: dict[str, ServiceProcess]  # role (ingress, saga, wallet, projector) -> process
    env: dict[str, str]
    metrics: dict[str, str] = field(default_factory=dict)  # role -> /metrics URL

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self.name]

    def start(self, timeout_s: float = 120) -> None:
        for process in self.processes.values():
            process.start(self.env, timeout_s)

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()

    def pid_of(self, role: str) -> Callable[[], int | None]:
        process = self.processes.get(role)
        return (lambda: None) if process is None else process.pid

    def lag(self, role: str, metric: str) -> float | None:
        url = self.metrics.get(role)
        return None if url is None else scrape(url, metric)

    def drain(self, timeout_s: float = 60) -> float:
        """Wait until the saga and the wallet have consumed everything (pipeline only)."""
        started = time.monotonic()
        checks = [("saga", "agg_saga_consumer_lag"), ("wallet", "agg_wallet_consumer_lag")]
        while time.monotonic() - started < timeout_s:
            lags = [self.lag(role, metric) for role, metric in checks if role in self.metrics]
            if all(lag is not None and lag == 0 for lag in lags):
                break
            time.sleep(0.5)
        return time.monotonic() - started


def pipeline(root: Path, env: dict[str, str]) -> System:
    ingress, saga, wallet, projector = free_port(), free_port(), free_port(), free_port()
    env = {
        **env,
        "AGG_INGRESS_PORT": str(ingress),
        "AGG_INGRESS_METRICS_PORT": "0",
        "AGG_SAGA_METRICS_PORT": str(saga),
        "AGG_WALLET_METRICS_PORT": str(wallet),
        "AGG_PROJECTOR_METRICS_PORT": str(projector),
    }
    services = root / "pipeline"
    processes = {
        "saga": ServiceProcess(
            "saga",
            services,
            "agg_saga",
            ["--client-id", "bench-saga"],
            ready_log_text='"event":"partitions_assigned"',
        ),
        "wallet": ServiceProcess(
            "wallet",
            services,
            "agg_wallet",
            ["--client-id", "bench-wallet"],
            ready_url=f"http://127.0.0.1:{wallet}/healthz",
        ),
        "projector": ServiceProcess(
            "projector",
            services,
            "agg_projector",
            ["--client-id", "bench-projector"],
            ready_log_text='"event":"positions_restored"',
        ),
        "ingress": ServiceProcess(
            "ingress", services, "agg_ingress", [], ready_url=f"http://127.0.0.1:{ingress}/healthz"
        ),
    }
    metrics = {
        "ingress": f"http://127.0.0.1:{ingress}/metrics",
        "saga": f"http://127.0.0.1:{saga}/metrics",
        "wallet": f"http://127.0.0.1:{wallet}/metrics",
        "projector": f"http://127.0.0.1:{projector}/metrics",
    }
    return System("pipeline", f"http://127.0.0.1:{ingress}", processes, env, metrics)


def floor(root: Path, env: dict[str, str]) -> System:
    port = free_port()
    env = {**env, "PYTHONPATH": str(repo_root())}
    services = root / "floor"
    processes = {
        "saga": ServiceProcess(
            "floor-saga",
            services,
            "bench.floor",
            ["saga"],
            ready_log_text='"event":"partitions_assigned"',
        ),
        "wallet": ServiceProcess(
            "floor-wallet",
            services,
            "bench.floor",
            ["wallet"],
            ready_log_text='"event":"partitions_assigned"',
        ),
        "ingress": ServiceProcess(
            "floor-front",
            services,
            "bench.floor",
            ["front", "--port", str(port)],
            ready_url=f"http://127.0.0.1:{port}/healthz",
        ),
    }
    return System("floor", f"http://127.0.0.1:{port}", processes, env)


def physical(root: Path, env: dict[str, str]) -> System:
    port = free_port()
    env = {**env, "PYTHONPATH": str(repo_root())}
    services = root / "physical"
    assigned = '"event":"partitions_assigned"'
    processes = {
        "saga": ServiceProcess(
            "physical-saga", services, "bench.physical", ["saga"], ready_log_text=assigned
        ),
        "wallet": ServiceProcess(
            "physical-wallet", services, "bench.physical", ["wallet"], ready_log_text=assigned
        ),
        "ingress": ServiceProcess(
            "physical-front",
            services,
            "bench.physical",
            ["front", "--port", str(port)],
            ready_url=f"http://127.0.0.1:{port}/healthz",
        ),
    }
    return System("physical", f"http://127.0.0.1:{port}", processes, env)


def direct(root: Path, env: dict[str, str]) -> System:
    port, wallet = free_port(), free_port()
    env = {**env, "PYTHONPATH": str(repo_root())}
    services = root / "direct"
    processes = {
        "wallet": ServiceProcess(
            "direct-wallet",
            services,
            "bench.direct",
            ["wallet", "--port", str(wallet)],
            ready_url=f"http://127.0.0.1:{wallet}/healthz",
        ),
        "ingress": ServiceProcess(
            "direct-aggregator",
            services,
            "bench.direct",
            ["aggregator", "--port", str(port), "--wallet-url", f"http://127.0.0.1:{wallet}"],
            ready_url=f"http://127.0.0.1:{port}/healthz",
        ),
    }
    return System("direct", f"http://127.0.0.1:{port}", processes, env)


BUILDERS: dict[str, Callable[[Path, dict[str, str]], System]] = {
    "pipeline": pipeline,
    "floor": floor,
    "physical": physical,
    "direct": direct,
}
ORDER = ("pipeline", "floor", "physical", "direct")
"""The order the systems run in and are reported in."""
WITHOUT_LEDGER = frozenset({"floor", "physical"})
"""Systems that move no money: no sessions of their own, no money check."""
LETTERS = {"pipeline": "p", "floor": "f", "physical": "k", "direct": "d"}
"""Each system's letter in player, transaction and request ids."""
