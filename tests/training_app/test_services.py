"""Rules of training_run_start: every bad input is rejected with a sentence, nothing queued."""

import pytest
from django.core.exceptions import ValidationError

from models_app.models import BaseModel
from models_app.services import base_model_register_bundled
from tests.conftest import broker_for_this_process
from tests.training_app.conftest import lose_the_worker_after_the_first_checkpoint
from tests.training_app.snapshot_helpers import make_snapshot, toy_rows
from training_app.models import TrainingRun
from training_app.services import training_run_execute, training_run_start


@pytest.fixture
def bundled(db):
    return base_model_register_bundled()


def start(user, snapshot, base_model, **kwargs):
    return training_run_start(user=user, snapshot=snapshot, base_model=base_model, **kwargs)


def rejected(user, snapshot, base_model, **kwargs) -> dict:
    with pytest.raises(ValidationError) as caught:
        start(user, snapshot, base_model, **{"task": "single_label", **kwargs})
    assert TrainingRun.objects.count() == 0
    return caught.value.message_dict


def test_snapshot_without_labels_is_rejected(analyst, bundled):
    snapshot = make_snapshot([(t, "", s) for t, _, s in toy_rows()])

    errors = rejected(analyst, snapshot, bundled)

    assert errors == {"snapshot": ["This snapshot has no labels. Label the records first."]}


def test_snapshot_with_one_class_is_rejected(analyst, bundled):
    snapshot = make_snapshot([(t, "positive", s) for t, _, s in toy_rows()])

    errors = rejected(analyst, snapshot, bundled)

    assert errors == {
        "snapshot": ["Classification needs at least two classes; this snapshot has only positive."]
    }


def test_class_with_too_few_training_examples_is_rejected(analyst, bundled):
    rows = [*toy_rows(), ("rare thing", "rare", "train")]
    errors = rejected(analyst, make_snapshot(rows), bundled)

    assert errors == {
        "snapshot": [
            "Class 'rare' has fewer than 2 training examples. Add examples, merge or exclude "
            "the class, then take a new snapshot."
        ]
    }


def test_snapshot_without_validation_split_is_rejected(analyst, bundled):
    rows = [(t, lab, "train" if s == "validation" else s) for t, lab, s in toy_rows()]

    errors = rejected(analyst, make_snapshot(rows), bundled)

    assert errors == {
        "snapshot": [
            "This snapshot has no validation split. Assign train/validation/test splits and take a new snapshot."
        ]
    }


@pytest.mark.parametrize("bad", ["inf", "-Infinity", "NaN", "1e999"])
def test_regression_on_labels_that_are_not_finite_is_rejected_at_the_start(analyst, bundled, bad):
    """float() reads these, so the run used to be accepted and then failed on the worker."""
    rows = [(t, str(i % 4) if i != 7 else bad, s) for i, (t, _, s) in enumerate(toy_rows())]

    errors = rejected(analyst, make_snapshot(rows), bundled, task="regression")

    assert errors["task"][0].startswith(
        f"Regression needs numeric labels, but the train split has {bad!r}"
    )


def test_regression_on_text_labels_is_rejected(analyst, bundled):
    errors = rejected(analyst, make_snapshot(toy_rows()), bundled, task="regression")

    assert errors["task"][0].startswith(
        "Regression needs numeric labels, but the train split has 'positive'"
    )


def test_bad_hyperparameters_are_rejected_with_one_sentence_each(analyst, bundled):
    errors = rejected(
        analyst, make_snapshot(toy_rows()), bundled, params={"learning_rate": 5, "batch_size": 0}
    )

    assert errors == {
        "params": [
            "Learning rate must be between 1e-7 and 1; got 5.",
            "Batch size must be between 1 and 4096; got 0.",
        ]
    }


def test_unknown_hyperparameter_is_rejected(analyst, bundled):
    errors = rejected(analyst, make_snapshot(toy_rows()), bundled, params={"learnin_rate": 0.1})

    assert errors == {"params": ["Unknown hyperparameter 'learnin_rate'."]}


def test_unloadable_base_model_folder_is_rejected(analyst, tmp_path, db):
    broken = BaseModel.objects.create(name="broken", source="local", location=str(tmp_path))

    errors = rejected(analyst, make_snapshot(toy_rows()), broken)

    assert errors == {
        "base_model": [
            f"The base model folder {tmp_path} has no config.json, so it is not a Hugging Face "
            "model folder. Check the path or register the model again."
        ]
    }


