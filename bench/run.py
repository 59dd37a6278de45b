"""``make bench`` (``python -m bench``): the pipeline and its baselines under the same
open-loop load, step by step up a ladder of offered rates, on real Kafka and PostgreSQL.

1. Servers: those named by ``AGG_KAFKA_BOOTSTRAP``/``AGG_DATABASE_URL``, else a fresh local
   stack in ``var/bench/stack`` (stopped at the end).
2. Sessions for every player are opened through the operator API of the pipeline's ingress.
3. For each system (pipeline, floor, physical, direct) and each offered rate: a signed request
   file is written, the load generator (``bench/loadgen``, Go) sends it open-loop, and the
   step's figures are computed: achieved rate, latency percentiles from the scheduled send
   time, answers by status, CPU seconds of every process and CPU milliseconds per answered
   callback, projector lag. Every system gets the same schedule at a step: its seed comes from
   the base seed and the rate (:func:`step_seed`) and is recorded with the step. A system that
   cannot keep up (see ``report.saturated``) is not offered higher rates.
4. Every callback without a final answer is retried, as providers do, and the money check
   compares each player's wallet balance change with the answers; for the pipeline the projected
   balances must equal the wallet's.
5. Results: ``bench/results/<UTC>.json``, ``<UTC>.txt`` (the summary, also printed) and
   ``<UTC>.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agg_config.paths import repo_root
from agg_config.settings import Settings
from agg_config.tenants import Tenants, load_tenants
from agg_kafka.admin import ensure_topics
from agg_kafka.topics import catalogue_from_settings
from agg_simulator.__main__ import money_check, projection_check
from agg_simulator.model import Expectation
from agg_testkit.servers import provide
from bench import report
from bench.procs import CpuMeter, machine_facts
from bench.systems import BUILDERS, LETTERS, ORDER, WITHOUT_LEDGER, System
from bench.workload import (
    Answer,
    Call,
    Player,
    Schedule,
    build_schedule,
    callback_lines,
    read_answers,
    request_line,
    write_lines,
)

DEFAULT_RATES = (100, 250, 500, 1000, 1500, 2000, 3000, 4000)
LOADGEN_SOURCE = repo_root() / "bench" / "loadgen"


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


@dataclass
class Step:
    schedule: Schedule
    prefix: str
    answers: list[Answer]
    figures: dict[str, Any] = field(default_factory=dict)


def step_seed(seed: int, rate: float, kind: str = "step") -> int:
    """The seed of the schedule of every system's step at ``rate`` (``kind`` "warmup" for the
    unmeasured first step), the same in every run with the same base seed."""
    digest = hashlib.sha256(f"{seed}/{kind}/{rate:g}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def go_binary() -> str | None:
    """The Go toolchain: on the PATH, or where the official archive installs it."""
    found = shutil.which("go")
    if found:
        return found
    default = Path("/usr/local/go/bin/go")
    return str(default) if default.exists() else None


def build_loadgen(target: Path) -> Path:
    """Build the Go load generator if it is missing or older than its sources."""
    sources = [*LOADGEN_SOURCE.glob("*.go"), LOADGEN_SOURCE / "go.mod"]
    newest = max(p.stat().st_mtime for p in sources)
    if target.exists() and target.stat().st_mtime >= newest:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    go = go_binary()
    if go is None:
        raise SystemExit("the load generator needs Go: install golang-go (make deps does)")
    log("building the load generator (Go) ...")
    subprocess.run(
        [go, "build", "-o", str(target), "."],
        cwd=LOADGEN_SOURCE,
        env={**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"},
        check=True,
    )
    return target


class Bench:
    def __init__(self, args: argparse.Namespace, settings: Settings, tenants: Tenants):
        self.args = args
        self.settings = settings
        self.tenants = tenants
        self.work: Path = args.work_dir
        self.loadgen = build_loadgen(self.work / "bin" / "loadgen")
        self.run_id = f"{int(time.time()) % 10**8:x}"
        # the load generator speaks canonical-v1: only those providers' games are offered
        self.secrets = {p.id: p.shared_secret() for p in tenants.providers
                        if p.protocol == "canonical-v1" and p.secret}  # fmt: skip
        self.players: dict[str, list[Player]] = {}

    # --- the load generator --------------------------------------------------------------------

    def send(
        self,
        base_url: str,
        lines: Sequence[str] | Iterator[str],
        label: str,
        *,
        closed: int = 0,
    ) -> tuple[dict[str, Any], list[tuple[Answer, dict[str, Any]]]]:
        requests = self.work / "requests.jsonl"
        results = self.work / "results.jsonl"
        write_lines(requests, lines)
        cmd = [
            str(self.loadgen),
            "-base",
            base_url,
            "-in",
            str(requests),
            "-out",
            str(results),
            "-label",
            label,
            "-timeout",
            f"{self.args.timeout_s}s",
        ]
        if closed:
            cmd += ["-mode", "closed", "-concurrency", str(closed)]
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        return summary, read_answers(results)

    # --- players -------------------------------------------------------------------------------

    def open_sessions(self, base_url: str, names: Sequence[str]) -> None:
        operators = [o for o in self.tenants.operators if o.wallet.mode == "kafka"]
        wanted: list[Player] = []
        for name in names:
            for i in range(self.args.players):
                op = operators[i % len(operators)]
                # the load generator signs canonical-v1 callbacks only
                games = [
                    g
                    for g in self.tenants.games
                    if g.provider in op.providers
                    and g.provider in self.secrets
                    and not g.restricted_countries
                ]
                game = games[(i // len(operators)) % len(games)]
                wanted.append(
                    Player(
                        op.id,
                        f"bench-{self.run_id}-{LETTERS[name]}{i}",
                        op.currencies[0],
                        game.id,
                        game.provider,
                    )
                )
        secrets = {o.id: o.secret.reveal() for o in operators}
        now = int(time.time())
        lines = []
        for p in wanted:
            request = json.dumps(
                {
                    "player_id": p.player,
                    "currency": p.currency,
                    "country": "MT",
                    "game_id": p.game,
                    "mode": "real",
                }
            ).encode()
            path = f"/v1/operators/{p.operator}/sessions"
            lines.append(request_line(secrets[p.operator], "POST", path, request, 0, now))
        started = time.monotonic()
        summary, answers = self.send(base_url, lines, "sessions", closed=32)
        tokens = []
        for p, (answer, body) in zip(wanted, answers, strict=True):
            if answer.code != 201 or "session_token" not in body:
                raise RuntimeError(f"opening a session for {p.player} failed: {answer.label}")
            tokens.append(body["session_token"])
        opened = [
            Player(p.operator, p.player, p.currency, p.game, p.provider, t)
            for p, t in zip(wanted, tokens, strict=True)
        ]
        for k, name in enumerate(names):
            self.players[name] = opened[k * self.args.players : (k + 1) * self.args.players]
        log(
            f"opened {len(opened)} sessions in {time.monotonic() - started:.1f}s "
            f"({summary['achieved_per_s']:.0f}/s)"
        )

    # --- one system ----------------------------------------------------------------------------

    def step(
        self, system: System, meter: CpuMeter, rate: float, seconds: float, tag: str, seed: int
    ) -> Step:
        """One step: the schedule of ``seed`` at ``rate`` for ``seconds``, sent open loop, and
        its figures."""
        players = self.players[system.name]
        prefix = f"bench-{self.run_id}-{LETTERS[system.name]}{tag}"
        rng = random.Random(seed)
        schedule = build_schedule(len(players), rate, seconds, prefix=prefix, rng=rng)
        lines = callback_lines(
            schedule.calls,
            range(len(schedule.calls)),
            players,
            self.secrets,
            timestamp=int(time.time()),
            prefix=prefix,
        )
        before = meter.sample()
        started = time.monotonic()
        summary, answered = self.send(system.base_url, list(lines), f"{system.name}@{tag}/s")
        window = time.monotonic() - started
        cpu = CpuMeter.delta(before, meter.sample())
        cpu["loadgen"] = round(summary["cpu_user_s"] + summary["cpu_sys_s"], 3)
        answers = [a for a, _ in answered]
        figures = report.step_figures(
            schedule.calls, answers, summary, offered_per_s=rate, warmup_s=self.args.warmup_seconds
        )
        figures["seed"] = seed
        figures["cpu_s"] = cpu
        figures["cpu_window_s"] = round(window, 2)
        figures["cpu_ms_per_callback"] = report.cpu_ms_per_callback(cpu, figures["answered"])
        lag = system.lag("projector", "agg_projector_lag")
        figures["projector_lag"] = None if lag is None else int(lag)
        lat = figures["latency_ms"]
        log(
            f"{system.name} {tag}/s: achieved {figures['achieved_per_s']}/s  p50 {lat['p50']}"
            f"  p99 {lat['p99']}  p99.9 {lat['p99.9']}  max {lat['max']} ms  errors "
            f"{figures['errors']}  cpu {figures['cpu_ms_per_callback']['total']} ms/callback"
            f"  projector lag {figures['projector_lag']}"
        )
        return Step(schedule, prefix, answers, figures)

    def ladder(self, system: System, meter: CpuMeter) -> dict[str, Any]:
        steps: list[Step] = []
        skipped: list[float] = []
        warmup: Step | None = None
        if self.args.warmup_step_seconds > 0:
            # a fresh broker's JIT, connection set-up and first-use caches are not measured
            rate = self.args.warmup_step_rate
            seed = step_seed(self.args.seed, rate, "warmup")
            warmup = self.step(system, meter, rate, self.args.warmup_step_seconds, f"w{rate}", seed)
            system.drain()
        for k, rate in enumerate(self.args.rates):
            seed = step_seed(self.args.seed, rate)
            steps.append(self.step(system, meter, rate, self.args.step_seconds, str(rate), seed))
            if report.saturated(steps[-1].figures):
                skipped = list(self.args.rates[k + 1 :])
                if skipped:
                    log(f"{system.name} cannot keep up at {rate}/s: not offering {skipped}")
                break
            system.drain()
        result: dict[str, Any] = {
            "description": system.description,
            "steps": [s.figures for s in steps],
            "skipped_rates": skipped,
        }
        if warmup is not None:
            result["warmup_step"] = warmup.figures
        if system.name not in WITHOUT_LEDGER:
            checked = steps if warmup is None else [warmup, *steps]
            result["money_check"] = self.settle_and_check(system, checked)
        return result

    # --- retries and the money check -----------------------------------------------------------

    def settle_and_check(self, system: System, steps: list[Step]) -> dict[str, Any]:
        """Retry every callback without a final answer (as providers do) until answered, then
        compare every player's wallet balance change with the answers."""
        players = self.players[system.name]
        retried = 0
        first = {(id(s), i): a.label for s in steps for i, a in enumerate(s.answers)}
        for attempt in range(self.args.settle_rounds):
            todo = [(s, i) for s in steps for i, a in enumerate(s.answers) if not a.final]
            if not todo:
                break
            retried += len(todo)
            log(
                f"{system.name}: retrying {len(todo)} callbacks without a final answer "
                f"(round {attempt + 1})"
            )
            system.drain()
            now = int(time.time())
            lines = [
                line
                for s, i in todo
                for line in callback_lines(
                    s.schedule.calls, [i], players, self.secrets, timestamp=now, prefix=s.prefix
                )
            ]
            _, answered = self.send(system.base_url, lines, f"{system.name} retries", closed=16)
            for (s, i), (answer, _) in zip(todo, answered, strict=True):
                s.answers[i] = answer
            time.sleep(1)
        unanswered = sum(1 for s in steps for a in s.answers if not a.final)
        expect = Expectation()
        differing: list[str] = []
        for s in steps:
            for i, (call, answer) in enumerate(zip(s.schedule.calls, s.answers, strict=True)):
                self._expect(expect, players[call.player], call, answer)
                origin = call.origin
                if call.kind == "duplicate" and origin is not None:
                    if s.answers[origin].status != answer.status:
                        differing.append(
                            f"{call.txn}: original {first[(id(s), origin)]} then "
                            f"{s.answers[origin].label}, retry {first[(id(s), i)]} then "
                            f"{answer.label}"
                        )
        duplicates_differing = len(differing)
        prefix = f"bench-{self.run_id}-{LETTERS[system.name]}"
        problems = [
            line for _, line in money_check(expect, prefix, self.settings.database_url, settle_s=60)
        ]
        projection: list[str] = []
        if system.name == "pipeline":
            projection = projection_check(prefix, self.settings.database_url, settle_s=300)
        ok = not problems and not projection and not unanswered and not duplicates_differing
        if ok:
            checked = "wallet = answers" + (
                ", projections = wallet" if system.name == "pipeline" else ""
            )
            verdict = f"OK for all {len(expect.players)} players ({checked})"
        else:
            verdict = (
                f"FAILED: {len(problems)} wallet mismatches, {len(projection)} projection"
                f" mismatches, {unanswered} callbacks never answered, {duplicates_differing}"
                " duplicates answered differently"
            )
        log(f"{system.name} money check: {verdict}")
        return {
            "ok": ok,
            "verdict": verdict,
            "players_checked": len(expect.players),
            "retried_callbacks": retried,
            "unanswered": unanswered,
            "duplicates_answered_differently": duplicates_differing,
            "duplicates_differing": differing[:20],
            "wallet_mismatches": problems[:20],
            "projection_mismatches": projection[:20],
            "accepted_bets_minor": sum(expect.bets.values()),
            "credited_wins_minor": sum(expect.wins.values()),
            "refunds_minor": sum(expect.refunds.values()),
        }

    @staticmethod
    def _expect(expect: Expectation, p: Player, call: Call, answer: Answer) -> None:
        key = (p.operator, p.player, p.currency)
        if call.kind in ("bet", "duplicate"):
            expect.bet_answered(key, p.provider, call.txn, call.amount, answer.status)
        elif call.kind == "win":
            expect.win_answered(key, p.provider, call.txn, call.amount, answer.status)
        else:
            assert call.ref_txn is not None
            expect.rollback_answered(p.provider, call.ref_txn, answer.status)

    # --- the whole run -------------------------------------------------------------------------

    def run(self, env: dict[str, str], broker_pid: Any, postgres_pid: Any) -> dict[str, Any]:
        started = time.monotonic()
        result: dict[str, Any] = {
            "started_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "git": git_facts(),
            "machine": machine_facts(),
            "config": {
                "players": self.args.players,
                "rates_per_s": list(self.args.rates),
                "step_seconds": self.args.step_seconds,
                "warmup_seconds": self.args.warmup_seconds,
                "mix": {"bet": 0.60, "win": 0.35, "rollback": 0.04, "duplicate": 0.01},
                "loadgen": "bench/loadgen (Go, open loop, latency from the scheduled send time)",
                "seed": self.args.seed,
                "step_seed": "sha256('<seed>/step/<rate>')[:8] (warmup: '/warmup/'), big-endian:"
                " every system gets the same schedule at a step",
            },
            "systems": {},
        }
        names = [n for n in ORDER if n in self.args.systems]
        root = self.work / "services"
        systems = {name: BUILDERS[name](root, env) for name in names}
        pipeline = systems["pipeline"] if "pipeline" in systems else BUILDERS["pipeline"](root, env)
        with running(pipeline):
            sessions_for = [n for n in names if n not in WITHOUT_LEDGER] or ["pipeline"]
            self.open_sessions(pipeline.base_url, sessions_for)
            for name in WITHOUT_LEDGER:
                self.players.setdefault(name, self.players[sessions_for[0]])
            if "pipeline" in systems:
                result["systems"]["pipeline"] = self.ladder(
                    pipeline, self.meter(pipeline, broker_pid, postgres_pid)
                )
        for name in names:
            if name == "pipeline":
                continue
            system = systems[name]
            with running(system):
                log(f"{name}: {system.description}")
                result["systems"][name] = self.ladder(
                    system, self.meter(system, broker_pid, postgres_pid)
                )
        result["ratios"] = report.ratios(result["systems"])
        # another measurement may add result["replay"] = {"events_per_s": ...} before this
        result["targets"] = report.evaluate_targets(result["systems"], result.get("replay"))
        result["took_s"] = round(time.monotonic() - started, 1)
        return result

    def meter(self, system: System, broker_pid: Any, postgres_pid: Any) -> CpuMeter:
        return CpuMeter(
            {
                "broker": broker_pid,
                "postgres": postgres_pid,
                "ingress": system.pid_of("ingress"),
                "saga": system.pid_of("saga"),
                "wallet": system.pid_of("wallet"),
                "projector": system.pid_of("projector"),
            }
        )


