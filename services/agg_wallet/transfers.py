"""The reference operator's side of a transfer wallet (``wallet.mode: transfer``).

The operator keeps its players' main balances (``wallet.players``, as the reference wallet
does for seamless operators) and moves funds to and from the balance the aggregator holds
for the player through the operator API (``POST .../players/{player}/transfers``), each move
recorded in ``wallet.transfers`` under its transfer id, the idempotency key of the call:

- a **deposit** debits the player here and records the transfer ``PENDING`` in one database
  transaction (refused at once, nothing asked, when the player's balance is short), then asks
  the aggregator; ``OK`` makes it ``DONE``, a final refusal reverses the debit (``REFUSED``);
- a **withdrawal** is recorded ``PENDING``, then asked; ``OK`` credits the player with the
  amount the aggregator moved (all of the held balance when no amount is given) and makes it
  ``DONE``; a refusal makes it ``REFUSED``, nothing moved.

A 503 or a lost connection leaves the transfer ``PENDING``: it is asked again with the same
id until answered (:meth:`ReferenceTransfers.resume` re-drives every pending one after a
crash), and the aggregator answers a repeat with the original outcome, so nothing moves
twice. Balance changes take the reference wallet's per-player advisory lock.

``aggregator reconcile`` compares ``wallet.transfers`` with the journal's
``FundsTransferred`` events, per transfer and per day.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg

from agg_config.tenants import Operator
from agg_ingress.client import encode_body, signed_headers
from agg_obs.logs import get_logger
from agg_wallet.store import LOCK_PLAYERS_SQL

log = get_logger("transfers")

ASK_ATTEMPTS_MAX = 30
"""Calls of one transfer before leaving it pending (for :meth:`ReferenceTransfers.resume`)."""
RETRY_DELAY_MAX_S = 2.0


@dataclass(frozen=True)
class TransferResult:
    transfer_id: str
    direction: str
    status: str
    """``OK``; ``INSUFFICIENT_FUNDS`` (the operator's balance, for a deposit, or the held one,
    for a withdrawal) or another refusal; ``PENDING`` when no answer came."""
    amount: int
    """Moved (0 when refused or pending)."""
    held_balance: int | None
    """The aggregator-held balance after, as the aggregator answered."""


class ReferenceTransfers:
    """Transfers of one transfer-wallet operator's players, through a running ingress."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], http: httpx.AsyncClient,
                 operator: Operator, starting_balance: int | None = None):  # fmt: skip
        self.conn = conn
        self.http = http
        self.operator = operator
        self.starting_balance = (operator.wallet.starting_balance if starting_balance is None
                                 else starting_balance)  # fmt: skip

    # --- the two moves ----------------------------------------------------------------------

    async def deposit(self, player_id: str, currency: str, amount: int,
                      transfer_id: str) -> TransferResult:  # fmt: skip
        if not await self._begin_deposit(player_id, currency, amount, transfer_id):
            return TransferResult(transfer_id, "deposit", "INSUFFICIENT_FUNDS", 0, None)
        return await self._ask(player_id, transfer_id)

    async def withdraw(self, player_id: str, currency: str, amount: int | None,
                       transfer_id: str) -> TransferResult:  # fmt: skip
        await self.conn.execute(
            "insert into wallet.transfers (operator_id, player_id, transfer_id, direction,"
            " currency, requested, state) values (%s, %s, %s, 'withdraw', %s, %s, 'PENDING')"
            " on conflict do nothing",
            (self.operator.id, player_id, transfer_id, currency, amount),
        )
        return await self._ask(player_id, transfer_id)

    async def resume(self) -> list[TransferResult]:
        """Ask again every transfer left pending (after a crash or an outage)."""
        cur = await self.conn.execute(
            "select player_id, transfer_id from wallet.transfers"
            " where operator_id = %s and state = 'PENDING' order by created_at",
            (self.operator.id,),
        )
        return [await self._ask(str(p), str(t)) for p, t in await cur.fetchall()]

    # --- steps ------------------------------------------------------------------------------

    async def _begin_deposit(self, player_id: str, currency: str, amount: int,
                             transfer_id: str) -> bool:  # fmt: skip
        """Debit the player and record the transfer (once); False when the balance is short."""
        async with self.conn.transaction():
            await self.conn.execute(LOCK_PLAYERS_SQL, ([f"{self.operator.id}:{player_id}"],))
            cur = await self.conn.execute(
                "select 1 from wallet.transfers"
                " where operator_id = %s and player_id = %s and transfer_id = %s",
                (self.operator.id, player_id, transfer_id),
            )
            if await cur.fetchone() is not None:
                return True  # recorded before: only the question may be missing
            balance = await self._balance_for_update(player_id, currency)
            if balance < amount:
                return False
            await self._move(player_id, currency, -amount)
            await self.conn.execute(
                "insert into wallet.transfers (operator_id, player_id, transfer_id, direction,"
                " currency, requested, delta, state)"
                " values (%s, %s, %s, 'deposit', %s, %s, %s, 'PENDING')",
                (self.operator.id, player_id, transfer_id, currency, amount, -amount),
            )
        return True

    async def _ask(self, player_id: str, transfer_id: str) -> TransferResult:
        cur = await self.conn.execute(
            "select direction, currency, requested, state, status, amount from wallet.transfers"
            " where operator_id = %s and player_id = %s and transfer_id = %s",
            (self.operator.id, player_id, transfer_id),
        )
        row = await cur.fetchone()
        assert row is not None, "a transfer is recorded before it is asked"
        direction, currency, requested, state, status, amount = row
        if state != "PENDING":
            return TransferResult(transfer_id, str(direction), str(status), int(amount), None)
        fields: dict[str, Any] = {"transfer_id": transfer_id, "direction": direction,
                                  "currency": str(currency)}  # fmt: skip
        if requested is not None:
            fields["amount"] = int(requested)
        answer = await self._call(player_id, fields)
        if answer is None:
            log.warning("transfer_pending", operator=self.operator.id, transfer_id=transfer_id)
            return TransferResult(transfer_id, str(direction), "PENDING", 0, None)
        status = str(answer.get("status"))
        moved = int(answer.get("amount") or 0) if status == "OK" else 0
        await self._settle(player_id, transfer_id, str(direction), str(currency), status, moved,
                           None if requested is None else int(requested))  # fmt: skip
        log.event("transfer", operator=self.operator.id, direction=direction, status=status,
                  amount=moved, transfer_id=transfer_id)  # fmt: skip
        return TransferResult(transfer_id, str(direction), status, moved, answer.get("balance"))

    async def _call(self, player_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        """The aggregator's final answer, or None after retrying 503s and lost connections."""
        path = f"/v1/operators/{self.operator.id}/players/{player_id}/transfers"
        body = encode_body(fields)
        secret = self.operator.secret.reveal()
        for attempt in range(ASK_ATTEMPTS_MAX):
            try:
                response = await self.http.post(
                    path, content=body, headers=signed_headers(secret, "POST", path, body)
                )
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code != 503:
                answer: dict[str, Any] = response.json()
                return answer
            await asyncio.sleep(min(RETRY_DELAY_MAX_S, 0.05 * 2**attempt))
        return None

    async def _settle(self, player_id: str, transfer_id: str, direction: str, currency: str,
                      status: str, moved: int, requested: int | None) -> None:  # fmt: skip
        async with self.conn.transaction():
            await self.conn.execute(LOCK_PLAYERS_SQL, ([f"{self.operator.id}:{player_id}"],))
            cur = await self.conn.execute(
                "select state from wallet.transfers where operator_id = %s and player_id = %s"
                " and transfer_id = %s for update",
                (self.operator.id, player_id, transfer_id),
            )
            row = await cur.fetchone()
            if row is None or row[0] != "PENDING":
                return  # settled by a concurrent resume
            if status == "OK":
                delta = -moved if direction == "deposit" else moved
                if direction == "withdraw":
                    await self._balance_for_update(player_id, currency)
                    await self._move(player_id, currency, moved)
                state = "DONE"
            else:
                delta = 0
                if direction == "deposit":
                    assert requested is not None
                    await self._move(player_id, currency, requested)  # the debit reversed
                state = "REFUSED"
            await self.conn.execute(
                "update wallet.transfers set state = %s, status = %s, amount = %s, delta = %s,"
                " updated_at = now()"
                " where operator_id = %s and player_id = %s and transfer_id = %s",
                (state, status, moved, delta, self.operator.id, player_id, transfer_id),
            )

    async def _balance_for_update(self, player_id: str, currency: str) -> int:
        await self.conn.execute(
            "insert into wallet.players (operator_id, player_id, currency, balance,"
            " opening_balance) values (%s, %s, %s, %s, %s) on conflict do nothing",
            (self.operator.id, player_id, currency, self.starting_balance,
             self.starting_balance),
        )  # fmt: skip
        cur = await self.conn.execute(
            "select balance from wallet.players"
            " where operator_id = %s and player_id = %s and currency = %s for update",
            (self.operator.id, player_id, currency),
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def _move(self, player_id: str, currency: str, delta: int) -> None:
        await self.conn.execute(
            "update wallet.players set balance = balance + %s, updated_at = now()"
            " where operator_id = %s and player_id = %s and currency = %s",
            (delta, self.operator.id, player_id, currency),
        )
