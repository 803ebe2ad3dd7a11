"""The search's entry points: start, advance (queue trials while the budget lasts, then
finish), the worker's hook after each trial, and cancel. Every write happens here."""

from __future__ import annotations

import logging
import secrets
import shutil
from functools import partial

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from lepton_web.access import access_check
from lepton_web.jobs import BrokerUnavailable, JobStatus
from training_app import services as training_services
from training_app.checkpoints import checkpoint_sync_enabled
from training_app.models import HyperparameterSearch, TrainingRun
from training_app.search.budget import (
    FAILURES_IN_A_ROW,
    MAX_MINUTES,
    MAX_PARALLEL_TRIALS,
    MAX_TRIALS,
    budget_left,
    failures_in_a_row,
    progress_message,
)
from training_app.search.registration import artifact_upload, search_register
from training_app.search.space import SEARCH_METRICS, SEARCHED_PARAMS, space_clean
from training_app.search.study import search_best_trial, search_next_params, trial_score
from training_app.search.trials import trial_start, trials_cancel_active, trials_publish

logger = logging.getLogger(__name__)


def _int_or_none(value, label: str, lowest: int, highest: int, errors: dict, key: str):
    if value in (None, ""):
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        errors[key] = [f"{label} must be a whole number."]
        return None
    try:
        number = int(value)
    except ValueError:
        errors[key] = [f"{label} must be a whole number, not {value!r}."]
        return None
    if not lowest <= number <= highest:
        errors[key] = [f"{label} must be between {lowest:,} and {highest:,}; it is {number:,}."]
        return None
    return number


def search_start(
    *,
    user,
    snapshot,
    base_model,
    task: str,
    space: dict | None = None,
    metric: str = "",
    max_trials=None,
    max_minutes=None,
    parallel_trials=1,
    params: dict | None = None,
    seed: int | None = None,
    name: str = "",
) -> HyperparameterSearch:
    """Check everything, create the search and queue its first trials (``parallel_trials``).

    ``params`` are fixed hyperparameters every trial uses (e.g. max_length). A trial that cannot
    start (bad snapshot, base model, fixed params) is reported here and nothing is kept.
    """
    access_check(user, "training_run", "create")
    errors: dict[str, list[str]] = {}
    if task not in SEARCH_METRICS:
        errors["task"] = [f"Task must be one of {', '.join(SEARCH_METRICS)}."]
    metric = metric or (SEARCH_METRICS[task][0] if task in SEARCH_METRICS else "")
    if task in SEARCH_METRICS and metric not in SEARCH_METRICS[task]:
        errors["metric"] = [
            f"The metric {metric!r} does not apply to this task; choose one of "
            f"{', '.join(SEARCH_METRICS[task])}."
        ]
    max_trials = _int_or_none(max_trials, "The trial budget", 1, MAX_TRIALS, errors, "max_trials")
    max_minutes = _int_or_none(
        max_minutes, "The time budget (minutes)", 1, MAX_MINUTES, errors, "max_minutes"
    )
    parallel = _int_or_none(
        parallel_trials, "Trials at once", 1, MAX_PARALLEL_TRIALS, errors, "parallel_trials"
    )
    if (
        max_trials is None
        and max_minutes is None
        and not {"max_trials", "max_minutes"} & set(errors)
    ):
        errors["max_trials"] = [
            "Set a budget: a number of trials, a number of minutes, or both. The search stops "
            "starting trials when either is spent."
        ]
    space, problems = space_clean(space)
    if problems:
        errors["space"] = problems
    params = dict(params or {})
    fixed_searched = sorted(
        set(params) & {*SEARCHED_PARAMS, "lora_r", "lora_alpha", "register", "method"}
    )
    if fixed_searched:
        errors.setdefault("params", []).append(
            f"{', '.join(fixed_searched)} cannot be fixed in a search: the search chooses "
            "them (narrow the space instead)."
        )
    if seed is None:
        # A new sampler seed per search, recorded on the search so it can be replayed.
        seed = secrets.randbelow(2**31)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**31:
        errors["seed"] = ["The seed must be a whole number from 0 to 2,147,483,647."]
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        search = HyperparameterSearch.objects.create(
            name=(
                name or f"{snapshot.dataset.name} v{snapshot.number} · {base_model.name} · search"
            )[:200],
            snapshot=snapshot,
            base_model=base_model,
            task=task,
            space=space,
            fixed_params=params,
            metric=metric,
            max_trials=max_trials,
            max_minutes=max_minutes,
            parallel_trials=parallel or 1,
            seed=seed,
            created_by=user,
            message="Starting the first trials.",
        )
    try:
        search_advance(search_id=search.pk, raise_errors=True)
    except (ValidationError, BrokerUnavailable):
        # Trials already sent find no row and do nothing.
        TrainingRun.objects.filter(search=search).delete()
        search.delete()
        raise
    search.refresh_from_db()
    return search


