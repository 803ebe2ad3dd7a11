"""Trials are child runs: an ordinary training run on the gpu queue per trial, with
``register=false`` and the search's metric for early stopping."""

from __future__ import annotations

import logging

from lepton_web.jobs import BrokerUnavailable, JobStatus
from training_app import services as training_services
from training_app.models import HyperparameterSearch, TrainingRun
from training_app.search.space import SEARCHED_PARAMS, trial_params_to_run

logger = logging.getLogger(__name__)


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
    """Create trial ``number`` (queued, not yet published) with optuna's ``values``; None: the
    console's default settings (chosen from the data, full fine-tuning), recorded in the
    space's terms. Call inside the search's locked transaction, and publish the trial with
    ``trials_publish`` once it commits."""
    method, params = trial_params_to_run(values) if values else ("full", {})
    run = training_services.training_run_start(
        user=search.created_by,
        snapshot=search.snapshot,
        base_model=search.base_model,
        task=search.task,
        method=method,
        params={
            # A trial is judged on validation, which a refit on train + validation cannot
            # change: it would only double the trial's time (large sets refit by default).
            "refit_on_all_data": False,
            **search.fixed_params,
            **params,
            "early_stopping_metric": search.metric,
            "register": False,
        },
        name=f"{search.name} · trial {number + 1}"[:200],
        enqueue=False,  # published once the search's transaction commits (trials_publish)
    )
    if values is None:
        values = default_trial_values(run)
    TrainingRun.objects.filter(pk=run.pk).update(
        search=search, trial_number=number, trial_params=values
    )
    run.search, run.trial_number, run.trial_params = search, number, values
    return run


def trials_cancel_active(trials: list[TrainingRun]) -> int:
    for trial in trials:
        if trial.is_active:
            trial.cancel()
    return 0


def trials_publish(*, search_id: int, run_ids: list[int], raise_errors: bool = False) -> None:
    """Publish new trials, once the transaction that created them has committed (each once).

    A broker that cannot be reached leaves them queued: the jobs sweeper publishes queued jobs
    it finds forgotten (JOB_REPUBLISH_AFTER_SECONDS). ``raise_errors`` raises instead."""
    for run in TrainingRun.objects.filter(pk__in=run_ids, status=JobStatus.QUEUED).order_by("pk"):
        try:
            run.enqueue()
        except BrokerUnavailable:
            if raise_errors:
                raise
            logger.warning("Search %s: trials %s wait for the broker", search_id, run_ids)
            HyperparameterSearch.objects.filter(
                pk=search_id, status=HyperparameterSearch.Status.RUNNING
            ).update(
                message="The task queue cannot be reached; the queued trials are sent again "
                "once it is back."
            )
            return
