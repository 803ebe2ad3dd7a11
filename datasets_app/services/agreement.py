"""The agreement page's figures for one dataset, counted by the database and finished by the
pure functions of ``datasets_app.agreement``.

Only the current import's records count, and only annotations not undone. The database
counts the pair table (annotator pair x their two labels x annotations on the record) with one
GROUP BY and the per-annotator sums (with each one's times in 0.1 s steps, for the median)
with another, so a million annotations cost two queries and tables of a few hundred rows, not
a million Python tuples. Those count tables are kept (``AgreementCounts``) with a change stamp
of the dataset's annotations and records (their latest change from an index, and one scan of
the records without joins); a page whose stamp is unchanged reads the kept tables instead of
counting again, and a large dataset's page shows the kept ones, marked out of date, while a
worker counts again (agreement_recount_task). A large dataset without kept tables is counted
the first time by a background job (DatasetJob kind "agreement") with a progress bar, so its
page answers at once. The figures about named people's work are for those who manage the
dataset (analysts and admins), so reading them takes the right to change the dataset.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import (
    Case,
    Count,
    F,
    IntegerField,
    Max,
    OuterRef,
    Q,
    Subquery,
    Sum,
    When,
)
from django.utils import timezone

from datasets_app import agreement
from datasets_app.models import AgreementCounts, Annotation, Dataset, DatasetJob, Record
from datasets_app.services.jobs import JobLost, dataset_job_run, job_succeed_in_transaction
from lepton_web.access import access_check
from lepton_web.jobs import ACTIVE_STATUSES, BrokerUnavailable

logger = logging.getLogger(__name__)

# Up to this many annotations (at the last count) a changed dataset's page counts at once;
# above, it shows the kept figures, out of date, while a worker counts. Counting took 1.2 s at
# 400,000 annotations and 5 s at 2M on PostgreSQL under load 8 (benchmarks/agreement.py).
# Setting: AGREEMENT_SYNC_ANNOTATIONS.
SYNC_ANNOTATIONS = 200_000
# A recount claimed this long ago without result is taken as lost (the task's hard limit is
# 1,900 s, but a lost worker should not hide new figures for half an hour).
RECOUNT_LOST = timedelta(minutes=10)

# One row per annotator pair, their two labels and the record's annotation count: a parallel
# hash self-join with a tiny hash aggregate on top (a CTE version sorted 2M rows: 6x slower;
# grouping each record's annotations into arrays first: 2.6x slower).
# A record's size is its annotations with an author: the kept annotation_count also counts
# those of a deleted person (their author emptied), which the pairs leave out, so those are
# taken off (a small join: people are rarely deleted; the (dataset, user, ...) index finds
# them). Counting them would weigh the record's pairs by 1/(m-1) with the wrong m and
# misstate alpha and the overlapping records.
_PAIRS_SQL = """
SELECT x.user_id, y.user_id, x.label, y.label, r.annotation_count - COALESCE(o.n, 0), COUNT(*)
FROM {annotation} x
JOIN {annotation} y ON y.record_id = x.record_id AND x.user_id < y.user_id
JOIN {record} r ON r.id = x.record_id
LEFT JOIN (
  SELECT record_id, COUNT(*) AS n FROM {annotation}
  WHERE dataset_id = %s AND user_id IS NULL AND undone_at IS NULL GROUP BY record_id
) o ON o.record_id = x.record_id
WHERE x.dataset_id = %s AND y.dataset_id = %s AND r.import_run_id = %s
  AND r.annotation_count >= 2 AND r.annotation_count - COALESCE(o.n, 0) >= 2
  AND x.undone_at IS NULL AND y.undone_at IS NULL
