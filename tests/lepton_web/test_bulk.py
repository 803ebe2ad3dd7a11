"""One key check per bulk statement (lepton_web/bulk.py), on the real PostgreSQL."""

from __future__ import annotations

import pytest
from django.db import ProgrammingError, connection, transaction

from lepton_web.bulk import ParentMissing, can_check_keys_once, keys_checked_once

pytestmark = pytest.mark.skipif(
    "connection.vendor != 'postgresql'", reason="PostgreSQL's triggers and settings"
)


def replication_role() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW session_replication_role")
        return cursor.fetchone()[0]


def test_the_test_role_may_check_keys_once(db):
    assert can_check_keys_once()


def test_triggers_are_off_inside_the_block_and_on_again_after_it(db, django_user_model):
    user = django_user_model.objects.create(username="parent")
    with transaction.atomic(), connection.cursor() as cursor:
        with keys_checked_once(cursor, [("auth_user", user.pk)]):
            assert replication_role() == "replica"
        assert replication_role() == "origin"


def test_a_missing_parent_is_refused_before_anything_is_written(db):
    with transaction.atomic(), connection.cursor() as cursor:
        with (
            pytest.raises(ParentMissing) as caught,
            keys_checked_once(cursor, [("auth_user", 10**12)]),
        ):
            pytest.fail("the block must not run")
        assert (caught.value.table, caught.value.key) == ("auth_user", 10**12)
        assert replication_role() == "origin"


def test_an_error_inside_the_block_leaves_the_triggers_on(db, django_user_model):
    user = django_user_model.objects.create(username="parent")
    with transaction.atomic(), connection.cursor() as cursor:
        with (
            pytest.raises(ProgrammingError),
            transaction.atomic(),
            keys_checked_once(cursor, [("auth_user", user.pk)]),
        ):
            cursor.execute("SELECT * FROM no_such_table")
        assert replication_role() == "origin"  # rolled back with the savepoint


def test_the_block_needs_a_transaction(transactional_db):
    with (
        connection.cursor() as cursor,
        pytest.raises(RuntimeError, match="inside a transaction"),
        keys_checked_once(cursor, []),
    ):
        pass
