"""Compliance rules of play: where a game may be played, by whom, in which currency, up to
which stake, and when its provider is open. Pure: the tenants file is compiled once into a
:class:`Rules` (``agg_config.compliance.rules_of``), and each check is a function of that
object, the session's claims, the callback and ``now_ms``. Nothing here reads a clock.

A check answers ``None`` (allowed) or a :class:`Refusal`: the status the provider hears and
the rule that refused, a short stable text an auditor reads in the journal (``BetRejected``
``rule``). The rules, in precedence order (the first that fails is the answer):

==============================  =====================  ====================================
rule                            status                 when
==============================  =====================  ====================================
``unknown_operator``            ``GAME_NOT_ALLOWED``   the operator left the tenants file
``unknown_game``                ``GAME_NOT_ALLOWED``   the game left it, or is another
                                                       provider's
``provider_disabled``           ``GAME_NOT_ALLOWED``   the provider's ``enabled`` is false
``provider_not_offered``        ``GAME_NOT_ALLOWED``   not in the operator's ``providers``
``provider_maintenance``        ``GAME_NOT_ALLOWED``   inside a maintenance window of the
                                                       provider, or of the provider for
                                                       this operator
``operator_blocked_in_country:  ``GAME_NOT_ALLOWED``   the session's country is in the
XX``                                                   operator's ``blocked_countries``
``game_restricted_in_country:   ``GAME_NOT_ALLOWED``   ... in the game's
XX``                                                   ``restricted_countries``
``operator_currency:CCC``       ``CURRENCY_MISMATCH``  not one of the operator's currencies
``game_currency:CCC``           ``CURRENCY_MISMATCH``  the game lists currencies, not this
``max_bet:CCC:N``               ``LIMIT_EXCEEDED``     a bet above the game's maximum N
                                                       (minor units) for the currency and
                                                       the session's country
==============================  =====================  ====================================

Which actions the rules refuse (:meth:`Rules.check`): a BET all of them; an AUTHENTICATE
every rule but the max bet (it starts play: a game that may not be played is not opened);
BALANCE, WIN and ROLLBACK never (a balance moves no money and a provider reads it while
settling; a win or a rollback is money the player is owed, whatever the rules say now).

A maintenance window is ``[start, end)``: a callback at ``start`` is refused, one at
``end`` is not. A session without a country (a callback authorised by a player reference,
which carries none) skips the two country rules; its country was checked when it opened.
A callback that names no game (an authenticate through a player reference) skips the game's
rules; a bet always names its game.

The max bet of a game is a list of entries ``(currency, amount, countries)``; the most
specific entry wins: one that names the session's country, else the one for every country
(``countries`` empty), else there is no maximum for that currency.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agg_domain.statuses import Action, Status

REFUSAL_STATUSES = frozenset({Status.GAME_NOT_ALLOWED, Status.CURRENCY_MISMATCH,
                              Status.LIMIT_EXCEEDED})  # fmt: skip
"""The statuses a rule refuses with (a refusal carried on a request is one of them)."""
EVERYWHERE = ""
"""The country key of a max bet entry that names no country."""


@dataclass(frozen=True)
class Refusal:
    """A callback refused by a rule: the status answered and the rule, for the journal."""

    status: Status
    rule: str


@dataclass(frozen=True)
class Window:
    """A maintenance window, ``[start_ms, end_ms)`` in unix milliseconds (UTC)."""

    start_ms: int
    end_ms: int

    def covers(self, now_ms: int) -> bool:
        return self.start_ms <= now_ms < self.end_ms


@dataclass(frozen=True)
class GameRules:
    provider_id: str
    restricted_countries: frozenset[str] = frozenset()
    currencies: frozenset[str] | None = None
    """None: every currency of the operator; else only these."""
    max_bet: Mapping[tuple[str, str], int] = field(default_factory=dict)
    """Maximum stake in minor units by (currency, country); country :data:`EVERYWHERE` for
    the entry that names none."""


@dataclass(frozen=True)
class OperatorRules:
    providers: frozenset[str]
    blocked_countries: frozenset[str] = frozenset()
    currencies: frozenset[str] = frozenset()
    maintenance: Mapping[str, tuple[Window, ...]] = field(default_factory=dict)
    """This operator's own maintenance windows of a provider, by provider id."""