GROUP BY x.user_id, y.user_id, x.label, y.label, r.annotation_count - COALESCE(o.n, 0)
"""

# The records' half of the change stamp: their count, and their labels folded into one sum
# weighted by id, so that any label changed (by the queue, a bulk label, its undo, a review, an
# edit) changes it, swaps between records included. (Their kept annotation counts change only
# with an annotation, which moves the annotations' half.) One pass without joins over what the
# (import_run, label, id) index holds, so PostgreSQL can read the index alone where the
# records' texts make the table large (0.15-0.25 s at 1M short records under load either way).
# PostgreSQL hashes with hashtext; SQLite with a function registered below (each term taken
# modulo a prime: its SUM fails on an overflow).
_RECORD_STAMP_SQL = {
    "postgresql": """
        SELECT COUNT(*), SUM(hashtext(label)::bigint * (id %% 2147483647))
        FROM {record} WHERE import_run_id = %s""",
    "sqlite": """
        SELECT COUNT(*), SUM(lepton_crc32(label) * (id %% 1000003) %% 1000000007)
        FROM {record} WHERE import_run_id = %s""",
}
# The annotations' half is their latest change: every write sets updated_at (a new label, a
# changed one, undo and redo), found per author from the (dataset, user, -updated_at) index in
# a few milliseconds instead of scanning them all (0.6 s at 2M under load). Deleting annotations
# deletes their records (the records' count changes); deleting a person empties the author,
# which _counts_for checks. A write saved before the latest one but committed after the stamp
# was read would not move it: see _settled.
SETTLE = timedelta(seconds=60)


def _pair_table(dataset: Dataset) -> dict[tuple[int, int, str, str, int], int]:
    sql = _PAIRS_SQL.format(
        annotation=connection.ops.quote_name(Annotation._meta.db_table),
        record=connection.ops.quote_name(Record._meta.db_table),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [dataset.pk, dataset.pk, dataset.pk, dataset.active_import_id])
        return {tuple(row[:5]): int(row[5]) for row in cursor.fetchall()}


@dataclass(frozen=True)
class _Stamp:
    text: str  # what the figures depend on
    latest: datetime | None  # the latest annotation change it includes
    read_at: datetime


def _change_stamp(dataset: Dataset) -> _Stamp:
    read_at = timezone.now()
    latest_by_author = Subquery(
        Annotation.objects.filter(dataset=dataset, user=OuterRef("pk"))
        .order_by("-updated_at")
        .values("updated_at")[:1]
    )
    changes = [
        get_user_model().objects.annotate(latest=latest_by_author).aggregate(x=Max("latest"))["x"],
        Annotation.objects.filter(dataset=dataset, user__isnull=True).aggregate(
            x=Max("updated_at")
        )["x"],
    ]
    latest = max((change for change in changes if change is not None), default=None)
    vendor = "postgresql" if connection.vendor == "postgresql" else "sqlite"
    sql = _RECORD_STAMP_SQL[vendor].format(record=connection.ops.quote_name(Record._meta.db_table))
    with connection.cursor() as cursor:
        if vendor == "sqlite":
            connection.connection.create_function("lepton_crc32", 1, _crc32, deterministic=True)
        cursor.execute(sql, [dataset.active_import_id])
        records, weighted = cursor.fetchone()
    text = json.dumps(
        [dataset.active_import_id, latest.isoformat() if latest else None, records, str(weighted)]
    )
    return _Stamp(text, latest, read_at)


def _settled(kept: AgreementCounts) -> bool:
    """Whether every annotation change up to the kept stamp had committed when it was read.
    A write takes updated_at when saved and is seen when committed, a few milliseconds later;
    one that is not seen yet while a later one is could leave the latest change where it was.
    So kept tables whose stamp was read within SETTLE of their latest change hold only until
    SETTLE after that reading; then they are counted again, once, with a stamp read later."""
    if kept.latest_change is None or kept.stamp_read_at is None:
        return kept.stamp_read_at is not None
    return (
        kept.latest_change < kept.stamp_read_at - SETTLE
        or timezone.now() < kept.stamp_read_at + SETTLE
    )


def _crc32(text: str | None) -> int:
    return zlib.crc32((text or "").encode())


# The background count's progress after each of its steps (the stamp, the per-annotator sums,
# the pair table, the annotated records), in percent: when each ended at 1M records and 2M
# annotations (0.39, 4.34, 10.72 and 11.05 s of 11.57 s; benchmarks/agreement.py prints them).
COUNT_STEPS = {"stamp": 3, "sums": 38, "pairs": 93, "records": 96}


def _count(dataset: Dataset, *, report: Callable[[str], None] | None = None) -> dict:
    """The count tables the figures are made from (JSON-ready: kept in AgreementCounts).
    ``report(step)`` is called after each step ("sums", "pairs", "records"): the background
    count's progress. (Counting in parts of the records, for a smoother bar, cost 3.3x the
    time at 1M records: each part joined the records again.)"""
    report = report or (lambda step: None)
    live = Annotation.objects.filter(
        dataset=dataset,
        undone_at__isnull=True,
        user__isnull=False,
        record__import_run_id=dataset.active_import_id,
    )
    # A record's resolved label says something about an annotator only where others labeled
    # it too (with one annotation it is that annotation).
    judged = Q(record__annotation_count__gte=2) & ~Q(record__label="")
    # Per annotator and time in 0.1 s steps (None: no time measured): the sums, and the counts
    # the median is found from, in one join (a second one for the medians cost 1.3 s at 2M
    # annotations). A few thousand rows, instead of sorting every time for a percentile.
    per_user_tenths = (
        live.annotate(
            tenths=Case(
                When(time_spent_ms__gt=0, then=F("time_spent_ms") / 100),
                default=None,
                output_field=IntegerField(),
            )
        )
        .values("user_id", "tenths")
        .annotate(
            labels=Count("id"),
            total_ms=Sum("time_spent_ms", filter=Q(time_spent_ms__gt=0)),
            shown=Count("id", filter=Q(suggestion_accepted__isnull=False)),
            accepted=Count("id", filter=Q(suggestion_accepted=True)),
            resolved_records=Count("id", filter=judged),
            resolved_matched=Count("id", filter=judged & Q(record__label=F("label"))),
        )
        .order_by()
    )
    sums = [
        [
            row["user_id"],
            row["tenths"],
            row["labels"],
            row["total_ms"] or 0,
            row["shown"],
            row["accepted"],
            row["resolved_records"],
            row["resolved_matched"],
        ]
        for row in per_user_tenths
    ]
    report("sums")
    pairs = [[*key, count] for key, count in _pair_table(dataset).items()]
    report("pairs")
    annotated = Record.objects.filter(
        import_run_id=dataset.active_import_id, annotation_count__gte=1
    ).count()
    report("records")
    return {"per_user_tenths": sums, "pairs": pairs, "records_annotated": annotated}


@contextmanager
def _without_jit() -> Iterator[None]:
    """PostgreSQL overestimates these joins and JIT-compiles them: measured 2.2 s of JIT for
    0.1 s of work on 40,000 annotations (benchmarks/agreement.py). Off for this transaction."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL jit = off")
        yield


