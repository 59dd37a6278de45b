"""The saga's per-player state as JSON records of the compacted ``agg.saga.state`` changelog.

A player's state is one header record (key ``operator:player``: balance, pending commands,
open rounds) plus one record per remembered transaction (key ``operator:player`` +
``\\x1f`` + transaction key). A decision writes the header and only the transactions it
changed, so the bytes written per message do not grow with the player's history.

The header is the commit point of a player's write (format 3). It is written first and
carries everything the write changes: the changed transactions themselves (``delta``), the
outputs the write's decisions imply (``outbox``), the input offsets decided (``applied``)
and the write's sequence number in its partition (``seq``). The transaction records follow
it in the same partition, so a write cut short by a crash leaves either the old header, with
none of the new transaction records after it (records of one partition land in order), or
the new header, whose ``delta`` overrides whatever transaction records did not land. A
marker record per partition (:data:`MARKER_KEY`) says up to which ``seq`` the outputs are
known to be published; a restore re-publishes the outboxes above it and re-writes their
transaction records.

Internal to the saga (not a public contract), versioned so that a worker refuses state it
does not understand instead of misreading it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import orjson

from agg_domain.compliance import Refusal
from agg_domain.limits import NO_CONTROLS, Controls, Usage, limits_of
from agg_domain.saga import (
    FINAL_STATES,
    Campaign,
    CampaignGrant,
    CampaignState,
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
    changes: dict[str, Any] = {"action": Action(d["action"])}
    refusal = d.get("refusal")  # absent in state written before requests carried one
    if refusal is not None:
        changes["refusal"] = Refusal(Status(refusal["status"]), refusal["rule"])
    grant = d.get("campaign")  # absent before campaigns
    if grant is not None:
        changes["campaign"] = CampaignGrant(**{**grant, "games": tuple(grant["games"])})
    return Request(**{**d, **changes})


def _campaign(d: dict[str, Any]) -> Campaign:
    return Campaign(**{**d, "games": tuple(d["games"]), "state": CampaignState(d["state"])})


def _controls_dict(c: Controls) -> dict[str, Any]:
    return {
        "change_id": c.change_id, "blocked": c.blocked, "self_excluded": c.self_excluded,
        "self_excluded_until_ms": c.self_excluded_until_ms,
        "session_time_limit_ms": c.session_time_limit_ms,
        "limits": [[x.kind.value, x.period.value, x.amount, x.currency] for x in c.limits],
        "actor": c.actor, "changed_at_ms": c.changed_at_ms,
    }  # fmt: skip


def _controls(d: dict[str, Any]) -> Controls:
    return Controls(**{**d, "limits": limits_of(tuple(x) for x in d["limits"])})


def _usage(d: dict[str, Any]) -> dict[str, Usage]:
    return {str(k): Usage(*(int(x) for x in u)) for k, u in d.items()}


def _control_changes(d: dict[str, Any]) -> dict[str, tuple[str, int]]:
    return {str(c): (str(g), int(at)) for c, (g, at) in d.items()}


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
"""Format of the transaction records (and of headers before format 3)."""
HEADER_VERSION = 3
MARKER_KEY = b"\x00published"
"""Key of the per-partition marker record; a player key always holds a ``:``."""


def txn_record_key(player_key: bytes, txn_key: str) -> bytes:
    return player_key + KEY_SEPARATOR + txn_key.encode()


_dumps = orjson.dumps
"""Compact JSON as UTF-8 bytes (enums as their values). orjson rather than the standard
library: JSON was a sixth of a saga decision's CPU, and orjson writes it several times faster.
Readers see the same JSON either way (non-ASCII text as UTF-8 instead of escapes)."""
_loads = orjson.loads

_REQUEST_FIELDS = tuple(f.name for f in fields(Request))
_COMMAND_FIELDS = tuple(f.name for f in fields(Command))
_ROUND_FIELDS = tuple(f.name for f in fields(Round))
_GRANT_FIELDS = tuple(f.name for f in fields(CampaignGrant))
_CAMPAIGN_FIELDS = tuple(f.name for f in fields(Campaign))
_TXN_FIELDS = tuple(f.name for f in fields(Txn) if f.name != "waiters")
_TXN_WAITERS = tuple(f.name for f in fields(Txn)).index("waiters")
_PENDING_FIELDS = tuple(f.name for f in fields(Pending))
assert _PENDING_FIELDS == ("command", "txn_key", "next_send_ms", "sends", "waiters")

# The dictionaries below are what ``dataclasses.asdict`` makes of these values (same keys in
# the same order, nested dataclasses as dictionaries, enums as themselves), built without its
# recursive deep copy, which cost more than the rest of a decision.


def _request_dict(r: Request) -> dict[str, Any]:
    body = {name: getattr(r, name) for name in _REQUEST_FIELDS}
    if r.refusal is not None:
        body["refusal"] = {"status": r.refusal.status, "rule": r.refusal.rule}
    if r.campaign is not None:
        body["campaign"] = {name: getattr(r.campaign, name) for name in _GRANT_FIELDS}
    return body


def _txn_dict(txn: Txn) -> dict[str, Any]:
    body = {name: getattr(txn, name) for name in _TXN_FIELDS[:_TXN_WAITERS]}
    body["waiters"] = [_request_dict(w) for w in txn.waiters]
    for name in _TXN_FIELDS[_TXN_WAITERS:]:
        body[name] = getattr(txn, name)
    return body


def _pending_dict(p: Pending) -> dict[str, Any]:
    c = p.command
    return {
        "command": {name: getattr(c, name) for name in _COMMAND_FIELDS},
        "txn_key": p.txn_key,
        "next_send_ms": p.next_send_ms,
        "sends": p.sends,
        "waiters": [_request_dict(w) for w in p.waiters],
    }


def _round_json(r: Round) -> bytes:
    return _dumps({name: getattr(r, name) for name in _ROUND_FIELDS})


class RoundsCache:
    """The JSON of every player's rounds as last written, so that a header costs what its
    changed rounds cost rather than what all of them do: a round is kept a day after its last
    transaction, so a busy player has many, and most decisions change none or one of them.

    ``decide`` keeps an unchanged round as the same object (and an untouched mapping of rounds
    as the same mapping), so identity says what may be reused. Holds one entry per player
    encoded; :meth:`forget` drops players whose state the worker no longer holds.
    """

    def __init__(self) -> None:
        self._players: dict[
            bytes, tuple[Mapping[str, Round], dict[str, tuple[Round, bytes]], bytes]
        ] = {}

    def rounds_json(self, player_key: bytes, rounds: Mapping[str, Round]) -> bytes:
        """The JSON list of ``rounds``' values, in their order."""
        cached = self._players.get(player_key)
        if cached is not None and cached[0] is rounds:
            return cached[2]
        before = cached[1] if cached is not None else {}
        parts: dict[str, tuple[Round, bytes]] = {}
        for key, rnd in rounds.items():
            hit = before.get(key)
            parts[key] = hit if hit is not None and hit[0] is rnd else (rnd, _round_json(rnd))
        text = b"[" + b",".join(part for _, part in parts.values()) + b"]"
        self._players[player_key] = (rounds, parts, text)
        return text

    def forget(self, player_keys: Iterable[bytes]) -> None:
        for key in player_keys:
            self._players.pop(key, None)

    def clear(self) -> None:
        self._players.clear()


