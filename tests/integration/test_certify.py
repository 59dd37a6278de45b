"""The certification kit against the reference wallet, real broker and Postgres.

The kit (``python -m agg_certify operator``) passes against the reference wallet and fails
each deliberately broken one (``AGG_WALLET_BROKEN``) on the checks that defect breaks, and
on those only (the latency check with a deadline a loaded machine always meets, except for
the slow defect, whose replies are never within its deadline). The provider sandbox's
scenarios answer as docs/sandbox.md says. Two operators of their own (a tenants file of
this module) keep these wallets apart from every other test's."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from agg_certify.kafka import KafkaWallet
from agg_certify.port import Command
from agg_config.settings import Settings
from agg_domain.saga import debit_command_id
from agg_kafka.admin import ensure_topics
from agg_kafka.topics import catalogue
from agg_wallet.store import SCHEMA_SQL
from tests.integration.test_reference_wallet import WalletProcess, start_wallet

CERTIFY = "op-certify"
SANDBOX = "op-sandbox"
STARTING_BALANCE = 100_000

TENANTS = f"""
operators:
  - id: {CERTIFY}
    name: Certification Casino
    secret: {{value: test-secret-op-certify-01}}
    currencies: [EUR, USD]
    providers: [prov-cert]
    wallet: {{mode: kafka, starting_balance: {STARTING_BALANCE}}}
  - id: {SANDBOX}
    name: Sandbox Casino
    secret: {{value: test-secret-op-sandbox-01}}
    currencies: [EUR]
    providers: [prov-cert]
    wallet: {{mode: kafka, starting_balance: {STARTING_BALANCE}, sandbox: true}}
providers:
  - id: prov-cert
    name: Certification Provider
    secret: {{value: test-secret-prov-cert-0001}}
games:
  - {{id: cert-game, provider: prov-cert, name: Certification Game}}
"""

# what each defect breaks, and nothing else
BROKEN = {
    "no_dedupe": {"duplicate_exact", "duplicate_concurrent", "duplicate_conflict"},
    "negative_balance": {"insufficient_funds", "rollback_refused_debit"},
    "double_rollback": {"rollback_twice"},
    "wrong_currency": {"wrong_currency"},
    "slow": {"latency"},
}
SLOW_DEADLINE_MS = "300"
"""The deadline of the slow run (wallet and kit alike): its replies come at least 800 ms
after the command (the defect sleeps that long), never within 300 ms."""
KIT_DEADLINE_MS = "10000"
"""The kit's deadline in the other runs: speed is the benchmark's business, and a loaded
test machine must not fail a run whose answers are right."""


@pytest.fixture(scope="module")
def tenants_file(
    settings: Settings, catalogue_topics: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The module's tenants file, and its operators' topics on the broker."""
    path = tmp_path_factory.mktemp("certify") / "tenants.yaml"
    path.write_text(TENANTS)
    specs = catalogue([CERTIFY, SANDBOX], partitions=settings.partition_count,
                      replication_factor=1, min_insync_replicas=1)  # fmt: skip
    report = asyncio.run(ensure_topics(settings.kafka_bootstrap, specs))
    assert report.ok, report.lines()
    return path


@pytest.fixture
def wallet_of(settings: Settings, tenants_file: Path, tmp_path: Path) -> Iterator[Any]:
    """Starts a reference wallet for one operator with extra settings; stops it after."""
    started: list[WalletProcess] = []

    def start(operator: str, **env: str) -> WalletProcess:
        process = start_wallet(
            settings, operator, tmp_path / f"wallet-{operator}.log",
            "--client-id", f"certify-test-{operator}",
            env={"AGG_TENANTS_FILE": str(tenants_file), **env},
        )  # fmt: skip
        started.append(process)
        return process

    yield start
    for process in started:
        assert process.stop() == 0, process.log_path.read_text()[-3000:]


