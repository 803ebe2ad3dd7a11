"""A dataset's label counts, exact at every moment, without a hot row.

The counts an import, split, fix or recount sets live on the dataset row
(``Dataset.label_counts_base``), written only by whoever holds that row exclusively. A label
given in the queue (or undone, or adjudicated) changes the counts too, but writing the dataset
row for each one made every annotator wait on every other's commit, and left the row with
thousands of dead versions for each lookup to walk past (the labeling benchmark's 8
annotators spent about a third of their time there). So a label adds its change to a
``LabelCountShard`` row instead: one per dataset, import and shard (the user's id modulo
``LabelCountShard.SHARDS``), written while the labeler holds the dataset row FOR SHARE until
its commit. Writers that set the counts hold the row exclusively, which waits out every label
in flight, and remove the shards in the same transaction; so the base plus the shards of the
active import, read in one statement, is always exact.
"""

from __future__ import annotations

import json

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models.expressions import RawSQL

from datasets_app.models import Dataset, LabelCountShard

KNOWN = "_label_counts_known"
GONE = "That record is not in this dataset any more (it was imported again or deleted)."


def sorted_counts(counts: dict[str, int]) -> dict[str, int]:
    """Counts above zero, largest first (then by label)."""
    kept = {label: int(count) for label, count in counts.items() if int(count) > 0}
    return dict(sorted(kept.items(), key=lambda item: (-item[1], item[0])))


def _merged(base: dict | None, shards: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {str(k): int(v) for k, v in (base or {}).items()}
    for shard in shards:
        for label, change in (shard or {}).items():
            counts[label] = counts.get(label, 0) + int(change)
    return sorted_counts(counts)


def label_counts_known(dataset: Dataset, shards: list[dict] | str | None) -> None:
    """Keep on the instance its counts as read with its row under the share lock (the base
    it holds plus ``shards``): ``dataset.label_counts`` then answers without a query."""
    dataset.__dict__[KNOWN] = _merged(dataset.label_counts_base, _json(shards) or [])


SHARDS_ANNOTATION = "label_count_shards"


def with_label_counts(queryset):
    """``queryset`` with each dataset's count shards read in the same statement as its row, so
    that ``label_counts`` of a list of datasets needs no query each (and stays exact)."""
    table = Dataset._meta.db_table
    shards = LabelCountShard._meta.db_table
    return queryset.annotate(
        **{
            # Table names from the models and fixed text only: nothing from a request.
            SHARDS_ANNOTATION: RawSQL(  # noqa: S611
                f"(SELECT {_json_agg()} FROM {shards} s WHERE s.dataset_id = {table}.id "  # noqa: S608
                f"AND s.import_run_id = {table}.active_import_id)",
                [],
            )
        }
    )


def label_counts_now(dataset: Dataset) -> dict[str, int]:
    """Records per label of the dataset's active import (not excluded; '' for none), as
    committed now: the row's counts and the shards of its active import, read in one
    statement. A dataset not (or no longer) in the database: the counts the instance holds."""
    if dataset.pk is None:
        return sorted_counts(dataset.label_counts_base or {})
    table = Dataset._meta.db_table
    shards = LabelCountShard._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT d.label_counts, (SELECT {_json_agg()} FROM {shards} s "  # noqa: S608
            "WHERE s.dataset_id = d.id AND s.import_run_id = d.active_import_id) "
            f"FROM {table} d WHERE d.id = %s",
            [dataset.pk],
        )
        row = cursor.fetchone()
    if row is None:
        return sorted_counts(dataset.label_counts_base or {})
    base, rows = (_json(value) for value in row)
    return _merged(base, rows or [])


def _json_agg() -> str:
    if connection.vendor == "postgresql":
        return "jsonb_agg(s.counts)"
    return "json_group_array(json(s.counts))"


def _json(value):
    if isinstance(value, str):
        return json.loads(value)
    return value


def label_counts_move(dataset: Dataset, moves: dict[str, int], *, user=None) -> None:
    """Add ``moves`` (label -> +n/-n) to the counts of the dataset's active import, as a label
    given by ``user`` (their shard). On PostgreSQL this takes the dataset row FOR SHARE until
    the caller's transaction ends (a split, fix or import being saved is waited out, and
    cannot set the counts until this label is committed) and adds to the user's shard.
    Refused (ValidationError, nothing written) if another import became active meanwhile."""
    moves = {label: int(delta) for label, delta in moves.items() if delta}
    if not moves:
        return
    table = Dataset._meta.db_table
    if connection.vendor == "postgresql":
        shards = LabelCountShard._meta.db_table
        shard = (getattr(user, "pk", None) or 0) % LabelCountShard.SHARDS
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"WITH d AS (SELECT id, active_import_id FROM {table} "  # noqa: S608
                "WHERE id = %s AND active_import_id = %s FOR SHARE) "
                f"INSERT INTO {shards} AS c (dataset_id, import_run_id, shard, counts) "
                "SELECT d.id, d.active_import_id, %s, %s::jsonb FROM d "
                "ON CONFLICT (dataset_id, import_run_id, shard) DO UPDATE "
                "SET counts = lepton_counts_add(c.counts, EXCLUDED.counts) RETURNING 1",
                [dataset.pk, dataset.active_import_id, shard, json.dumps(moves)],
            )
            changed = cursor.fetchone() is not None
    else:  # SQLite runs one writer at a time: read and write the row in the transaction
        with transaction.atomic():
            counts = (
                Dataset.objects.filter(pk=dataset.pk, active_import_id=dataset.active_import_id)
                .values_list("label_counts_base", flat=True)
                .first()
            )
            changed = False
            if counts is not None:
                counts = dict(counts or {})
                for label, delta in moves.items():
                    counts[label] = counts.get(label, 0) + delta
                changed = bool(
                    Dataset.objects.filter(pk=dataset.pk).update(
                        label_counts_base=sorted_counts(counts)
                    )
                )
    if not changed:
        raise ValidationError(GONE)


def label_counts_set(dataset: Dataset, counts: dict[str, int]) -> None:
    """Set the dataset's counts (the caller saves ``dataset``): the base on the instance, and
    the shards of every import removed. Call holding the dataset row exclusively
    (``dataset_lock`` or select_for_update), so that no label is in flight."""
    dataset.label_counts_base = counts
    dataset.__dict__.pop(KNOWN, None)
    dataset.__dict__.pop(SHARDS_ANNOTATION, None)
    if dataset.pk is not None:
        LabelCountShard.objects.filter(dataset_id=dataset.pk).delete()
