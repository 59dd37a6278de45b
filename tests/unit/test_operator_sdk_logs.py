"""The operator SDK's JSON log lines (:class:`agg_operator_sdk.logs.JsonLog`): one line per
event in the aggregator's shape, and a field named like a secret is never written."""

from __future__ import annotations

import io
import json

import pytest

from agg_operator_sdk.logs import JsonLog


def lines(write: str, **fields: object) -> list[dict[str, object]]:
    out = io.StringIO()
    getattr(JsonLog("wallet", out), write)("command_refused", **fields)
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize(("write", "level"), [("event", "info"), ("warning", "warning"),
                                              ("error", "error")])  # fmt: skip
def test_one_line_per_event_with_its_fields(write: str, level: str) -> None:
    (line,) = lines(write, correlation_id="corr-1", amount=250)
    assert line["level"] == level and line["logger"] == "wallet"
    assert line["event"] == "command_refused"
    assert (line["correlation_id"], line["amount"]) == ("corr-1", 250)
    assert str(line["ts"]).endswith("+00:00")


@pytest.mark.parametrize(
    "name", ["secret", "session_secret", "password", "db_password", "token", "database_url"]
)
def test_a_field_named_like_a_secret_is_masked(name: str) -> None:
    (line,) = lines("event", **{name: "postgresql://u:hunter2@db/x"})
    assert line[name] == "***"
