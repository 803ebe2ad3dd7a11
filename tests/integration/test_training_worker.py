"""A training run on a real gpu-queue worker on Redis survives kill -9 and resumes."""

import time

import pytest

from models_app.models import BaseModel, ModelVersion
from tests.training_app.snapshot_helpers import make_snapshot, numbered_toy_rows
from tests.training_app.tiny_model import save_tiny_bert
from training_app.models import TrainingMetric, TrainingRun
from training_app.services import training_run_start

pytestmark = pytest.mark.integration


def wait(predicate, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"Timed out waiting for {what}")


def test_killed_worker_run_resumes_from_its_checkpoint_with_one_model_version(
    redis_worker, make_user, tmp_path
):
    user = make_user("analyst")
    base = BaseModel.objects.create(
        name="tiny-bert", source="local", location=str(save_tiny_bert(tmp_path / "tiny"))
    )
    snapshot = make_snapshot(numbered_toy_rows(1000), user=user)
    first = redis_worker(queues="gpu", TRAINING_WORK_DIR=str(tmp_path / "work"))
    run = training_run_start(
        user=user,
        snapshot=snapshot,
        base_model=base,
        task="single_label",
        params={
            "epochs": 2,
            "batch_size": 4,
            "eval_every_steps": 40,
            "learning_rate": 1e-3,
            "early_stopping_patience": 0,
        },
    )
    wait(lambda: run.events.filter(kind="checkpoint").exists(), timeout=120, what="a checkpoint")
    first.kill()
    killed_at = (
        TrainingMetric.objects.filter(run=run, name="train_loss").order_by("-step").first().step
    )
    assert killed_at < 400  # it really was mid-run (400 steps in all)

    from lepton_web.jobs import jobs_sweep

    time.sleep(1.2)
    assert jobs_sweep(stale_after_seconds=1) == {"requeued": 1}
    redis_worker(queues="gpu", TRAINING_WORK_DIR=str(tmp_path / "work"))
    wait(lambda: TrainingRun.objects.get(pk=run.pk).is_finished, timeout=300, what="the run to end")

    run.refresh_from_db()
    assert run.status == "succeeded", run.error_message
    assert run.attempts == 2
    kinds = list(run.events.values_list("kind", flat=True))
    assert kinds.count("started") == 1
    assert "resumed" in kinds
    losses = TrainingMetric.objects.filter(run=run, name="train_loss").values_list(
        "step", flat=True
    )
    assert min(losses) == 1  # the history from before the crash is intact
    assert max(losses) == run.total_steps
    assert ModelVersion.objects.filter(training_run=run).count() == 1
    assert run.test_metrics["accuracy"] > 0.6
