"""``hub88-v1``: a Hub88-shaped operator-wallet API (``docs/operators.md``).

Four paths below the operator's base URL, JSON over POST:

- ``/user/balance``: ``user``, ``request_uuid``, ``currency``, ``game_code``;
- ``/transaction/bet`` (a DEBIT), ``/transaction/win`` (a CREDIT): ``user``,
  ``request_uuid``, ``transaction_uuid``, ``supplier_transaction_id``, ``round``,
  ``game_code``, ``currency``, ``amount``, ``is_free`` (false), ``reference_transaction_uuid``
  (null: a credit does not name its bet), ``meta`` (``correlation_id``, ``provider``);
- ``/transaction/rollback`` (a CANCEL): those, ``transaction_uuid`` being the cancel's own id
  and ``reference_transaction_uuid`` the bet it undoes.

``transaction_uuid`` (and ``request_uuid``) is the command id: a repeat is the same
transaction and must get the same answer. The session ``token`` of Hub88's own API is not
sent: the aggregator checked the session before any command was issued. ``currency`` and
``amount`` are given on a rollback too (the bet's), as an extension. Amounts and balances are
integers in units of 1/100,000 of the currency, converted exactly (``agg_domain.amounts``).

Every request carries ``X-Hub88-Signature``: base64 RSA PKCS#1 v1.5 SHA-256 over the raw
body, by the aggregator's private key (``signing_key``); the operator verifies it with the
matching public key. The answer is HTTP 200 with ``{"user", "status", "request_uuid",
"currency", "balance"}`` and an ``RS_*`` status (:data:`REPLY_OF`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from agg_domain.amounts import InexactAmount, minor_to_scaled, scaled_to_minor
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
from agg_protocols.signatures import rsa_sign, rsa_verify

PROTOCOL = "hub88-v1"
SIGNATURE_HEADER = "X-Hub88-Signature"
SCALE_EXPONENT = 5
"""Wire amounts are units of 10**-5 of the currency."""
ID_PATTERN = re.compile(r"^[\x21-\x7e]{1,200}$")

PATHS: dict[CommandKind, str] = {
    CommandKind.BALANCE: "/user/balance",
    CommandKind.DEBIT: "/transaction/bet",
    CommandKind.CREDIT: "/transaction/win",
    CommandKind.CANCEL: "/transaction/rollback",
}
KINDS = {path: kind for kind, path in PATHS.items()}

REPLY_OF: dict[str, ReplyStatus] = {
    "RS_OK": ReplyStatus.OK,
    "RS_ERROR_NOT_ENOUGH_MONEY": ReplyStatus.INSUFFICIENT_FUNDS,
    "RS_ERROR_USER_DISABLED": ReplyStatus.PLAYER_BLOCKED,
    "RS_ERROR_LIMIT_REACHED": ReplyStatus.LIMIT_REACHED,
    "RS_ERROR_INVALID_TOKEN": ReplyStatus.UNKNOWN_PLAYER,
    "RS_ERROR_TOKEN_EXPIRED": ReplyStatus.UNKNOWN_PLAYER,
    "RS_ERROR_UNKNOWN": ReplyStatus.ERROR,
    "RS_ERROR_TIMEOUT": ReplyStatus.ERROR,
    "RS_ERROR_WRONG_CURRENCY": ReplyStatus.ERROR,
    "RS_ERROR_INVALID_GAME": ReplyStatus.ERROR,
    "RS_ERROR_DUPLICATE_TRANSACTION": ReplyStatus.ERROR,
    "RS_ERROR_TRANSACTION_ROLLED_BACK": ReplyStatus.ERROR,
    "RS_ERROR_TRANSACTION_DOES_NOT_EXIST": ReplyStatus.ERROR,
}
"""The wallet's ``RS_*`` status -> the reply's. A rollback answered
``RS_ERROR_TRANSACTION_DOES_NOT_EXIST`` is ``OK``: the wallet says nothing was debited (it
must then refuse the bet should it come late, as Hub88 requires), which is all a cancel asks.
A status not listed is ``ERROR``."""

CALL_REFUSED = frozenset({
    "RS_ERROR_INVALID_SIGNATURE", "RS_ERROR_WRONG_SYNTAX", "RS_ERROR_WRONG_TYPES",
    "RS_ERROR_INVALID_PARTNER",
})  # fmt: skip
"""Statuses that say our call was unusable (not a decision about the command): a failure,
counted by the circuit breaker, never retried."""

WIRE_OF: dict[ReplyStatus, str] = {
    ReplyStatus.OK: "RS_OK",
    ReplyStatus.INSUFFICIENT_FUNDS: "RS_ERROR_NOT_ENOUGH_MONEY",
    ReplyStatus.PLAYER_BLOCKED: "RS_ERROR_USER_DISABLED",
    ReplyStatus.LIMIT_REACHED: "RS_ERROR_LIMIT_REACHED",
    ReplyStatus.UNKNOWN_PLAYER: "RS_ERROR_INVALID_TOKEN",
    ReplyStatus.ERROR: "RS_ERROR_UNKNOWN",
}
"""What the operator's side answers for a reply status (the reverse of :data:`REPLY_OF`)."""


