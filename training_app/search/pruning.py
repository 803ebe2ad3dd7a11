"""Pruning: a running trial whose validation curve falls below the median of the finished
trials at the same evaluation is stopped (cancelled and marked ``trial_pruned``)."""

from __future__ import annotations

from django.utils import timezone

from lepton_web.jobs import JobStatus
from training_app.models import HyperparameterSearch, TrainingEvent, TrainingRun
from training_app.search.space import trial_fits_space
from training_app.search.study import (
    frozen_trial,
    intermediate_values,
    median_pruner,
    search_study,
)


def trial_should_prune(search: HyperparameterSearch, run: TrainingRun) -> bool:
    """The median pruner's decision for a running trial, from its validation curve so far."""
    from optuna.trial import TrialState

    if not trial_fits_space(search.space, run.trial_params):
        return False  # a default trial outside the space: not comparable, never pruned
    others = list(search.trials.exclude(pk=run.pk).order_by("trial_number"))
    study = search_study(search, others)
    curve = intermediate_values(search, [run])[run.pk]
    if not curve:
        return False
    return bool(
        median_pruner().prune(study, frozen_trial(search, run, curve, state=TrialState.RUNNING))
    )


def search_trial_evaluated(*, run_id: int) -> bool:
    """Called after a run wrote a validation metric: prune it if it is a trial doing worse than
    the median of the finished trials at the same evaluation. True when it was pruned."""
    run = TrainingRun.objects.filter(pk=run_id).select_related("search").first()
    if run is None or run.search is None or run.status != JobStatus.RUNNING:
        return False
    if not trial_should_prune(run.search, run):
        return False
    # The cancel transition (what the engine's should_stop reads) and the mark, in one UPDATE.
    if not run._transition(
        allowed=(JobStatus.RUNNING,),
        status=JobStatus.CANCELLED,
        message="Pruned.",
        finished_at=timezone.now(),
        trial_pruned=True,
    ):
        return False
    TrainingEvent.objects.create(
        run=run,
        kind="pruned",
        message=(
            f"Pruned by the search: its validation {run.search.metric} is below the median "
            "of the finished trials at the same evaluation. It stops at the next step."
        ),
    )
    return True
