"""Free-spin campaigns in the saga decider: a table of cases (grant, free spins, their
refusals in order, wins, rollbacks, cancel, expiry, duplicates), then a property-based run
with many operators (seamless and transfer wallets), players and providers at once, the same
campaign, transaction and round ids reused across them, and time moving past expiries.

Invariants checked against the journal and the commands: a free spin never debits (no
wallet command for it, no held balance moved); spins played never exceed spins granted and
the campaign's ``spins_left`` is what the journal folds to; no free spin is accepted at or
after its campaign's expiry or after its cancel; a campaign's win is credited once, as a
BONUS win; no event id is shared between players."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agg_domain.saga import (
    SEAMLESS,
    TRANSFER,
    Answer,
    CampaignGrant,
    CampaignState,
    Command,
    Event,
    PlayerState,
    Reply,
    Request,
    SagaConfig,
    Tick,
    decide,
    next_due_ms,
)
from agg_domain.statuses import Action, CommandKind, ReplyStatus, Status

CONFIG = SagaConfig()
T0 = 1_000_000
HOUR = 3_600_000


def req(action: Action, *, op: str = "op-1", player: str = "pl-1", provider: str = "prov-a",
        txn: str | None = "t1", amount: int | None = 100, game: str | None = "g1",
        round_id: str | None = "r1", currency: str = "EUR", campaign_id: str | None = None,
        campaign: CampaignGrant | None = None, wallet: str = SEAMLESS, ref: str | None = None,
        rid: str = "rq-1", mode: str = "real", win_kind: str = "REGULAR") -> Request:  # fmt: skip
    return Request(
        request_id=rid, correlation_id=f"c-{rid}", provider_id=provider, operator_id=op,
        player_id=player, action=action, currency=currency, received_at_ms=T0,
        transaction_id=txn, reference_transaction_id=ref, round_id=round_id, game_id=game,
        amount=amount, wallet=wallet, campaign=campaign, campaign_id=campaign_id, mode=mode,
        win_kind=win_kind,
    )  # fmt: skip


def grant(cid: str = "cmp-1", *, spins: int = 2, bet_value: int = 100,
          expires_at_ms: int = T0 + HOUR, games: tuple[str, ...] = ("g1", "g2"),
          **kw: Any) -> Request:  # fmt: skip
    g = CampaignGrant(cid, games, spins, bet_value, expires_at_ms)
    kw.setdefault("rid", f"grant-{cid}")
    return req(
        Action.CAMPAIGN_GRANT,
        txn=cid,
        amount=None,
        game=None,
        round_id=None,
        campaign_id=cid,
        campaign=g,
        **kw,
    )


def cancel(cid: str = "cmp-1", **kw: Any) -> Request:
    kw.setdefault("rid", f"cancel-{cid}")
    return req(
        Action.CAMPAIGN_CANCEL,
        provider="",
        txn=cid,
        amount=None,
        game=None,
        round_id=None,
        campaign_id=cid,
        **kw,
    )


def spin(txn: str = "s1", cid: str = "cmp-1", **kw: Any) -> Request:
    kw.setdefault("rid", f"spin-{txn}")
    return req(Action.BET, txn=txn, campaign_id=cid, **kw)


def run(state: PlayerState, *messages: Request | Tick,
        now: int = T0) -> tuple[PlayerState, list[object]]:  # fmt: skip
    outputs: list[object] = []
    for m in messages:
        d = decide(state, m, now, CONFIG)
        state = d.state
        outputs += d.outputs
    return state, outputs


def answers(outputs: list[object]) -> list[Answer]:
    return [o for o in outputs if isinstance(o, Answer)]


def events(outputs: list[object]) -> list[Event]:
    return [o for o in outputs if isinstance(o, Event)]


def fresh(op: str = "op-1", player: str = "pl-1") -> PlayerState:
    return PlayerState(op, player)


# --- the table -----------------------------------------------------------------------------


def test_grant_answers_spins_and_journals_once() -> None:
    state, out = run(fresh(), grant())
    (a,) = answers(out)
    assert (a.status, a.amount) == (Status.OK, 2)
    (e,) = events(out)
    assert e.name == "CampaignGranted" and e.fields["spins_left"] == 2
    assert e.fields["games"] == ["g1", "g2"] and e.fields["expires_at"] == T0 + HOUR
    assert state.campaigns["cmp-1"].state == CampaignState.ACTIVE
    # the same grant again: the same answer, nothing journaled; other content: a conflict
    state, out = run(state, grant(), grant(spins=3))
    assert [(a.status, a.amount) for a in answers(out)] == [
        (Status.OK, 2), (Status.DUPLICATE_CONFLICT, None)]  # fmt: skip
    assert events(out) == []


def test_grant_refused_when_malformed_or_already_expired() -> None:
    for bad in (grant(spins=0), grant(bet_value=0), grant(games=()), grant(provider=""),
                grant(expires_at_ms=T0), grant(mode="demo")):  # fmt: skip
        state, out = run(fresh(), bad)
        assert [a.status for a in answers(out)] == [Status.INVALID_REQUEST]
        assert state.campaigns == {} and events(out) == []


def test_free_spins_move_no_money_and_use_up_the_campaign() -> None:
    state, out = run(fresh(), grant(), spin("s1"), spin("s2"), spin("s3"))
    assert not [o for o in out if isinstance(o, Command)]
    assert [a.status for a in answers(out)[1:]] == [Status.OK, Status.OK, Status.LIMIT_EXCEEDED]
    names = [e.name for e in events(out)]
    assert names == ["CampaignGranted", "FreeSpinPlayed", "FreeSpinPlayed", "BetRejected"]
    assert events(out)[-1].fields["rule"] == "campaign:used_up"
    assert state.campaigns["cmp-1"].state == CampaignState.USED_UP
    assert state.campaigns["cmp-1"].spins_left == 0
    # the round exists, its stake is not the player's
    assert state.rounds["prov-a:r1"].bet_total == 0
    # a duplicate of a free spin: the original answer, no spin used
    state, out = run(state, spin("s1"))
    assert [a.status for a in answers(out)] == [Status.OK] and events(out) == []


def test_free_spin_refusals_in_order() -> None:
    state, _ = run(fresh(), grant())
    cases = [
        (spin("x1", cid="nope"), "unknown", Status.LIMIT_EXCEEDED),
        (spin("x2", provider="prov-b"), "provider", Status.GAME_NOT_ALLOWED),
        (spin("x3", game="g9"), "game", Status.GAME_NOT_ALLOWED),
        (spin("x4", currency="USD"), "currency", Status.CURRENCY_MISMATCH),
        (spin("x5", amount=99), "bet_value", Status.LIMIT_EXCEEDED),
    ]
    for request, rule, status in cases:
        after, out = run(state, request)
        assert [a.status for a in answers(out)] == [status], rule
        (e,) = events(out)
        assert e.name == "BetRejected" and e.fields["rule"] == f"campaign:{rule}"
        assert after.campaigns["cmp-1"].spins_left == 2
    # demo play has no campaigns
    _, out = run(state, spin("x6", mode="demo"))
    assert [a.status for a in answers(out)] == [Status.INVALID_REQUEST]


def test_cancel_stops_spins_and_is_idempotent() -> None:
    state, out = run(fresh(), grant(), spin("s1"), cancel(), cancel(), spin("s2"))
    got = [(a.status, a.amount) for a in answers(out)]
    assert got[2:4] == [(Status.OK, 1), (Status.OK, 1)]
    assert got[4][0] == Status.LIMIT_EXCEEDED
    assert [e.name for e in events(out)].count("CampaignCancelled") == 1
    assert events(out)[-1].fields["rule"] == "campaign:cancelled"
    _, out = run(state, cancel("nope"))
    assert [a.status for a in answers(out)] == [Status.TRANSACTION_NOT_FOUND]


def test_expiry_by_the_timer_and_at_a_late_spin() -> None:
    state, _ = run(fresh(), grant())
    assert next_due_ms(state, CONFIG) == T0 + HOUR
    before, out = run(state, Tick(), now=T0 + HOUR - 1)
    assert events(out) == []
    after, out = run(before, Tick(), now=T0 + HOUR)
    (e,) = events(out)
    assert e.name == "CampaignExpired" and e.fields["spins_left"] == 2
    assert after.campaigns["cmp-1"].state == CampaignState.EXPIRED
    assert next_due_ms(after, CONFIG) is None
    # a spin at the expiry with no tick before it: expired first, then refused
    _, out = run(state, spin("s1"), now=T0 + HOUR)
    assert [e.name for e in events(out)] == ["CampaignExpired", "BetRejected"]
    assert events(out)[-1].fields["rule"] == "campaign:expired"


def test_campaign_win_is_a_bonus_credit_and_rollback_gives_the_spin_back() -> None:
    state, _ = run(fresh(), grant(), spin("s1"))
    state, out = run(state, req(Action.WIN, txn="w1", amount=500, campaign_id="cmp-1",
                                rid="win-1"))  # fmt: skip
    (credit,) = [o for o in out if isinstance(o, Command)]
    assert credit.kind == CommandKind.CREDIT and credit.win_kind == "BONUS"
    d = decide(state, Reply(credit.command_id, ReplyStatus.OK, 1500, "EUR", T0), T0, CONFIG)
    (e,) = events(list(d.outputs))
    assert e.name == "WinCredited" and e.fields["win_kind"] == "BONUS"
    assert e.fields["campaign_id"] == "cmp-1"
    assert d.state.rounds["prov-a:r1"].win_total == 500
    # the rollback of the spin: the spin is back, no command
    state, out = run(d.state, req(Action.ROLLBACK, txn="rb1", amount=None, ref="s1",
                                  rid="rb-1"))  # fmt: skip
    assert not [o for o in out if isinstance(o, Command)]
    assert [e.name for e in events(out)] == ["FreeSpinRolledBack"]
    assert state.campaigns["cmp-1"].spins_left == 2


def test_transfer_wallet_free_spins_keep_the_held_balance() -> None:
    kw: dict[str, Any] = {"wallet": TRANSFER, "op": "op-t"}
    state = fresh("op-t")
    state, _ = run(
        state,
        req(
            Action.DEPOSIT,
            provider="",
            txn="d1",
            amount=1_000,
            game=None,
            round_id=None,
            rid="dep",
            **kw,
        ),
    )
    state, out = run(state, grant(**kw), spin("s1", **kw), spin("s2", **kw), spin("s3", **kw))
    assert [a.balance for a in answers(out)[1:]] == [1_000, 1_000, 1_000]
    assert state.transfer_balances["EUR"] == 1_000
    state, out = run(
        state, req(Action.WIN, txn="w1", amount=40, campaign_id="cmp-1", rid="w", **kw)
    )
    assert state.transfer_balances["EUR"] == 1_040
    (e,) = events(out)
    assert e.fields["win_kind"] == "BONUS" and e.fields["wallet"] == TRANSFER
    state, out = run(state, req(Action.ROLLBACK, txn="rb", amount=None, ref="s2", rid="rb", **kw))
    assert state.transfer_balances["EUR"] == 1_040
    assert state.campaigns["cmp-1"].state == CampaignState.ACTIVE
    assert state.campaigns["cmp-1"].spins_left == 1


# --- the property ----------------------------------------------------------------------------

OWNERS = (("op-s", "pl-1", SEAMLESS), ("op-s", "pl-2", SEAMLESS), ("op-t", "pl-1", TRANSFER))
PROVIDERS = ("prov-a", "prov-b")
CAMPAIGNS = ("cmp-1", "cmp-2")


@st.composite
def steps(draw: st.DrawFn) -> tuple[int, int, Request | Tick]:
    owner = draw(st.integers(0, len(OWNERS) - 1))
    op, player, wallet = OWNERS[owner]
    advance = draw(st.sampled_from((0, 0, 1_000, HOUR // 2)))
    kind = draw(st.sampled_from(("grant", "cancel", "spin", "spin", "spin", "win", "rollback",
                                 "bet", "tick")))  # fmt: skip
    cid = draw(st.sampled_from(CAMPAIGNS))
    provider = draw(st.sampled_from(PROVIDERS))
    txn = f"t{draw(st.integers(0, 4))}"
    rid = f"rq-{draw(st.integers(0, 9))}"
    common: dict[str, Any] = {"op": op, "player": player, "wallet": wallet, "rid": rid}
    message: Request | Tick
    if kind == "grant":
        message = grant(cid, spins=draw(st.integers(1, 3)), provider=provider,
                        expires_at_ms=T0 + draw(st.sampled_from((HOUR // 4, HOUR, 3 * HOUR))),
                        **common)  # fmt: skip
    elif kind == "cancel":
        message = cancel(cid, **common)
    elif kind == "spin":
        message = spin(txn, cid, provider=provider, game=draw(st.sampled_from(("g1", "g3"))),
                       amount=draw(st.sampled_from((100, 100, 50))), **common)  # fmt: skip
    elif kind == "win":
        message = req(Action.WIN, txn=f"w{txn}", provider=provider, amount=draw(st.integers(0, 9)),
                      campaign_id=cid, **common)  # fmt: skip
    elif kind == "rollback":
        message = req(Action.ROLLBACK, txn=f"rb{txn}", provider=provider, amount=None,
                      ref=txn, **common)  # fmt: skip
    elif kind == "bet":
        message = req(Action.BET, txn=txn, provider=provider, amount=10, **common)
    else:
        message = Tick()
    return owner, advance, message


@settings(max_examples=300, deadline=None)
@given(st.lists(steps(), min_size=1, max_size=40))
def test_campaign_invariants(plan: list[tuple[int, int, Request | Tick]]) -> None:
    states = [PlayerState(op, player) for op, player, _ in OWNERS]
    for i, (op, _, wallet) in enumerate(OWNERS):
        if wallet == TRANSFER:
            states[i], _ = run(states[i], req(Action.DEPOSIT, op=op, provider="", txn="dep",
                                              amount=10_000, game=None, round_id=None,
                                              wallet=TRANSFER, rid="dep"))  # fmt: skip
    now = T0
    journal: list[tuple[int, Event]] = []
    ids: Counter[str] = Counter()
    free_keys: set[tuple[int, str, str]] = set()
    for owner, advance, message in plan:
        now += advance
        if isinstance(message, Request):
            message = replace(message, received_at_ms=now)
        pending: list[Request | Tick | Reply] = [message]
        while pending:
            m = pending.pop(0)
            before = states[owner]
            d = decide(states[owner], m, now, CONFIG)
            states[owner] = d.state
            for out in d.outputs:
                if isinstance(out, Event):
                    journal.append((owner, out))
                    if out.name != "DuplicateConflictDetected":  # one per request id, by design
                        ids[out.event_id] += 1
                    if out.name == "FreeSpinPlayed":
                        free_keys.add((owner, out.provider_id, str(out.fields["transaction_id"])))
                        c = before.campaigns.get(str(out.fields["campaign_id"]))
                        # no spin after expiry or cancel
                        assert c is not None and now < c.expires_at_ms
                        assert c.state in (CampaignState.ACTIVE,)
                elif isinstance(out, Command):
                    if out.kind == CommandKind.DEBIT:
                        assert (owner, out.provider_id, out.transaction_id) not in free_keys
                    if out.kind == CommandKind.CANCEL:
                        assert (owner, out.provider_id, out.transaction_id) not in free_keys
                    # the operator's wallet says OK to everything
                    pending.append(Reply(out.command_id, ReplyStatus.OK, 5_000, out.currency, now))
                    if (
                        out.kind == CommandKind.CREDIT
                        and out.transaction_id
                        and out.transaction_id.startswith("w")
                    ):
                        assert out.win_kind == "BONUS"
            if (
                OWNERS[owner][2] == TRANSFER
                and isinstance(m, Request)
                and m.campaign_id
                and m.action == Action.BET
            ):
                assert d.state.transfer_balances == before.transfer_balances
    assert all(n == 1 for n in ids.values())
    for owner, state in enumerate(states):
        for campaign in state.campaigns.values():
            played = sum(
                1
                for o, e in journal
                if o == owner
                and e.name == "FreeSpinPlayed"
                and e.fields["campaign_id"] == campaign.campaign_id
            )
            back = sum(
                1
                for o, e in journal
                if o == owner
                and e.name == "FreeSpinRolledBack"
                and e.fields["campaign_id"] == campaign.campaign_id
            )
            assert 0 <= played - back <= campaign.spins
            assert campaign.spins_left == campaign.spins - (played - back)
        credited = Counter(
            (e.provider_id, e.fields["transaction_id"])
            for o, e in journal
            if o == owner and e.name == "WinCredited"
        )
        assert all(n == 1 for n in credited.values())
        for o, e in journal:
            if o == owner and e.name == "WinCredited" and e.fields.get("campaign_id"):
                assert e.fields["win_kind"] == "BONUS"
