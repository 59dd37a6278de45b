"""The simulated providers speak each protocol as the ingress's adapters read it: a callback
encoded by the simulator's client is parsed back by the adapter into the same callback, and
every canonical status the adapter renders reads back as itself (or its protocol's synonym)."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from agg_config.tenants import Provider
from agg_domain.statuses import Action, Status, WinKind
from agg_ingress.adapters import evolution, pragmatic
from agg_ingress.adapters.base import Accepted, Credentials, Result, WireRequest
from agg_ingress.adapters.canonical import CanonicalAdapter
from agg_ingress.adapters.evolution import EvolutionAdapter
from agg_ingress.adapters.hub88 import Hub88Adapter
from agg_ingress.adapters.pragmatic import PragmaticAdapter
from agg_ingress.protocol import Callback
from agg_ingress.sessions import PlayerRef, issue_player_ref
from agg_simulator.clients import Call, Session, callback_of
from agg_simulator.providers import (
    CanonicalClient,
    EvolutionClient,
    Hub88Client,
    PragmaticClient,
    client_for,
    provider_key_file,
)

SECRET = b"dev-secret-prov-test-0001"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)

CALLBACKS = [
    Callback(Action.BALANCE, "rq-1", "tok", "pl-1", game_id="g-1"),
    Callback(Action.BET, "rq-2", "tok", "pl-1", "tx-1", None, "rnd-1", "g-1", 150, "EUR"),
    Callback(Action.WIN, "rq-3", "tok", "pl-1", "tx-2", None, "rnd-1", "g-1", 0, "EUR", True),
    Callback(Action.ROLLBACK, "rq-4", "tok", "pl-1", "rb-1", "tx-1", "rnd-1", "g-1"),
]


def _parse(adapter: object, credentials: Credentials, provider: str, encoded: tuple) -> object:  # type: ignore[type-arg]
    target, body, headers = encoded
    path, _, query = target.partition("?")
    raw = f"/v1/providers/{provider}/{target}"
    request = WireRequest("POST", path, query, {k.lower(): v for k, v in headers.items()}, body,
                          raw)  # fmt: skip
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


REF = issue_player_ref(b"s" * 32, PlayerRef("op-alpha", "pl-1", "prov-p", "EUR", "real"))
SESSION = Session("op-alpha", "pl-1", "EUR", "g-1", "prov-p", "tok", player_ref=REF)
ROUND = [  # a round as the simulator plays it: the win names its bet, the rollback its amount
    Call(Action.AUTHENTICATE),
    Call(Action.BET, "tx-1", "rnd-1", 150),
    Call(Action.WIN, "tx-2", "rnd-1", 300, True, reference_transaction_id="tx-1"),
    Call(Action.WIN, "tx-3", "rnd-1", 0, True, reference_transaction_id="tx-1"),
    Call(Action.ROLLBACK, "rb-1", "rnd-1", 150, reference_transaction_id="tx-1"),
]

PRAGMATIC_FORWARDED = [  # (what the adapter forwards) transaction id, reference, amount, currency
    (None, None, None, None),
    ("tx-1", None, 150, "EUR"),
    ("tx-2", None, 300, "EUR"),
    ("tx-3", None, 0, "EUR"),
    ("rf:tx-1", "tx-1", None, None),
]
EVOLUTION_FORWARDED = [
    (None, None, None, "EUR"),
    ("tx-1", None, 150, "EUR"),
    ("tx-1:credit", "tx-1", 300, "EUR"),
    ("tx-1:credit", "tx-1", 0, "EUR"),
    ("tx-1:cancel", "tx-1", 150, "EUR"),
]


@pytest.mark.parametrize(("call", "forwarded"),
                         list(zip(ROUND, PRAGMATIC_FORWARDED, strict=True)),
                         ids=lambda c: getattr(getattr(c, "action", ""), "value", ""))  # fmt: skip
def test_pragmatic_client_round_trips_through_the_adapter(
    call: Call, forwarded: tuple[str | None, str | None, int | None, str | None]
) -> None:
    """authenticate carries the session token; every later call the player reference."""
    client = PragmaticClient(SECRET)
    cb = callback_of(SESSION, call, "rq-1")
    parsed = _parse(PragmaticAdapter(), Credentials(secret=SECRET), "prov-p", client.encode(cb))
    assert isinstance(parsed, Accepted), parsed
    got = parsed.callback
    txn, reference, amount, currency = forwarded
    assert (got.action, got.transaction_id, got.reference_transaction_id, got.amount,
            got.currency) == (call.action, txn, reference, amount, currency)  # fmt: skip
    assert client.forwarded_id(cb) == txn
    if call.action is Action.AUTHENTICATE:
        assert (got.session_token, got.player_ref, got.game_id) == ("tok", None, "g-1")
    else:
        assert (got.session_token, got.player_ref) == ("", REF)
        assert got.round_id == "rnd-1"
    if call.action is Action.BET:
        assert got.game_id == "g-1"


@pytest.mark.parametrize(("call", "forwarded"),
                         list(zip(ROUND, EVOLUTION_FORWARDED, strict=True)),
                         ids=lambda c: getattr(getattr(c, "action", ""), "value", ""))  # fmt: skip
def test_evolution_client_round_trips_through_the_adapter(
    call: Call, forwarded: tuple[str | None, str | None, int | None, str | None]
) -> None:
    """Every call carries the sid; a credit and a cancel are forwarded under ids derived
    from their bet's refId."""
    client = EvolutionClient(SECRET.decode())
    cb = callback_of(SESSION, call, "rq-1")
    parsed = _parse(EvolutionAdapter(), Credentials(secret=SECRET), "prov-e", client.encode(cb))
    assert isinstance(parsed, Accepted), parsed
    got = parsed.callback
    txn, reference, amount, currency = forwarded
    assert (got.action, got.transaction_id, got.reference_transaction_id, got.amount,
            got.currency) == (call.action, txn, reference, amount, currency)  # fmt: skip
    assert client.forwarded_id(cb) == txn
    assert (got.session_token, got.player_id, got.request_id) == ("tok", "pl-1", "rq-1")
    if call.action in (Action.BET, Action.WIN):
        assert (got.round_id, got.game_id) == ("rnd-1", "g-1")
    assert got.round_closed is (call.action is Action.WIN)


