"""The search space: what may be searched, its defaults and limits, checking a user's space,
and translating between optuna's values and a run's params. Pure: no database."""

from __future__ import annotations

import math

# The engine's validation metrics by task (training_app.engine.config.METRICS_BY_TASK); kept
# here so the web process needs no engine import to check a form.
SEARCH_METRICS = {
    "single_label": ("macro_f1", "accuracy", "loss"),
    "multi_label": ("macro_f1", "micro_f1", "subset_accuracy", "loss"),
    "regression": ("mse", "mae", "r2", "spearman", "loss"),
}
LOWER_IS_BETTER = frozenset({"loss", "mse", "mae"})
SEARCH_METHODS = ("full", "lora")
# Centred on the console's defaults for small encoders (training_app.engine.config
# choose_defaults: lr 1e-4, 2-3 epochs, batch 16/32, warmup 6-10%): lr from half to three times
# the default, epochs from 2 up to 6 (the defaults' short budget may underfit, so longer trials
# are in). Full fine-tuning only unless the user adds LoRA (its range, about ten times
# higher, is used then). A short search spends its few trials near what already works instead
# of on distant draws (on Banking77 low-lr and LoRA draws were pruned or far behind).
DEFAULT_SPACE = {
    "methods": ["full"],
    "learning_rate": [5e-5, 3e-4],
    "lora_learning_rate": [1e-4, 3e-3],
    "epochs": [2, 6],
    "batch_size": [8, 16, 32],
    "weight_decay": [0.0, 0.1],
    "warmup_ratio": [0.0, 0.2],
    "lora_r": [4, 8, 16],
}
# (label, lowest, highest) of each range in the space
RANGES = {
    "learning_rate": ("Learning rate (full fine-tuning)", 1e-7, 1.0),
    "lora_learning_rate": ("Learning rate (LoRA)", 1e-7, 1.0),
    "epochs": ("Epochs", 1, 100),
    "weight_decay": ("Weight decay", 0.0, 1.0),
    "warmup_ratio": ("Warmup ratio", 0.0, 0.5),
}
CHOICES = {"batch_size": ("Batch size", 1, 4096), "lora_r": ("LoRA rank", 1, 512)}
SEARCHED_PARAMS = ("learning_rate", "epochs", "batch_size", "weight_decay", "warmup_ratio")


def space_clean(space: dict | None) -> tuple[dict, list[str]]:
    """Fill the space's missing keys from DEFAULT_SPACE and check it; (space, problems)."""
    space = dict(space or {})
    problems: list[str] = []
    unknown = sorted(set(space) - set(DEFAULT_SPACE))
    for key in unknown:
        problems.append(
            f"{key!r} cannot be searched; the space may set {', '.join(DEFAULT_SPACE)}."
        )
    values = {**DEFAULT_SPACE, **{k: v for k, v in space.items() if k in DEFAULT_SPACE}}
    methods = values["methods"]
    if not isinstance(methods, list) or not methods:
        problems.append("Choose at least one method to search: full fine-tuning, LoRA or both.")
    elif any(m not in SEARCH_METHODS for m in methods) or len(set(methods)) != len(methods):
        problems.append("Methods must be “full” and/or “lora”, each once.")
    for key, (label, lowest, highest) in RANGES.items():
        value = values[key]
        if (
            not isinstance(value, list | tuple)
            or len(value) != 2
            or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in value)
        ):
            problems.append(f"{label}: give a range as two numbers, lowest first.")
            continue
        low, high = value
        if key == "epochs" and not (float(low).is_integer() and float(high).is_integer()):
            problems.append("Epochs: give whole numbers.")
        elif low > high:
            problems.append(f"{label}: the lowest value {low:g} is above the highest {high:g}.")
        elif low < lowest or high > highest:
            problems.append(f"{label}: keep the range within {lowest:g} to {highest:g}.")
        values[key] = [int(low), int(high)] if key == "epochs" else [float(low), float(high)]
    for key, (label, lowest, highest) in CHOICES.items():
        value = values[key]
        if not isinstance(value, list | tuple) or not value:
            if key == "batch_size" or "lora" in (methods or []):
                problems.append(f"{label}: give at least one value to try.")
            continue
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in value):
            problems.append(f"{label}: the values to try must be whole numbers.")
        elif min(value) < lowest or max(value) > highest:
            problems.append(f"{label}: the values must lie between {lowest} and {highest}.")
        else:
            values[key] = sorted(set(value))
    if not problems and _space_size(values) == 1:
        problems.append(
            "This search space holds a single setting, so there is nothing to search: widen "
            "at least one range or add a choice (or start a plain run with those values)."
        )
    return values, problems


