"""The compliance rules of play (``agg_domain.compliance``), compiled from a tenants file
(``agg_config.compliance.rules_of``): every rule refuses with its status and rule text, in
precedence order; the most specific max bet wins; maintenance windows at their edges; which
actions each rule refuses."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from agg_config.compliance import rules_of
from agg_config.tenants import parse_tenants
from agg_domain.compliance import Refusal, Rules
from agg_domain.statuses import Action, Status

G, C, L = Status.GAME_NOT_ALLOWED, Status.CURRENCY_MISMATCH, Status.LIMIT_EXCEEDED


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


NOW = ms("2026-06-01T12:00:00+00:00")
SECRET = {"value": "0123456789abcdef-secret"}

TENANTS = parse_tenants(
    {
        "operators": [
            {"id": "op-a", "name": "A", "secret": SECRET, "currencies": ["EUR", "USD", "GBP"],
             "providers": ["prov-1", "prov-2", "prov-off"], "blocked_countries": ["US"],
             "maintenance": [{"provider": "prov-2", "start": "2026-06-01T11:00:00Z",
                              "end": "2026-06-01T13:00:00Z"}]},
            {"id": "op-b", "name": "B", "secret": SECRET, "currencies": ["EUR"],
             "providers": ["prov-1", "prov-2"]},
        ],
        "providers": [
            {"id": "prov-1", "name": "One", "secret": SECRET,
             "maintenance": [{"start": "2026-07-01T00:00:00Z", "end": "2026-07-01T02:00:00Z"}]},
            {"id": "prov-2", "name": "Two", "secret": SECRET},
            {"id": "prov-3", "name": "Three", "secret": SECRET},
            {"id": "prov-off", "name": "Off", "secret": SECRET, "enabled": False},
        ],
        "games": [
            {"id": "slots", "provider": "prov-1", "name": "Slots",
             "restricted_countries": ["GB"],
             "max_bet": [{"currency": "EUR", "amount": 500},
                         {"currency": "EUR", "amount": 100, "countries": ["DE", "NL"]},
                         {"currency": "USD", "amount": 300, "countries": ["CA"]}]},
            {"id": "euro-only", "provider": "prov-1", "name": "Euro", "currencies": ["EUR"]},
            {"id": "two-game", "provider": "prov-2", "name": "Two"},
            {"id": "three-game", "provider": "prov-3", "name": "Three"},
            {"id": "off-game", "provider": "prov-off", "name": "Off"},
        ],
    }
)  # fmt: skip
RULES = rules_of(TENANTS)


def bet(rules: Rules = RULES, **change: Any) -> Refusal | None:
    args: dict[str, Any] = {
        "operator_id": "op-a",
        "provider_id": "prov-1",
        "game_id": "slots",
        "country": "FR",
        "currency": "EUR",
        "amount": 100,
        "now_ms": NOW,
    }
    args.update(change)
    action = args.pop("action", Action.BET)
    return rules.check(action, **args)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, None),
        ({"operator_id": "op-gone"}, Refusal(G, "unknown_operator")),
        ({"game_id": "no-such-game"}, Refusal(G, "unknown_game")),
        ({"game_id": "two-game"}, Refusal(G, "unknown_game")),  # another provider's game
        ({"provider_id": "prov-off", "game_id": "off-game"}, Refusal(G, "provider_disabled")),
        ({"operator_id": "op-b", "provider_id": "prov-3", "game_id": "three-game"},
         Refusal(G, "provider_not_offered")),
        ({"provider_id": "prov-2", "game_id": "two-game"}, Refusal(G, "provider_maintenance")),
        ({"operator_id": "op-b", "provider_id": "prov-2", "game_id": "two-game"}, None),
        ({"now_ms": ms("2026-07-01T01:00:00+00:00")}, Refusal(G, "provider_maintenance")),
        ({"country": "US"}, Refusal(G, "operator_blocked_in_country:US")),
        ({"country": "GB"}, Refusal(G, "game_restricted_in_country:GB")),
        ({"operator_id": "op-b", "country": "US"}, None),
        ({"currency": "JPY"}, Refusal(C, "operator_currency:JPY")),
        ({"game_id": "euro-only", "currency": "USD"}, Refusal(C, "game_currency:USD")),
        ({"game_id": "euro-only", "currency": "EUR", "amount": 10**12}, None),
        ({"amount": 501}, Refusal(L, "max_bet:EUR:500")),
        ({"amount": 500}, None),
        # precedence: the game question before the currency, the currency before the stake
        ({"country": "GB", "currency": "JPY", "amount": 10**9},
         Refusal(G, "game_restricted_in_country:GB")),
        ({"currency": "JPY", "amount": 10**9}, Refusal(C, "operator_currency:JPY")),
        ({"provider_id": "prov-2", "game_id": "two-game", "country": "US"},
         Refusal(G, "provider_maintenance")),
        ({"country": "US", "currency": "JPY"}, Refusal(G, "operator_blocked_in_country:US")),
        # a session without a country (a player reference) skips the country rules
        ({"country": ""}, None),
        ({"country": "", "amount": 501}, Refusal(L, "max_bet:EUR:500")),
    ],
)  # fmt: skip
def test_every_rule_refuses_a_bet_with_its_status_and_rule(
    change: dict[str, Any], expected: Refusal | None
) -> None:
    assert bet(**change) == expected


@pytest.mark.parametrize(
    ("country", "currency", "amount", "expected"),
    [
        ("FR", "EUR", 500, None),  # everywhere: 500
        ("FR", "EUR", 501, "max_bet:EUR:500"),
        ("DE", "EUR", 100, None),  # the entry naming DE wins over the one for everywhere
        ("DE", "EUR", 101, "max_bet:EUR:100"),
        ("NL", "EUR", 101, "max_bet:EUR:100"),
        ("CA", "USD", 300, None),
        ("CA", "USD", 301, "max_bet:USD:300"),
        ("FR", "USD", 10**15, None),  # no entry for USD in FR: no maximum
        ("DE", "GBP", 10**15, None),
    ],
)
def test_the_most_specific_max_bet_wins(
    country: str, currency: str, amount: int, expected: str | None
) -> None:
    refused = bet(country=country, currency=currency, amount=amount)
    assert refused == (Refusal(L, expected) if expected else None)


def test_max_bet_lookup() -> None:
    assert RULES.max_bet("slots", "EUR", "FR") == 500
    assert RULES.max_bet("slots", "EUR", "DE") == 100
    assert RULES.max_bet("slots", "EUR", "") == 500  # no country: the entry for everywhere
    assert RULES.max_bet("slots", "USD", "CA") == 300
    assert RULES.max_bet("slots", "USD", "FR") is None
    assert RULES.max_bet("euro-only", "EUR", "FR") is None
    assert RULES.max_bet("no-such-game", "EUR", "FR") is None


@pytest.mark.parametrize(
    ("at", "in_maintenance"),
    [
        ("2026-06-01T10:59:59.999+00:00", False),
        ("2026-06-01T11:00:00+00:00", True),  # the start is in the window
        ("2026-06-01T12:59:59.999+00:00", True),
        ("2026-06-01T13:00:00+00:00", False),  # the end is not
    ],
)
def test_an_operators_maintenance_window_at_its_edges(at: str, in_maintenance: bool) -> None:
    refused = bet(provider_id="prov-2", game_id="two-game", now_ms=ms(at))
    assert refused == (Refusal(G, "provider_maintenance") if in_maintenance else None)
    # the window is op-a's: op-b plays on
    assert bet(operator_id="op-b", provider_id="prov-2", game_id="two-game", now_ms=ms(at)) is None


@pytest.mark.parametrize(
    ("at", "in_maintenance"),
    [
        ("2026-06-30T23:59:59.999+00:00", False),
        ("2026-07-01T00:00:00+00:00", True),
        ("2026-07-01T01:59:59.999+00:00", True),
        ("2026-07-01T02:00:00+00:00", False),
    ],
)
def test_a_providers_maintenance_window_holds_for_every_operator(
    at: str, in_maintenance: bool
) -> None:
    for operator in ("op-a", "op-b"):
        refused = bet(operator_id=operator, now_ms=ms(at))
        assert refused == (Refusal(G, "provider_maintenance") if in_maintenance else None)


def test_authenticate_is_refused_by_the_rules_of_play_but_not_the_max_bet() -> None:
    auth = {"action": Action.AUTHENTICATE, "amount": None}
    assert bet(**auth) is None
    assert bet(**auth, country="GB") == Refusal(G, "game_restricted_in_country:GB")
    assert bet(**auth, provider_id="prov-2", game_id="two-game") == Refusal(
        G, "provider_maintenance"
    )
    assert bet(**auth, game_id="euro-only", currency="USD") == Refusal(C, "game_currency:USD")
    assert bet(action=Action.AUTHENTICATE, amount=10**12) is None
    # an authenticate that names no game (a player reference) skips the game's rules only
    assert bet(**auth, game_id="", country="GB") is None
    assert bet(**auth, game_id="", currency="JPY") == Refusal(C, "operator_currency:JPY")


@pytest.mark.parametrize("action", [Action.BALANCE, Action.WIN, Action.ROLLBACK])
def test_balance_win_and_rollback_are_never_refused(action: Action) -> None:
    for change in ({"country": "GB"}, {"currency": "JPY"}, {"amount": 10**9},
                   {"provider_id": "prov-2", "game_id": "two-game"},
                   {"operator_id": "op-gone"}):  # fmt: skip
        assert bet(action=action, **change) is None


def test_rules_are_built_once_per_tenants_object_and_follow_it() -> None:
    data = TENANTS.model_dump(mode="json")
    data["games"][0]["max_bet"] = [{"currency": "EUR", "amount": 50, "countries": []}]
    data["providers"][1]["maintenance"] = []
    for op in data["operators"]:
        op["secret"] = SECRET
        op["maintenance"] = []
    for p in data["providers"]:
        p["secret"] = SECRET
    swapped = rules_of(parse_tenants(data))
    assert bet(swapped, amount=51) == Refusal(L, "max_bet:EUR:50")
    assert bet(swapped, provider_id="prov-2", game_id="two-game") is None
    assert bet(amount=51) is None  # the first object's rules are untouched
