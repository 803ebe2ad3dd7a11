"""Retrain on new labels: snapshot (labeled records), fine-tune from the current version,
register, pre-label the unlabeled records; a state machine advanced by each job's end and by a
sweep. The jobs run here as workers would (tests/integration/test_retrain_loop_worker.py runs
the whole loop on a real worker)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse
from django.utils import timezone

from datasets_app.models import RecordSuggestion
from models_app.models import BatchPrediction, ModelVersion
from tests.conftest import broker_for_this_process
from tests.models_app.tiny_classifier import save_tiny_classifier
from tests.training_app.retrain_helpers import UNLABELED, labeled_dataset_with_version
from training_app.models import RetrainLoop, TrainingRun
from training_app.retrain import (
    retrain_loop_advance,
    retrain_loop_start,
    retrain_loops_sweep,
)
from training_app.services import training_run_execute, training_run_start


@pytest.fixture
def broker(redis_url):
    with broker_for_this_process(redis_url):
        yield


@pytest.fixture
def tiny_folder(tmp_path_factory):
    return save_tiny_classifier(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def work_dir(settings, tmp_path):
    settings.TRAINING_WORK_DIR = str(tmp_path / "work")


def test_the_loop_fine_tunes_from_the_version_registers_and_pre_labels(
    analyst, tiny_folder, broker, work_dir
):
    dataset, version = labeled_dataset_with_version(tiny_folder, user=analyst)

    loop = retrain_loop_start(user=analyst, dataset=dataset)
    assert (loop.step, loop.from_version) == ("queued", version)
    loop = retrain_loop_advance(loop_id=loop.pk)  # the default-queue task

    assert loop.step == "training"
    assert loop.snapshot.record_count == 24  # the labeled records only
    run = loop.training_run
    assert (run.start_version, run.base_model, run.status) == (
        version,
        version.base_model,
        "queued",
    )
    assert run.params["epochs"] == 1
    assert retrain_loop_advance(loop_id=loop.pk).step == "training"  # the run is not done

    training_run_execute(run_id=run.pk)  # the gpu worker
    run.refresh_from_db()
    assert run.status == "succeeded", run.error_message
    loop = retrain_loop_advance(loop_id=loop.pk)  # published by the training task's end

    assert loop.step == "succeeded", loop.error_message
    new_version = ModelVersion.objects.get(training_run=run)
    assert loop.new_version == new_version
    assert new_version != version
    assert new_version.snapshot == loop.snapshot
    batch = loop.batch_prediction
    assert (batch.status, batch.model_version, batch.source) == (
        "succeeded",
        new_version,
        "unlabeled",
    )
    suggestions = RecordSuggestion.objects.filter(dataset=dataset)
    assert suggestions.count() == UNLABELED
    assert set(suggestions.values_list("source", flat=True)) == {f"pre-label: {new_version}"}
    assert all(s.margin is not None and s.entropy is not None for s in suggestions)
    assert f"pre-labeled {UNLABELED} unlabeled records" in loop.message

    # Advancing a finished loop changes nothing and starts nothing.
    assert retrain_loop_advance(loop_id=loop.pk).step == "succeeded"
    assert TrainingRun.objects.count() == 1
    assert BatchPrediction.objects.count() == 1


def test_a_failed_run_fails_the_loop_with_its_reason(analyst, tiny_folder, broker):
    dataset, _ = labeled_dataset_with_version(tiny_folder, user=analyst)
    loop = retrain_loop_advance(loop_id=retrain_loop_start(user=analyst, dataset=dataset).pk)
    loop.training_run.fail(error="CUDA ran out of memory.")

    loop = retrain_loop_advance(loop_id=loop.pk)

    assert loop.step == "failed"
    assert "did not finish: CUDA ran out of memory." in loop.error_message
    assert loop.finished_at is not None
    assert not BatchPrediction.objects.exists()
    # A new loop may start once the last one ended.
    assert retrain_loop_start(user=analyst, dataset=dataset).step == "queued"


def test_a_pre_label_step_that_crashed_before_claiming_is_run_by_the_next_advance(
    analyst, tiny_folder, broker, work_dir, monkeypatch
):
    from models_app import batch_prediction

    dataset, _ = labeled_dataset_with_version(tiny_folder, user=analyst)
    loop = retrain_loop_advance(loop_id=retrain_loop_start(user=analyst, dataset=dataset).pk)
    training_run_execute(run_id=loop.training_run_id)

    def lost(**_):
        raise SystemExit("worker killed")  # the worker dies once the batch row exists

    monkeypatch.setattr(batch_prediction, "batch_prediction_execute", lost)
    with pytest.raises(SystemExit):
        retrain_loop_advance(loop_id=loop.pk)
    loop.refresh_from_db()
    assert (loop.step, loop.batch_prediction.status) == ("predicting", "queued")
    monkeypatch.undo()

    loop = retrain_loop_advance(loop_id=loop.pk)  # the sweep's advance

    assert loop.step == "succeeded", loop.error_message
    assert BatchPrediction.objects.count() == 1
    assert RecordSuggestion.objects.filter(dataset=dataset).count() == UNLABELED


def test_the_sweep_advances_loops_whose_message_or_job_end_was_lost(analyst, tiny_folder, broker):
    dataset, _ = labeled_dataset_with_version(tiny_folder, user=analyst)
    loop = retrain_loop_start(user=analyst, dataset=dataset)
    assert retrain_loops_sweep() == 0  # queued a moment ago: its message is on its way
    assert retrain_loops_sweep(now=timezone.now() + timedelta(minutes=2)) == 1

    loop = retrain_loop_advance(loop_id=loop.pk)
    assert retrain_loops_sweep() == 0  # its run is queued
    loop.training_run.cancel()
    assert retrain_loops_sweep() == 1  # its run ended; nobody advanced the loop yet


@pytest.mark.parametrize("case", ["no version", "already running", "other dataset", "annotator"])
def test_bad_starts_are_refused_and_queue_nothing(case, analyst, make_user, tiny_folder, broker):
    dataset, version = labeled_dataset_with_version(tiny_folder, user=analyst)
    user, arguments, error = analyst, {"dataset": dataset}, ValidationError
    if case == "no version":
        ModelVersion.objects.filter(pk=version.pk).update(is_archived=True)
        message = "No ready model was trained on"
    elif case == "already running":
        retrain_loop_start(user=analyst, dataset=dataset)
        message = "already being retrained"
    elif case == "other dataset":
        _, other = labeled_dataset_with_version(tiny_folder, user=analyst, name="other")
        arguments["version"] = other
        message = "is not a ready classifier trained on"
    else:
        user, error, message = make_user("annotator"), PermissionDenied, None
    before = RetrainLoop.objects.count()

    with pytest.raises(error, match=message):
        retrain_loop_start(user=user, **arguments)

    assert RetrainLoop.objects.count() == before


def test_a_run_cannot_start_from_an_archived_version_or_one_of_another_task(analyst, tiny_folder):
    dataset, version = labeled_dataset_with_version(tiny_folder, user=analyst)
    snapshot = dataset.snapshots.first()
    arguments = {
        "user": analyst,
        "snapshot": snapshot,
        "base_model": version.base_model,
        "start_version": version,
    }
    with pytest.raises(ValidationError, match="was trained for single_label, not multi_label"):
        training_run_start(task="multi_label", **arguments)
    version.is_archived = True
    version.save()
    with pytest.raises(ValidationError, match="not a ready, unarchived version"):
        training_run_start(task="single_label", **arguments)
    assert not TrainingRun.objects.exists()


def test_the_pages_start_pre_labels_and_the_loop_and_show_progress(
    client_as, tiny_folder, broker, make_user
):
    analyst = make_user("analyst")
    dataset, version = labeled_dataset_with_version(tiny_folder, user=analyst)
    client = client_as("analyst")

    labeling = client.get(reverse("datasets:labeling")).content.decode()
    assert reverse("training:model_loop", args=[dataset.pk]) in labeling
    assert reverse("training:retrain_loops_live") in labeling
    page = client.get(reverse("training:model_loop", args=[dataset.pk])).content.decode()
    assert 'data-testid="retrain-loop-none"' in page
    assert f'value="version:{version.pk}"' in page

    client.post(
        reverse("training:model_loop_prelabel", args=[dataset.pk]),
        {"source": f"version:{version.pk}"},
    )
    batch = BatchPrediction.objects.get()
    assert (batch.dataset, batch.source, batch.rows_total) == (dataset, "unlabeled", UNLABELED)
    response = client.post(
        reverse("training:model_loop_prelabel", args=[dataset.pk]),
        {"source": "version:x"},
        follow=True,
    )
    assert "Choose a model version or an endpoint" in response.content.decode()

    client.post(reverse("training:model_loop_retrain", args=[dataset.pk]), {"version": version.pk})
    loop = RetrainLoop.objects.get()
    live = client.get(reverse("training:model_loop_live", args=[dataset.pk])).content.decode()
    assert 'data-step="queued"' in live
    panel = client.get(reverse("training:retrain_loops_live")).content.decode()
    assert 'data-testid="retrain-loop-row"' in panel
    assert "every 3s" in panel  # polls while the loop runs
    assert loop.dataset == dataset

    annotator = client_as("annotator")
    assert annotator.get(reverse("training:model_loop", args=[dataset.pk])).status_code == 403
    retrain = reverse("training:model_loop_retrain", args=[dataset.pk])
    assert annotator.post(retrain).status_code == 403


def test_the_api_refuses_bad_requests_with_a_reason(api_client_as, make_user, tiny_folder, broker):
    dataset, version = labeled_dataset_with_version(tiny_folder, user=make_user("analyst"))
    analyst = api_client_as("analyst")
    pre_labels = f"/api/v1/datasets/{dataset.pk}/pre-labels/"

    both = analyst.post(pre_labels, {"version": version.pk, "endpoint": "x"}, format="json")
    assert both.status_code == 400
    assert "model version id or an endpoint slug" in str(both.json())
    assert analyst.post(pre_labels, {"endpoint": "nowhere"}, format="json").status_code == 404
    assert analyst.post(pre_labels, {"version": 999999}, format="json").status_code == 404
    assert analyst.get(pre_labels).json() == {"pre_labels": None}
    annotator = api_client_as("annotator")
    assert annotator.post(pre_labels, {"version": version.pk}, format="json").status_code == 403
    retrain = f"/api/v1/datasets/{dataset.pk}/retrain/"
    assert annotator.post(retrain, {}, format="json").status_code == 403
    assert not BatchPrediction.objects.exists()
    assert not RetrainLoop.objects.exists()
