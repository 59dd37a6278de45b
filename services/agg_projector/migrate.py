"""Versioned migrations of a projection schema: ``migrations/NNN_name.sql``, applied in order
once each, recorded in ``<schema>.schema_migrations``. ``{schema}`` in the files is the target
schema, so the same files build the live projections and a replay's fresh copy."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
from psycopg import sql

MIGRATIONS = Path(__file__).parent / "migrations"
_FILE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def migrations() -> list[tuple[int, str, str]]:
    out = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        match = _FILE.match(path.name)
        if not match:
            raise ValueError(f"migration file {path.name} is not NNN_name.sql")
        out.append((int(match.group(1)), path.stem, path.read_text()))
    versions = [v for v, _, _ in out]
    if versions != list(range(1, len(out) + 1)):
        raise ValueError(f"migration versions must be 1..n without gaps, got {versions}")
    return out


def migrate(conn: psycopg.Connection, schema: str) -> list[str]:
    """Bring ``schema`` up to date; return the migrations applied. Safe to run concurrently
    (an advisory lock serialises runners) and repeatedly."""
    if not SCHEMA_NAME.match(schema):
        raise ValueError(f"bad schema name {schema!r}")
    applied: list[str] = []
    with conn.transaction():
        conn.execute(
            "select pg_advisory_xact_lock(hashtext('agg-projector-migrate:' || %s))", (schema,)
        )
        conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL(
                "create table if not exists {}.schema_migrations ("
                "version int primary key, name text not null, "
                "applied_at timestamptz not null default now())"
            ).format(sql.Identifier(schema))
        )
        done = {
            row[0]
            for row in conn.execute(
                sql.SQL("select version from {}.schema_migrations").format(sql.Identifier(schema))
            )
        }
        for version, name, text in migrations():
            if version in done:
                continue
            conn.execute(text.replace("{schema}", schema).encode())
            conn.execute(
                sql.SQL("insert into {}.schema_migrations (version, name) values (%s, %s)").format(
                    sql.Identifier(schema)
                ),
                (version, name),
            )
            applied.append(name)
    return applied