def test_unreachable_hub_model_is_rejected_with_a_clear_message(analyst, db):
    hub = BaseModel.objects.create(name="hub", source="hub", location="bert-base-uncased")

    errors = rejected(analyst, make_snapshot(toy_rows()), hub)

    assert errors["base_model"][0].startswith(
        "The base model 'bert-base-uncased' could not be found on the Hugging Face Hub from this server"
    )


def test_viewer_cannot_start_a_run(make_user, bundled):
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        start(make_user("viewer"), make_snapshot(toy_rows()), bundled, task="single_label")
    assert TrainingRun.objects.count() == 0


def test_broker_down_leaves_no_run(analyst, bundled):
    from lepton_web.jobs import BrokerUnavailable

    with broker_for_this_process("redis://127.0.0.1:1/0"), pytest.raises(BrokerUnavailable):
        start(analyst, make_snapshot(toy_rows()), bundled, task="single_label")
    assert TrainingRun.objects.count() == 0


def test_valid_run_is_queued_with_resolved_defaults_and_an_estimate(analyst, bundled, redis_url):
    with broker_for_this_process(redis_url):
        run = start(analyst, make_snapshot(toy_rows()), bundled, task="single_label", method="lora")

    assert run.status == "queued"
    assert run.label_names == ["negative", "positive"]
    # Data-driven defaults for a tiny set: a small batch, the most epochs, LoRA's rate.
    assert run.params["batch_size"] == 16
    assert run.params["epochs"] == 3
    assert run.params["scheduler"] == "wsd"
    assert run.params["learning_rate"] == 1e-3
    assert run.estimate["seconds"] > 0
    assert run.estimate["memory_bytes"] > 0
    assert "defaults" not in run.estimate
    chosen = run.events.get(kind="defaults_chosen").message
    assert chosen.startswith("Chosen for ")
    assert "3 epochs" in chosen
    assert "warmup-stable-decay" in chosen


def test_user_settings_override_the_defaults_and_the_started_event_explains_both(
    analyst, bundled, redis_url
):
    from training_app.services import RunCallbacks

    with broker_for_this_process(redis_url):
        run = start(
            analyst,
            make_snapshot(toy_rows()),
            bundled,
            task="single_label",
            params={"epochs": 2, "learning_rate": None},
        )
    assert run.params["epochs"] == 2
    assert run.params["learning_rate"] == 1e-4  # None: chosen from the data
    assert run.params["head_learning_rate_multiplier"] == 10
    assert run.claim()

    RunCallbacks(run).on_event(kind="started", message="Training on 12 examples.")

    started = run.events.get(kind="started").message
    assert started.startswith("Training on 12 examples. Chosen for ")
    assert started.endswith("; yours: epochs 2.")


def test_a_queued_run_records_the_learning_rate_its_method_trains_with(analyst, bundled, redis_url):
    with broker_for_this_process(redis_url):
        lora = start(
            analyst, make_snapshot(toy_rows()), bundled, task="single_label", method="lora"
        )
        full = start(analyst, make_snapshot(toy_rows()), bundled, task="single_label")

    assert lora.resolved_params["learning_rate"] == 1e-3
    assert full.resolved_params["learning_rate"] == 1e-4  # small encoder, chosen from the data
    assert full.resolved_params["epochs"] == 3


def test_the_engines_resolved_values_are_recorded_on_the_run_when_it_starts(
    analyst, bundled, redis_url
):
    from training_app.services import RunCallbacks

    with broker_for_this_process(redis_url):
        run = start(analyst, make_snapshot(toy_rows()), bundled, task="single_label")
    assert run.claim()

    RunCallbacks(run).on_start(
        resolved={"learning_rate": 5e-5, "device": "cpu", "precision": "fp32", "dropout": 0.1}
    )

    run.refresh_from_db()
    assert run.resolved_params["device"] == "cpu"
    assert run.resolved_params["precision"] == "fp32"
    assert run.resolved_params["dropout"] == 0.1
    assert run.resolved_params["batch_size"] == 16  # kept from the request
    assert run.params["device"] == "auto"  # the request itself is unchanged


def test_a_second_delivery_of_a_running_run_does_nothing(analyst, bundled, redis_url):
    with broker_for_this_process(redis_url):
        run = start(analyst, make_snapshot(toy_rows()), bundled, task="single_label")
    assert run.claim()

    assert training_run_execute(run_id=run.pk) is None

    run.refresh_from_db()
    assert run.attempts == 1
    assert list(run.events.values_list("kind", flat=True)) == ["defaults_chosen"]


