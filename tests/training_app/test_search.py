"""Hyperparameter search services on the real database: starting (and refusing), pruning,
budgets, finishing with the best trial registered, cancelling."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from models_app.models import ModelVersion
from tests.conftest import broker_for_this_process
from training_app import search as search_services
from training_app import search_selectors
from training_app.models import HyperparameterSearch, TrainingEvent, TrainingMetric, TrainingRun
from training_app.search import (
    search_advance,
    search_cancel,
    search_start,
    search_trial_evaluated,
    search_trial_finished,
    space_clean,
    trial_should_prune,
)
from training_app.services import run_dir, training_run_execute

FIXED = {"max_length": 16, "seed": 42}
DOWN_BROKER_URL = "redis://127.0.0.1:1/0"
# Small and fast: 1-2 epochs, batch 8, full fine-tuning or LoRA on the tiny BERT.
SMALL_SPACE = {
    "methods": ["full", "lora"],
    "epochs": [1, 2],
    "batch_size": [8],
    "learning_rate": [1e-4, 1e-3],
    "lora_learning_rate": [1e-3, 1e-2],
    "lora_r": [2, 4],
}


def start(user, snapshot, base_model, **kwargs) -> HyperparameterSearch:
    values = {"task": "single_label", "space": SMALL_SPACE, "params": FIXED, **kwargs}
    return search_start(user=user, snapshot=snapshot, base_model=base_model, **values)


def refused(user, snapshot, base_model, **kwargs) -> dict:
    with pytest.raises(ValidationError) as caught:
        start(user, snapshot, base_model, **kwargs)
    assert not HyperparameterSearch.objects.exists()
    assert not TrainingRun.objects.exists()
    return caught.value.message_dict


# --- refusing bad input, in sentences ---------------------------------------------------------
def test_a_search_without_any_budget_is_refused(analyst, snapshot, tiny_base_model):
    errors = refused(analyst, snapshot, tiny_base_model)
    assert errors["max_trials"] == [
        "Set a budget: a number of trials, a number of minutes, or both. The search stops "
        "starting trials when either is spent."
    ]


def test_a_budget_out_of_range_or_not_a_number_is_refused(analyst, snapshot, tiny_base_model):
    errors = refused(analyst, snapshot, tiny_base_model, max_trials=0, max_minutes="soon")
    assert errors["max_trials"] == ["The trial budget must be between 1 and 500; it is 0."]
    assert errors["max_minutes"] == [
        "The time budget (minutes) must be a whole number, not 'soon'."
    ]


def test_an_empty_space_is_refused(analyst, snapshot, tiny_base_model):
    errors = refused(analyst, snapshot, tiny_base_model, max_trials=3, space={"methods": []})
    assert errors["space"] == [
        "Choose at least one method to search: full fine-tuning, LoRA or both."
    ]


def test_a_space_with_a_single_setting_is_refused(analyst, snapshot, tiny_base_model):
    single = {
        "methods": ["full"],
        "learning_rate": [1e-4, 1e-4],
        "epochs": [2, 2],
        "batch_size": [16],
        "weight_decay": [0.01, 0.01],
        "warmup_ratio": [0.1, 0.1],
    }
    errors = refused(analyst, snapshot, tiny_base_model, max_trials=3, space=single)
    assert "single setting, so there is nothing to search" in errors["space"][0]


def test_bad_ranges_and_keys_each_get_a_sentence():
    _, problems = space_clean(
        {
            "learning_rate": [1e-3, 1e-5],
            "epochs": [1.5, 3],
            "batch_size": [],
            "optimizer": ["adamw"],
        }
    )
    assert problems == [
        "'optimizer' cannot be searched; the space may set methods, learning_rate, "
        "lora_learning_rate, epochs, batch_size, weight_decay, warmup_ratio, lora_r.",
        "Learning rate (full fine-tuning): the lowest value 0.001 is above the highest 1e-05.",
        "Epochs: give whole numbers.",
        "Batch size: give at least one value to try.",
    ]


def test_a_wrong_metric_and_fixing_a_searched_value_are_refused(analyst, snapshot, tiny_base_model):
    errors = refused(
        analyst,
        snapshot,
        tiny_base_model,
        max_trials=3,
        metric="mse",
        params={"learning_rate": 1e-4},
    )
    assert errors["metric"] == [
        "The metric 'mse' does not apply to this task; choose one of macro_f1, accuracy, loss."
    ]
    assert errors["params"] == [
        "learning_rate cannot be fixed in a search: the search chooses them (narrow the space "
        "instead)."
    ]


def test_a_snapshot_that_cannot_train_refuses_the_search(analyst, tiny_base_model, redis_url):
    from tests.training_app.conftest import make_snapshot

    unlabeled = make_snapshot(user=analyst, labels=False)
    with broker_for_this_process(redis_url):
        errors = refused(analyst, unlabeled, tiny_base_model, max_trials=3)
    assert errors["snapshot"] == ["This snapshot has no labels. Label the records first."]


@pytest.mark.parametrize("role", ["viewer", "annotator"])
def test_only_builders_start_or_cancel_a_search(make_user, snapshot, tiny_base_model, role):
    with pytest.raises(PermissionDenied):
        start(make_user(role), snapshot, tiny_base_model, max_trials=3)
    search = HyperparameterSearch.objects.create(
        snapshot=snapshot,
        base_model=tiny_base_model,
        task="single_label",
        space=SMALL_SPACE,
        metric="macro_f1",
        max_trials=3,
    )
    with pytest.raises(PermissionDenied):
        search_cancel(search=search, user=make_user(role))


# --- starting and advancing ----------------------------------------------------------------------
def test_a_search_queues_its_parallel_trials_with_suggested_values(
    analyst, snapshot, tiny_base_model, redis_url
):
    with broker_for_this_process(redis_url):
        search = start(analyst, snapshot, tiny_base_model, max_trials=5, parallel_trials=2)

    trials = list(search.trials.order_by("trial_number"))
    assert [t.trial_number for t in trials] == [0, 1]
    assert {t.status for t in trials} == {"queued"}
    # Trial 1: the console's default settings (chosen from the data), in the space's terms.
    default = trials[0]
    assert default.method == "full"
    assert default.trial_params["method"] == "full"
    for key in ("epochs", "batch_size", "weight_decay", "warmup_ratio"):
        assert default.trial_params[key] == default.params[key]
    assert default.params["register"] is False
    for trial in trials[1:]:
        assert trial.method == trial.trial_params["method"]
        assert trial.params["register"] is False
        assert trial.params["early_stopping_metric"] == "macro_f1"
        assert trial.params["max_length"] == 16
        assert trial.params["batch_size"] == 8
        assert 1 <= trial.params["epochs"] <= 2
        if trial.method == "lora":
            assert trial.params["lora_r"] in (2, 4)
            assert trial.params["lora_alpha"] == 2 * trial.params["lora_r"]
    assert search.message == "0 of 5 trials finished, 2 queued or running."


def test_trials_do_not_refit_even_where_a_plain_run_would(
    analyst, snapshot, tiny_base_model, redis_url, monkeypatch
):
    # Every set counts as large here, so a plain default run trains again on train +
    # validation; a trial is judged on validation, which the refit cannot change.
    from training_app.engine import config as engine_config
    from training_app.services import training_run_start

    monkeypatch.setattr(engine_config, "LARGE_SET", 1)
    plain = training_run_start(
        user=analyst,
        snapshot=snapshot,
        base_model=tiny_base_model,
        task="single_label",
        params={},
        enqueue=False,
    )
    assert plain.params["refit_on_all_data"] is True
    with broker_for_this_process(redis_url):
        search = start(analyst, snapshot, tiny_base_model, max_trials=3, parallel_trials=2)

    trials = list(search.trials.order_by("trial_number"))
    assert len(trials) == 2
    assert [trial.params["refit_on_all_data"] for trial in trials] == [False, False]


def _published_run_ids(queue) -> list[int]:
    """The run id of each task message waiting on the gpu queue."""
    bodies = (json.loads(raw)["body"] for raw in queue.lrange("gpu", 0, -1))
    return sorted(json.loads(base64.b64decode(body))[0][0] for body in bodies)


def test_each_trial_is_published_once_after_its_row_commits(
    analyst, snapshot, tiny_base_model, queue_redis, django_capture_on_commit_callbacks
):
    url, queue = queue_redis
    with broker_for_this_process(url):
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            search = start(analyst, snapshot, tiny_base_model, max_trials=5, parallel_trials=2)
        # Before the search's transaction commits a worker could not find the rows.
        assert queue.llen("gpu") == 0
        for callback in callbacks:  # the commit
            callback()

    trial_ids = sorted(search.trials.values_list("pk", flat=True))
    assert len(trial_ids) == 2
    assert _published_run_ids(queue) == trial_ids  # one message per trial


def test_a_search_whose_trials_cannot_be_sent_leaves_nothing_behind(
    analyst, snapshot, tiny_base_model, transactional_db
):
    from lepton_web.jobs import BrokerUnavailable

    with broker_for_this_process(DOWN_BROKER_URL), pytest.raises(BrokerUnavailable):
        start(analyst, snapshot, tiny_base_model, max_trials=3)

    assert not HyperparameterSearch.objects.exists()
    assert not TrainingRun.objects.exists()


def test_trials_that_cannot_be_sent_later_stay_queued_for_the_sweeper(
    analyst, snapshot, tiny_base_model, queue_redis, django_capture_on_commit_callbacks
):
    url, _ = queue_redis
    with broker_for_this_process(url):
        search = start(analyst, snapshot, tiny_base_model, max_trials=5)
    search.trials.get().cancel()
    with (
        broker_for_this_process(DOWN_BROKER_URL),
        django_capture_on_commit_callbacks(execute=True),
    ):
        search = search_advance(search_id=search.pk)

    search.refresh_from_db()
    assert search.trials.filter(status="queued").count() == 1  # trial 2, left for the sweep
    assert search.status == "running"
    assert search.message == (
        "The task queue cannot be reached; the queued trials are sent again once it is back."
    )


def test_no_trial_starts_once_the_time_budget_is_spent(
    analyst, snapshot, tiny_base_model, redis_url
):
    with broker_for_this_process(redis_url):
        search = start(analyst, snapshot, tiny_base_model, max_minutes=5)
        first = search.trials.get()
        first.cancel()
        HyperparameterSearch.objects.filter(pk=search.pk).update(
            created_at=search.created_at - timedelta(minutes=6)
        )
        search = search_advance(search_id=search.pk)

    assert search.trials.count() == 1
    assert search.status == "failed"  # the one trial was cancelled: nothing to register
    assert "nothing was registered" in search.message


def test_three_failed_trials_in_a_row_stop_the_search(
    analyst, snapshot, tiny_base_model, redis_url
):
    with broker_for_this_process(redis_url):
        search = start(analyst, snapshot, tiny_base_model, max_trials=10)
        for _ in range(3):
            search.trials.get(status="queued").fail(error="Out of memory on the GPU.")
            search = search_advance(search_id=search.pk)

    assert search.trials.count() == 3
    assert search.status == "failed"
    assert search.message == (
        "Stopped: the last 3 trials failed. The last said: Out of memory on the GPU."
    )


# --- pruning ---------------------------------------------------------------------------------------
def _trial(search, number, curve, *, status="succeeded", score=None):
    run = TrainingRun.objects.create(
        name=f"trial {number}",
        snapshot=search.snapshot,
        base_model=search.base_model,
        task="single_label",
        method="full",
        status=status,
        search=search,
        trial_number=number,
        trial_params={
            "method": "full",
            "learning_rate": 1e-4,
            "epochs": 2,
            "batch_size": 8,
            "weight_decay": 0.0,
            "warmup_ratio": 0.0,
        },
        best_metrics={"macro_f1": score if score is not None else max(curve or [0])},
    )
    for index, value in enumerate(curve):
        TrainingMetric.objects.create(
            run=run, step=10 * (index + 1), epoch=index + 1, name="val_macro_f1", value=value
        )
    return run


@pytest.fixture
def search_row(analyst, snapshot, tiny_base_model):
    space, _ = space_clean(SMALL_SPACE)
    return HyperparameterSearch.objects.create(
        snapshot=snapshot,
        base_model=tiny_base_model,
        task="single_label",
        space=space,
        metric="macro_f1",
        max_trials=10,
        created_by=analyst,
    )


def test_the_pruner_stops_a_trial_below_the_median_of_finished_trials(search_row):
    _trial(search_row, 0, [0.5, 0.8, 0.85])
    _trial(search_row, 1, [0.6, 0.9, 0.9])
    weak = _trial(search_row, 2, [0.2, 0.3], status="running")
    strong = _trial(search_row, 3, [0.55, 0.88], status="running")
    young = _trial(search_row, 4, [0.1], status="running")  # first evaluation: never pruned

    assert trial_should_prune(search_row, weak) is True
    assert trial_should_prune(search_row, strong) is False
    assert trial_should_prune(search_row, young) is False


def test_the_pruner_waits_for_two_finished_trials(search_row):
    _trial(search_row, 0, [0.5, 0.8])
    weak = _trial(search_row, 1, [0.2, 0.3], status="running")

    assert trial_should_prune(search_row, weak) is False


def test_a_pruned_trial_is_cancelled_and_marked_pruned(search_row):
    _trial(search_row, 0, [0.5, 0.8])
    _trial(search_row, 1, [0.6, 0.9])
    weak = _trial(search_row, 2, [0.2, 0.3], status="running")

    assert search_trial_evaluated(run_id=weak.pk) is True

    weak.refresh_from_db()
    assert (weak.status, weak.trial_pruned, weak.message) == ("cancelled", True, "Pruned.")
    assert search_selectors.trial_state(weak) == ("pruned", "Pruned")
    assert TrainingEvent.objects.get(run=weak, kind="pruned").message.startswith(
        "Pruned by the search: its validation macro_f1 is below the median"
    )
    # A plain run is never pruned.
    plain = _trial(search_row, 3, [0.1, 0.1], status="running")
    TrainingRun.objects.filter(pk=plain.pk).update(search=None)
    assert search_trial_evaluated(run_id=plain.pk) is False


def test_the_rebuilt_study_counts_every_trial_and_state(search_row):
    from optuna.trial import TrialState

    _trial(search_row, 0, [0.5, 0.8])
    pruned = _trial(search_row, 1, [0.1], status="cancelled")
    TrainingRun.objects.filter(pk=pruned.pk).update(trial_pruned=True)
    _trial(search_row, 2, [], status="failed")
    _trial(search_row, 3, [0.4], status="running")

    study = search_services.search_study(search_row)

    assert [t.state for t in study.trials] == [
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.FAIL,
        TrialState.RUNNING,
    ]
    assert study.best_value == 0.8
    assert study.trials[0].intermediate_values == {0: 0.5, 1: 0.8}


def test_importance_needs_two_complete_trials(search_row):
    _trial(search_row, 0, [0.5, 0.8])
    assert search_selectors.search_param_importance(search_row) == []


# --- finishing ---------------------------------------------------------------------------------------
def test_the_best_trial_is_picked_when_the_budget_is_spent(search_row, settings, tmp_path):
    settings.TRAINING_WORK_DIR = tmp_path / "work"
    HyperparameterSearch.objects.filter(pk=search_row.pk).update(max_trials=3)
    _trial(search_row, 0, [0.5, 0.7])
    best = _trial(search_row, 1, [0.6, 0.9])
    pruned = _trial(search_row, 2, [0.95], status="cancelled")  # pruned: never the best
    TrainingRun.objects.filter(pk=pruned.pk).update(trial_pruned=True)

    search = search_advance(search_id=search_row.pk)

    # Made with the ORM, so no model folder exists: said, and not called a success.
    assert search.status == "failed"
    assert search.best_trial == best
    assert search.message == (
        "Best: trial 2. Its model folder is not on this worker and no copy is in storage, so "
        "nothing was registered; run its settings as a plain run."
    )
    assert search.finished_at is not None
    assert not ModelVersion.objects.exists()


# --- registering the best trial: "succeeded" only with its version ------------------------------
class WorkerKilled(BaseException):
    """Stands for the worker process dying mid-step (not an error the service could catch)."""


@pytest.fixture
def spent_search(search_row, settings, tmp_path):
    """A search whose budget is spent: two succeeded trials, the second the best, each with a
    model folder on this worker's disk."""
    settings.TRAINING_WORK_DIR = tmp_path / "work"
    HyperparameterSearch.objects.filter(pk=search_row.pk).update(max_trials=2)
    trials = [_trial(search_row, 0, [0.5, 0.7]), _trial(search_row, 1, [0.6, 0.9])]
    for trial in trials:
        folder = run_dir(trial.pk) / "artifact"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text('{"model_type": "bert"}')
    return search_row


