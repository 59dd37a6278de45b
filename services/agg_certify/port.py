"""What the battery needs from a wallet, and nothing more: send a command, await its reply.

The checks are written against :class:`WalletUnderTest` only, so the same battery runs on
every way an operator's wallet is reached. :class:`agg_certify.kafka.KafkaWallet` is the
Kafka-native one (the operator consumes ``agg.wallet.commands.<operator>`` and answers on
``agg.wallet.replies.<operator>``). :class:`agg_certify.http.HttpWallet` calls an HTTP
wallet through the wallet bridge's client (``agg_bridge``): each :class:`Command` becomes
that protocol's signed request and the answer the :class:`Reply` the bridge would send
(docs/certification.md, "HTTP mode"); it also answers the signature check, which a Kafka
wallet cannot be asked (:attr:`WalletUnderTest.signature_not_applicable`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class Command:
    """A ``casino.agg.WalletCommand`` as the saga would send it (fields as in the schema)."""

    command_id: str
    correlation_id: str
    operator_id: str
    player_id: str
    kind: str
    amount: int
    currency: str
    provider_id: str
    transaction_id: str | None
    round_id: str | None
    game_id: str | None
    reference_command_id: str | None
    issued_at: datetime

    def as_avro(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class Reply:
    """The parts of a ``casino.agg.WalletReply`` the checks read."""

    command_id: str
    player_id: str
    status: str
    balance: int | None
    currency: str


@dataclass(frozen=True)
class Observed:
    """One command sent and what came back: its reply, or None when none came within the
    timeout; ``latency_us`` from the send to the reply."""

    command: Command
    reply: Reply | None
    latency_us: int | None


class WalletUnderTest(Protocol):
    mode: str
    """``kafka`` or ``http``: shown in the report."""
    signature_not_applicable: str | None
    """Why the signature check does not apply to this kind of wallet (None: it applies)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def call(self, command: Command, timeout_ms: int) -> Observed:
        """Send ``command`` and wait at most ``timeout_ms`` for its reply. Concurrent calls
        with the same command id each get one reply (a wallet answers every copy)."""
        ...

    async def call_badly_signed(self, command: Command, timeout_ms: int) -> Observed:
        """Send ``command`` with a signature the wallet must refuse (where it applies)."""
        ...
