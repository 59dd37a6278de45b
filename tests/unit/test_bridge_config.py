"""What the bridge and the reference HTTP wallet refuse to start with (exit 2): an operator
whose call budget could outlast the saga's wait for the reply, no HTTP operator, two
operators on one wallet path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from agg_bridge.service import BridgeService, budget_problem, http_operators
from agg_config.settings import Settings
from agg_config.tenants import Tenants, parse_tenants
from agg_httpwallet.app import mounts_of

DEV = yaml.safe_load(
    (Path(__file__).parents[2] / "deploy" / "local" / "aggregator.yaml").read_text()
)


def tenants(drop_http: bool = False, **wallet: Any) -> Tenants:
    data = copy.deepcopy(DEV)
    if drop_http:
        data["operators"] = [o for o in data["operators"] if o["wallet"]["mode"] != "http"]
    else:
        gamma = next(o for o in data["operators"] if o["id"] == "op-gamma")
        gamma["wallet"].update(wallet)
    return parse_tenants(data)


@pytest.mark.parametrize(
    ("wallet", "budget_ms", "fits"),
    [
        ({"timeout_ms": 700, "retry_count_max": 1, "retry_backoff_ms": 0}, 1_400, True),
        ({"timeout_ms": 700, "retry_count_max": 1, "retry_backoff_ms": 1}, 1_401, False),
        ({"timeout_ms": 1_400, "retry_count_max": 0}, 1_400, True),
        ({"timeout_ms": 1_401, "retry_count_max": 0}, 1_401, False),
        ({"timeout_ms": 400, "retry_count_max": 2, "retry_backoff_ms": 50}, 1_300, True),
        ({"timeout_ms": 500, "retry_count_max": 1, "retry_backoff_ms": 50}, 1_050, True),
    ],
)
def test_the_call_budget_must_fit_the_saga_wallet_timeout(
    wallet: dict[str, Any], budget_ms: int, fits: bool
) -> None:
    gamma = tenants(**wallet).operator("op-gamma")
    assert gamma is not None
    assert gamma.wallet.call_budget_ms() == budget_ms
    problem = budget_problem(gamma, 1_500)
    assert (problem is None) is fits
    if problem is not None:
        assert f"{budget_ms} ms" in problem and "wallet_timeout_ms (1500)" in problem


def test_the_bridge_refuses_an_unfit_budget_before_it_connects() -> None:
    with pytest.raises(ValueError, match="op-gamma: timeout_ms"):
        BridgeService(Settings(wallet_timeout_ms=1_500), tenants(timeout_ms=2_000))


def test_nothing_to_bridge_is_refused() -> None:
    with pytest.raises(ValueError, match="no operator with wallet mode 'http'"):
        BridgeService(Settings(), tenants(drop_http=True))
    with pytest.raises(ValueError, match="not HTTP-wallet operators"):
        http_operators(tenants(), ["op-alpha"])
    assert [o.id for o in http_operators(tenants(), None)] == ["op-gamma"]


def test_the_http_wallet_refuses_two_operators_on_one_path() -> None:
    data = copy.deepcopy(DEV)
    gamma = next(o for o in data["operators"] if o["id"] == "op-gamma")
    twin = copy.deepcopy(gamma)
    twin["id"] = "op-twin"
    data["operators"].append(twin)
    with pytest.raises(ValueError, match="share the path '/op-gamma'"):
        mounts_of(parse_tenants(data))
    with pytest.raises(ValueError, match="no operator with wallet mode 'http'"):
        mounts_of(tenants(drop_http=True))
    (mount,) = mounts_of(tenants())
    assert (mount.base_path, mount.protocol.protocol) == ("/op-gamma", "canonical-v1")