def _silence_registration(search, *, minutes: int = 11) -> None:
    HyperparameterSearch.objects.filter(pk=search.pk).update(
        registration_claimed_at=timezone.now() - timedelta(minutes=minutes)
    )


def test_a_search_succeeds_only_once_its_best_version_is_registered(spent_search, monkeypatch):
    from models_app import services as registry

    seen = []
    real_register = registry.model_version_register

    def register(*, run, artifact_dir):
        # What an API client reading the search right now would see.
        seen.append(HyperparameterSearch.objects.values_list("status", flat=True).get())
        return real_register(run=run, artifact_dir=artifact_dir)

    monkeypatch.setattr(registry, "model_version_register", register)

    search = search_advance(search_id=spent_search.pk)

    assert seen == ["registering"]
    version = ModelVersion.objects.get()
    assert (search.status, search.best_trial_id) == ("succeeded", version.training_run_id)
    assert search.message == (f"Best: trial 2, validation macro_f1 0.9000; registered {version}.")
    assert search.finished_at is not None
    assert search.registration_claimed_at is None
    assert not run_dir(version.training_run_id).exists()  # copied into the registry


def test_a_worker_killed_while_registering_leaves_it_to_beat(spent_search, monkeypatch):
    from models_app import services as registry

    real_register = registry.model_version_register

    def killed(**kwargs):
        raise WorkerKilled

    monkeypatch.setattr(registry, "model_version_register", killed)
    with pytest.raises(WorkerKilled):
        search_advance(search_id=spent_search.pk)

    search = HyperparameterSearch.objects.get()
    assert (search.status, search.finished_at) == ("registering", None)
    assert search.is_finished is False
    assert search.message == "Best: trial 2, validation macro_f1 0.9000. Registering its model."
    assert not ModelVersion.objects.exists()
    # Beat leaves a fresh claim alone: its worker may still be copying.
    monkeypatch.setattr(registry, "model_version_register", real_register)
    assert search_services.searches_advance() == 1
    assert HyperparameterSearch.objects.get().status == "registering"

    _silence_registration(search)
    search_services.searches_advance()

    search.refresh_from_db()
    version = ModelVersion.objects.get()
    assert (search.status, search.registration_attempts) == ("succeeded", 2)
    assert version.training_run_id == search.best_trial_id