@dataclass
class WriteMeta:
    """What a header says of the write it commits, beside the player's state."""

    seq: int = 0
    applied: dict[str, int] = field(default_factory=dict)
    """Per input ``topic/partition``, the offset of the last message decided for the player."""
    outbox: list[tuple[str, int | None, bytes]] = field(default_factory=list)
    """The write's outputs: (topic, explicit partition or None, value); keyed by the player."""
    parked: str | None = None
    """Why this player's messages are set aside instead of decided (a bug or bad state)."""


def _outbox_json(outbox: Sequence[tuple[str, int | None, bytes]]) -> bytes:
    return _dumps([[t, p, base64.b64encode(v).decode()] for t, p, v in outbox])


def encode_header(
    state: PlayerState,
    player_key: bytes = b"",
    cache: RoundsCache | None = None,
    meta: WriteMeta | None = None,
    delta: Mapping[str, bytes | None] | None = None,
) -> bytes:
    """Everything of a player's state but its transactions (small and bounded), with the
    write's ``meta`` and the transactions it changed (``delta``: key -> encoded record or
    None for a removed one)."""
    meta = meta or WriteMeta()
    body = {
        "v": HEADER_VERSION,
        "operator_id": state.operator_id,
        "player_id": state.player_id,
        "balance": state.balance,
        "balance_currency": state.balance_currency,
        "pruned_at_ms": state.pruned_at_ms,
        "pending": [_pending_dict(p) for p in state.pending.values()],
        "seq": meta.seq,
        "applied": meta.applied,
        "parked": meta.parked,
    }
    if state.demo_balances:  # additive: absent (read as none) for a player never in demo
        body["demo_balances"] = dict(state.demo_balances)
    if state.transfer_balances:  # additive: absent for a player never of a transfer wallet
        body["transfer_balances"] = dict(state.transfer_balances)
    if state.controls is not NO_CONTROLS:  # additive: absent for a player never given any
        body["controls"] = _controls_dict(state.controls)
    if state.usage:
        body["usage"] = {k: [u.period_start_ms, u.wagered, u.lost, u.deposited]
                         for k, u in state.usage.items()}  # fmt: skip
    if state.control_changes:
        body["control_changes"] = {c: list(seen) for c, seen in state.control_changes.items()}
    if state.sessions:
        body["sessions"] = dict(state.sessions)
    if state.campaigns:  # additive: absent for a player never granted a campaign
        body["campaigns"] = [
            {name: getattr(c, name) for name in _CAMPAIGN_FIELDS} for c in state.campaigns.values()
        ]
    if cache is None:
        rounds = _dumps([{n: getattr(r, n) for n in _ROUND_FIELDS} for r in state.rounds.values()])
    else:
        rounds = cache.rounds_json(player_key, state.rounds)
    parts = [_dumps(body)[:-1], b',"outbox":', _outbox_json(meta.outbox), b',"delta":{']
    first = True
    for key, value in (delta or {}).items():
        parts.append((b"" if first else b",") + _dumps(key) + b":")
        parts.append(b"null" if value is None else value)
        first = False
    parts.append(b'},"rounds":')
    parts.append(rounds)
    parts.append(b"}")
    return b"".join(parts)


