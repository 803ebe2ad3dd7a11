"""Reads of training runs: access-checked lookups, metric series, run comparison."""

from __future__ import annotations

from django.db.models import Q, QuerySet
from django.http import Http404
from django.utils import timezone

from lepton_web import vocabulary
from lepton_web.access import access_check
from lepton_web.jobs import JobStatus
from training_app.models import Evaluation, TrainingMetric, TrainingRun


def run_list_for_user(
    *, user, status: str | None = None, dataset_id: int | None = None
) -> QuerySet[TrainingRun]:
    access_check(user, "training_run", "view")
    runs = TrainingRun.objects.select_related("snapshot__dataset", "base_model").order_by(
        "-created_at", "-id"
    )
    if status:
        runs = runs.filter(status=status)
    if dataset_id:
        runs = runs.filter(snapshot__dataset_id=dataset_id)
    return runs


def run_get_for_user(*, user, run_id: int) -> TrainingRun:
    access_check(user, "training_run", "view")
    run = (
        TrainingRun.objects.select_related("snapshot__dataset", "base_model")
        .filter(pk=run_id)
        .first()
    )
    if run is None:
        raise Http404("This training run does not exist.")
    return run


def evaluation_get_for_user(*, user, evaluation_id: int) -> Evaluation:
    access_check(user, "training_run", "view")
    evaluation = Evaluation.objects.select_related("model_version").filter(pk=evaluation_id).first()
    if evaluation is None:
        raise Http404("This evaluation does not exist.")
    return evaluation


def run_metric_series(run: TrainingRun) -> dict[str, list[dict]]:
    """Every metric as a series: {"train_loss": [{"step", "epoch", "value"}, ...], ...}."""
    series: dict[str, list[dict]] = {}
    rows = (
        TrainingMetric.objects.filter(run=run)
        .order_by("step")
        .values_list("name", "step", "epoch", "value")
    )
    for name, step, epoch, value in rows:
        series.setdefault(name, []).append({"step": step, "epoch": round(epoch, 3), "value": value})
    return series


def run_model_version(run: TrainingRun):
    from models_app.models import ModelVersion

    return ModelVersion.objects.filter(training_run=run).select_related("registered_model").first()


# Hyperparameters that only some methods or tasks use; the rest apply to every run.
PARAMETER_METHODS = {
    "lora_r": ("lora", "adalora"),
    "lora_alpha": ("lora", "adalora"),
    "weight_averaging": ("full", "lora", "prefix", "ia3"),
}
PARAMETER_TASKS = {"class_weighting": ("single_label", "multi_label")}


def parameter_applies(run: TrainingRun, name: str) -> bool:
    """Whether ``name`` means anything for this run (no LoRA rank for full fine-tuning)."""
    return run.method in PARAMETER_METHODS.get(name, (run.method,)) and run.task in (
        PARAMETER_TASKS.get(name, (run.task,))
    )


def run_parameter_value(run: TrainingRun, name: str):
    """The value the engine used: recorded when it started, else resolved from the request."""
    resolved = run.resolved_params or {}
    value = resolved.get(name, (run.params or {}).get(name))
    if value is None and name == "learning_rate":
        # Runs from before values were recorded: the method's default is what they used.
        from training_app.forms import engine_options

        value = engine_options()["learning_rates"].get(run.method)
    return value


def run_parameters(run: TrainingRun) -> list[dict]:
    """The run's hyperparameters as shown: the values used, only those its method applies."""
    from training_app.services import PARAM_NAMES

    names = [*PARAM_NAMES, *(k for k in run.params or {} if k not in PARAM_NAMES)]
    return [
        {
            "name": name,
            "label": vocabulary.word(name),
            "text": vocabulary.parameter_value(name, run_parameter_value(run, name)),
        }
        for name in names
        if parameter_applies(run, name)
        and (name in (run.params or {}) or name in (run.resolved_params or {}))
    ]


def runs_compare(runs: list[TrainingRun]) -> dict:
    """Hyperparameters side by side (the values used, with which differ) and final metrics."""
    from training_app.services import PARAM_NAMES

    recorded = {key for run in runs for key in (*(run.params or {}), *(run.resolved_params or {}))}
    names = [*PARAM_NAMES, *sorted(recorded - set(PARAM_NAMES))]
    rows = []
    for name in ["base_model", "task", "method", *names]:
        if name == "base_model":
            values = [run.base_model.name for run in runs]
            texts = values
        elif name in ("method", "task"):
            values = [getattr(run, name) for run in runs]
            texts = [vocabulary.word(value) for value in values]
        else:
            if name not in recorded or not any(parameter_applies(run, name) for run in runs):
                continue
            values = [
                run_parameter_value(run, name) if parameter_applies(run, name) else None
                for run in runs
            ]
            texts = [
                vocabulary.parameter_value(name, value)
                if parameter_applies(run, name)
                else f"not used by {vocabulary.word(run.method)}"
                for run, value in zip(runs, values, strict=True)
            ]
        rows.append(
            {
                "name": name,
                "label": vocabulary.word(name),
                "values": values,
                "texts": texts,
                "differs": len({repr(v) for v in values}) > 1,
            }
        )
    metric_names = sorted({key for run in runs for key in (run.test_metrics or {})})
    metrics = [
        {
            "name": name,
            "label": vocabulary.metric(name),
            "values": [(run.test_metrics or {}).get(name) for run in runs],
        }
        for name in metric_names
    ]
    return {"runs": runs, "params": rows, "metrics": metrics}


