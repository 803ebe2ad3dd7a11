"""Training-time estimates calibrated on the workers (issue 9, item 11): the estimate comes
from the speed measured for the base model, method and device, its range narrows with the
runs that finished since, and every run records the estimate it started with and the time it
took."""

import pytest

from tests.training_app.test_views import form_data
from training_app.calibration import training_run_calibrate, training_time_estimate
from training_app.estimates import (
    _padded_batches,
    describe_range,
    estimate_seconds,
    token_length_counts,
)
from training_app.models import TrainingCalibration, TrainingEvent
from training_app.services import training_config_build, training_run_estimate

MEASURED = {
    "device": "cpu",
    "device_name": "CPU, 2 threads",
    "method": "full",
    "batch_size": 8,
    # Seconds per example: 0.01 + 0.0005 per token (train), a tenth of that (evaluation).
    "points": [
        {"tokens": 32, "train_seconds_per_example": 0.026, "eval_seconds_per_example": 0.0026},
        {"tokens": 128, "train_seconds_per_example": 0.074, "eval_seconds_per_example": 0.0074},
    ],
    "optimizer_step_seconds": 0.05,
    "load_seconds": 2.0,
    "parameters": 1_000_000,
    "trainable_parameters": 1_000_000,
    "chars_per_token": 4.0,
}
PARAMS = {"epochs": 2, "batch_size": 8, "max_length": 64, "device": "cpu"}


def calibrate(base_model, **fields) -> TrainingCalibration:
    return TrainingCalibration.objects.create(
        base_model=base_model,
        method=fields.pop("method", "full"),
        device=fields.pop("device", "cpu"),
        device_name="CPU, 2 threads",
        measurements=fields.pop("measurements", MEASURED),
        chars_per_token=4.0,
        **fields,
    )


# --- the pure model --------------------------------------------------------------------------------
def test_a_length_sorted_epoch_pads_each_batch_to_its_longest_text():
    assert list(_padded_batches([(10, 5), (20, 2), (30, 7)], 4)) == [
        (4, 10),
        (4, 30),
        (4, 30),
        (2, 30),
    ]


def test_token_lengths_come_from_characters_and_stop_at_max_length():
    counts = token_length_counts([(40, 3), (41, 1), (4000, 2)], chars_per_token=4.0, max_length=64)
    assert counts == [(12, 3), (13, 1), (64, 2)]


def test_training_time_is_the_measured_seconds_per_padded_example():
    estimate = estimate_seconds(
        calibration={**MEASURED, "optimizer_step_seconds": 0, "load_seconds": 0},
        train_lengths=[(32, 16)],
        evaluation_lengths=[],
        n_validation=0,
        n_test=0,
        batch_size=8,
        gradient_accumulation=1,
        epochs=3,
        eval_every_steps=None,
    )
    # 16 examples x 3 epochs x (0.01 + 0.0005 x 32) s
    assert estimate["parts"]["train"] == pytest.approx(48 * 0.026, abs=0.05)
    assert estimate["total_steps"] == 6


def test_finished_runs_correct_the_estimate_and_set_its_range():
    arguments = {
        "calibration": MEASURED,
        "train_lengths": [(20, 800)],
        "evaluation_lengths": [(20, 200)],
        "n_validation": 100,
        "n_test": 100,
        "batch_size": 8,
        "gradient_accumulation": 1,
        "epochs": 1,
        "eval_every_steps": None,
    }
    probe_only = estimate_seconds(**arguments)
    corrected = estimate_seconds(**arguments, run_ratios=[1.8, 2.0, 2.4])

    assert (probe_only["low_seconds"], probe_only["high_seconds"]) == (
        pytest.approx(probe_only["seconds"] * 0.8, abs=0.1),
        pytest.approx(probe_only["seconds"] * 1.3, abs=0.1),
    )
    assert corrected["seconds"] == pytest.approx(probe_only["seconds"] * 2.0, abs=0.1)
    assert corrected["low_seconds"] == pytest.approx(corrected["seconds"] * 0.855, abs=0.1)
    assert corrected["high_seconds"] == pytest.approx(corrected["seconds"] * 1.26, abs=0.1)
    assert corrected["runs_compared"] == 3