def test_a_pragmatic_round_is_closed_by_end_round_the_others_by_their_win() -> None:
    client = PragmaticClient(SECRET)
    close = client.end_of_round("rnd-1")
    assert close == "er:rnd-1"
    cb = callback_of(SESSION, Call(Action.WIN, close, "rnd-1", 0, True), "rq-9")
    path, body, headers = client.encode(cb)
    assert path == pragmatic.Method.END_ROUND
    parsed = _parse(PragmaticAdapter(), Credentials(secret=SECRET), "prov-p", (path, body, headers))
    assert isinstance(parsed, Accepted), parsed
    got = parsed.callback
    assert (got.transaction_id, got.amount, got.round_closed) == ("er:rnd-1", 0, True)
    assert client.forwarded_id(cb) == "er:rnd-1"
    for other in (CanonicalClient("p", SECRET), Hub88Client(KEY), EvolutionClient("t")):
        assert other.end_of_round("rnd-1") is None


def test_the_session_steps_answers_read_back() -> None:
    """pragmatic's authenticate answers the reference later calls name the player by;
    evolution's check answers OK for the sid."""
    answered = Result(Status.OK, "EUR", 10_000, extra={"player_ref": REF})
    prag = PragmaticAdapter().render(pragmatic.Context(pragmatic.Method.AUTHENTICATE, True),
                                     answered, Credentials())  # fmt: skip
    got = PragmaticClient(SECRET).decode(prag.http, prag.body, "EUR")
    assert (got.status, got.player_ref, got.balance) == (Status.OK, REF, 10_000)
    evo = EvolutionAdapter().render(evolution.Context("rq-1", "tok", "EUR", Action.AUTHENTICATE),
                                    Result(Status.OK, "EUR", 10_000), Credentials())  # fmt: skip
    assert EvolutionClient("t").decode(evo.http, evo.body, "EUR").status == Status.OK


@pytest.mark.parametrize("status", [Status.OK, Status.INSUFFICIENT_FUNDS, Status.RETRY_LATER,
                                    Status.PLAYER_BLOCKED, Status.SESSION_EXPIRED])  # fmt: skip
def test_answers_read_back_as_the_status_rendered(status: Status) -> None:
    cb = CALLBACKS[1]
    for adapter, client, credentials in (
        (CanonicalAdapter(300), CanonicalClient("p", SECRET), Credentials(secret=SECRET)),
        (Hub88Adapter(), Hub88Client(KEY), Credentials()),
        (PragmaticAdapter(), PragmaticClient(SECRET), Credentials()),
        (EvolutionAdapter(), EvolutionClient("t"), Credentials()),
    ):
        wire = adapter.render(cb, Result(status, "EUR", 12_345), credentials)
        answer = client.decode(wire.http, wire.body, "EUR")
        assert _synonyms(client, answer.status, status), (client.protocol, answer)
        if status is Status.OK:
            assert answer.balance == 12_345


def _synonyms(client: object, read: str, rendered: Status) -> bool:
    """The status read back is the one rendered, or one the protocol writes the same way."""
    if read == rendered:
        return True
    if isinstance(client, PragmaticClient):
        return pragmatic.ERROR.get(read) == pragmatic.ERROR[rendered]
    if isinstance(client, EvolutionClient):
        return evolution.STATUS.get(read) == evolution.STATUS[rendered]
    return False


def test_the_dev_shared_secret_providers_get_their_clients() -> None:
    for protocol, kind in (("pragmatic-v1", PragmaticClient), ("evolution-v1", EvolutionClient)):
        provider = Provider(id="prov-x", name="X", protocol=protocol,
                            secret={"value": "dev-secret-prov-x-000001"})  # fmt: skip
        assert isinstance(client_for(provider), kind)