def _run_logged_half_way(analyst, bundled, redis_url):
    """A claimed run whose engine logged step 5 of 10 (8 s left for those 5), read back."""
    from training_app.services import RunCallbacks

    with broker_for_this_process(redis_url):
        run = start(analyst, make_snapshot(toy_rows()), bundled, task="single_label")
    assert run.claim()

    RunCallbacks(run).on_log(
        step=5,
        epoch=0.5,
        metrics={"loss": 0.7, "examples_per_second": 120.0, "seconds_left": 8.0, "total_steps": 10},
    )

    run.refresh_from_db()
    return run


def test_progress_follows_the_engines_step_count_while_training(analyst, bundled, redis_url):
    from training_app.models import TrainingMetric

    run = _run_logged_half_way(analyst, bundled, redis_url)

    assert (run.progress, run.steps_done, run.total_steps) == (49, 5, 10)
    assert run.message == "Step 5 of 10, loss 0.7000."
    assert (run.examples_per_second, run.seconds_left) == (120.0, 8.0)
    names = set(TrainingMetric.objects.filter(run=run).values_list("name", flat=True))
    assert names == {"train_loss", "train_examples_per_second"}


def test_with_a_refit_to_follow_the_first_pass_is_half_the_bar_and_its_time_left_counts_both(
    analyst, bundled, redis_url, monkeypatch
):
    from training_app.engine import config as engine_config

    monkeypatch.setattr(engine_config, "LARGE_SET", 1)  # this toy set counts as large
    run = _run_logged_half_way(analyst, bundled, redis_url)

    assert run.params["refit_on_all_data"] is True
    assert (run.progress, run.steps_done, run.total_steps) == (24, 5, 10)
    # 8 s for this pass's last 5 steps, then up to as many epochs again at the same 1.6 s a
    # step: the toy set's 16 train + 4 validation rows make that 10 x 20 / 16 = 12.5 steps.
    assert run.seconds_left == pytest.approx(8.0 + 12.5 * 1.6)


def test_a_dataset_whose_snapshot_trained_a_run_cannot_be_deleted(analyst, bundled, redis_url):
    from datasets_app.models import Dataset
    from datasets_app.services import dataset_delete

    snapshot = make_snapshot(toy_rows())
    with broker_for_this_process(redis_url):
        run = start(analyst, snapshot, bundled, task="single_label")

    with pytest.raises(ValidationError) as caught:
        dataset_delete(dataset=snapshot.dataset, user=analyst)

    assert caught.value.messages == [
        f"Training runs #{run.pk} were trained on snapshots of this dataset. Delete those runs "
        "first; the dataset stays so that they remain reproducible."
    ]
    assert Dataset.objects.filter(pk=snapshot.dataset_id).exists()


def test_deleting_a_dataset_removes_its_records_and_cleaning_history(analyst, db):
    from datasets_app.models import CleaningAction, CleaningChange, Dataset, Record
    from datasets_app.services import dataset_delete

    snapshot = make_snapshot(toy_rows())
    dataset = snapshot.dataset
    record = Record.objects.filter(dataset=dataset).first()
    action = CleaningAction.objects.create(dataset=dataset, kind="drop_empty", description="x")
    CleaningChange.objects.create(action=action, record=record, old_text="a", old_is_excluded=False)

    dataset_delete(dataset=dataset, user=analyst)

    assert not Dataset.objects.filter(pk=dataset.pk).exists()
    assert not Record.objects.exists()
    assert not CleaningChange.objects.exists()


