"""The tenants file: operators, providers and games (``deploy/local/aggregator.yaml`` in dev).

Validated whole, at start-up and by ``aggregator config apply`` (which publishes it to the
config topic every service follows, :mod:`agg_config.document`); every problem is reported
with the path of the bad field (``operators[1].currencies[0]: ...``) so a wrong file never
half-starts a service nor reaches one.
Secrets are given inline (dev only) or as the name of an environment variable that holds them;
an inline value is left out of every repr and :meth:`Secret.describe` names only where it
comes from, so printing a tenant never prints its secret.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from agg_domain.currency import is_currency

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,47}$"
"""Tenant ids appear in topic names (``agg.wallet.commands.<operator_id>``) and keys, so they
are restricted to characters every Kafka client and URL accepts without escaping."""

Identifier = Annotated[str, Field(pattern=ID_PATTERN)]
CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]


def _iso_4217(code: str) -> str:
    if not is_currency(code):
        raise ValueError(f"{code!r} is not an ISO 4217 currency code")
    return code


CurrencyCode = Annotated[str, AfterValidator(_iso_4217)]


class TenantsError(ValueError):
    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"{source}: invalid tenants file\n  " + "\n  ".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class Secret(_Strict):
    """An HMAC secret: inline ``value`` (development) or ``env`` naming a variable."""

    value: str | None = Field(None, min_length=16, repr=False)
    env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$")

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if (self.value is None) == (self.env is None):
            raise ValueError("give exactly one of 'value' or 'env'")
        return self

    def describe(self) -> str:
        """Where the secret comes from, for output; never the secret."""
        if self.value is not None:
            return f"inline value (masked, {len(self.value.encode())} bytes)"
        found = os.environ.get(self.env or "")
        return f"environment variable {self.env} ({'set' if found else 'NOT SET'})"

    def reveal(self) -> bytes:
        if self.value is not None:
            return self.value.encode()
        assert self.env is not None
        found = os.environ.get(self.env)
        if not found:
            raise LookupError(f"secret variable {self.env} is not set")
        return found.encode()


WALLET_URL_PATTERN = re.compile(r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
WALLET_PROTOCOLS = ("canonical-v1", "hub88-v1")
"""Operator-wallet protocols the HTTP wallet bridge speaks (``agg_protocols``)."""


class WalletConfig(_Strict):
    """Where an operator's wallet is: the Kafka topics (``kafka``: the operator, or the
    reference wallet, consumes them), an HTTP seamless wallet the bridge calls (``http``:
    ``docs/operators.md``), or none: a transfer wallet (``transfer``), where the operator
    moves funds into a balance the aggregator holds per player and currency (operator API
    ``.../transfers``) and play is decided against it, with no wallet commands."""

    mode: Literal["kafka", "http", "transfer"] = "kafka"
    url: str | None = Field(
        None,
        description="Seamless-wallet base URL (mode http); the protocol's paths go below it.",
    )
    protocol: Literal["canonical-v1", "hub88-v1"] = Field(
        "canonical-v1", description="The operator-wallet protocol the bridge speaks (mode http)."
    )
    secret: Secret | None = Field(
        None, description="HMAC key of the calls' signatures (canonical-v1)."
    )
    signing_key: Secret | None = Field(
        None, description="PEM private key that signs the calls (hub88-v1)."
    )
    timeout_ms: int = Field(
        500,
        ge=10,
        le=60_000,
        description="Per-call timeout of the bridge. With the retries it must fit in the "
        "saga's wallet_timeout_ms (1,500 ms): the bridge refuses to start otherwise.",
    )
    retry_count_max: int = Field(
        1,
        ge=0,
        le=5,
        description="Resends of a call that failed retryably (timeout, connection, 5xx). "
        "Safe: a resend carries the same command id, which the wallet dedupes.",
    )
    retry_backoff_ms: int = Field(
        50, ge=0, le=10_000, description="Pause before each resend of a call."
    )
    concurrency_max: int = Field(
        32,
        ge=1,
        le=1_024,
        description="Calls in flight to this wallet at most (one player's calls are never "
        "concurrent: they go in order).",
    )
    breaker_failure_count: int = Field(
        5,
        ge=1,
        le=10_000,
        description="Consecutive failed calls that open the circuit breaker: while open, "
        "commands are answered ERROR without calling.",
    )
    breaker_open_ms: int = Field(
        2_000,
        ge=10,
        le=600_000,
        description="How long the breaker stays open before one probe call (half-open).",
    )
    starting_balance: int = Field(
        100_000,
        ge=0,
        le=2**63 - 1,
        description="Balance in minor units the reference wallet gives a player it has not seen.",
    )
    max_stake: int | None = Field(
        None,
        ge=1,
        le=2**63 - 1,
        description="The reference wallets' own stake limit, in minor units (an operator-side "
        "limit): a DEBIT above it is refused LIMIT_REACHED, which the provider hears as "
        "LIMIT_EXCEEDED (journaled with the rule operator_wallet:LIMIT_REACHED). Left out: none.",
    )
    sandbox: bool = Field(
        False,
        description="Provider sandbox (reference Kafka wallet only): players whose id starts "
        "with a scenario prefix (sandbox-insufficient-, sandbox-timeout-, ...) get scripted "
        "answers (docs/sandbox.md). Never for an operator with real players.",
    )

    @model_validator(mode="after")
    def _url_for_http(self) -> WalletConfig:
        if self.mode == "http" and not self.url:
            raise ValueError("mode 'http' needs 'url'")
        if self.sandbox and self.mode != "kafka":
            raise ValueError("'sandbox' is a scenario set of the reference Kafka wallet")
        if self.max_stake is not None and self.mode == "transfer":
            raise ValueError("'max_stake' is a reference wallet's; a transfer wallet has none")
        if self.url and not WALLET_URL_PATTERN.fullmatch(self.url):
            raise ValueError("url: http:// or https://, a host, a path; no query or fragment")
        if self.mode == "http" and self.protocol == "canonical-v1" and self.secret is None:
            raise ValueError("protocol 'canonical-v1' needs 'secret'")
        if self.mode == "http" and self.protocol == "hub88-v1" and self.signing_key is None:
            raise ValueError("protocol 'hub88-v1' needs 'signing_key'")
        if self.signing_key is not None and self.signing_key.value is not None:
            if "PRIVATE KEY-----" not in self.signing_key.value:
                raise ValueError("signing_key: a PEM private key (-----BEGIN PRIVATE KEY-----)")
        return self

    def call_budget_ms(self) -> int:
        """Longest time one command can spend at the bridge: every attempt timing out."""
        return self.timeout_ms * (self.retry_count_max + 1) + (
            self.retry_backoff_ms * self.retry_count_max
        )


class MaintenanceWindow(_Strict):
    """A time when a provider's games are not played: ``[start, end)``, UTC timestamps in
    ISO 8601 (``2026-12-02T06:00:00Z``). Callbacks that start play (authenticate, bet) are
    refused ``GAME_NOT_ALLOWED`` inside it, and no session opens; wins and rollbacks pass."""

    start: AwareDatetime = Field(description="First instant of the window (included), UTC.")
    end: AwareDatetime = Field(description="First instant after the window (excluded), UTC.")

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.utcoffset() != timedelta(0):
            raise ValueError("a UTC timestamp (Z or +00:00)")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> MaintenanceWindow:
        if self.end <= self.start:
            raise ValueError("'end' must be after 'start'")
        return self


class OperatorMaintenance(MaintenanceWindow):
    """A maintenance window of one provider for one operator only."""

    provider: Identifier = Field(description="The provider (one of the operator's providers).")


class Operator(_Strict):
    id: Identifier
    name: str = Field(min_length=1, max_length=200)
    secret: Secret
    currencies: list[CurrencyCode] = Field(min_length=1)
    providers: list[Identifier] = Field(
        min_length=1, description="Providers whose games this operator offers."
    )
    blocked_countries: list[CountryCode] = Field(
        default_factory=list, description="Countries where this operator offers nothing."
    )
    maintenance: list[OperatorMaintenance] = Field(
        default_factory=list,
        description="Maintenance windows of a provider for this operator only (a provider's "
        "own windows, for every operator, are the provider's ``maintenance``).",
    )
    wallet: WalletConfig = Field(default_factory=WalletConfig)

    @field_validator("currencies")
    @classmethod
    def _distinct(cls, values: list[str]) -> list[str]:
        if len(set(values)) != len(values):
            raise ValueError("listed twice")
        return values

    @model_validator(mode="after")
    def _maintained_providers(self) -> Operator:
        for i, window in enumerate(self.maintenance):
            if window.provider not in self.providers:
                raise ValueError(
                    f"maintenance[{i}].provider: {window.provider!r} is not one of the "
                    "operator's providers"
                )
        return self


PROTOCOLS = ("canonical-v1", "hub88-v1", "pragmatic-v1", "evolution-v1")
"""Provider wire protocols the ingress speaks (``agg_ingress.adapters``)."""
SHARED_SECRET_PROTOCOLS = frozenset({"canonical-v1", "pragmatic-v1", "evolution-v1"})
PUBLIC_KEY_PROTOCOLS = frozenset({"hub88-v1"})


ROUND_AUTO_CLOSE_S_DEFAULT = 1_800
ROUND_AUTO_CLOSE_S_MAX = 7 * 24 * 3600


class Provider(_Strict):
    id: Identifier
    name: str = Field(min_length=1, max_length=200)
    secret: Secret | None = Field(
        None, description="The shared secret of an HMAC-signed protocol (canonical-v1)."
    )
    protocol: Literal["canonical-v1", "hub88-v1", "pragmatic-v1", "evolution-v1"] = "canonical-v1"
    public_key: str | None = Field(
        None, description="PEM public key that verifies the provider's requests (hub88-v1)."
    )
    signing_key: Secret | None = Field(
        None, description="PEM private key that signs our answers, where the protocol signs them."
    )
    game_url: str | None = Field(
        None,
        max_length=2_048,
        pattern=r"^https?://[^\s]+$",
        description="The provider's game launcher URL; a launch redirects there with the "
        "session in the protocol's query parameters. Without it (simulated providers) the "
        "ingress answers the launch itself.",
    )
    enabled: bool = Field(
        True,
        description="False: the provider is off for every operator (its callbacks are "
        "answered 404 UNKNOWN_PROVIDER, its games are not offered).",
    )
    maintenance: list[MaintenanceWindow] = Field(
        default_factory=list,
        description="Maintenance windows of the provider, for every operator.",
    )
    round_auto_close_s: int = Field(
        ROUND_AUTO_CLOSE_S_DEFAULT,
        ge=1,
        le=ROUND_AUTO_CLOSE_S_MAX,
        description="Seconds a round of this provider may stay without a transaction before "
        "the saga closes it (RoundAutoClosed); a bet on it is then refused ROUND_CLOSED. "
        "Default 30 minutes, below the reconciliation's one-hour open-round age; at most "
        "7 days, well within the 30 days a settled transaction is remembered.",
    )

    @model_validator(mode="after")
    def _credentials(self) -> Provider:
        if self.protocol in SHARED_SECRET_PROTOCOLS and self.secret is None:
            raise ValueError(f"protocol {self.protocol!r} needs 'secret'")
        if self.protocol in PUBLIC_KEY_PROTOCOLS and not self.public_key:
            raise ValueError(f"protocol {self.protocol!r} needs 'public_key'")
        if self.public_key is not None and "-----BEGIN PUBLIC KEY-----" not in self.public_key:
            raise ValueError("public_key: a PEM public key (-----BEGIN PUBLIC KEY-----)")
        return self

    def shared_secret(self) -> bytes:
        """The secret of a shared-secret protocol (LookupError when it has none)."""
        if self.secret is None:
            raise LookupError(f"provider {self.id} has no shared secret")
        return self.secret.reveal()


class MaxBet(_Strict):
    """The maximum stake of one bet on a game in one currency, in some countries or all."""

    currency: CurrencyCode
    amount: StrictInt = Field(ge=1, le=2**63 - 1, description="Integer minor units.")
    countries: list[CountryCode] = Field(
        default_factory=list,
        description="Countries (ISO 3166-1 alpha-2) where this maximum applies; empty: "
        "everywhere no entry names.",
    )

    @field_validator("countries")
    @classmethod
    def _distinct(cls, values: list[str]) -> list[str]:
        if len(set(values)) != len(values):
            raise ValueError("listed twice")
        return values


class Game(_Strict):
    id: Identifier
    provider: Identifier
    name: str = Field(min_length=1, max_length=200)
    code: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="The provider's own name for the game in its launch URL (default: id).",
    )
    restricted_countries: list[CountryCode] = Field(
        default_factory=list, description="Countries where the game may not be offered."
    )
    currencies: list[CurrencyCode] | None = Field(
        None,
        min_length=1,
        description="When given, the only currencies the game is played in (each must also "
        "be the operator's); when left out, every currency of the operator.",
    )
    max_bet: list[MaxBet] = Field(
        default_factory=list,
        description="Maximum stake of one bet, per currency and jurisdiction; the most "
        "specific entry wins (one naming the session's country, else the one for every "
        "country). A bet above it is refused LIMIT_EXCEEDED.",
    )

    @field_validator("currencies")
    @classmethod
    def _distinct_currencies(cls, values: list[str] | None) -> list[str] | None:
        if values is not None and len(set(values)) != len(values):
            raise ValueError("listed twice")
        return values

    @model_validator(mode="after")
    def _one_max_per_place(self) -> Game:
        seen: dict[tuple[str, str], int] = {}
        for i, entry in enumerate(self.max_bet):
            if self.currencies is not None and entry.currency not in self.currencies:
                raise ValueError(
                    f"max_bet[{i}].currency: {entry.currency} is not one of the game's currencies"
                )
            for country in entry.countries or [""]:
                place = (entry.currency, country)
                if place in seen:
                    where = f"country {country}" if country else "every country"
                    raise ValueError(
                        f"max_bet[{i}]: a second maximum for {entry.currency} in {where} "
                        f"(max_bet[{seen[place]}])"
                    )
                seen[place] = i
        return self


class Tenants(_Strict):
    operators: list[Operator] = Field(min_length=1)
    providers: list[Provider] = Field(min_length=1)
    games: list[Game] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> Tenants:
        problems: list[str] = []
        id_lists = {
            "operators": [o.id for o in self.operators],
            "providers": [p.id for p in self.providers],
            "games": [g.id for g in self.games],
        }
        for kind, ids in id_lists.items():
            seen: dict[str, int] = {}
            for i, item_id in enumerate(ids):
                if item_id in seen:
                    problems.append(f"{kind}[{i}].id: {item_id!r} repeats {kind}[{seen[item_id]}]")
                seen[item_id] = i
        provider_ids = {p.id for p in self.providers}
        for i, op in enumerate(self.operators):
            for j, pid in enumerate(op.providers):
                if pid not in provider_ids:
                    problems.append(f"operators[{i}].providers[{j}]: unknown provider {pid!r}")
        for i, game in enumerate(self.games):
            if game.provider not in provider_ids:
                problems.append(f"games[{i}].provider: unknown provider {game.provider!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def operator(self, operator_id: str) -> Operator | None:
        return next((o for o in self.operators if o.id == operator_id), None)

    def provider(self, provider_id: str) -> Provider | None:
        return next((p for p in self.providers if p.id == provider_id), None)

    def game(self, game_id: str) -> Game | None:
        return next((g for g in self.games if g.id == game_id), None)


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _format(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        msg = re.sub(r"^(Value error|Assertion failed), ", "", e["msg"])
        loc = _location(tuple(e["loc"]))
        if e["type"] == "value_error" and loc == "(top level)":
            # the cross-reference check reports each problem with its own path
            problems.extend(msg.split("; "))
        else:
            problems.append(f"{loc}: {msg}")
    return problems


def parse_tenants(data: Any, source: str = "<tenants>") -> Tenants:
    if not isinstance(data, dict):
        raise TenantsError(
            source, ["(top level): expected a mapping with operators, providers, games"]
        )
    try:
        return Tenants.model_validate(data)
    except ValidationError as err:
        raise TenantsError(source, _format(err)) from None


def load_tenants(path: Path) -> Tenants:
    try:
        text = path.read_text()
    except OSError as exc:
        raise TenantsError(str(path), [f"cannot read: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TenantsError(str(path), [f"not valid YAML: {exc}"]) from None
    return parse_tenants(data, str(path))
