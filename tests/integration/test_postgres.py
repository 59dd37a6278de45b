"""Reads and writes against the real PostgreSQL server: integer money round-trips exactly at
the bounds of a signed 64-bit amount, a failed transaction leaves nothing, and of two
transactions racing to record the same idempotency key exactly one wins."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest

MAX_AMOUNT = 2**63 - 1


@pytest.fixture
def table(database_url: str):
    name = f"it_ledger_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            f"""create table {name} (
                    transaction_id text primary key,
                    player_id text not null,
                    amount bigint not null check (amount >= 0),
                    currency char(3) not null
                )"""
        )
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"drop table {name}")


def test_integer_money_round_trips_exactly(database_url: str, table: str) -> None:
    rows = [
        ("tx-0", "p-1", 0, "EUR"),
        ("tx-1", "p-1", 1, "EUR"),
        ("tx-max", "p-2", MAX_AMOUNT, "JPY"),
    ]
    with psycopg.connect(database_url) as conn:
        with conn.cursor() as cur:
            cur.executemany(f"insert into {table} values (%s, %s, %s, %s)", rows)
    with psycopg.connect(database_url) as conn:
        got = conn.execute(f"select * from {table} order by transaction_id").fetchall()
        total = conn.execute(f"select sum(amount) from {table} where player_id = 'p-1'").fetchone()
    assert got == sorted(rows)
    assert all(type(r[2]) is int for r in got)
    assert total == (1,)


def test_failed_transaction_leaves_nothing(database_url: str, table: str) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        with psycopg.connect(database_url) as conn:
            conn.execute(f"insert into {table} values ('tx-a', 'p', 10, 'EUR')")
            conn.execute(f"insert into {table} values ('tx-b', 'p', -1, 'EUR')")
    with psycopg.connect(database_url) as conn:
        assert conn.execute(f"select count(*) from {table}").fetchone() == (0,)


def test_two_transactions_racing_on_one_key_exactly_one_wins(database_url: str, table: str) -> None:
    first_holds_key = threading.Event()
    results: dict[str, str] = {}

    def first() -> None:
        with psycopg.connect(database_url) as conn:
            conn.execute(f"insert into {table} values ('tx-race', 'p', 100, 'EUR')")
            first_holds_key.set()
            # keep the key uncommitted while the second transaction runs into it
            time.sleep(0.3)
            conn.commit()
            results["first"] = "won"

    def second() -> None:
        assert first_holds_key.wait(timeout=10)
        try:
            with psycopg.connect(database_url) as conn:
                conn.execute(f"insert into {table} values ('tx-race', 'p', 200, 'EUR')")
                conn.commit()
            results["second"] = "won"
        except psycopg.errors.UniqueViolation:
            results["second"] = "lost"

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == {"first": "won", "second": "lost"}
    with psycopg.connect(database_url) as conn:
        assert conn.execute(f"select amount from {table}").fetchall() == [(100,)]
