"""``canonical-v1``: our own provider protocol (``docs/ingress.md``, contract section 5), as an
adapter like the others: ``POST wallet/{action}`` with a JSON body, signed with HMAC-SHA256
over timestamp, method, path and body in ``X-Agg-Timestamp`` / ``X-Agg-Signature``; answers in
the contract's JSON with the HTTP code of :data:`agg_ingress.protocol.HTTP_STATUS`."""

from __future__ import annotations

import json
from typing import Any

from agg_domain.statuses import Status
from agg_ingress.adapters.base import (
    Accepted,
    Credentials,
    Refused,
    Result,
    WireRequest,
    WireResponse,
)
from agg_ingress.launch import LaunchParams, default_launch_query
from agg_ingress.protocol import (
    ACTIONS,
    Callback,
    Invalid,
    answer,
    echo_fields,
    http_status,
    parse_callback,
    signature_problem,
)

PROTOCOL = "canonical-v1"
WALLET_PREFIX = "wallet/"


class CanonicalAdapter:
    protocol = PROTOCOL

    def __init__(self, window_s: int):
        self.window_s = window_s

    def parse(
        self, request: WireRequest, credentials: Credentials, now_s: float
    ) -> Accepted | Refused:
        body = request.body
        problem = signature_problem(
            credentials.secret or b"",
            timestamp=request.headers.get("x-agg-timestamp"),
            signature=request.headers.get("x-agg-signature"),
            method=request.method,
            path=request.raw_path,
            body=body,
            now_s=now_s,
            window_s=self.window_s,
        )
        if credentials.secret is None or problem is not None:
            return Refused(problem or Status.INVALID_REQUEST, "signature", body)
        name = request.path[len(WALLET_PREFIX) :] if request.path.startswith(WALLET_PREFIX) else ""
        action = ACTIONS.get(name) if "/" not in name else None
        if request.method != "POST" or action is None:
            return Refused(Status.INVALID_REQUEST, "unknown action", body)
        callback = parse_callback(action, body)
        if isinstance(callback, Invalid):
            return Refused(Status.INVALID_REQUEST, callback.reason, body)
        return Accepted(callback, callback)

    def launch_query(self, params: LaunchParams) -> list[tuple[str, str]]:
        return default_launch_query(params)

    def render(self, context: Any, result: Result, credentials: Credentials) -> WireResponse:
        request_id: str | None
        transaction_id: str | None
        if isinstance(context, Callback):
            request_id, transaction_id = context.request_id, context.transaction_id
            currency = result.currency or context.currency
        else:
            echo = echo_fields(context) if isinstance(context, bytes) else {}
            request_id, transaction_id = echo.get("request_id"), echo.get("transaction_id")
            currency = result.currency or echo.get("currency")
        body = answer(
            result.status,
            request_id=request_id,
            transaction_id=result.transaction_id or transaction_id,
            currency=currency,
            balance=result.balance,
        )
        http = result.extra.get("http") or http_status(result.status)
        return WireResponse(http, json.dumps(body, separators=(",", ":")).encode())
