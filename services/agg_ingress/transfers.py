"""The operator API's transfers: funds into and out of a transfer-wallet balance.

``POST /v1/operators/{operator_id}/players/{player_id}/transfers`` with a JSON body
``{transfer_id, direction, amount, currency}``: ``direction`` is ``deposit`` (the operator
has debited its player and moves the funds here) or ``withdraw`` (the funds go back to the
operator, which credits its player); ``amount`` in integer minor units, > 0, and may be left
out of a withdrawal to take the whole balance. The transfer id is the idempotency key, per
operator and player: a repeat with the same content gets the original answer, with other
content ``409 DUPLICATE_CONFLICT``; nothing moves twice. The saga decides the transfer in the
player's order with their bets and wins, and journals it (``FundsTransferred`` or
``TransferRejected``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agg_domain.statuses import Action, Status
from agg_ingress.protocol import Invalid, _Fields, _Malformed

DIRECTIONS = {"deposit": Action.DEPOSIT, "withdraw": Action.WITHDRAW}
FIELDS = frozenset({"transfer_id", "direction", "amount", "currency"})

HTTP_STATUS: dict[Status, int] = {
    Status.OK: 200,
    Status.INVALID_REQUEST: 400,
    Status.DUPLICATE_CONFLICT: 409,
    Status.INSUFFICIENT_FUNDS: 422,
    Status.LIMIT_EXCEEDED: 422,
    Status.PLAYER_BLOCKED: 422,
    Status.RETRY_LATER: 503,
}
"""How the saga's answer to a transfer is given to the operator; any other status (none is
expected) is answered 503, which is safe to retry with the same transfer id."""

WALLET_MODE_REFUSAL = "NOT_A_TRANSFER_WALLET"
"""409: the operator's wallet is seamless (``wallet.mode`` is not ``transfer``)."""


@dataclass(frozen=True)
class TransferRequest:
    transfer_id: str
    action: Action
    amount: int | None
    """None: a withdrawal of the whole balance."""
    currency: str

    @property
    def direction(self) -> str:
        return "deposit" if self.action is Action.DEPOSIT else "withdraw"


def validate_transfer(body: dict[str, Any]) -> TransferRequest | Invalid:
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        return Invalid(f"{unknown[0]}: not a field of a transfer")
    f = _Fields(body)
    try:
        transfer_id = f.ident("transfer_id", True)
        direction = f.choice("direction", True, DIRECTIONS, "deposit or withdraw")
        assert direction is not None
        action = DIRECTIONS[direction]
        amount = f.amount("amount", action is Action.DEPOSIT, 1)
        currency = f.currency("currency", True)
    except _Malformed as exc:
        return Invalid(str(exc))
    assert transfer_id is not None and currency is not None
    return TransferRequest(transfer_id, action, amount, currency)


def http_status(status: Status) -> int:
    return HTTP_STATUS.get(status, 503)
