"""The saga's per-player state as JSON records of the compacted ``agg.saga.state`` changelog.

A player's state is one header record (key ``operator:player``: balance, pending commands,
open rounds) plus one record per remembered transaction (key ``operator:player`` +
``\\x1f`` + transaction key). A decision writes the header and only the transactions it
changed, so the bytes written per message do not grow with the player's history.

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


KEY_SEPARATOR = b"\x1f"
"""Separates the player key from a transaction key in ``agg.saga.state`` record keys; no id
may contain it (ids are validated at ingress)."""

VERSION = 2


def txn_record_key(player_key: bytes, txn_key: str) -> bytes:
    return player_key + KEY_SEPARATOR + txn_key.encode()


def encode_header(state: PlayerState) -> bytes:
    """Everything of a player's state but its transactions: small and bounded."""
    body = {
        "v": VERSION,
        "operator_id": state.operator_id,
        "player_id": state.player_id,
        "balance": state.balance,
        "balance_currency": state.balance_currency,
        "pruned_at_ms": state.pruned_at_ms,
        "pending": [asdict(p) for p in state.pending.values()],
        "rounds": [asdict(r) for r in state.rounds.values()],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def encode_txn(txn: Txn) -> bytes:
    return json.dumps({"v": VERSION, **asdict(txn)}, separators=(",", ":")).encode()


def state_records(
    old: PlayerState | None, new: PlayerState, player_key: bytes
) -> list[tuple[bytes, bytes | None]]:
    """The changelog records that turn ``old`` into ``new``: the header, every transaction
    that changed (by identity: ``decide`` keeps unchanged ones as they were) and a tombstone
    for every transaction removed."""
    records: list[tuple[bytes, bytes | None]] = [(player_key, encode_header(new))]
    before = old.txns if old is not None else {}
    for key, txn in new.txns.items():
        if before.get(key) is not txn:
            records.append((txn_record_key(player_key, key), encode_txn(txn)))
    for key in before:
        if key not in new.txns:
            records.append((txn_record_key(player_key, key), None))
    return records


class StateBuilder:
    """Reassembles players' states from changelog records read in order."""

    def __init__(self) -> None:
        self.headers: dict[bytes, dict[str, Any]] = {}
        self.txns: dict[bytes, dict[str, Txn]] = {}

    def add(self, key: bytes, value: bytes | None) -> None:
        player_key, sep, txn_key = key.partition(KEY_SEPARATOR)
        try:
            if not sep:
                if value is None:
                    self.headers.pop(player_key, None)
                    self.txns.pop(player_key, None)
                    return
                body = json.loads(value)
                if body.get("v") == 1:
                    body = self._upcast_v1(player_key, body)
                _check_version(body)
                self.headers[player_key] = body
            elif value is None:
                self.txns.get(player_key, {}).pop(txn_key.decode(), None)
            else:
                body = json.loads(value)
                _check_version(body)
                body.pop("v")
                self.txns.setdefault(player_key, {})[txn_key.decode()] = _txn(body)
        except StateDecodeError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise StateDecodeError(f"unreadable saga state record {key!r}: {exc}") from exc

    def _upcast_v1(self, player_key: bytes, body: dict[str, Any]) -> dict[str, Any]:
        """Version 1 kept a player's whole state, transactions included, in one record."""
        self.txns[player_key] = {t["key"]: _txn(t) for t in body.pop("txns")}
        for r in body["rounds"]:
            r.setdefault("provider_id", "")
        return {**body, "v": VERSION, "pruned_at_ms": 0}

    def states(self) -> dict[bytes, PlayerState]:
        out = {}
        for player_key, h in self.headers.items():
            try:
                pending = [_pending(p) for p in h["pending"]]
                rounds = [Round(**r) for r in h["rounds"]]
                out[player_key] = PlayerState(
                    operator_id=h["operator_id"],
                    player_id=h["player_id"],
                    txns=self.txns.get(player_key, {}),
                    pending={p.command.command_id: p for p in pending},
                    rounds={f"{r.provider_id}:{r.round_id}": r for r in rounds},
                    balance=h["balance"],
                    balance_currency=h["balance_currency"],
                    pruned_at_ms=h["pruned_at_ms"],
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise StateDecodeError(f"unreadable saga state of {player_key!r}: {exc}") from exc
        return out


def _check_version(body: dict[str, Any]) -> None:
    if body.get("v") != VERSION:
        raise StateDecodeError(f"state version {body.get('v')!r}, expected {VERSION}")
