"""The new-search form: it checks the shape of input; training_app.search checks the rules."""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.core.exceptions import ValidationError

from training_app.forms import SnapshotChoiceField
from training_app.models import TrainingRun
from training_app.search import DEFAULT_SPACE, SEARCH_METRICS


def _number(**attrs) -> forms.NumberInput:
    return forms.NumberInput(attrs={"step": "any", **attrs})


def plain_number(value: float) -> str:
    """A number as a person types it: 1e-05 -> "0.00001", 0.0 -> "0", 0.2 -> "0.2"."""
    text = format(Decimal(repr(float(value))), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


class WholeNumbersField(forms.CharField):
    """ "8, 16, 32" -> [8, 16, 32]."""

    def to_python(self, value) -> list[int]:
        text = super().to_python(value)
        if not text.strip():
            return []
        try:
            return [int(part) for part in text.replace(";", ",").split(",") if part.strip()]
        except ValueError:
            raise ValidationError(
                "Write whole numbers separated by commas, for example 8, 16, 32."
            ) from None


RANGE_FIELDS = (
    ("learning_rate", "Learning rate (full fine-tuning)"),
    ("lora_learning_rate", "Learning rate (LoRA)"),
    ("epochs", "Epochs"),
    ("weight_decay", "Weight decay"),
    ("warmup_ratio", "Warmup ratio"),
)


class SearchForm(forms.Form):
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
    name = forms.CharField(
        max_length=200,
        required=False,
        label="Name",
        widget=forms.TextInput(attrs={"placeholder": "dataset vN · base model · search"}),
    )
    max_trials = forms.IntegerField(
        required=False, label="Trials", help_text="at most; leave empty for time only"
    )
    max_minutes = forms.IntegerField(
        required=False, label="Minutes", help_text="no new trial starts after this"
    )
    parallel_trials = forms.IntegerField(
        initial=1, label="Trials at once", help_text="one per free gpu worker"
    )
    metric = forms.ChoiceField(
        required=False,
        label="Score",
        help_text="validation metric to optimise",
        choices=[
            ("", "the task's default (macro-F1 / MSE)"),
            *sorted({(m, m) for names in SEARCH_METRICS.values() for m in names}),
        ],
    )
    methods = forms.MultipleChoiceField(
        required=False,
        label="Methods",
        choices=[("full", "Full fine-tuning"), ("lora", "LoRA")],
        widget=forms.CheckboxSelectMultiple,
        initial=DEFAULT_SPACE["methods"],
    )
    batch_sizes = WholeNumbersField(
        required=False,
        label="Batch sizes",
        initial=", ".join(str(x) for x in DEFAULT_SPACE["batch_size"]),
    )
    lora_ranks = WholeNumbersField(
        required=False,
        label="LoRA ranks",
        initial=", ".join(str(x) for x in DEFAULT_SPACE["lora_r"]),
    )
    max_length = forms.IntegerField(
        required=False, label="Max length", help_text="tokens; the same for every trial"
    )

    def __init__(self, *args, snapshots, base_models, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["snapshot"].queryset = snapshots
        self.fields["base_model"].queryset = base_models
        for key, label in RANGE_FIELDS:
            low, high = DEFAULT_SPACE[key]
            self.fields[f"{key}_low"] = forms.FloatField(
                required=False,
                label=f"{label}, from",
                initial=plain_number(low),
                widget=_number(**{"aria-label": f"{label}, from"}),
            )
            self.fields[f"{key}_high"] = forms.FloatField(
                required=False,
                label=f"{label}, to",
                initial=plain_number(high),
                widget=_number(**{"aria-label": f"{label}, to"}),
            )

    def range_rows(self) -> list[dict]:
        return [
            {"label": label, "low": self[f"{key}_low"], "high": self[f"{key}_high"]}
            for key, label in RANGE_FIELDS
        ]

    def service_arguments(self) -> dict:
        data = self.cleaned_data
        space: dict = {"methods": list(data["methods"])}
        for key, _ in RANGE_FIELDS:
            low, high = data.get(f"{key}_low"), data.get(f"{key}_high")
            if low is None and high is None:
                continue
            low = DEFAULT_SPACE[key][0] if low is None else low
            high = DEFAULT_SPACE[key][1] if high is None else high
            if key == "epochs" and float(low).is_integer() and float(high).is_integer():
                low, high = int(low), int(high)
            space[key] = [low, high]
        space["batch_size"] = data["batch_sizes"]
        if "lora" in space["methods"] or data["lora_ranks"]:
            space["lora_r"] = data["lora_ranks"]
        params = {}
        if data.get("max_length") is not None:
            params["max_length"] = data["max_length"]
        return {
            "snapshot": data["snapshot"],
            "base_model": data["base_model"],
            "task": data["task"],
            "name": data["name"],
            "max_trials": data["max_trials"],
            "max_minutes": data["max_minutes"],
            "parallel_trials": data["parallel_trials"],
            "metric": data["metric"],
            "space": space,
            "params": params,
        }

    def add_service_errors(self, error: ValidationError) -> None:
        if not hasattr(error, "error_dict"):
            for message in error.messages:
                self.add_error(None, message)
            return
        for key, messages in error.message_dict.items():
            for message in messages:
                self.add_error(key if key in self.fields else None, message)