def certify(
    settings: Settings,
    tenants_file: Path,
    out: Path,
    *extra: str,
    env: dict[str, str] | None = None,
) -> tuple[int, str, dict[str, Any]]:
    """``python -m agg_certify operator --operator op-certify``: exit code, stdout, report."""
    environment = {
        **os.environ,
        "AGG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "AGG_DATABASE_URL": settings.database_url,
        "AGG_TENANTS_FILE": str(tenants_file),
        "AGG_WALLET_TIMEOUT_MS": KIT_DEADLINE_MS,
        **(env or {}),
    }
    done = subprocess.run(
        [sys.executable, "-m", "agg_certify", "operator", "--operator", CERTIFY,
         "--out", str(out), "--latency-samples", "50", "--reply-timeout-ms", "30000", *extra],
        env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    print(done.stdout)  # the summary, for whoever reads the test log
    assert done.returncode in (0, 1), done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    return done.returncode, done.stdout, report


def outcomes(report: dict[str, Any]) -> dict[str, str]:
    return {c["id"]: c["outcome"] for c in report["checks"]}


def test_the_kit_passes_against_the_reference_wallet(
    settings: Settings, tenants_file: Path, wallet_of: Any, tmp_path: Path
) -> None:
    wallet_of(CERTIFY)
    code, stdout, report = certify(settings, tenants_file, tmp_path / "report")
    results = outcomes(report)
    assert code == 0, stdout
    assert report["verdict"] == "PASS" and report["operator_id"] == CERTIFY
    assert {k for k, v in results.items() if v == "fail"} == set()
    assert results["signature"] == "not_applicable"
    assert set(results) - {"signature"} == {k for k, v in results.items() if v == "pass"}
    assert report["latency"]["missing_count"] == 0 and report["latency"]["count"] > 50
    assert "PASS:" in stdout and str(tmp_path / "report" / "report.html") in stdout
    html = (tmp_path / "report" / "report.html").read_text()
    assert all(f'id="check-{check}"' in html for check in results)
    log = (tmp_path / "report" / "certify.log").read_text().splitlines()
    assert sum('"event":"check_finished"' in line for line in log) == len(results)


@pytest.mark.parametrize("defect", sorted(BROKEN))
def test_the_kit_catches_each_broken_wallet(
    defect: str, settings: Settings, tenants_file: Path, wallet_of: Any, tmp_path: Path
) -> None:
    env = {"AGG_WALLET_BROKEN": defect, "AGG_WALLET_BROKEN_ENABLED": "true"}
    if defect == "slow":
        env["AGG_WALLET_TIMEOUT_MS"] = SLOW_DEADLINE_MS
    wallet = wallet_of(CERTIFY, **env)
    kit_env = {"AGG_WALLET_TIMEOUT_MS": SLOW_DEADLINE_MS} if defect == "slow" else None
    code, stdout, report = certify(settings, tenants_file, tmp_path / "report", env=kit_env)
    failed = {c["id"] for c in report["checks"] if c["outcome"] == "fail"}
    assert code == 1 and report["verdict"] == "FAIL", stdout
    assert failed == BROKEN[defect], stdout
    for check in report["checks"]:
        if check["outcome"] == "fail":
            assert check["fix"], check
    assert '"event":"wallet_broken"' in wallet.log_path.read_text()


def test_a_broken_wallet_is_refused_unless_enabled(settings: Settings, tenants_file: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agg_wallet", "--operator", CERTIFY, "--metrics-port", "0"],
        env={**os.environ, "AGG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
             "AGG_DATABASE_URL": settings.database_url, "AGG_TENANTS_FILE": str(tenants_file),
             "AGG_WALLET_BROKEN": "no_dedupe"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "AGG_WALLET_BROKEN_ENABLED=true" in done.stderr


def test_an_unknown_operator_is_a_usage_error(settings: Settings, tenants_file: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agg_certify", "operator", "--operator", "op-nobody"],
        env={**os.environ, "AGG_TENANTS_FILE": str(tenants_file)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "unknown operator 'op-nobody'" in done.stderr


def test_a_ledger_made_before_the_sandbox_gets_the_wider_status_check(database_url: str) -> None:
    """The reference wallet's schema creation on a ledger whose status check is the old,
    narrow one: the check is replaced (once), new statuses are stored, others still refused."""
    schema = f"wl_{os.urandom(4).hex()}"
    schema_sql = re.sub(r"\bwallet\b", schema, SCHEMA_SQL)
    row = (
        f"insert into {schema}.commands (operator_id, command_id, player_id, kind, amount,"
        " currency, correlation_id, effect, delta, status, replied_at) values"
        " ('op', %s, 'p', 'DEBIT', 1, 'EUR', 'c', 'refused', 0, %s, now())"
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(schema_sql.encode())
        conn.execute(f"alter table {schema}.commands drop constraint commands_status_check")
        conn.execute(f"alter table {schema}.commands add constraint commands_status_check"
                     " check (status in ('OK', 'INSUFFICIENT_FUNDS', 'ERROR'))")  # fmt: skip
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(row, ("c-old", "PLAYER_BLOCKED"))
        conn.execute(schema_sql.encode())
        conn.execute(schema_sql.encode())  # again: nothing left to do
        conn.execute(row, ("c-1", "PLAYER_BLOCKED"))
        conn.execute(row, ("c-2", "LIMIT_REACHED"))
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(row, ("c-3", "MAYBE"))
        conn.execute(f"drop schema {schema} cascade")


# --- the provider sandbox, through the wallet ------------------------------------------------


def sandbox_command(
    player: str, kind: str, amount: int = 0, *, command_id: str, transaction: str = "t-1",
    reference: str | None = None,
) -> Command:  # fmt: skip
    return Command(
        command_id=command_id, correlation_id=f"corr-{command_id}", operator_id=SANDBOX,
        player_id=player, kind=kind, amount=amount, currency="EUR", provider_id="prov-cert",
        transaction_id=transaction, round_id="r-1", game_id="cert-game",
        reference_command_id=reference, issued_at=datetime.now(UTC),
    )  # fmt: skip


TIMEOUT_MS = 20_000


@pytest.mark.parametrize(
    ("scenario", "debit_status", "debited"),
    [
        ("ok", "OK", True),
        ("insufficient", "INSUFFICIENT_FUNDS", False),
        ("blocked", "PLAYER_BLOCKED", False),
        ("limit", "LIMIT_REACHED", False),
        ("error", "ERROR", False),
    ],
)
def test_sandbox_scenarios_answer_debits_by_player_prefix(
    scenario: str, debit_status: str, debited: bool, settings: Settings, wallet_of: Any
) -> None:
    wallet_of(SANDBOX)
    player = f"sandbox-{scenario}-{os.urandom(4).hex()}"

    async def scenario_run() -> None:
        kafka = KafkaWallet(settings, SANDBOX, client_id="sandbox-test")
        await kafka.start()
        try:
            debit = sandbox_command(player, "DEBIT", 300, command_id=f"{player}-debit")
            replies = []
            for c in (
                debit,
                debit,  # a repeat: the same answer
                sandbox_command(player, "CREDIT", 50, command_id=f"{player}-win"),
                sandbox_command(
                    player, "CANCEL", 300, command_id=f"{player}-cancel", reference=debit.command_id
                ),
            ):
                observed = await kafka.call(c, TIMEOUT_MS)
                assert observed.reply is not None, c
                replies.append((observed.reply.status, observed.reply.balance))
        finally:
            await kafka.close()
        after_debit = STARTING_BALANCE - 300 if debited else STARTING_BALANCE
        assert replies == [
            (debit_status, after_debit),
            (debit_status, after_debit),
            ("OK", after_debit + 50),  # wins are owed money in every scenario
            ("OK", STARTING_BALANCE + 50),  # the cancel refunds only what was debited
        ]

    asyncio.run(asyncio.wait_for(scenario_run(), 90))


def test_sandbox_timeout_leaves_the_first_attempt_unanswered_and_answers_the_retry(
    settings: Settings, wallet_of: Any
) -> None:
    wallet_of(SANDBOX)
    player = f"sandbox-timeout-{os.urandom(4).hex()}"
    first_id = debit_command_id(SANDBOX, player, "prov-cert", "t-1", 1)
    retry_id = debit_command_id(SANDBOX, player, "prov-cert", "t-1", 2)

    async def scenario_run() -> None:
        kafka = KafkaWallet(settings, SANDBOX, client_id="sandbox-test")
        await kafka.start()
        try:
            first = asyncio.create_task(
                kafka.call(sandbox_command(player, "DEBIT", 300, command_id=first_id), TIMEOUT_MS)
            )
            # the same player's next command is answered after the debit would have been
            # (one partition, in order): once its reply is in, the debit's never came
            balance = await kafka.call(
                sandbox_command(player, "BALANCE", command_id=f"{player}-b1"), TIMEOUT_MS
            )
            assert balance.reply is not None and balance.reply.balance == STARTING_BALANCE
            assert not first.done()
            first.cancel()
            cancel = await kafka.call(
                sandbox_command(
                    player, "CANCEL", 300, command_id=f"{player}-cancel", reference=first_id
                ),
                TIMEOUT_MS,
            )
            assert cancel.reply is not None
            assert (cancel.reply.status, cancel.reply.balance) == ("OK", STARTING_BALANCE)
            retry = await kafka.call(
                sandbox_command(player, "DEBIT", 300, command_id=retry_id), TIMEOUT_MS
            )
            assert retry.reply is not None
            assert (retry.reply.status, retry.reply.balance) == ("OK", STARTING_BALANCE - 300)
        finally:
            await kafka.close()

    asyncio.run(asyncio.wait_for(scenario_run(), 90))