# --- pages ------------------------------------------------------------------------------------------
# Added for the server-rendered training pages; the functions above serve the API as well.
HEADLINE_METRICS = {"single_label": "macro_f1", "multi_label": "macro_f1", "regression": "mse"}
MAX_COMPARED_RUNS = 8


def snapshot_choices_for_user(*, user) -> QuerySet:
    """Snapshots with records (to evaluate on), newest first."""
    from datasets_app.models import Snapshot

    access_check(user, "training_run", "view")
    return (
        Snapshot.objects.select_related("dataset")
        .filter(record_count__gt=0)
        .order_by("-created_at", "-id")
    )


def snapshot_training_choices_for_user(*, user) -> QuerySet:
    """Snapshots a run can train on (with train records), newest first."""
    return snapshot_choices_for_user(user=user).filter(split_counts__train__gt=0)


def base_model_choices_for_user(*, user) -> QuerySet:
    """The base-model catalogue, the default first."""
    from models_app.selectors import base_model_list_for_user

    return base_model_list_for_user(user=user)


def run_dataset_choices_for_user(*, user) -> QuerySet:
    """Datasets that have at least one run (the run list's dataset filter)."""
    from datasets_app.models import Dataset

    access_check(user, "training_run", "view")
    return (
        Dataset.objects.filter(snapshots__training_runs__isnull=False).distinct().order_by("name")
    )


def run_headline_metric(run: TrainingRun) -> dict | None:
    """The one number the run list shows: test macro-F1 (MSE for regression), else the best
    validation value so far. None before the first evaluation."""
    name = HEADLINE_METRICS.get(run.task, "macro_f1")
    for source, metrics in (("test", run.test_metrics), ("best", run.best_metrics)):
        value = (metrics or {}).get(name)
        if isinstance(value, int | float):
            return {"name": vocabulary.metric(name), "value": value, "source": source}
    return None


def runs_get_for_user(*, user, run_ids: list[int]) -> list[TrainingRun]:
    """The runs named by ``run_ids``, in that order, without repeats; unknown ids are skipped."""
    access_check(user, "training_run", "view")
    wanted = list(dict.fromkeys(run_ids))[:MAX_COMPARED_RUNS]
    found = TrainingRun.objects.select_related("snapshot__dataset", "base_model").in_bulk(wanted)
    return [found[run_id] for run_id in wanted if run_id in found]


def runs_validation_series(runs: list[TrainingRun]) -> dict:
    """Validation curves of several runs: {"metrics": [...], "runs": [{id, name, series}]}."""
    by_run: dict[int, dict[str, list[dict]]] = {run.pk: {} for run in runs}
    losses: dict[int, list[dict]] = {run.pk: [] for run in runs}
    rows = (
        TrainingMetric.objects.filter(run__in=runs)
        .filter(Q(name__startswith="val_") | Q(name="train_loss"))
        .order_by("run_id", "step")
        .values_list("run_id", "name", "step", "value")
    )
    for run_id, name, step, value in rows:
        if name == "train_loss":
            losses[run_id].append({"step": step, "value": value})
        else:
            by_run[run_id].setdefault(name, []).append({"step": step, "value": value})
    names = sorted({name for series in by_run.values() for name in series})
    preferred = [f"val_{HEADLINE_METRICS.get(run.task, 'macro_f1')}" for run in runs]
    first = next((name for name in preferred if name in names), names[0] if names else None)
    if first:
        names.remove(first)
        names.insert(0, first)
    return {
        "metrics": names,
        "metric_labels": {name: vocabulary.metric(name) for name in names},
        "has_loss": any(losses.values()),
        "runs": [
            {
                "id": run.pk,
                "name": f"#{run.pk} {run}",
                "series": by_run[run.pk],
                "train_loss": losses[run.pk],
            }
            for run in runs
        ],
    }


def run_events(run: TrainingRun) -> QuerySet:
    return run.events.order_by("created_at", "id")


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def run_events_empty_text(run: TrainingRun) -> str:
    """What the Events box says before the first event, true to the run's status."""
    if run.status == "queued":
        return "Nothing yet: the run starts when a worker on the gpu queue picks it up."
    if run.status == "running":
        return (
            "A worker has the run and is loading the model and data; events appear here as it goes."
        )
    return "This run recorded no events."