def test_ranges_read_in_one_unit():
    assert describe_range(40, 70) == "40–70 s"
    assert describe_range(200, 400) == "3–7 min"
    assert describe_range(5000, 9000) == "1.4–2.5 h"


# --- the service ----------------------------------------------------------------------------------
def test_estimate_uses_the_stored_calibration(snapshot, tiny_base_model):
    uncalibrated = training_run_estimate(
        snapshot=snapshot,
        base_model=tiny_base_model,
        task="single_label",
        method="full",
        params=PARAMS,
    )
    assert uncalibrated["calibrated"] is False
    assert uncalibrated["low_seconds"] == pytest.approx(uncalibrated["seconds"] * 0.4, abs=0.1)
    assert uncalibrated["high_seconds"] == pytest.approx(uncalibrated["seconds"] * 3, abs=0.1)
    assert uncalibrated["basis"].startswith("Not measured yet")

    calibration = calibrate(tiny_base_model)
    calibrate(  # another device's measurement is not used for a CPU run
        tiny_base_model,
        device="cuda",
        measurements={**MEASURED, "optimizer_step_seconds": 0.0, "load_seconds": 0.0},
    )
    estimate = training_run_estimate(
        snapshot=snapshot,
        base_model=tiny_base_model,
        task="single_label",
        method="full",
        params=PARAMS,
    )

    assert estimate["calibrated"] is True
    assert estimate["calibration_id"] == calibration.pk
    assert estimate["basis"].startswith("Measured on a worker (CPU, 2 threads)")
    # 60 train texts, one batch of 8 after another, 2 epochs: 16 steps of the optimizer.
    assert estimate["total_steps"] == 16
    assert estimate["parts"]["setup"] == pytest.approx(2.0 + 90 * 3e-5 + 1.0, abs=0.1)
    assert estimate["parts"]["train"] > 16 * 0.05 + 120 * 0.01
    assert estimate["low_seconds"] < estimate["seconds"] < estimate["high_seconds"]

    # Slower measured steps give a longer estimate: it is the measurement, not a guess.
    slower = {
        **MEASURED,
        "points": [
            {**point, "train_seconds_per_example": point["train_seconds_per_example"] * 2}
            for point in MEASURED["points"]
        ],
    }
    TrainingCalibration.objects.filter(pk=calibration.pk).update(measurements=slower)
    doubled = training_run_estimate(
        snapshot=snapshot,
        base_model=tiny_base_model,
        task="single_label",
        method="full",
        params=PARAMS,
    )
    train_examples = doubled["parts"]["train"] - 16 * 0.05
    assert train_examples == pytest.approx(2 * (estimate["parts"]["train"] - 16 * 0.05), abs=0.1)


def test_estimate_for_another_method_waits_for_its_own_measurement(snapshot, tiny_base_model):
    calibrate(tiny_base_model, method="full")
    config = training_config_build(task="single_label", method="lora", params=PARAMS)
    assert (
        training_time_estimate(snapshot=snapshot, base_model=tiny_base_model, config=config)[
            "calibrated"
        ]
        is False
    )


def test_the_first_run_measures_the_speed_once_and_records_its_start_estimate(
    make_run, tiny_base_model, monkeypatch
):
    from training_app import engine

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = make_run(status="running", params=PARAMS)
    config = engine.TrainingConfig(task=run.task, method=run.method, **run.params)

    training_run_calibrate(run=run, config=config, train_texts=["a good movie"] * 5, engine=engine)

    calibration = TrainingCalibration.objects.get()
    assert (calibration.base_model, calibration.method, calibration.device) == (
        tiny_base_model,
        "full",
        "cpu",
    )
    assert calibration.device_name == "CPU, 1 thread"
    assert [point["tokens"] for point in calibration.measurements["points"]] == [32, 64]
    assert all(p["train_seconds_per_example"] > 0 for p in calibration.measurements["points"])
    assert calibration.chars_per_token > 0
    run.refresh_from_db()
    assert run.estimate["at_start"]["calibrated"] is True
    assert run.estimate["at_start"]["calibration_id"] == calibration.pk
    assert TrainingEvent.objects.filter(run=run, kind="speed_measured").count() == 1

    # A second run of the same model, method and device measures nothing again.
    second = make_run(status="running", params=PARAMS)
    training_run_calibrate(
        run=second, config=config, train_texts=["a good movie"] * 5, engine=engine
    )
    assert TrainingCalibration.objects.count() == 1
    assert not TrainingEvent.objects.filter(run=second, kind="speed_measured").exists()
    second.refresh_from_db()
    assert second.estimate["at_start"]["calibration_id"] == calibration.pk


