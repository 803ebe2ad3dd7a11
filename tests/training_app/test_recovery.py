"""After its worker is lost for good a run resumes from the checkpoint it kept; kept checkpoints
expire; a finished run keeps no second copy of its artifact (issue 9 items 20 and 22)."""

import threading
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse
from django.utils import timezone

from lepton_web.celery import queue_name
from lepton_web.jobs import BrokerUnavailable, jobs_sweep
from tests.conftest import broker_for_this_process
from tests.training_app.conftest import lose_the_worker_after_the_first_checkpoint
from training_app.models import TrainingRun
from training_app.selectors import run_resume_note
from training_app.services import (
    run_dir,
    training_checkpoints_expire,
    training_run_execute,
    training_run_resume,
)


@pytest.fixture
def broker(queue_redis):
    """This test run's own Redis database (TEST_REDIS_URL), emptied before and after."""
    url, client = queue_redis
    with broker_for_this_process(url):
        yield client


def test_a_run_failed_for_losing_its_worker_three_times_resumes_from_its_checkpoint(
    make_run, analyst, client, broker, settings, tmp_path, monkeypatch
):
    settings.TRAINING_WORK_DIR = tmp_path / "work"
    run = make_run(status="queued")
    step = lose_the_worker_after_the_first_checkpoint(run, monkeypatch)
    assert step > 0
    TrainingRun.objects.filter(pk=run.pk).update(attempts=3)  # the third worker was lost

    assert jobs_sweep(now=run.heartbeat_at + timedelta(seconds=21)) == {"failed": 1}

    run.refresh_from_db()
    assert run.status == "failed"
    assert run.error_message == (
        "The worker running this training run stopped responding 3 times, so it was not "
        f"restarted again. Its checkpoint at step {step:,} is kept: press Resume on the run "
        "page to continue from there."
    )
    client.force_login(analyst)
    page = client.get(reverse("training:run_detail", args=[run.pk])).content.decode()
    assert f"Resume continues from the checkpoint kept at step {step:,}" in page
    assert 'data-testid="resume"' in page

    client.post(reverse("training:run_resume", args=[run.pk]))

    run.refresh_from_db()
    assert (run.status, run.attempts, run.error_message, run.message) == (
        "queued",
        0,
        "",
        f"Resuming from the checkpoint at step {step:,}.",
    )
    assert broker.llen(queue_name("gpu")) == 1

    training_run_execute(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == "succeeded", run.error_message
    assert f"step {step}" in run.events.get(kind="resumed").message
    assert run.events.filter(kind="started").count() == 1  # not trained again from step 1
    # The registry holds the artifact: no second copy (nor checkpoints) in the work folder.
    assert not run_dir(run.pk).exists()
    assert run.checkpoint_step is None


def test_the_training_run_heartbeat_covers_registering_the_model_version(
    make_run, monkeypatch, settings, tmp_path
):
    from models_app import services as models_services

    settings.TRAINING_WORK_DIR = tmp_path / "work"
    run = make_run(status="queued")
    threads_while_registering: list[str] = []
    register = models_services.model_version_register

    def watched_register(**kwargs):
        threads_while_registering.extend(t.name for t in threading.enumerate())
        return register(**kwargs)

    monkeypatch.setattr(models_services, "model_version_register", watched_register)

    training_run_execute(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == "succeeded", run.error_message
    assert f"heartbeat-training_app.trainingrun-{run.pk}" in threads_while_registering


@pytest.mark.parametrize("status", ["queued", "running", "succeeded"])
def test_only_a_failed_or_cancelled_run_can_be_resumed(make_run, analyst, broker, status):
    run = make_run(status=status, attempts=1, message="As it was.")

    with pytest.raises(ValidationError, match=r"Only a failed or cancelled run can be resumed\."):
        training_run_resume(run=run, user=analyst)

    run.refresh_from_db()
    assert (run.status, run.attempts, run.message) == (status, 1, "As it was.")
    assert broker.llen(queue_name("gpu")) == 0


def test_resume_with_the_broker_down_leaves_the_run_as_it_was(make_run, analyst):
    run = make_run(
        status="failed", attempts=3, error_message="Lost.", message="Failed.", checkpoint_step=4
    )

    with (
        broker_for_this_process("redis://127.0.0.1:1/0"),
        pytest.raises(BrokerUnavailable),
    ):
        training_run_resume(run=run, user=analyst)

    run.refresh_from_db()
    assert (run.status, run.attempts, run.error_message, run.message) == (
        "failed",
        3,
        "Lost.",
        "Failed.",
    )


def test_the_api_resumes_a_cancelled_run(make_run, api_client_as, broker):
    run = make_run(status="cancelled", checkpoint_step=7, finished_at=timezone.now())

    response = api_client_as("analyst").post(f"/api/v1/runs/{run.pk}/resume/")

    assert response.status_code == 202
    assert (
        response.json()["status"],
        response.json()["message"],
        response.json()["checkpoint_step"],
    ) == ("queued", "Resuming from the checkpoint at step 7.", 7)
    assert broker.llen(queue_name("gpu")) == 1


def test_the_api_refuses_to_resume_a_running_run_by_name(make_run, api_client_as, broker):
    run = make_run(status="running")

    response = api_client_as("analyst").post(f"/api/v1/runs/{run.pk}/resume/")

    assert response.status_code == 400
    assert "Only a failed or cancelled run can be resumed." in str(response.json())
    assert TrainingRun.objects.get(pk=run.pk).status == "running"


def test_a_viewer_cannot_resume_a_run(make_run, api_client_as, broker):
    run = make_run(status="failed", finished_at=timezone.now())

    response = api_client_as("viewer").post(f"/api/v1/runs/{run.pk}/resume/")

    assert response.status_code == 403
    assert TrainingRun.objects.get(pk=run.pk).status == "failed"


# --- retention ----------------------------------------------------------------------------------
def kept_checkpoint(run: TrainingRun) -> None:
    folder = run_dir(run.pk) / "checkpoints" / "ckpt-000000010"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text("{}")
    default_storage.save(
        f"training/checkpoints/run-{run.pk}/ckpt-000000010/complete", ContentFile(b"x")
    )


def test_checkpoints_of_failed_and_cancelled_runs_are_removed_after_the_retention(
    make_run, settings, tmp_path
):
    settings.TRAINING_WORK_DIR = tmp_path / "work"
    settings.TRAINING_CHECKPOINT_SYNC = "on"
    settings.TRAINING_CHECKPOINT_RETENTION_HOURS = 168
    now = timezone.now()
    expired = make_run(status="failed", finished_at=now - timedelta(hours=169), checkpoint_step=10)
    recent = make_run(
        status="cancelled", finished_at=now - timedelta(hours=167), checkpoint_step=10
    )
    running = make_run(status="running", checkpoint_step=10)
    succeeded = make_run(status="succeeded", finished_at=now - timedelta(hours=1))
    for run in (expired, recent, running, succeeded):
        kept_checkpoint(run)

    outcome = training_checkpoints_expire(now=now)

    assert outcome == {"folders": 2, "stored": 1}
    assert not run_dir(expired.pk).exists()
    assert not run_dir(succeeded.pk).exists()
    assert run_dir(recent.pk).is_dir()
    assert run_dir(running.pk).is_dir()
    assert not default_storage.exists(f"training/checkpoints/run-{expired.pk}/ckpt-000000010")
    assert default_storage.exists(f"training/checkpoints/run-{recent.pk}/ckpt-000000010/complete")
    expired.refresh_from_db()
    recent.refresh_from_db()
    assert (expired.checkpoint_step, recent.checkpoint_step) == (None, 10)
    assert expired.events.get(kind="checkpoint_removed").message == (
        "Its checkpoint was removed after 168 hours; Resume now starts over."
    )
    assert run_resume_note(expired) == (
        "No checkpoint was kept, so Resume starts this run again from the beginning."
    )
    assert run_resume_note(recent).startswith(
        "Resume continues from the checkpoint kept at step 10; it is kept until "
    )


def test_an_evaluation_beats_from_a_thread_while_its_model_runs(
    make_run, monkeypatch, settings, tmp_path
):
    from models_app.models import ModelVersion
    from training_app import engine
    from training_app.models import Evaluation
    from training_app.services import evaluation_execute

    settings.TRAINING_WORK_DIR = tmp_path / "work"
    run = make_run(status="queued")
    training_run_execute(run_id=run.pk)
    evaluation = Evaluation.objects.create(
        model_version=ModelVersion.objects.get(training_run=run), snapshot=run.snapshot
    )
    threads_while_evaluating: list[str] = []

    def watched_evaluate(*args, **kwargs):
        threads_while_evaluating.extend(t.name for t in threading.enumerate())
        return {"accuracy": 1.0}

    monkeypatch.setattr(engine, "evaluate_artifact", watched_evaluate)

    evaluation_execute(evaluation_id=evaluation.pk)

    evaluation.refresh_from_db()
    assert evaluation.status == "succeeded", evaluation.error_message
    assert f"heartbeat-training_app.evaluation-{evaluation.pk}" in threads_while_evaluating
