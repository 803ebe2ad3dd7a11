"""Weight averaging: the engine keeps an exponential moving average of the trained weights,
scores it on validation, checkpoints it and keeps it as the model. Tiny BERTs built in the
test, for real, on the CPU."""

from __future__ import annotations

import torch

from tests.training_app.test_trainer import (  # noqa: F401 - base_model is a fixture
    Recorder,
    artifact_weights,
    assert_same_weights,
    base_model,
    run,
)
from training_app.engine import TrainingConfig, loop
from training_app.engine.config import DataProfile, choose_defaults


def _watch(monkeypatch) -> dict:
    """Record the trainable weights at the start, after every optimizer step, and whenever
    the validation split is scored."""
    seen: dict = {"start": None, "steps": [], "validations": []}
    build = loop._Run._build_training_objects
    step = loop._Run._optimizer_step
    evaluate = loop._Run._evaluate_split

    def copy(run) -> dict[str, torch.Tensor]:
        return {name: parameter.detach().clone() for name, parameter in run.trainable}

    def watched_build(self):
        build(self)
        if seen["start"] is None:
            seen["start"] = copy(self)

    def watched_step(self, global_step):
        value = step(self, global_step)
        seen["steps"].append(copy(self))
        return value

    def watched_evaluate(self, split):
        if split is self.validation_split:
            seen["validations"].append((len(seen["steps"]), copy(self)))
        return evaluate(self, split)

    monkeypatch.setattr(loop._Run, "_build_training_objects", watched_build)
    monkeypatch.setattr(loop._Run, "_optimizer_step", watched_step)
    monkeypatch.setattr(loop._Run, "_evaluate_split", watched_evaluate)
    return seen


def _average(seen: dict, steps: int, horizon: float) -> dict[str, torch.Tensor]:
    """The documented average after `steps` optimizer steps, computed here on its own."""
    average = {name: value.clone() for name, value in seen["start"].items()}
    for t, weights in enumerate(seen["steps"][:steps]):
        decay = min(1 - 1 / horizon, (1 + t) / (10 + t))
        for name, value in weights.items():
            average[name] = decay * average[name] + (1 - decay) * value
    return average


def _close(first: dict, second: dict, *, atol: float = 1e-5) -> bool:
    return all(torch.allclose(first[name], second[name], atol=atol) for name in first)


def test_the_run_scores_and_keeps_the_average_of_its_weights(base_model, tmp_path, monkeypatch):  # noqa: F811
    seen = _watch(monkeypatch)

    result, recorder = run(base_model, tmp_path, weight_averaging=0.25, eval_every_steps=30)

    planned = 90  # 6 epochs of 240 rows in batches of 16
    horizon = 0.25 * planned
    assert result.status == "succeeded"
    assert result.steps_done == planned
    assert result.best_step == planned
    assert result.best_metrics["macro_f1"] == recorder.evaluations[-1]["macro_f1"]
    kept = artifact_weights(result)
    expected = _average(seen, planned, horizon)
    assert _close({name: kept[name] for name in expected}, expected)
    # ... which is not the last trained weights.
    last = seen["steps"][-1]
    assert not _close({name: kept[name] for name in last}, last, atol=1e-4)
    # Every validation scored the average as it stood at that step.
    assert [steps for steps, _ in seen["validations"]] == [30, 60, 90]
    for steps, weights in seen["validations"]:
        assert _close(weights, _average(seen, steps, horizon))


def test_a_run_stopped_early_keeps_the_average_at_its_best_step(base_model, tmp_path, monkeypatch):  # noqa: F811
    seen = _watch(monkeypatch)
    # The first validation is the best; the run stops after 2 more without improvement.
    monkeypatch.setattr(loop, "_is_better", lambda metric, value, best: best is None)

    result, _ = run(
        base_model,
        tmp_path,
        weight_averaging=0.25,
        eval_every_steps=10,
        early_stopping_patience=2,
    )

    assert result.stopped_early
    assert result.steps_done == 30
    assert result.best_step == 10
    kept = artifact_weights(result)
    expected = _average(seen, 10, 0.25 * 90)
    assert _close({name: kept[name] for name in expected}, expected)


def test_averaging_resumes_after_cancel_to_the_same_model(base_model, tmp_path):  # noqa: F811
    settings = {"scheduler": "wsd", "epochs": 2, "eval_every_steps": 5, "weight_averaging": 0.2}
    straight, _ = run(base_model, tmp_path, name="straight", **settings)
    first, _ = run(
        base_model, tmp_path, name="cut", callbacks=Recorder(stop_after_steps=17), **settings
    )
    recorder = Recorder()
    resumed, _ = run(base_model, tmp_path, name="cut", callbacks=recorder, **settings)
    plain, _ = run(base_model, tmp_path, name="plain", **{**settings, "weight_averaging": 0.0})

    assert first.status == "cancelled"
    assert recorder.events[0][0] == "resumed"
    assert resumed.steps_done == straight.steps_done
    assert_same_weights(artifact_weights(straight), artifact_weights(resumed))
    assert not _close(artifact_weights(straight), artifact_weights(plain), atol=1e-4)


def test_weight_averaging_settings_are_checked_and_chosen():
    assert TrainingConfig(task="single_label", weight_averaging=0.1).validate() == []
    assert TrainingConfig(task="single_label", weight_averaging=1.5).validate() == [
        "Weight averaging must be between 0 and 1; got 1.5."
    ]
    assert TrainingConfig(task="single_label", weight_averaging="lots").validate() == [
        "Weight averaging must be a number; got 'lots'."
    ]
    problems = TrainingConfig(task="single_label", method="adalora", weight_averaging=0.1)
    assert problems.validate() == [
        "Weight averaging does not apply to AdaLoRA (its ranks change during the run); set it to 0."
    ]

    profile = DataProfile(n_examples=3000, n_classes=3)
    full = choose_defaults(task="single_label", method="full", profile=profile)
    assert full.values["weight_averaging"] == 0.1
    assert "weights averaged over about the last 10% of steps" in full.explanation
    lora = choose_defaults(task="single_label", method="lora", profile=profile)
    assert lora.values["weight_averaging"] == 0.0
    assert "averaged" not in lora.explanation
    yours = choose_defaults(
        task="single_label",
        method="full",
        profile=profile,
        user_params={"weight_averaging": 0},
    )
    assert yours.values["weight_averaging"] == 0
    assert "yours: weight averaging 0" in yours.explanation


def test_a_refit_with_averaging_trains_to_the_end_and_keeps_its_average(
    base_model,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    seen = _watch(monkeypatch)

    refitted, recorder = run(
        base_model, tmp_path, epochs=2, weight_averaging=0.25, refit_on_all_data=True
    )

    # The first pass keeps its end (30 steps: 2 epochs of 15), so the refit trains the same 2
    # epochs of 300 rows: 38 steps (19 an epoch).
    assert refitted.best_step == 30
    assert refitted.refit["steps"] == 38
    assert "refit_finished" in recorder.kinds()
    # The watcher saw the first pass (start, 30 steps) and then the refit's own run.
    refit_steps = seen["steps"][30:]
    assert len(refit_steps) == 38
    kept = artifact_weights(refitted)
    assert not _close({name: kept[name] for name in refit_steps[-1]}, refit_steps[-1], atol=1e-4)
