"""A single-node Apache Kafka 4.x (KRaft, combined broker + controller) for the local stack.

The broker's jars come from Maven Central through ``deploy/local/kafka/pom.xml`` and are
cached per version under the user's cache directory, so only the first run downloads.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from agg_config.paths import repo_root
from agg_devstack.maven import MavenError, resolve
from agg_devstack.process import (
    alive,
    free_port,
    port_answers,
    port_is_free,
    read_pid,
    tail,
    terminate,
    wait_until,
)

MAIN_CLASS = "kafka.Kafka"


class StackError(RuntimeError):
    """The local stack could not be brought to the asked state; the message says why."""


def resolve_jars(version: str) -> Path:
    """Directory holding every jar the broker and its tools need (resolved once, then reused)."""
    pom = repo_root() / "deploy" / "local" / "kafka" / "pom.xml"
    try:
        return resolve(pom, f"kafka-{version}", {"kafka.version": version}, "kafka_2.13-")
    except MavenError as exc:
        raise StackError(str(exc)) from None


@dataclass
class KafkaServer:
    root: Path
    version: str
    port: int = 0
    controller_port: int = 0
    heap_mb: int = 768

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def config_file(self) -> Path:
        return self.root / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.root / "kafka.pid"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pid(self) -> int | None:
        return read_pid(self.pid_file, str(self.config_file))

    def _choose_ports(self, remembered: tuple[int, int] | None) -> None:
        if self.port and self.controller_port:
            return
        if remembered and all(port_is_free(p) for p in remembered):
            self.port, self.controller_port = remembered
            return
        if not self.port:
            self.port = free_port()
        self.controller_port = free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()

    def _write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        self.config_file.write_text(
            "\n".join(
                [
                    "# written by `aggregator dev up`; edits are overwritten",
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.data_dir}",
                    # topics are created only from the catalogue, never by a stray client
                    "auto.create.topics.enable=false",
                    "num.partitions=1",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=12",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "log.retention.check.interval.ms=300000",
                    "",
                ]
            )
        )
        (self.root / "log4j2.properties").write_text(
            "\n".join(
                [
                    "status = warn",
                    "appender.file.type = RollingFile",
                    "appender.file.name = FILE",
                    f"appender.file.fileName = {self.log_dir / 'server.log'}",
                    f"appender.file.filePattern = {self.log_dir / 'server.log.%i'}",
                    "appender.file.layout.type = PatternLayout",
                    "appender.file.layout.pattern = [%d] %p %m (%c)%n",
                    "appender.file.policies.type = Policies",
                    "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
                    "appender.file.policies.size.size = 50MB",
                    "appender.file.strategy.type = DefaultRolloverStrategy",
                    "appender.file.strategy.max = 3",
                    "rootLogger.level = INFO",
                    "rootLogger.appenderRef.file.ref = FILE",
                    "logger.kafka.name = kafka",
                    "logger.kafka.level = INFO",
                    "logger.state.name = state.change.logger",
                    "logger.state.level = WARN",
                    "",
                ]
            )
        )

    def _java(self, jars: Path, *args: str, heap: bool = False) -> list[str]:
        cmd = [shutil.which("java") or "java"]
        if heap:
            cmd += [f"-Xms{self.heap_mb // 2}m", f"-Xmx{self.heap_mb}m", "-XX:+UseG1GC",
                    "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true"]  # fmt: skip
        cmd += [f"-Dlog4j2.configurationFile={self.root / 'log4j2.properties'}",
                "-cp", f"{jars}/*", *args]  # fmt: skip
        return cmd

    def _format_storage(self, jars: Path) -> None:
        if (self.data_dir / "meta.properties").is_file():
            return
        cluster_id = "-"
        while cluster_id.startswith("-"):  # as Kafka's Uuid.randomUuid: no id read as an option
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        proc = subprocess.run(
            self._java(jars, "kafka.tools.StorageTool", "format", "--standalone",
                       "-t", cluster_id, "-c", str(self.config_file)),
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{proc.stdout}{proc.stderr}")

    def start(self, remembered_ports: tuple[int, int] | None, timeout_s: float) -> int:
        running = self.pid()
        if running is not None:
            return running
        jars = resolve_jars(self.version)
        self._choose_ports(remembered_ports)
        for p in (self.port, self.controller_port):
            if not port_is_free(p):
                raise StackError(f"port {p} for Kafka is taken by another process")
        self._write_config()
        self._format_storage(jars)
        out = (self.log_dir / "kafka.out").open("ab")
        proc = subprocess.Popen(
            self._java(jars, MAIN_CLASS, str(self.config_file), heap=True),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=self.root,
        )  # fmt: skip
        self.pid_file.write_text(f"{proc.pid}\n")
        ok = wait_until(lambda: not alive(proc.pid) or self._answers(), timeout_s, 0.5)
        if not alive(proc.pid) or not ok:
            if alive(proc.pid):
                terminate(proc.pid, 10)
            raise StackError(
                f"Kafka did not come up within {timeout_s:.0f}s; last log lines:\n"
                f"{tail(self.log_dir / 'server.log')}\n{tail(self.log_dir / 'kafka.out')}"
            )
        return proc.pid

    def _answers(self) -> bool:
        if not port_answers(self.port):
            return False
        return asyncio.run(_broker_ready(self.bootstrap))

    def stop(self) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        terminate(pid, grace_s=60)
        self.pid_file.unlink(missing_ok=True)
        return True


async def _broker_ready(bootstrap: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await asyncio.wait_for(admin.start(), 5)
        cluster = await asyncio.wait_for(admin.describe_cluster(), 5)
        return bool(cluster.get("brokers"))
    except (TimeoutError, KafkaError, OSError):
        return False
    finally:
        await admin.close()
