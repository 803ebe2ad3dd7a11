"""Reads of training runs: access-checked lookups, metric series, run comparison."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from lepton_web.access import access_check
from training_app.models import Evaluation, TrainingMetric, TrainingRun


def run_list_for_user(
    *, user, status: str | None = None, dataset_id: int | None = None
) -> QuerySet[TrainingRun]:
    access_check(user, "training_run", "view")
    runs = TrainingRun.objects.select_related("snapshot__dataset", "base_model").order_by(
        "-created_at"
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


def runs_compare(runs: list[TrainingRun]) -> dict:
    """Hyperparameters side by side (with which differ) and final metrics of several runs."""
    names = sorted({key for run in runs for key in run.params})
    rows = []
    for name in ["base_model", "method", "task", *names]:
        if name == "base_model":
            values = [run.base_model.name for run in runs]
        elif name in ("method", "task"):
            values = [getattr(run, name) for run in runs]
        else:
            values = [run.params.get(name) for run in runs]
        rows.append({"name": name, "values": values, "differs": len({repr(v) for v in values}) > 1})
    metric_names = sorted({key for run in runs for key in (run.test_metrics or {})})
    metrics = [
        {"name": name, "values": [(run.test_metrics or {}).get(name) for run in runs]}
        for name in metric_names
    ]
    return {"runs": runs, "params": rows, "metrics": metrics}
