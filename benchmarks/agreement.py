"""Agreement page figures at a million records: counted by the database vs read into Python.

    .venv/bin/python benchmarks/agreement.py [--records 1000000] [--annotators 8] [--repeat 3]

Fills PostgreSQL once (kept for later runs) with --records records and two annotations each
(overlap 2) from --annotators people, with INSERT ... SELECT over generate_series: labels
agree with a planted truth 80% of the time, times 1-9 s, half the labels with a suggestion
shown. Then times, best of --repeat:
  ours, kept   ``dataset_agreement_get`` with the count tables kept and the change stamp
               unchanged (what every page after the first one costs until a label changes)
  ours, changed  the stamp differs and a worker is counting again (a dataset over
               AGREEMENT_SYNC_ANNOTATIONS while labeling goes on): the kept figures, stale
  ours, count  ``dataset_agreement_get`` after the kept tables are removed, counting in the
               request (a small dataset's first page, or one after a label changed): the
               stamp, two GROUP BYs
  ours, first page  the same with the default AGREEMENT_SYNC_ANNOTATIONS: a large dataset's
               first page, which queues the background count (on the broker of
               CELERY_BROKER_URL, nothing listening) and answers at once with its progress
  ours, background count  what the worker then runs (``dataset_agreement_count_execute``):
               the stamp and the tables, with the job's progress after each step
  previous     the service before the tables were kept (benchmarks/agreement_previous.py: four
               queries on every call), the baseline
  python       reading every annotation into Python and computing the same figures with the
               list versions of the pure functions (the first version of the page did this;
               --skip-python leaves it out)
and checks that ours gives the same figures as the previous service, and the same alpha and
kappas as the Python version. Uses --database-url (default
postgres://postgres@127.0.0.1:5432/lepton_bench_agreement, created and migrated if missing).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.labeling import ensure_database, setup_django  # noqa: E402

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/lepton_bench_agreement"
NAME = "agreement benchmark"
LABELS = ["billing", "cards", "transfers", "other"]


def load(records: int, annotator_count: int):
    from django.contrib.auth.models import Group, User
    from django.db import connection, transaction
    from django.utils import timezone

    from datasets_app.models import Dataset, DatasetJob

    dataset = Dataset.objects.filter(name=NAME).first()
    if dataset and dataset.record_count == records:
        print(f"data: {records:,} records already loaded (dataset {dataset.pk})")
        return dataset
    if dataset:
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM datasets_app_annotation WHERE dataset_id = %s", [dataset.pk]
            )
            cursor.execute("DELETE FROM datasets_app_record WHERE dataset_id = %s", [dataset.pk])
        dataset.delete()
    group, _ = Group.objects.get_or_create(name="annotator")
    people = []
    for number in range(annotator_count):
        person, _ = User.objects.get_or_create(username=f"bench-annotator-{number}")
        person.groups.add(group)
        people.append(person.pk)
    started = time.perf_counter()
    with transaction.atomic():
        dataset = Dataset.objects.create(
            name=NAME,
            status=Dataset.Status.READY,
            source_filename="generated.csv",
            source_sha256="0" * 64,
            label_schema=LABELS,
            label_overlap=2,
        )
        job = DatasetJob.objects.create(
            dataset=dataset,
            kind=DatasetJob.Kind.IMPORT,
            status="succeeded",
            finished_at=timezone.now(),
        )
        with connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO datasets_app_record (dataset_id, import_run_id, source_row, text,
                    label, split, file_split, external_id, metadata, flags, is_excluded,
                    exclusion_reason, annotation_count)
                SELECT %s, %s, n, 'text ' || n, '', '', '', '', '{}', '', false, '', 2
                FROM generate_series(1, %s) AS n
                """,
                [dataset.pk, job.pk, records],
            )
            cursor.execute(
                """
                INSERT INTO datasets_app_annotation (dataset_id, record_id, user_id, label,
                    time_spent_ms, suggestion_label, suggestion_probability, suggestion_accepted,
                    client_key, created_at, updated_at)
                SELECT r.dataset_id, r.id, (%s::bigint[])[1 + (r.source_row + k) %% %s],
                    CASE WHEN random() < 0.8 THEN (%s::text[])[1 + (r.source_row / 8) %% 4]
                         ELSE (%s::text[])[1 + floor(random() * 4)::int] END,
                    1000 + floor(random() * 8000)::int,
                    CASE WHEN r.source_row %% 2 = 0 THEN 'billing' ELSE '' END, NULL,
                    CASE WHEN r.source_row %% 2 = 0 THEN random() < 0.7 ELSE NULL END,
                    '', now(), now()
                FROM datasets_app_record r CROSS JOIN (VALUES (0), (1)) AS pair(k)
                WHERE r.import_run_id = %s
                """,
                [people, annotator_count, LABELS, LABELS, job.pk],
            )
            # The resolved label: the two agree, or a tie (no label, as the queue leaves it).
            cursor.execute(
                """
                UPDATE datasets_app_record r SET label = s.label
                FROM (SELECT record_id, MIN(label) AS label FROM datasets_app_annotation
                      WHERE dataset_id = %s GROUP BY record_id HAVING MIN(label) = MAX(label)) s
                WHERE r.id = s.record_id
                """,
                [dataset.pk],
            )
        Dataset.objects.filter(pk=dataset.pk).update(active_import=job, record_count=records)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE datasets_app_record")
        cursor.execute("ANALYZE datasets_app_annotation")
    print(
        f"data: {records:,} records and {2 * records:,} annotations from {annotator_count} "
        f"annotators loaded in {time.perf_counter() - started:.1f} s"
    )
    dataset.refresh_from_db()
    return dataset