def test_the_dev_hub88_provider_has_a_key_the_simulator_signs_with() -> None:
    public = provider_key_file("prov-hub").parent / "prov-hub-provider.pub.pem"
    provider = Provider(id="prov-hub", name="Hub", protocol="hub88-v1",
                        public_key=public.read_text())  # fmt: skip
    client = client_for(provider)
    assert isinstance(client, Hub88Client)
    assert client_for(provider.model_copy(update={"id": "prov-nokey"})) is None


BONUS_CALLBACKS = [  # a free spin and its win, a jackpot, a promotion's prize
    Callback(Action.BET, "rq-5", "tok", "pl-1", "tx-5", None, "rnd-5", "g-1", 20, "EUR",
             campaign_id="fs-1"),
    Callback(Action.WIN, "rq-6", "tok", "pl-1", "tx-6", None, "rnd-5", "g-1", 40, "EUR", True,
             campaign_id="fs-1"),
    Callback(Action.WIN, "rq-7", "tok", "pl-1", "tx-7", None, "rnd-7", "g-1", 5_000, "EUR",
             True, win_kind=WinKind.JACKPOT),
    Callback(Action.WIN, "rq-8", "tok", "pl-1", "tx-8", None, "rnd-8", "g-1", 1_000, "EUR",
             True, win_kind=WinKind.PROMO),
]  # fmt: skip


@pytest.mark.parametrize("cb", BONUS_CALLBACKS, ids=lambda c: c.request_id)
def test_canonical_client_carries_free_spins_and_win_kinds(cb: Callback) -> None:
    parsed = _parse(CanonicalAdapter(300), Credentials(secret=SECRET), "prov-t",
                    CanonicalClient("prov-t", SECRET).encode(cb))  # fmt: skip
    assert isinstance(parsed, Accepted) and parsed.callback == cb


@pytest.mark.parametrize(("call", "kind", "campaign"), [
    (Call(Action.BET, "tx-5", "rnd-5", 20, campaign_id="fs-1"), WinKind.REGULAR, "fs-1"),
    (Call(Action.WIN, "tx-6", "rnd-5", 40, True, campaign_id="fs-1"), WinKind.REGULAR, "fs-1"),
    (Call(Action.WIN, "jw:tx-7", "rnd-7", 5_000, True, win_kind=WinKind.JACKPOT),
     WinKind.JACKPOT, None),
    (Call(Action.WIN, "pw:tx-8", "rnd-8", 1_000, True, win_kind=WinKind.PROMO),
     WinKind.PROMO, None),
])  # fmt: skip
def test_pragmatic_client_carries_free_round_bonuses_and_zero_stake_wins(
    call: Call, kind: WinKind, campaign: str | None
) -> None:
    """A free round's bet and result carry ``bonusCode``; a jackpot is ``jackpotWin``, a
    promotion's prize ``promoWin`` (their ids' prefixes say which)."""
    client = PragmaticClient(SECRET)
    cb = callback_of(SESSION, call, "rq-1")
    path, body, headers = client.encode(cb)
    parsed = _parse(PragmaticAdapter(), Credentials(secret=SECRET), "prov-p",
                    (path, body, headers))  # fmt: skip
    assert isinstance(parsed, Accepted), parsed
    got = parsed.callback
    assert (got.action, got.transaction_id, got.amount) == (call.action, call.transaction_id,
                                                            call.amount)  # fmt: skip
    assert (got.win_kind, got.campaign_id) == (kind, campaign)


@pytest.mark.parametrize(("kind", "wire"), [(WinKind.JACKPOT, "JackpotWin"),
                                            (WinKind.PROMO, "RtrMonetaryReward"),
                                            (WinKind.BONUS, "FreeRoundPlayableSpent")])  # fmt: skip
def test_evolution_client_sends_zero_stake_wins_as_promo_payouts(kind: WinKind, wire: str) -> None:
    """A jackpot or a promotion's prize is a ``promo_payout`` in the session's game, read
    back as the same zero-stake win under its ``promo:`` id."""
    client = EvolutionClient(SECRET.decode())
    cb = callback_of(SESSION, Call(Action.WIN, "promo:tx-7", "rnd-7", 5_000, True,
                                   win_kind=kind), "rq-1")  # fmt: skip
    path, body, headers = client.encode(cb)
    assert path.startswith(evolution.PROMO_METHOD + "?")
    assert evolution.decode_answer(body)["promoTransaction"]["type"] == wire
    parsed = _parse(EvolutionAdapter(), Credentials(secret=SECRET), "prov-e", (path, body, headers))
    assert isinstance(parsed, Accepted), parsed
    assert parsed.callback == replace(cb, player_ref=None)  # evolution names it by the sid
    assert client.forwarded_id(cb) == "promo:tx-7"
