"""Forms of the training pages: they check the shape of input; the services check the rules."""

from __future__ import annotations

import dataclasses
import functools

from django import forms
from django.core.exceptions import ValidationError

from lepton_web import vocabulary
from training_app.engine import config as engine_config
from training_app.models import TrainingRun
from training_app.services import PARAM_NAMES

SPLITS = [("test", "test"), ("validation", "validation"), ("train", "train")]
# Hyperparameter fields, in the order the form shows them. The labels are the names the engine
# uses in its validation sentences ("Epochs must be ..."), which is how each sentence finds the
# field it belongs next to.
BASIC_PARAMS = ("learning_rate", "epochs", "batch_size", "max_length")
ADVANCED_PARAMS = tuple(name for name in PARAM_NAMES if name not in BASIC_PARAMS)
# Left blank on the form: chosen from the snapshot when the run is created.
CHOSEN_FROM_DATA = frozenset(
    {
        "learning_rate",
        "epochs",
        "batch_size",
        "max_length",
        "warmup_ratio",
        "class_weighting",
        "class_weight_power",
        "weight_averaging",
        "refit_on_all_data",
        "head_learning_rate_multiplier",
        "layer_decay",
        "scheduler",
        "eval_every_steps",
    }
)


@functools.cache
def engine_options() -> dict:
    """Defaults and choices of the training engine.

    Read from ``training_app.engine.config``, which imports no torch.
    """

    defaults = {
        field.name: field.default
        for field in dataclasses.fields(engine_config.TrainingConfig)
        if field.default is not dataclasses.MISSING
    }
    metrics: list[str] = []
    for names in engine_config.METRICS_BY_TASK.values():
        metrics.extend(name for name in names if name not in metrics)
    return {
        "defaults": defaults,
        "learning_rates": dict(engine_config.DEFAULT_LEARNING_RATES),
        "metrics_by_task": {
            task: list(names) for task, names in engine_config.METRICS_BY_TASK.items()
        },
        "metrics": metrics,
        "optimizers": list(engine_config.OPTIMIZERS),
        "schedulers": list(engine_config.SCHEDULERS),
        "devices": list(engine_config.DEVICES),
        "precisions": list(engine_config.PRECISIONS),
    }


def _learning_rate_placeholder(rates: dict[str, float]) -> str:
    names = {"full": "full", "lora": "LoRA", "adalora": "AdaLoRA", "ia3": "IA3", "prefix": "prefix"}

    def short(rate: float) -> str:  # 5e-05 -> 5e-5
        mantissa, exponent = f"{rate:e}".split("e")
        return f"{float(mantissa):g}e{int(exponent)}"

    shown = ", ".join(
        f"{short(rate)} {names.get(method, method)}" for method, rate in rates.items()
    )
    return f"auto ({shown})"


class SnapshotChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj) -> str:
        return f"{obj.dataset.name} v{obj.number} ({obj.record_count:,} records)"


def _number(**attrs) -> forms.NumberInput:
    return forms.NumberInput(attrs={"step": "any", **attrs})


AUTO_FROM_DATA = "auto (from the data)"


