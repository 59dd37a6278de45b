"""The session secret: the ingress refuses to start with the public default or a key shorter
than 32 bytes, with a message that names the setting and its variable (never the value); the
local stack generates a random one per stack, kept owner-only in its state directory."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agg_config.settings import (
    DEV_SESSION_SECRET,
    SESSION_SECRET_BYTES_MIN,
    InsecureSecretError,
    Settings,
    require_session_secret,
    session_secret_problem,
)
from agg_config.tenants import load_tenants
from agg_devstack.stack import LocalStack
from agg_ingress.app import Ingress, build_app

STRONG = "k" * SESSION_SECRET_BYTES_MIN


@pytest.mark.parametrize(
    "secret",
    [DEV_SESSION_SECRET, "a" * 16, "b" * (SESSION_SECRET_BYTES_MIN - 1), "é" * 15],  # 30 bytes
)
def test_unfit_secrets_are_named_without_their_value(secret: str) -> None:
    problem = session_secret_problem(secret)
    assert problem is not None
    assert "session_secret" in problem and "AGG_SESSION_SECRET" in problem
    assert secret not in problem


@pytest.mark.parametrize("secret", [STRONG, "é" * 16, os.urandom(32).hex()])
def test_secrets_of_32_bytes_or_more_are_fit(secret: str) -> None:
    assert session_secret_problem(secret) is None
    assert require_session_secret(Settings(session_secret=secret)) == secret.encode()


def test_the_ingress_refuses_the_default_secret() -> None:
    settings = Settings()
    assert settings.session_secret.get_secret_value() == DEV_SESSION_SECRET
    tenants = load_tenants(settings.tenants_file)
    with pytest.raises(InsecureSecretError, match="AGG_SESSION_SECRET"):
        Ingress(settings, tenants)
    with pytest.raises(InsecureSecretError, match="built-in development default"):
        build_app(settings, tenants)
    short = Settings(session_secret="s" * 31)
    with pytest.raises(InsecureSecretError, match="31 bytes"):
        Ingress(short, tenants)
    assert Ingress(Settings(session_secret=STRONG), tenants).session_secret == STRONG.encode()


def _clean_env(state: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AGG_")}
    return {**env, "AGG_STATE_DIR": str(state), "AGG_INGRESS_METRICS_PORT": "0", **extra}


def test_the_ingress_process_exits_with_a_clear_message(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agg_ingress"], env=_clean_env(tmp_path),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "the ingress does not start" in done.stderr
    assert "AGG_SESSION_SECRET" in done.stderr and "session_secret" in done.stderr
    assert DEV_SESSION_SECRET not in done.stderr + done.stdout


def test_a_short_secret_from_the_environment_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agg_ingress"],
        env=_clean_env(tmp_path, AGG_SESSION_SECRET="only-twenty-bytes-ab"),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "20 bytes, fewer than 32" in done.stderr
    assert "only-twenty-bytes-ab" not in done.stderr + done.stdout


def test_the_local_stack_generates_a_secret_once_and_keeps_it(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path, Settings())
    first = stack.session_secret()
    assert session_secret_problem(first) is None and len(first) == 64
    assert stat.S_IMODE(stack.secret_file.stat().st_mode) == 0o600
    assert LocalStack(tmp_path, Settings()).session_secret() == first
    other = LocalStack(tmp_path / "other", Settings())
    (tmp_path / "other").mkdir()
    assert other.session_secret() != first  # one per stack


def test_an_unfit_secret_file_is_replaced(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path, Settings())
    stack.secret_file.write_text(DEV_SESSION_SECRET + "\n")
    replaced = stack.session_secret()
    assert replaced != DEV_SESSION_SECRET and session_secret_problem(replaced) is None
    assert stat.S_IMODE(stack.secret_file.stat().st_mode) == 0o600
