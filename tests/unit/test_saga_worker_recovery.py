"""The saga worker's recovery on the simulated port: whatever a crash leaves in the state
topic, a restore never fails, a torn write is repaired, a player whose state cannot be used
is parked alone, and a debit's deadline runs from when it was decided, not from when its
request was written."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime

import pytest

from agg_avro import AvroCodec
from agg_domain.saga import PlayerState, Request, SagaConfig, decide
from agg_domain.statuses import Action
from agg_ports.transport import OutRecord
from agg_saga.state_codec import KEY_SEPARATOR, StateBuilder, state_records
from agg_saga.worker import SagaWorker
from agg_sim.broker import SimBroker, SimClock, SimTransport
from agg_simulator.world import sim_settings

CODEC = AvroCodec()
SETTINGS = sim_settings()
A, B = b"op-a:pl-a", b"op-a:pl-b"


def _request(player: str, txn: str, amount: int, written_ms: int) -> bytes:
    return CODEC.encode("casino.agg.ProviderRequest", {
        "request_id": f"q-{player}-{txn}", "correlation_id": f"c-{txn}", "provider_id": "prov-x",
        "operator_id": "op-a", "player_id": player, "action": "BET", "session_token": "s",
        "transaction_id": txn, "reference_transaction_id": None, "round_id": "r1",
        "game_id": "g", "amount": amount, "currency": "EUR", "round_closed": False,
        "received_at": datetime.fromtimestamp(written_ms / 1000, tz=UTC), "reply_to": "i",
        "reply_partition": 0,
    })  # fmt: skip


def _world() -> tuple[SimClock, SimBroker, SimTransport, SagaWorker]:
    clock = SimClock()
    broker = SimBroker(clock, partitions=1)
    transport = SimTransport(broker, random.Random(1), batch_max=100)
    worker = SagaWorker(SETTINGS, ["op-a"], transport=transport, clock=clock)
    return clock, broker, transport, worker


async def _start(transport: SimTransport, worker: SagaWorker) -> None:
    await worker.start()
    await transport.assign({0})


def _commands(broker: SimBroker) -> list[dict[str, object]]:
    topic = "agg.wallet.commands.op-a"
    return [CODEC.decode(r.value or b"").datum for r in broker.read(topic, 0, 0, 1_000)]


def _bet_state(player: str, txn: str) -> tuple[PlayerState, PlayerState, list[str]]:
    old = PlayerState("op-a", player)
    request = Request(f"q-{txn}", "c", "prov-x", "op-a", player, Action.BET, "EUR", 0, txn,
                      None, "r1", "g", 10, False, "i", 0)  # fmt: skip
    decision = decide(old, request, 1_000, SagaConfig())
    return old, decision.state, list(decision.txns_changed)


def test_any_prefix_of_a_write_restores_the_old_or_the_new_state() -> None:
    old, new, changed = _bet_state("pl-a", "t1")
    base = state_records(None, old, A)
    write = state_records(old, new, A, None, changed)
    assert write[0][0] == A and len(write) > 1, "the header first, then the transactions"
    for cut in range(len(write) + 1):
        builder = StateBuilder()
        for key, value in base + write[:cut]:
            builder.add(key, value)
        assert builder.states()[A] == (new if cut >= 1 else old), cut


def test_a_torn_state_of_an_older_worker_parks_that_player_only() -> None:
    """Format 2 wrote the header without the transactions it names: a header whose pending
    debit's transaction record never landed. The worker restores, parks that player (its
    messages set aside, an alert metric), and decides every other player."""
    clock, broker, transport, worker = _world()
    _, torn, _ = _bet_state("pl-a", "t1")
    header = json.loads(state_records(None, torn, A)[0][1] or b"{}")
    for name in ("seq", "applied", "parked", "outbox", "delta"):
        header.pop(name)
    header["v"] = 2
    broker.append(OutRecord("agg.saga.state", A, json.dumps(header).encode(), 0))

    async def scenario() -> None:
        await _start(transport, worker)
        broker.append(OutRecord("agg.requests", A, _request("pl-a", "t2", 10, clock.wall_ms)))
        broker.append(OutRecord("agg.requests", B, _request("pl-b", "t1", 10, clock.wall_ms)))
        for _ in range(3):
            await worker.step()
        await worker.drain()

    asyncio.new_event_loop().run_until_complete(scenario())
    assert worker.meta[0][A].parked and "missing transaction" in worker.meta[0][A].parked
    assert [c["player_id"] for c in _commands(broker)] == ["pl-b"]
    parked = broker.log("agg.deadletters", 0)
    assert [r.key for r in parked] == [A]
    assert dict(broker.headers_of(parked[0]))["reason"].startswith(b"parked: state unreadable")


def test_a_write_cut_after_the_header_is_finished_by_the_restore() -> None:
    """The header landed, its transaction record and the outputs did not: the restore
    re-writes the record and publishes the outputs the header holds, once."""
    clock, broker, transport, worker = _world()

    async def scenario() -> None:
        await _start(transport, worker)
        broker.append(OutRecord("agg.requests", A, _request("pl-a", "t1", 10, clock.wall_ms)))
        await worker.step()

    asyncio.new_event_loop().run_until_complete(scenario())
    state_log = broker.log("agg.saga.state", 0)
    header_at = max(i for i, r in enumerate(state_log) if r.key == A)
    del state_log[header_at + 1 :]  # the transaction record never landed
    broker.logs[("agg.wallet.commands.op-a", 0)] = []  # nor the DEBIT
    broker.committed.clear()  # nor the offset commit
    _, _, transport2, worker2 = _world()
    transport2.broker = broker
    asyncio.new_event_loop().run_until_complete(_start(transport2, worker2))
    asyncio.new_event_loop().run_until_complete(worker2.step())
    assert [c["transaction_id"] for c in _commands(broker)] == ["t1"]
    keys = [r.key for r in broker.log("agg.saga.state", 0)]
    assert A + KEY_SEPARATOR + b"prov-x:t1" in keys[header_at + 1 :]
    # the request is redelivered (nothing was committed) and recognised as decided
    assert len(_commands(broker)) == 1


def test_a_debit_deadline_runs_from_its_decision_not_from_its_request() -> None:
    """A worker 10 s behind its input: the debit it sends now waits the wallet's full
    timeout before being compensated."""
    clock, broker, transport, worker = _world()
    written = clock.wall_ms
    broker.append(OutRecord("agg.requests", A, _request("pl-a", "t1", 10, written)))
    clock.advance(10_000)

    async def scenario() -> None:
        await _start(transport, worker)
        await worker.step()
        clock.advance(SETTINGS.tick_interval_ms)
        await worker.step()
        await worker.drain()

    asyncio.new_event_loop().run_until_complete(scenario())
    assert [c["kind"] for c in _commands(broker)] == ["DEBIT"], "no CANCEL: not timed out"
    txn = worker.states[0][A].txns["prov-x:t1"]
    assert txn.deadline_ms == written + 10_000 + SETTINGS.wallet_timeout_ms


def test_a_decision_that_raises_parks_its_player_across_restarts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug that makes one player's decision raise: that player's message and every later
    one is set aside in order, the flag survives a restart, and other players go on."""
    from agg_saga import worker as worker_module

    real_decide = worker_module.decide

    def decide(state: PlayerState, message: object, now: int, config: SagaConfig) -> object:
        if (
            state.player_id == "pl-a"
            and isinstance(message, Request)
            and message.transaction_id == "t1"
        ):
            raise KeyError("a bug")
        return real_decide(state, message, now, config)  # type: ignore[arg-type]

    monkeypatch.setattr(worker_module, "decide", decide)
    clock, broker, transport, worker = _world()

    async def scenario() -> None:
        await _start(transport, worker)
        for player, key, txn in (("pl-a", A, "t1"), ("pl-b", B, "t1"), ("pl-a", A, "t2")):
            broker.append(OutRecord("agg.requests", key, _request(player, txn, 10, clock.wall_ms)))
        await worker.step()
        await worker.drain()

    asyncio.new_event_loop().run_until_complete(scenario())
    assert [c["player_id"] for c in _commands(broker)] == ["pl-b"]
    assert [r.key for r in broker.log("agg.deadletters", 0)] == [A, A]
    monkeypatch.setattr(worker_module, "decide", real_decide)
    _, _, transport2, worker2 = _world()
    transport2.broker = broker

    async def again() -> None:
        await _start(transport2, worker2)
        broker.append(OutRecord("agg.requests", A, _request("pl-a", "t3", 10, clock.wall_ms)))
        await worker2.step()
        await worker2.drain()

    asyncio.new_event_loop().run_until_complete(again())
    assert worker2.meta[0][A].parked == "KeyError: 'a bug'"
    # pl-b's DEBIT is re-published by the restore (its write was the partition's last): the
    # same command, which the wallet dedupes; nothing of pl-a's
    assert {(c["player_id"], c["command_id"]) for c in _commands(broker)} == {
        ("pl-b", _commands(broker)[0]["command_id"])
    }
    assert len(broker.log("agg.deadletters", 0)) == 3
