"""The aggregator's own services (saga worker, reference wallet, ingress) as background
processes of the local stack, each with a log file and a pid file in its own directory.

A pid is trusted only if that process runs our module and its working directory is the
service's directory, so ``down`` can never signal a process of another stack or user.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agg_devstack.kafka import StackError
from agg_devstack.process import alive, cmdline, tail, terminate, wait_until


def log_contains(path: Path, text: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return text in path.read_text(errors="replace")
        except OSError:
            return False

    return check


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    return check


@dataclass
class ServiceProcess:
    name: str
    root: Path
    module: str
    args: list[str] = field(default_factory=list)
    ready_log_text: str | None = None
    ready_url: str | None = None

    @property
    def pid_file(self) -> Path:
        return self.root / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.root / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if not alive(pid) or f"-m {self.module}" not in cmdline(pid):
            return None
        try:
            if Path(f"/proc/{pid}/cwd").resolve() != self.root.resolve():
                return None
        except OSError:
            return None
        return pid

    def _ready(self) -> bool:
        checks = []
        if self.ready_log_text:
            checks.append(log_contains(self.log_file, self.ready_log_text))
        if self.ready_url:
            checks.append(http_ok(self.ready_url))
        return all(check() for check in checks)

    def start(self, env: dict[str, str], timeout_s: float) -> int:
        running = self.pid()
        if running is not None:
            return running
        self.root.mkdir(parents=True, exist_ok=True)
        if self.log_file.exists():
            self.log_file.replace(self.log_file.with_suffix(".log.1"))
        out = self.log_file.open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=self.root, env={**os.environ, **env},
        )  # fmt: skip
        self.pid_file.write_text(f"{proc.pid}\n")
        ok = wait_until(lambda: proc.poll() is not None or self._ready(), timeout_s, 0.2)
        if proc.poll() is not None or not ok:
            if proc.poll() is None:
                terminate(proc.pid, 10)
            raise StackError(
                f"{self.name} did not become ready within {timeout_s:.0f}s; "
                f"last lines of {self.log_file}:\n{tail(self.log_file)}"
            )
        return proc.pid

    def stop(self) -> bool:
        pid = self.pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        terminate(pid, grace_s=30)
        return True
