"""The reference wallet's rules without I/O (:class:`agg_wallet.rules.Book`): a command id
belongs to the player it was first recorded for."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agg_wallet.rules import Book, Command, Decision, Effect, Status, problem_of

OPERATOR = "op-1"
START = 1_000
NOW = datetime(2024, 1, 1, tzinfo=UTC)


def book() -> Book:
    return Book(operator_id=OPERATOR, starting_balance=START, balances={}, entries={},
                cancels={})  # fmt: skip


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
    conflicting = apply(b, command("alice", "DEBIT", 101))
    assert conflicting.duplicate and conflicting.conflict and not conflicting.foreign
    assert conflicting.entry is first.entry


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