def encode_marker(seq: int) -> bytes:
    return _dumps({"v": HEADER_VERSION, "seq": seq})


def encode_txn(txn: Txn) -> bytes:
    return _dumps({"v": VERSION, **_txn_dict(txn)})


def state_records(
    old: PlayerState | None,
    new: PlayerState,
    player_key: bytes,
    cache: RoundsCache | None = None,
    changed: Iterable[str] | None = None,
    meta: WriteMeta | None = None,
) -> list[tuple[bytes, bytes | None]]:
    """The changelog records that turn ``old`` into ``new``: the header first (with the
    changed transactions in its ``delta``), then every transaction that changed (by identity:
    ``decide`` keeps unchanged ones as they were) and a tombstone for every one removed.

    ``changed``, the decision's ``txns_changed``, names every key that may differ, so only
    those are looked at; without it every transaction is compared."""
    delta = txn_delta(old, new, changed)
    header = encode_header(new, player_key, cache, meta, delta)
    records: list[tuple[bytes, bytes | None]] = [(player_key, header)]
    records.extend((txn_record_key(player_key, key), value) for key, value in delta.items())
    return records


def txn_delta(
    old: PlayerState | None, new: PlayerState, changed: Iterable[str] | None = None
) -> dict[str, bytes | None]:
    """Transaction key -> encoded record (None: removed) for every transaction that differs,
    in key order (the same records whichever way they are found)."""
    before = old.txns if old is not None else {}
    after = new.txns
    delta: dict[str, bytes | None] = {}
    if before is after:
        return delta
    if changed is not None:
        for key in changed:
            previous, txn = before.get(key), after.get(key)
            if txn is None:
                if previous is not None:
                    delta[key] = None
            elif previous is not txn:
                delta[key] = encode_txn(txn)
        return dict(sorted(delta.items()))
    added = 0
    for key, txn in after.items():
        previous = before.get(key)
        if previous is not txn:
            added += previous is None
            delta[key] = encode_txn(txn)
    if len(before) + added > len(after):  # some were removed
        for key in before:
            if key not in after:
                delta[key] = None
    return dict(sorted(delta.items()))