@contextmanager
def _without_jit_in_session() -> Iterator[None]:
    """JIT off (see _without_jit) for this connection's statements while the block runs, not
    in one transaction: the background count's steps each commit their progress."""
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET jit = off")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET jit")


def _sync_limit() -> int:
    return getattr(settings, "AGREEMENT_SYNC_ANNOTATIONS", SYNC_ANNOTATIONS)


def _more_annotations_than(dataset: Dataset, limit: int) -> bool:
    """Whether the dataset has more than ``limit`` annotations: reads at most limit + 1
    entries of an index (milliseconds), not all of them."""
    return Annotation.objects.filter(dataset=dataset).order_by()[: limit + 1].count() > limit


def _counts_for(dataset: Dataset) -> tuple[AgreementCounts | None, bool]:
    """The kept count tables and whether they are out of date. Unchanged stamp: the kept
    ones. Changed: counted now, unless the dataset has more than AGREEMENT_SYNC_ANNOTATIONS
    annotations: then, with tables kept before, those, out of date, while a worker counts
    again (one at a time; a claim left by a lost worker is taken over after RECOUNT_LOST);
    with none kept yet, None (a background job counts them: dataset_agreement_count_start)."""
    with _without_jit():
        kept = AgreementCounts.objects.filter(dataset=dataset).first()
        if kept is None and _more_annotations_than(dataset, _sync_limit()):
            return None, True  # no stamp needed (a pass over the records: half the time)
        stamp = _change_stamp(dataset)
        if kept is not None and kept.stamp == stamp.text and _settled(kept) and _authors_kept(kept):
            return kept, False
        if kept is None:
            return _recount(dataset, stamp), False
        if _annotations(kept.counts) <= _sync_limit():
            return _recount(dataset, stamp), False
        now = timezone.now()
        claimed = (
            AgreementCounts.objects.filter(pk=kept.pk)
            .filter(
                Q(recount_started_at__isnull=True) | Q(recount_started_at__lt=now - RECOUNT_LOST)
            )
            .update(recount_started_at=now)
        )
        if claimed:
            kept.recount_started_at = now
            transaction.on_commit(partial(_recount_publish, kept, dataset.pk, now))
        return kept, True


