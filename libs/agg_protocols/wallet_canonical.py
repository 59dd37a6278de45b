"""``canonical-v1``: our operator-wallet API (``docs/operators.md``), JSON over HTTP POST.

Four paths below the operator's base URL: ``/v1/balance``, ``/v1/debit``, ``/v1/credit``,
``/v1/cancel``. The body carries the command::

    {"command_id": "c-9f...", "correlation_id": "...", "operator": "op-gamma",
     "player": "p-1", "currency": "EUR", "amount": 250, "provider": "prov-nova",
     "transaction_id": "t-1", "round": "r-1", "game": "nova-starfall",
     "reference_command_id": null, "issued_at_ms": 1700000000000}

(``amount`` in integer minor units; absent for a balance; a cancel names the debit it
cancels in ``reference_command_id`` and repeats its amount). Every request is signed as the
canonical provider protocol is: ``X-Agg-Timestamp`` (unix seconds) and ``X-Agg-Signature`` =
hex HMAC-SHA256(the operator's wallet secret, ``"{timestamp}.POST.{path}.{raw body}"``) with
``path`` the request path exactly as sent (the base URL's path included); the wallet refuses
a timestamp more than 300 s from its clock.

The answer is HTTP 200 with ``{"command_id", "status", "balance", "currency"}``: ``status``
one of ``OK``, ``INSUFFICIENT_FUNDS``, ``PLAYER_BLOCKED``, ``LIMIT_REACHED``,
``UNKNOWN_PLAYER``, ``ERROR``; ``balance`` in minor units after the command, or null. A
repeated ``command_id`` is the same command and must get the same answer. Refusals before
the wallet's rules: 400 ``INVALID_REQUEST``, 401 ``INVALID_SIGNATURE`` / ``REQUEST_EXPIRED``,
404 ``UNKNOWN_OPERATOR`` or an unknown path, with ``{"status", "reason"}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from agg_domain.currency import is_currency
from agg_domain.statuses import CommandKind, ReplyStatus
from agg_protocols.jsonbody import parse_object
from agg_protocols.operator_wallet import (
    AMOUNT_MAX,
    BODY_BYTES_MAX,
    CORRELATION_HEADER,
    Answer,
    Failure,
    HttpCall,
    Rejection,
    Rendered,
    WalletCall,
    http_failure,
)
from agg_protocols.signatures import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureProblem,
    hmac_problem,
    hmac_sign,
)

PROTOCOL = "canonical-v1"
SIGNATURE_WINDOW_S = 300
ID_CHARS_MAX = 200
"""Longest id either side accepts (the reference wallet's ``ID_LENGTH_MAX``)."""
ID_PATTERN = re.compile(r"^[\x21-\x7e]{1,200}$")
"""Printable ASCII without spaces: the saga's ids are hex digests and tenant ids."""
ISSUED_AT_MS_MAX = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: the last instant a timestamp (the ledger's) can hold."""

PATHS: dict[CommandKind, str] = {
    CommandKind.BALANCE: "/v1/balance",
    CommandKind.DEBIT: "/v1/debit",
    CommandKind.CREDIT: "/v1/credit",
    CommandKind.CANCEL: "/v1/cancel",
}
KINDS = {path: kind for kind, path in PATHS.items()}
STATUSES = {s.value: s for s in ReplyStatus}


def _dumps(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()


def _path_prefix(base_path: str) -> str:
    return base_path.rstrip("/")


@dataclass(frozen=True)
class CanonicalWalletClient:
    """The bridge's side. ``base_path``: the path of the operator's base URL (what is
    signed is the whole path as sent)."""

    secret: bytes
    base_path: str = ""
    protocol: str = PROTOCOL

    def encode(self, call: WalletCall, now_s: int) -> HttpCall:
        fields: dict[str, Any] = {
            "command_id": call.command_id,
            "correlation_id": call.correlation_id,
            "operator": call.operator_id,
            "player": call.player_id,
            "currency": call.currency,
        }
        if call.kind is not CommandKind.BALANCE:
            fields["amount"] = call.amount
        fields.update({
            "provider": call.provider_id,
            "transaction_id": call.transaction_id,
            "round": call.round_id,
            "game": call.game_id,
            "reference_command_id": call.reference_command_id,
            "issued_at_ms": call.issued_at_ms,
        })  # fmt: skip
        body = _dumps(fields)
        path = PATHS[call.kind]
        signature = hmac_sign(self.secret, now_s, "POST", _path_prefix(self.base_path) + path, body)
        headers = (
            ("Content-Type", "application/json"),
            (TIMESTAMP_HEADER, str(now_s)),
            (SIGNATURE_HEADER, signature),
            (CORRELATION_HEADER, call.correlation_id),
        )
        return HttpCall(path, body, headers)

    def decode(self, call: WalletCall, http_status: int, body: bytes) -> Answer | Failure:
        if http_status != 200:
            return http_failure(http_status)
        if len(body) > BODY_BYTES_MAX:
            return Failure("answer too large", retryable=False)
        parsed = parse_object(body)
        if isinstance(parsed, str):
            return Failure(f"answer: {parsed}", retryable=False)
        wire = parsed.get("status")
        status = STATUSES.get(wire) if isinstance(wire, str) else None
        if status is None:
            return Failure(f"answer: unknown status {str(wire)[:40]!r}", retryable=False)
        if parsed.get("command_id") != call.command_id:
            return Failure("answer: command_id is not the call's", retryable=False)
        balance = parsed.get("balance")
        if balance is not None:
            if type(balance) is not int or not 0 <= balance <= AMOUNT_MAX:
                return Failure("answer: balance is not an integer of minor units", False)
            if parsed.get("currency") != call.currency:
                return Failure("answer: balance in another currency than the call's", False)
        return Answer(status, balance, status.value)


def _ident(body: dict[str, Any], name: str, required: bool) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise _Bad(f"{name}: required")
        return None
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise _Bad(f"{name}: 1..{ID_CHARS_MAX} printable characters")
    return value


class _Bad(ValueError):
    pass


@dataclass(frozen=True)
class CanonicalWalletServer:
    """The operator's side: verifies the signature with the operator's wallet secret,
    reads the call. ``base_path``: the path the wallet is mounted at, for the signature."""

    secret: bytes
    base_path: str = ""
    window_s: int = SIGNATURE_WINDOW_S
    protocol: str = PROTOCOL
    scale_exponent: int | None = None

    def parse(
        self, operator_id: str, method: str, path: str, headers: dict[str, str], body: bytes,
        now_s: float,
    ) -> WalletCall | Rejection:  # fmt: skip
        problem = hmac_problem(
            self.secret, timestamp=headers.get(TIMESTAMP_HEADER.lower()),
            signature=headers.get(SIGNATURE_HEADER.lower()), method=method,
            path=_path_prefix(self.base_path) + path, body=body, now_s=now_s,
            window_s=self.window_s,
        )  # fmt: skip
        if problem is not None:
            return Rejection(problem.value, "signature does not verify"
                             if problem is SignatureProblem.INVALID_SIGNATURE
                             else "timestamp outside the window", 401, {})  # fmt: skip
        return self.read(operator_id, method, path, body)

    def read(self, operator_id: str, method: str, path: str, body: bytes) -> WalletCall | Rejection:
        """The call of a request whose signature :meth:`parse` verified."""
        kind = KINDS.get(path)
        if method != "POST" or kind is None:
            return Rejection("INVALID_REQUEST", f"no such call {method} {path[:64]!r}", 404, {})
        if len(body) > BODY_BYTES_MAX:
            return Rejection("INVALID_REQUEST", "body too large", 413, {})
        parsed = parse_object(body)
        if isinstance(parsed, str):
            return Rejection("INVALID_REQUEST", parsed, 400, {})
        echo = {"command_id": parsed.get("command_id")} if isinstance(
            parsed.get("command_id"), str) else {}  # fmt: skip
        try:
            return self._call(operator_id, kind, parsed)
        except _Bad as exc:
            return Rejection("INVALID_REQUEST", str(exc), 400, echo)

    def _call(self, operator_id: str, kind: CommandKind, body: dict[str, Any]) -> WalletCall:
        command_id = _ident(body, "command_id", True)
        player = _ident(body, "player", True)
        operator = _ident(body, "operator", True)
        assert command_id is not None and player is not None and operator is not None
        if operator != operator_id:
            raise _Bad(f"operator: {operator!r} at the wallet of {operator_id!r}")
        currency = body.get("currency")
        if not isinstance(currency, str) or not is_currency(currency):
            raise _Bad("currency: an ISO 4217 code")
        amount = 0
        if kind is not CommandKind.BALANCE:
            value = body.get("amount")
            if type(value) is not int or not 0 <= value <= AMOUNT_MAX:
                raise _Bad("amount: an integer of minor units, 0..2**63-1")
            amount = value
        issued = body.get("issued_at_ms", 0)
        if type(issued) is not int or not 0 <= issued <= ISSUED_AT_MS_MAX:
            raise _Bad("issued_at_ms: epoch milliseconds up to the year 9999")
        return WalletCall(
            command_id=command_id,
            correlation_id=_ident(body, "correlation_id", False) or command_id,
            operator_id=operator,
            player_id=player,
            kind=kind,
            amount=amount,
            currency=currency,
            provider_id=_ident(body, "provider", False) or "",
            transaction_id=_ident(body, "transaction_id", False),
            round_id=_ident(body, "round", False),
            game_id=_ident(body, "game", False),
            reference_command_id=_ident(body, "reference_command_id", kind is CommandKind.CANCEL),
            issued_at_ms=issued,
        )

    def render(self, call: WalletCall, answer: Answer) -> Rendered:
        return Rendered(200, _dumps({
            "command_id": call.command_id, "status": answer.status.value,
            "balance": answer.balance, "currency": call.currency,
        }))  # fmt: skip

    def render_rejection(self, rejection: Rejection) -> Rendered:
        return Rendered(rejection.http, _dumps({
            **rejection.echo, "status": rejection.code, "reason": rejection.reason,
        }))  # fmt: skip
