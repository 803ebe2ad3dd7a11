"""The batch prediction API: start, read, cancel, download; errors by field; roles."""

from __future__ import annotations

import csv
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from models_app.batch_prediction import batch_prediction_execute
from models_app.models import BatchPrediction
from tests.conftest import broker_for_this_process
from tests.models_app.batch_helpers import toy_snapshot, toy_version


@pytest.fixture
def version(db, tmp_path_factory):
    return toy_version(tmp_path_factory)


@pytest.fixture
def broker(redis_url):
    with broker_for_this_process(redis_url):
        yield


def test_a_snapshot_batch_runs_and_its_csv_downloads(api_client_as, version, broker):
    client = api_client_as("analyst")
    snapshot = toy_snapshot(rows=8)

    started = client.post(
        f"/api/v1/model-versions/{version.id}/batch-predictions/",
        {"snapshot": snapshot.id, "split": "test"},
        format="json",
    )
    assert started.status_code == 202, started.json()
    batch_id = started.json()["id"]
    assert started.json()["status"] == "queued"
    assert started.json()["download_url"] is None
    batch_prediction_execute(batch_id=batch_id)

    detail = client.get(f"/api/v1/batch-predictions/{batch_id}/").json()
    assert detail["status"] == "succeeded"
    assert detail["summary"]["accuracy"] == 1.0
    assert detail["rows_done"] == 4
    download = client.get(detail["download_url"])
    assert download.status_code == 200
    assert download["Content-Type"] == "text/csv; charset=utf-8"
    body = b"".join(download.streaming_content).decode()
    assert len(list(csv.DictReader(io.StringIO(body)))) == 4
    listed = client.get(f"/api/v1/model-versions/{version.id}/batch-predictions/").json()
    assert [item["id"] for item in listed] == [batch_id]


def test_an_uploaded_file_starts_a_batch(api_client_as, version, broker):
    client = api_client_as("analyst")
    upload = SimpleUploadedFile("texts.csv", b"text\ngood film\n")

    response = client.post(
        f"/api/v1/model-versions/{version.id}/batch-predictions/",
        {"file": upload, "output_format": "jsonl"},
        format="multipart",
    )

    assert response.status_code == 202, response.json()
    assert response.json()["source"] == "upload"
    assert response.json()["input_filename"] == "texts.csv"
    batch_prediction_execute(batch_id=response.json()["id"])
    assert BatchPrediction.objects.get().status == "succeeded"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({}, "snapshot", "Give a snapshot id or upload a file"),
        ({"snapshot": 1, "split": "holdout"}, "split", "not a valid choice"),
        ({"snapshot": 1, "store_suggestions": True, "split": "train"}, "split", "no records"),
    ],
)
def test_bad_requests_answer_400_by_field(api_client_as, version, broker, body, field, message):
    client = api_client_as("analyst")
    snapshot = toy_snapshot(rows=1)
    if "snapshot" in body:
        body = {**body, "snapshot": snapshot.id}

    response = client.post(
        f"/api/v1/model-versions/{version.id}/batch-predictions/", body, format="json"
    )

    assert response.status_code == 400
    assert message in " ".join(response.json()["errors"][field])
    assert not BatchPrediction.objects.exists()


def test_a_missing_snapshot_is_a_404(api_client_as, version):
    response = api_client_as("analyst").post(
        f"/api/v1/model-versions/{version.id}/batch-predictions/",
        {"snapshot": 2**31 - 1},
        format="json",
    )

    assert response.status_code == 404


def test_a_viewer_reads_but_cannot_start_or_cancel(api_client_as, version, broker):
    snapshot = toy_snapshot(rows=2)
    analyst = api_client_as("analyst")
    batch_id = analyst.post(
        f"/api/v1/model-versions/{version.id}/batch-predictions/",
        {"snapshot": snapshot.id},
        format="json",
    ).json()["id"]
    viewer = api_client_as("viewer")

    started = viewer.post(
        f"/api/v1/model-versions/{version.id}/batch-predictions/",
        {"snapshot": snapshot.id},
        format="json",
    )
    cancelled = viewer.post(f"/api/v1/batch-predictions/{batch_id}/cancel/")

    assert started.status_code == 403
    assert cancelled.status_code == 403
    assert viewer.get(f"/api/v1/batch-predictions/{batch_id}/").json()["status"] == "queued"


def test_cancel_stops_a_queued_batch_and_refuses_a_finished_one(api_client_as, version, broker):
    client = api_client_as("analyst")
    batch_id = client.post(
        f"/api/v1/model-versions/{version.id}/batch-predictions/",
        {"snapshot": toy_snapshot(rows=2).id},
        format="json",
    ).json()["id"]

    first = client.post(f"/api/v1/batch-predictions/{batch_id}/cancel/")
    second = client.post(f"/api/v1/batch-predictions/{batch_id}/cancel/")

    assert first.status_code == 200
    assert first.json()["status"] == "cancelled"
    assert second.status_code == 400
    assert second.json()["detail"] == "This batch prediction has already finished."
    download = client.get(f"/api/v1/batch-predictions/{batch_id}/download/")
    assert download.status_code == 404
    assert download.json()["detail"] == "This batch prediction has no file to download yet."
