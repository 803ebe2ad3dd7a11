"""A run on a real gpu-queue worker measures its base model's speed the first time, starts
with an estimate from that measurement, and records the time it took next to it (issue 9,
item 11)."""

import re
import time

import pytest

from models_app.models import BaseModel
from tests.training_app.snapshot_helpers import make_snapshot, numbered_toy_rows
from tests.training_app.tiny_model import save_tiny_bert
from training_app.models import TrainingCalibration, TrainingRun
from training_app.services import training_run_estimate, training_run_start

pytestmark = pytest.mark.integration

PARAMS = {"epochs": 1, "batch_size": 8, "max_length": 32, "device": "cpu"}


def finished(run: TrainingRun, timeout: float = 180) -> TrainingRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.status in ("succeeded", "failed", "cancelled"):
            return run
        time.sleep(0.2)
    raise AssertionError(f"Run {run.pk} did not finish; it is {run.status}.")


def test_a_finished_run_records_its_calibrated_estimate_and_the_time_it_took(
    redis_worker, make_user, tmp_path, client
):
    user = make_user("analyst")
    base = BaseModel.objects.create(
        name="tiny-bert", source="local", location=str(save_tiny_bert(tmp_path / "tiny"))
    )
    snapshot = make_snapshot(numbered_toy_rows(200), user=user)
    redis_worker(queues="gpu", TRAINING_WORK_DIR=str(tmp_path / "work"), OMP_NUM_THREADS="1")
    before = training_run_estimate(
        snapshot=snapshot, base_model=base, task="single_label", method="full", params=PARAMS
    )
    assert before["calibrated"] is False

    run = training_run_start(
        user=user, snapshot=snapshot, base_model=base, task="single_label", params=PARAMS
    )
    run = finished(run)

    assert run.status == "succeeded", run.error_message
    calibration = TrainingCalibration.objects.get(base_model=base, method="full")
    assert (calibration.device, calibration.device_name) == ("cpu", "CPU, 1 thread")
    assert run.events.filter(kind="speed_measured").count() == 1
    at_start = run.estimate["at_start"]
    assert at_start["calibrated"] is True
    assert at_start["calibration_id"] == calibration.pk
    assert at_start["low_seconds"] < at_start["seconds"] < at_start["high_seconds"]
    actual = run.estimate["actual_seconds"]
    assert actual > 0
    # The run taught the calibration how far off the probe alone was on this machine.
    assert calibration.run_ratios == [pytest.approx(actual / at_start["seconds"], rel=0.01)]

    client.force_login(user)
    page = client.get(f"/training/{run.pk}/").content.decode()
    assert re.search(
        r'data-testid="run-estimate"[^>]*><span class="stat-value">[\d.]+–[\d.]+ (s|min|h)<', page
    )
    assert re.search(r'data-testid="run-actual"><span class="stat-value">\d+ s</span>', page)

    after = training_run_estimate(
        snapshot=snapshot, base_model=base, task="single_label", method="full", params=PARAMS
    )
    assert after["calibrated"] is True
    assert after["runs_compared"] == 1
    assert after["basis"].startswith("Measured on a worker (CPU, 1 thread), corrected by the 1 run")
