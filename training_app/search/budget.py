"""The search's budget (trials and/or minutes), its limits, and when it stops early."""

from __future__ import annotations

from django.utils import timezone

from lepton_web.jobs import JobStatus
from training_app.models import HyperparameterSearch, TrainingRun

MAX_TRIALS = 500
MAX_MINUTES = 7 * 24 * 60
MAX_PARALLEL_TRIALS = 16
# A search stops when this many trials in a row failed: the next ones would fail the same way.
FAILURES_IN_A_ROW = 3


def budget_left(search: HyperparameterSearch, started: int) -> bool:
    if search.max_trials is not None and started >= search.max_trials:
        return False
    if search.max_minutes is not None:
        elapsed = (timezone.now() - search.created_at).total_seconds()
        if elapsed >= search.max_minutes * 60:
            return False
    return True


def failures_in_a_row(trials: list[TrainingRun]) -> int:
    count = 0
    for trial in reversed([t for t in trials if t.is_finished]):
        if trial.status != JobStatus.FAILED:
            break
        count += 1
    return count


def progress_message(search: HyperparameterSearch, trials: list[TrainingRun]) -> str:
    done = sum(1 for t in trials if t.is_finished)
    running = len(trials) - done
    budget = f" of {search.max_trials}" if search.max_trials else ""
    return f"{done}{budget} trials finished, {running} queued or running."
