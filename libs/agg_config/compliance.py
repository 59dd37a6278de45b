"""The tenants file compiled into the compliance :class:`~agg_domain.compliance.Rules`: once
per :class:`~agg_config.tenants.Tenants` object, so that the checks on the callbacks' hot
path read prepared lookups only. Whoever swaps the tenants file swaps its rules with it."""

from __future__ import annotations

from datetime import datetime

from agg_config.tenants import MaintenanceWindow, Tenants
from agg_domain.compliance import (
    EVERYWHERE,
    GameRules,
    OperatorRules,
    ProviderRules,
    Rules,
    Window,
)


def _ms(at: datetime) -> int:
    return int(at.timestamp()) * 1000 + at.microsecond // 1000


def _window(w: MaintenanceWindow) -> Window:
    return Window(_ms(w.start), _ms(w.end))


def rules_of(tenants: Tenants) -> Rules:
    operators = {}
    for op in tenants.operators:
        maintenance: dict[str, list[Window]] = {}
        for w in op.maintenance:
            maintenance.setdefault(w.provider, []).append(_window(w))
        operators[op.id] = OperatorRules(
            providers=frozenset(op.providers),
            blocked_countries=frozenset(op.blocked_countries),
            currencies=frozenset(op.currencies),
            maintenance={p: tuple(ws) for p, ws in maintenance.items()},
        )
    providers = {
        p.id: ProviderRules(p.enabled, tuple(_window(w) for w in p.maintenance))
        for p in tenants.providers
    }
    games = {}
    for g in tenants.games:
        max_bet = {
            (entry.currency, country): entry.amount
            for entry in g.max_bet
            for country in (entry.countries or [EVERYWHERE])
        }
        games[g.id] = GameRules(
            provider_id=g.provider,
            restricted_countries=frozenset(g.restricted_countries),
            currencies=frozenset(g.currencies) if g.currencies is not None else None,
            max_bet=max_bet,
        )
    return Rules(operators=operators, providers=providers, games=games)
