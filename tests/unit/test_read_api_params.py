"""The read API's query parameters: a malformed one is a ReadError (400 INVALID_REQUEST),
never another exception (a 500) nor a value PostgreSQL refuses (a 503)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from agg_ingress.read_api import (
    ReadError,
    decode_cursor,
    encode_cursor,
    parse_limit,
    parse_time,
)


def _cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("parse", "value"),
    [
        (parse_limit, "0"),
        (parse_limit, "501"),
        (parse_limit, "-1"),
        (parse_limit, "²"),  # a digit to str.isdigit, not to int()
        (parse_limit, "\u0661\u0660"),  # Arabic-Indic digits: decimal to int(), not to us
        (parse_limit, ""),
        (lambda v: parse_time(v, "since"), "yesterday"),
        (lambda v: parse_time(v, "since"), "2026-01-01T00:00:00"),
        (lambda v: parse_time(v, "since"), "0001-01-01T00:00:00+01:00"),
        (decode_cursor, "nonsense!"),
        (decode_cursor, _cursor(5)),
        (decode_cursor, _cursor(["2026-01-01T00:00:00+00:00", "prov\x00", "t-1"])),
        (decode_cursor, _cursor(["2026-01-01T00:00:00+00:00", 1, "t-1"])),
        (decode_cursor, _cursor([1, "prov-nova", "t-1"])),
        (decode_cursor, base64.urlsafe_b64encode(b"[" * 100_000).decode()),
        (decode_cursor, base64.urlsafe_b64encode(b"\xff\xfe").decode()),
    ],
)
def test_malformed_parameters_are_read_errors(parse: object, value: str) -> None:
    with pytest.raises(ReadError):
        parse(value)  # type: ignore[operator]


def test_well_formed_parameters_are_read() -> None:
    assert parse_limit(None) == 100 and parse_limit("500") == 500 and parse_limit("007") == 7
    assert parse_time("2026-01-01T01:00:00+01:00", "since") == datetime(2026, 1, 1, tzinfo=UTC)
    when = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert decode_cursor(encode_cursor(when, "prov-nova", "t-1")) == (when, "prov-nova", "t-1")