def _space_size(space: dict) -> float:
    """How many different settings the space holds (inf once a float range is open)."""
    size = 0.0
    for method in space["methods"]:
        count = 1.0
        lr_key = "lora_learning_rate" if method == "lora" else "learning_rate"
        for key in (lr_key, "weight_decay", "warmup_ratio"):
            if space[key][0] != space[key][1]:
                count = math.inf
        count *= space["epochs"][1] - space["epochs"][0] + 1
        count *= len(space["batch_size"])
        if method == "lora":
            count *= len(space["lora_r"])
        size += count
    return size


def distributions(space: dict) -> dict:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    return {
        "method": CategoricalDistribution(space["methods"]),
        "learning_rate": FloatDistribution(*space["learning_rate"], log=True),
        "lora_learning_rate": FloatDistribution(*space["lora_learning_rate"], log=True),
        "lora_r": CategoricalDistribution(space["lora_r"] or [8]),
        "epochs": IntDistribution(*space["epochs"]),
        "batch_size": CategoricalDistribution(space["batch_size"]),
        "weight_decay": FloatDistribution(*space["weight_decay"]),
        "warmup_ratio": FloatDistribution(*space["warmup_ratio"]),
    }


def trial_params_to_run(values: dict) -> tuple[str, dict]:
    """optuna's values of one trial -> (method, run params)."""
    method = values["method"]
    params = {key: values[key] for key in SEARCHED_PARAMS if key in values}
    if method == "lora":
        params["learning_rate"] = values["lora_learning_rate"]
        params["lora_r"] = values["lora_r"]
        params["lora_alpha"] = 2 * values["lora_r"]
    return method, params


def suggest(trial, space: dict) -> dict:
    """Ask ``trial`` for one setting; LoRA's rank and learning rate only for LoRA."""
    method = trial.suggest_categorical("method", space["methods"])
    if method == "lora":
        trial.suggest_float("lora_learning_rate", *space["lora_learning_rate"], log=True)
        trial.suggest_categorical("lora_r", space["lora_r"])
    else:
        trial.suggest_float("learning_rate", *space["learning_rate"], log=True)
    trial.suggest_int("epochs", *space["epochs"])
    trial.suggest_categorical("batch_size", space["batch_size"])
    trial.suggest_float("weight_decay", *space["weight_decay"])
    trial.suggest_float("warmup_ratio", *space["warmup_ratio"])
    return dict(trial.params)


def trial_fits_space(space: dict, values: dict) -> bool:
    """Whether optuna can take these values as a trial of ``space`` (a default trial may not)."""
    dist = distributions(space)
    for key, value in values.items():
        distribution = dist.get(key)
        if distribution is None:
            return False
        choices = getattr(distribution, "choices", None)
        if choices is not None:
            if value not in choices:
                return False
        elif (
            not isinstance(value, int | float)
            or not (distribution.low <= value <= distribution.high)
            or (key == "epochs" and value != int(value))
        ):
            return False
    return True


def metric_direction(metric: str) -> str:
    return "minimize" if metric in LOWER_IS_BETTER else "maximize"
