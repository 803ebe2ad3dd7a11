"""Agreement page figures at a million records: counted by the database vs read into Python.

    .venv/bin/python benchmarks/agreement.py [--records 1000000] [--annotators 8] [--repeat 3]

Fills PostgreSQL once (kept for later runs) with --records records and two annotations each
(overlap 2) from --annotators people, with INSERT ... SELECT over generate_series: labels
agree with a planted truth 80% of the time, times 1-9 s, half the labels with a suggestion
shown. Then times, best of --repeat:
  ours      ``dataset_agreement_get`` (two GROUP BYs; only the pair table reaches Python)
  baseline  reading every annotation into Python and computing the same figures with the list
            versions of the pure functions (the first version of the page did this)
and checks that both give the same alpha and kappas. Uses --database-url (default
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

    ours, ours_all, figures = best_of(
        args.repeat, lambda: dataset_agreement_get(user=analyst, dataset=dataset)
    )
    theirs, theirs_all, reference = best_of(args.repeat, lambda: baseline(dataset))

    assert abs(figures["alpha"] - reference["alpha"]) < 1e-9, (figures["alpha"], reference["alpha"])
    kappas = sorted(round(pair["kappa"], 9) for pair in figures["pairs"])
    assert kappas == sorted(round(pair["kappa"], 9) for pair in reference["pairs"])
    print(
        f"figures: alpha {figures['alpha']:.4f}, {len(figures['pairs'])} annotator pairs, "
        f"kappa median {statistics.median(kappas):.4f}, "
        f"{figures['records_overlapping']:,} records with 2+ annotations (same in both)"
    )
    print(f"\n{'method':44s} {'best s':>8s}   all runs")
    print(
        f"{'ours: counted by the database':44s} {ours:8.2f}   {', '.join(f'{s:.2f}' for s in ours_all)}"
    )
    print(
        f"{'baseline: every annotation read into Python':44s} {theirs:8.2f}   {', '.join(f'{s:.2f}' for s in theirs_all)}"
    )
    print(f"\nours is {theirs / ours:.1f}x faster than the baseline")


if __name__ == "__main__":
    main()
