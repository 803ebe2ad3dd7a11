"""One vocabulary for the pages: the words shown for the codes stored in rows and configs.

Pages never show a stored code (``single_label``, ``full``, ``macro_f1``) or a float that is a
whole number (``1.0``); they go through these functions, which templates reach through the
``vocabulary`` template library (``{% load vocabulary %}``). Pure: no Django imports.
"""

from __future__ import annotations

import math

TASKS = {
    "single_label": "Single-label classification",
    "multi_label": "Multi-label classification",
    "regression": "Regression",
}
# A short form for names: "reviews-single-label".
TASK_SLUGS = {
    "single_label": "single-label",
    "multi_label": "multi-label",
    "regression": "regression",
}
METHODS = {
    "full": "Full fine-tuning",
    "lora": "LoRA",
    "adalora": "AdaLoRA",
    "prefix": "Prefix tuning",
    "ia3": "(IA)³",
}
METRICS = {
    "macro_f1": "macro-F1",
    "micro_f1": "micro-F1",
    "accuracy": "accuracy",
    "subset_accuracy": "subset accuracy",
    "loss": "loss",
    "mse": "MSE",
    "mae": "MAE",
    "r2": "R²",
    "spearman": "Spearman",
    "examples_per_second": "examples per second",
    "learning_rate": "learning rate",
}
METRIC_PREFIXES = {"val_": "validation", "test_": "test", "train_": "training"}
PARAMETERS = {
    "learning_rate": "Learning rate",
    "epochs": "Epochs",
    "batch_size": "Batch size",
    "max_length": "Max length (tokens)",
    "warmup_ratio": "Warmup ratio",
    "weight_decay": "Weight decay",
    "dropout": "Dropout",
    "optimizer": "Optimizer",
    "scheduler": "Scheduler",
    "gradient_accumulation": "Gradient accumulation",
    "class_weighting": "Class weighting",
    "early_stopping_metric": "Early stopping metric",
    "early_stopping_patience": "Early stopping patience",
    "eval_every_steps": "Evaluation interval (steps)",
    "seed": "Seed",
    "device": "Device",
    "precision": "Precision",
    "lora_r": "LoRA rank",
    "lora_alpha": "LoRA alpha",
    "base_model": "Base model",
    "method": "Method",
    "task": "Task",
}
CHOICES = {
    "adamw": "AdamW",
    "sgd": "SGD",
    "linear": "linear",
    "cosine": "cosine",
    "constant": "constant",
    "wsd": "warmup-stable-decay",
    "auto": "automatic",
    "cpu": "CPU",
    "cuda": "GPU (CUDA)",
    "fp32": "32-bit float",
    "bf16": "bfloat16",
}
# What a parameter left empty means, in words.
UNSET = {
    "learning_rate": "the method's default",
    "dropout": "the model's own",
    "eval_every_steps": "once per epoch",
    "early_stopping_metric": "the task's first metric",
}
SPLITS = {"train": "train", "validation": "validation", "test": "test"}
# The serving runtimes (Deployment.Runtime's codes, also stored on batch predictions).
RUNTIMES = {"pytorch": "PyTorch", "onnx-int8": "ONNX int8", "onnx-fp32": "ONNX fp32"}
# Words for each table above, looked up in this order by word().
_TABLES = (TASKS, METHODS, PARAMETERS, CHOICES, SPLITS, RUNTIMES)
# An endpoint's history: what each stored action did, as the page says it.
DEPLOYMENT_ACTIONS = {
    "deploy": "Deployed",
    "promote": "Promoted",
    "rollback": "Rolled back",
    "stop": "Stopped",
    "start": "Started",
    "alias": "Followed its alias",
}


def number(value: object) -> str:
    """A number for people: whole numbers without ``.0``, small ones as ``5e-5``, four
    significant digits otherwise; anything else unchanged."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "" if value is None else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        if value != 0 and abs(value) < 0.01:
            mantissa, exponent = f"{value:e}".split("e")
            return f"{float(mantissa):g}e{int(exponent)}"
        return f"{value:.4g}"
    return f"{value:,}"


def metric(code: str) -> str:
    """``val_macro_f1`` -> ``validation macro-F1``; ``accuracy`` -> ``accuracy``."""
    for prefix, word_ in METRIC_PREFIXES.items():
        if code.startswith(prefix) and code[len(prefix) :] in METRICS:
            return f"{word_} {METRICS[code[len(prefix) :]]}"
    return METRICS.get(code, code.replace("_", " "))


def word(code: object) -> str:
    """The word for any stored code; an unknown code with its underscores made spaces."""
    if not isinstance(code, str):
        return number(code)
    for table in _TABLES:
        if code in table:
            return table[code]
    if code in METRICS or any(code.startswith(p) for p in METRIC_PREFIXES):
        return metric(code)
    return code.replace("_", " ")


def duration_ms(milliseconds: int | float | None) -> str:
    """A time a person took: ``2345`` -> ``2.3 s``, ``65000`` -> ``1 min 5 s``; ``None`` -> ``—``."""
    if milliseconds is None:
        return "—"
    seconds = milliseconds / 1000
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{round(seconds)} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


def deployment_action(code: str) -> str:
    """``rollback`` -> ``Rolled back``; an unknown action as ``word`` would say it."""
    return DEPLOYMENT_ACTIONS.get(code, word(code).capitalize())


def parameter_value(name: str, value: object) -> str:
    """A hyperparameter's value in words: ``1.0`` epochs -> ``1``, ``adamw`` -> ``AdamW``."""
    if value is None or value == "":
        return UNSET.get(name, "default")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if name == "early_stopping_metric" and isinstance(value, str):
        return metric(value)
    if isinstance(value, str):
        return CHOICES.get(value, value)
    return number(value)


def count(value: int | float, singular: str, plural: str | None = None) -> str:
    """``1 epoch``, ``2 epochs``, ``1.5 epochs``, ``1,200 records``."""
    plural = plural or f"{singular}s"
    return f"{number(value)} {singular if value == 1 else plural}"