def _recount_publish(kept: AgreementCounts, dataset_id: int, claimed_at: datetime) -> None:
    """Queue the recount claimed at ``claimed_at``. With the broker down: one quick attempt
    (not kombu's retries of several seconds, which would hang the page), then the claim is
    given back, so the page shows the kept figures out of date, without a recount said to be
    under way, and its next refresh tries again (not a 500, nor a claim that blocks recounts
    for RECOUNT_LOST)."""
    from kombu.exceptions import OperationalError as BrokerOperationalError

    from datasets_app.tasks import agreement_recount_task
    from lepton_web.celery import app

    try:
        with app.connection_for_write() as broker:
            broker.ensure_connection(max_retries=1, interval_start=0, timeout=2)
            agreement_recount_task.apply_async(args=[dataset_id], retry=False, connection=broker)
    except (BrokerOperationalError, OSError) as error:
        logger.warning("Could not queue the agreement recount of dataset %s: %s", dataset_id, error)
        AgreementCounts.objects.filter(pk=kept.pk, recount_started_at=claimed_at).update(
            recount_started_at=None
        )
        kept.recount_started_at = None


def _annotations(counts: dict) -> int:
    return sum(row[2] for row in counts["per_user_tenths"])


def _authors_kept(kept: AgreementCounts) -> bool:
    """Whether everybody counted still exists (deleting a person empties their annotations'
    author without changing updated_at)."""
    authors = {row[0] for row in kept.counts["per_user_tenths"]}
    return get_user_model().objects.filter(pk__in=authors).count() == len(authors)


def _recount(dataset: Dataset, stamp: _Stamp) -> AgreementCounts:
    """Count and keep the tables under ``stamp``. The stamp is read before: a label given
    while counting makes the kept tables newer than their stamp, so the next page counts again
    (never older tables under a newer stamp)."""
    started = time.perf_counter()
    counts = _count(dataset)
    return _keep(dataset, stamp, counts, time.perf_counter() - started)


def _keep(dataset: Dataset, stamp: _Stamp, counts: dict, seconds: float) -> AgreementCounts:
    kept, _ = AgreementCounts.objects.update_or_create(
        dataset=dataset,
        defaults={
            "stamp": stamp.text,
            "counts": counts,
            "computed_at": timezone.now(),
            "seconds": seconds,
            "recount_started_at": None,
            "stamp_read_at": stamp.read_at,
            "latest_change": stamp.latest,
        },
    )
    return kept


def _count_jobs(dataset: Dataset):
    return DatasetJob.objects.filter(dataset=dataset, kind=DatasetJob.Kind.AGREEMENT).order_by(
        "-created_at", "-id"
    )


def dataset_agreement_count_start(*, user, dataset: Dataset, again: bool = False) -> DatasetJob:
    """The background job that counts a large dataset's agreement figures for the first time:
    the one queued or running, else a new one. A count that failed is not started again by
    itself (the page shows its error) unless ``again`` (the page's Count again button).
    Raises BrokerUnavailable when the task queue cannot be reached (nothing is queued)."""
    access_check(user, "dataset", "change")
    latest = _count_jobs(dataset).first()
    if latest is not None and (
        latest.is_active or (latest.status == DatasetJob.Status.FAILED and not again)
    ):
        return latest
    try:
        with transaction.atomic():
            job = DatasetJob.objects.create(
                dataset=dataset,
                kind=DatasetJob.Kind.AGREEMENT,
                created_by=user if user.is_authenticated else None,
                message="Waiting for a worker to count…",
            )
    except IntegrityError:  # another page started it a moment ago
        return _count_jobs(dataset).filter(status__in=ACTIVE_STATUSES).first() or latest
    job.enqueue_or_delete()
    return job


def dataset_agreement_count_execute(*, job_id: int) -> DatasetJob | None:
    """The worker's half of the first count: the stamp, then the tables, with the job's
    progress after each step (COUNT_STEPS), kept together with the job's success."""

    def work(job: DatasetJob) -> None:
        dataset = job.dataset
        started = time.perf_counter()

        def report(step: str) -> None:
            percent = COUNT_STEPS[step]
            if not job.report(progress=percent, message=f"Counting agreement… {percent}%"):
                raise JobLost()

        # Each step commits on its own, so that its progress is seen at once. The stamp is read
        # first: a label given meanwhile makes the kept tables newer than their stamp, so the
        # next page counts again (never older tables under a newer stamp).
        with _without_jit_in_session():
            stamp = _change_stamp(dataset)
            report("stamp")
            counts = _count(dataset, report=report)
        with transaction.atomic():
            _keep(dataset, stamp, counts, time.perf_counter() - started)
            job_succeed_in_transaction(job, message="Counted.")

    return dataset_job_run(
        job_id=job_id, kind=DatasetJob.Kind.AGREEMENT, work=work, what="Counting agreement"
    )


