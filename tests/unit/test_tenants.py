"""The tenants file: the development file loads and is consistent, and every kind of mistake
is refused with the path of the bad field in ``TenantsError.problems``.

Each bad-input row starts from the development file and changes one thing, so a row fails
for its own reason and no other.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from agg_config.paths import repo_root
from agg_config.tenants import Secret, Tenants, TenantsError, load_tenants, parse_tenants
from agg_domain.currency import is_currency

DEV_FILE = repo_root() / "deploy" / "local" / "aggregator.yaml"
DEV_DATA: dict[str, Any] = yaml.safe_load(DEV_FILE.read_text())

Change = Callable[[dict[str, Any]], None]
EARLY, LATE = "2026-06-01T11:00:00Z", "2026-06-01T13:00:00Z"
WINDOW = {"start": EARLY, "end": LATE}


def changed(change: Change) -> dict[str, Any]:
    data = copy.deepcopy(DEV_DATA)
    change(data)
    return data


def problems_of(data: Any) -> list[str]:
    with pytest.raises(TenantsError) as caught:
        parse_tenants(data, "tenants.yaml")
    assert str(caught.value).startswith("tenants.yaml: invalid tenants file")
    return caught.value.problems


def set_at(path: tuple[Any, ...], value: Any) -> Change:
    def change(data: dict[str, Any]) -> None:
        target = data
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return change


def both(*changes: Change) -> Change:
    def change(data: dict[str, Any]) -> None:
        for c in changes:
            c(data)

    return change


# --- the development file ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def dev() -> Tenants:
    return load_tenants(DEV_FILE)


def test_dev_file_has_at_least_two_operators_and_two_providers(dev: Tenants) -> None:
    assert len(dev.operators) >= 2
    assert len(dev.providers) >= 2
    assert dev.games


def test_every_game_of_the_dev_file_has_a_known_provider(dev: Tenants) -> None:
    provider_ids = {p.id for p in dev.providers}
    assert {g.provider for g in dev.games} <= provider_ids
    for game in dev.games:
        assert dev.provider(game.provider) is not None


def test_every_provider_offered_by_a_dev_operator_exists(dev: Tenants) -> None:
    for op in dev.operators:
        for pid in op.providers:
            assert dev.provider(pid) is not None, (op.id, pid)


def test_dev_ids_are_unique_and_currencies_known(dev: Tenants) -> None:
    for items in (dev.operators, dev.providers, dev.games):
        ids = [item.id for item in items]
        assert len(ids) == len(set(ids))
    for op in dev.operators:
        assert all(is_currency(c) for c in op.currencies), op.currencies


def test_dev_secrets_reveal(dev: Tenants) -> None:
    secrets = [o.secret for o in dev.operators] + [p.secret for p in dev.providers if p.secret]
    for secret in secrets:
        assert len(secret.reveal()) >= 16
    # a provider on a public-key protocol has a key instead of a shared secret
    keyed = [p for p in dev.providers if p.secret is None]
    assert keyed and all(p.public_key for p in keyed)


def test_lookups_by_id(dev: Tenants) -> None:
    first = dev.operators[0]
    assert dev.operator(first.id) is first
    assert dev.provider(dev.providers[0].id) is dev.providers[0]
    assert dev.game(dev.games[0].id) is dev.games[0]
    assert dev.operator("no-such-operator") is None
    assert dev.provider("no-such-provider") is None
    assert dev.game("no-such-game") is None


def test_defaults_of_optional_fields() -> None:
    data = copy.deepcopy(DEV_DATA)
    del data["operators"][1]["wallet"]
    del data["providers"][0]["protocol"]
    data["operators"][1].pop("blocked_countries", None)
    del data["games"]
    tenants = parse_tenants(data)
    assert tenants.operators[1].wallet.mode == "kafka"
    assert tenants.operators[1].wallet.starting_balance == 100_000
    assert tenants.operators[1].wallet.sandbox is False  # never on by default
    assert tenants.operators[1].blocked_countries == []
    assert tenants.providers[0].protocol == "canonical-v1"
    assert tenants.providers[0].enabled is True
    assert tenants.providers[0].round_auto_close_s == 1_800
    assert tenants.games == []


def test_a_providers_round_auto_close_is_read() -> None:
    data = changed(set_at(("providers", 0, "round_auto_close_s"), 2))
    assert parse_tenants(data).providers[0].round_auto_close_s == 2
    week = changed(set_at(("providers", 0, "round_auto_close_s"), 7 * 24 * 3600))
    assert parse_tenants(week).providers[0].round_auto_close_s == 604_800


HTTP_WALLET = {"mode": "http", "url": "https://wallet.example/", "secret": {"env": "WALLET_KEY"}}
PEM_PRIVATE = "-----BEGIN PRIVATE KEY-----\nMIIE...\n-----END PRIVATE KEY-----\n"


def test_http_wallet_with_url_is_accepted() -> None:
    data = changed(set_at(("operators", 0, "wallet"), HTTP_WALLET))
    wallet = parse_tenants(data).operators[0].wallet
    assert wallet.url == "https://wallet.example/"
    assert (wallet.protocol, wallet.timeout_ms, wallet.retry_count_max) == ("canonical-v1", 500, 1)
    assert wallet.call_budget_ms() == 500 * 2 + 50
    assert wallet.secret is not None and "WALLET_KEY" in wallet.secret.describe()


def test_hub88_wallet_with_a_signing_key_is_accepted() -> None:
    hub = {
        "mode": "http",
        "url": "http://127.0.0.1:9186/op",
        "protocol": "hub88-v1",
        "signing_key": {"value": PEM_PRIVATE},
        "timeout_ms": 300,
        "concurrency_max": 4,
    }
    data = changed(set_at(("operators", 0, "wallet"), hub))
    wallet = parse_tenants(data).operators[0].wallet
    assert (wallet.protocol, wallet.concurrency_max) == ("hub88-v1", 4)
    assert PEM_PRIVATE not in repr(wallet)


def test_secret_given_as_environment_variable_is_accepted() -> None:
    data = changed(set_at(("operators", 0, "secret"), {"env": "OP_ALPHA_SECRET"}))
    assert parse_tenants(data).operators[0].secret.env == "OP_ALPHA_SECRET"


def test_tenants_are_frozen(dev: Tenants) -> None:
    with pytest.raises(ValueError, match="frozen"):
        dev.operators[0].id = "other"  # type: ignore[misc]


def test_compliance_fields_are_optional_and_default_to_no_rule(dev: Tenants) -> None:
    assert all(p.maintenance == [] for p in dev.providers)
    assert all(o.maintenance == [] for o in dev.operators)
    assert all(g.currencies is None and g.max_bet == [] for g in dev.games)


def test_compliance_fields_load_from_yaml(tmp_path: Path) -> None:
    data = changed(both(
        set_at(("providers", 0, "maintenance"), [WINDOW]),
        set_at(("operators", 0, "maintenance"), [{"provider": "prov-orbit", **WINDOW}]),
        set_at(("games", 0, "currencies"), ["EUR", "GBP"]),
        set_at(("games", 0, "max_bet"), [{"currency": "EUR", "amount": 500},
                                         {"currency": "EUR", "amount": 100,
                                          "countries": ["DE", "NL"]}]),
    ))  # fmt: skip
    text = yaml.safe_dump(data).replace(f"'{EARLY}'", EARLY).replace(f"'{LATE}'", LATE)
    assert f"start: {EARLY}" in text  # unquoted: YAML reads a timestamp, not a string
    path = tmp_path / "tenants.yaml"
    path.write_text(text)
    tenants = load_tenants(path)
    window = tenants.providers[0].maintenance[0]
    assert window.start == datetime(2026, 6, 1, 11, tzinfo=UTC)
    assert window.end == datetime(2026, 6, 1, 13, tzinfo=UTC)
    assert tenants.operators[0].maintenance[0].provider == "prov-orbit"
    game = tenants.games[0]
    assert game.currencies == ["EUR", "GBP"]
    assert [(m.currency, m.amount, m.countries) for m in game.max_bet] == [
        ("EUR", 500, []), ("EUR", 100, ["DE", "NL"])]  # fmt: skip


# --- bad inputs ---------------------------------------------------------------------------------

# (case, change to the development data, the exact problems reported)
BAD_INPUTS: list[Any] = [
    pytest.param(
        set_at(("operators", 0, "id"), "Op-Alpha"),
        ["operators[0].id: String should match pattern '^[a-z0-9][a-z0-9_-]{0,47}$'"],
        id="upper-case operator id",
    ),
    pytest.param(
        set_at(("providers", 1, "id"), "prov.orbit"),
        ["providers[1].id: String should match pattern '^[a-z0-9][a-z0-9_-]{0,47}$'"],
        id="dot in provider id (would split topic names)",
    ),
    pytest.param(
        set_at(("games", 2, "id"), "-nova"),
        ["games[2].id: String should match pattern '^[a-z0-9][a-z0-9_-]{0,47}$'"],
        id="game id starting with a dash",
    ),
    pytest.param(
        set_at(("operators", 1, "id"), "o" * 49),
        ["operators[1].id: String should match pattern '^[a-z0-9][a-z0-9_-]{0,47}$'"],
        id="operator id of 49 characters",
    ),
    pytest.param(
        set_at(("operators", 1, "providers", 0), "Prov:Nova"),
        ["operators[1].providers[0]: String should match pattern '^[a-z0-9][a-z0-9_-]{0,47}$'"],
        id="bad id in an operator's provider list",
    ),
    pytest.param(
        set_at(("operators", 1, "secret"), {"value": "fifteen-chars!!"}),
        ["operators[1].secret.value: String should have at least 16 characters"],
        id="inline secret of 15 characters",
    ),
    pytest.param(
        set_at(("providers", 0, "secret"), {"value": "dev-secret-x-0001", "env": "PROV_SECRET"}),
        ["providers[0].secret: give exactly one of 'value' or 'env'"],
        id="secret with both value and env",
    ),
    pytest.param(
        set_at(("providers", 1, "secret"), {}),
        ["providers[1].secret: give exactly one of 'value' or 'env'"],
        id="secret with neither value nor env",
    ),
    pytest.param(
        set_at(("operators", 0, "secret"), {"env": "op_alpha_secret"}),
        ["operators[0].secret.env: String should match pattern '^[A-Z_][A-Z0-9_]*$'"],
        id="secret variable name in lower case",
    ),
    pytest.param(
        set_at(("operators", 1, "currencies"), ["EUR", "XYZ"]),
        ["operators[1].currencies[1]: 'XYZ' is not an ISO 4217 currency code"],
        id="unknown currency code",
    ),
    pytest.param(
        set_at(("operators", 1, "currencies"), ["eur"]),
        ["operators[1].currencies[0]: 'eur' is not an ISO 4217 currency code"],
        id="lower-case currency code",
    ),
    pytest.param(
        set_at(("operators", 1, "currencies"), ["EUR", 978]),
        ["operators[1].currencies[1]: Input should be a valid string"],
        id="numeric currency code",
    ),
    pytest.param(
        set_at(("operators", 1, "currencies"), ["EUR", "GBP", "EUR"]),
        ["operators[1].currencies: listed twice"],
        id="duplicate currency",
    ),
    pytest.param(
        set_at(("operators", 0, "currencies"), []),
        ["operators[0].currencies: List should have at least 1 item after validation, not 0"],
        id="no currency",
    ),
    pytest.param(
        set_at(("operators", 0, "blocked_countries"), ["US", "usa"]),
        ["operators[0].blocked_countries[1]: String should match pattern '^[A-Z]{2}$'"],
        id="bad blocked country code",
    ),
    pytest.param(
        set_at(("games", 1, "restricted_countries"), ["gb"]),
        ["games[1].restricted_countries[0]: String should match pattern '^[A-Z]{2}$'"],
        id="bad restricted country code",
    ),
    pytest.param(
        set_at(("operators", 1, "wallet"), {"mode": "http"}),
        ["operators[1].wallet: mode 'http' needs 'url'"],
        id="http wallet without url",
    ),
    pytest.param(
        set_at(("operators", 1, "wallet"), {"mode": "http", "url": ""}),
        ["operators[1].wallet: mode 'http' needs 'url'"],
        id="http wallet with empty url",
    ),
    pytest.param(
        set_at(
            ("operators", 1, "wallet"),
            {"mode": "http", "url": "https://wallet.example/", "sandbox": True},
        ),
        ["operators[1].wallet: 'sandbox' is a scenario set of the reference Kafka wallet"],
        id="sandbox on an http wallet",
    ),
    pytest.param(
        set_at(("operators", 1, "wallet"), {"mode": "http", "url": "https://w.example/"}),
        ["operators[1].wallet: protocol 'canonical-v1' needs 'secret'"],
        id="canonical http wallet without secret",
    ),
    pytest.param(
        set_at(("operators", 1, "wallet"), {**HTTP_WALLET, "protocol": "hub88-v1"}),
        ["operators[1].wallet: protocol 'hub88-v1' needs 'signing_key'"],
        id="hub88 http wallet without signing key",
    ),
    pytest.param(
        set_at(
            ("operators", 1, "wallet"),
            {**HTTP_WALLET, "protocol": "hub88-v1", "signing_key": {"value": "x" * 40}},
        ),
        ["operators[1].wallet: signing_key: a PEM private key (-----BEGIN PRIVATE KEY-----)"],
        id="hub88 signing key not a PEM",
    ),
    pytest.param(
        set_at(("operators", 1, "wallet"), {**HTTP_WALLET, "protocol": "soap-v1"}),
        ["operators[1].wallet.protocol: Input should be 'canonical-v1' or 'hub88-v1'"],
        id="unknown wallet protocol",
    ),
    pytest.param(
        set_at(("operators", 1, "wallet"), {**HTTP_WALLET, "url": "ftp://w.example/"}),
        ["operators[1].wallet: url: http:// or https://, a host, a path; no query or fragment"],
        id="wallet url not http",
    ),
    pytest.param(
        set_at(("operators", 1, "wallet"), {**HTTP_WALLET, "timeout_ms": 5}),
        ["operators[1].wallet.timeout_ms: Input should be greater than or equal to 10"],
        id="wallet timeout too short",
    ),
    pytest.param(
        set_at(("operators", 1, "wallet"), {**HTTP_WALLET, "concurrency_max": 0}),
        ["operators[1].wallet.concurrency_max: Input should be greater than or equal to 1"],
        id="wallet concurrency 0",
    ),
    pytest.param(
        set_at(("operators", 1, "wallet"), {**HTTP_WALLET, "retry_count_max": 6}),
        ["operators[1].wallet.retry_count_max: Input should be less than or equal to 5"],
        id="too many retries",
    ),
    pytest.param(
        set_at(("operators", 0, "wallet"), {"mode": "soap"}),
        ["operators[0].wallet.mode: Input should be 'kafka', 'http' or 'transfer'"],
        id="unknown wallet mode",
    ),
    pytest.param(
        set_at(("operators", 0, "wallet", "starting_balance"), -1),
        ["operators[0].wallet.starting_balance: Input should be greater than or equal to 0"],
        id="negative starting balance",
    ),
    pytest.param(
        set_at(("operators", 0, "wallet", "starting_balance"), 2**63),
        [
            "operators[0].wallet.starting_balance: "
            "Input should be less than or equal to 9223372036854775807"
        ],
        id="starting balance beyond a 64-bit long",
    ),
    pytest.param(
        set_at(("providers", 0, "protocol"), "canonical-v2"),
        [
            "providers[0].protocol: Input should be 'canonical-v1', 'hub88-v1', 'pragmatic-v1'"
            " or 'evolution-v1'"
        ],
        id="unknown provider protocol",
    ),
    pytest.param(
        set_at(("providers", 0, "protocol"), "hub88-v1"),
        ["providers[0]: protocol 'hub88-v1' needs 'public_key'"],
        id="rsa protocol without a public key",
    ),
    pytest.param(
        both(
            set_at(("providers", 0, "protocol"), "pragmatic-v1"),
            set_at(("providers", 0, "secret"), None),
        ),
        ["providers[0]: protocol 'pragmatic-v1' needs 'secret'"],
        id="hash protocol without a secret",
    ),
    pytest.param(
        set_at(("providers", 0, "secret"), None),
        ["providers[0]: protocol 'canonical-v1' needs 'secret'"],
        id="hmac protocol without a secret",
    ),
    pytest.param(
        both(
            set_at(("providers", 0, "protocol"), "evolution-v1"),
            set_at(("providers", 0, "secret"), None),
        ),
        ["providers[0]: protocol 'evolution-v1' needs 'secret'"],
        id="auth token protocol without a secret",
    ),
    pytest.param(
        set_at(("providers", 0, "public_key"), "ssh-rsa AAAA"),
        ["providers[0]: public_key: a PEM public key (-----BEGIN PUBLIC KEY-----)"],
        id="public key not in PEM",
    ),
    pytest.param(
        set_at(("operators", 0, "colour"), "red"),
        ["operators[0].colour: Extra inputs are not permitted"],
        id="unknown key in an operator",
    ),
    pytest.param(
        set_at(("operators", 0, "wallet", "timeout"), 5),
        ["operators[0].wallet.timeout: Extra inputs are not permitted"],
        id="unknown key in a wallet",
    ),
    pytest.param(
        set_at(("jackpots",), []),
        ["jackpots: Extra inputs are not permitted"],
        id="unknown top-level key",
    ),
    pytest.param(
        set_at(("operators",), []),
        ["operators: List should have at least 1 item after validation, not 0"],
        id="no operators",
    ),
    pytest.param(
        lambda data: data.pop("providers"),
        ["providers: Field required"],
        id="providers missing",
    ),
    pytest.param(
        both(
            set_at(("operators", 1, "providers"), ["prov-nova", "prov-zzz"]),
            set_at(("games", 3, "provider"), "prov-zzz"),
        ),
        [
            "operators[1].providers[1]: unknown provider 'prov-zzz'",
            "games[3].provider: unknown provider 'prov-zzz'",
        ],
        id="unknown provider referenced by an operator and by a game",
    ),
    pytest.param(
        both(
            set_at(("operators", 1, "id"), "op-alpha"),
            set_at(("games", 4, "id"), "nova-starfall"),
        ),
        [
            "operators[1].id: 'op-alpha' repeats operators[0]",
            "games[4].id: 'nova-starfall' repeats games[0]",
        ],
        id="duplicate operator and game ids",
    ),
    pytest.param(
        set_at(("operators", 1, "providers"), ["prov-nova", "prov-zzz"]),
        ["operators[1].providers[1]: unknown provider 'prov-zzz'"],
        id="unknown provider referenced by an operator alone",
    ),
    pytest.param(
        set_at(("games", 3, "provider"), "prov-zzz"),
        ["games[3].provider: unknown provider 'prov-zzz'"],
        id="unknown provider referenced by a game alone",
    ),
    pytest.param(
        set_at(("operators", 1, "id"), "op-alpha"),
        ["operators[1].id: 'op-alpha' repeats operators[0]"],
        id="duplicate operator id alone",
    ),
    pytest.param(
        set_at(("games", 4, "id"), "nova-starfall"),
        ["games[4].id: 'nova-starfall' repeats games[0]"],
        id="duplicate game id alone",
    ),
    pytest.param(
        set_at(("providers", 0, "game_url"), "javascript:alert(1)"),
        ["providers[0].game_url: String should match pattern '^https?://[^\\s]+$'"],
        id="game URL that is not http(s)",
    ),
    pytest.param(
        set_at(("games", 0, "code"), "a b"),
        ["games[0].code: String should match pattern '^[A-Za-z0-9_.:-]+$'"],
        id="game code with a space",
    ),
    pytest.param(
        set_at(("providers", 0, "maintenance"), [{"start": LATE, "end": EARLY}]),
        ["providers[0].maintenance[0]: 'end' must be after 'start'"],
        id="maintenance window that ends before it starts",
    ),
    pytest.param(
        set_at(("providers", 0, "maintenance"), [{"start": EARLY, "end": EARLY}]),
        ["providers[0].maintenance[0]: 'end' must be after 'start'"],
        id="empty maintenance window",
    ),
    pytest.param(
        set_at(("providers", 0, "maintenance"),
               [{"start": "2026-06-01T13:00:00+02:00", "end": "2026-06-01T15:00:00+02:00"}]),
        ["providers[0].maintenance[0].start: a UTC timestamp (Z or +00:00)",
         "providers[0].maintenance[0].end: a UTC timestamp (Z or +00:00)"],
        id="maintenance window not in UTC",
    ),
    pytest.param(
        set_at(("providers", 0, "maintenance"), [{"start": "2026-06-01T11:00:00", "end": LATE}]),
        ["providers[0].maintenance[0].start: Input should have timezone info"],
        id="maintenance window without a time zone",
    ),
    pytest.param(
        set_at(("providers", 0, "maintenance"), [{"start": EARLY}]),
        ["providers[0].maintenance[0].end: Field required"],
        id="maintenance window without an end",
    ),
    pytest.param(
        set_at(("operators", 1, "maintenance"), [{"provider": "prov-orbit", **WINDOW}]),
        ["operators[1]: maintenance[0].provider: 'prov-orbit' is not one of the operator's"
         " providers"],
        id="operator maintenance of a provider it does not offer",
    ),
    pytest.param(
        set_at(("operators", 1, "maintenance"), [WINDOW]),
        ["operators[1].maintenance[0].provider: Field required"],
        id="operator maintenance without its provider",
    ),
    pytest.param(
        set_at(("games", 0, "currencies"), []),
        ["games[0].currencies: List should have at least 1 item after validation, not 0"],
        id="game with an empty currency list",
    ),
    pytest.param(
        set_at(("games", 0, "currencies"), ["EUR", "XYZ"]),
        ["games[0].currencies[1]: 'XYZ' is not an ISO 4217 currency code"],
        id="game currency unknown",
    ),
    pytest.param(
        set_at(("games", 0, "currencies"), ["EUR", "EUR"]),
        ["games[0].currencies: listed twice"],
        id="game currency listed twice",
    ),
    pytest.param(
        set_at(("games", 0, "max_bet"), [{"currency": "EUR", "amount": 0}]),
        ["games[0].max_bet[0].amount: Input should be greater than or equal to 1"],
        id="max bet of zero",
    ),
    pytest.param(
        set_at(("games", 0, "max_bet"), [{"currency": "EUR", "amount": 5.0}]),
        ["games[0].max_bet[0].amount: Input should be a valid integer"],
        id="max bet as a float",
    ),
    pytest.param(
        set_at(("games", 0, "max_bet"), [{"currency": "EUR", "amount": "500"}]),
        ["games[0].max_bet[0].amount: Input should be a valid integer"],
        id="max bet as a string",
    ),
    pytest.param(
        set_at(("games", 0, "max_bet"), [{"currency": "EUR", "amount": 2**63}]),
        ["games[0].max_bet[0].amount: Input should be less than or equal to 9223372036854775807"],
        id="max bet beyond a long",
    ),
    pytest.param(
        set_at(("games", 0, "max_bet"),
               [{"currency": "EUR", "amount": 5}, {"currency": "EUR", "amount": 6}]),
        ["games[0]: max_bet[1]: a second maximum for EUR in every country (max_bet[0])"],
        id="two max bets for every country",
    ),
    pytest.param(
        set_at(("games", 0, "max_bet"),
               [{"currency": "EUR", "amount": 5, "countries": ["DE"]},
                {"currency": "EUR", "amount": 6, "countries": ["NL", "DE"]}]),
        ["games[0]: max_bet[1]: a second maximum for EUR in country DE (max_bet[0])"],
        id="two max bets for one country",
    ),
    pytest.param(
        set_at(("games", 0, "max_bet"),
               [{"currency": "EUR", "amount": 5, "countries": ["DE", "DE"]}]),
        ["games[0].max_bet[0].countries: listed twice"],
        id="max bet country listed twice",
    ),
    pytest.param(
        set_at(("games", 0, "max_bet"), [{"currency": "EUR", "amount": 5, "countries": ["de"]}]),
        ["games[0].max_bet[0].countries[0]: String should match pattern '^[A-Z]{2}$'"],
        id="max bet country in lower case",
    ),
    pytest.param(
        both(set_at(("games", 0, "currencies"), ["USD"]),
             set_at(("games", 0, "max_bet"), [{"currency": "EUR", "amount": 5}])),
        ["games[0]: max_bet[0].currency: EUR is not one of the game's currencies"],
        id="max bet in a currency the game is not played in",
    ),
    pytest.param(
        set_at(("providers", 0, "round_auto_close_s"), 0),
        ["providers[0].round_auto_close_s: Input should be greater than or equal to 1"],
        id="rounds that auto-close at once",
    ),
    pytest.param(
        set_at(("providers", 1, "round_auto_close_s"), 7 * 24 * 3600 + 1),
        ["providers[1].round_auto_close_s: Input should be less than or equal to 604800"],
        id="rounds kept open longer than a week",
    ),
    pytest.param(
        set_at(("providers", 0, "round_auto_close_s"), 1.5),
        [
            "providers[0].round_auto_close_s: Input should be a valid integer, got a number with "
            "a fractional part"
        ],
        id="auto-close in fractions of a second",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("change", "expected"), BAD_INPUTS)
def test_bad_input_is_refused_with_the_path_of_the_field(
    change: Change, expected: list[str]
) -> None:
    assert problems_of(changed(change)) == expected


def test_duplicate_provider_id_is_reported_with_its_consequences() -> None:
    # renaming prov-orbit to prov-nova also leaves everything that used prov-orbit dangling
    assert problems_of(changed(set_at(("providers", 1, "id"), "prov-nova"))) == [
        "providers[1].id: 'prov-nova' repeats providers[0]",
        "operators[0].providers[1]: unknown provider 'prov-orbit'",
        "operators[3].providers[1]: unknown provider 'prov-orbit'",
        "games[3].provider: unknown provider 'prov-orbit'",
        "games[4].provider: unknown provider 'prov-orbit'",
    ]


def test_every_field_problem_is_reported_at_once() -> None:
    data = changed(
        both(
            set_at(("operators", 0, "id"), "Bad"),
            set_at(("providers", 1, "secret"), {}),
            set_at(("games", 0, "restricted_countries"), ["x"]),
        )
    )
    assert [p.split(":")[0] for p in problems_of(data)] == [
        "operators[0].id",
        "providers[1].secret",
        "games[0].restricted_countries[0]",
    ]


@pytest.mark.parametrize(
    "data",
    [None, [], ["operators"], "operators: []", 42],
    ids=["null", "empty list", "list", "string", "number"],
)
def test_top_level_that_is_not_a_mapping_is_refused(data: Any) -> None:
    assert problems_of(data) == ["(top level): expected a mapping with operators, providers, games"]


# --- the file -------------------------------------------------------------------------------


def test_invalid_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text("operators: [\n  - id: op-alpha\n")
    with pytest.raises(TenantsError) as caught:
        load_tenants(path)
    [problem] = caught.value.problems
    assert problem.startswith("not valid YAML: ")
    assert str(caught.value).startswith(f"{path}: invalid tenants file")


def test_empty_file_is_refused_as_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text("")
    with pytest.raises(TenantsError) as caught:
        load_tenants(path)
    assert caught.value.problems == [
        "(top level): expected a mapping with operators, providers, games"
    ]
    assert str(caught.value).startswith(f"{path}: ")


def test_field_problem_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump(changed(set_at(("operators", 0, "id"), "Bad"))))
    with pytest.raises(TenantsError) as caught:
        load_tenants(path)
    assert str(caught.value).startswith(f"{path}: invalid tenants file\n  operators[0].id: ")


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda tmp: tmp / "missing.yaml", "No such file or directory"),
        (lambda tmp: tmp, "Is a directory"),
    ],
    ids=["missing", "directory"],
)
def test_unreadable_file_is_refused(
    tmp_path: Path, make: Callable[[Path], Path], reason: str
) -> None:
    path = make(tmp_path)
    with pytest.raises(TenantsError) as caught:
        load_tenants(path)
    assert caught.value.problems == [f"cannot read: {reason}"]
    assert str(caught.value).startswith(f"{path}: ")


def test_tenants_error_is_a_value_error() -> None:
    assert issubclass(TenantsError, ValueError)


# --- secrets ----------------------------------------------------------------------------------


def test_inline_secret_reveals_its_bytes() -> None:
    assert Secret(value="dev-secret-0123456789").reveal() == b"dev-secret-0123456789"


def test_secret_from_set_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGG_TEST_OP_SECRET", "from-the-environment-ü")
    assert Secret(env="AGG_TEST_OP_SECRET").reveal() == "from-the-environment-ü".encode()


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_secret_from_unset_variable_is_a_lookup_error(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("AGG_TEST_OP_SECRET", raising=False)
    else:
        monkeypatch.setenv("AGG_TEST_OP_SECRET", value)
    secret = Secret(env="AGG_TEST_OP_SECRET")
    with pytest.raises(LookupError, match="AGG_TEST_OP_SECRET is not set"):
        secret.reveal()


def test_secret_is_read_when_revealed_not_when_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGG_TEST_OP_SECRET", raising=False)
    secret = Secret(env="AGG_TEST_OP_SECRET")
    monkeypatch.setenv("AGG_TEST_OP_SECRET", "rotated-secret-value")
    assert secret.reveal() == b"rotated-secret-value"
