"""Provider protocol adapters: one per wire protocol, selected by the provider's ``protocol``
in the tenants file (:mod:`agg_ingress.adapters.base` says what an adapter is)."""

from __future__ import annotations

from agg_ingress.adapters.base import ProviderAdapter
from agg_ingress.adapters.canonical import CanonicalAdapter
from agg_ingress.adapters.evolution import EvolutionAdapter
from agg_ingress.adapters.hub88 import Hub88Adapter
from agg_ingress.adapters.pragmatic import PragmaticAdapter


def adapters(signature_window_s: int) -> dict[str, ProviderAdapter]:
    """Every adapter by its protocol name."""
    found: list[ProviderAdapter] = [
        CanonicalAdapter(signature_window_s),
        Hub88Adapter(),
        PragmaticAdapter(),
        EvolutionAdapter(),
    ]
    return {a.protocol: a for a in found}