# --- checkpoints through the storage: a run resumes on another machine -------------------------------
def test_a_run_taken_over_by_another_machine_resumes_from_the_checkpoint_in_storage(
    make_run, settings, tmp_path, monkeypatch
):
    from django.core.files.storage import default_storage

    settings.TRAINING_CHECKPOINT_SYNC = "on"
    settings.TRAINING_WORK_DIR = tmp_path / "machine-a"
    run = make_run(status="queued")

    lose_the_worker_after_the_first_checkpoint(run, monkeypatch)
    first = run.events.get(kind="checkpoint")
    assert first.message.endswith("and copied to storage.")

    # The sweeper hands the run to a worker on a machine that has none of machine A's files.
    settings.TRAINING_WORK_DIR = tmp_path / "machine-b"
    assert run.requeue(message="The worker was lost.")
    training_run_execute(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == "succeeded", run.error_message
    step = int(first.message.split()[4])
    events = dict(run.events.exclude(kind="checkpoint").values_list("kind", "message"))
    assert events["checkpoint_fetched"] == (
        f"Fetched 1 checkpoint(s) from storage, the latest at step {step:,}."
    )
    assert f"step {step}" in events["resumed"]
    assert run.events.filter(kind="started").count() == 1  # not trained again from step 1
    assert not default_storage.exists(f"training/checkpoints/run-{run.pk}")


def test_fetching_checkpoints_skips_an_upload_that_never_finished(db, settings, tmp_path):
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from training_app.checkpoints import checkpoint_upload, checkpoints_fetch

    local = tmp_path / "a" / "checkpoints"
    for step in (5, 10):
        folder = local / f"ckpt-{step:09d}"
        folder.mkdir(parents=True)
        (folder / "state.pt").write_bytes(b"state %d" % step)
    checkpoint_upload(run_id=7, folder=local / "ckpt-000000005")
    # The machine died while copying step 10: its files are there, its marker is not.
    default_storage.save("training/checkpoints/run-7/ckpt-000000010/state.pt", ContentFile(b"x"))

    fetched = checkpoints_fetch(run_id=7, checkpoint_dir=tmp_path / "b")

    assert fetched == ["ckpt-000000005"]
    assert (tmp_path / "b" / "ckpt-000000005" / "state.pt").read_bytes() == b"state 5"
    assert not (tmp_path / "b" / "ckpt-000000010").exists()


def test_a_run_that_trains_on_all_data_records_its_first_pass_and_registers_the_refit(
    analyst, tiny_base_model, settings, tmp_path, monkeypatch
):
    from tests.training_app.conftest import make_snapshot as make_sentiment_snapshot

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    settings.TRAINING_WORK_DIR = tmp_path / "work"
    run = training_run_start(
        user=analyst,
        snapshot=make_sentiment_snapshot(user=analyst),
        base_model=tiny_base_model,
        task="single_label",
        params={
            "epochs": 2,
            "batch_size": 8,
            "max_length": 32,
            "device": "cpu",
            "refit_on_all_data": True,
        },
    )
    # What the progress bar and its line showed, as each report wrote it (the call goes on).
    reported = []
    report = TrainingRun.report

    def recording_report(self, *, progress=None, message=None):
        reported.append((progress, message))
        return report(self, progress=progress, message=message)

    monkeypatch.setattr(TrainingRun, "report", recording_report)

    training_run_execute(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == "succeeded", run.error_message
    # The first pass fills the first half of the bar, the refit the second, never backwards.
    first = [p for p, m in reported if m and m.startswith("Step ")]
    second = [(p, m) for p, m in reported if m and m.startswith("Refit on train + validation")]
    assert first
    assert max(first) <= 49
    assert second
    assert all(50 <= p <= 99 for p, _ in second)
    # As many epochs as the first pass's best step: 8 steps of 8 make an epoch of the 60 train
    # rows, 10 of the 75 train + validation rows.
    refit_steps = round(run.best_step * 10 / 8)
    assert refit_steps > run.best_step
    assert second[-1] == (
        99,
        f"Refit on train + validation: step {refit_steps} of {refit_steps}.",
    )
    shown = [p for p, _ in reported if p is not None]
    assert shown == sorted(shown)
    assert run.best_metrics["macro_f1"] >= 0  # the first pass's validation score is kept
    assert run.resolved_params["refit_steps"] == refit_steps
    assert run.resolved_params["refit_examples"] == 75  # 60 train + 15 validation
    kinds = list(run.events.order_by("pk").values_list("kind", flat=True))
    assert kinds.index("finished") < kinds.index("refit_started") < kinds.index("refit")
    refit = run.events.get(kind="refit").message
    assert refit.startswith(
        f"Refit on train + validation (75 examples) for {refit_steps} steps: "
        f"{run.best_step / 8:g} epochs, as at the first pass's best step (validation: "
    )
    assert run.model_version.hyperparameters["refit_on_all_data"] is True


def test_the_training_profile_counts_the_smallest_class_and_the_defaults_weigh_a_rare_one(db):
    from training_app.services import training_defaults_choose, training_profile

    # 40 positive and 5 negative training rows (8x; the rare class has 5): weighted.
    rows = [(f"this is good number {i}", "positive", "train") for i in range(40)]
    rows += [(f"this is bad number {i}", "negative", "train") for i in range(5)]
    rows += [("this is good", "positive", "validation"), ("this is bad", "negative", "test")]
    profile = training_profile(snapshot=make_snapshot(rows), task="single_label")

    assert (profile.n_examples, profile.n_classes) == (45, 2)
    assert (profile.class_ratio, profile.smallest_class) == (8.0, 5)
    chosen = training_defaults_choose(
        task="single_label", method="full", params={}, profile=profile
    )
    assert chosen.values["class_weighting"] is True
    assert "the largest class has 8x the smallest, which has 5 examples" in chosen.explanation
