"""End to end: the compliance rules of the tenants file hold at every provider callback, not
only when the session opens, and every refusal is journaled with its rule.

Sessions are opened (and a first bet accepted) under one tenants file; the ingress is then
restarted with a file that forbids each session's play by one rule (the tokens stay valid:
they are verified by their MAC, not looked up). Each session's next bet is refused with its
rule's status, a retry of it gets the same answer, the journal and the projections hold a
BetRejected with the rule, nothing is debited, and the same session's win and the rollback
of its first bet still settle."""

from __future__ import annotations

import copy
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from agg_auditor.cli import main_audit
from agg_config.settings import Settings
from agg_config.tenants import load_tenants
from agg_ingress.client import encode_body, signed_headers
from tests.e2e.conftest import STARTING_BALANCE, Pipeline
from tests.e2e.test_pipeline import answer, eventually, txn

MAX_BET_MT = 1_000
"""nova-starfall's maximum stake in EUR for Malta; 5,000 everywhere else."""


@dataclass(frozen=True)
class Case:
    name: str
    operator: str
    currency: str
    country: str
    game: str
    provider: str
    status: str
    rule: str
    refused_amount: int = 100


CASES = [
    Case("restricted game", "op-alpha", "EUR", "MT", "nova-megaways", "prov-nova",
         "GAME_NOT_ALLOWED", "game_restricted_in_country:MT"),
    Case("blocked country", "op-alpha", "EUR", "IE", "nova-starfall", "prov-nova",
         "GAME_NOT_ALLOWED", "operator_blocked_in_country:IE"),
    Case("maintenance", "op-alpha", "EUR", "MT", "orbit-blackjack", "prov-orbit",
         "GAME_NOT_ALLOWED", "provider_maintenance"),
    Case("provider not offered", "op-beta", "EUR", "MT", "nova-starfall", "prov-nova",
         "GAME_NOT_ALLOWED", "provider_not_offered"),
    Case("operator currency", "op-alpha", "USD", "MT", "nova-starfall", "prov-nova",
         "CURRENCY_MISMATCH", "operator_currency:USD"),
    Case("game currency", "op-alpha", "EUR", "MT", "nova-gemrush", "prov-nova",
         "CURRENCY_MISMATCH", "game_currency:EUR"),
    Case("max bet", "op-alpha", "EUR", "MT", "nova-starfall", "prov-nova",
         "LIMIT_EXCEEDED", f"max_bet:EUR:{MAX_BET_MT}", refused_amount=MAX_BET_MT + 1),
]  # fmt: skip


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _before(dev: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(dev)
    game = next(g for g in data["games"] if g["id"] == "nova-starfall")
    game["max_bet"] = [{"currency": "EUR", "amount": 5_000},
                       {"currency": "EUR", "amount": MAX_BET_MT, "countries": ["MT"]}]  # fmt: skip
    return data


def _after(before: dict[str, Any]) -> dict[str, Any]:
    """One rule against each case's session."""
    data = copy.deepcopy(before)
    now = datetime.now(UTC)
    games = {g["id"]: g for g in data["games"]}
    operators = {o["id"]: o for o in data["operators"]}
    games["nova-megaways"]["restricted_countries"] = ["MT"]
    operators["op-alpha"]["blocked_countries"] = ["US", "IE"]
    operators["op-alpha"]["maintenance"] = [{"provider": "prov-orbit",
                                             "start": _iso(now - timedelta(hours=1)),
                                             "end": _iso(now + timedelta(hours=1))}]  # fmt: skip
    operators["op-beta"]["providers"] = ["prov-orbit"]
    operators["op-alpha"]["currencies"] = ["EUR"]
    games["nova-gemrush"]["currencies"] = ["USD"]
    return data


@dataclass
class Stack:
    pipeline: Pipeline
    after_file: Path
    secrets: dict[str, bytes]

    @property
    def http(self) -> httpx.Client:
        return self.pipeline.http

    def post(self, secret_of: str, path: str, fields: dict[str, Any]) -> httpx.Response:
        body = encode_body(fields)
        headers = signed_headers(self.secrets[secret_of], "POST", path, body)
        return self.http.post(path, content=body, headers=headers)

    def open_session(self, case: Case, player: str, country: str | None = None) -> httpx.Response:
        return self.post(case.operator, f"/v1/operators/{case.operator}/sessions",
                         {"player_id": player, "currency": case.currency,
                          "country": country or case.country, "game_id": case.game,
                          "mode": "real"})  # fmt: skip

    def callback(self, case: Case, action: str, player: str, token: str,
                 **fields: Any) -> httpx.Response:  # fmt: skip
        body = {"request_id": uuid.uuid4().hex, "session_token": token, "player_id": player,
                "currency": case.currency, "game_id": case.game, **fields}  # fmt: skip
        if action in ("bet", "win", "rollback"):
            body.setdefault("round_id", "rnd-1")
        return self.post(case.provider, f"/v1/providers/{case.provider}/wallet/{action}", body)

    def wallet_balance(self, operator: str, player: str) -> int | None:
        with psycopg.connect(self.pipeline.settings.database_url) as conn:
            row = conn.execute(
                "select balance from wallet.players where operator_id = %s and player_id = %s",
                (operator, player),
            ).fetchone()
        return None if row is None else int(row[0])

    def journal(self, operator: str, player: str, transaction_id: str) -> list[tuple[str, Any]]:
        with psycopg.connect(self.pipeline.settings.database_url) as conn:
            rows = conn.execute(
                "select event_type, payload from projection.journal where operator_id = %s"
                ' and player_id = %s and transaction_id = %s order by "offset"',
                (operator, player, transaction_id),
            ).fetchall()
        return [(name, payload) for name, payload in rows]

    def transaction(self, operator: str, player: str, transaction_id: str) -> tuple[Any, ...]:
        with psycopg.connect(self.pipeline.settings.database_url) as conn:
            row = conn.execute(
                "select status, rule, amount from projection.transactions where operator_id = %s"
                " and player_id = %s and transaction_id = %s",
                (operator, player, transaction_id),
            ).fetchone()
        assert row is not None
        return tuple(row)


@pytest.fixture(scope="module")
def stack(
    settings: Settings, catalogue_topics: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("pipeline-compliance")
    before = _before(yaml.safe_load(settings.tenants_file.read_text()))
    before_file, after_file = root / "tenants-before.yaml", root / "tenants-after.yaml"
    before_file.write_text(yaml.safe_dump(before))
    after_file.write_text(yaml.safe_dump(_after(before)))
    load_tenants(after_file)  # a valid file: the ingress must start on it
    tenants = load_tenants(before_file)
    secrets = {o.id: o.secret.reveal() for o in tenants.operators}
    secrets.update({p.id: p.shared_secret() for p in tenants.providers if p.secret is not None})
    p = Pipeline(settings, root, env={"AGG_TENANTS_FILE": str(before_file)})
    try:
        p.start()
        yield Stack(p, after_file, secrets)
    finally:
        p.stop()


def _restart_ingress(stack: Stack, tenants_file: Path) -> None:
    p = stack.pipeline
    p.ingress.stop()
    p.env["AGG_TENANTS_FILE"] = str(tenants_file)
    p.ingress.start(p.env, 90)


def test_each_rule_refuses_a_bet_at_the_callback_and_journals_why(stack: Stack) -> None:
    # under the first file every session opens and plays
    sessions: dict[str, tuple[str, str, str]] = {}
    for case in CASES:
        player = f"e2e-{uuid.uuid4().hex[:10]}"
        opened = stack.open_session(case, player)
        assert opened.status_code == 201, (case.name, opened.text)
        token = opened.json()["session_token"]
        assert answer(stack.callback(case, "authenticate", player, token))[:2] == (200, "OK")
        first = txn()
        accepted = stack.callback(case, "bet", player, token, transaction_id=first, amount=100)
        assert answer(accepted) == (200, "OK", STARTING_BALANCE - 100)
        sessions[case.name] = (player, token, first)

    # the max bet holds already: the entry naming Malta wins over the one for everywhere
    max_case = CASES[-1]
    player, token, _ = sessions[max_case.name]
    over = txn()
    assert answer(stack.callback(max_case, "bet", player, token, transaction_id=over,
                                 amount=MAX_BET_MT + 1))[:2] == (200, "LIMIT_EXCEEDED")  # fmt: skip
    at_max = txn()
    assert answer(stack.callback(max_case, "bet", player, token, transaction_id=at_max,
                                 amount=MAX_BET_MT)) == (
        200, "OK", STARTING_BALANCE - 100 - MAX_BET_MT)  # fmt: skip
    rollback_at_max = stack.callback(max_case, "rollback", player, token, transaction_id=txn(),
                                     reference_transaction_id=at_max)  # fmt: skip
    assert answer(rollback_at_max) == (200, "OK", STARTING_BALANCE - 100)

    _restart_ingress(stack, stack.after_file)

    refused: dict[str, str] = {}
    for case in CASES:
        player, token, first = sessions[case.name]
        auth = answer(stack.callback(case, "authenticate", player, token))[:2]
        expected_auth = "OK" if case.status == "LIMIT_EXCEEDED" else case.status
        assert auth == (200, expected_auth), case.name
        assert answer(stack.callback(case, "balance", player, token))[:2] == (200, "OK")
        bet_id = txn()
        fields = {"transaction_id": bet_id, "amount": case.refused_amount}
        first_answer = answer(stack.callback(case, "bet", player, token, **fields))
        assert first_answer[:2] == (200, case.status), case.name
        # the provider's retry is the same transaction: the same answer, decided once
        assert answer(stack.callback(case, "bet", player, token, **fields)) == first_answer
        # what the player is owed still settles in that session
        win = stack.callback(case, "win", player, token, transaction_id=txn(), amount=250)
        assert answer(win) == (200, "OK", STARTING_BALANCE + 150), case.name
        back = stack.callback(case, "rollback", player, token, transaction_id=txn(),
                              reference_transaction_id=first)  # fmt: skip
        assert answer(back) == (200, "OK", STARTING_BALANCE + 250), case.name
        refused[case.name] = bet_id

    for case in CASES:
        player, _, _ = sessions[case.name]
        bet_id = refused[case.name]
        op = case.operator
        # nothing was debited for the refused bet: the wallet holds start - bet + win + refund
        assert stack.wallet_balance(op, player) == STARTING_BALANCE + 250, case.name
        eventually(lambda op=op, player=player, bet_id=bet_id:
                   len(stack.journal(op, player, bet_id)) == 1)  # fmt: skip
        [(name, payload)] = stack.journal(op, player, bet_id)
        assert name == "BetRejected", case.name
        assert (payload["status"], payload["rule"], payload["command_id"]) == (
            case.status, case.rule, None)  # fmt: skip
        assert stack.transaction(case.operator, player, bet_id) == (
            f"REJECTED:{case.status}", case.rule, case.refused_amount)  # fmt: skip

    # the operator's read API lists the rejection with its rule
    player, _, _ = sessions["maintenance"]
    path = f"/v1/operators/op-alpha/players/{player}/transactions"
    listed = stack.http.get(path, headers=signed_headers(stack.secrets["op-alpha"], "GET", path,
                                                         b""))  # fmt: skip
    assert listed.status_code == 200, listed.text
    rows = {t["transaction_id"]: t for t in listed.json()["transactions"]}
    assert rows[refused["maintenance"]]["rule"] == "provider_maintenance"
    assert rows[refused["maintenance"]]["status"] == "REJECTED:GAME_NOT_ALLOWED"
    assert rows[sessions["maintenance"][2]]["rule"] is None  # the refunded first bet

    # the auditor's trace of a refused bet says why at every step, and has no wallet command
    out, err = io.StringIO(), io.StringIO()
    code = main_audit(["trace", "prov-nova", refused["max bet"], "--json"],
                      settings=stack.pipeline.settings, stdout=out, stderr=err)  # fmt: skip
    assert code == 0, err.getvalue()
    whats = [json.loads(line)["what"] for line in out.getvalue().splitlines()]
    why = f"LIMIT_EXCEEDED (max_bet:EUR:{MAX_BET_MT})"
    requests = [w for w in whats if w.startswith("request")]
    assert len(requests) == 2, whats  # the bet and its retry, both refused by the rule
    assert all(w.endswith(f"amount {MAX_BET_MT + 1} refused {why}") for w in requests), whats
    assert f"event BetRejected {why}" in whats
    assert f"transaction row -> REJECTED:{why}" in whats
    assert not [w for w in whats if w.startswith(("command", "reply"))]


def test_sessions_are_refused_with_their_rule(stack: Stack) -> None:
    """Runs after the first test: the ingress reads the second file."""
    by_name = {c.name: c for c in CASES}
    for case, country, http, status, rule in [
        (by_name["maintenance"], None, 403, "GAME_NOT_ALLOWED", "provider_maintenance"),
        (by_name["game currency"], None, 422, "CURRENCY_NOT_SUPPORTED", "game_currency:EUR"),
        (by_name["restricted game"], None, 403, "GAME_NOT_ALLOWED",
         "game_restricted_in_country:MT"),
        (by_name["max bet"], "US", 403, "GAME_NOT_ALLOWED", "operator_blocked_in_country:US"),
    ]:  # fmt: skip
        response = stack.open_session(case, f"e2e-{uuid.uuid4().hex[:10]}", country)
        assert response.status_code == http, (case.name, response.text)
        assert response.json() == {"status": status, "rule": rule}
