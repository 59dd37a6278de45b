"""The saga's per-player state as JSON, for the compacted ``agg.saga.state`` changelog.

Internal to the saga (not a public contract), versioned so that a worker refuses state it
does not understand instead of misreading it.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from agg_domain.saga import (
    Command,
    Pending,
    PlayerState,
    Request,
    Round,
    Txn,
    TxnState,
)
from agg_domain.statuses import Action, CommandKind, Status

VERSION = 1


class StateDecodeError(ValueError):
    pass


def _request(d: dict[str, Any]) -> Request:
    return Request(**{**d, "action": Action(d["action"])})


def _command(d: dict[str, Any]) -> Command:
    return Command(**{**d, "kind": CommandKind(d["kind"])})


def _txn(d: dict[str, Any]) -> Txn:
    return Txn(
        **{
            **d,
            "action": Action(d["action"]),
            "state": TxnState(d["state"]),
            "status": Status(d["status"]) if d["status"] is not None else None,
            "waiters": tuple(_request(w) for w in d["waiters"]),
        }
    )


def _pending(d: dict[str, Any]) -> Pending:
    return Pending(
        command=_command(d["command"]),
        txn_key=d["txn_key"],
        next_send_ms=d["next_send_ms"],
        sends=d["sends"],
        waiters=tuple(_request(w) for w in d["waiters"]),
    )


def encode_state(state: PlayerState) -> bytes:
    body = {
        "v": VERSION,
        "operator_id": state.operator_id,
        "player_id": state.player_id,
        "balance": state.balance,
        "balance_currency": state.balance_currency,
        "txns": [asdict(t) for t in state.txns.values()],
        "pending": [asdict(p) for p in state.pending.values()],
        "rounds": [asdict(r) for r in state.rounds.values()],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def decode_state(data: bytes) -> PlayerState:
    try:
        body = json.loads(data)
        if body.get("v") != VERSION:
            raise StateDecodeError(f"state version {body.get('v')!r}, expected {VERSION}")
        txns = [_txn(t) for t in body["txns"]]
        pending = [_pending(p) for p in body["pending"]]
        rounds = [Round(**r) for r in body["rounds"]]
        return PlayerState(
            operator_id=body["operator_id"],
            player_id=body["player_id"],
            txns={t.key: t for t in txns},
            pending={p.command.command_id: p for p in pending},
            rounds={f"{r.provider_id}:{r.round_id}": r for r in rounds},
            balance=body["balance"],
            balance_currency=body["balance_currency"],
        )
    except StateDecodeError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise StateDecodeError(f"unreadable saga state: {exc}") from exc