def dataset_agreement_recount(*, dataset_id: int) -> AgreementCounts | None:
    """The worker's half of the page of a large dataset: count the tables again (nothing if
    the dataset is gone)."""
    dataset = Dataset.objects.filter(pk=dataset_id).first()
    if dataset is None:
        return None
    with _without_jit():
        return _recount(dataset, _change_stamp(dataset))


def dataset_agreement_get(*, user, dataset: Dataset) -> dict:
    """Every figure of the page and the API: pairs' kappa, alpha, the confusion between
    annotators, and per annotator their labels, speed, agreement with the resolved label and
    suggestion acceptance; when those were counted and how long that took; and, for a large
    dataset changed since, that they are out of date and how far the worker counting them
    again has got (by the time the last count took).

    A large dataset counted for the first time has no figures yet: then only ``counting``
    (True), ``overlap``, ``count_job`` (the background job counting them, with its progress;
    None when the task queue could not be reached) and ``count_error`` (a sentence, or None)."""
    access_check(user, "dataset", "change")
    kept, stale = _counts_for(dataset)
    if kept is None:
        try:
            job = dataset_agreement_count_start(user=user, dataset=dataset)
        except BrokerUnavailable as error:
            job, count_error = None, f"The agreement figures could not be counted: {error}"
        else:
            count_error = job.error_message if job.status == DatasetJob.Status.FAILED else None
        return {
            "counting": True,
            "overlap": dataset.label_overlap,
            "count_job": job,
            "count_error": count_error,
        }
    started = kept.recount_started_at if stale else None
    progress = None
    if started is not None:
        elapsed = (timezone.now() - started).total_seconds()
        progress = min(0.95, elapsed / kept.seconds) if kept.seconds > 0 else 0.0
    return {
        **_figures(dataset, kept.counts),
        "counting": False,
        "count_job": None,
        "count_error": None,
        "computed_at": kept.computed_at,
        "compute_seconds": kept.seconds,
        "stale": stale,
        "recount_started_at": started,
        "recount_percent": None if progress is None else round(100 * progress),
    }


def _figures(dataset: Dataset, counts: dict) -> dict:
    per_user: dict[int, dict] = {}
    histograms: dict[int, dict[float, int]] = {}
    for user_id, tenths, labels, total_ms, shown, accepted, judged, matched in counts[
        "per_user_tenths"
    ]:
        row = per_user.setdefault(
            user_id,
            dict.fromkeys(
                (
                    "labels",
                    "timed",
                    "total_ms",
                    "shown",
                    "accepted",
                    "resolved_records",
                    "resolved_matched",
                ),
                0,
            ),
        )
        row["labels"] += labels
        row["total_ms"] += total_ms
        row["shown"] += shown
        row["accepted"] += accepted
        row["resolved_records"] += judged
        row["resolved_matched"] += matched
        if tenths is not None:
            row["timed"] += labels
            histograms.setdefault(user_id, {})[tenths / 10] = labels
    names = dict(
        get_user_model().objects.filter(pk__in=list(per_user)).values_list("pk", "username")
    )
    # A person deleted since the counting is left out, as a recount would (their annotations
    # lose their author).
    per_user = {user_id: row for user_id, row in per_user.items() if user_id in names}
    annotators = []
    for user_id, row in sorted(per_user.items(), key=lambda item: names[item[0]].lower()):
        annotators.append(
            {
                "user_id": user_id,
                "username": names[user_id],
                "labels": row["labels"],
                **agreement.speed_figures(
                    timed=row["timed"],
                    total_seconds=row["total_ms"] / 1000,
                    median_seconds=agreement.median_from_counts(histograms.get(user_id, {})),
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

    table = {tuple(row[:5]): row[5] for row in counts["pairs"]}
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
        "annotations": sum(row["labels"] for row in per_user.values()),
        "annotators": annotators,
        "records_annotated": counts["records_annotated"],
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
            shown=sum(row["shown"] for row in per_user.values()),
            accepted=sum(row["accepted"] for row in per_user.values()),
        ),
    }
