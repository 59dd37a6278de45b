"""The reference wallet's rules without I/O (:class:`agg_wallet.rules.Book`): a command id
belongs to the player it was first recorded for."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from agg_domain.saga import debit_command_id
from agg_wallet.rules import (
    SANDBOX_PREFIXES,
    Book,
    Command,
    Decision,
    Defect,
    Effect,
    Policy,
    Scenario,
    Status,
    parse_defects,
    problem_of,
    reply_delay_ms,
)

OPERATOR = "op-1"
START = 1_000
NOW = datetime(2024, 1, 1, tzinfo=UTC)


def book(policy: Policy | None = None) -> Book:
    return Book(operator_id=OPERATOR, starting_balance=START, balances={}, entries={},
                cancels={}, policy=policy or Policy())  # fmt: skip


def command(player: str, kind: str, amount: int = 0, *, command_id: str = "cmd-1",
            reference: str | None = None, operator: str = OPERATOR) -> Command:  # fmt: skip
    return Command(
        command_id=command_id,
        correlation_id=f"corr-{player}",
        operator_id=operator,
        player_id=player,
        kind=kind,
        amount=amount,
        currency="EUR",
        provider_id="prov-a",
        transaction_id="t-1",
        round_id="r-1",
        game_id="g-1",
        reference_command_id=reference,
        issued_at=NOW,
    )


def apply(b: Book, c: Command) -> Decision:
    return b.apply(c, problem_of(c, OPERATOR, f"{c.operator_id}:{c.player_id}".encode()), NOW)


@pytest.mark.parametrize(("kind", "amount"), [("DEBIT", 100), ("CREDIT", 100), ("BALANCE", 0)])
def test_a_command_id_held_for_another_player_is_refused(kind: str, amount: int) -> None:
    b = book()
    first = apply(b, command("alice", kind, amount))
    assert first.entry.status is Status.OK and first.entry.player_id == "alice"
    refused = apply(b, command("bob", kind, amount))
    assert refused.foreign and not refused.duplicate
    entry = refused.entry
    assert (entry.player_id, entry.status, entry.balance, entry.delta) == (
        "bob", Status.ERROR, None, 0)  # fmt: skip
    assert entry.reason == "command_id already recorded for another player"
    # nothing of it is recorded, alice's entry stays the one under that id
    assert b.entries["cmd-1"] is first.entry
    assert b.new_entries == [first.entry]
    assert ("bob", "EUR") not in b.balances
    assert b.balances[("alice", "EUR")] == first.entry.balance


def test_the_refusal_is_repeated_and_the_owner_keeps_its_reply() -> None:
    b = book()
    first = apply(b, command("alice", "DEBIT", 100))
    for _ in range(3):
        assert apply(b, command("bob", "DEBIT", 100)).foreign
    again = apply(b, command("alice", "DEBIT", 100))
    assert again.duplicate and not again.foreign and again.entry is first.entry
    assert b.balances[("alice", "EUR")] == START - 100


def test_a_command_naming_another_operator_never_gets_the_stored_reply() -> None:
    b = book()
    first = apply(b, command("alice", "BALANCE"))
    assert first.entry.balance == START
    other = apply(b, command("alice", "BALANCE", operator="op-2"))
    assert other.foreign and other.entry.balance is None and other.entry.status is Status.ERROR
    assert other.entry.reason == "command_id already recorded for operator 'op-1', not 'op-2'"


def test_an_exact_repeat_of_the_same_player_is_still_the_same_command() -> None:
    b = book()
    first = apply(b, command("alice", "DEBIT", 100))
    again = apply(b, command("alice", "DEBIT", 100))
    assert again.duplicate and not again.conflict and again.entry is first.entry


@pytest.mark.parametrize(
    ("kind", "amount", "currency"),
    [("DEBIT", 101, "EUR"), ("DEBIT", 100, "USD"), ("CREDIT", 100, "EUR")],
)
def test_the_same_id_with_other_content_is_refused_never_answered_from_the_ledger(
    kind: str, amount: int, currency: str
) -> None:
    b = book()
    first = apply(b, command("alice", "DEBIT", 100))
    other = apply(b, replace(command("alice", kind, amount), currency=currency))
    assert other.duplicate and other.conflict and not other.foreign
    assert (other.entry.status, other.entry.balance, other.entry.delta) == (Status.ERROR, None, 0)
    assert other.entry.reason == "command_id already recorded with other content"
    assert b.entries["cmd-1"] is first.entry and b.new_entries == [first.entry]
    assert b.balances[("alice", "EUR")] == START - 100


def test_a_cancel_of_another_players_debit_is_a_tombstone_for_its_player() -> None:
    """The cancel that follows a refused (foreign) debit: for its player that debit never
    happened, so the cancel is acknowledged and refunds nothing; the owner's debit is
    untouched and its own cancel still refunds it."""
    b = book()
    apply(b, command("alice", "DEBIT", 100, command_id="debit"))
    assert apply(b, command("bob", "DEBIT", 100, command_id="debit")).foreign
    bobs = apply(b, command("bob", "CANCEL", 100, command_id="bob-cancel", reference="debit"))
    assert (bobs.entry.effect, bobs.entry.status, bobs.entry.balance) == (
        Effect.TOMBSTONE, Status.OK, START)  # fmt: skip
    assert b.balances[("alice", "EUR")] == START - 100
    alices = apply(b, command("alice", "CANCEL", 100, command_id="al-cancel", reference="debit"))
    assert (alices.entry.effect, alices.entry.balance) == (Effect.REFUNDED, START)


def test_a_cancel_of_own_non_debit_is_still_invalid() -> None:
    b = book()
    apply(b, command("alice", "CREDIT", 100, command_id="credit"))
    cancel = apply(b, command("alice", "CANCEL", 100, command_id="c", reference="credit"))
    assert (cancel.entry.effect, cancel.entry.status) == (Effect.INVALID, Status.ERROR)


# --- the operator's currencies -------------------------------------------------------------

OFFERED = Policy(currencies=frozenset({"EUR"}))


def test_a_currency_the_operator_does_not_offer_is_refused_and_opens_no_account() -> None:
    b = book(OFFERED)
    refused = apply(b, replace(command("alice", "DEBIT", 10), currency="GBP"))
    assert (refused.entry.effect, refused.entry.status) == (Effect.INVALID, Status.ERROR)
    assert refused.entry.reason == "currency GBP is not offered by operator op-1"
    assert ("alice", "GBP") not in b.balances
    ok = apply(b, command("alice", "DEBIT", 10, command_id="cmd-2"))
    assert (ok.entry.status, ok.entry.balance) == (Status.OK, START - 10)


def test_an_account_in_a_currency_no_longer_offered_still_settles() -> None:
    b = book(OFFERED)
    b.balances[("alice", "GBP")] = 50
    credit = apply(b, replace(command("alice", "CREDIT", 10), currency="GBP"))
    assert (credit.entry.status, credit.entry.balance) == (Status.OK, 60)


# --- deliberate defects (certification kit tests only) -------------------------------------


def test_defects_parse_and_refuse_unknown_names() -> None:
    assert parse_defects("") == frozenset()
    assert parse_defects("no_dedupe, slow") == {Defect.NO_DEDUPE, Defect.SLOW}
    with pytest.raises(ValueError, match="unknown wallet defects"):
        parse_defects("no_dedupe,teleport")


def test_the_settings_describe_every_defect() -> None:
    from agg_config.settings import Settings

    description = Settings.model_fields["wallet_broken"].description or ""
    assert all(d.value in description for d in Defect)


def test_slow_answers_past_the_deadline_and_only_when_asked() -> None:
    assert reply_delay_ms(frozenset(), 1_500) == 0
    assert reply_delay_ms(frozenset({Defect.SLOW}), 1_500) > 1_500


@pytest.mark.parametrize(
    ("defects", "expected_balance"),
    [(frozenset(), START - 100), (frozenset({Defect.NO_DEDUPE}), START - 300)],
)
def test_no_dedupe_applies_a_repeat_again(
    defects: frozenset[Defect], expected_balance: int
) -> None:
    b = book(Policy(defects=defects))
    replies = [apply(b, command("alice", "DEBIT", 100)) for _ in range(3)]
    assert b.balances[("alice", "EUR")] == expected_balance
    assert len(b.new_entries) == 1  # the ledger keeps one row per id either way
    assert replies[0].entry.balance == START - 100


@pytest.mark.parametrize(
    ("defects", "status", "balance"),
    [
        (frozenset(), Status.INSUFFICIENT_FUNDS, START),
        (frozenset({Defect.NEGATIVE_BALANCE}), Status.OK, START),
    ],
)
def test_negative_balance_accepts_a_debit_above_the_balance(
    defects: frozenset[Defect], status: Status, balance: int
) -> None:
    b = book(Policy(defects=defects))
    reply = apply(b, command("alice", "DEBIT", START + 1))
    assert (reply.entry.status, reply.entry.balance, reply.entry.delta) == (status, balance, 0)


@pytest.mark.parametrize(
    ("defects", "expected_balance"),
    [(frozenset(), START), (frozenset({Defect.DOUBLE_ROLLBACK}), START + 100)],
)
def test_double_rollback_refunds_a_second_cancel(
    defects: frozenset[Defect], expected_balance: int
) -> None:
    b = book(Policy(defects=defects))
    apply(b, command("alice", "DEBIT", 100, command_id="d"))
    apply(b, command("alice", "CANCEL", 100, command_id="c1", reference="d"))
    second = apply(b, command("alice", "CANCEL", 100, command_id="c2", reference="d"))
    assert second.entry.status is Status.OK
    assert b.balances[("alice", "EUR")] == expected_balance


def test_wrong_currency_accepts_a_currency_not_offered() -> None:
    b = book(Policy(currencies=frozenset({"EUR"}), defects=frozenset({Defect.WRONG_CURRENCY})))
    reply = apply(b, replace(command("alice", "DEBIT", 10), currency="GBP"))
    assert (reply.entry.status, reply.entry.balance) == (Status.OK, START - 10)


# --- the provider sandbox ------------------------------------------------------------------

SANDBOX = Policy(sandbox=True)


def test_every_scenario_has_a_prefix_and_none_is_a_prefix_of_another() -> None:
    assert set(SANDBOX_PREFIXES.values()) == set(Scenario)
    prefixes = list(SANDBOX_PREFIXES)
    assert not [(a, b) for a in prefixes for b in prefixes if a != b and b.startswith(a)]


@pytest.mark.parametrize(
    ("player", "status", "balance_after"),
    [
        ("sandbox-ok-1", Status.OK, START - 100),
        ("sandbox-insufficient-1", Status.INSUFFICIENT_FUNDS, START),
        ("sandbox-blocked-1", Status.PLAYER_BLOCKED, START),
        ("sandbox-limit-1", Status.LIMIT_REACHED, START),
        ("sandbox-error-1", Status.ERROR, START),
        ("someone-else", Status.OK, START - 100),
    ],
)
def test_sandbox_debits_by_prefix_and_credits_stay_normal(
    player: str, status: Status, balance_after: int
) -> None:
    b = book(SANDBOX)
    debit = apply(b, command(player, "DEBIT", 100, command_id="d"))
    assert (debit.entry.status, debit.entry.balance) == (status, balance_after)
    assert apply(b, command(player, "DEBIT", 100, command_id="d")).entry is debit.entry
    credit = apply(b, command(player, "CREDIT", 5, command_id="w"))
    assert (credit.entry.status, credit.entry.balance) == (Status.OK, balance_after + 5)
    cancel = apply(b, command(player, "CANCEL", 100, command_id="c", reference="d"))
    assert (cancel.entry.status, cancel.entry.balance) == (Status.OK, START + 5)


def test_a_stake_above_the_operators_limit_is_refused_and_moves_nothing() -> None:
    b = book(Policy(max_stake=500))
    at_limit = apply(b, command("p", "DEBIT", 500, command_id="d1"))
    assert (at_limit.entry.status, at_limit.entry.balance) == (Status.OK, START - 500)
    above = apply(b, command("p", "DEBIT", 501, command_id="d2"))
    assert (above.entry.status, above.entry.effect, above.entry.balance) == (
        Status.LIMIT_REACHED, Effect.REFUSED, START - 500)  # fmt: skip
    assert apply(b, command("p", "DEBIT", 501, command_id="d2")).entry is above.entry
    cancel = apply(b, command("p", "CANCEL", 501, command_id="c2", reference="d2"))
    assert (cancel.entry.status, cancel.entry.balance) == (Status.OK, START - 500)
    # credits are never limited
    credit = apply(b, command("p", "CREDIT", 10_000, command_id="w"))
    assert credit.entry.status == Status.OK


def test_the_same_prefixes_are_plain_players_without_the_sandbox() -> None:
    b = book()
    debit = apply(b, command("sandbox-blocked-1", "DEBIT", 100))
    assert (debit.entry.status, debit.entry.balance) == (Status.OK, START - 100)


def test_sandbox_timeout_leaves_the_first_attempt_unanswered_and_answers_the_retry() -> None:
    b = book(SANDBOX)
    player = "sandbox-timeout-1"
    first_id = debit_command_id(OPERATOR, player, "prov-a", "t-1", 1)
    first = apply(b, command(player, "DEBIT", 100, command_id=first_id))
    assert first.silent and b.new_entries == [] and ("sandbox-timeout-1", "EUR") not in b.touched
    assert apply(b, command(player, "DEBIT", 100, command_id=first_id)).silent  # redelivered
    cancel = apply(b, command(player, "CANCEL", 100, command_id="c1", reference=first_id))
    assert (cancel.entry.effect, cancel.entry.status) == (Effect.TOMBSTONE, Status.OK)
    retry_id = debit_command_id(OPERATOR, player, "prov-a", "t-1", 2)
    retry = apply(b, command(player, "DEBIT", 100, command_id=retry_id))
    assert (retry.silent, retry.entry.status, retry.entry.balance) == (
        False,
        Status.OK,
        START - 100,
    )


@pytest.mark.parametrize(
    ("wire_exponent", "currency", "largest"),
    [
        (None, "EUR", 2**63 - 1),
        (5, "EUR", (2**63 - 1) // 1000),  # hub88-v1: 1/100,000 units, cents are 2 places
        (5, "JPY", (2**63 - 1) // 100_000),
        (5, "BHD", (2**63 - 1) // 100),
        (2, "BHD", 2**63 - 1),  # a wire coarser than the minor unit carries every balance
    ],
)
def test_the_largest_balance_is_what_the_wire_can_carry(
    wire_exponent: int | None, currency: str, largest: int
) -> None:
    assert Policy(wire_exponent=wire_exponent).balance_max(currency) == largest


def test_a_credit_past_what_the_wire_carries_is_refused_and_moves_nothing() -> None:
    """A hub88-v1 HTTP wallet answers balances in 1/100,000 units, as longs: a credit that
    would take a EUR balance past (2**63-1)/1000 cents could not be answered."""
    b = book(Policy(wire_exponent=5))
    room = (2**63 - 1) // 1000 - START
    refused = apply(b, command("alice", "CREDIT", room + 1, command_id="win-1"))
    assert (refused.entry.effect, refused.entry.status) == (Effect.INVALID, Status.ERROR)
    assert refused.entry.reason == "balance would overflow"
    assert refused.entry.balance == START
    credited = apply(b, command("alice", "CREDIT", room, command_id="win-2"))
    assert (credited.entry.effect, credited.entry.balance) == (Effect.CREDITED, START + room)


def test_a_refund_past_what_the_wire_carries_is_refused_and_moves_nothing() -> None:
    b = book(Policy(wire_exponent=5))
    largest = (2**63 - 1) // 1000
    apply(b, command("alice", "DEBIT", START, command_id="bet-1"))
    apply(b, command("alice", "CREDIT", largest, command_id="win-1"))
    refund = apply(b, command("alice", "CANCEL", command_id="cancel-1", reference="bet-1"))
    assert (refund.entry.effect, refund.entry.status) == (Effect.INVALID, Status.ERROR)
    assert refund.entry.balance == largest
