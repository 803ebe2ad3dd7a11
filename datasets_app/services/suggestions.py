"""Suggested labels on records, made by a model (batch prediction) for the labeling queue."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from datasets_app.models import Dataset, Record, RecordSuggestion

STORE_BATCH = 20_000  # rows per statement on PostgreSQL
# Suggestions stored at once from which the table's statistics are refreshed (ANALYZE, about
# 0.1-0.3 s) so the queue's plans see them.
ANALYZE_AFTER = 10_000
SQLITE_BATCH = 5_000
MAX_LABEL_CHARS = 500
MAX_SOURCE_CHARS = 200


def record_suggestions_store(
    *,
    dataset: Dataset,
    predictions: Iterable[dict],
    source: str,
    user=None,
    replaces_prefix: str = "",
) -> dict[str, int]:
    """Store one suggestion per record for ``source``, replacing that source's earlier ones.

    ``predictions`` holds ``{"record_id", "label", "probability"}`` (probability 0-1 or None),
    and optionally ``"margin"`` (top-1 minus top-2 probability) and ``"entropy"`` (nats) for
    ordering the queue by uncertainty.
    Records that are not (or no longer) in the dataset, for example replaced by a re-import
    since the snapshot was taken, are skipped and counted. With ``replaces_prefix``, the
    dataset's suggestions of other sources starting with it are removed in the same
    transaction (a dataset keeps one model's pre-labels). Returns ``{"stored", "skipped"}``.
    """
    source = (source or "").strip()
    if not source:
        raise ValidationError("Name the source of the suggestions (for example the model version).")
    if len(source) > MAX_SOURCE_CHARS:
        raise ValidationError(
            f"The source name can be up to {MAX_SOURCE_CHARS} characters; this one has "
            f"{len(source)}."
        )
    stored = skipped = 0
    rows = iter(predictions)
    postgres = _native_upsert()
    user_id = getattr(user, "pk", None)
    with transaction.atomic():
        while chunk := list(islice(rows, STORE_BATCH if postgres else SQLITE_BATCH)):
            # One row per record: a record predicted twice in a chunk keeps its later prediction
            # (as it would across chunks); the earlier one counts as stored, then replaced.
            wanted: dict[int, tuple] = {}
            labeled = 0
            for item in chunk:
                label = str(item.get("label") or "")
                if not label:
                    skipped += 1
                    continue
                labeled += 1
                wanted[int(item["record_id"])] = (
                    label[:MAX_LABEL_CHARS],
                    _probability(item.get("probability")),
                    _probability(item.get("margin")),
                    _number(item.get("entropy")),
                )
            if postgres:
                written = _upsert_postgres(dataset.pk, wanted, source, user_id)
            else:
                written = _upsert_generic(dataset, wanted, source, user_id)
            # Records not (or no longer) in the dataset were left out by the write.
            missing = len(wanted) - written
            skipped += missing
            stored += labeled - missing
        if replaces_prefix:
            RecordSuggestion.objects.filter(
                dataset=dataset, source__startswith=replaces_prefix
            ).exclude(source=source).delete()
    if postgres and stored >= ANALYZE_AFTER:
        # The queue's uncertainty orders walk the suggestion indexes in order; with statistics
        # from before a large store the planner thinks few rows match and sorts them all
        # instead (0.8 s a record after pre-labeling 100,000 on a million-record dataset, where
        # the walk takes a millisecond), until autovacuum analyzes the table.
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {RecordSuggestion._meta.db_table}")
    return {"stored": stored, "skipped": skipped}


def _native_upsert() -> bool:
    """Whether to write with PostgreSQL's own statement (else the ORM's bulk_create)."""
    return connection.vendor == "postgresql"


def _upsert_postgres(dataset_id: int, wanted: dict[int, tuple], source: str, user_id) -> int:
    """One INSERT … SELECT FROM unnest(arrays) … ON CONFLICT DO UPDATE for the chunk: the rows
    travel as five array literals (five parameters, not ten per row; a list parameter would be
    sent as ARRAY[…] with an expression per element, which took 0.4 s to plan at 20,000), the
    records are checked against the dataset by the same statement (by primary key), and the
    constraint replaces the source's older suggestion. Returns how many rows it wrote (the records found
    in the dataset)."""
    if not wanted:
        return 0
    table = RecordSuggestion._meta.db_table
    records = Record._meta.db_table
    labels, probabilities, margins, entropies = zip(*wanted.values(), strict=True)
    now = timezone.now()
    sql = (
        f"INSERT INTO {table} AS s (dataset_id, record_id, label, probability, margin, entropy, "  # noqa: S608
        "source, created_by_id, created_at, updated_at) "
        "SELECT r.dataset_id, r.id, u.label, u.probability, u.margin, u.entropy, %s, %s, %s, %s "
        "FROM unnest(%s::bigint[], %s::text[], %s::float8[], %s::float8[], %s::float8[]) "
        "AS u(record_id, label, probability, margin, entropy) "
        # Each id looked up by the primary key: LIMIT keeps the planner from flattening the
        # LATERAL into a join, which it ran as a hash of the dataset's every record (a
        # sequential scan of a million rows for each chunk).
        f"CROSS JOIN LATERAL (SELECT id, dataset_id FROM {records} "
        "WHERE id = u.record_id AND dataset_id = %s LIMIT 1) r "
        "ON CONFLICT (record_id, source) DO UPDATE SET label = EXCLUDED.label, "
        "probability = EXCLUDED.probability, margin = EXCLUDED.margin, "
        "entropy = EXCLUDED.entropy, created_by_id = EXCLUDED.created_by_id, "
        "updated_at = EXCLUDED.updated_at"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                source,
                user_id,
                now,
                now,
                _array(list(wanted)),
                _text_array(labels),
                _array(probabilities),
                _array(margins),
                _array(entropies),
                dataset_id,
            ],
        )
        return cursor.rowcount


def _array(values) -> str:
    """A PostgreSQL array literal of numbers (None: NULL)."""
    return "{" + ",".join("NULL" if value is None else repr(value) for value in values) + "}"


def _text_array(values) -> str:
    """A PostgreSQL array literal of text, every element quoted (backslash and double quote
    escaped), so commas, braces, quotes, "NULL" and spaces in labels stay what they are."""
    quoted = ('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' for value in values)
    return "{" + ",".join(quoted) + "}"


def _upsert_generic(dataset: Dataset, wanted: dict[int, tuple], source: str, user_id) -> int:
    """The same with the ORM (SQLite): the records present, then bulk_create with
    update_conflicts on (record, source)."""
    present = set(
        Record.objects.filter(dataset=dataset, id__in=list(wanted)).values_list("id", flat=True)
    )
    now = timezone.now()
    suggestions = [
        RecordSuggestion(
            dataset=dataset,
            record_id=record_id,
            label=label,
            probability=probability,
            margin=margin,
            entropy=entropy,
            source=source,
            created_by_id=user_id,
            created_at=now,
            updated_at=now,
        )
        for record_id, (label, probability, margin, entropy) in wanted.items()
        if record_id in present
    ]
    RecordSuggestion.objects.bulk_create(
        suggestions,
        update_conflicts=True,
        unique_fields=["record", "source"],
        update_fields=["label", "probability", "margin", "entropy", "created_by", "updated_at"],
    )
    return len(suggestions)


def _probability(value: object) -> float | None:
    if value is None:
        return None
    number = float(value)
    if number != number:  # NaN
        return None
    return min(1.0, max(0.0, number))


def _number(value: object) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if number != number else max(0.0, number)
