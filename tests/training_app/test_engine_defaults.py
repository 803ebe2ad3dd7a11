"""Data-driven defaults (a pure function: no torch, no database), layer-wise learning rates and
the refit on train + validation (a tiny BERT built from a config, see test_trainer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.training_app.test_trainer import base_model, make_data, run  # noqa: F401 - fixture
from training_app.engine.config import (
    DataProfile,
    TrainingConfig,
    _SafeCallbacks,
    choose_defaults,
    config_with_defaults,
)
from training_app.engine.data import _prepare_labels
from training_app.engine.loop import _Run
from training_app.engine.reports import _class_weights


def chosen(n: int, classes: int, ratio: float = 1.0, method: str = "full", **user):
    return choose_defaults(
        task="single_label",
        method=method,
        profile=DataProfile(n_examples=n, n_classes=classes, class_ratio=ratio),
        user_params=user,
    )


def test_a_small_set_trains_longer_with_a_small_batch_and_explains_why():
    defaults = chosen(400, 6)

    assert defaults.values["epochs"] == 3  # at least 24,000 examples / 400 = 60, capped at 3
    assert defaults.values["batch_size"] == 16
    assert defaults.values["warmup_ratio"] == 0.1
    assert defaults.values["learning_rate"] == 1e-4
    assert defaults.values["head_learning_rate_multiplier"] == 10
    assert defaults.values["layer_decay"] == 0.9
    assert defaults.user_set == []
    assert defaults.explanation.startswith(
        "Chosen for 400 examples in 6 classes: 3 epochs (about 1,200 examples seen; capped at 3)"
    )
    # 25 steps an epoch, 75 planned: evaluated every 75 / 4 steps, rounded up.
    assert defaults.values["scheduler"] == "wsd"
    assert defaults.values["eval_every_steps"] == 19
    assert (
        "warmup-stable-decay (the last 20% of the planned 75 steps decay, sooner when "
        "validation stops improving; up to 25% more steps while it still improves, in "
        "macro-F1 or accuracy), "
        "validation every 19 steps" in defaults.explanation
    )
    assert "lr 1e-4 for the encoder" in defaults.explanation
    assert "10x for the new head" in defaults.explanation


def test_a_large_set_gets_fewer_epochs_a_larger_batch_and_shorter_warmup():
    defaults = chosen(54_000, 2)

    assert defaults.values["epochs"] == 2  # 24,000 / 54,000 is under the minimum of 2
    assert defaults.values["batch_size"] == 32
    assert defaults.values["warmup_ratio"] == 0.06
    assert defaults.values["eval_every_steps"] == 844  # 2 x 1,688 steps / 4
    assert "54,000 examples in 2 classes: 2 epochs (about 108,000 examples seen; at least 2)" in (
        defaults.explanation
    )


@pytest.mark.parametrize(
    ("n", "reason"),
    [
        (14_000, "2 epochs (about 28,000 examples seen)"),  # 24,000 / 14,000 = 1.7 rounds to 2
        (17_000, "2 epochs (about 34,000 examples seen; at least 2)"),  # 1.4 rounds to 1
    ],
)
def test_the_epochs_reason_names_the_minimum_only_where_it_changed_the_choice(n, reason):
    defaults = chosen(n, 2)

    assert defaults.values["epochs"] == 2
    assert f"{n:,} examples in 2 classes: {reason}," in defaults.explanation


def test_large_sets_train_again_on_train_and_validation_and_small_ones_do_not():
    large, small = chosen(10_000, 2), chosen(9_999, 2)

    assert large.values["refit_on_all_data"] is True
    assert large.explanation.endswith(
        "weights averaged over about the last 10% of steps, then trained again on train + "
        "validation for the best number of epochs (large set)."
    )
    assert small.values["refit_on_all_data"] is False
    assert "trained again" not in small.explanation
    # Adapters too: the choice is about the time the large set leaves, not the method.
    assert chosen(50_000, 2, method="lora").values["refit_on_all_data"] is True
    # The user's choice wins and is named as theirs.
    mine = chosen(50_000, 2, refit_on_all_data=False)
    assert mine.values["refit_on_all_data"] is False
    assert mine.user_set == ["refit_on_all_data"]
    assert mine.explanation.endswith("; yours: refit on all data off.")
    assert chosen(500, 2, refit_on_all_data=True).values["refit_on_all_data"] is True
    # Without a validation split there is no best step to refit for, so it is not offered.
    no_validation = choose_defaults(
        task="single_label",
        method="full",
        profile=DataProfile(n_examples=50_000, n_classes=2, validation_examples=0),
    )
    assert no_validation.values["refit_on_all_data"] is False
    assert "trained again" not in no_validation.explanation


def test_many_classes_get_a_larger_budget_than_few_on_the_same_rows():
    few, many = chosen(12_000, 2), chosen(12_000, 120)

    assert many.values["epochs"] > few.values["epochs"]
    assert few.values["epochs"] == 2  # the minimum 24,000 / 12,000 examples
    assert many.values["epochs"] == 3  # (8,000 + 200 x 120) / 12,000 examples, rounded
    assert "2 epochs (about 24,000 examples seen)" in few.explanation


def test_mid_sized_sets_get_as_many_passes_as_small_ones_up_to_the_minimum_budget():
    # SST-2 with 8,000 rows: 1 epoch (the old 8,400-example budget) left it under-trained.
    assert chosen(8_000, 2).values["epochs"] == 3  # 24,000 / 8,000
    assert chosen(8_005, 77).values["epochs"] == 3  # max(24,000, 23,400) / 8,005, rounded
    assert chosen(16_000, 2).values["epochs"] == 2  # 24,000 / 16,000 = 1.5, rounded to even
    assert chosen(40_000, 2).values["epochs"] == 2  # never fewer than 2 (all of SST-2: +0.4)
    assert chosen(500_000, 2).values["epochs"] == 2


def test_many_classes_on_few_rows_may_train_longer_than_the_usual_cap():
    few, many = chosen(1_200, 6), chosen(1_200, 77)

    assert few.values["epochs"] == 3  # 24,000 / 1,200 = 20, capped at 3
    assert many.values["epochs"] == 6  # 24,000 / 1,200 = 20, capped at 6
    assert "6 epochs (about 7,200 examples seen; capped at 6 for 20 classes or more)" in (
        many.explanation
    )
    assert chosen(300, 19).values["epochs"] == 3  # 19 classes: the usual cap


def test_imbalanced_classes_with_a_rare_class_get_inverse_frequency_class_weights():
    def profile(n, classes, ratio, smallest):
        return choose_defaults(
            task="single_label",
            method="full",
            profile=DataProfile(
                n_examples=n, n_classes=classes, class_ratio=ratio, smallest_class=smallest
            ),
        )

    balanced = chosen(2_000, 3, ratio=2.0)
    # Financial PhraseBank: 4.8x, but 386 examples of its smallest class: weights cost it
    # accuracy at every training seed measured; its 480-row cut (58 of them) needs them.
    enough = profile(3_095, 3, 4.8, 386)
    few = profile(480, 3, 4.8, 58)
    trec = profile(4_361, 6, 14.5, 69)  # the rarest class 1.6% of rows

    assert balanced.values["class_weighting"] is False
    assert enough.values["class_weighting"] is False
    assert "class weights" not in enough.explanation
    assert few.values["class_weighting"] is True
    assert trec.values["class_weighting"] is True
    assert trec.values["class_weight_power"] == 1.0
    assert (
        "inverse-frequency class weights (the largest class has 14.5x the smallest, "
        "which has 69 examples)"
    ) in trec.explanation
    assert profile(2_000, 3, 3.9, 20).values["class_weighting"] is False  # under 4x
    assert profile(2_000, 3, 4.0, 149).values["class_weighting"] is True
    assert profile(2_000, 3, 4.0, 150).values["class_weighting"] is False
    # A profile that does not know its smallest class: the ratio alone decides, as before.
    assert chosen(2_000, 3, ratio=6.0).values["class_weighting"] is True
    assert "(the largest class has 6x the smallest)" in chosen(2_000, 3, ratio=6.0).explanation
    weights = _class_weights("single_label", np.array([0] * 9 + [1]), 2, power=0.5)
    assert weights == pytest.approx(np.sqrt([10 / 18, 10 / 2]))


def test_user_settings_win_and_the_explanation_says_which_were_theirs():
    defaults = chosen(400, 6, epochs=3, learning_rate=5e-5, batch_size=None, seed=7)

    assert defaults.values["epochs"] == 3
    assert defaults.values["learning_rate"] == 5e-5
    assert defaults.values["batch_size"] == 16  # None means "choose for me"
    assert defaults.values["seed"] == 7  # settings the defaults do not choose pass through
    assert defaults.user_set == ["epochs", "learning_rate"]
    assert "epochs (about" not in defaults.explanation
    # The planned steps and the evaluation interval follow the user's epochs: 3 x 25 steps.
    assert "the planned 75 steps" in defaults.explanation
    assert defaults.explanation.endswith("; yours: epochs 3, learning rate 5e-5.")


def test_adapters_keep_their_method_rate_and_a_large_model_a_lower_one():
    lora = chosen(400, 6, method="lora")
    assert lora.values["learning_rate"] == 1e-3
    assert lora.values["head_learning_rate_multiplier"] == 1.0
    assert lora.values["layer_decay"] == 1.0

    base = choose_defaults(
        task="single_label",
        method="full",
        profile=DataProfile(n_examples=400, n_classes=6, parameter_count=110_000_000),
    )
    assert base.values["learning_rate"] == 3e-5


def test_profile_from_labels_and_long_texts():
    profile = DataProfile.from_labels("single_label", ["a"] * 8 + ["b"] * 2, p95_tokens=300)
    assert (profile.n_examples, profile.n_classes, profile.class_ratio) == (10, 2, 4.0)
    assert profile.smallest_class == 2
    assert DataProfile.from_labels("multi_label", [["a", "b"], ["a"]]).smallest_class is None

    config, defaults = config_with_defaults(
        task="single_label", method="full", profile=profile, params={}
    )
    assert config.validate() == []
    assert config.max_length == 256
    assert config.class_weighting is True
    assert "max length 256 (long texts)" in defaults.explanation

    regression = choose_defaults(
        task="regression", method="full", profile=DataProfile.from_labels("regression", [0.5] * 3)
    )
    assert regression.explanation.startswith("Chosen for 3 examples (regression): 3 epochs")
    assert regression.values["class_weighting"] is False


def test_validation_names_bad_new_settings():
    config = TrainingConfig(
        task="single_label", head_learning_rate_multiplier=0, layer_decay=1.5, refit_on_all_data=1
    )
    problems = " ".join(config.validate())
    assert "Head learning-rate multiplier must be between 0.1 and 100; got 0." in problems
    assert "Layer decay must be between 0.1 and 1; got 1.5." in problems
    assert "Train on all data must be true or false; got 1." in problems


def test_layer_decay_and_head_multiplier_set_each_weights_learning_rate(base_model, tmp_path):  # noqa: F811
    config = TrainingConfig(
        task="single_label",
        learning_rate=1e-3,
        head_learning_rate_multiplier=10,
        layer_decay=0.5,
        max_length=32,
        device="cpu",
    )
    data = make_data("single_label", train_rows=20)
    engine_run = _Run(
        base_model_path=base_model,
        data=data,
        config=config,
        output_dir=str(tmp_path / "out"),
        checkpoint_dir=str(tmp_path / "checkpoints"),
        callbacks=_SafeCallbacks(None, enabled=False),
        resume=False,
    )
    engine_run.device, engine_run.autocast_dtype, engine_run.pad_multiple = (
        torch.device("cpu"),
        None,
        1,
    )
    (
        engine_run.label_names,
        engine_run.train_y,
        engine_run.validation_y,
        engine_run.test_y,
    ) = _prepare_labels(data, "single_label")
    engine_run._load_model_and_tokenizer()
    engine_run._tokenize()
    engine_run._build_training_objects()

    rate_of = {
        id(parameter): group["initial_lr"]  # "lr" is 0 at the start of the warmup
        for group in engine_run.optimizer.param_groups
        for parameter in group["params"]
    }
    rates = {name: rate_of[id(parameter)] for name, parameter in engine_run.trainable}
    assert rates["classifier.weight"] == pytest.approx(1e-2)
    assert rates["bert.encoder.layer.1.attention.self.query.weight"] == pytest.approx(1e-3)
    assert rates["bert.encoder.layer.0.attention.self.query.weight"] == pytest.approx(5e-4)
    assert rates["bert.embeddings.word_embeddings.weight"] == pytest.approx(2.5e-4)
    assert engine_run.optimizer.param_groups[0]["initial_lr"] == pytest.approx(1e-3)  # logs read it


def test_refit_trains_a_fresh_model_on_train_and_validation_for_the_best_step_count(
    base_model,  # noqa: F811
    tmp_path,
):
    plain, _ = run(base_model, tmp_path, name="plain", epochs=3)
    refitted, recorder = run(base_model, tmp_path, name="refit", epochs=3, refit_on_all_data=True)

    assert refitted.status == "succeeded"
    # The first pass is the plain run: same validation history, best step and score.
    assert refitted.best_step == plain.best_step
    assert refitted.best_metrics == plain.best_metrics
    assert refitted.history == plain.history
    # As many epochs as the best step: 15 steps of 16 make an epoch of 240 rows, 19 of 300.
    assert refitted.refit["steps"] == round(plain.best_step * 19 / 15) > plain.best_step
    assert refitted.refit["first_pass_epochs"] == round(plain.best_step / 15, 3)
    assert refitted.refit["examples"] == 240 + 60
    assert refitted.refit["validation_metrics"] == plain.best_metrics
    kinds = recorder.kinds()
    assert kinds.index("finished") < kinds.index("refit_started") < kinds.index("refit_finished")
    # The refit's own steps stay out of the run's curves and checkpoints.
    assert max(log["step"] for log in recorder.logs) == plain.steps_done
    # The kept model is the refit one: it scores the test split differently.
    assert refitted.test_metrics["loss"] != pytest.approx(plain.test_metrics["loss"], abs=1e-6)
    assert refitted.test_metrics["accuracy"] >= plain.test_metrics["accuracy"] - 0.1


def test_the_refit_repeats_the_first_pass_epochs_over_the_larger_set():
    from training_app.engine.loop import refit_steps

    # All of SST-2 at batch 32: best at step 4,210 of 1,684 an epoch (2.5 epochs); train +
    # validation make 1,895 steps an epoch, so 2.5 of them are 4,738 steps.
    assert refit_steps(4210, 1684, 1895) == 4738
    # No validation rows (the same steps an epoch): the same step count.
    assert refit_steps(45, 15, 15) == 45
    # A best step of 1 on a large set still trains at least one step.
    assert refit_steps(1, 1000, 1001) == 1


def test_the_first_pass_is_freed_before_the_refit_builds_its_model(
    base_model,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    import weakref

    from training_app.engine import loop

    runs, alive_at_build = [], []
    build = loop._Run.__init__

    def recording_init(self, *args, **kwargs):
        alive_at_build.append([ref() is not None for ref in runs])
        runs.append(weakref.ref(self))
        build(self, *args, **kwargs)

    monkeypatch.setattr(loop._Run, "__init__", recording_init)

    result, _ = run(base_model, tmp_path, epochs=1, refit_on_all_data=True)

    assert result.refit is not None
    # When the refit's run was built, the first pass (its model, optimizer and averaged
    # weights) was already gone.
    assert alive_at_build == [[], [False]]


def test_a_worker_lost_during_the_refit_resumes_to_the_same_first_pass_and_refits(
    base_model,  # noqa: F811
    tmp_path,
):
    from tests.training_app.test_trainer import Recorder

    class CrashInTheRefit(Recorder):
        def on_refit_progress(self, *, step, total_steps, seconds_left=None):
            if step >= 5:
                raise KeyboardInterrupt("simulated worker crash in the refit")

    settings = {"epochs": 3, "refit_on_all_data": True}
    with pytest.raises(KeyboardInterrupt):
        run(base_model, tmp_path, name="lost", callbacks=CrashInTheRefit(), **settings)
    resumed, recorder = run(base_model, tmp_path, name="lost", **settings)
    whole, _ = run(base_model, tmp_path, name="whole", **settings)

    assert resumed.status == "succeeded"
    assert "resumed" in recorder.kinds()
    assert recorder.kinds().index("refit_started") < recorder.kinds().index("refit_finished")
    # The run picks up from its checkpoints and chooses the same step count as one never lost.
    assert resumed.best_step == whole.best_step
    assert resumed.refit["steps"] == whole.refit["steps"] == round(whole.best_step * 19 / 15)
    assert resumed.refit["validation_metrics"] == whole.refit["validation_metrics"]


def test_refit_without_a_validation_split_is_skipped_and_says_so(base_model, tmp_path):  # noqa: F811
    data = make_data("single_label")
    data.validation_texts, data.validation_labels = [], []

    result, recorder = run(base_model, tmp_path, data=data, epochs=1, refit_on_all_data=True)

    assert result.status == "succeeded"
    assert result.refit is None
    assert "refit_skipped" in recorder.kinds()


def test_the_engine_has_no_django_and_its_config_no_torch():
    import ast
    import subprocess
    import sys
    from pathlib import Path

    engine = Path(__file__).resolve().parents[2] / "training_app" / "engine"
    for module in engine.glob("*.py"):
        imported = [
            alias.name if isinstance(node, ast.Import) else node.module or ""
            for node in ast.walk(ast.parse(module.read_text()))
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        ]
        assert not [name for name in imported if name.split(".")[0] in {"django", "rest_framework"}]
        assert not [name for name in imported if name.endswith((".models", ".services"))]
    script = (
        "import sys; import training_app.engine.config; "
        "print(sorted(m for m in ('torch', 'django', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=engine.parents[1],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"


# --------------------------------------------------------------------------- warmup-stable-decay


def test_wsd_decays_as_soon_as_validation_stops_improving(base_model, tmp_path):  # noqa: F811
    # 15 steps an epoch, 90 planned; at lr 1e-7 the score never moves after the first evaluation.
    result, recorder = run(
        base_model,
        tmp_path,
        scheduler="wsd",
        learning_rate=1e-7,
        epochs=6,
        eval_every_steps=10,
        early_stopping_patience=2,
    )

    # No better score at 20 and 30: the decay (20% of 90 = 18 steps) starts at 30.
    assert [evaluation["step"] for evaluation in recorder.evaluations] == [10, 20, 30, 40, 48]
    assert (result.steps_done, result.total_steps, result.best_step) == (48, 48, 10)
    assert result.stopped_early is True
    assert result.status == "succeeded"
    assert (
        "decay_started",
        "Validation macro_f1 has not improved for 2 evaluations (best at step 10): the learning "
        "rate decays to zero from step 30 to step 48 (planned: 90).",
    ) in recorder.events
    assert "early_stopped" not in recorder.kinds()
    rates = {log["step"]: log["learning_rate"] for log in recorder.logs}
    assert rates[28] == pytest.approx(1e-7)  # stable after the 9 warmup steps
    assert rates[40] == pytest.approx(1e-7 * 8 / 18)
    assert rates[48] == 0


def test_wsd_goes_on_while_validation_improves_up_to_the_cap(base_model, tmp_path, monkeypatch):  # noqa: F811
    from training_app.engine import loop

    monkeypatch.setattr(loop, "_is_better", lambda metric, value, best: True)
    # 30 steps planned (6 decay), cap 1.25 x 30 = 37, an evaluation every 5 steps.
    result, recorder = run(base_model, tmp_path, scheduler="wsd", epochs=2, eval_every_steps=5)

    assert (result.steps_done, result.total_steps, result.best_step) == (37, 37, 37)
    assert result.stopped_early is False
    assert recorder.kinds().count("extended") == 1
    assert (
        "extended",
        "Validation macro_f1 still improves at step 20: training on past the planned 30 steps "
        "while it does, up to 37.",
    ) in recorder.events
    assert (
        "decay_started",
        "The learning rate decays to zero from step 31 to step 37 (planned: 30).",
    ) in recorder.events
    assert recorder.logs[-1]["step"] == 37
    assert recorder.logs[-1]["total_steps"] == 37
    assert recorder.logs[-1]["learning_rate"] == 0


def test_wsd_goes_on_while_validation_accuracy_improves_though_macro_f1_does_not(
    base_model,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    from training_app.engine import loop

    # Macro-F1 (the early-stopping metric) is best at the first evaluation only; accuracy sets a
    # new best at every one. Patience 0: no decay on a plateau, only the planned one.
    monkeypatch.setattr(
        loop, "_is_better", lambda metric, value, best: best is None or metric == "accuracy"
    )
    result, recorder = run(
        base_model,
        tmp_path,
        scheduler="wsd",
        epochs=2,
        eval_every_steps=5,
        early_stopping_patience=0,
    )

    assert (result.steps_done, result.total_steps, result.best_step) == (37, 37, 5)
    assert (
        "extended",
        "Validation accuracy still improves at step 20: training on past the planned 30 steps "
        "while it does, up to 37.",
    ) in recorder.events
    started = next(message for kind, message in recorder.events if kind == "started")
    assert "while it still improves (macro-F1 or accuracy), up to 37 steps" in started


def test_wsd_decays_as_planned_when_neither_score_improves(base_model, tmp_path, monkeypatch):  # noqa: F811
    from training_app.engine import loop

    monkeypatch.setattr(loop, "_is_better", lambda metric, value, best: best is None)
    result, recorder = run(
        base_model,
        tmp_path,
        scheduler="wsd",
        epochs=2,
        eval_every_steps=5,
        early_stopping_patience=0,
    )

    assert (result.steps_done, result.total_steps, result.best_step) == (30, 30, 5)
    assert "extended" not in recorder.kinds()


def test_the_extension_explanation_names_the_users_metric_and_accuracy():
    by_loss = chosen(400, 6, early_stopping_metric="loss")
    by_accuracy = chosen(400, 6, early_stopping_metric="accuracy")
    regression = choose_defaults(
        task="regression", method="full", profile=DataProfile(n_examples=400, n_classes=1)
    )

    assert "while it still improves, in loss or accuracy)" in by_loss.explanation
    assert "while it still improves), validation every" in by_accuracy.explanation
    assert "while it still improves), validation every" in regression.explanation


def test_wsd_resumes_after_cancel_with_its_moved_end(base_model, tmp_path, monkeypatch):  # noqa: F811
    from tests.training_app.test_trainer import Recorder, artifact_weights, assert_same_weights
    from training_app.engine import loop

    monkeypatch.setattr(loop, "_is_better", lambda metric, value, best: True)
    settings = {"scheduler": "wsd", "epochs": 2, "eval_every_steps": 5}
    straight, _ = run(base_model, tmp_path, name="straight", **settings)
    first, _ = run(
        base_model, tmp_path, name="cut", callbacks=Recorder(stop_after_steps=33), **settings
    )
    recorder = Recorder()
    resumed, _ = run(base_model, tmp_path, name="cut", callbacks=recorder, **settings)

    assert first.status == "cancelled"
    assert recorder.events[0] == ("resumed", "Resumed from the checkpoint at step 33 of 37.")
    assert resumed.steps_done == straight.steps_done == 37
    assert_same_weights(artifact_weights(straight), artifact_weights(resumed))


def test_wsd_without_validation_decays_where_planned(base_model, tmp_path):  # noqa: F811
    data = make_data("single_label")
    data.validation_texts, data.validation_labels = [], []

    result, recorder = run(base_model, tmp_path, data=data, scheduler="wsd", epochs=2)

    assert result.steps_done == 30
    assert (
        "decay_started",
        "The learning rate decays to zero from step 24 to step 30.",
    ) in recorder.events
    assert recorder.logs[-1]["learning_rate"] == 0