def test_api_and_form_give_the_calibrated_range_and_its_basis(
    api_client_as, client_as, snapshot, tiny_base_model
):
    calibrate(tiny_base_model, run_ratios=[1.5, 2.0, 2.5])
    answer = api_client_as("analyst").post(
        "/api/v1/runs/estimate/",
        {"snapshot": snapshot.pk, "base_model": tiny_base_model.pk, "params": PARAMS},
        format="json",
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["calibrated"] is True
    assert body["runs_compared"] == 3
    assert body["basis"] == (
        "Measured on a worker (CPU, 2 threads), corrected by the 3 runs since. The run decays "
        "sooner when validation stops improving, or goes on up to 25% longer while it still "
        "improves."
    )
    assert body["low_seconds"] < body["seconds"] < body["high_seconds"]
    # A fixed schedule cannot run on: its range ends lower (by the extension cap, 1.25x).
    linear = (
        api_client_as("analyst")
        .post(
            "/api/v1/runs/estimate/",
            {
                "snapshot": snapshot.pk,
                "base_model": tiny_base_model.pk,
                "params": {**PARAMS, "scheduler": "linear"},
            },
            format="json",
        )
        .json()
    )
    assert linear["basis"].endswith("Stopping early makes a run shorter.")
    assert linear["seconds"] == body["seconds"]
    assert body["high_seconds"] == pytest.approx(linear["high_seconds"] * 1.25, abs=0.1)

    form = (
        client_as("analyst")
        .post(
            "/training/estimate/",
            form_data(snapshot, tiny_base_model, max_length="64"),
            HTTP_HX_REQUEST="true",
        )
        .content.decode()
    )
    assert "corrected by the 3 runs since" in form
    # The form's test data choose the linear schedule.
    assert f"{linear['low_seconds']:.0f}–{linear['high_seconds']:.0f} s, about" in form


def test_an_estimate_with_train_on_all_data_counts_the_refit(snapshot, tiny_base_model):
    plain = training_run_estimate(
        snapshot=snapshot,
        base_model=tiny_base_model,
        task="single_label",
        method="full",
        params=PARAMS,
    )
    refit = training_run_estimate(
        snapshot=snapshot,
        base_model=tiny_base_model,
        task="single_label",
        method="full",
        params={**PARAMS, "refit_on_all_data": True},
    )

    # The refit trains as many epochs on 60 train + 15 validation rows: 1.25x the steps.
    assert refit["seconds"] == pytest.approx(plain["seconds"] * (1 + 0.8 * 1.25), abs=0.2)
    assert refit["high_seconds"] == pytest.approx(plain["high_seconds"] * (1 + 1.25), abs=0.2)
    assert refit["basis"].endswith("Includes the refit on train + validation.")
    assert plain["defaults"].startswith("Chosen for 60 examples in 3 classes")


def test_the_refit_step_ratio_counts_the_validation_rows_that_join_the_training_rows():
    from training_app.services import refit_step_ratio

    # SST-2 as quality.py splits it: 53,879 train and 6,735 validation rows.
    assert refit_step_ratio({"train": 53_879, "validation": 6_735, "test": 6_735}) == pytest.approx(
        60_614 / 53_879
    )
    # No validation rows join: the same steps; no train split (nothing to refit): no scaling.
    assert refit_step_ratio({"train": 100, "test": 10}) == 1.0
    assert refit_step_ratio({}) == refit_step_ratio(None) == 1.0