@dataclass(frozen=True)
class ProviderRules:
    enabled: bool = True
    maintenance: tuple[Window, ...] = ()


def _in_window(windows: tuple[Window, ...], now_ms: int) -> bool:
    return any(w.covers(now_ms) for w in windows)


@dataclass(frozen=True)
class Rules:
    """The rules of one tenants file, as lookups built once (the hot path reads dicts and
    sets only). Swapping the tenants file swaps this object."""

    operators: Mapping[str, OperatorRules]
    providers: Mapping[str, ProviderRules]
    games: Mapping[str, GameRules]

    def max_bet(self, game_id: str, currency: str, country: str) -> int | None:
        """The most specific maximum stake of ``game_id`` in ``currency`` for ``country``."""
        game = self.games.get(game_id)
        if game is None or not game.max_bet:
            return None
        if country:
            specific = game.max_bet.get((currency, country))
            if specific is not None:
                return specific
        return game.max_bet.get((currency, EVERYWHERE))

    def play_refusal(self, *, operator_id: str, provider_id: str, game_id: str, country: str,
                     currency: str, now_ms: int) -> Refusal | None:  # fmt: skip
        """Why this session may not play now (every rule but the max bet); None if it may."""
        operator = self.operators.get(operator_id)
        if operator is None:
            return Refusal(Status.GAME_NOT_ALLOWED, "unknown_operator")
        game = self.games.get(game_id) if game_id else None
        if game_id and (game is None or game.provider_id != provider_id):
            return Refusal(Status.GAME_NOT_ALLOWED, "unknown_game")
        provider = self.providers.get(provider_id)
        if provider is None or not provider.enabled:
            return Refusal(Status.GAME_NOT_ALLOWED, "provider_disabled")
        if provider_id not in operator.providers:
            return Refusal(Status.GAME_NOT_ALLOWED, "provider_not_offered")
        if _in_window(provider.maintenance, now_ms) or _in_window(
            operator.maintenance.get(provider_id, ()), now_ms
        ):
            return Refusal(Status.GAME_NOT_ALLOWED, "provider_maintenance")
        if country and country in operator.blocked_countries:
            return Refusal(Status.GAME_NOT_ALLOWED, f"operator_blocked_in_country:{country}")
        if game is not None and country and country in game.restricted_countries:
            return Refusal(Status.GAME_NOT_ALLOWED, f"game_restricted_in_country:{country}")
        if currency not in operator.currencies:
            return Refusal(Status.CURRENCY_MISMATCH, f"operator_currency:{currency}")
        if game is not None and game.currencies is not None and currency not in game.currencies:
            return Refusal(Status.CURRENCY_MISMATCH, f"game_currency:{currency}")
        return None

    def bet_refusal(self, *, operator_id: str, provider_id: str, game_id: str, country: str,
                    currency: str, amount: int, now_ms: int) -> Refusal | None:  # fmt: skip
        """Why this bet is refused (every rule); None if it is allowed."""
        refusal = self.play_refusal(operator_id=operator_id, provider_id=provider_id,
                                    game_id=game_id, country=country, currency=currency,
                                    now_ms=now_ms)  # fmt: skip
        if refusal is not None:
            return refusal
        limit = self.max_bet(game_id, currency, country)
        if limit is not None and amount > limit:
            return Refusal(Status.LIMIT_EXCEEDED, f"max_bet:{currency}:{limit}")
        return None

    def check(self, action: Action, *, operator_id: str, provider_id: str, game_id: str,
              country: str, currency: str, amount: int | None,
              now_ms: int) -> Refusal | None:  # fmt: skip
        """The rules of one callback (see the module's doc for which actions they refuse)."""
        if action is Action.BET:
            return self.bet_refusal(operator_id=operator_id, provider_id=provider_id,
                                    game_id=game_id, country=country, currency=currency,
                                    amount=amount or 0, now_ms=now_ms)  # fmt: skip
        if action is Action.AUTHENTICATE:
            return self.play_refusal(operator_id=operator_id, provider_id=provider_id,
                                     game_id=game_id, country=country, currency=currency,
                                     now_ms=now_ms)  # fmt: skip
        return None