@dataclass
class RestoredPlayer:
    state: PlayerState
    meta: WriteMeta
    delta_records: list[tuple[bytes, bytes | None]]
    """The header's ``delta`` as changelog records: re-written when the write may be torn."""


class StateBuilder:
    """Reassembles players' states from changelog records read in order.

    Never raises on what a crash (or an older worker) can leave behind: a player whose
    records cannot be read or do not fit together is listed in :attr:`broken` with the
    reason, and every other player is restored."""

    def __init__(self) -> None:
        self.headers: dict[bytes, dict[str, Any] | bytes] = {}
        """Per player, its last header: as read, or as bytes still to be read (a header is
        written at every decision of the player; only the last counts)."""
        self.txns: dict[bytes, dict[str, Txn | bytes]] = {}
        """Per player, its transactions: the latest record's bytes, read in :meth:`players`
        (a transaction is written at each of its changes; only its last record counts)."""
        self.broken: dict[bytes, str] = {}
        self.marker_seq = 0

    def add(self, key: bytes, value: bytes | None) -> None:
        if key == MARKER_KEY:
            try:
                self.marker_seq = max(self.marker_seq, int(_loads(value or b"{}")["seq"]))
            except (ValueError, KeyError, TypeError):
                pass  # an unreadable marker only means more is re-published
            return
        player_key, sep, txn_key = key.partition(KEY_SEPARATOR)
        try:
            if not sep:
                if value is None:
                    self.headers.pop(player_key, None)
                    self.txns.pop(player_key, None)
                    self.broken.pop(player_key, None)
                    return
                self.broken.pop(player_key, None)
                if value.startswith(_LAZY_HEADERS):  # read in players() if it is the last
                    self.headers[player_key] = value
                    return
                body = _loads(value)
                if body.get("v") == 1:
                    body = self._upcast_v1(player_key, body)
                self.headers[player_key] = _checked_header(body)
            elif value is None:
                self.txns.get(player_key, {}).pop(txn_key.decode(), None)
            else:
                self.txns.setdefault(player_key, {})[txn_key.decode()] = value
        except (ValueError, KeyError, TypeError) as exc:
            self.broken[player_key] = f"unreadable saga state record {key!r}: {exc}"

    def _upcast_v1(self, player_key: bytes, body: dict[str, Any]) -> dict[str, Any]:
        """Version 1 kept a player's whole state, transactions included, in one record."""
        self.txns[player_key] = {t["key"]: _txn(t) for t in body.pop("txns")}
        for r in body["rounds"]:
            r.setdefault("provider_id", "")
        return {**body, "v": VERSION, "pruned_at_ms": 0}

    def players(self) -> dict[bytes, RestoredPlayer]:
        out = {}
        for player_key, header in self.headers.items():
            if player_key in self.broken:
                continue
            try:
                h = header if isinstance(header, dict) else _checked_header(_loads(header))
                txns = {key: _txn_of(record) for key, record in
                        self.txns.get(player_key, {}).items()}  # fmt: skip
                delta_records: list[tuple[bytes, bytes | None]] = []
                delta = h.get("delta") or {}
                if delta:
                    for key, body in delta.items():
                        record_key = txn_record_key(player_key, key)
                        if body is None:
                            txns.pop(key, None)
                            delta_records.append((record_key, None))
                        else:
                            delta_records.append((record_key, _dumps(body)))
                            _check_version(body)
                            txns[key] = _txn({k: v for k, v in body.items() if k != "v"})
                pending = [_pending(p) for p in h["pending"]]
                rounds = [Round(**r) for r in h["rounds"]]
                state = PlayerState(
                    operator_id=h["operator_id"],
                    player_id=h["player_id"],
                    txns=txns,
                    pending={p.command.command_id: p for p in pending},
                    rounds={f"{r.provider_id}:{r.round_id}": r for r in rounds},
                    balance=h["balance"],
                    balance_currency=h["balance_currency"],
                    pruned_at_ms=h["pruned_at_ms"],
                    demo_balances={str(c): int(b) for c, b in h.get("demo_balances", {}).items()},
                    transfer_balances={
                        str(c): int(b) for c, b in h.get("transfer_balances", {}).items()
                    },
                    controls=_controls(h["controls"]) if "controls" in h else NO_CONTROLS,
                    usage=_usage(h.get("usage", {})),
                    control_changes=_control_changes(h.get("control_changes", {})),
                    sessions={str(p): int(at) for p, at in h.get("sessions", {}).items()},
                    campaigns={
                        c.campaign_id: c for c in (_campaign(b) for b in h.get("campaigns", ()))
                    },
                )
                meta = WriteMeta(
                    seq=int(h.get("seq", 0)),
                    applied={str(k): int(v) for k, v in (h.get("applied") or {}).items()},
                    outbox=[(t, p, base64.b64decode(v)) for t, p, v in h.get("outbox") or ()],
                    parked=h.get("parked"),
                )
                problem = inconsistency(state)
            except (ValueError, KeyError, TypeError) as exc:
                self.broken[player_key] = f"unreadable saga state of {player_key!r}: {exc}"
                continue
            if problem is not None:
                self.broken[player_key] = problem
                continue
            out[player_key] = RestoredPlayer(state, meta, delta_records)
        return out

    def states(self) -> dict[bytes, PlayerState]:
        """Every readable player's state; raises if any player's state is unusable."""
        players = self.players()
        if self.broken:
            reason = next(iter(self.broken.values()))
            raise StateDecodeError(reason)
        return {key: p.state for key, p in players.items()}


