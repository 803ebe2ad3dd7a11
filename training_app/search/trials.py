"""Trials are child runs: an ordinary training run on the gpu queue per trial, with
``register=false`` and the search's metric for early stopping."""

from __future__ import annotations

from django.db import transaction

from training_app import services as training_services
from training_app.models import HyperparameterSearch, TrainingRun
from training_app.search.space import SEARCHED_PARAMS, trial_params_to_run


def default_trial_values(run: TrainingRun) -> dict:
    """What a default trial (no searched value set) trains with, in the space's terms."""
    chosen = {**run.params, **{k: v for k, v in run.resolved_params.items() if v is not None}}
    values = {"method": "full"}
    for key in SEARCHED_PARAMS:
        value = chosen.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            values[key] = (
                int(value) if key in ("epochs", "batch_size") and value == int(value) else value
            )
    return values


def trial_start(search: HyperparameterSearch, *, number: int, values: dict | None) -> TrainingRun:
    """Queue trial ``number`` with optuna's ``values``; None: the console's default settings
    (chosen from the data, full fine-tuning), recorded in the space's terms."""
    method, params = trial_params_to_run(values) if values else ("full", {})
    run = training_services.training_run_start(
        user=search.created_by,
        snapshot=search.snapshot,
        base_model=search.base_model,
        task=search.task,
        method=method,
        params={
            **search.fixed_params,
            **params,
            "early_stopping_metric": search.metric,
            "register": False,
        },
        name=f"{search.name} · trial {number + 1}"[:200],
    )
    if values is None:
        values = default_trial_values(run)
    TrainingRun.objects.filter(pk=run.pk).update(
        search=search, trial_number=number, trial_params=values
    )
    # training_run_start published the task before this transaction commits: a worker that
    # took it then found no row and did nothing. Publish again once the row is visible (a
    # second copy is harmless: only one claim wins).
    transaction.on_commit(run.enqueue)
    run.search, run.trial_number, run.trial_params = search, number, values
    return run


def trials_cancel_active(trials: list[TrainingRun]) -> int:
    for trial in trials:
        if trial.is_active:
            trial.cancel()
    return 0
