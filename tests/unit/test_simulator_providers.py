"""The simulated providers speak each protocol as the ingress's adapters read it: a callback
encoded by the simulator's client is parsed back by the adapter into the same callback, and
every canonical status the adapter renders reads back as itself (or its protocol's synonym)."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from agg_config.tenants import Provider
from agg_domain.statuses import Action, Status
from agg_ingress.adapters.base import Accepted, Credentials, Result, WireRequest
from agg_ingress.adapters.canonical import CanonicalAdapter
from agg_ingress.adapters.hub88 import Hub88Adapter
from agg_ingress.protocol import Callback
from agg_simulator.providers import CanonicalClient, Hub88Client, client_for, provider_key_file

SECRET = b"dev-secret-prov-test-0001"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)

CALLBACKS = [
    Callback(Action.BALANCE, "rq-1", "tok", "pl-1", game_id="g-1"),
    Callback(Action.BET, "rq-2", "tok", "pl-1", "tx-1", None, "rnd-1", "g-1", 150, "EUR"),
    Callback(Action.WIN, "rq-3", "tok", "pl-1", "tx-2", None, "rnd-1", "g-1", 0, "EUR", True),
    Callback(Action.ROLLBACK, "rq-4", "tok", "pl-1", "rb-1", "tx-1", "rnd-1", "g-1"),
]


def _parse(adapter: object, credentials: Credentials, provider: str, encoded: tuple) -> object:  # type: ignore[type-arg]
    path, body, headers = encoded
    raw = f"/v1/providers/{provider}/{path}"
    request = WireRequest("POST", path, "", {k.lower(): v for k, v in headers.items()}, body, raw)
    return adapter.parse(request, credentials, time.time())  # type: ignore[attr-defined]


@pytest.mark.parametrize("cb", CALLBACKS, ids=lambda c: c.action.value)
def test_canonical_client_round_trips_through_the_adapter(cb: Callback) -> None:
    parsed = _parse(CanonicalAdapter(300), Credentials(secret=SECRET), "prov-t",
                    CanonicalClient("prov-t", SECRET).encode(cb))  # fmt: skip
    assert isinstance(parsed, Accepted) and parsed.callback == cb


@pytest.mark.parametrize("cb", CALLBACKS, ids=lambda c: c.action.value)
def test_hub88_client_round_trips_through_the_adapter(cb: Callback) -> None:
    parsed = _parse(Hub88Adapter(), Credentials(public_key=KEY.public_key()), "prov-h",
                    Hub88Client(KEY).encode(cb))  # fmt: skip
    assert isinstance(parsed, Accepted)
    assert parsed.callback == cb


@pytest.mark.parametrize("status", [Status.OK, Status.INSUFFICIENT_FUNDS, Status.RETRY_LATER,
                                    Status.PLAYER_BLOCKED, Status.SESSION_EXPIRED])  # fmt: skip
def test_answers_read_back_as_the_status_rendered(status: Status) -> None:
    cb = CALLBACKS[1]
    for adapter, client, credentials in (
        (CanonicalAdapter(300), CanonicalClient("p", SECRET), Credentials(secret=SECRET)),
        (Hub88Adapter(), Hub88Client(KEY), Credentials()),
    ):
        wire = adapter.render(cb, Result(status, "EUR", 12_345), credentials)
        answer = client.decode(wire.http, wire.body)
        assert answer.status == status
        if status is Status.OK:
            assert answer.balance == 12_345


def test_the_dev_hub88_provider_has_a_key_the_simulator_signs_with() -> None:
    public = provider_key_file("prov-hub").parent / "prov-hub-provider.pub.pem"
    provider = Provider(id="prov-hub", name="Hub", protocol="hub88-v1",
                        public_key=public.read_text())  # fmt: skip
    client = client_for(provider)
    assert isinstance(client, Hub88Client)
    assert client_for(provider.model_copy(update={"id": "prov-nokey"})) is None
