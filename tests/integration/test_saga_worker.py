"""The saga worker on the real broker, with a scripted operator wallet: decisions reach the
wallet, the provider and the journal; state survives a restart and a SIGKILL; deadlines
compensate; two workers share the partitions."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agg_config.settings import Settings
from tests.integration.saga_harness import (
    Harness,
    LedgerWallet,
    ok_wallet,
    request,
    saga_in_process,
    saga_process,
)


@pytest.fixture(params=["aiokafka", "librdkafka"])
def saga_settings(
    settings: Settings, catalogue_topics: list[str], request: pytest.FixtureRequest
) -> Settings:
    """A deadline long enough that a busy machine does not turn a test of the happy path
    into a test of compensation; the deadline test shortens it. Every test runs on both
    transports of the port."""
    return settings.model_copy(
        update={"wallet_timeout_ms": 3_000, "retry_backoff_initial_ms": 200,
                "kafka_client": request.param}
    )  # fmt: skip


def player() -> str:
    return f"pl-{uuid.uuid4().hex[:10]}"


def test_bet_is_debited_answered_and_journaled_then_survives_a_restart(
    saga_settings: Settings,
) -> None:
    async def scenario() -> None:
        h = Harness(saga_settings)
        await h.start()
        try:
            p = player()
            async with saga_in_process(saga_settings):
                h.policy = ok_wallet(balance=9_850)
                rid = await h.send(request(p, "BET", "tx-1", 150, round_closed=True))
                outcome = await h.outcome(rid)
                assert (outcome["status"], outcome["balance"]) == ("OK", 9_850)
                [debit] = h.commands_for("tx-1", "DEBIT")
                assert (debit["amount"], debit["currency"], debit["player_id"]) == (150, "EUR", p)
                await h.until(lambda: h.events_for("tx-1", "BetAccepted"))
                await h.until(lambda: any(n == "RoundClosed" for n, _ in h.events))
            # a new worker reads the state back: the duplicate is answered from it
            async with saga_in_process(saga_settings):
                again = await h.send(request(p, "BET", "tx-1", 150, round_closed=True))
                assert (await h.outcome(again))["status"] == "OK"
                conflict = await h.send(request(p, "BET", "tx-1", 151))
                assert (await h.outcome(conflict))["status"] == "DUPLICATE_CONFLICT"
            assert len(h.commands_for("tx-1", "DEBIT")) == 1
        finally:
            await h.stop()

    asyncio.run(scenario())


def test_silent_wallet_gives_retry_later_then_a_cancel_until_acknowledged(
    saga_settings: Settings,
) -> None:
    saga_settings = saga_settings.model_copy(update={"wallet_timeout_ms": 800})

    async def scenario() -> None:
        h = Harness(saga_settings)
        await h.start()
        try:
            p = player()
            async with saga_in_process(saga_settings):
                h.policy = lambda command: None  # the wallet is down
                rid = await h.send(request(p, "BET", "tx-t", 500))
                outcome = await h.outcome(rid)
                assert outcome["status"] == "RETRY_LATER"
                await h.until(lambda: len(h.commands_for("tx-t", "CANCEL")) >= 2)  # resent
                await h.until(lambda: h.events_for("tx-t", "DebitTimedOut"))
                h.policy = ok_wallet()  # the wallet is back
                await h.until(lambda: h.events_for("tx-t", "DebitCancelled"))
                [cancel_id] = {c["command_id"] for c in h.commands_for("tx-t", "CANCEL")}
                [debit] = h.commands_for("tx-t", "DEBIT")
                assert all(
                    c["reference_command_id"] == debit["command_id"]
                    for c in h.commands_for("tx-t", "CANCEL")
                )
                # the provider's retry after the compensation is a new debit attempt
                retry = await h.send(request(p, "BET", "tx-t", 500))
                assert (await h.outcome(retry))["status"] == "OK"
                debits = {c["command_id"] for c in h.commands_for("tx-t", "DEBIT")}
                assert len(debits) == 2 and cancel_id not in debits
        finally:
            await h.stop()

    asyncio.run(scenario())


async def _bets_with_a_kill(
    h: Harness, bets: list[tuple[str, str, int]], kill_after: int, kill: Callable[[], Any]
) -> dict[str, dict[str, Any]]:
    """Drive the rounds like providers (20 at a time, retrying RETRY_LATER): a bet, then a
    win of twice its amount; call ``kill`` once ``kill_after`` bets are answered."""
    answers: dict[str, dict[str, Any]] = {}
    gate = asyncio.Semaphore(20)
    killed = False

    async def one(p: str, txn: str, amount: int) -> None:
        nonlocal killed
        async with gate:
            answers[txn] = await h.until_answered(p, "BET", txn, amount)
            if answers[txn]["status"] == "OK":
                win = f"{txn}-win"
                answers[win] = await h.until_answered(p, "WIN", win, 2 * amount)
            if len(answers) >= kill_after and not killed:
                killed = True
                await kill()

    await asyncio.gather(*(one(*b) for b in bets))
    return answers


async def _journal_caught_up(h: Harness, bets: list[tuple[str, str, int]]) -> None:
    """The journal is read by its own consumer: an answer can reach the test before the
    events decided with it. Wait for them (an event that never comes still fails the test)."""

    def journaled() -> bool:
        return all(
            h.events_for(txn, "BetAccepted") and h.events_for(f"{txn}-win", "WinCredited")
            for _, txn, _ in bets
        )

    with contextlib.suppress(TimeoutError):
        await h.until(journaled, timeout_s=10)


def _assert_each_round_settled_once(
    h: Harness,
    wallet: LedgerWallet,
    bets: list[tuple[str, str, int]],
    answers: dict[str, dict[str, Any]],
) -> None:
    for _, txn, amount in bets:
        assert answers[txn]["status"] == "OK", answers[txn]
        assert wallet.net[txn] == -amount, (txn, wallet.net[txn])
        assert len({e["event_id"] for e in h.events_for(txn, "BetAccepted")}) == 1
        # the win: credited exactly once, none lost
        assert answers[f"{txn}-win"]["status"] == "OK"
        assert wallet.net[f"{txn}-win"] == 2 * amount
        assert len({e["event_id"] for e in h.events_for(f"{txn}-win", "WinCredited")}) == 1
    assert wallet.balance == 1_000_000 + sum(a for _, _, a in bets)


def test_sigkill_in_the_middle_of_traffic_loses_and_doubles_nothing(
    saga_settings: Settings, tmp_path: Path
) -> None:
    """Rounds for many players flow while the worker is killed with SIGKILL and restarted;
    every accepted bet is debited exactly once, every win credited exactly once."""
    tag = uuid.uuid4().hex[:6]
    bets = [(f"k-{tag}-{i % 25}", f"tx-k-{tag}-{i}", 10 + i % 7) for i in range(300)]

    async def scenario() -> None:
        h = Harness(saga_settings)
        wallet = LedgerWallet()
        h.policy = wallet
        await h.start()
        log = tmp_path / "saga.log"
        workers = [saga_process(saga_settings, "saga-kill-1", log)]

        async def kill() -> None:
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait(10)
            workers.append(saga_process(saga_settings, "saga-kill-2", log))

        try:
            answers = await _bets_with_a_kill(h, bets, 150, kill)
            await _journal_caught_up(h, bets)
            _assert_each_round_settled_once(h, wallet, bets, answers)
        finally:
            workers[-1].send_signal(signal.SIGTERM)
            workers[-1].wait(30)
            await h.stop()

    asyncio.run(scenario())


def test_two_workers_share_the_partitions_and_one_is_killed(
    saga_settings: Settings, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    bets = [(f"w-{tag}-{i % 30}", f"tx-w-{tag}-{i}", 20) for i in range(200)]

    async def scenario() -> None:
        h = Harness(saga_settings)
        wallet = LedgerWallet()
        h.policy = wallet
        await h.start()
        log = tmp_path / "saga.log"
        first = saga_process(saga_settings, "saga-a", log)
        second = saga_process(saga_settings, "saga-b", log)

        async def kill() -> None:
            first.send_signal(signal.SIGKILL)
            first.wait(10)

        try:
            answers = await _bets_with_a_kill(h, bets, 100, kill)
            await _journal_caught_up(h, bets)
            _assert_each_round_settled_once(h, wallet, bets, answers)
        finally:
            for proc in (first, second):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(30)
            await h.stop()

    asyncio.run(scenario())


def test_a_restore_longer_than_the_session_timeout_does_not_lose_the_partitions(
    saga_settings: Settings,
) -> None:
    """The state is read outside the rebalance callback (no heartbeats are sent during it):
    a restore slower than the session timeout must not get the worker expelled and make it
    restore again and again."""
    from agg_saga.worker import SagaWorker

    settings = saga_settings.model_copy(update={"consumer_session_timeout_ms": 6_000})
    restores: list[set[int]] = []

    class SlowRestore(SagaWorker):
        async def _restore(self, partitions: set[int]) -> None:
            if partitions:
                restores.append(set(partitions))
                await asyncio.sleep(9)  # a big changelog
            await super()._restore(partitions)

    async def scenario() -> None:
        h = Harness(settings)
        await h.start()
        worker = SlowRestore(settings, ["op-alpha", "op-beta"], client_id="saga-slow")
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            await asyncio.wait_for(worker.ready.wait(), 60)
            h.policy = ok_wallet()
            rid = await h.send(request(player(), "BET", "tx-slow", 10, round_closed=True))
            assert (await h.outcome(rid, timeout_s=30))["status"] == "OK"
            await asyncio.sleep(8)  # a second expulsion would show as a second restore
            assert len(restores) == 1, restores
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await h.stop()

    asyncio.run(scenario())


def test_sigkill_right_after_a_timeout_decides_the_bet_once(
    saga_settings: Settings, tmp_path: Path
) -> None:
    """The wallet answers a debit only after its deadline. The worker decides the timeout
    (a CANCEL, DebitTimedOut, RETRY_LATER) and is killed with SIGKILL right then: as soon as
    the CANCEL shows on its topic, or at a few delays after the decision is logged; the
    debit's late OK reply is in the topic before it restarts. Whatever part of
    the timeout's batch was written, the bet is decided once: the wallet's net effect is the
    provider's final answer, and the journal never holds both DebitTimedOut and BetAccepted
    for one debit (the first protocol refunded a bet the provider was told was accepted)."""
    settings = saga_settings.model_copy(update={"wallet_timeout_ms": 1_500})
    tag = uuid.uuid4().hex[:6]

    async def scenario() -> None:
        h = Harness(settings)
        wallet = LedgerWallet()
        held: list[dict[str, Any]] = []
        hold = {"on": True}

        def policy(command: dict[str, Any]) -> dict[str, Any] | None:
            if hold["on"] and command["kind"] == "DEBIT":
                held.append(command)
                return None  # answered late, by hand
            return wallet(command)

        h.policy = policy
        await h.start()
        log = tmp_path / "saga.log"
        workers = [saga_process(settings, f"saga-aim-{tag}-0", log)]
        try:
            aims = [("cancel", 0.0), ("log", 0.0), ("log", 0.005), ("log", 0.02)]
            for n, (aim, delay_s) in enumerate(aims):
                hold["on"] = True
                pl, txn = f"aim-{tag}-{n}", f"tx-aim-{tag}-{n}"
                seen = log.read_text().count("DebitTimedOut") if log.exists() else 0
                await h.send(request(pl, "BET", txn, 40))
                if aim == "cancel":
                    # the CANCEL is on its topic: the timeout's outputs are out, and with the
                    # first protocol its state write had barely begun
                    await h.until(lambda t=txn: bool(h.commands_for(t, "CANCEL")), 30)
                else:
                    await h.until(lambda s=seen: log.exists()  # type: ignore[misc]
                                  and log.read_text().count("DebitTimedOut") > s, 30)  # fmt: skip
                await asyncio.sleep(delay_s)
                workers[-1].send_signal(signal.SIGKILL)
                workers[-1].wait(10)
                hold["on"] = False
                for command in [c for c in held if c["transaction_id"] == txn]:
                    await h._on_command_reply(command, wallet(command))
                workers.append(saga_process(settings, f"saga-aim-{tag}-{n + 1}", log))
                final = await h.until_answered(pl, "BET", txn, 40)
                await h.until(lambda t=txn: not [
                    c for c in h.commands_for(t, "CANCEL")
                    if c["command_id"] not in wallet.replies
                ], 30)  # fmt: skip
                want = -40 if final["status"] == "OK" else 0
                assert wallet.net[txn] == want, (aim, delay_s, final, wallet.net[txn])
                for debit in h.commands_for(txn, "DEBIT"):
                    names = {
                        name for name, e in h.events
                        if e.get("command_id") == debit["command_id"]
                    }  # fmt: skip
                    assert not ({"BetAccepted"} <= names and "DebitTimedOut" in names), names
        finally:
            workers[-1].send_signal(signal.SIGTERM)
            workers[-1].wait(30)
            await h.stop()

    asyncio.run(scenario())
