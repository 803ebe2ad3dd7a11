"""Saved artifacts: load, predict and evaluate, through the serving runtime."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from models_app.runtime.artifact import UNMERGED_ADAPTER_KEY
from training_app.engine.config import TASKS, TrainingError
from training_app.engine.data import _check_texts, _class_names, _describe_label, _encode_labels
from training_app.engine.device import _thread_count
from training_app.engine.modeling import _last_layer_for_the_head_only, _LogitsModule
from training_app.engine.reports import MAX_WORST_EXAMPLES, _evaluation


def load_artifact(artifact_dir: str, *, device: str = "cpu") -> tuple[torch.nn.Module, Any]:
    """Load an artifact written by `train()`: a module mapping (input_ids, attention_mask) to
    logits, and its tokenizer. Handles the unmerged prefix-tuning case."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(artifact_dir, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(artifact_dir, local_files_only=True)
    adapter = getattr(model.config, UNMERGED_ADAPTER_KEY, None)
    prefix = False
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, os.path.join(artifact_dir, adapter))
        prefix = True
    else:
        _last_layer_for_the_head_only(model)
    module = _LogitsModule(model, prefix=prefix).to(device)
    module.eval()
    return module, tokenizer


def predict_logits(artifact_dir: str, texts: list[str], *, batch_size: int = 64) -> np.ndarray:
    """Logits for `texts` from an artifact folder, through the serving runtime's PyTorch engine
    (length-sorted batches, inference mode): training scores what serving will answer."""
    predictor = _runtime_predictor(artifact_dir, batch_size=batch_size)
    return predictor.logits(list(texts))


def _runtime_predictor(artifact_dir: str, *, task: str | None = None, batch_size: int = 64):
    from models_app.runtime import ArtifactError, load_predictor

    try:
        return load_predictor(
            artifact_dir,
            runtime="pytorch",
            task=task,
            threads=_thread_count(),
            device="cpu",
            batch_size=batch_size,
        )
    except ArtifactError as error:
        raise TrainingError(f"Could not load the model from {artifact_dir}: {error}") from error


def evaluate_artifact(
    artifact_dir: str,
    texts: list[str],
    labels: list,
    *,
    task: str,
    label_names: list[str] | None = None,
    split_name: str = "evaluation",
    batch_size: int = 64,
) -> dict:
    """Score a saved artifact on labelled texts (labels shaped as in `TrainingData`).

    Returns the report `train()` gives for its test split (accuracy, macro_f1, per-class
    figures and confusion matrix; micro/macro F1 and subset accuracy; or mse, mae, r2 and
    spearman), plus "loss", "examples" and "worst_examples". Numbers sit at the top level.
    """
    if task not in TASKS:
        raise TrainingError(f"Task must be one of {', '.join(TASKS)}; got {task!r}.")
    _check_texts(split_name, texts, labels)
    if not texts:
        raise TrainingError(f"The {split_name} split is empty; there is nothing to evaluate.")
    predictor = _runtime_predictor(artifact_dir, task=task, batch_size=batch_size)
    info = predictor.info
    if label_names is None and task != "regression":
        label_names = list(info.label_names)
    names = _class_names(task, label_names, labels)
    expected_outputs = 1 if task == "regression" else len(names)
    if info.output_count != expected_outputs:
        raise TrainingError(
            f"This model has {info.output_count} outputs but the task needs {expected_outputs}; "
            "evaluate it with the task and classes it was trained for."
        )
    truth = _encode_labels(task, names, split_name, labels)
    logits = predictor.logits(list(texts))
    metrics, report, losses, predicted = _evaluation(logits, truth, task, names)
    order = np.argsort(-losses, kind="stable")[:MAX_WORST_EXAMPLES]
    worst = [
        {
            "text": texts[i],
            "label": _describe_label(task, names, truth[i]),
            "predicted": _describe_label(task, names, predicted[i]),
            "loss": float(losses[i]),
        }
        for i in order
    ]
    return {**report, "loss": metrics["loss"], "examples": len(texts), "worst_examples": worst}
