"""Batch prediction end to end on PostgreSQL and Redis: the API starts it, a real Celery worker
on the default queue predicts, stores suggestions on the records, and the file downloads."""

from __future__ import annotations

import csv
import io
import json
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from datasets_app.models import RecordSuggestion
from models_app.models import BatchPrediction
from tests.models_app.batch_helpers import toy_snapshot, toy_version

pytestmark = pytest.mark.integration


def wait_finished(batch_id: int, timeout: float = 180) -> BatchPrediction:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = BatchPrediction.objects.get(pk=batch_id)
        if batch.is_finished:
            return batch
        time.sleep(0.2)
    raise AssertionError(f"Batch prediction {batch_id} did not finish: {batch.message}")


def expected_label(text: str) -> str:
    return "positive" if {"good", "great"} & set(text.lower().split()) else "negative"


def test_a_worker_predicts_a_snapshot_and_an_upload_and_stores_suggestions(
    on_postgres, redis_worker, make_user, tmp_path_factory
):
    worker = redis_worker(queues="default")
    user = make_user("analyst")
    client = APIClient()
    client.force_authenticate(user)
    version = toy_version(tmp_path_factory)
    snapshot = toy_snapshot(rows=600, user=user)

    started = client.post(
        f"/api/v1/model-versions/{version.id}/batch-predictions/",
        {"snapshot": snapshot.id, "split": "test", "store_suggestions": True},
        format="json",
    )
    assert started.status_code == 202, started.json()
    uploaded = client.post(
        f"/api/v1/model-versions/{version.id}/batch-predictions/",
        {
            "file": SimpleUploadedFile("more.tsv", b"text\tlabel\ngreat plot\tpositive\n"),
            "output_format": "jsonl",
        },
        format="multipart",
    )
    assert uploaded.status_code == 202, uploaded.json()

    batch = wait_finished(started.json()["id"])
    assert batch.status == "succeeded", f"{batch.error_message}\n{worker.log()}"
    assert (batch.rows_total, batch.rows_done, batch.progress) == (300, 300, 100)
    assert batch.summary["accuracy"] == 1.0
    assert batch.summary["macro_f1"] == 1.0
    assert batch.suggestions_stored == 300
    suggestions = RecordSuggestion.objects.filter(dataset=snapshot.dataset).select_related("record")
    assert suggestions.count() == 300
    assert all(s.label == expected_label(s.record.text) for s in suggestions)
    assert {s.record.split for s in suggestions} == {"test"}
    download = client.get(f"/api/v1/batch-predictions/{batch.id}/download/")
    rows = list(csv.DictReader(io.StringIO(b"".join(download.streaming_content).decode())))
    assert len(rows) == 300
    assert all(row["prediction"] == expected_label(row["text"]) for row in rows)

    second = wait_finished(uploaded.json()["id"])
    assert second.status == "succeeded", f"{second.error_message}\n{worker.log()}"
    body = client.get(f"/api/v1/batch-predictions/{second.id}/download/")
    lines = [json.loads(line) for line in b"".join(body.streaming_content).decode().splitlines()]
    assert [(line["text"], line["label"], line["prediction"]) for line in lines] == [
        ("great plot", "positive", "positive")
    ]
