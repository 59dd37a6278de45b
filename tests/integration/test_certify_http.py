"""The certification kit's HTTP mode against the reference HTTP wallet (``agg_httpwallet``)
over real HTTP and its real PostgreSQL ledger, for both operator-wallet protocols.

The kit (``python -m agg_certify operator``, the operator's ``wallet.mode`` being ``http``)
calls the wallet as the bridge does; it passes against the reference HTTP wallet, the
signature check included, and fails each deliberately broken one (``AGG_WALLET_BROKEN``,
the defects of the Kafka wallet's tests plus ``no_signature_check``) on the checks that
defect breaks, and on those only. Two operators of their own, ``op-certhttp-can``
(canonical-v1) and ``op-certhttp-hub`` (hub88-v1), served by one wallet process per test."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from agg_config.settings import Settings
from tests.integration.test_certify import BROKEN, KIT_DEADLINE_MS, SLOW_DEADLINE_MS, outcomes
from tests.integration.test_reference_wallet import _free_port

CANONICAL, HUB88 = "op-certhttp-can", "op-certhttp-hub"
STARTING_BALANCE = 100_000
HTTP_BROKEN = {**BROKEN, "no_signature_check": {"signature"}}
"""What each defect breaks over HTTP: the Kafka wallet's, and the signature check."""


def _pem_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _tenants(port: int) -> dict[str, Any]:
    common = {"mode": "http", "starting_balance": STARTING_BALANCE, "concurrency_max": 16}
    operators = [
        {"id": CANONICAL, "name": "Certification HTTP canonical",
         "secret": {"value": "test-secret-op-certhttp-can"}, "currencies": ["EUR", "USD"],
         "providers": ["prov-cert"],
         "wallet": {**common, "url": f"http://127.0.0.1:{port}/wallets/{CANONICAL}",
                    "protocol": "canonical-v1",
                    "secret": {"value": "test-wallet-secret-certhttp-can"}}},
        {"id": HUB88, "name": "Certification HTTP hub88",
         "secret": {"value": "test-secret-op-certhttp-hub"}, "currencies": ["EUR", "USD"],
         "providers": ["prov-cert"],
         "wallet": {**common, "url": f"http://127.0.0.1:{port}/{HUB88}",
                    "protocol": "hub88-v1", "signing_key": {"value": _pem_key()}}},
    ]  # fmt: skip
    return {
        "operators": operators,
        "providers": [{"id": "prov-cert", "name": "Certification Provider",
                       "secret": {"value": "test-secret-prov-cert-0001"}}],
        "games": [{"id": "cert-game", "provider": "prov-cert", "name": "Certification Game"}],
    }  # fmt: skip


@pytest.fixture(scope="module")
def wallet_port() -> int:
    return _free_port()


@pytest.fixture(scope="module")
def tenants_file(wallet_port: int, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("certify-http") / "tenants.yaml"
    path.write_text(yaml.safe_dump(_tenants(wallet_port)))
    return path


def _base_env(settings: Settings, tenants_file: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AGG_DATABASE_URL": settings.database_url,
        "AGG_TENANTS_FILE": str(tenants_file),
        "AGG_WALLET_TIMEOUT_MS": KIT_DEADLINE_MS,
    }


def _healthy(url: str) -> bool:
    with contextlib.suppress(OSError, urllib.error.URLError):
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    return False


@pytest.fixture
def http_wallet(
    settings: Settings, tenants_file: Path, wallet_port: int, tmp_path: Path
) -> Iterator[Any]:
    """Starts the reference HTTP wallet (both operators) with extra settings; stops it after
    (SIGTERM, exit 0)."""
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(**env: str) -> Path:
        log = tmp_path / "httpwallet.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "agg_httpwallet", "--port", str(wallet_port)],
            env={**_base_env(settings, tenants_file), **env},
            stdout=subprocess.DEVNULL, stderr=log.open("ab"),
        )  # fmt: skip
        started.append((proc, log))
        deadline = time.monotonic() + 60
        while not _healthy(f"http://127.0.0.1:{wallet_port}/healthz"):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        return log

    yield start
    for proc, log in started:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]


