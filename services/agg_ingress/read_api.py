"""The operator read API: balances and transactions of an operator's players, from the
PostgreSQL projections, signed like the rest of the operator API and strictly per tenant
(every query is bound to the operator whose secret signed the request).

    GET /v1/operators/{operator_id}/players/{player_id}/balance
    GET /v1/operators/{operator_id}/players/{player_id}/transactions
        ?since=ISO-8601&until=ISO-8601&round_id=R&limit=1..500&cursor=C

Transactions come newest last, ordered by (updated_at, provider_id, transaction_id); a page
that is full carries ``next_cursor``, which continues after its last row (keyset pagination:
stable while new transactions arrive). Projections lag the wallet by the projector's lag.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from typing import Any

from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from agg_domain.limits import limits_from_text
from agg_ingress.controls import limits_json

PLAYER_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
ID = PLAYER_ID
"""Every id of the read API (player, round, provider, transaction): the callbacks' ids."""
LIMIT_DEFAULT = 100
LIMIT_MAX = 500


class ReadError(ValueError):
    """A malformed query parameter; the message names it."""


def parse_time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ReadError(f"{name}: ISO-8601 timestamp expected") from None
    if parsed.tzinfo is None:
        raise ReadError(f"{name}: give a time zone (e.g. Z)")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the first UTC instant
        raise ReadError(f"{name}: out of range") from None


def _z(at: datetime) -> str:
    """An instant as RFC 3339 in UTC, to the millisecond."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_cursor(updated_at: datetime, provider_id: str, transaction_id: str) -> str:
    raw = json.dumps([updated_at.isoformat(), provider_id, transaction_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, provider_id, transaction_id = json.loads(raw)
        if not all(isinstance(i, str) and ID.fullmatch(i) for i in (provider_id, transaction_id)):
            raise ValueError("not ids")  # ids hold no NUL, which PostgreSQL text cannot
        return datetime.fromisoformat(when), provider_id, transaction_id
    except (ValueError, TypeError, RecursionError):
        raise ReadError("cursor: not a cursor this API gave out") from None


def parse_limit(value: str | None) -> int:
    if value is None:
        return LIMIT_DEFAULT
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= LIMIT_MAX:
        raise ReadError(f"limit: an integer from 1 to {LIMIT_MAX}")
    return int(value)


class ProjectionReader:
    def __init__(self, database_url: str, schema: str = "projection"):
        self.pool = AsyncConnectionPool(database_url, min_size=1, max_size=4, open=False)
        self.schema = schema

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    def _q(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(s=sql.Identifier(self.schema))

    async def balances(self, operator_id: str, player_id: str) -> list[dict[str, Any]]:
        async with self.pool.connection(timeout=2) as conn:
            cur = await conn.execute(
                self._q(
                    "select currency, balance, reported_at, event_id from {s}.balances"
                    " where operator_id = %s and player_id = %s order by currency"
                ),
                (operator_id, player_id),
            )
            rows = await cur.fetchall()
        return [
            {"currency": c, "balance": b, "reported_at": t.isoformat(), "event_id": e}
            for c, b, t, e in rows
        ]

    async def controls(self, operator_id: str, player_id: str) -> dict[str, Any] | None:
        """The player's responsible-gaming controls as last stated (None: never stated)."""
        async with self.pool.connection(timeout=2) as conn:
            cur = await conn.execute(
                self._q(
                    "select change_id, actor, blocked, self_excluded, self_excluded_until,"
                    " session_time_limit_s, limits, changed_at, event_id"
                    " from {s}.player_controls where operator_id = %s and player_id = %s"
                ),
                (operator_id, player_id),
            )
            row = await cur.fetchone()
        if row is None:
            return None
        change_id, actor, blocked, excluded, until, session_s, limits, at, event_id = row
        return {
            "change_id": change_id,
            "controls": {
                "blocked": blocked,
                "self_excluded": excluded,
                "self_excluded_until": None if until is None else until.isoformat(),
                "session_time_limit_s": session_s,
                "limits": limits_json(limits_from_text(limits or "")),
                "actor": actor,
            },
            "changed_at": at.isoformat(),
            "event_id": event_id,
        }

    async def campaigns(self, operator_id: str, player_id: str) -> list[dict[str, Any]]:
        async with self.pool.connection(timeout=2) as conn:
            cur = await conn.execute(
                self._q(
                    "select campaign_id, provider_id, games, spins, spins_left, bet_value,"
                    " currency, expires_at, state, wins, win_total, granted_at, ended_at,"
                    " updated_at from {s}.campaigns"
                    " where operator_id = %s and player_id = %s"
                    " order by granted_at desc, campaign_id limit 500"
                ),
                (operator_id, player_id),
            )
            rows = await cur.fetchall()
        return [
            {
                "campaign_id": c, "provider_id": p, "games": list(g), "spins": n,
                "spins_left": left, "bet_value": bet, "currency": cur_, "expires_at": _z(exp),
                "state": st, "wins": wins, "win_total": total, "granted_at": _z(granted),
                "ended_at": _z(ended) if ended is not None else None, "updated_at": _z(upd),
            }
            for c, p, g, n, left, bet, cur_, exp, st, wins, total, granted, ended, upd in rows
        ]  # fmt: skip

    async def transactions(
        self, operator_id: str, player_id: str, params: dict[str, str]
    ) -> tuple[list[dict[str, Any]], str | None]:
        since = parse_time(params.get("since"), "since")
        until = parse_time(params.get("until"), "until")
        limit = parse_limit(params.get("limit"))
        round_id = params.get("round_id")
        if round_id is not None and not ID.fullmatch(round_id):
            raise ReadError("round_id: 1..64 characters of [A-Za-z0-9_.:-]")
        after = decode_cursor(params["cursor"]) if params.get("cursor") else None
        clauses = ["operator_id = %s", "player_id = %s"]
        args: list[Any] = [operator_id, player_id]
        if since is not None:
            clauses.append("updated_at >= %s")
            args.append(since)
        if until is not None:
            clauses.append("updated_at < %s")
            args.append(until)
        if round_id is not None:
            clauses.append("round_id = %s")
            args.append(round_id)
        if after is not None:
            clauses.append("(updated_at, provider_id, transaction_id) > (%s, %s, %s)")
            args.extend(after)
        query = self._q(
            "select provider_id, transaction_id, kind, status, amount, currency, round_id,"
            " game_id, reference_transaction_id, first_event_at, updated_at, rule"
            " from {s}.transactions"
            " where " + " and ".join(clauses) +
            " order by updated_at, provider_id, transaction_id limit %s"
        )  # fmt: skip
        async with self.pool.connection(timeout=2) as conn:
            cur = await conn.execute(query, (*args, limit))
            rows = await cur.fetchall()
        items = [
            {
                "provider_id": r[0],
                "transaction_id": r[1],
                "kind": r[2],
                "status": r[3],
                "amount": r[4],
                "currency": r[5],
                "round_id": r[6],
                "game_id": r[7],
                "reference_transaction_id": r[8],
                "first_event_at": r[9].isoformat(),
                "updated_at": r[10].isoformat(),
                "rule": r[11],
            }
            for r in rows
        ]
        next_cursor = (
            encode_cursor(rows[-1][10], rows[-1][0], rows[-1][1]) if len(rows) == limit else None
        )
        return items, next_cursor
