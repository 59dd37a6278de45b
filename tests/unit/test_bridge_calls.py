"""The bridge's calling half (:class:`agg_bridge.service.WalletCaller`) against the operator's
side of the real protocol, on httpx's in-process transport instead of the network: each
player's commands in order while players run concurrently up to ``concurrency_max``,
bounded retries of retryable failures only, the breaker holding calls back, malformed
commands never called."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from agg_bridge.service import Outcome, WalletCaller
from agg_config.tenants import WalletConfig
from agg_domain.statuses import ReplyStatus
from agg_protocols.operator_wallet import Answer, WalletCall
from agg_protocols.wallet_canonical import CanonicalWalletClient, CanonicalWalletServer
from agg_wallet.rules import Command

SECRET = b"wallet-secret-for-the-unit-tests"
OPERATOR = "op-gamma"


def wallet(**fields: Any) -> WalletConfig:
    base: dict[str, Any] = {
        "mode": "http",
        "url": "http://wallet.test/op-gamma",
        "secret": {"value": SECRET.decode()},
        "retry_backoff_ms": 0,
    }
    return WalletConfig.model_validate({**base, **fields})


def command(player: str, n: int, kind: str = "DEBIT", amount: int = 10) -> Command:
    return Command(
        command_id=f"c-{player}-{n}", correlation_id=f"corr-{player}-{n}", operator_id=OPERATOR,
        player_id=player, kind=kind, amount=amount, currency="EUR", provider_id="prov-nova",
        transaction_id=f"t-{n}", round_id="r-1", game_id="nova-starfall",
        reference_command_id=None, issued_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip


@dataclass
class Wallet:
    """The operator's side on the real protocol; ``script`` answers a command id's calls in
    turn (an HTTP status, ``"timeout"``, ``"refused"``, ``"slow"``, ``"huge"`` or ``"ok"``),
    then ``ok``."""

    delay_s: float = 0.0
    script: dict[str, list[Any]] = field(default_factory=dict)
    arrivals: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    calls: list[str] = field(default_factory=list)
    in_flight: int = 0
    in_flight_max: int = 0
    server: CanonicalWalletServer = field(
        default_factory=lambda: CanonicalWalletServer(SECRET, "/op-gamma")
    )

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        sub = request.url.path.removeprefix("/op-gamma")
        parsed = self.server.parse(OPERATOR, request.method, sub,
                                   {k.lower(): v for k, v in request.headers.items()}, body,
                                   datetime.now(UTC).timestamp())  # fmt: skip
        assert isinstance(parsed, WalletCall), parsed
        self.calls.append(parsed.command_id)
        self.in_flight += 1
        self.in_flight_max = max(self.in_flight_max, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
            step = (self.script.get(parsed.command_id) or ["ok"]).pop(0)
        finally:
            self.in_flight -= 1
        if step == "timeout":
            raise httpx.ReadTimeout("no answer", request=request)
        if step == "slow":  # longer than the call's whole timeout
            await asyncio.sleep(0.5)
        if step == "huge":
            return httpx.Response(200, content=b" " * 100_000)
        if step == "refused":
            raise httpx.ConnectError("connection refused", request=request)
        if isinstance(step, int):
            return httpx.Response(step, content=b"")
        self.arrivals[parsed.player_id].append(parsed.command_id)
        rendered = self.server.render(parsed, Answer(ReplyStatus.OK, 1_000, "OK"))
        return httpx.Response(rendered.http, content=rendered.body)


def caller(fake: Wallet, **fields: Any) -> WalletCaller:
    return WalletCaller(OPERATOR, wallet(**fields), CanonicalWalletClient(SECRET, "/op-gamma"),
                        transport=httpx.MockTransport(fake))  # fmt: skip


def run_all(c: WalletCaller, commands: list[Command]) -> list[Outcome]:
    async def go() -> list[Outcome]:
        try:
            keys = [f"{OPERATOR}:{x.player_id}".encode() for x in commands]
            return await c.call_all(commands, [None] * len(commands), keys)
        finally:
            await c.close()

    return asyncio.run(go())


def test_players_run_concurrently_up_to_the_limit_each_in_order() -> None:
    fake = Wallet(delay_s=0.01)
    players = [f"p{i}" for i in range(6)]
    commands = [command(p, n) for n in range(5) for p in players]  # interleaved, as a batch
    outcomes = run_all(caller(fake, concurrency_max=3), commands)
    assert [(o.status, o.balance, o.attempts) for o in outcomes] == [
        (ReplyStatus.OK, 1_000, 1)
    ] * len(commands)
    assert fake.in_flight_max == 3
    for p in players:
        assert fake.arrivals[p] == [f"c-{p}-{n}" for n in range(5)]


@pytest.mark.parametrize(
    ("script", "retry_count_max", "status", "attempts"),
    [
        (["ok"], 1, ReplyStatus.OK, 1),
        ([503, "ok"], 1, ReplyStatus.OK, 2),
        (["timeout", "ok"], 1, ReplyStatus.OK, 2),
        (["refused", "ok"], 1, ReplyStatus.OK, 2),
        ([502, 504, "ok"], 2, ReplyStatus.OK, 3),
        ([503, 503], 1, ReplyStatus.ERROR, 2),  # bounded
        (["timeout"], 0, ReplyStatus.ERROR, 1),
        (["slow", "ok"], 1, ReplyStatus.OK, 2),  # the call's own timeout, 100 ms in all
        (["huge", "ok"], 1, ReplyStatus.ERROR, 1),  # an answer too large: not trusted
        ([400, "ok"], 3, ReplyStatus.ERROR, 1),  # not retryable
        ([401, "ok"], 3, ReplyStatus.ERROR, 1),
    ],
)
def test_only_retryable_failures_are_sent_again_and_boundedly(
    script: list[Any], retry_count_max: int, status: ReplyStatus, attempts: int
) -> None:
    fake = Wallet(script={"c-p-0": list(script)})
    c = caller(fake, retry_count_max=retry_count_max, timeout_ms=100)
    (outcome,) = run_all(c, [command("p", 0)])
    assert (outcome.status, outcome.attempts) == (status, attempts)
    assert fake.calls == ["c-p-0"] * attempts  # every resend carries the same command id


def test_the_open_breaker_answers_error_without_calling() -> None:
    fake = Wallet(script={f"c-p-{n}": ["refused"] * 5 for n in range(10)})
    c = caller(fake, retry_count_max=1, breaker_failure_count=3, breaker_open_ms=60_000)
    outcomes = run_all(c, [command("p", n) for n in range(10)])
    assert [o.status for o in outcomes] == [ReplyStatus.ERROR] * 10
    assert len(fake.calls) == 3  # c-p-0 twice, c-p-1 once: then open
    assert [o.reason for o in outcomes[1:]] == ["breaker open"] * 9
    assert c.breaker.state.value == "open"


def test_a_malformed_command_is_answered_error_and_never_called() -> None:
    fake = Wallet()
    c = caller(fake)

    async def go() -> list[Outcome]:
        try:
            return await c.call_all([command("p", 0, amount=-5)], ["amount -5 out of range"],
                                    [b"op-gamma:p"])  # fmt: skip
        finally:
            await c.close()

    (outcome,) = asyncio.run(go())
    assert (outcome.status, outcome.balance, outcome.attempts) == (ReplyStatus.ERROR, None, 0)
    assert fake.calls == []


def test_the_call_is_what_the_protocol_documents() -> None:
    fake = Wallet()
    sent: list[dict[str, Any]] = []
    original = fake.server.parse

    def spy(*args: Any) -> Any:
        sent.append(json.loads(args[4]))
        return original(*args)

    object.__setattr__(fake.server, "parse", spy)
    run_all(caller(fake), [command("p", 0)])
    assert sent == [{
        "command_id": "c-p-0", "correlation_id": "corr-p-0", "operator": OPERATOR,
        "player": "p", "currency": "EUR", "amount": 10, "provider": "prov-nova",
        "transaction_id": "t-0", "round": "r-1", "game": "nova-starfall",
        "reference_command_id": None, "issued_at_ms": 1_767_225_600_000,
    }]  # fmt: skip
