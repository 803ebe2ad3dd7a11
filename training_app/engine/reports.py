"""Losses, class weights, metrics and the evaluation reports of a split."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as functional

from training_app.engine.config import LOWER_IS_BETTER

MAX_WORST_EXAMPLES = 20


def _per_example_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    task: str,
    class_weights: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example loss and weight; the batch loss is sum(loss * weight) / sum(weight)."""
    logits = logits.float()
    if task == "single_label":
        losses = functional.cross_entropy(logits, labels, reduction="none")
        weights = class_weights[labels] if class_weights is not None else torch.ones_like(losses)
    elif task == "multi_label":
        losses = functional.binary_cross_entropy_with_logits(
            logits, labels, reduction="none", pos_weight=class_weights
        ).mean(dim=1)
        weights = torch.ones_like(losses)
    else:
        losses = (logits.view(-1) - labels.view(-1)) ** 2
        weights = torch.ones_like(losses)
    return losses, weights


def _class_weights(
    task: str, labels: np.ndarray, n_classes: int, power: float = 1.0
) -> np.ndarray | None:
    """Inverse-frequency weights raised to `power` (0.5: their square root, gentler)."""
    if task == "single_label":
        counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
        weights = np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 1.0)
        return (weights**power).astype(np.float32)
    if task == "multi_label":
        positives = labels.sum(axis=0).astype(np.float64)
        negatives = len(labels) - positives
        weights = np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0)
        return (np.clip(weights, 0.1, 100.0) ** power).astype(np.float32)
    return None


def _losses_numpy(logits: np.ndarray, labels: np.ndarray, task: str) -> np.ndarray:
    with torch.no_grad():
        losses, _ = _per_example_loss(
            torch.from_numpy(logits), torch.from_numpy(labels), task, None
        )
    return losses.numpy()


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _safe_divide(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else 0.0


def _single_label_report(truth: np.ndarray, predicted: np.ndarray, names: list[str]) -> dict:
    k = len(names)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    per_class = {}
    f1_values = []
    for i, name in enumerate(names):
        true_positive = confusion[i, i]
        precision = _safe_divide(true_positive, confusion[:, i].sum())
        recall = _safe_divide(true_positive, confusion[i, :].sum())
        f1 = _f1(precision, recall)
        support = int(confusion[i, :].sum())
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        if support > 0 or confusion[:, i].sum() > 0:
            f1_values.append(f1)
    return {
        "accuracy": _safe_divide(np.trace(confusion), confusion.sum()),
        "macro_f1": float(np.mean(f1_values)) if f1_values else 0.0,
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "labels": list(names),
    }


def _multi_label_report(truth: np.ndarray, predicted: np.ndarray, names: list[str]) -> dict:
    truth = truth.astype(bool)
    predicted = predicted.astype(bool)
    true_positive = (truth & predicted).sum(axis=0)
    false_positive = (~truth & predicted).sum(axis=0)
    false_negative = (truth & ~predicted).sum(axis=0)
    per_class = {}
    f1_values = []
    for i, name in enumerate(names):
        precision = _safe_divide(true_positive[i], true_positive[i] + false_positive[i])
        recall = _safe_divide(true_positive[i], true_positive[i] + false_negative[i])
        f1 = _f1(precision, recall)
        support = int(truth[:, i].sum())
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        if support > 0 or predicted[:, i].any():
            f1_values.append(f1)
    micro = _safe_divide(
        2 * true_positive.sum(),
        2 * true_positive.sum() + false_positive.sum() + false_negative.sum(),
    )
    return {
        "micro_f1": micro,
        "macro_f1": float(np.mean(f1_values)) if f1_values else 0.0,
        "subset_accuracy": float((truth == predicted).all(axis=1).mean()) if len(truth) else 0.0,
        "per_class": per_class,
        "labels": list(names),
    }


def _rank(values: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as scipy.stats.rankdata)."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def _regression_report(truth: np.ndarray, predicted: np.ndarray) -> dict:
    truth = truth.astype(np.float64)
    predicted = predicted.astype(np.float64)
    errors = predicted - truth
    total = float(((truth - truth.mean()) ** 2).sum()) if len(truth) else 0.0
    spearman = 0.0
    if len(truth) > 1:
        truth_ranks, predicted_ranks = _rank(truth), _rank(predicted)
        if truth_ranks.std() > 0 and predicted_ranks.std() > 0:
            spearman = float(np.corrcoef(truth_ranks, predicted_ranks)[0, 1])
    return {
        "mse": float((errors**2).mean()) if len(truth) else 0.0,
        "mae": float(np.abs(errors).mean()) if len(truth) else 0.0,
        "r2": 1.0 - float((errors**2).sum()) / total if total > 0 else 0.0,
        "spearman": spearman,
    }


def _evaluation(
    logits: np.ndarray, labels: np.ndarray, task: str, names: list[str]
) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    """(metrics, report, per-example losses, predictions) for one split."""
    losses = _losses_numpy(logits, labels, task)
    if task == "single_label":
        predicted = logits.argmax(axis=1)
        report = _single_label_report(labels, predicted, names)
        keys = ("accuracy", "macro_f1")
    elif task == "multi_label":
        predicted = (logits > 0).astype(np.float32)
        report = _multi_label_report(labels, predicted, names)
        keys = ("micro_f1", "macro_f1", "subset_accuracy")
    else:
        predicted = logits.reshape(-1)
        report = _regression_report(labels, predicted)
        keys = ("mse", "mae", "r2", "spearman")
    metrics = {"loss": float(losses.mean())}
    metrics.update({key: float(report[key]) for key in keys})
    return metrics, report, losses, predicted


def _is_better(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best - 1e-12 if metric in LOWER_IS_BETTER else value > best + 1e-12