_LAZY_HEADERS = (b'{"v":2,', b'{"v":3,')
"""How the headers of formats 2 and 3 begin (as this module writes them): the ones read only
if they are a player's last; any other (format 1, another writer's) is read when added."""


def _checked_header(body: dict[str, Any]) -> dict[str, Any]:
    if body.get("v") not in (VERSION, HEADER_VERSION):
        raise StateDecodeError(f"header version {body.get('v')!r}")
    return body


def _txn_of(record: Txn | bytes) -> Txn:
    if isinstance(record, Txn):  # from a version 1 header
        return record
    body = _loads(record)
    _check_version(body)
    body.pop("v")
    return _txn(body)


def inconsistency(state: PlayerState) -> str | None:
    """Why ``state`` cannot be decided from (a record missing, as a torn write of an older
    worker leaves it), or None."""
    for command_id, pending in state.pending.items():
        if command_id != pending.command.command_id:
            return f"pending command {command_id} stored under another id"
        if pending.txn_key is not None and pending.txn_key not in state.txns:
            return f"pending command {command_id} names missing transaction {pending.txn_key}"
    for key, txn in state.txns.items():
        if txn.key != key:
            return f"transaction {key} stored under another key"
        if txn.rollback_key is not None and txn.state != TxnState.TOMBSTONE:
            if txn.rollback_key not in state.txns and txn.state not in FINAL_STATES:
                return f"transaction {key} names missing rollback {txn.rollback_key}"
    return None


def _check_version(body: dict[str, Any]) -> None:
    if body.get("v") != VERSION:
        raise StateDecodeError(f"state version {body.get('v')!r}, expected {VERSION}")