def _dumps(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()


def reply_of(kind: CommandKind, wire_status: str) -> ReplyStatus:
    if kind is CommandKind.CANCEL and wire_status == "RS_ERROR_TRANSACTION_DOES_NOT_EXIST":
        return ReplyStatus.OK
    return REPLY_OF.get(wire_status, ReplyStatus.ERROR)


@dataclass(frozen=True)
class Hub88WalletClient:
    """The bridge's side: signs with the aggregator's private key."""

    private_key: rsa.RSAPrivateKey
    protocol: str = PROTOCOL

    def encode(self, call: WalletCall, now_s: int) -> HttpCall:
        """Raises :class:`InexactAmount` never (minor units always fit the finer wire
        scale) but ``ValueError`` for an amount whose wire value exceeds 2**63-1."""
        fields: dict[str, Any] = {
            "user": call.player_id,
            "request_uuid": call.command_id,
            "currency": call.currency,
            "game_code": call.game_id,
        }
        if call.kind is not CommandKind.BALANCE:
            amount = minor_to_scaled(call.amount, SCALE_EXPONENT, call.currency)
            if amount > AMOUNT_MAX:
                raise ValueError(f"amount {call.amount} exceeds the wire's range")
            fields.update({
                "transaction_uuid": call.command_id,
                "supplier_transaction_id": call.transaction_id,
                "round": call.round_id,
                "amount": amount,
                "is_free": False,
                "reference_transaction_uuid": call.reference_command_id,
                "meta": {"correlation_id": call.correlation_id, "provider": call.provider_id},
            })  # fmt: skip
        body = _dumps(fields)
        headers = (
            ("Content-Type", "application/json"),
            (SIGNATURE_HEADER, rsa_sign(self.private_key, body)),
            (CORRELATION_HEADER, call.correlation_id),
        )
        return HttpCall(PATHS[call.kind], body, headers)

    def decode(self, call: WalletCall, http_status: int, body: bytes) -> Answer | Failure:
        if http_status != 200:
            return http_failure(http_status)
        if len(body) > BODY_BYTES_MAX:
            return Failure("answer too large", retryable=False)
        parsed = parse_object(body)
        if isinstance(parsed, str):
            return Failure(f"answer: {parsed}", retryable=False)
        wire = parsed.get("status")
        if not isinstance(wire, str) or not wire.startswith("RS_"):
            return Failure(f"answer: status {str(wire)[:40]!r} is not an RS_ status", False)
        if wire in CALL_REFUSED:
            return Failure(f"wallet refused the call: {wire}", retryable=False)
        if parsed.get("request_uuid") not in (None, call.command_id):
            return Failure("answer: request_uuid is not the call's", retryable=False)
        balance = parsed.get("balance")
        minor = None
        if balance is not None:
            if type(balance) is not int or not 0 <= balance <= AMOUNT_MAX:
                return Failure("answer: balance is not an integer of 1/100000 units", False)
            if parsed.get("currency") != call.currency:
                return Failure("answer: balance in another currency than the call's", False)
            try:
                minor = scaled_to_minor(balance, SCALE_EXPONENT, call.currency)
            except InexactAmount:
                return Failure("answer: balance is no whole number of minor units", False)
        return Answer(reply_of(call.kind, wire), minor, wire)


class _Bad(ValueError):
    def __init__(self, reason: str, types: bool = False):
        super().__init__(reason)
        self.types = types


def _ident(body: dict[str, Any], name: str, required: bool) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise _Bad(f"{name}: required")
        return None
    if not isinstance(value, str):
        raise _Bad(f"{name}: a string", types=True)
    if not ID_PATTERN.fullmatch(value):
        raise _Bad(f"{name}: 1..200 printable characters")
    return value


def _echo(parsed: dict[str, Any] | str) -> dict[str, object]:
    """What a refusal echoes of a request: its well-formed ids."""
    echo: dict[str, object] = {}
    if isinstance(parsed, dict):  # only well-formed values: the answer is documented
        for name in ("user", "request_uuid"):
            if isinstance(parsed.get(name), str) and ID_PATTERN.fullmatch(parsed[name]):
                echo[name] = parsed[name]
        if isinstance(parsed.get("currency"), str) and is_currency(parsed["currency"]):
            echo["currency"] = parsed["currency"]
    return echo


@dataclass(frozen=True)
class Hub88WalletServer:
    """The operator's side: verifies ``X-Hub88-Signature`` with the aggregator's public key."""

    public_key: rsa.RSAPublicKey
    protocol: str = PROTOCOL
    scale_exponent: int | None = SCALE_EXPONENT

    def parse(
        self, operator_id: str, method: str, path: str, headers: dict[str, str], body: bytes,
        now_s: float,
    ) -> WalletCall | Rejection:  # fmt: skip
        if not rsa_verify(self.public_key, body, headers.get(SIGNATURE_HEADER.lower())):
            return Rejection("RS_ERROR_INVALID_SIGNATURE", "signature does not verify", 200,
                             _echo(parse_object(body) if body else "empty body"))  # fmt: skip
        return self.read(operator_id, method, path, body)

    def read(self, operator_id: str, method: str, path: str, body: bytes) -> WalletCall | Rejection:
        """The call of a request whose signature :meth:`parse` verified."""
        parsed = parse_object(body) if body else "empty body"
        echo = _echo(parsed)
        kind = KINDS.get(path)
        if method != "POST" or kind is None:
            return Rejection("RS_ERROR_WRONG_SYNTAX", f"no such call {path[:64]!r}", 404, echo)
        if len(body) > BODY_BYTES_MAX:
            return Rejection("RS_ERROR_WRONG_SYNTAX", "body too large", 413, echo)
        if isinstance(parsed, str):
            return Rejection("RS_ERROR_WRONG_SYNTAX", parsed, 200, echo)
        try:
            return self._call(operator_id, kind, parsed)
        except _Bad as exc:
            code = "RS_ERROR_WRONG_TYPES" if exc.types else "RS_ERROR_WRONG_SYNTAX"
            return Rejection(code, str(exc), 200, echo)

    def _call(self, operator_id: str, kind: CommandKind, body: dict[str, Any]) -> WalletCall:
        user = _ident(body, "user", True)
        request_uuid = _ident(body, "request_uuid", True)
        assert user is not None and request_uuid is not None
        currency = body.get("currency")
        if not isinstance(currency, str) or not is_currency(currency):
            raise _Bad("currency: an ISO 4217 code", types=not isinstance(currency, str))
        game = _ident(body, "game_code", False)
        if kind is CommandKind.BALANCE:
            return WalletCall(request_uuid, request_uuid, operator_id, user, kind, 0, currency,
                              game_id=game)  # fmt: skip
        transaction = _ident(body, "transaction_uuid", True)
        assert transaction is not None
        value = body.get("amount")
        if type(value) is not int or not 0 <= value <= AMOUNT_MAX:
            raise _Bad("amount: an integer of 1/100000 units", types=True)
        try:
            amount = scaled_to_minor(value, SCALE_EXPONENT, currency)
        except InexactAmount as exc:
            raise _Bad(str(exc), types=True) from None
        if body.get("is_free", False) not in (False, None):
            raise _Bad("is_free: free rounds are not taken", types=True)
        cancel = kind is CommandKind.CANCEL
        meta = body.get("meta")
        meta = meta if isinstance(meta, dict) else {}
        try:  # ids like the others: they are logged and kept in the ledger
            correlation = _ident(meta, "correlation_id", False)
            provider = _ident(meta, "provider", False)
        except _Bad as exc:
            raise _Bad(f"meta.{exc}", exc.types) from None
        return WalletCall(
            command_id=transaction,
            correlation_id=correlation or transaction,
            operator_id=operator_id,
            player_id=user,
            kind=kind,
            amount=amount,
            currency=currency,
            provider_id=provider or "",
            transaction_id=_ident(body, "supplier_transaction_id", False),
            round_id=_ident(body, "round", False),
            game_id=game,
            reference_command_id=_ident(body, "reference_transaction_uuid", cancel),
        )

    def render(self, call: WalletCall, answer: Answer) -> Rendered:
        balance = None
        if answer.balance is not None:
            balance = minor_to_scaled(answer.balance, SCALE_EXPONENT, call.currency)
        return Rendered(200, _dumps({
            "user": call.player_id, "status": WIRE_OF[answer.status],
            "request_uuid": call.command_id, "currency": call.currency, "balance": balance,
        }))  # fmt: skip

    def render_rejection(self, rejection: Rejection) -> Rendered:
        return Rendered(rejection.http, _dumps({
            "user": rejection.echo.get("user"), "status": rejection.code,
            "request_uuid": rejection.echo.get("request_uuid"),
            "currency": rejection.echo.get("currency"), "balance": None,
        }))  # fmt: skip
