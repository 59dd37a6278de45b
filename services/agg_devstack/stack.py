"""``aggregator dev up|down|status``: the local stack of real servers.

``up`` starts what is not running, waits until both servers answer, creates the topics of
the catalogue, applies the tenants file to the config topic (actor ``dev-stack``, when the
topic holds no document or another one: ``aggregator config apply``) before the services
start, and writes the connection settings to ``<state dir>/stack.env``, which every
service and test reads. Running it again changes nothing. ``down`` stops only the processes
whose pid files it wrote, after checking each pid still belongs to that server.

The stack's session secret (the HMAC key of session tokens, ``AGG_SESSION_SECRET``) is random,
generated on the first ``up`` into ``<state dir>/session.secret`` (mode 0600) and kept, so
tokens survive a restart; ``stack.env`` (also 0600) hands it to the services. The ingress
refuses the public default, so this is how a local stack runs without anyone choosing one; a
variable set in the environment still wins over the file.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agg_config.settings import Settings, session_secret_problem
from agg_devstack.kafka import KafkaServer, StackError
from agg_devstack.postgres import PostgresServer
from agg_devstack.services import ServiceProcess
from agg_kafka.admin import ensure_topics
from agg_kafka.topics import catalogue_from_settings


def _has_http_operators(settings: Settings) -> bool:
    """Whether the tenants file has operators with HTTP wallets: then the stack runs the
    reference HTTP wallet for them and the bridge in front of it."""
    from agg_config.tenants import load_tenants

    return any(o.wallet.mode == "http" for o in load_tenants(settings.tenants_file).operators)


DEV_ACTOR = "dev-stack"
"""The actor of the tenants documents the local stack applies at start."""


@dataclass(frozen=True)
class StackInfo:
    kafka_bootstrap: str
    database_url: str
    kafka_pid: int
    postgres_pid: int
    started_in_s: float


class LocalStack:
    def __init__(
        self,
        root: Path,
        settings: Settings,
        *,
        create_topics: bool = True,
        with_services: bool = False,
    ):
        self.root = root
        self.settings = settings
        self.create_topics = create_topics
        self.with_services = with_services
        services_dir = root / "services"
        http_wallets = [
            ServiceProcess(
                "httpwallet", services_dir, "agg_httpwallet", [],
                ready_url=f"http://{settings.httpwallet_host}:{settings.httpwallet_port}/healthz",
            ),
            ServiceProcess(
                "bridge", services_dir, "agg_bridge", ["--client-id", "dev-bridge"],
                ready_log_text='"event":"partitions_assigned"',
            ),
        ] if _has_http_operators(settings) else []  # fmt: skip
        self.services = [
            ServiceProcess(
                "saga", services_dir, "agg_saga", ["--client-id", "dev-saga"],
                ready_log_text='"event":"partitions_assigned"',
            ),
            ServiceProcess(
                "wallet", services_dir, "agg_wallet", [],
                ready_url=f"http://127.0.0.1:{settings.wallet_metrics_port}/healthz",
            ),
            *http_wallets,
            ServiceProcess(
                "projector", services_dir, "agg_projector", [],
                ready_log_text='"event":"positions_restored"',
            ),
            ServiceProcess(
                "ingress", services_dir, "agg_ingress", [],
                ready_url=f"http://{settings.ingress_host}:{settings.ingress_port}/healthz",
            ),
        ]  # fmt: skip
        self.kafka = KafkaServer(
            root / "kafka",
            version=settings.kafka_version,
            port=settings.dev_kafka_port,
            heap_mb=settings.dev_kafka_heap_mb,
        )
        self.postgres = PostgresServer(root / "postgres", port=settings.dev_postgres_port)

    @property
    def state_file(self) -> Path:
        return self.root / "stack.json"

    @property
    def env_file(self) -> Path:
        return self.root / "stack.env"

    @property
    def secret_file(self) -> Path:
        return self.root / "session.secret"

    def session_secret(self) -> str:
        """This stack's session secret: read from :attr:`secret_file`, or generated there
        (64 hex characters, owner-only) if it is missing or unfit."""
        try:
            found = self.secret_file.read_text().strip()
        except OSError:
            found = ""
        if found and session_secret_problem(found) is None:
            return found
        secret = secrets.token_hex(32)
        tmp = self.secret_file.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secret + "\n")
        tmp.replace(self.secret_file)
        return secret

    def _remembered(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_file.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def up(self) -> StackInfo:
        started = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        remembered = self._remembered()
        timeout_s = self.settings.dev_start_timeout_ms / 1000
        ports = remembered.get("kafka_ports")
        known = (int(ports[0]), int(ports[1])) if ports else None
        kafka_pid = self.kafka.start(known, timeout_s)
        if not self.kafka.port and known:
            self.kafka.port, self.kafka.controller_port = known
        pg_pid = self.postgres.start(remembered.get("postgres_port"), timeout_s)
        if not self.postgres.port:
            self.postgres.port = remembered["postgres_port"]
        self.state_file.write_text(
            json.dumps(
                {
                    "kafka_ports": [self.kafka.port, self.kafka.controller_port],
                    "postgres_port": self.postgres.port,
                    "kafka_version": self.settings.kafka_version,
                },
                indent=2,
            )
        )
        info = StackInfo(
            kafka_bootstrap=self.kafka.bootstrap,
            database_url=self.postgres.url(),
            kafka_pid=kafka_pid,
            postgres_pid=pg_pid,
            started_in_s=time.monotonic() - started,
        )
        tmp = self.env_file.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(
                "# written by `aggregator dev up`; read by every service and test\n"
                f"AGG_KAFKA_BOOTSTRAP={info.kafka_bootstrap}\n"
                f"AGG_DATABASE_URL={info.database_url}\n"
                f"AGG_SESSION_SECRET={self.session_secret()}\n"
            )
        tmp.replace(self.env_file)
        if self.create_topics:
            self.ensure_topics(info.kafka_bootstrap)
        if self.with_services:
            self.apply_tenants(info.kafka_bootstrap)
            env = {
                "AGG_KAFKA_BOOTSTRAP": info.kafka_bootstrap,
                "AGG_DATABASE_URL": info.database_url,
                "AGG_STATE_DIR": str(self.root),
            }
            for service in self.services:
                service.start(env, timeout_s)
        return info

    def ensure_topics(self, bootstrap: str) -> list[str]:
        specs = catalogue_from_settings(self.settings)
        report = asyncio.run(ensure_topics(bootstrap, specs, self.settings.admin_timeout_ms))
        return report.lines()

    def apply_tenants(self, bootstrap: str) -> str:
        """Publish the stack's tenants file to the config topic (actor ``dev-stack``) when the
        topic has no document or another one, so the services start on the file. A file
        applied again changes nothing (no document, no journal event)."""
        from agg_config.tenants import load_tenants
        from agg_kafka.config_topic import apply_tenants

        settings = self.settings.model_copy(update={"kafka_bootstrap": bootstrap})
        tenants = load_tenants(settings.tenants_file)
        previous, published = asyncio.run(
            apply_tenants(
                settings,
                tenants,
                actor=DEV_ACTOR,
                reason=f"aggregator dev up: {settings.tenants_file}",
            )
        )
        if published is None:
            assert previous is not None
            return f"tenants unchanged (sequence {previous.sequence})"
        return f"tenants applied as sequence {published.document.sequence}"

    def down(self) -> list[str]:
        """Stop what ``up`` started; return what was stopped."""
        stopped = []
        errors = []
        for service in reversed(self.services):
            if service.stop():
                stopped.append(service.name)
        for name, server in (("kafka", self.kafka), ("postgres", self.postgres)):
            try:
                if server.stop():
                    stopped.append(name)
            except StackError as exc:
                errors.append(f"{name}: {exc}")
        self.env_file.unlink(missing_ok=True)
        if errors:
            raise StackError("; ".join(errors))
        return stopped

    def status(self) -> dict[str, dict[str, Any]]:
        remembered = self._remembered()
        kafka_pid = self.kafka.pid()
        pg_pid = self.postgres.pid()
        ports = remembered.get("kafka_ports") or [None, None]
        st = self.settings
        where = {
            "ingress": f"http://{st.ingress_host}:{st.ingress_port}",
            "saga": f"metrics 127.0.0.1:{st.saga_metrics_port}",
            "wallet": f"metrics 127.0.0.1:{st.wallet_metrics_port}",
            "projector": f"metrics 127.0.0.1:{st.projector_metrics_port}",
            "httpwallet": f"http://{st.httpwallet_host}:{st.httpwallet_port}",
            "bridge": f"metrics 127.0.0.1:{st.bridge_metrics_port}",
        }
        services = {
            s.name: {
                "running": s.pid() is not None,
                "pid": s.pid(),
                "where": where.get(s.name),
                "log": str(s.log_file),
            }
            for s in self.services
        }
        return {
            **services,
            "kafka": {
                "running": kafka_pid is not None,
                "pid": kafka_pid,
                "bootstrap": f"127.0.0.1:{ports[0]}" if ports[0] else None,
                "version": remembered.get("kafka_version"),
                "data": str(self.kafka.data_dir),
                "log": str(self.kafka.log_dir / "server.log"),
            },
            "postgres": {
                "running": pg_pid is not None,
                "pid": pg_pid,
                "port": remembered.get("postgres_port"),
                "data": str(self.postgres.data_dir),
                "log": str(self.postgres.log_file),
            },
        }
