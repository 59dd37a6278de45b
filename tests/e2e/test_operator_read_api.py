"""The operator read API end to end: what the wallet did reaches the projections and is
served, paginated and filtered, to that operator alone."""

from __future__ import annotations

import uuid

from tests.e2e.conftest import OPERATOR, STARTING_BALANCE, Pipeline
from tests.e2e.test_pipeline import answer, eventually


def test_balance_and_transactions_of_a_player(pipeline: Pipeline) -> None:
    player, token = pipeline.new_player()
    txns = [f"tx-{uuid.uuid4().hex[:10]}" for _ in range(5)]
    for i, t in enumerate(txns):
        assert answer(pipeline.bet(player, token, t, 10 + i, round_id=f"rnd-{i % 2}"))[1] == "OK"
    expected = STARTING_BALANCE - sum(10 + i for i in range(5))
    base = f"/v1/operators/{OPERATOR}/players/{player}"

    def balance() -> int | None:
        response = pipeline.read(f"{base}/balance")
        if response.status_code != 200:
            return None
        [eur] = response.json()["balances"]
        return int(eur["balance"])

    eventually(lambda: balance() == expected, 30)

    def page(query: str) -> dict:  # type: ignore[type-arg]
        response = pipeline.read(f"{base}/transactions{query}")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    eventually(lambda: len(page("?limit=500")["transactions"]) == 5, 30)
    first = page("?limit=2")
    assert len(first["transactions"]) == 2 and first["next_cursor"]
    rest = page(f"?limit=2&cursor={first['next_cursor']}")
    last = page(f"?limit=2&cursor={rest['next_cursor']}")
    seen = [t["transaction_id"] for p in (first, rest, last) for t in p["transactions"]]
    assert sorted(seen) == sorted(txns) and last["next_cursor"] is None
    assert {t["status"] for p in (first, rest, last) for t in p["transactions"]} == {"ACCEPTED"}
    by_round = page("?round_id=rnd-0")["transactions"]
    assert len(by_round) == 3
    assert page("?since=2999-01-01T00:00:00Z")["transactions"] == []


def test_operators_cannot_read_each_other(pipeline: Pipeline) -> None:
    player, token = pipeline.new_player()
    assert answer(pipeline.bet(player, token, f"tx-{uuid.uuid4().hex[:10]}", 10))[1] == "OK"
    path = f"/v1/operators/{OPERATOR}/players/{player}/balance"
    eventually(lambda: pipeline.read(path).status_code == 200, 30)
    # op-beta signing a request for op-alpha's player: refused, nothing revealed
    refused = pipeline.read(path, secret=pipeline.other_operator_secret)
    assert refused.status_code == 401
    assert "balances" not in refused.json()
    # under its own path op-beta has no such player
    own = pipeline.read(
        f"/v1/operators/op-beta/players/{player}/balance", secret=pipeline.other_operator_secret
    )
    assert own.status_code == 404


def test_bad_read_parameters_are_refused(pipeline: Pipeline) -> None:
    base = f"/v1/operators/{OPERATOR}/players/someone/transactions"
    for query in ("?limit=0", "?limit=501", "?since=yesterday", "?cursor=nonsense!"):
        response = pipeline.read(base + query)
        assert response.status_code == 400, (query, response.text)
        assert response.json()["status"] == "INVALID_REQUEST"
