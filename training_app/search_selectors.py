"""Reads of hyperparameter searches, with permissions: lists, the trials table, the chart,
parameter importance and progress (the search page, its live part and the API)."""

from __future__ import annotations

import logging

from django.http import Http404
from django.utils import timezone

from lepton_web.access import access_check
from lepton_web.jobs import JobStatus
from training_app.models import HyperparameterSearch, TrainingRun
from training_app.search import (
    metric_direction,
    search_best_trial,
    search_study,
    trial_params_to_run,
    trial_score,
)

logger = logging.getLogger(__name__)


def search_list_for_user(*, user):
    access_check(user, "training_run", "view")
    return HyperparameterSearch.objects.select_related(
        "snapshot__dataset", "base_model", "best_trial"
    ).order_by("-created_at", "-id")


def search_get_for_user(*, user, search_id: int) -> HyperparameterSearch:
    search = search_list_for_user(user=user).filter(pk=search_id).first()
    if search is None:
        raise Http404("This search does not exist.")
    return search


def trial_state(run: TrainingRun) -> tuple[str, str]:
    """(css status, words) of a trial: "pruned" instead of "cancelled" for a pruned one."""
    if run.trial_pruned:
        return "pruned", "Pruned"
    return run.status, run.get_status_display()


def search_trial_rows(search: HyperparameterSearch) -> list[dict]:
    trials = list(search.trials.order_by("trial_number"))
    best = search.best_trial_id or getattr(search_best_trial(search, trials), "pk", None)
    rows = []
    for run in trials:
        status, words = trial_state(run)
        method, params = trial_params_to_run(run.trial_params)
        rows.append(
            {
                "run": run,
                "number": run.trial_number + 1,
                "status": status,
                "status_words": words,
                "method": method,
                "learning_rate": params.get("learning_rate"),
                "epochs": params.get("epochs"),
                "batch_size": params.get("batch_size"),
                "weight_decay": params.get("weight_decay"),
                "warmup_ratio": params.get("warmup_ratio"),
                "lora_r": params.get("lora_r"),
                "score": trial_score(search, run),
                "is_best": run.pk == best,
                "progress": run.progress,
            }
        )
    return rows


def search_chart(rows: list[dict], search: HyperparameterSearch) -> dict:
    """Score against trial, and the best so far, for Chart.js."""
    points, best_line, best = [], [], None
    better = (
        (lambda a, b: a > b)
        if metric_direction(search.metric) == "maximize"
        else (lambda a, b: a < b)
    )
    for row in rows:
        score = row["score"]
        if score is not None and row["status"] == JobStatus.SUCCEEDED:
            best = score if best is None or better(score, best) else best
        points.append({"x": row["number"], "y": score, "status": row["status"]})
        best_line.append({"x": row["number"], "y": best})
    return {"metric": search.metric, "points": points, "best": best_line}


def search_param_importance(search: HyperparameterSearch) -> list[dict]:
    """optuna's parameter importance over the complete trials; [] below two of them."""
    trials = list(search.trials.order_by("trial_number"))
    complete = [
        t
        for t in trials
        if t.status == JobStatus.SUCCEEDED
        and not t.trial_pruned
        and trial_score(search, t) is not None
    ]
    if len(complete) < 2:
        return []
    import optuna

    try:
        study = search_study(search, trials)
        importances = optuna.importance.get_param_importances(study, normalize=True)
    except (RuntimeError, ValueError, ZeroDivisionError):  # e.g. every param held one value
        logger.warning("No parameter importance for search %s", search.pk, exc_info=True)
        return []
    return [
        {"name": name, "importance": round(float(value), 4)}
        for name, value in importances.items()
        if value == value
    ]


def search_progress(search: HyperparameterSearch, rows: list[dict]) -> dict:
    done = sum(1 for row in rows if row["status"] not in ("queued", "running"))
    end = search.finished_at or timezone.now()
    minutes = (end - search.created_at).total_seconds() / 60
    parts = []
    if search.max_trials:
        parts.append(min(1.0, done / search.max_trials))
    if search.max_minutes:
        parts.append(min(1.0, minutes / search.max_minutes))
    fraction = 1.0 if not search.is_running else max(parts or [0.0])
    return {
        "trials_done": done,
        "trials_started": len(rows),
        "minutes": round(minutes, 1),
        "percent": round(100 * fraction),
    }
