"""A PostgreSQL cluster from the system's binaries in a project-local directory.

initdb refuses to run as root, so when the stack is started by root the cluster belongs to
the ``postgres`` system user (created by Debian's postgresql package); otherwise to the
caller. Authentication is scram-sha-256 with a generated password kept in the data directory.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from agg_devstack.kafka import StackError
from agg_devstack.process import free_port, port_is_free, read_pid, tail, wait_until

DATABASE = "aggregator"
USER = "aggregator"


def find_bindir() -> Path:
    """The directory with initdb and pg_ctl: ``AGG_PG_BINDIR``, ``pg_config --bindir``, or the
    newest ``/usr/lib/postgresql/*/bin``."""
    env = os.environ.get("AGG_PG_BINDIR")
    candidates: list[Path] = [Path(env)] if env else []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True
    )
    candidates += [Path(p) for p in versions]
    for c in candidates:
        if (c / "initdb").is_file() and (c / "pg_ctl").is_file():
            return c
    raise StackError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; install them "
        "(Debian: apt-get install postgresql) or set AGG_PG_BINDIR"
    )


def _owner() -> pwd.struct_passwd | None:
    """The system user to run the server as, or None to run as the caller."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(os.environ.get("AGG_PG_OS_USER", "postgres"))
    except KeyError:
        raise StackError(
            "running as root, and there is no 'postgres' user for the server to run as; "
            "install Debian's postgresql package or set AGG_PG_OS_USER"
        ) from None


@dataclass
class PostgresServer:
    root: Path
    port: int = 0

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    def url(self) -> str:
        password = self.password_file.read_text().strip()
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{DATABASE}"

    def pid(self) -> int | None:
        return read_pid(self.data_dir / "postmaster.pid", str(self.data_dir))

    def _run(self, args: list[str], timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        owner = _owner()
        kwargs: dict[str, object] = {}
        if owner is not None:
            kwargs = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        proc: subprocess.CompletedProcess[str] = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout_s, check=False,
            cwd=self.root, stdin=subprocess.DEVNULL, **kwargs,  # type: ignore[call-overload]
        )  # fmt: skip
        return proc

    def _prepare(self, bindir: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        owner = _owner()
        if not self.password_file.is_file():
            # owner-only from its creation: never readable by others, not even for a moment
            fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(18) + "\n")
        if owner is not None:
            # the server user must be able to reach the directory and own its own files
            for p in [self.root, *self.root.parents]:
                if p == Path("/"):
                    break
                mode = p.stat().st_mode
                if not mode & 0o001:
                    p.chmod(mode | 0o001)
            for p in (self.root, self.socket_dir, self.password_file):
                os.chown(p, owner.pw_uid, owner.pw_gid)
            if self.data_dir.exists():
                os.chown(self.data_dir, owner.pw_uid, owner.pw_gid)
        if (self.data_dir / "PG_VERSION").is_file():
            return
        proc = self._run(
            [str(bindir / "initdb"), "-D", str(self.data_dir), "-U", USER,
             f"--pwfile={self.password_file}", "--auth=scram-sha-256",
             "-E", "UTF8", "--locale=C", "--no-sync"],
        )  # fmt: skip
        if proc.returncode != 0:
            raise StackError(f"initdb failed:\n{proc.stdout}{proc.stderr}")

    def start(self, remembered_port: int | None, timeout_s: float) -> int:
        running = self.pid()
        if running is not None:
            return running
        bindir = find_bindir()
        if not self.port:
            self.port = (
                remembered_port
                if remembered_port and port_is_free(remembered_port)
                else free_port()
            )
        if not port_is_free(self.port):
            raise StackError(f"port {self.port} for PostgreSQL is taken by another process")
        self._prepare(bindir)
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.socket_dir}",
                "-c max_connections=200",
                "-c shared_buffers=256MB",
                "-c fsync=on",
            ]
        )
        proc = self._run(
            [str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
             "-o", options, "-w", "-t", str(int(timeout_s)), "start"],
            timeout_s=timeout_s + 10,
        )  # fmt: skip
        if proc.returncode != 0:
            raise StackError(
                f"PostgreSQL did not start:\n{proc.stdout}{proc.stderr}\n{tail(self.log_file)}"
            )
        if not wait_until(self._answers, timeout_s, 0.3):
            raise StackError(
                f"PostgreSQL does not answer on port {self.port}:\n{tail(self.log_file)}"
            )
        self._create_database()
        pid = self.pid()
        if pid is None:
            raise StackError("PostgreSQL started but its postmaster.pid is unreadable")
        return pid

    def _connect_params(self, dbname: str) -> dict[str, object]:
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": USER,
            "password": self.password_file.read_text().strip(),
            "dbname": dbname,
            "connect_timeout": 3,
        }

    def _answers(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(**self._connect_params("postgres")) as conn:  # type: ignore[arg-type]
                conn.execute("select 1")
            return True
        except psycopg.OperationalError:
            return False

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(**self._connect_params("postgres"), autocommit=True) as conn:  # type: ignore[arg-type]
            exists = conn.execute(
                "select 1 from pg_database where datname = %s", (DATABASE,)
            ).fetchone()
            if not exists:
                conn.execute(f'create database "{DATABASE}"')

    def stop(self) -> bool:
        if self.pid() is None:
            return False
        bindir = find_bindir()
        proc = self._run(
            [str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"]
        )
        if proc.returncode != 0:
            raise StackError(f"pg_ctl stop failed:\n{proc.stdout}{proc.stderr}")
        return True