def run_tiles(run: TrainingRun) -> dict[str, str]:
    """The run page's live tiles, as shown: the page and the live state both use these."""
    steps = f"{run.steps_done:,}" + (f" / {run.total_steps:,}" if run.total_steps else "")
    if run.is_finished:
        time_left = "done"
    elif run.is_active and run.seconds_left is not None and run.steps_done:
        time_left = _duration(run.seconds_left)
    else:
        time_left = "—"
    throughput = f"{run.examples_per_second:.1f}" if run.examples_per_second else "—"
    return {"steps": steps, "time_left": time_left, "throughput": throughput}


def run_status_line(run: TrainingRun) -> dict[str, str]:
    """The line under the run page's progress bar: the message (only a queued run waits for a
    worker) and the percent, time left and attempt. The page and the live state both use it."""
    message = run.message or ("Waiting for a worker…" if run.status == "queued" else "")
    progress = f"{run.progress}%"
    if run.is_active and run.steps_done and run.seconds_left is not None:
        progress += f" · about {run_tiles(run)['time_left']} left"
    if run.attempts > 1:
        progress += f" · attempt {run.attempts}"
    return {"message": message, "progress_text": progress}


def run_live_state(run: TrainingRun) -> dict:
    """Everything on the run page that changes while it trains, from one read of the row:
    status, progress, tiles, events and metric series, so the page never mixes two moments."""
    events = [
        {
            "id": event.pk,
            "kind": event.kind,
            "message": event.message,
            "time": timezone.localtime(event.created_at).strftime("%H:%M:%S"),
            "timestamp": event.created_at.isoformat(),
        }
        for event in run_events(run)
    ]
    line = run_status_line(run)
    return {
        "id": run.pk,
        "status": run.status,
        "status_display": run.get_status_display(),
        "is_active": run.is_active,
        "is_finished": run.is_finished,
        "progress": run.progress,
        "message": line["message"],
        "progress_text": line["progress_text"],
        "error_message": run.error_message,
        "attempts": run.attempts,
        "steps_done": run.steps_done,
        "total_steps": run.total_steps,
        "seconds_left": run.seconds_left if run.is_active else None,
        "tiles": run_tiles(run),
        "events": events,
        "events_empty_text": run_events_empty_text(run),
        "series": run_metric_series(run),
    }


def _label_text(value) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "(none)"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def run_test_report(run: TrainingRun) -> dict:
    """The finished run's test report, shaped for the page: metrics, per-class rows, the
    confusion matrix with row-normalised shares, and the worst mistakes."""
    report = run.test_report or {}
    metrics = [
        {"name": vocabulary.metric(name), "value": value}
        for name, value in (run.test_metrics or {}).items()
        if isinstance(value, int | float)
    ]
    per_class = [
        {"label": label, **values} for label, values in (report.get("per_class") or {}).items()
    ]
    confusion = None
    matrix = report.get("confusion_matrix")
    labels = report.get("labels") or []
    if matrix and len(matrix) == len(labels):
        rows = []
        for row_index, (label, counts) in enumerate(zip(labels, matrix, strict=True)):
            total = sum(counts)
            cells = [
                {
                    "count": count,
                    "share": count / total if total else 0.0,
                    # A CSS alpha; formatted here so the decimal point never follows a locale.
                    "shade": f"{count / total if total else 0.0:.3f}",
                    "is_diagonal": column == row_index,
                }
                for column, count in enumerate(counts)
            ]
            rows.append({"label": label, "total": total, "cells": cells})
        confusion = {"labels": labels, "rows": rows}
    worst = [
        {
            "text": example.get("text", ""),
            "label": _label_text(example.get("label")),
            "predicted": _label_text(example.get("predicted")),
            "loss": example.get("loss"),
        }
        for example in (run.worst_examples or [])
    ]
    return {"metrics": metrics, "per_class": per_class, "confusion": confusion, "worst": worst}


def evaluation_list_for_version(*, user, model_version) -> QuerySet[Evaluation]:
    access_check(user, "training_run", "view")
    return (
        Evaluation.objects.filter(model_version=model_version)
        .select_related("snapshot__dataset")
        .order_by("-created_at", "-id")
    )


def run_resume_note(run: TrainingRun) -> str:
    """What Resume does for a failed or cancelled run (empty for any other run)."""
    if run.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        return ""
    removed_at = run.checkpoint_removed_at()
    if removed_at is None:
        return "No checkpoint was kept, so Resume starts this run again from the beginning."
    return (
        f"Resume continues from the checkpoint kept at step {run.checkpoint_step:,}; it is "
        f"kept until {timezone.localtime(removed_at):%Y-%m-%d %H:%M}, then removed."
    )