def baseline(dataset) -> dict:
    """Every annotation read into Python, figures from the list versions."""
    from datasets_app import agreement
    from datasets_app.models import Annotation

    rows = list(
        Annotation.objects.filter(
            dataset=dataset,
            undone_at__isnull=True,
            user__isnull=False,
            record__import_run_id=dataset.active_import_id,
        ).values_list("record_id", "user_id", "label", "time_spent_ms", "suggestion_accepted")
    )
    annotations = [(record, user, label) for record, user, label, _, _ in rows]
    return {
        "alpha": agreement.krippendorff_alpha(annotations),
        "pairs": agreement.pairwise_kappas(annotations),
        "confusion": agreement.annotator_confusion(annotations),
        "speed": {
            user: agreement.annotator_speed([r[3] / 1000 for r in rows if r[1] == user and r[3]])
            for user in {r[1] for r in rows}
        },
        "suggestions": agreement.acceptance_rate(r[4] for r in rows),
    }


def best_of(repeat: int, function) -> tuple[float, list[float], object]:
    seconds = []
    result = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - started)
    return min(seconds), seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--annotators", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--skip-python", action="store_true", help="leave out reading every annotation"
    )
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB))
    args = parser.parse_args()
    ensure_database(args.database_url)
    setup_django(args.database_url)
    from django.contrib.auth.models import User

    from datasets_app.services.agreement import dataset_agreement_get

    dataset = load(args.records, args.annotators)
    analyst = User.objects.filter(is_superuser=True).first() or User.objects.create_superuser(
        "bench-admin", password=None
    )

    from django.conf import settings
    from django.utils import timezone

    from benchmarks.agreement_previous import previous_agreement_get
    from datasets_app.models import AgreementCounts, DatasetJob
    from datasets_app.services.agreement import dataset_agreement_count_execute

    def counted():
        AgreementCounts.objects.filter(dataset=dataset).delete()
        settings.AGREEMENT_SYNC_ANNOTATIONS = 10**12  # counted in the request, whatever its size
        try:
            return dataset_agreement_get(user=analyst, dataset=dataset)
        finally:
            del settings.AGREEMENT_SYNC_ANNOTATIONS

    count_jobs = DatasetJob.objects.filter(dataset=dataset, kind=DatasetJob.Kind.AGREEMENT)

    def first_page():
        AgreementCounts.objects.filter(dataset=dataset).delete()
        count_jobs.delete()
        return dataset_agreement_get(user=analyst, dataset=dataset)

    progress_at: list[list[float]] = []

    def background():
        AgreementCounts.objects.filter(dataset=dataset).delete()
        count_jobs.delete()
        job = DatasetJob.objects.create(dataset=dataset, kind=DatasetJob.Kind.AGREEMENT)
        started = time.perf_counter()
        steps: list[float] = []
        original = DatasetJob.report

        def report(self, **kwargs):  # when each step's progress is written
            steps.append(time.perf_counter() - started)
            return original(self, **kwargs)

        DatasetJob.report = report
        try:
            done = dataset_agreement_count_execute(job_id=job.pk)
        finally:
            DatasetJob.report = original
        progress_at.append(steps)
        assert done is not None
        assert done.status == "succeeded", done.error_message
        return dataset_agreement_get(user=analyst, dataset=dataset)

    print(f"load before: {os.getloadavg()[0]:.1f}")
    cold, cold_all, figures = best_of(args.repeat, counted)
    first, first_all, counting = best_of(args.repeat, first_page)
    assert counting["counting"]
    assert counting["count_job"] is not None, counting["count_error"]
    count_jobs.delete()
    job_best, job_all, from_job = best_of(args.repeat, background)
    warm, warm_all, kept = best_of(
        args.repeat, lambda: dataset_agreement_get(user=analyst, dataset=dataset)
    )

    def changed():
        # A label changed since the count, a worker already counting it again (claimed, so
        # nothing is queued): what a page of a large dataset costs while labeling goes on.
        AgreementCounts.objects.filter(dataset=dataset).update(
            stamp="changed", recount_started_at=timezone.now()
        )
        return dataset_agreement_get(user=analyst, dataset=dataset)

    stale, stale_all, shown = best_of(args.repeat, changed)
    assert shown["stale"]
    assert shown["annotations"] == figures["annotations"]
    AgreementCounts.objects.filter(dataset=dataset).update(recount_started_at=None)
    before, before_all, previous = best_of(
        args.repeat, lambda: previous_agreement_get(user=analyst, dataset=dataset)
    )
    rows = [
        ("ours, counts kept (stamp unchanged)", warm, warm_all),
        ("ours, changed: kept shown, worker recounts", stale, stale_all),
        ("ours, counted in the request (small dataset)", cold, cold_all),
        ("ours, first page of a large dataset (job queued)", first, first_all),
        ("ours, background count (worker)", job_best, job_all),
        ("previous service (4 queries every call)", before, before_all),
    ]
    if not args.skip_python:
        theirs, theirs_all, reference = best_of(args.repeat, lambda: baseline(dataset))
        rows.append(("python: every annotation read into Python", theirs, theirs_all))
        assert abs(figures["alpha"] - reference["alpha"]) < 1e-9
        assert sorted(round(p["kappa"], 9) for p in figures["pairs"]) == sorted(
            round(p["kappa"], 9) for p in reference["pairs"]
        )
    print(f"load after: {os.getloadavg()[0]:.1f}")

    extra = ("computed_at", "compute_seconds", "stale", "recount_started_at", "recount_percent")
    extra += ("counting", "count_job", "count_error")
    for mine in (figures, kept, shown, from_job):
        mine = {k: v for k, v in mine.items() if k not in extra}
        assert same(mine, previous), "ours differs from the previous service"
    kappas = sorted(pair["kappa"] for pair in figures["pairs"])
    print(
        f"figures: alpha {figures['alpha']:.4f}, {len(figures['pairs'])} annotator pairs, "
        f"kappa median {statistics.median(kappas):.4f}, "
        f"{figures['records_overlapping']:,} records with 2+ annotations (same in all)"
    )
    print(f"\n{'method':46s} {'best s':>8s}   all runs")
    for name, best, runs in rows:
        print(f"{name:46s} {best:8.3f}   {', '.join(f'{s:.3f}' for s in runs)}")
    print(
        f"\nagainst the previous service: counts kept {before / warm:.1f}x faster, changed "
        f"{before / stale:.1f}x, counted {before / cold:.2f}x, first page of a large dataset "
        f"{before / first:.1f}x"
    )
    print(
        f"background count against counting at once: {job_best / cold:.2f}x the time; "
        "progress (stamp, sums, pairs, records) written at (s): "
        + ", ".join(f"{s:.2f}" for s in min(progress_at, key=lambda steps: steps[-1]))
    )
    if not args.skip_python:
        print(f"against reading every annotation: counted {theirs / cold:.1f}x faster")


def same(mine, theirs) -> bool:
    """Equal, floats to 1e-9 (the tables' sums may run in another order)."""
    if isinstance(mine, dict):
        return mine.keys() == theirs.keys() and all(same(mine[k], theirs[k]) for k in mine)
    if isinstance(mine, list | tuple):
        return len(mine) == len(theirs) and all(
            same(a, b) for a, b in zip(mine, theirs, strict=True)
        )
    if isinstance(mine, float) and isinstance(theirs, float):
        return abs(mine - theirs) <= 1e-9 * max(1.0, abs(theirs))
    return mine == theirs


if __name__ == "__main__":
    main()
