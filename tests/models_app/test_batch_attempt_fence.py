"""A batch prediction's file and suggestions are published only by the attempt that still owns
the job: a worker the sweeper gave up on (paused, not dead) that wakes after its last progress
report stores its file under a name of its own and loses the publish, so it never overwrites or
deletes what the current attempt published, and stores no suggestions. Two attempts of one job
run here in one process, the old one resumed after the new one finished."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from datasets_app.models import RecordSuggestion
from lepton_web.jobs import jobs_sweep
from models_app import batch_prediction as batch_module
from models_app.batch_prediction import batch_prediction_execute, batch_prediction_start
from models_app.models import BatchPrediction
from models_app.runtime.predictor import Predictor
from tests.conftest import broker_for_this_process
from tests.models_app.batch_helpers import toy_snapshot, toy_version


@pytest.fixture
def version(db, tmp_path_factory):
    return toy_version(tmp_path_factory)


@pytest.fixture
def broker(redis_url):
    with broker_for_this_process(redis_url):
        yield


def _hand_over_during(monkeypatch, batch, *, at_progress: int, change_first=None):
    """When the first attempt reports `at_progress`, the sweeper declares it lost and a second
    attempt runs the job to the end; the first attempt's report still went through (it was
    sent just before), so it carries on, stale."""
    report = batch_module._report
    state = {"handed_over": False}

    def report_then_hand_over(job, *, progress, message):
        report(job, progress=progress, message=message)
        if progress == at_progress and not state["handed_over"]:
            state["handed_over"] = True
            row = BatchPrediction.objects.get(pk=batch.pk)
            jobs_sweep(now=row.heartbeat_at + timedelta(seconds=25))
            assert BatchPrediction.objects.get(pk=batch.pk).status == "queued"
            if change_first:
                change_first()
            batch_prediction_execute(batch_id=batch.pk)  # the second worker, to the end

    monkeypatch.setattr(batch_module, "_report", report_then_hand_over)
    return state


def _read(name: str) -> str:
    with default_storage.open(name, "rb") as handle:
        return handle.read().decode()


def test_a_stale_attempt_after_its_last_report_leaves_the_published_file_alone(
    analyst, version, broker, monkeypatch
):
    snapshot = toy_snapshot(rows=8, user=analyst)
    batch = batch_prediction_start(user=analyst, version=version, snapshot=snapshot)
    state = _hand_over_during(monkeypatch, batch, at_progress=96)

    batch_prediction_execute(batch_id=batch.pk)  # the first worker, resumed after the second

    assert state["handed_over"]
    batch.refresh_from_db()
    assert (batch.status, batch.attempts) == ("succeeded", 2)
    published = _read(batch.output_file)  # still there: the stale attempt did not remove it
    assert "/attempt-2-" in batch.output_file
    assert published.count("\n") == 1 + batch.rows_total  # a header, then every row once
    # Only the published file is left: the stale attempt removed its own.
    attempts, _ = default_storage.listdir(f"predictions/{batch.pk}")
    assert attempts == [batch.output_file.split("/")[2]]
    response = batch_module.batch_prediction_download_response(batch)
    assert b"".join(response.streaming_content).decode() == published


FLIPPED = {"positive": "negative", "negative": "positive"}


def test_a_stale_attempt_stores_no_suggestions(analyst, version, broker, monkeypatch):
    snapshot = toy_snapshot(rows=8, user=analyst)
    batch = batch_prediction_start(
        user=analyst, version=version, snapshot=snapshot, split="train", store_suggestions=True
    )
    predict = Predictor.predict
    calls = {"count": 0}

    def predict_numbered(self, texts):
        # The first attempt's labels are flipped, so its suggestions would show.
        calls["count"] += 1
        results = predict(self, texts)
        if calls["count"] == 1:
            for result in results:
                result["label"] = FLIPPED[result["label"]]
        return results

    monkeypatch.setattr(Predictor, "predict", predict_numbered)
    # Handed over just after its report that it stores the suggestions.
    _hand_over_during(monkeypatch, batch, at_progress=97)

    batch_prediction_execute(batch_id=batch.pk)

    batch.refresh_from_db()
    assert (batch.status, batch.suggestions_stored) == ("succeeded", 4)
    suggestions = RecordSuggestion.objects.filter(dataset=snapshot.dataset).select_related("record")
    assert {s.label for s in suggestions} == {"positive", "negative"}
    for suggestion in suggestions:  # the second attempt's, none flipped
        words = set(suggestion.record.text.lower().split())
        assert suggestion.label == ("positive" if {"good", "great"} & words else "negative")


def test_progress_of_a_stale_attempt_does_not_reach_the_row(analyst, version, broker, monkeypatch):
    snapshot = toy_snapshot(rows=8, user=analyst)
    batch = batch_prediction_start(user=analyst, version=version, snapshot=snapshot)
    monkeypatch.setattr(batch_module, "CHUNK_ROWS", 2)
    predict = Predictor.predict
    calls = {"count": 0}

    def predict_then_hand_over(self, texts):
        results = predict(self, texts)
        calls["count"] += 1
        if calls["count"] == 1:  # the first attempt, after its first chunk
            row = BatchPrediction.objects.get(pk=batch.pk)
            jobs_sweep(now=row.heartbeat_at + timedelta(seconds=25))
            second = BatchPrediction.objects.get(pk=batch.pk)
            assert second.claim()
            BatchPrediction.objects.filter(pk=batch.pk).update(rows_done=0)
        return results

    monkeypatch.setattr(Predictor, "predict", predict_then_hand_over)

    batch_prediction_execute(batch_id=batch.pk)

    row = BatchPrediction.objects.get(pk=batch.pk)
    assert (row.status, row.attempts, row.rows_done, row.output_file) == ("running", 2, 0, "")
    assert not default_storage.exists(f"predictions/{batch.pk}")


def test_a_later_attempt_removes_what_a_dead_one_stored_but_never_published(
    analyst, version, broker
):
    snapshot = toy_snapshot(rows=4, user=analyst)
    batch = batch_prediction_start(user=analyst, version=version, snapshot=snapshot)
    dead = default_storage.save(
        f"predictions/{batch.pk}/attempt-1-deadbeef/predictions-{batch.pk}.csv",
        ContentFile(b"half a file"),
    )
    BatchPrediction.objects.filter(pk=batch.pk).update(attempts=1)

    batch_prediction_execute(batch_id=batch.pk)

    batch.refresh_from_db()
    assert batch.status == "succeeded"
    assert not default_storage.exists(dead)
    assert default_storage.listdir(f"predictions/{batch.pk}")[0] == [
        batch.output_file.split("/")[2]
    ]