@contextlib.contextmanager
def running(system: System) -> Iterator[System]:
    log(f"starting {system.name}: {', '.join(p.name for p in system.processes.values())}")
    try:
        system.start()
        yield system
    finally:
        system.stop()


def git_facts() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=repo_root(), capture_output=True, text=True)
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD") or "unknown",
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rates",
        default=",".join(map(str, DEFAULT_RATES)),
        help="offered callbacks per second, comma separated",
    )
    parser.add_argument("--step-seconds", type=float, default=20.0)
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=4.0,
        help="start of each step left out of its latency percentiles",
    )
    parser.add_argument(
        "--warmup-step-seconds",
        type=float,
        default=30.0,
        help="an unmeasured step before each system's ladder (0: none)",
    )
    parser.add_argument("--warmup-step-rate", type=int, default=300)
    parser.add_argument("--players", type=int, default=10_000)
    parser.add_argument("--systems", default=",".join(ORDER), help="comma separated")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout-s", type=int, default=10, help="load generator's timeout")
    parser.add_argument("--settle-rounds", type=int, default=5)
    parser.add_argument("--work-dir", type=Path, default=repo_root() / "var" / "bench")
    parser.add_argument("--out-dir", type=Path, default=repo_root() / "bench" / "results")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    args.rates = tuple(float(r) if "." in r else int(r) for r in args.rates.split(","))
    args.systems = tuple(s.strip() for s in args.systems.split(","))
    unknown = set(args.systems) - set(BUILDERS)
    if unknown:
        parser.error(f"unknown systems: {sorted(unknown)}")
    return args


