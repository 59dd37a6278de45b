"""``make up`` / ``make up`` again / ``make status`` / ``make down`` on a stack of its own
(state in a temporary directory), exactly as a developer runs them."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from agg_config.paths import repo_root
from agg_config.settings import Settings, load_settings, session_secret_problem
from agg_devstack.kafka import resolve_jars
from agg_devstack.process import alive, free_port

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None or shutil.which("make") is None,
    reason="the local stack needs java and make",
)


PORTS = {
    "AGG_INGRESS_PORT": str(free_port()),
    "AGG_SAGA_METRICS_PORT": str(free_port()),
    "AGG_WALLET_METRICS_PORT": str(free_port()),
    "AGG_INGRESS_METRICS_PORT": str(free_port()),
    "AGG_PROJECTOR_METRICS_PORT": str(free_port()),
    "AGG_BRIDGE_METRICS_PORT": str(free_port()),
    "AGG_HTTPWALLET_PORT": str(free_port()),
}
SERVICES = ("saga", "wallet", "httpwallet", "bridge", "projector", "ingress")


def _make(target: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGG_")}
    env["AGG_STATE_DIR"] = str(state)
    env.update(PORTS)
    # the dev tenants, with the HTTP operator's wallet URL on this test's free port
    tenants = state.parent / "aggregator.yaml"
    if not tenants.exists():
        dev = (repo_root() / "deploy" / "local" / "aggregator.yaml").read_text()
        port = PORTS["AGG_HTTPWALLET_PORT"]
        tenants.write_text(dev.replace("http://127.0.0.1:9186/", f"http://127.0.0.1:{port}/"))
    env["AGG_TENANTS_FILE"] = str(tenants)
    return subprocess.run(
        ["make", "-s", "-C", str(repo_root()), target],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def _pids(state: Path) -> tuple[int, int]:
    kafka = int((state / "kafka" / "kafka.pid").read_text())
    postgres = int((state / "postgres" / "data" / "postmaster.pid").read_text().split()[0])
    return kafka, postgres


def test_up_twice_status_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    try:
        first = _make("up", state)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "kafka" in first.stdout and "postgres" in first.stdout
        assert all(name in first.stdout for name in SERVICES)
        pids = _pids(state)
        service_pids = [int((state / "services" / f"{n}.pid").read_text()) for n in SERVICES]
        assert all(alive(p) for p in service_pids)
        assert all(alive(p) for p in pids)

        # the connection settings are where every service reads them
        monkeypatch.setenv("AGG_STATE_DIR", str(state))
        for key in ("AGG_KAFKA_BOOTSTRAP", "AGG_DATABASE_URL", "AGG_SESSION_SECRET"):
            monkeypatch.delenv(key, raising=False)
        settings = load_settings()
        assert settings.kafka_bootstrap != Settings.model_fields["kafka_bootstrap"].default
        with psycopg.connect(settings.database_url, connect_timeout=5) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        # the stack's own random session secret (the ingress started with it), owner-only
        secret = settings.session_secret.get_secret_value()
        assert session_secret_problem(secret) is None
        for private in (state / "stack.env", state / "session.secret"):
            assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
        password = (state / "postgres" / "password").read_text().strip()
        assert password in settings.database_url
        for secret_text in (secret, password):
            assert secret_text not in first.stdout + first.stderr

        # harmless the second time: same processes, same settings
        second = _make("up", state)
        assert second.returncode == 0, second.stdout + second.stderr
        assert _pids(state) == pids
        assert [int((state / "services" / f"{n}.pid").read_text()) for n in SERVICES] == (
            service_pids
        )
        assert load_settings().database_url == settings.database_url
        assert load_settings().session_secret == settings.session_secret

        status = _make("status", state)
        assert status.returncode == 0, status.stdout + status.stderr
        as_json = subprocess.run(
            [str(Path(sys.executable).parent / "aggregator"), "dev", "status", "--json"],
            env={**os.environ, "AGG_STATE_DIR": str(state)},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        for secret_text in (secret, password):
            assert secret_text not in status.stdout + as_json.stdout + as_json.stderr
        assert status.stdout.count("running (pid") == 2 + len(SERVICES)  # kafka, postgres
        assert f"http://127.0.0.1:{PORTS['AGG_INGRESS_PORT']}" in status.stdout
        assert settings.kafka_bootstrap in status.stdout

        # a pid file pointing at someone else's process is not obeyed
        bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            down = _make("down", state)
            assert down.returncode == 0, down.stdout + down.stderr
            assert "kafka" in down.stdout and "postgres" in down.stdout
            assert not any(alive(p) for p in (*pids, *service_pids))
            (state / "kafka" / "kafka.pid").write_text(f"{bystander.pid}\n")
            again = _make("down", state)
            assert again.returncode == 0
            assert "nothing was running" in again.stdout
            assert bystander.poll() is None, "down must stop only what up started"
        finally:
            bystander.kill()
            bystander.wait()

        stopped = _make("status", state)
        assert stopped.returncode == 0
        assert stopped.stdout.count("stopped") == 2 + len(SERVICES)
        cli = subprocess.run(
            [str(Path(sys.executable).parent / "aggregator"), "dev", "status"],
            env={**os.environ, "AGG_STATE_DIR": str(state)},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert cli.returncode == 3, "scripts can tell a stopped stack from a running one"
    finally:
        _make("down", state)


def test_kafka_jars_are_reused_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = Settings().kafka_version
    cached = resolve_jars(version)  # resolved by the stack already started for this session
    assert (cached / ".complete").is_file()
    # with no Maven on PATH the cached jars are still found: nothing is fetched twice
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert resolve_jars(version) == cached
    assert any(p.name.startswith("kafka_2.13-") for p in cached.glob("*.jar"))
