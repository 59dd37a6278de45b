"""Request signatures, as pure functions.

HMAC (the canonical provider protocol, the operator API and the canonical operator-wallet
protocol)::

    X-Agg-Signature = hex(HMAC-SHA256(secret, f"{timestamp}.{METHOD}.{path}." + raw body))

where ``path`` is the request path with its query string exactly as sent and ``timestamp``
(``X-Agg-Timestamp``) unix seconds; a request more than the window away from the server's
clock is refused, and the MAC is compared in constant time.

RSA (the Hub88-shaped protocols): base64 of an RSA PKCS#1 v1.5 signature with SHA-256 over
the raw body, in ``X-Hub88-Signature``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from enum import StrEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

TIMESTAMP_HEADER = "X-Agg-Timestamp"
SIGNATURE_HEADER = "X-Agg-Signature"
TIMESTAMP_PATTERN = re.compile(r"^[0-9]{1,12}$")
RSA_SIGNATURE_CHARS_MAX = 2_048
"""Longest base64 signature looked at: a 8192-bit key's is 1,368 characters."""


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def hmac_sign(
    secret: bytes | str, timestamp: int | str, method: str, path: str, body: bytes | str
) -> str:
    """Lowercase hex HMAC-SHA256 of ``{timestamp}.{METHOD}.{path}.{body}``."""
    message = f"{timestamp}.{method.upper()}.{path}.".encode() + _bytes(body)
    return hmac.new(_bytes(secret), message, hashlib.sha256).hexdigest()


class SignatureProblem(StrEnum):
    INVALID_SIGNATURE = "INVALID_SIGNATURE"
    REQUEST_EXPIRED = "REQUEST_EXPIRED"


def hmac_problem(
    secret: bytes,
    *,
    timestamp: str | None,
    signature: str | None,
    method: str,
    path: str,
    body: bytes,
    now_s: float,
    window_s: int,
) -> SignatureProblem | None:
    """None when the request is signed by ``secret`` within the window; else what is wrong.

    The timestamp is checked first (a stale but well-signed request is REQUEST_EXPIRED, which
    tells an honest caller its clock is off); the MAC is compared in constant time."""
    if timestamp is None or signature is None or not TIMESTAMP_PATTERN.fullmatch(timestamp):
        return SignatureProblem.INVALID_SIGNATURE
    if abs(now_s - int(timestamp)) > window_s:
        return SignatureProblem.REQUEST_EXPIRED
    expected = hmac_sign(secret, timestamp, method, path, body).encode()
    if not hmac.compare_digest(signature.encode("latin-1", "replace"), expected):
        return SignatureProblem.INVALID_SIGNATURE
    return None


def load_public_key(pem: str) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


def load_private_key(pem: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA private key")
    return key


def rsa_sign(private_key: rsa.RSAPrivateKey, body: bytes) -> str:
    """Base64 RSA PKCS#1 v1.5 SHA-256 signature of ``body`` (``X-Hub88-Signature``)."""
    signature = private_key.sign(body, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode()


def rsa_verify(public_key: rsa.RSAPublicKey, body: bytes, signature: str | None) -> bool:
    if not signature or len(signature) > RSA_SIGNATURE_CHARS_MAX:
        return False
    try:
        raw = base64.b64decode(signature.encode("ascii"), validate=True)
        public_key.verify(raw, body, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, UnicodeEncodeError, ValueError):
        return False
    return True
