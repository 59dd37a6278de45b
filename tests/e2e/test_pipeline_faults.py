"""End to end under faults: saga workers killed with SIGKILL in the middle of traffic, with
the real ingress and reference wallet; every player's balance at the wallet must equal what
the answers promised."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from tests.e2e.conftest import STARTING_BALANCE, Pipeline


def settle(pipeline: Pipeline, action: str, player: str, token: str, txn: str,
           amount: int) -> str:  # fmt: skip
    """Like a provider: repeat the callback with the same transaction id until it is final."""
    for _ in range(60):
        call = pipeline.bet if action == "bet" else pipeline.win
        response = call(player, token, txn, amount)
        status = response.json()["status"]
        if status != "RETRY_LATER":
            return str(status)
        time.sleep(0.2)
    raise AssertionError(f"{action} {txn} never got a final answer")


def test_saga_workers_killed_mid_traffic_lose_and_double_nothing(pipeline: Pipeline) -> None:
    second = pipeline._saga("saga-2")
    second.start(pipeline.env, 90)
    pipeline.sagas.append(second)
    players = [pipeline.new_player() for _ in range(20)]
    expected = {player: STARTING_BALANCE for player, _ in players}
    lock = threading.Lock()
    done = 0

    def round_of(i: int) -> None:
        nonlocal done
        player, token = players[i % len(players)]
        bet, win = f"tx-{uuid.uuid4().hex[:12]}", f"tx-{uuid.uuid4().hex[:12]}"
        amount = 10 + i % 13
        if settle(pipeline, "bet", player, token, bet, amount) == "OK":
            assert settle(pipeline, "win", player, token, win, 3 * amount) == "OK"
            with lock:
                expected[player] += 2 * amount
        with lock:
            done += 1

    def killer() -> None:
        while done < 60:
            time.sleep(0.05)
        victim = pipeline.sagas[0]
        pid = victim.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # the other worker takes its partitions over
        while done < 120:
            time.sleep(0.05)
        pid = second.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        replacement = pipeline._saga("saga-3")
        replacement.start(pipeline.env, 90)
        pipeline.sagas.append(replacement)

    kill_thread = threading.Thread(target=killer)
    kill_thread.start()
    with ThreadPoolExecutor(12) as pool:
        list(pool.map(round_of, range(200)))
    kill_thread.join(120)
    for player, _ in players:
        assert pipeline.wallet_balance(player) == expected[player], player