def certify(
    settings: Settings, tenants_file: Path, operator: str, out: Path, env: dict[str, str] | None
) -> tuple[int, str, dict[str, Any]]:
    """``python -m agg_certify operator --operator <operator>``: exit code, stdout, report."""
    done = subprocess.run(
        [sys.executable, "-m", "agg_certify", "operator", "--operator", operator,
         "--out", str(out), "--latency-samples", "50", "--reply-timeout-ms", "30000"],
        env={**_base_env(settings, tenants_file), **(env or {})},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    print(done.stdout)  # the summary, for whoever reads the test log
    assert done.returncode in (0, 1), done.stderr[-3000:]
    return done.returncode, done.stdout, json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("operator", [CANONICAL, HUB88])
def test_the_kit_passes_against_the_reference_http_wallet(
    operator: str, settings: Settings, tenants_file: Path, http_wallet: Any, tmp_path: Path
) -> None:
    http_wallet()
    code, stdout, report = certify(settings, tenants_file, operator, tmp_path / "report", None)
    results = outcomes(report)
    assert code == 0, stdout
    assert report["verdict"] == "PASS" and report["mode"] == "http", stdout
    assert report["operator_id"] == operator
    assert set(results.values()) == {"pass"}, results  # the signature check applies
    signature = next(c for c in report["checks"] if c["id"] == "signature")
    assert [s["kind"] for s in signature["steps"]] == ["BALANCE", "DEBIT", "BALANCE"]
    assert signature["steps"][1]["status"] == "ERROR"  # refused: as the bridge replies it
    assert report["latency"]["missing_count"] == 0 and report["latency"]["count"] > 50
    assert "(http)" in stdout and "PASS:" in stdout


@pytest.mark.parametrize("operator", [CANONICAL, HUB88])
@pytest.mark.parametrize("defect", sorted(HTTP_BROKEN))
def test_the_kit_catches_each_broken_http_wallet(
    defect: str, operator: str, settings: Settings, tenants_file: Path, http_wallet: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    env = {"AGG_WALLET_BROKEN": defect, "AGG_WALLET_BROKEN_ENABLED": "true"}
    kit_env = None
    if defect == "slow":
        env["AGG_WALLET_TIMEOUT_MS"] = SLOW_DEADLINE_MS
        kit_env = {"AGG_WALLET_TIMEOUT_MS": SLOW_DEADLINE_MS}
    log = http_wallet(**env)
    code, stdout, report = certify(settings, tenants_file, operator, tmp_path / "report", kit_env)
    failed = {c["id"] for c in report["checks"] if c["outcome"] == "fail"}
    assert code == 1 and report["verdict"] == "FAIL", stdout
    assert failed == HTTP_BROKEN[defect], stdout
    for check in report["checks"]:
        if check["outcome"] == "fail":
            assert check["fix"], check
    assert '"event":"wallet_broken"' in log.read_text()


def test_a_broken_http_wallet_is_refused_unless_enabled(
    settings: Settings, tenants_file: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agg_httpwallet", "--port", str(_free_port())],
        env={**_base_env(settings, tenants_file), "AGG_WALLET_BROKEN": "no_signature_check"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "AGG_WALLET_BROKEN_ENABLED=true" in done.stderr


def test_http_mode_needs_an_http_operator(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    tenants = _tenants(_free_port())
    tenants["operators"][0]["wallet"] = {"mode": "kafka"}
    path.write_text(yaml.safe_dump(tenants))
    done = subprocess.run(
        [sys.executable, "-m", "agg_certify", "operator", "--operator", CANONICAL,
         "--mode", "http"],
        env=_base_env(settings, path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "--mode http needs one" in done.stderr