class RunForm(forms.Form):
    """The new-run form. Blank hyperparameters take the data-driven defaults (shown in the
    estimate panel) or the engine's own."""

    snapshot = SnapshotChoiceField(
        queryset=None,
        empty_label="Choose a snapshot",
        label="Snapshot",
        error_messages={
            "invalid_choice": "Choose one of the listed snapshots: a snapshot without train "
            "records cannot be trained on."
        },
    )
    base_model = forms.ModelChoiceField(queryset=None, empty_label=None, label="Base model")
    task = forms.ChoiceField(choices=TrainingRun.Task.choices, label="Task")
    method = forms.ChoiceField(choices=TrainingRun.Method.choices, label="Method")
    name = forms.CharField(
        max_length=200,
        required=False,
        label="Name",
        widget=forms.TextInput(attrs={"placeholder": "dataset vN · base model · method"}),
    )
    learning_rate = forms.FloatField(required=False, label="Learning rate", widget=_number())
    epochs = forms.FloatField(
        required=False, label="Epochs", widget=_number(placeholder=AUTO_FROM_DATA)
    )
    batch_size = forms.IntegerField(
        required=False,
        label="Batch size",
        widget=forms.NumberInput(attrs={"placeholder": AUTO_FROM_DATA}),
    )
    max_length = forms.IntegerField(
        required=False,
        label="Max length",
        help_text="tokens",
        widget=forms.NumberInput(attrs={"placeholder": AUTO_FROM_DATA}),
    )
    warmup_ratio = forms.FloatField(
        required=False, label="Warmup ratio", widget=_number(placeholder=AUTO_FROM_DATA)
    )
    weight_decay = forms.FloatField(required=False, label="Weight decay", widget=_number())
    dropout = forms.FloatField(
        required=False, label="Dropout", widget=_number(placeholder="the model's own")
    )
    optimizer = forms.ChoiceField(required=False, label="Optimizer")
    scheduler = forms.ChoiceField(required=False, label="Scheduler")
    gradient_accumulation = forms.IntegerField(required=False, label="Gradient accumulation")
    class_weighting = forms.TypedChoiceField(
        required=False,
        label="Class weighting",
        help_text="weigh rare classes up",
        choices=[
            (
                "",
                f"auto (when the largest class has {engine_config.IMBALANCE_RATIO:g}x "
                f"the smallest, and the smallest has under {engine_config.RARE_CLASS_EXAMPLES} examples)",
            ),
            ("true", "on"),
            ("false", "off"),
        ],
        coerce=lambda value: value == "true",
        empty_value=None,
    )
    class_weight_power = forms.FloatField(
        required=False,
        label="Class weight power",
        help_text="1 inverse frequency, 0.5 its square root",
        widget=_number(placeholder=AUTO_FROM_DATA),
    )
    head_learning_rate_multiplier = forms.FloatField(
        required=False,
        label="Head learning-rate multiplier",
        help_text="full fine-tuning: the new head learns this much faster",
        widget=_number(placeholder=AUTO_FROM_DATA),
    )
    layer_decay = forms.FloatField(
        required=False,
        label="Layer decay",
        help_text="full fine-tuning: each lower layer learns this factor slower",
        widget=_number(placeholder=AUTO_FROM_DATA),
    )
    weight_averaging = forms.FloatField(
        required=False,
        label="Weight averaging",
        help_text="a moving average of the weights over this share of the steps is scored and "
        "kept; 0 turns it off",
        widget=_number(placeholder=AUTO_FROM_DATA),
    )
    refit_on_all_data = forms.TypedChoiceField(
        required=False,
        label="Train on all data",
        help_text="after finding the best step on validation, retrain on train + validation for "
        "as many epochs and keep that model (the test split stays untouched)",
        choices=[
            ("", f"auto (on from {engine_config.LARGE_SET:,} training examples)"),
            ("true", "on"),
            ("false", "off"),
        ],
        coerce=lambda value: value == "true",
        empty_value=None,
    )
    early_stopping_metric = forms.ChoiceField(required=False, label="Early stopping metric")
    early_stopping_patience = forms.IntegerField(
        required=False, label="Early stopping patience", help_text="evaluations; 0 turns it off"
    )
    eval_every_steps = forms.IntegerField(
        required=False,
        label="Evaluation interval",
        help_text="steps",
        widget=forms.NumberInput(attrs={"placeholder": "auto (about 6 a run)"}),
    )
    seed = forms.IntegerField(required=False, label="Seed")
    device = forms.ChoiceField(required=False, label="Device")
    precision = forms.ChoiceField(required=False, label="Precision")
    lora_r = forms.IntegerField(required=False, label="LoRA rank", help_text="LoRA and AdaLoRA")
    lora_alpha = forms.IntegerField(
        required=False, label="LoRA alpha", help_text="LoRA and AdaLoRA"
    )

    def __init__(self, *args, snapshots, base_models, **kwargs):
        options = engine_options()
        defaults = options["defaults"]
        initial = {
            name: defaults.get(name)
            for name in (*BASIC_PARAMS, *ADVANCED_PARAMS)
            if defaults.get(name) is not None and name not in CHOSEN_FROM_DATA
        }
        initial.pop("early_stopping_metric", None)  # blank: the task's own first metric
        initial["base_model"] = next((b for b in base_models if b.is_default), None)
        initial.update(kwargs.pop("initial", None) or {})
        if initial.get("snapshot") is None:
            only = list(snapshots[:2])
            if len(only) == 1:  # the only snapshot there is: nothing to choose
                initial["snapshot"] = only[0].pk
        super().__init__(*args, initial=initial, **kwargs)
        self.fields["snapshot"].queryset = snapshots
        self.fields["base_model"].queryset = base_models
        # A blank rate is chosen from the data: 1e-4 for full fine-tuning of a small encoder.
        self.fields["learning_rate"].widget.attrs["placeholder"] = _learning_rate_placeholder(
            {**options["learning_rates"], "full": engine_config.FULL_LEARNING_RATE_SMALL}
        )
        for name, key in (
            ("optimizer", "optimizers"),
            ("scheduler", "schedulers"),
            ("device", "devices"),
            ("precision", "precisions"),
        ):
            self.fields[name].choices = [
                (value, vocabulary.parameter_value(name, value)) for value in options[key]
            ]
        # Blank: warmup-stable-decay that follows validation (engine.config.choose_defaults).
        self.fields["scheduler"].choices = [
            ("", "auto (warmup-stable-decay, decays when validation stops improving)"),
            *self.fields["scheduler"].choices,
        ]
        first = {task: names[0] for task, names in options["metrics_by_task"].items()}
        auto = ", ".join(
            f"{vocabulary.metric(name)} for {vocabulary.TASK_SLUGS.get(task, task)}"
            for task, name in first.items()
        )
        self.fields["early_stopping_metric"].choices = [
            ("", f"automatic ({auto})"),
            *((name, vocabulary.metric(name)) for name in options["metrics"]),
        ]

    # --- what the template loops over --------------------------------------------------------
    def basic_fields(self) -> list:
        return [self[name] for name in BASIC_PARAMS]

    def advanced_fields(self) -> list:
        return [self[name] for name in ADVANCED_PARAMS]

    def advanced_has_errors(self) -> bool:
        return any(self.errors.get(name) for name in ADVANCED_PARAMS)

    # --- what the service receives ----------------------------------------------------------
    def params(self) -> dict:
        """The hyperparameters the user set; blanks are left out so the engine's defaults apply."""
        data = self.cleaned_data
        params = {}
        for name in (*BASIC_PARAMS, *ADVANCED_PARAMS):
            value = data.get(name)
            if value is None or value == "":
                continue
            params[name] = value
        if "early_stopping_metric" not in params:
            task_metrics = engine_options()["metrics_by_task"].get(data.get("task"), [])
            if task_metrics:
                params["early_stopping_metric"] = task_metrics[0]
        return params

    def service_arguments(self) -> dict:
        data = self.cleaned_data
        return {
            "snapshot": data["snapshot"],
            "base_model": data["base_model"],
            "task": data["task"],
            "method": data["method"],
            "params": self.params(),
        }

    def add_service_errors(self, error: ValidationError) -> None:
        """Put each of the service's sentences next to the field it is about."""
        if not hasattr(error, "error_dict"):
            for message in error.messages:
                self.add_error(None, message)
            return
        by_label = sorted(
            ((self.fields[name].label, name) for name in (*BASIC_PARAMS, *ADVANCED_PARAMS)),
            key=lambda pair: -len(pair[0]),
        )
        for key, messages in error.message_dict.items():
            for message in messages:
                if key == "params":
                    field = next(
                        (name for label, name in by_label if message.startswith(label + " ")),
                        None,
                    )
                elif key in self.fields:
                    field = key
                else:
                    field = None
                self.add_error(field, message)


class EvaluationForm(forms.Form):
    snapshot = SnapshotChoiceField(queryset=None, empty_label="Choose a snapshot", label="Snapshot")
    split = forms.ChoiceField(choices=SPLITS, label="Split")

    def __init__(self, *args, snapshots, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["snapshot"].queryset = snapshots

    def add_service_errors(self, error: ValidationError) -> None:
        if not hasattr(error, "error_dict"):
            for message in error.messages:
                self.add_error(None, message)
            return
        for key, messages in error.message_dict.items():
            for message in messages:
                self.add_error(key if key in self.fields else None, message)

    def error_sentences(self) -> list[str]:
        """Every error as a sentence that names its field, for a flash message."""
        sentences = list(self.non_field_errors())
        for name, errors in self.errors.items():
            if name in self.fields:
                sentences.extend(f"{self.fields[name].label}: {message}" for message in errors)
        return sentences


class RunFilterForm(forms.Form):
    status = forms.ChoiceField(
        required=False, choices=[("", "All statuses"), *TrainingRun.Status.choices]
    )
    dataset = forms.ModelChoiceField(queryset=None, required=False, empty_label="All datasets")

    def __init__(self, *args, datasets, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["dataset"].queryset = datasets
