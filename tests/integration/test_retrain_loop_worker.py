"""Retrain on new labels end to end on PostgreSQL and Redis: the API starts the loop, one real
worker (default and gpu queues) snapshots, fine-tunes the tiny model from the current version,
registers the new version and pre-labels the unlabeled records; the queue's suggestions come
from the new version."""

from __future__ import annotations

import time

import pytest
from rest_framework.test import APIClient

from datasets_app.models import RecordSuggestion
from models_app.models import ModelVersion
from tests.models_app.tiny_classifier import save_tiny_classifier
from tests.training_app.retrain_helpers import UNLABELED, labeled_dataset_with_version
from training_app.models import RetrainLoop

pytestmark = pytest.mark.integration


def wait_loop(loop_id: int, timeout: float = 240) -> RetrainLoop:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        loop = RetrainLoop.objects.get(pk=loop_id)
        if not loop.is_active:
            return loop
        time.sleep(0.2)
    raise AssertionError(f"Retrain loop {loop_id} did not finish: {loop.step} {loop.message}")


def test_a_worker_runs_the_whole_retrain_loop_started_from_the_api(
    on_postgres, redis_worker, make_user, tmp_path
):
    user = make_user("analyst")
    dataset, version = labeled_dataset_with_version(
        save_tiny_classifier(tmp_path / "tiny"), user=user
    )
    worker = redis_worker(queues="default,gpu", TRAINING_WORK_DIR=str(tmp_path / "work"))
    client = APIClient()
    client.force_authenticate(user)

    started = client.post(f"/api/v1/datasets/{dataset.pk}/retrain/", {}, format="json")
    assert started.status_code == 202, started.json()
    assert started.json()["from_version"] == version.pk
    loop = wait_loop(started.json()["id"])

    assert loop.step == "succeeded", f"{loop.error_message}\n{worker.log()}"
    new_version = ModelVersion.objects.get(training_run=loop.training_run)
    assert loop.training_run.start_version == version
    suggestions = RecordSuggestion.objects.filter(dataset=dataset)
    assert suggestions.count() == UNLABELED
    assert set(suggestions.values_list("source", flat=True)) == {f"pre-label: {new_version}"}
    shown = client.get(f"/api/v1/datasets/{dataset.pk}/retrain/").json()["loop"]
    assert (shown["step"], shown["percent"], shown["new_version"]) == (
        "succeeded",
        100,
        new_version.pk,
    )

    refused = client.post(f"/api/v1/datasets/{dataset.pk}/pre-labels/", {}, format="json")
    assert refused.status_code == 400
    again = client.post(
        f"/api/v1/datasets/{dataset.pk}/pre-labels/", {"version": version.pk}, format="json"
    )
    assert again.status_code == 202, again.json()
    deadline = time.monotonic() + 120
    while client.get(f"/api/v1/datasets/{dataset.pk}/pre-labels/").json()["pre_labels"][
        "status"
    ] in ("queued", "running"):
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.2)
    latest = client.get(f"/api/v1/datasets/{dataset.pk}/pre-labels/").json()["pre_labels"]
    assert (latest["status"], latest["suggestions_stored"]) == ("succeeded", UNLABELED)
    sources = set(RecordSuggestion.objects.filter(dataset=dataset).values_list("source", flat=True))
    assert sources == {f"pre-label: {version}"}  # the older model's pre-labels replaced them
