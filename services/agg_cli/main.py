"""``aggregator``: one entry point for every service and tool.

aggregator dev up|down|status     the local stack of real servers
aggregator topics ensure|list     the topic catalogue on the configured broker
aggregator schemas list|check|freeze
aggregator config check           validate settings and the tenants file
aggregator config apply FILE --actor NAME [--reason TEXT]
                                  publish a tenants file to every running service (journaled)
aggregator config show            the tenants document the services follow (secrets masked)
aggregator ingress [--port N]      run one ingress instance (provider callbacks, operator API)
aggregator wallet [--operator ID] [--mode normal|slow|silent|failing]
                                  run the reference operator wallet
aggregator bridge [--operator ID]  run the HTTP wallet bridge (operators with HTTP wallets)
aggregator httpwallet [--port N]   run the reference HTTP operator wallet
aggregator saga                   run one saga worker
aggregator simulate [--duration S] drive simulated providers through the ingress
aggregator projector              run the projector (journal -> PostgreSQL projections)
aggregator reconcile              the reconciliation report (exit 1 on discrepancies)
aggregator audit export|replay    the journal as JSON lines; rebuild and compare projections
aggregator certify operator --operator ID
                                  certify an operator's wallet (report, exit 1 on a failure)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import TYPE_CHECKING

from agg_config.paths import state_dir

if TYPE_CHECKING:
    from agg_config.settings import Settings
    from agg_kafka.topics import TopicSpec


def _settings() -> Settings:
    from agg_config.settings import load_settings

    return load_settings()


def _specs(settings: Settings) -> list[TopicSpec]:
    from agg_kafka.topics import catalogue_from_settings

    return catalogue_from_settings(settings)


def cmd_dev(args: argparse.Namespace) -> int:
    from agg_devstack.kafka import StackError
    from agg_devstack.stack import LocalStack

    stack = LocalStack(state_dir(), _settings(), with_services=not args.servers_only)
    try:
        if args.action == "up":
            started = time.monotonic()
            info = stack.up()
            print(f"kafka     {info.kafka_bootstrap}  (pid {info.kafka_pid})")
            print(f"postgres  {info.database_url.split('@')[-1]}  (pid {info.postgres_pid})")
            if stack.with_services:
                for name, s in stack.status().items():
                    if name not in ("kafka", "postgres"):
                        print(f"{name:<9} {s['where']}  (pid {s['pid']}, log {s['log']})")
            print(f"settings  {stack.env_file}")
            print(f"ready in  {time.monotonic() - started:.1f}s")
        elif args.action == "down":
            stopped = stack.down()
            print("stopped " + ", ".join(stopped) if stopped else "nothing was running")
        else:
            status = stack.status()
            if args.json:
                print(json.dumps(status, indent=2))
            else:
                for name, s in status.items():
                    where = (
                        s.get("bootstrap")
                        or s.get("where")
                        or (f"127.0.0.1:{s['port']}" if s.get("port") else "-")
                    )
                    state = f"running (pid {s['pid']})" if s["running"] else "stopped"
                    print(f"{name:<9} {state:<22} {where:<22} log {s['log']}")
            return 0 if all(s["running"] for s in status.values()) else 3
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    settings = _settings()
    specs = _specs(settings)
    if args.action == "list":
        for s in specs:
            configs = ",".join(f"{k}={v}" for k, v in sorted(s.configs.items()))
            print(
                f"{s.name:<36} p={s.partitions:<3} rf={s.replication_factor} "
                f"{configs}  # {s.purpose}"
            )
        return 0
    from agg_kafka.admin import ensure_topics

    report = asyncio.run(ensure_topics(settings.kafka_bootstrap, specs, settings.admin_timeout_ms))
    for line in report.lines():
        print(line)
    if not report.ok:
        print(
            f"{len(report.differences)} topic(s) differ from the catalogue; nothing was changed",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_schemas(args: argparse.Namespace) -> int:
    from agg_avro.cli import main_schemas

    return main_schemas(args.rest)


ACTOR_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._@:/+-]{0,199}$"
"""Who applies a change: a person's or a job's name, printable, on one line."""


def cmd_config(args: argparse.Namespace) -> int:
    if args.action == "apply":
        return _config_apply(args)
    if args.action == "show":
        return _config_show()
    if args.file is not None:
        print("error: FILE is for `config apply` only", file=sys.stderr)
        return 2
    return _config_check(args)


def _config_apply(args: argparse.Namespace) -> int:
    import re
    from pathlib import Path

    from agg_config.document import secret_problems
    from agg_config.tenants import TenantsError, load_tenants
    from agg_kafka.admin import TopicMissingError
    from agg_kafka.config_topic import apply_tenants

    if args.file is None:
        print("error: config apply needs FILE (the tenants file to publish)", file=sys.stderr)
        return 2
    if not args.actor or not re.fullmatch(ACTOR_PATTERN, args.actor):
        print("error: --actor NAME is required: who makes the change (letters, digits, "
              "' ._@:/+-', at most 200 characters)", file=sys.stderr)  # fmt: skip
        return 2
    reason = args.reason or ""
    if len(reason) > 1000 or any(ord(c) < 32 for c in reason):
        print("error: --reason: one line of at most 1000 characters", file=sys.stderr)
        return 2
    try:
        tenants = load_tenants(Path(args.file))
    except TenantsError as exc:
        print(f"error: {exc}\nnothing was published", file=sys.stderr)
        return 1
    problems = secret_problems(tenants)
    if problems:
        print(f"error: {args.file}: secrets missing here, the services could not read them:\n  "
              + "\n  ".join(problems) + "\nnothing was published", file=sys.stderr)  # fmt: skip
        return 1
    settings = _settings()
    try:
        previous, published = asyncio.run(
            apply_tenants(settings, tenants, actor=args.actor, reason=reason)
        )
    except TopicMissingError as exc:
        print(f"error: {exc}: run `aggregator topics ensure` first; nothing was published",
              file=sys.stderr)  # fmt: skip
        return 1
    if published is None:
        assert previous is not None
        print(f"unchanged: {args.file} is the current document (sequence "
              f"{previous.sequence}, sha256 {previous.sha256}, applied by {previous.actor}); "
              "nothing was published")  # fmt: skip
        return 0
    doc = published.document
    print(f"applied {args.file} as sequence {doc.sequence} (sha256 {doc.sha256}) by {doc.actor}")
    print(f"  previous: {doc.previous_sha256 or 'none (first document)'}")
    for line in published.summary.lines() or ["no list entry changed"]:
        print(f"  {line}")
    print(f"  journaled as TenantsChanged {published.event_id}")
    return 0


def _config_show() -> int:
    from agg_config.document import tenants_json
    from agg_config.redact import redact_tenants
    from agg_kafka.admin import TopicMissingError
    from agg_kafka.config_topic import read_latest

    settings = _settings()
    try:
        doc = asyncio.run(read_latest(settings))
    except TopicMissingError as exc:
        print(f"error: {exc}: run `aggregator topics ensure` first", file=sys.stderr)
        return 1
    if doc is None:
        print(f"no document published: the services run their tenants file "
              f"({settings.tenants_file})")  # fmt: skip
        return 0
    print(json.dumps({
        "sequence": doc.sequence, "sha256": doc.sha256, "previous_sha256": doc.previous_sha256,
        "actor": doc.actor, "reason": doc.reason, "applied_at": doc.applied_at.isoformat(),
        "tenants": redact_tenants(tenants_json(doc.tenants)),
    }, indent=2))  # fmt: skip
    return 0


def _config_check(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from agg_config.redact import redact_url
    from agg_config.tenants import TenantsError, load_tenants

    try:
        settings = _settings()
        tenants = load_tenants(settings.tenants_file)
    except (TenantsError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from agg_config.settings import session_secret_problem

    print(f"tenants file {settings.tenants_file}: {len(tenants.operators)} operators, "
          f"{len(tenants.providers)} providers, {len(tenants.games)} games")  # fmt: skip
    problem = session_secret_problem(settings.session_secret.get_secret_value())
    if problem is not None:
        print(f"warning: the ingress will not start: {problem}", file=sys.stderr)
    if args.show:
        # secrets masked: the session secret, the database password, tenants' secrets
        for name, field in type(settings).model_fields.items():
            print(f"  AGG_{name.upper():<32} = {settings.shown(name):<24} # {field.description}")
        for op in tenants.operators:
            print(f"  operator {op.id:<24} secret: {op.secret.describe()}")
            w = op.wallet
            if w.mode == "http":
                credential = w.secret or w.signing_key
                where = credential.describe() if credential else "none"
                print(f"  operator {op.id:<24} wallet: http {w.protocol} {redact_url(str(w.url))}"
                      f", {'secret' if w.secret else 'signing key'}: {where}")  # fmt: skip
        for pv in tenants.providers:
            secret = pv.secret.describe() if pv.secret else "none"
            signing = f", signing key: {pv.signing_key.describe()}" if pv.signing_key else ""
            key = ", public key" if pv.public_key else ""
            print(f"  provider {pv.id:<24} {pv.protocol}, secret: {secret}{key}{signing}, "
                  f"rounds auto-close after {pv.round_auto_close_s} s idle")  # fmt: skip
    return 0


def cmd_ingress(args: argparse.Namespace) -> int:
    from agg_ingress.__main__ import run

    return run(args)


def cmd_saga(args: argparse.Namespace) -> int:
    from agg_saga.__main__ import main as saga_main

    return saga_main(args.rest)


def cmd_projector(args: argparse.Namespace) -> int:
    from agg_projector.__main__ import main as projector_main

    return projector_main(args.rest)


def cmd_reconcile(args: argparse.Namespace) -> int:
    from agg_projector.reconcile import main as reconcile_main

    return reconcile_main(args.rest)


def cmd_sim(args: argparse.Namespace) -> int:
    from agg_simulator.sim_cli import main as sim_main

    return sim_main(args.rest)


def cmd_simulate(args: argparse.Namespace) -> int:
    from agg_simulator.__main__ import main as simulate_main

    return simulate_main(args.rest)


def cmd_wallet(args: argparse.Namespace) -> int:
    from agg_wallet.__main__ import run

    return run(args)


def cmd_bridge(args: argparse.Namespace) -> int:
    from agg_bridge.__main__ import run

    return run(args)


def cmd_httpwallet(args: argparse.Namespace) -> int:
    from agg_httpwallet.__main__ import run

    return run(args)


def cmd_audit(args: argparse.Namespace) -> int:
    from agg_auditor.cli import main_audit

    return main_audit(args.rest)


def cmd_certify(args: argparse.Namespace) -> int:
    from agg_certify.cli import main as certify_main

    return certify_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aggregator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="local stack of real servers (Kafka KRaft + PostgreSQL)")
    dev.add_argument("action", choices=["up", "down", "status"])
    dev.add_argument("--json", action="store_true", help="status as JSON")
    dev.add_argument(
        "--servers-only", action="store_true", help="Kafka and PostgreSQL without the services"
    )
    dev.set_defaults(func=cmd_dev)

    topics = sub.add_parser("topics", help="the topic catalogue")
    topics.add_argument("action", choices=["ensure", "list"])
    topics.set_defaults(func=cmd_topics)

    schemas = sub.add_parser("schemas", help="Avro schemas: list, check, freeze", add_help=False)
    schemas.add_argument("rest", nargs=argparse.REMAINDER)
    schemas.set_defaults(func=cmd_schemas)

    config = sub.add_parser(
        "config", help="validate settings and the tenants file; publish and show tenants"
    )
    config.add_argument("action", choices=["check", "apply", "show"])
    config.add_argument("file", nargs="?", default=None, help="tenants file (apply)")
    config.add_argument("--show", action="store_true", help="print every setting with its reason")
    config.add_argument("--actor", default=None, help="who applies the change (apply; required)")
    config.add_argument("--reason", default=None, help="why (apply; journaled)")
    config.set_defaults(func=cmd_config)

    from agg_ingress.__main__ import add_arguments as ingress_arguments

    ingress = sub.add_parser("ingress", help="run one ingress instance (HTTP, Kafka)")
    ingress_arguments(ingress)
    ingress.set_defaults(func=cmd_ingress)

    from agg_wallet.__main__ import add_arguments as wallet_arguments

    wallet = sub.add_parser("wallet", help="run the reference operator wallet (Kafka, Postgres)")
    wallet_arguments(wallet)
    wallet.set_defaults(func=cmd_wallet)

    from agg_bridge.__main__ import add_arguments as bridge_arguments

    bridge = sub.add_parser("bridge", help="run the HTTP wallet bridge (Kafka, HTTP)")
    bridge_arguments(bridge)
    bridge.set_defaults(func=cmd_bridge)

    from agg_httpwallet.__main__ import add_arguments as httpwallet_arguments

    httpwallet = sub.add_parser("httpwallet", help="run the reference HTTP operator wallet")
    httpwallet_arguments(httpwallet)
    httpwallet.set_defaults(func=cmd_httpwallet)

    saga = sub.add_parser("saga", help="run one saga worker", add_help=False)
    saga.add_argument("rest", nargs=argparse.REMAINDER)
    saga.set_defaults(func=cmd_saga)

    simulate = sub.add_parser("simulate", help="simulated providers and players", add_help=False)
    simulate.add_argument("rest", nargs=argparse.REMAINDER)
    simulate.set_defaults(func=cmd_simulate)

    sim = sub.add_parser(
        "sim", help="the deterministic simulator: seeded schedules with faults", add_help=False
    )
    sim.add_argument("rest", nargs=argparse.REMAINDER)
    sim.set_defaults(func=cmd_sim)

    audit = sub.add_parser("audit", help="auditor tools over the journal (export)", add_help=False)
    audit.add_argument("rest", nargs=argparse.REMAINDER)
    audit.set_defaults(func=cmd_audit)

    certify = sub.add_parser(
        "certify", help="certify an operator's wallet: battery, report", add_help=False
    )
    certify.add_argument("rest", nargs=argparse.REMAINDER)
    certify.set_defaults(func=cmd_certify)
    return parser


PASSTHROUGH = {
    "projector": cmd_projector,
    "reconcile": cmd_reconcile,
    "saga": cmd_saga,
    "simulate": cmd_simulate,
    "sim": cmd_sim,
    "schemas": cmd_schemas,
    "audit": cmd_audit,
    "certify": cmd_certify,
}
"""Subcommands that parse their own arguments (options included)."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in PASSTHROUGH:
        return int(PASSTHROUGH[argv[0]](argparse.Namespace(rest=argv[1:])))
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