def search_advance(*, search_id: int, raise_errors: bool = False) -> HyperparameterSearch | None:
    """Queue trials while the budget lasts (up to ``parallel_trials`` at once); once it is spent
    and no trial is left running, finish: pick the best trial and register its model.

    Safe to call any time and from any process: the search row is locked while deciding. New
    trials are published once that transaction commits (a worker must find their rows); with
    ``raise_errors`` a broker that cannot be reached then raises BrokerUnavailable.
    """
    finished = None
    with transaction.atomic():
        search = (
            HyperparameterSearch.objects.select_for_update(of=("self",))
            .select_related("snapshot__dataset", "base_model", "created_by")
            .filter(pk=search_id)
            .first()
        )
        if search is None or not search.is_running:
            return search  # finished, or registering (search_register's step)
        trials = list(search.trials.order_by("trial_number"))
        active = sum(1 for t in trials if t.is_active)
        failed_in_a_row = failures_in_a_row(trials)
        if failed_in_a_row >= FAILURES_IN_A_ROW:
            last = [t for t in trials if t.status == JobStatus.FAILED][-1]
            search.message = (
                f"Stopped: the last {failed_in_a_row} trials failed. The last said: "
                f"{last.error_message}"
            )[:500]
            active = trials_cancel_active(trials)
            budget = False
        else:
            budget = budget_left(search, len(trials))
        if budget:
            room = search.parallel_trials - active
            started: list[TrainingRun] = []
            if search.max_trials is not None:
                room = min(room, search.max_trials - len(trials))
            for _ in range(max(0, room)):
                values = (
                    None  # trial 1: the default settings, so the search starts from them
                    if not trials and "full" in search.space["methods"]
                    else search_next_params(search, trials)
                )
                try:
                    started.append(trial_start(search, number=len(trials), values=values))
                    trials.append(started[-1])
                except ValidationError:
                    if raise_errors:
                        raise
                    logger.exception("Search %s could not start a trial", search.pk)
                    search.message = "A trial could not start; see the worker log."
                    budget = False
                    break
                active += 1
            else:
                search.message = progress_message(search, trials)
            if started:
                transaction.on_commit(
                    partial(
                        trials_publish,
                        search_id=search.pk,
                        run_ids=[run.pk for run in started],
                        raise_errors=raise_errors,
                    )
                )
        elif active:
            search.message = (
                f"The budget is spent; waiting for the last {active} trial(s) to finish."
            )
        if not budget and active == 0:
            finished = _finish(search, trials)
        search.save(
            update_fields=[
                "message",
                "status",
                "best_trial",
                "finished_at",
                "registration_claimed_at",
                "registration_attempts",
                "updated_at",
            ]
        )
    if finished is not None:
        # Earlier "best so far" trials kept their model folders; only the best's is needed.
        for trial in trials:
            if trial.pk != finished.pk:
                shutil.rmtree(training_services.run_dir(trial.pk), ignore_errors=True)
        search = search_register(search_id=search.pk, claimed=True)
    return search


def searches_advance() -> int:
    """Advance every running search and finish every registering one (beat, each minute).

    A time budget that ran out, a trial the sweeper gave up on, or a trial that could not be
    queued while the broker was down would otherwise wait for the next trial to finish; a
    registration whose worker died (or whose attempt failed) would wait forever. Returns how
    many searches were looked at."""
    statuses = (HyperparameterSearch.Status.RUNNING, HyperparameterSearch.Status.REGISTERING)
    rows = list(
        HyperparameterSearch.objects.filter(status__in=statuses).values_list("pk", "status")
    )
    for search_id, status in rows:
        try:
            if status == HyperparameterSearch.Status.RUNNING:
                search_advance(search_id=search_id)
            else:
                search_register(search_id=search_id)
        except Exception:  # one broken search must not stop the others
            logger.exception("Advancing search %s failed", search_id)
    return len(rows)


def _finish(search: HyperparameterSearch, trials: list[TrainingRun]) -> TrainingRun | None:
    """Pick the best trial. None: the search failed. Otherwise the search is REGISTERING,
    claimed by this worker, which registers the best trial's model once the lock is released.
    Call while holding the lock on the search row."""
    best = search_best_trial(search, trials)
    search.best_trial = best
    if best is None:
        search.status = HyperparameterSearch.Status.FAILED
        search.finished_at = timezone.now()
        if not search.message.startswith("Stopped"):
            search.message = (
                f"No trial finished with a validation {search.metric}, so nothing was "
                "registered. Open the trials to see why they stopped."
            )[:500]
        return None
    search.status = HyperparameterSearch.Status.REGISTERING
    search.registration_claimed_at = timezone.now()
    search.registration_attempts = 1
    search.message = (
        f"Best: trial {best.trial_number + 1}, validation {search.metric} "
        f"{trial_score(search, best):.4f}. Registering its model."
    )
    return best


def search_trial_finished(*, run_id: int) -> None:
    """Called on the worker after a run's task returns: for a trial, keep its model folder only
    while it is the search's best so far, then ask for the next trials (or finish)."""
    run = TrainingRun.objects.filter(pk=run_id).select_related("search").first()
    if run is None or run.search is None or run.is_active:
        return
    folder = training_services.run_dir(run.pk)
    best = search_best_trial(run.search)
    if best is not None and best.pk == run.pk and (folder / "artifact").is_dir():
        if checkpoint_sync_enabled():  # the search may finish on another machine
            artifact_upload(run.pk, folder / "artifact")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    search_advance(search_id=run.search_id)


def search_cancel(*, search: HyperparameterSearch, user) -> HyperparameterSearch:
    """Stop the search: no new trials; queued and running trials are cancelled."""
    access_check(user, "training_run", "cancel")
    with transaction.atomic():
        won = HyperparameterSearch.objects.filter(
            pk=search.pk, status=HyperparameterSearch.Status.RUNNING
        ).update(
            status=HyperparameterSearch.Status.CANCELLED,
            finished_at=timezone.now(),
            message="Cancelled; trials still running stop at their next step. Nothing is "
            "registered.",
        )
    if not won:
        search.refresh_from_db(fields=["status"])
        if search.status == HyperparameterSearch.Status.REGISTERING:
            raise ValidationError(
                "This search has finished its trials and is registering the best one's model; "
                "it can no longer be cancelled."
            )
        raise ValidationError("This search has already finished.")
    for trial in search.trials.filter(status__in=(JobStatus.QUEUED, JobStatus.RUNNING)):
        trial.cancel()
    search.refresh_from_db()
    return search
