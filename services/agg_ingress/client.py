"""Signing and sending requests to the ingress (canonical provider protocol v1, operator API).

``sign`` is the whole signature scheme of the contract::

    X-Agg-Signature = hex(HMAC-SHA256(secret, f"{timestamp}.{METHOD}.{path}." + raw body))

where ``path`` is the request path with its query string exactly as sent. The HTTP clients
below are thin: they sign the exact bytes they send. Used by the tests, the simulator and
``python -m agg_ingress.client`` (prints a signed curl command).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agg_protocols.signatures import SIGNATURE_HEADER as SIGNATURE_HEADER
from agg_protocols.signatures import TIMESTAMP_HEADER as TIMESTAMP_HEADER
from agg_protocols.signatures import hmac_sign as sign

if TYPE_CHECKING:
    import httpx


def encode_body(fields: Mapping[str, Any]) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()


def signed_headers(
    secret: bytes | str, method: str, path: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: sign(secret, ts, method, path, body),
        "Content-Type": "application/json",
    }


class IngressClient:
    """A caller of the ingress that signs every request with one secret (provider or operator).

    ``base_url`` is ``http://host:port``; paths are sent as given (the signed path is the sent
    path, query string included).
    """

    def __init__(self, base_url: str, secret: bytes | str, *, timeout_s: float = 10.0):
        import httpx

        self.secret = secret
        self.http: httpx.Client = httpx.Client(base_url=base_url, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> IngressClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(
        self, method: str, path: str, body: bytes = b"", *, timestamp: int | None = None
    ) -> httpx.Response:
        headers = signed_headers(self.secret, method, path, body, timestamp)
        return self.http.request(method, path, content=body, headers=headers)

    def callback(
        self, provider_id: str, action: str, fields: Mapping[str, Any], **kw: Any
    ) -> httpx.Response:
        """One canonical wallet callback (``action`` in authenticate|balance|bet|win|rollback)."""
        path = f"/v1/providers/{provider_id}/wallet/{action}"
        return self.send("POST", path, encode_body(fields), **kw)

    def open_session(self, operator_id: str, fields: Mapping[str, Any]) -> httpx.Response:
        return self.send("POST", f"/v1/operators/{operator_id}/sessions", encode_body(fields))

    def games(self, operator_id: str, country: str) -> httpx.Response:
        return self.send("GET", f"/v1/operators/{operator_id}/games?country={country}")


def curl_command(
    base_url: str, secret: str, method: str, path: str, body: str, timestamp: int | None = None
) -> str:
    """A ready-to-run curl command for one signed request (README examples, debugging)."""
    headers = signed_headers(secret, method, path, body.encode(), timestamp)
    parts = ["curl", "-sS", "-X", method.upper(), base_url.rstrip("/") + path]
    for name, value in headers.items():
        parts += ["-H", f"{name}: {value}"]
    if body:
        parts += ["--data-binary", body]
    return shlex.join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agg_ingress.client", description="Print a signed curl command."
    )
    parser.add_argument("--base-url", default="http://127.0.0.1:8080")
    parser.add_argument("--secret", required=True, help="provider or operator secret")
    parser.add_argument("--method", default="POST")
    parser.add_argument("path", help="e.g. /v1/providers/prov-nova/wallet/bet")
    parser.add_argument("body", nargs="?", default="", help="raw JSON body, sent as given")
    args = parser.parse_args(argv)
    print(curl_command(args.base_url, args.secret, args.method, args.path, args.body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
