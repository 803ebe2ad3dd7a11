"""Bulk writes on PostgreSQL: one foreign-key check per statement instead of one per row.

A COPY or INSERT ... SELECT of a million rows whose foreign keys all point at the same parent
rows (every record of an import has the same dataset and import run; every row of a snapshot
the same snapshot) spends about half of the database's time in PostgreSQL's per-row
foreign-key triggers, each of which locks its parent row FOR KEY SHARE. ``keys_checked_once``
takes exactly those locks once, refuses when a parent is gone, and switches the per-row
triggers off for the statements inside it (``session_replication_role = replica``, the setting
pg_restore uses for the same purpose), then back on. The constraints stay declared and every
other write is checked as usual.

Setting that parameter needs a superuser or, on PostgreSQL 15+, ``GRANT SET ON PARAMETER
session_replication_role TO <role>``; without the right the block checks nothing itself and
the per-row triggers run as usual, so the result is the same, only slower.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from django.db import connection, connections


class ParentMissing(Exception):
    """A parent row the bulk write refers to does not exist (any more)."""

    def __init__(self, table: str, key: int):
        super().__init__(f"{table} {key} does not exist")
        self.table, self.key = table, key


@cache
def _may_set_replication_role(alias: str) -> bool:
    database = connections[alias]
    with database.cursor() as cursor:
        if database.pg_version >= 150000:
            cursor.execute("SELECT has_parameter_privilege('session_replication_role', 'SET')")
        else:
            cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        return bool(cursor.fetchone()[0])


def can_check_keys_once() -> bool:
    """Whether bulk writes here can replace per-row key checks by one (PostgreSQL, with the
    right to set session_replication_role)."""
    return connection.vendor == "postgresql" and _may_set_replication_role(connection.alias)


@contextmanager
def keys_checked_once(
    cursor, parents: list[tuple[str, int]], *, enabled: bool = True
) -> Iterator[None]:
    """Inside a transaction: lock each (table, id) parent FOR KEY SHARE, raise ParentMissing
    if one is gone, and run the block without per-row foreign-key triggers."""
    if not enabled:
        yield
        return
    if not connection.in_atomic_block:
        raise RuntimeError("keys_checked_once must run inside a transaction.")
    for table, key in parents:
        cursor.execute(f"SELECT 1 FROM {table} WHERE id = %s FOR KEY SHARE", [key])  # noqa: S608
        if cursor.fetchone() is None:
            raise ParentMissing(table, key)
    cursor.execute("SET LOCAL session_replication_role = replica")
    yield
    # Only on success: after an error the transaction (or savepoint) is rolled back, which
    # undoes the SET LOCAL too, and a statement here would hide the error.
    cursor.execute("SET LOCAL session_replication_role = origin")
