"""``make run``'s traffic: ``aggregator simulate``, the command ``make run`` runs, against the
whole pipeline (saga worker, reference Kafka wallet, reference HTTP wallet behind the bridge,
projector, ingress as processes) on the test servers. It plays every provider protocol of
the dev tenants at operators of every wallet mode (Kafka, HTTP, transfer); its own money
check (one verdict per operator) and projection check must pass; its output, not a
terminal here, is one plain line per interval and then the final report, whose games pay
their configured RTP and whose wins are the wins the ledger credited."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from agg_config.settings import Settings
from agg_config.tenants import load_tenants
from tests.e2e.conftest import Pipeline


@pytest.fixture(scope="module")
def pipeline(
    settings: Settings, catalogue_topics: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    """One pipeline for this module (the projector's two clients are covered elsewhere),
    with the HTTP wallet and the bridge: the dev tenants' op-gamma is on an HTTP wallet. The
    saga waits for a wallet as long as by default (1.5 s) (the bridge refuses to start when
    its calls and retries to op-gamma could outlast the saga's wait)."""
    p = Pipeline(settings, tmp_path_factory.mktemp("pipeline"), projector_client="librdkafka",
                 http_wallets=True, env={"AGG_WALLET_TIMEOUT_MS": "1500"})  # fmt: skip
    try:
        p.start()
        yield p
    finally:
        p.stop()


AGGREGATOR = Path(sys.executable).parent / "aggregator"


def report_row(lines: list[str], name: str) -> list[str]:
    [found] = [line for line in lines if line.startswith(name + " ")]
    return found[len(name) :].split()


def test_aggregator_simulate_passes_its_money_check_and_reports_each_games_rtp(
    pipeline: Pipeline,
) -> None:
    result = subprocess.run(
        [str(AGGREGATOR), "simulate", "--duration", "8", "--players", "24", "--concurrency", "4",
         "--seed", "11", "--game-rtp", "nova-starfall=90"],
        env={**os.environ, **pipeline.env}, capture_output=True, text=True, timeout=600,
        check=False,
    )  # fmt: skip
    out = result.stdout
    print(out)
    assert result.returncode == 0, out + result.stderr
    assert "\x1b" not in out, "no terminal: no escape sequences"
    lines = out.splitlines()
    run_id = re.search(r"players sim-([0-9a-f]+)-\*", lines[0])
    assert run_id is not None, lines[0]
    intervals = [line for line in lines if line.startswith("t=")]
    assert intervals, out
    assert all("nova-starfall=" in line and "/90.00%" in line for line in intervals)
    assert re.search(r"money check: OK for all \d+ players", out), out
    # players 3, 13, 23 get a day's wager limit, 7 a self-exclusion: refused, not lost
    assert "player controls: wager limit 3  self-excluded 1; refused: PLAYER_BLOCKED" in out
    assert "projection check: OK" in out

    tenants = load_tenants(pipeline.settings.tenants_file)
    # every operator's money is checked on its own, whichever wallet it is on
    for op in tenants.operators:
        verdict = f"money check {op.id} ({op.wallet.mode}): OK for "
        assert re.search(re.escape(verdict) + r"[1-9]\d* players", out), (op.id, out)
    # every provider protocol and every wallet mode were played, with accepted callbacks
    for name in [*(f"proto {p.protocol}" for p in tenants.providers), "wallet kafka",
                 "wallet http", "wallet transfer"]:  # fmt: skip
        callbacks, *_, ok, _refused, _retry = report_row(lines, name)
        assert int(callbacks.replace(",", "")) > 0 and int(ok.replace(",", "")) > 0, (name, out)
    assert {p.protocol for p in tenants.providers} == {
        "canonical-v1", "hub88-v1", "pragmatic-v1", "evolution-v1"}  # fmt: skip

    played = {g.id for g in tenants.games if not g.restricted_countries}  # 24 players: all
    rows = {game: report_row(lines, game) for game in played}
    settled = 0
    for game, (rounds, stakes, wins, observed, configured, _) in rows.items():
        assert configured == ("90.00%" if game == "nova-starfall" else "96.00%"), game
        settled += int(rounds.replace(",", ""))
        stake, win = int(stakes.replace(",", "")), int(wins.replace(",", ""))
        assert observed == (f"{win / stake:.2%}" if stake else "-"), (game, out)
    assert settled > 0, out

    # the wins in the report are the games' wins the journal holds for this run's players
    # (bonus money, free spins' wins, jackpots and promotions, is reported apart)
    with psycopg.connect(pipeline.settings.database_url) as conn:
        credited = dict(
            conn.execute(
                "select payload->>'game_id', sum(amount) from projection.journal"
                " where event_type = 'WinCredited' and player_id like %s"
                " and coalesce(payload->>'win_kind', 'REGULAR') = 'REGULAR'"
                " and coalesce(payload->>'mode', 'real') = 'real' group by 1",
                (f"sim-{run_id.group(1)}-%",),
            ).fetchall()
        )
    assert "bonus money (outside GGR): " in out and "campaigns granted 3" in out, out
    assert {g: int(r[2].replace(",", "")) for g, r in rows.items()} == {
        g: int(credited.get(g, 0)) for g in played
    }


def test_on_a_terminal_the_summary_is_redrawn_in_place(pipeline: Pipeline) -> None:
    """The same command with its output on a pseudo-terminal: screens redrawn from the cursor
    home (the screen cleared once), no plain interval lines, then the final report."""
    master, slave = pty.openpty()
    received = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other end closed
                return
            if not chunk:
                return
            received.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc = subprocess.run(
            [str(AGGREGATOR), "simulate", "--duration", "4", "--players", "4", "--concurrency",
             "2", "--skip-projections"],
            env={**os.environ, **pipeline.env, "COLUMNS": "160", "LINES": "48"},
            stdout=slave, stderr=subprocess.PIPE, timeout=600, check=False,
        )  # fmt: skip
    finally:
        os.close(slave)
    reader.join(30)
    os.close(master)
    out = received.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    assert out.count("\x1b[2J") == 1 and out.count("\x1b[H") >= 2, out
    assert "\nt=" not in out, "no plain interval lines on a terminal"
    final = out[out.rindex("\x1b[J") :]
    assert "whole run" in final and "money check: OK for all" in final
    assert re.search(r"nova-starfall +[\d,]+ +[\d,]+ +[\d,]+ +(?:[\d.]+%|-) +96\.00%", final), final
