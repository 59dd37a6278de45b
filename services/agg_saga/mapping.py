"""Between Avro records (the topics' contract) and the saga's domain values."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agg_domain.compliance import Refusal
from agg_domain.limits import Controls, limits_from_text
from agg_domain.saga import Answer, CampaignGrant, Command, Event, Reply, Request
from agg_domain.statuses import Action, ReplyStatus, Status

EVENT_NAMESPACE = "casino.agg.events."


def _ms(value: datetime | int) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


def _ms_or_none(value: datetime | int | None) -> int | None:
    return None if value is None else _ms(value)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def request_from_avro(d: dict[str, Any]) -> Request:
    return Request(
        request_id=d["request_id"],
        correlation_id=d["correlation_id"],
        provider_id=d["provider_id"],
        operator_id=d["operator_id"],
        player_id=d["player_id"],
        action=Action(d["action"]),
        currency=d["currency"],
        received_at_ms=_ms(d["received_at"]),
        transaction_id=d["transaction_id"],
        reference_transaction_id=d["reference_transaction_id"],
        round_id=d["round_id"],
        game_id=d["game_id"],
        amount=d["amount"],
        round_closed=d["round_closed"],
        reply_to=d["reply_to"],
        reply_partition=d["reply_partition"],
        mode=d.get("mode", "real"),  # written before v2: real
        wallet=d.get("wallet", "seamless"),  # written before v3: seamless
        win_kind=d.get("win_kind", "REGULAR"),
        refusal=_refusal(d.get("refusal")),  # written before v4: none
        controls=_controls(d.get("controls")),  # written before v6: none
        session_started_at_ms=_ms_or_none(d.get("session_started_at")),
        campaign=_grant(d.get("campaign")),  # written before v6: none
        campaign_id=d.get("campaign_id"),
    )


def _controls(d: dict[str, Any] | None) -> Controls | None:
    """A PLAYER_CONTROLS request's controls; a limit of a kind or period this version does
    not know makes the whole statement unreadable (None: the saga answers INVALID_REQUEST
    and nothing changes), never a statement applied in part."""
    if d is None:
        return None
    until = d.get("self_excluded_until")
    limit_s = d.get("session_time_limit_s")
    try:
        limits = limits_from_text(d["limits"])
    except ValueError:
        return None
    return Controls(
        blocked=d["blocked"],
        self_excluded=d["self_excluded"],
        self_excluded_until_ms=None if until is None else _ms(until),
        session_time_limit_ms=None if limit_s is None else int(limit_s) * 1000,
        limits=limits,
        actor=d.get("actor", ""),
    )


def _grant(d: dict[str, Any] | None) -> CampaignGrant | None:
    if d is None:
        return None
    return CampaignGrant(
        campaign_id=d["campaign_id"],
        games=tuple(d["games"]),
        spins=d["spins"],
        bet_value=d["bet_value"],
        expires_at_ms=_ms(d["expires_at"]),
    )


def _refusal(d: dict[str, Any] | None) -> Refusal | None:
    """A request's compliance refusal; a status this version does not know is read as
    INVALID_REQUEST, which the saga answers without deciding anything (never a debit)."""
    if d is None:
        return None
    try:
        status = Status(d["status"])
    except ValueError:
        status = Status.INVALID_REQUEST
    return Refusal(status, d["rule"])


def reply_from_avro(d: dict[str, Any]) -> Reply:
    return Reply(
        command_id=d["command_id"],
        status=ReplyStatus(d["status"]),
        balance=d["balance"],
        currency=d["currency"],
        replied_at_ms=_ms(d["replied_at"]),
    )


def command_to_avro(c: Command, operator_id: str, player_id: str) -> dict[str, Any]:
    return {
        "command_id": c.command_id,
        "correlation_id": c.correlation_id,
        "operator_id": operator_id,
        "player_id": player_id,
        "kind": c.kind.value,
        "amount": c.amount,
        "currency": c.currency,
        "provider_id": c.provider_id,
        "transaction_id": c.transaction_id,
        "round_id": c.round_id,
        "game_id": c.game_id,
        "reference_command_id": c.reference_command_id,
        "issued_at": _dt(c.issued_at_ms),
        "win_kind": c.win_kind,
    }


def outcome_to_avro(a: Answer, now_ms: int) -> dict[str, Any]:
    r = a.request
    return {
        "request_id": r.request_id,
        "correlation_id": r.correlation_id,
        "provider_id": r.provider_id,
        "operator_id": r.operator_id,
        "player_id": r.player_id,
        "action": r.action.value,
        "status": a.status.value,
        "balance": a.balance,
        "currency": a.currency,
        "transaction_id": r.transaction_id,
        "decided_at": _dt(now_ms),
        "reply_to": r.reply_to,
        "reply_partition": r.reply_partition,
        "amount": a.amount,
    }


def event_to_avro(
    e: Event, operator_id: str, player_id: str, now_ms: int
) -> tuple[str, dict[str, Any]]:
    record = {
        "event_id": e.event_id,
        "correlation_id": e.correlation_id,
        "operator_id": operator_id,
        "player_id": player_id,
        "provider_id": e.provider_id,
        "occurred_at": _dt(now_ms),
        **e.fields,
    }
    return EVENT_NAMESPACE + e.name, record
