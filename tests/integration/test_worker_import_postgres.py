"""An import end to end on PostgreSQL: a real Celery worker takes the job from Redis and COPYs
a generated file (no ../shared/data needed), then the export gives back what the file had."""

from __future__ import annotations

import csv
import io
import time
from collections import Counter

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from datasets_app.models import Dataset, DatasetJob, Record
from datasets_app.selectors import export_stream
from datasets_app.services import dataset_import_start, dataset_upload

pytestmark = pytest.mark.integration

ROWS = 6000
LABELS = ("card", "pin", "top_up", "refund")


def generated_csv() -> tuple[bytes, Counter]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["ref", "text", "label", "channel"])
    labels: Counter = Counter()
    for n in range(ROWS):
        label = LABELS[(n * 7) % len(LABELS)] if n % 11 else LABELS[0]
        labels[label] += 1
        text = f'Message {n}: "quoted", comma, tab\there' if n % 500 == 0 else f"Message {n}"
        writer.writerow([f"r{n}", text, label, ("web", "app", "=phone")[n % 3]])
    return buffer.getvalue().encode(), labels


def wait_for(job: DatasetJob, timeout: float = 120) -> DatasetJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.is_finished:
            return job
        time.sleep(0.1)
    raise AssertionError(f"Import still {job.status} at {job.progress}%: {job.message}")


def test_worker_imports_a_generated_file_into_postgres(on_postgres, redis_worker, make_user):
    redis_worker(queues="default")
    user = make_user("analyst")
    content, labels = generated_csv()
    dataset = dataset_upload(user=user, file=SimpleUploadedFile("generated.csv", content))
    assert dataset.status == Dataset.Status.UPLOADED, dataset.status_message

    job = wait_for(
        dataset_import_start(
            dataset=dataset,
            user=user,
            mapping={"text_columns": ["text"], "label_column": "label", "id_column": "ref"},
        )
    )

    assert job.status == "succeeded", job.error_message
    assert job.rows_done == ROWS
    assert job.started_at is not None
    assert job.finished_at is not None
    dataset.refresh_from_db()
    assert dataset.status == Dataset.Status.READY
    assert dataset.active_import_id == job.pk
    assert dataset.record_count == ROWS
    assert dataset.label_counts == dict(labels)
    records = Record.objects.filter(import_run=job)
    assert records.count() == ROWS
    first = records.get(source_row=1)
    assert (first.text, first.label, first.external_id, first.metadata) == (
        'Message 0: "quoted", comma, tab\there',
        "card",
        "r0",
        {"channel": "web"},
    )
    exported = list(csv.reader(io.StringIO("".join(export_stream(dataset=dataset, fmt="csv")))))
    assert exported[0] == ["source_row", "text", "label", "split", "id", "channel"]
    assert len(exported) == ROWS + 1
    assert exported[3] == ["3", "Message 2", LABELS[14 % 4], "", "r2", "'=phone"]
