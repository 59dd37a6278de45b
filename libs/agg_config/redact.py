"""Secrets out of everything printed or logged: connection strings with their password
masked, and the rule that names which log fields are secret.

``redact_url`` masks the password of a libpq connection string in both its forms: the URL
(``postgresql://user:PASSWORD@host/db``, also ``?password=...`` in the query) and key/value
(``host=h password=PASSWORD``). Everything else (user, host, port, database) stays, so a
masked string still says where it points.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

MASK = "***"

_URL_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:@/]*):[^@/]*@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)[^&#]*", re.IGNORECASE)
_KEYWORD_PASSWORD = re.compile(
    r"(?P<head>(?:^|\s)password\s*=\s*)(?:'(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE
)

SECRET_FIELD = re.compile(r"secret|password|passwd|credential|api_key|private_key", re.I)
"""Log or report field names whose value is a secret, whatever it holds."""
URL_FIELD = re.compile(r"(^|_)(url|dsn|conninfo)$", re.I)
"""Field names whose value is a connection string (masked with :func:`redact_url`)."""


def redact_url(text: str) -> str:
    """``text`` with any password in it replaced by ``***``."""
    text = _URL_USERINFO.sub(rf"\g<head>:{MASK}@", text)
    text = _QUERY_PASSWORD.sub(rf"\g<head>{MASK}", text)
    return _KEYWORD_PASSWORD.sub(rf"\g<head>{MASK}", text)


@lru_cache(maxsize=1024)
def _field_kind(name: str) -> str:
    if SECRET_FIELD.search(name):
        return "secret"
    if URL_FIELD.search(name):
        return "url"
    return ""


def redact_field(name: str, value: Any) -> Any:
    """A log field's value as it may be written: secret fields masked, connection strings
    without their password, anything else as it is (field names are few: the rule is
    looked up once per name)."""
    kind = _field_kind(name)
    if not kind or value is None:
        return value
    if kind == "secret":
        return MASK
    return redact_url(value) if isinstance(value, str) else value


SECRET_SOURCE_KEYS = frozenset({"value", "env"})


def redact_tenants(data: Any) -> Any:
    """A tenants document's JSON (:func:`agg_config.document.tenants_json`) as it may be
    printed: every secret's inline value masked (a variable's name stays: it says where the
    secret is, not what), secret-named fields masked, connection strings without password."""
    if isinstance(data, list):
        return [redact_tenants(item) for item in data]
    if not isinstance(data, dict):
        return data
    if data and data.keys() <= SECRET_SOURCE_KEYS:
        return {k: (MASK if k == "value" else v) for k, v in data.items()}
    out: dict[str, Any] = {}
    for name, value in data.items():
        if isinstance(value, dict | list):
            out[name] = redact_tenants(value)
        else:
            out[name] = redact_field(name, value)
    return out
