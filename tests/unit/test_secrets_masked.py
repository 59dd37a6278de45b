"""Secrets are never printed or logged: the session secret, the database password (in the
URL and the other libpq forms) and the tenants' provider and operator secrets, in settings
reprs, validation errors, `aggregator config check --show`, and JSON log lines."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from agg_cli.main import main as aggregator
from agg_config.redact import MASK, redact_field, redact_url
from agg_config.settings import Settings
from agg_config.tenants import TenantsError, load_tenants, parse_tenants
from agg_obs import logs
from agg_obs.logs import JsonFormatter, get_logger

PASSWORD = "pw-Zq81xNc0"
SESSION_SECRET = "session-secret-7f3a9b2c4d5e6f708192a3b4c5d6e7f8"
DB_URL = f"postgresql://aggregator:{PASSWORD}@127.0.0.1:5432/aggregator"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("AGG_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AGG_STATE_DIR", str(tmp_path))


def tenant_secrets() -> list[str]:
    tenants = load_tenants(Settings().tenants_file)
    found = [o.secret.reveal().decode() for o in tenants.operators]
    found += [p.shared_secret().decode() for p in tenants.providers if p.secret]
    assert found and all(len(s) >= 16 for s in found)
    return found


def assert_no_secret(text: str, *extra: str) -> None:
    for secret in (PASSWORD, SESSION_SECRET, *tenant_secrets(), *extra):
        assert secret not in text


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        (DB_URL, "postgresql://aggregator:***@127.0.0.1:5432/aggregator"),
        ("postgresql://u:p%40ss@h1:1,h2:2/db", "postgresql://u:***@h1:1,h2:2/db"),
        ("postgresql://u@h/db?sslmode=require&password=x1&a=b",
         "postgresql://u@h/db?sslmode=require&password=***&a=b"),
        ("host=h port=5432 password=x1 dbname=d", "host=h port=5432 password=*** dbname=d"),
        ("host=h password='a b\\' c' dbname=d", "host=h password=*** dbname=d"),
        # nothing to hide: unchanged
        ("postgresql://aggregator@127.0.0.1:5432/aggregator",
         "postgresql://aggregator@127.0.0.1:5432/aggregator"),
        ("postgresql://h:5432/db?options=a@b", "postgresql://h:5432/db?options=a@b"),
        ("http://127.0.0.1:9000/wallet", "http://127.0.0.1:9000/wallet"),
    ],
)  # fmt: skip
def test_connection_strings_lose_their_password(given: str, shown: str) -> None:
    assert redact_url(given) == shown


def test_settings_repr_and_str_mask_secrets() -> None:
    settings = Settings(database_url=DB_URL, session_secret=SESSION_SECRET)
    for text in (repr(settings), str(settings), f"{settings}", f"{settings.session_secret}"):
        assert_no_secret(text)
    assert "postgresql://aggregator:***@127.0.0.1" in repr(settings)
    assert settings.shown("database_url") == redact_url(DB_URL)
    assert settings.shown("session_secret").startswith("**********")
    # the values themselves are intact
    assert settings.database_url == DB_URL
    assert settings.session_secret.get_secret_value() == SESSION_SECRET


def test_a_refused_secret_is_not_echoed_by_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    almost = "fifteen-chars-x"
    monkeypatch.setenv("AGG_SESSION_SECRET", almost)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert [e["loc"] for e in caught.value.errors()] == [("session_secret",)]
    assert almost not in str(caught.value)


def test_tenants_reprs_and_errors_hold_no_secret() -> None:
    tenants = load_tenants(Settings().tenants_file)
    assert_no_secret(repr(tenants) + str(tenants) + repr(tenants.operators[0].secret))
    secret = tenants.providers[0].secret
    assert secret is not None and "inline value (masked" in secret.describe()
    data = {
        "operators": [{"id": "op", "name": "Op", "secret": {"value": "short-secret"},
                       "currencies": ["EUR"], "providers": ["pv"]}],
        "providers": [{"id": "pv", "name": "Pv", "secret": {"value": "x" * 20, "env": "X"}}],
    }  # fmt: skip
    with pytest.raises(TenantsError) as caught:
        parse_tenants(data)
    assert "short-secret" not in str(caught.value) and "x" * 20 not in str(caught.value)


def test_config_check_show_prints_no_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGG_DATABASE_URL", DB_URL)
    monkeypatch.setenv("AGG_SESSION_SECRET", SESSION_SECRET)
    assert aggregator(["config", "check", "--show"]) == 0
    out = capsys.readouterr()
    assert_no_secret(out.out + out.err)
    assert "AGG_SESSION_SECRET" in out.out and "**********" in out.out
    assert "postgresql://aggregator:***@127.0.0.1:5432/aggregator" in out.out
    assert "operator op-alpha" in out.out and "inline value (masked" in out.out
    assert "rounds auto-close after 1800 s idle" in out.out
    assert "warning" not in out.err


def test_config_check_warns_about_the_default_session_secret(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert aggregator(["config", "check", "--show"]) == 0
    out = capsys.readouterr()
    assert "warning: the ingress will not start" in out.err
    assert "dev-session-secret-change-me-0000" not in out.out + out.err


def _log_line(direct: bool, **fields: object) -> dict[str, object]:
    """One line through the handler chain, or written directly as the services write it
    once :func:`configure_logging` has run."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("agg.secrets-test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    saved, logs._direct = logs._direct, stream if direct else None
    try:
        get_logger("secrets-test").event("started", **fields)
    finally:
        logs._direct = saved
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert text.count("\n") == 1
    assert_no_secret(text)
    line: dict[str, object] = json.loads(text)
    return line


@pytest.mark.parametrize("direct", [False, True], ids=["handler", "direct"])
def test_log_lines_mask_secret_fields_and_passwords(direct: bool) -> None:
    line = _log_line(
        direct,
        session_secret=SESSION_SECRET,
        provider_secret=tenant_secrets()[0],
        password=PASSWORD,
        database_url=DB_URL,
        wallet_url="http://127.0.0.1:9000",
        settings=Settings(database_url=DB_URL, session_secret=SESSION_SECRET),
        transaction_id="t-1",
    )
    assert line["session_secret"] == line["provider_secret"] == line["password"] == MASK
    assert line["database_url"] == redact_url(DB_URL)
    assert line["wallet_url"] == "http://127.0.0.1:9000"
    assert line["transaction_id"] == "t-1"
    assert line["service"] == "secrets-test" and line["event"] == "started"
    assert line["level"] == "info" and isinstance(line["ts"], float)


def test_redact_field_leaves_ordinary_fields_alone() -> None:
    assert redact_field("amount", 100) == 100
    assert redact_field("session_secret", None) is None
    assert redact_field("client_secret", 42) == MASK
    assert redact_field("dsn", "host=h password=x") == "host=h password=***"
