"""``aggregator certify operator --operator ID``: certify one operator's wallet.

Runs the battery (:mod:`agg_certify.checks`) against the operator's wallet as the tenants
file configures it, prints a line per check as it finishes, then the summary, and writes
``report.json``, ``report.html`` and ``certify.log`` (JSON lines) into the output directory
(default ``var/certify/<operator>-<run id>/``). Exit status: 0 when no check failed, 1 when
one did, 2 when the run could not be made (unknown operator, no broker, ...).

Kafka wallets (``wallet.mode: kafka``) are reached on their topics with the connection
settings of every service (``AGG_KAFKA_BOOTSTRAP``, ``AGG_TOPIC_PREFIX``, ...). HTTP wallets
(``wallet.mode: http``) are called at their ``wallet.url`` as the wallet bridge calls them,
in their protocol and with their credentials from the tenants file (docs/certification.md,
"HTTP mode").
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from agg_certify.checks import ALL_CHECK_IDS, Battery, CheckResult, Config, Outcome
from agg_certify.port import WalletUnderTest
from agg_certify.report import LABELS, Report, render_summary, write
from agg_config.paths import state_dir
from agg_config.settings import Settings, load_settings
from agg_config.tenants import Operator, TenantsError, load_tenants
from agg_domain.currency import is_currency
from agg_obs.logs import JsonFormatter, get_logger

log = get_logger("certify")

RUN_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
WRONG_CURRENCY_CHOICES = ("EUR", "USD", "GBP", "JPY", "CHF", "SEK", "CAD", "AUD")
"""Where the wrong currency of the check is picked from: the first the operator does not
offer."""


class UsageError(Exception):
    """The run cannot be made as asked (exit 2)."""


def new_run_id() -> str:
    """Time to the second and 24 random bits: sortable, and two runs never share ids."""
    return f"{datetime.now(UTC):%Y%m%d%H%M%S}-{secrets.token_hex(3)}"


def wrong_currency_for(operator: Operator) -> str:
    for code in WRONG_CURRENCY_CHOICES:
        if code not in operator.currencies:
            return code
    raise UsageError(f"operator {operator.id} offers every currency of {WRONG_CURRENCY_CHOICES}")


def make_wallet(
    settings: Settings, operator: Operator, mode: str, request_timeout_ms: int = 10_000
) -> WalletUnderTest:
    """The wallet under test: the operator's topics (``kafka``; for an HTTP operator that
    is its wallet through a running bridge), or its HTTP wallet called as the bridge calls
    it (``http``), each request bounded by ``request_timeout_ms``."""
    if mode == "kafka":
        from agg_certify.kafka import KafkaWallet

        return KafkaWallet(settings, operator.id)
    if operator.wallet.mode != "http":
        raise UsageError(f"operator {operator.id} has no HTTP wallet (wallet.mode is "
                         f"{operator.wallet.mode}): --mode http needs one")  # fmt: skip
    from agg_certify.http import HttpWallet

    return HttpWallet(operator, request_timeout_ms)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--operator", required=True, metavar="ID", help="operator to certify")
    parser.add_argument(
        "--mode", choices=["kafka", "http"], default=None,
        help="how the wallet is reached (default: the operator's wallet.mode)",
    )  # fmt: skip
    parser.add_argument("--run-id", default=None, help="ids of the run derive from it "
                        "(default: time and random; reuse only to replay a run)")  # fmt: skip
    parser.add_argument("--currency", default=None,
                        help="currency of the checks (default: the operator's first)")  # fmt: skip
    parser.add_argument("--wrong-currency", default=None,
                        help="a currency that is not the players' (default: one the operator "
                        "does not offer)")  # fmt: skip
    parser.add_argument(
        "--player-prefix",
        default="aggcert-",
        help="prefix of the certification players' ids (default aggcert-)",
    )
    parser.add_argument(
        "--reply-timeout-ms",
        type=int,
        default=10_000,
        help="wait for each reply before calling it missing (default 10000)",
    )
    parser.add_argument(
        "--duplicates",
        type=int,
        default=10,
        help="copies sent at once by the concurrent-duplicates check",
    )
    parser.add_argument(
        "--latency-samples",
        type=int,
        default=200,
        help="BALANCE commands of the latency burst (default 200)",
    )
    parser.add_argument(
        "--latency-concurrency", type=int, default=8, help="of them in flight at once (default 8)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report directory (default var/certify/<operator>-<run id>)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def build_config(args: argparse.Namespace, settings: Settings, operator: Operator) -> Config:
    run_id = args.run_id or new_run_id()
    if not RUN_ID_PATTERN.match(run_id):
        raise UsageError(f"--run-id must match {RUN_ID_PATTERN.pattern}")
    currency = args.currency or operator.currencies[0]
    wrong = args.wrong_currency or wrong_currency_for(operator)
    for name, code in (("--currency", currency), ("--wrong-currency", wrong)):
        if not is_currency(code):
            raise UsageError(f"{name} {code!r} is not an ISO 4217 currency code")
    if currency == wrong:
        raise UsageError("--wrong-currency must differ from --currency")
    bounds = {
        "--reply-timeout-ms": (args.reply_timeout_ms, 100, 600_000),
        "--duplicates": (args.duplicates, 2, 1_000),
        "--latency-samples": (args.latency_samples, 1, 100_000),
        "--latency-concurrency": (args.latency_concurrency, 1, 1_000),
    }
    for name, (value, low, high) in bounds.items():
        if not low <= value <= high:
            raise UsageError(f"{name} must be within {low}..{high}")
    return Config(
        operator_id=operator.id,
        run_id=run_id,
        currency=currency,
        wrong_currency=wrong,
        deadline_ms=settings.wallet_timeout_ms,
        reply_timeout_ms=args.reply_timeout_ms,
        session_ttl_s=settings.session_ttl_s,
        duplicate_count=args.duplicates,
        latency_sample_count=args.latency_samples,
        latency_concurrency=args.latency_concurrency,
        player_prefix=args.player_prefix,
    )


class Progress:
    """One line per finished check on ``stream`` (stderr), numbered."""

    def __init__(self, stream: TextIO | None, total: int):
        self.stream = stream
        self.total = total
        self.done = 0

    def __call__(self, result: CheckResult) -> None:
        self.done += 1
        log.event("check_finished", correlation_id=f"cert-{result.player_id}",
                  check=result.check_id, outcome=result.outcome.value, detail=result.detail,
                  player_id=result.player_id, duration_ms=result.duration_ms)  # fmt: skip
        if self.stream is not None:
            width = len(str(self.total))
            self.stream.write(
                f"[{self.done:>{width}}/{self.total}] {LABELS[result.outcome]:<4} "
                f"{result.title} ({result.duration_ms} ms)\n"
            )
            self.stream.flush()


async def certify(
    wallet: WalletUnderTest, config: Config, progress: Progress | None = None
) -> Report:
    """Run the battery against ``wallet`` (started and closed here) and return the report."""
    started_at = datetime.now(UTC)
    try:
        await wallet.start()
        battery = Battery(wallet, config)
        results, latency = await battery.run(progress or (lambda _: None))
    finally:
        await wallet.close()
    parameters = {
        "currency": config.currency,
        "wrong_currency": config.wrong_currency,
        "deadline_ms": config.deadline_ms,
        "reply_timeout_ms": config.reply_timeout_ms,
        "session_ttl_s": config.session_ttl_s,
        "duplicate_count": config.duplicate_count,
        "latency_sample_count": config.latency_sample_count,
        "latency_concurrency": config.latency_concurrency,
        "player_prefix": config.player_prefix,
    }
    return Report(
        operator_id=config.operator_id,
        mode=wallet.mode,
        run_id=config.run_id,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        parameters=parameters,
        results=tuple(results),
        latency=latency,
        stray_reply_count=getattr(wallet, "stray_count", 0),
    )


def _log_to(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("agg")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
    return handler


def run_operator(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    try:
        settings = load_settings()
        tenants = load_tenants(settings.tenants_file)
        operator = tenants.operator(args.operator)
        if operator is None:
            raise UsageError(f"unknown operator {args.operator!r} in {settings.tenants_file}")
        config = build_config(args, settings, operator)
        wallet = make_wallet(
            settings, operator, args.mode or operator.wallet.mode, config.reply_timeout_ms
        )
    except (UsageError, TenantsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    directory = args.out or state_dir() / "certify" / f"{operator.id}-{config.run_id}"
    handler = _log_to(directory / "certify.log")
    try:
        log.event("certify_started", correlation_id=f"cert-{config.run_id}",
                  operator_id=operator.id, mode=wallet.mode, run_id=config.run_id)  # fmt: skip
        progress = Progress(None if args.quiet else sys.stderr, len(ALL_CHECK_IDS))
        if not args.quiet:
            print(f"certifying operator {operator.id} ({wallet.mode}), run {config.run_id}: "
                  f"{len(ALL_CHECK_IDS)} checks", file=sys.stderr)  # fmt: skip
        from aiokafka.errors import KafkaError

        try:
            report = asyncio.run(certify(wallet, config, progress))
        except (LookupError, OSError, KafkaError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        json_path, html_path = write(report, directory)
        log.event("certify_finished", correlation_id=f"cert-{config.run_id}",
                  operator_id=operator.id, verdict="PASS" if report.passed else "FAIL",
                  failed=report.count(Outcome.FAIL), report=str(json_path))  # fmt: skip
    finally:
        logging.getLogger("agg").removeHandler(handler)
        handler.close()
    print(render_summary(report), file=out)
    print(f"report: {json_path}\n        {html_path}", file=out)
    return 0 if report.passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aggregator certify",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="target", required=True)
    operator = sub.add_parser("operator", help="certify one operator's wallet")
    add_arguments(operator)
    args = parser.parse_args(argv)
    return run_operator(args)


if __name__ == "__main__":
    sys.exit(main())
