"""The agreement page's figures as ``datasets_app.services.agreement`` computed them before
the count tables were kept (commit 17135fd): four queries on every call, with the per-annotator
sums and the time histograms as two separate joins. The same-run baseline of
benchmarks/agreement.py; not used by the console.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Count, F, Q, Sum

from datasets_app import agreement
from datasets_app.models import Annotation, Dataset, Record
from lepton_web.access import access_check

# One row per annotator pair, their two labels and the record's annotation count: a parallel
# hash self-join with a tiny hash aggregate on top (a CTE version sorted 2M rows: 6x slower).
_PAIRS_SQL = """
SELECT x.user_id, y.user_id, x.label, y.label, r.annotation_count, COUNT(*)
FROM {annotation} x
JOIN {annotation} y ON y.record_id = x.record_id AND x.user_id < y.user_id
JOIN {record} r ON r.id = x.record_id
WHERE x.dataset_id = %s AND r.import_run_id = %s AND r.annotation_count >= 2
  AND x.undone_at IS NULL AND y.undone_at IS NULL
GROUP BY x.user_id, y.user_id, x.label, y.label, r.annotation_count
"""


def _pair_table(dataset: Dataset) -> dict[tuple[int, int, str, str, int], int]:
    sql = _PAIRS_SQL.format(
        annotation=connection.ops.quote_name(Annotation._meta.db_table),
        record=connection.ops.quote_name(Record._meta.db_table),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [dataset.pk, dataset.active_import_id])
        return {tuple(row[:5]): int(row[5]) for row in cursor.fetchall()}


def _median_seconds(live) -> dict[int, float]:
    """Each annotator's median time per label, to a tenth of a second: the database counts the
    times in 0.1 s steps (a few thousand rows however many annotations), Python finds the
    middle, instead of sorting every time for an exact percentile (at 2M annotations:
    percentile_cont 10 s under load 12, these counts 1.6 s under load 7; benchmarks/agreement.py)."""
    histograms: dict[int, dict[float, int]] = {}
    rows = (
        live.filter(time_spent_ms__gt=0)
        .annotate(tenths=F("time_spent_ms") / 100)
        .values_list("user_id", "tenths")
        .annotate(count=Count("id"))
        .order_by()
    )
    for user_id, tenths, count in rows:
        histograms.setdefault(user_id, {})[tenths / 10] = count
    return {
        user_id: agreement.median_from_counts(histogram)
        for user_id, histogram in histograms.items()
    }


@contextmanager
def _without_jit() -> Iterator[None]:
    """PostgreSQL overestimates these joins and JIT-compiles them: measured 2.2 s of JIT for
    0.1 s of work on 40,000 annotations (benchmarks/agreement.py). Off for this transaction."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL jit = off")
        yield


def previous_agreement_get(*, user, dataset: Dataset) -> dict:
    """Every figure of the page and the API: pairs' kappa, alpha, the confusion between
    annotators, and per annotator their labels, speed, agreement with the resolved label and
    suggestion acceptance."""
    access_check(user, "dataset", "change")
    with _without_jit():
        return _figures(dataset)


def _figures(dataset: Dataset) -> dict:
    live = Annotation.objects.filter(
        dataset=dataset,
        undone_at__isnull=True,
        user__isnull=False,
        record__import_run_id=dataset.active_import_id,
    )
    # A record's resolved label says something about an annotator only where others labeled
    # it too (with one annotation it is that annotation).
    judged = Q(record__annotation_count__gte=2) & ~Q(record__label="")
    per_user = list(
        live.values("user_id")
        .annotate(
            labels=Count("id"),
            timed=Count("id", filter=Q(time_spent_ms__gt=0)),
            total_ms=Sum("time_spent_ms", filter=Q(time_spent_ms__gt=0)),
            shown=Count("id", filter=Q(suggestion_accepted__isnull=False)),
            accepted=Count("id", filter=Q(suggestion_accepted=True)),
            resolved_records=Count("id", filter=judged),
            resolved_matched=Count("id", filter=judged & Q(record__label=F("label"))),
        )
        .order_by()
    )
    names = dict(
        get_user_model()
        .objects.filter(pk__in=[row["user_id"] for row in per_user])
        .values_list("pk", "username")
    )
    medians = _median_seconds(live)
    annotators = []
    for row in sorted(per_user, key=lambda row: names[row["user_id"]].lower()):
        annotators.append(
            {
                "user_id": row["user_id"],
                "username": names[row["user_id"]],
                "labels": row["labels"],
                **agreement.speed_figures(
                    timed=row["timed"],
                    total_seconds=(row["total_ms"] or 0) / 1000,
                    median_seconds=medians.get(row["user_id"]),
                ),
                "resolved_records": row["resolved_records"],
                "agreement_with_resolved": (
                    row["resolved_matched"] / row["resolved_records"]
                    if row["resolved_records"]
                    else None
                ),
                "suggestions": agreement.acceptance_figures(
                    shown=row["shown"], accepted=row["accepted"]
                ),
            }
        )

    table = _pair_table(dataset)
    # The confusion matrix's rows: the dataset's labels in their button order, then any other
    # label given on a record with two or more annotations.
    seen = {label for key in table for label in key[2:4]}
    labels = [label for label in dataset.label_choices if label in seen]
    labels += sorted(seen - set(labels))
    confusion = agreement.confusion_from_table(table, labels)
    pairs = [
        {**pair, "first": names.get(pair["first"], ""), "second": names.get(pair["second"], "")}
        for pair in agreement.pairwise_kappas_from_table(table)
    ]
    pairs.sort(key=lambda pair: (pair["first"].lower(), pair["second"].lower()))
    # Records with 2+ annotations: for each, the pairs sum to size * (size - 1) / 2.
    overlapping = sum(count / (size * (size - 1) / 2) for (*_, size), count in table.items())
    return {
        "overlap": dataset.label_overlap,
        "annotations": sum(row["labels"] for row in per_user),
        "annotators": annotators,
        "records_annotated": Record.objects.filter(
            import_run_id=dataset.active_import_id, annotation_count__gte=1
        ).count(),
        "records_overlapping": round(overlapping),
        "alpha": agreement.alpha_from_table(table),
        "pairs": pairs,
        "confusion": confusion,
        # For the page's heat map: each row's cells with their count and share of the row.
        "confusion_rows": [
            {
                **confusion["per_label"][index],
                "cells": [
                    {"count": count, "share": share}
                    for count, share in zip(
                        confusion["matrix"][index], confusion["shares"][index], strict=True
                    )
                ],
            }
            for index in range(len(confusion["labels"]))
        ],
        "suggestions": agreement.acceptance_figures(
            shown=sum(row["shown"] for row in per_user),
            accepted=sum(row["accepted"] for row in per_user),
        ),
    }
