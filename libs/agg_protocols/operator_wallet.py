"""What an operator-wallet protocol is: a pure translator between a wallet command and one
operator's HTTP seamless-wallet API, on both sides.

The bridge's side: :meth:`WalletClientProtocol.encode` turns a :class:`WalletCall` into the
signed HTTP request to send (:class:`HttpCall`), and :meth:`WalletClientProtocol.decode`
reads the HTTP answer into an :class:`Answer` (a wallet reply status, the balance in minor
units) or a :class:`Failure` (no usable answer: the call itself failed or was refused).

The operator's side (the reference HTTP wallet, and an example for operators):
:meth:`WalletServerProtocol.parse` authenticates and reads a request into a
:class:`WalletCall` (or a :class:`Rejection`), :meth:`WalletServerProtocol.render` writes the
answer.

The difference between an :class:`Answer` and a :class:`Failure` matters to the bridge: an
answer (``OK``, ``INSUFFICIENT_FUNDS``, but also a business ``ERROR``) means the wallet is up
and decided; a failure (a timeout, a 5xx, a refused signature, a body that does not parse)
counts against the operator's circuit breaker, and only a ``retryable`` one is tried again.
Either way the saga gets a reply: a failure is replied ``ERROR``, which it treats as
transient.

No I/O, no clock: the time is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from agg_domain.statuses import CommandKind, ReplyStatus

CORRELATION_HEADER = "X-Correlation-Id"
"""Every call carries the command's correlation id (for the operator's logs; not signed)."""
BODY_BYTES_MAX = 65_536
"""Largest request or answer body either side reads: a wallet call is a few hundred bytes."""
AMOUNT_MAX = 2**63 - 1


@dataclass(frozen=True)
class WalletCall:
    """One wallet command, as both sides of an operator-wallet protocol see it."""

    command_id: str
    correlation_id: str
    operator_id: str
    player_id: str
    kind: CommandKind
    amount: int
    """Minor units of ``currency`` (0 for BALANCE)."""
    currency: str
    provider_id: str = ""
    transaction_id: str | None = None
    round_id: str | None = None
    game_id: str | None = None
    reference_command_id: str | None = None
    """For CANCEL: the DEBIT it cancels."""
    issued_at_ms: int = 0


@dataclass(frozen=True)
class HttpCall:
    """A request to send: ``path`` below the operator's base URL (with a leading ``/``)."""

    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Answer:
    """The wallet's decision: ``balance`` in minor units of ``currency`` where given."""

    status: ReplyStatus
    balance: int | None
    wire_status: str
    """The status as the wallet wrote it (for the log line)."""


@dataclass(frozen=True)
class Failure:
    """No usable answer. ``retryable``: sending the same call again (same command id, so
    idempotent at the wallet) may get one."""

    reason: str
    retryable: bool


RETRYABLE_HTTP = frozenset({429, 500, 502, 503, 504})
"""Answers that say "not now": the wallet (or a proxy in front of it) may answer a resend."""


def http_failure(http_status: int) -> Failure:
    return Failure(f"HTTP {http_status}", http_status in RETRYABLE_HTTP)


@dataclass(frozen=True)
class Rejection:
    """A request the operator's side refuses before it reaches the wallet's rules."""

    code: str
    """The protocol's status for it (``INVALID_SIGNATURE``, ``RS_ERROR_WRONG_TYPES``...)."""
    reason: str
    http: int
    echo: dict[str, object]
    """What the refusal echoes back (ids that were well-formed)."""


@dataclass(frozen=True)
class Rendered:
    http: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


class WalletClientProtocol(Protocol):
    @property
    def protocol(self) -> str: ...

    def encode(self, call: WalletCall, now_s: int) -> HttpCall:
        """The signed request for ``call`` (``now_s``: the signature's timestamp)."""
        ...

    def decode(self, call: WalletCall, http_status: int, body: bytes) -> Answer | Failure:
        """The answer to ``call`` in an HTTP response."""
        ...


class WalletServerProtocol(Protocol):
    @property
    def protocol(self) -> str: ...

    @property
    def scale_exponent(self) -> int | None:
        """The wire's amount unit as a power of ten (hub88-v1: 5, amounts in 1/100,000),
        whose values are longs: the wallet keeps balances within what it can render. None:
        amounts in minor units."""
        ...

    def parse(
        self, operator_id: str, method: str, path: str, headers: dict[str, str], body: bytes,
        now_s: float,
    ) -> WalletCall | Rejection:  # fmt: skip
        """``path`` is the request's path below the operator's base URL, ``headers`` with
        lower-case names, ``now_s`` the wall clock (for signature windows)."""
        ...

    def read(self, operator_id: str, method: str, path: str, body: bytes) -> WalletCall | Rejection:
        """What :meth:`parse` does once the signature is verified: read the call."""
        ...

    def render(self, call: WalletCall, answer: Answer) -> Rendered: ...

    def render_rejection(self, rejection: Rejection) -> Rendered: ...