def fresh_stack_dir(root: Path) -> None:
    """The local stack of the previous run is stopped and removed: every run starts empty."""
    if root.exists():
        from agg_devstack.stack import LocalStack

        with contextlib.suppress(Exception):
            LocalStack(root, Settings(), create_topics=False).down()
        shutil.rmtree(root)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    stack_root = args.work_dir / "stack"
    external = bool(os.environ.get("AGG_KAFKA_BOOTSTRAP") and os.environ.get("AGG_DATABASE_URL"))
    if not external:
        fresh_stack_dir(stack_root)
    log("starting the servers ..." if not external else "using the servers of the environment")
    with provide(workdir=stack_root) as servers:
        # a random session secret per run: the ingress refuses the public default
        settings = Settings(
            kafka_bootstrap=servers.kafka_bootstrap,
            database_url=servers.database_url,
            session_secret=secrets.token_hex(32),
        )
        asyncio.run(ensure_topics(servers.kafka_bootstrap, catalogue_from_settings(settings)))
        tenants = load_tenants(settings.tenants_file)
        env = {
            "AGG_KAFKA_BOOTSTRAP": servers.kafka_bootstrap,
            "AGG_DATABASE_URL": servers.database_url,
            "AGG_SESSION_SECRET": settings.session_secret.get_secret_value(),
            "AGG_STATE_DIR": str(args.work_dir),
        }
        broker_pid: Any = lambda: None  # noqa: E731
        postgres_pid: Any = lambda: None  # noqa: E731
        if servers.choice.kafka == "local":
            from agg_devstack.stack import LocalStack

            stack = LocalStack(stack_root, settings, create_topics=False)
            broker_pid, postgres_pid = stack.kafka.pid, stack.postgres.pid
        bench = Bench(args, settings, tenants)
        result = bench.run(env, broker_pid, postgres_pid)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = result["started_utc"].replace(":", "").replace("-", "")
    json_path = args.out_dir / f"{stamp}.json"
    result["json_path"] = str(
        json_path.relative_to(repo_root()) if json_path.is_relative_to(repo_root()) else json_path
    )
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    text = report.summary(result)
    (args.out_dir / f"{stamp}.txt").write_text(text + "\n")
    if not args.no_plot:
        report.plot(result, args.out_dir / f"{stamp}.png")
    print()
    print(text)
    failed = [
        n for n, d in result["systems"].items() if d.get("money_check", {}).get("ok") is False
    ]
    if failed:
        print(f"MONEY CHECK FAILED for {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
