"""A hyperparameter search of 3 trials end to end on a real gpu-queue worker on Redis: each
trial that finishes asks optuna for the next, and only the best trial is registered, before
the search says it succeeded."""

import time

import pytest

from models_app.models import BaseModel, ModelVersion
from tests.training_app.snapshot_helpers import make_snapshot, numbered_toy_rows
from tests.training_app.tiny_model import save_tiny_bert
from training_app.models import HyperparameterSearch
from training_app.search import search_start

pytestmark = pytest.mark.integration


def test_a_search_of_three_trials_runs_on_a_worker_and_registers_the_best(
    redis_worker, make_user, tmp_path
):
    user = make_user("analyst")
    base = BaseModel.objects.create(
        name="tiny-bert", source="local", location=str(save_tiny_bert(tmp_path / "tiny"))
    )
    snapshot = make_snapshot(numbered_toy_rows(200), user=user)
    redis_worker(queues="gpu", TRAINING_WORK_DIR=str(tmp_path / "work"))
    search = search_start(
        user=user,
        snapshot=snapshot,
        base_model=base,
        task="single_label",
        max_trials=3,
        parallel_trials=2,  # one worker: the second waits in the queue
        space={
            "methods": ["full", "lora"],
            "epochs": [1, 2],
            "batch_size": [8, 16],
            "learning_rate": [1e-4, 1e-3],
            "lora_learning_rate": [1e-3, 1e-2],
            "lora_r": [2, 4],
        },
        params={"max_length": 16, "seed": 7},
    )
    assert search.trials.count() == 2

    deadline = time.monotonic() + 300
    seen = set()
    while time.monotonic() < deadline:
        search.refresh_from_db()
        seen.add(search.status)
        if search.status == HyperparameterSearch.Status.SUCCEEDED:
            # The invariant an API client relies on: "succeeded" comes with its version.
            assert ModelVersion.objects.filter(training_run_id=search.best_trial_id).exists()
        if search.is_finished:
            break
        time.sleep(0.2)
    assert search.status == HyperparameterSearch.Status.SUCCEEDED, search.message
    assert seen <= {"running", "registering", "succeeded"}, seen

    trials = list(search.trials.order_by("trial_number"))
    assert [t.trial_number for t in trials] == [0, 1, 2]
    assert len({str(sorted(t.trial_params.items())) for t in trials}) == 3
    for trial in trials:
        assert trial.status in ("succeeded", "cancelled"), trial.error_message
        assert trial.trial_pruned == (trial.status == "cancelled")
    version = ModelVersion.objects.get()  # only the best trial is registered
    assert version.training_run_id == search.best_trial_id
    assert f"registered {version}" in search.message
    # The other trials' model folders are gone from the worker's disk.
    leftovers = sorted(p.name for p in (tmp_path / "work").glob("run-*/artifact"))
    assert leftovers == []