def test_a_version_registered_before_the_worker_died_is_not_registered_twice(
    spent_search, monkeypatch
):
    from models_app import services as registry

    real_register = registry.model_version_register

    def register_then_die(**kwargs):
        real_register(**kwargs)
        raise WorkerKilled

    monkeypatch.setattr(registry, "model_version_register", register_then_die)
    with pytest.raises(WorkerKilled):
        search_advance(search_id=spent_search.pk)
    assert HyperparameterSearch.objects.get().status == "registering"
    # Even when that was its last attempt, and before its claim went stale.
    HyperparameterSearch.objects.filter(pk=spent_search.pk).update(
        registration_attempts=search_services.REGISTRATION_MAX_ATTEMPTS
    )

    search = search_services.search_register(search_id=spent_search.pk)

    version = ModelVersion.objects.get()  # still one
    assert search.status == "succeeded"
    assert f"registered {version}" in search.message
    # The event is written by the step that registers, which died before writing it.
    assert TrainingEvent.objects.filter(kind="registered").count() == 0


def test_a_failed_registration_is_retried_then_fails_the_search(spent_search, monkeypatch):
    from models_app import services as registry

    def broken(**kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(registry, "model_version_register", broken)

    search = search_advance(search_id=spent_search.pk)
    assert (search.status, search.registration_claimed_at) == ("registering", None)
    assert search.message == (
        "Registering the best trial's model failed (attempt 1 of 3): No space left on device. "
        "It is tried again within a minute."
    )
    search_services.searches_advance()
    search_services.searches_advance()
    search.refresh_from_db()
    assert (search.status, search.registration_attempts) == ("registering", 3)

    search_services.searches_advance()

    search.refresh_from_db()
    assert search.status == "failed"
    assert search.message.startswith("Registering the best trial's model failed 3 times")
    assert not ModelVersion.objects.exists()


def test_a_registering_search_cannot_be_cancelled(spent_search, analyst, monkeypatch):
    from models_app import services as registry

    monkeypatch.setattr(
        registry, "model_version_register", lambda **kwargs: (_ for _ in ()).throw(WorkerKilled)
    )
    with pytest.raises(WorkerKilled):
        search_advance(search_id=spent_search.pk)

    with pytest.raises(ValidationError) as caught:
        search_cancel(search=spent_search, user=analyst)

    assert caught.value.messages == [
        "This search has finished its trials and is registering the best one's model; it can "
        "no longer be cancelled."
    ]
    assert HyperparameterSearch.objects.get().status == "registering"


def test_a_search_trains_its_trials_and_registers_only_the_best(
    analyst, snapshot, tiny_base_model, redis_url
):
    with broker_for_this_process(redis_url):
        search = start(analyst, snapshot, tiny_base_model, max_trials=2, parallel_trials=1)
        for _ in range(2):
            trial = search.trials.get(status="queued")
            training_run_execute(run_id=trial.pk)
            search_trial_finished(run_id=trial.pk)

    search.refresh_from_db()
    trials = list(search.trials.order_by("trial_number"))
    assert [t.status for t in trials] == ["succeeded", "succeeded"], [
        t.error_message for t in trials
    ]
    assert search.status == "succeeded"
    assert search.best_trial in trials
    version = ModelVersion.objects.get()  # one version: the best trial's
    assert version.training_run == search.best_trial
    assert f"registered {version}" in search.message


def test_cancelling_a_search_cancels_its_trials(analyst, snapshot, tiny_base_model, redis_url):
    with broker_for_this_process(redis_url):
        search = start(analyst, snapshot, tiny_base_model, max_trials=4, parallel_trials=2)

    search = search_cancel(search=search, user=analyst)

    assert search.status == "cancelled"
    assert set(search.trials.values_list("status", flat=True)) == {"cancelled"}
    with pytest.raises(ValidationError) as caught:
        search_cancel(search=search, user=analyst)
    assert caught.value.messages == ["This search has already finished."]
    assert search_advance(search_id=search.pk).trials.count() == 2  # no new trials


def test_a_default_trial_outside_the_space_counts_but_stays_out_of_the_study(search_row):
    outside = _trial(search_row, 0, [0.5, 0.95])
    TrainingRun.objects.filter(pk=outside.pk).update(
        trial_params={**outside.trial_params, "epochs": 12, "batch_size": 16}
    )
    inside = _trial(search_row, 1, [0.4, 0.6])

    study = search_services.search_study(search_row)

    assert [t.number for t in study.trials] == [0]  # only the trial that fits the space
    assert study.best_value == 0.6
    assert search_services.search_best_trial(search_row).pk == outside.pk
    assert inside.pk != outside.pk


# --- sampling around the defaults -----------------------------------------------------------------
def test_the_default_space_is_centred_on_the_data_chosen_defaults():
    from training_app.engine.config import FULL_LEARNING_RATE_SMALL, MAX_EPOCHS

    space, problems = space_clean({})
    assert problems == []
    assert space["methods"] == ["full"]  # LoRA only when the user adds it
    low, high = space["learning_rate"]
    assert low == pytest.approx(FULL_LEARNING_RATE_SMALL / 2)
    assert high == pytest.approx(FULL_LEARNING_RATE_SMALL * 3)
    # Longer than the defaults' longest budget is in the space (up to twice it).
    assert space["epochs"][1] == 2 * MAX_EPOCHS


def test_trial_2_is_the_defaults_trained_twice_as_long(search_row):
    HyperparameterSearch.objects.filter(pk=search_row.pk).update(
        space={**search_row.space, "epochs": [1, 6]}
    )
    search_row.refresh_from_db()
    first = _trial(search_row, 0, [0.5, 0.6])

    values = search_services.search_next_params(search_row, [first])

    assert values == {**first.trial_params, "epochs": 4}
    # From trial 3 on, the sampler proposes (inside the space).
    second = _trial(search_row, 1, [0.5, 0.7])
    third = search_services.search_next_params(search_row, [first, second])
    assert 1 <= third["epochs"] <= 6
    assert third["method"] in ("full", "lora")


def test_no_longer_trial_when_the_doubled_epochs_leave_the_space_or_trial_1_was_not_the_default(
    search_row,
):
    # SMALL_SPACE allows 1-2 epochs; trial 1 trained 2: doubling adds nothing, so TPE proposes.
    first = _trial(search_row, 0, [0.5, 0.6])
    assert search_services.search_next_params(search_row, [first]) != {
        **first.trial_params,
        "epochs": 4,
    }
    TrainingRun.objects.filter(pk=first.pk).update(
        trial_params={
            "method": "lora",
            "lora_learning_rate": 2e-3,
            "lora_r": 2,
            "epochs": 1,
            "batch_size": 8,
            "weight_decay": 0.0,
            "warmup_ratio": 0.0,
        }
    )
    first.refresh_from_db()
    assert search_services.search_next_params(search_row, [first]).get("epochs") is not None
    from training_app.search.study import longer_default_values

    assert longer_default_values(search_row, [first]) is None


def test_each_search_draws_and_records_its_own_sampler_seed(
    analyst, snapshot, tiny_base_model, redis_url
):
    with broker_for_this_process(redis_url):
        first = start(analyst, snapshot, tiny_base_model, max_trials=2)
        second = start(analyst, snapshot, tiny_base_model, max_trials=2)
        replay = start(analyst, snapshot, tiny_base_model, max_trials=2, seed=first.seed)

    assert 0 <= first.seed < 2**31
    assert 0 <= second.seed < 2**31
    assert first.seed != second.seed
    assert replay.seed == first.seed
