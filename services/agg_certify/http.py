"""The HTTP wallet under test: the operator's seamless wallet, called as the wallet bridge
calls it.

Every command goes through the bridge's own calling half, :class:`agg_bridge.service.
WalletCaller`, with the operator's protocol and credentials from the tenants file
(:func:`agg_bridge.service.client_protocol`): the same request, the same signature, the
same reading of the answer into a reply status and balance, so the checks see what the
saga would see. A failure the bridge replies ERROR for (an HTTP 4xx/5xx, a refused call,
an answer that does not parse, no connection) is a reply ERROR here too; only a call still
unanswered after the port's ``timeout_ms`` is no reply at all (the Kafka wallet's "no
reply within the timeout").

Three things differ from the bridge, each so that one request is one observation of the
wallet: the per-request timeout is the kit's (``--reply-timeout-ms``), not the operator's
``timeout_ms`` (a slow wallet then fails the latency check, not every check); a failed call
is not sent again (a resend would hide a 5xx); the circuit breaker never opens (a wallet
that fails is still asked every command). The latency is the whole call as the kit sees it,
from the request's encoding to the decoded answer.

The signature check sends a DEBIT signed with credentials the wallet cannot know: a fresh
secret (``canonical-v1``) or a fresh RSA key (``hub88-v1``), through the same protocol
module; the wallet must refuse it and move nothing.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from agg_bridge.service import Outcome, WalletCaller, client_protocol
from agg_certify.port import Command, Observed, Reply
from agg_config.tenants import Operator, WalletConfig
from agg_protocols.operator_wallet import WalletClientProtocol
from agg_protocols.wallet_canonical import CanonicalWalletClient
from agg_protocols.wallet_hub88 import Hub88WalletClient
from agg_wallet.rules import Command as WalletCommand
from agg_wallet.rules import problem_of

BREAKER_NEVER_OPENS = 10**9
"""Failures in a row the kit's breaker would need to open: more than any run sends."""


def forged_protocol(operator: Operator) -> WalletClientProtocol:
    """The operator's protocol signing with credentials nobody gave the wallet."""
    wallet = operator.wallet
    if wallet.protocol == "hub88-v1":
        return Hub88WalletClient(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert wallet.url is not None
    return CanonicalWalletClient(secrets.token_bytes(32), urlsplit(wallet.url).path)


def kit_wallet_config(wallet: WalletConfig, request_timeout_ms: int) -> WalletConfig:
    """The operator's wallet settings as the kit calls it (see the module doc): its URL,
    protocol, credentials and ``concurrency_max`` (calls beyond it wait for a free
    connection, as the bridge's do); the kit's timeout; no resend; a breaker that stays
    closed."""
    return wallet.model_copy(
        update={
            "timeout_ms": request_timeout_ms,
            "retry_count_max": 0,
            "retry_backoff_ms": 0,
            "breaker_failure_count": BREAKER_NEVER_OPENS,
        }
    )


def wallet_command(command: Command) -> WalletCommand:
    return WalletCommand(**{name: getattr(command, name) for name in Command.__dataclass_fields__})


class HttpWallet:
    mode = "http"
    signature_not_applicable: str | None = None

    def __init__(
        self,
        operator: Operator,
        request_timeout_ms: int,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        """``transport`` replaces the network (unit tests)."""
        wallet = operator.wallet
        if wallet.mode != "http" or wallet.url is None:
            raise ValueError(f"operator {operator.id} has no HTTP wallet")
        self.operator = operator
        self.config = kit_wallet_config(wallet, request_timeout_ms)
        self.transport = transport
        self.stray_count = 0
        self._caller: WalletCaller | None = None
        self._forger: WalletCaller | None = None

    async def start(self) -> None:
        """Build the clients (inside the running loop; they connect on the first call)."""
        op = self.operator
        self._caller = WalletCaller(op.id, self.config, client_protocol(op), self.transport)
        self._forger = WalletCaller(op.id, self.config, forged_protocol(op), self.transport)

    async def close(self) -> None:
        for caller in (self._caller, self._forger):
            if caller is not None:
                await caller.close()

    async def call(self, command: Command, timeout_ms: int) -> Observed:
        assert self._caller is not None, "start() first"
        return await self._observe(self._caller, command, timeout_ms)

    async def call_badly_signed(self, command: Command, timeout_ms: int) -> Observed:
        assert self._forger is not None, "start() first"
        return await self._observe(self._forger, command, timeout_ms)

    async def _observe(self, caller: WalletCaller, command: Command, timeout_ms: int) -> Observed:
        """One call, at most ``timeout_ms`` (the kit's request timeout bounds it too)."""
        wanted = wallet_command(command)
        # the bridge's own check of what it is asked to send: a command it would never call
        # the wallet with is answered ERROR without a call, here as there
        key = f"{command.operator_id}:{command.player_id}".encode()
        problem = problem_of(wanted, self.operator.id, key)
        started_ns = time.perf_counter_ns()
        outcome = await _within(caller, wanted, problem, timeout_ms)
        if outcome is None or outcome.reason == "timeout":
            return Observed(command, None, None)
        reply = Reply(
            command_id=command.command_id,
            player_id=command.player_id,
            status=outcome.status.value,
            balance=outcome.balance,
            currency=command.currency,
        )
        return Observed(command, reply, (time.perf_counter_ns() - started_ns) // 1000)


async def _within(
    caller: WalletCaller, command: WalletCommand, problem: str | None, timeout_ms: int
) -> Outcome | None:
    try:
        async with asyncio.timeout(timeout_ms / 1000):
            return await caller.call(command, problem)
    except TimeoutError:
        return None
