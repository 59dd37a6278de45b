"""The kit's HTTP wallet under test (:class:`agg_certify.http.HttpWallet`) against the
operator's side of the real protocols, on httpx's in-process transport: answers become the
replies the bridge would send, one request per command (no resend, no breaker), the kit's
timeout is no reply, and a forged signature is refused by both protocols' servers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from agg_certify.http import HttpWallet
from agg_certify.port import Command, Observed
from agg_config.tenants import Operator, parse_tenants
from agg_domain.statuses import ReplyStatus
from agg_httpwallet.app import server_protocol
from agg_protocols.operator_wallet import Answer, Rejection, WalletServerProtocol

OPERATOR = "op-gamma"
KEY_PEM = (
    rsa.generate_private_key(public_exponent=65537, key_size=2048)
    .private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    .decode()
)
CREDENTIALS: dict[str, dict[str, Any]] = {
    "canonical-v1": {"secret": {"value": "wallet-secret-for-the-unit-tests"}},
    "hub88-v1": {"signing_key": {"value": KEY_PEM}},
}


def operator(protocol: str) -> Operator:
    tenants = parse_tenants({
        "operators": [{
            "id": OPERATOR, "name": "Gamma", "secret": {"value": "api-secret-of-op-gamma"},
            "currencies": ["EUR"], "providers": ["prov-nova"],
            "wallet": {"mode": "http", "url": f"http://wallet.test/{OPERATOR}",
                       "protocol": protocol, "breaker_failure_count": 2,
                       **CREDENTIALS[protocol]},
        }],
        "providers": [{"id": "prov-nova", "name": "Nova",
                       "secret": {"value": "prov-nova-secret-of-the-tests"}}],
        "games": [{"id": "nova-starfall", "provider": "prov-nova", "name": "Starfall"}],
    })  # fmt: skip
    found = tenants.operator(OPERATOR)
    assert found is not None
    return found


def command(n: int, kind: str = "DEBIT", operator_id: str = OPERATOR) -> Command:
    return Command(
        command_id=f"c-{n}", correlation_id=f"corr-{n}", operator_id=operator_id,
        player_id="p-1", kind=kind, amount=100, currency="EUR", provider_id="aggcert",
        transaction_id=f"t-{n}", round_id="r-1", game_id="aggcert-game",
        reference_command_id=None, issued_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip


@dataclass
class Wallet:
    """The operator's side of the real protocol; ``script`` answers calls in turn (an HTTP
    status, ``"slow"`` or ``"ok"``), then ``ok``; ``applied`` the calls it verified."""

    server: WalletServerProtocol
    script: list[Any] = field(default_factory=list)
    requests: int = 0
    applied: list[str] = field(default_factory=list)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        body = await request.aread()
        sub = request.url.path.removeprefix(f"/{OPERATOR}")
        headers = {k.lower(): v for k, v in request.headers.items()}
        parsed = self.server.parse(OPERATOR, request.method, sub, headers, body,
                                   datetime.now(UTC).timestamp())  # fmt: skip
        if isinstance(parsed, Rejection):
            rendered = self.server.render_rejection(parsed)
            return httpx.Response(rendered.http, content=rendered.body)
        step = self.script.pop(0) if self.script else "ok"
        if step == "slow":
            await asyncio.sleep(1)
        if isinstance(step, int):
            return httpx.Response(step, content=b"")
        self.applied.append(parsed.command_id)
        rendered = self.server.render(parsed, Answer(ReplyStatus.OK, 900, "OK"))
        return httpx.Response(rendered.http, content=rendered.body)


def observe(
    protocol: str, fake: Callable[[Operator], Wallet], run: Any, timeout_ms: int = 5_000
) -> tuple[list[Observed], Wallet]:
    op = operator(protocol)
    wallet = fake(op)

    async def go() -> list[Observed]:
        kit = HttpWallet(op, timeout_ms, transport=httpx.MockTransport(wallet))
        await kit.start()
        try:
            return list(await run(kit, timeout_ms))
        finally:
            await kit.close()

    return asyncio.run(go()), wallet


def plain(script: list[Any]) -> Callable[[Operator], Wallet]:
    return lambda op: Wallet(server_protocol(op, f"/{OPERATOR}"), list(script))


def outcome(o: Observed) -> tuple[str, int | None] | None:
    return None if o.reply is None else (o.reply.status, o.reply.balance)


PROTOCOLS = sorted(CREDENTIALS)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("script", "expected", "requests"),
    [
        (["ok"], ("OK", 900), 1),
        ([503, "ok"], ("ERROR", None), 1),  # replied ERROR as the bridge does, never resent
        ([500, "ok"], ("ERROR", None), 1),
        ([400], ("ERROR", None), 1),
        (["slow"], None, 1),  # beyond the kit's timeout: no reply
    ],
)
def test_one_request_per_command_answered_as_the_bridge_replies(
    protocol: str, script: list[Any], expected: tuple[str, int | None] | None, requests: int
) -> None:
    async def run(kit: HttpWallet, timeout_ms: int) -> list[Observed]:
        return [await kit.call(command(1), timeout_ms)]

    (observed,), wallet = observe(protocol, plain(script), run, timeout_ms=300)
    assert outcome(observed) == expected
    assert wallet.requests == requests
    assert (observed.latency_us is None) is (expected is None)
    if observed.reply is not None:
        assert observed.reply.command_id == "c-1" and observed.reply.currency == "EUR"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_breaker_never_holds_a_command_back(protocol: str) -> None:
    async def run(kit: HttpWallet, timeout_ms: int) -> list[Observed]:
        return [await kit.call(command(n), timeout_ms) for n in range(6)]

    observed, wallet = observe(protocol, plain([503] * 5), run)
    assert [outcome(o) for o in observed] == [("ERROR", None)] * 5 + [("OK", 900)]
    assert wallet.requests == 6  # the operator's breaker (2 failures) would have held 4 back


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_forged_signature_is_refused_and_applies_nothing(protocol: str) -> None:
    async def run(kit: HttpWallet, timeout_ms: int) -> list[Observed]:
        return [await kit.call_badly_signed(command(1), timeout_ms),
                await kit.call(command(2), timeout_ms)]  # fmt: skip

    (forged, signed), wallet = observe(protocol, plain([]), run)
    assert outcome(forged) == ("ERROR", None)
    assert outcome(signed) == ("OK", 900)
    assert wallet.requests == 2 and wallet.applied == ["c-2"]


def test_a_command_the_bridge_would_not_send_is_not_sent() -> None:
    async def run(kit: HttpWallet, timeout_ms: int) -> list[Observed]:
        return [await kit.call(command(1, operator_id="op-other"), timeout_ms)]

    (observed,), wallet = observe("canonical-v1", plain([]), run)
    assert outcome(observed) == ("ERROR", None) and wallet.requests == 0


def test_only_an_http_operator_has_an_http_wallet() -> None:
    op = operator("canonical-v1")
    kafka = op.model_copy(update={"wallet": op.wallet.model_copy(update={"mode": "kafka"})})
    with pytest.raises(ValueError, match="no HTTP wallet"):
        HttpWallet(kafka, 1_000)
