"""Hyperparameter search: trials are training runs on the gpu queue, chosen by optuna.

optuna 5.1.0 (pinned in requirements.txt) without its own storage: each time a decision is
needed (the next trial's values, whether to prune a trial, parameter importance) the study is
rebuilt in memory from the trial rows with ``create_trial`` / ``add_trial`` and asked once
(ask-and-tell with a seeded TPE sampler). The trial rows are the truth, so trials survive a
lost worker like any run (the sweeper requeues them) and several gpu workers can take trials
of one search at once: up to ``parallel_trials`` are queued together, and each trial that
finishes asks for the next (``search_trial_finished``, called by the run's task).

Pruning: when a trial reports a validation metric (``RunCallbacks.on_evaluate``), a median
pruner compares it with the finished trials at the same evaluation; a pruned trial is stopped
through the ordinary cancel and marked ``trial_pruned`` (pages say "Pruned").

Trial 1 (when full fine-tuning is in the space) is the console's default settings, chosen from
the data as for a plain run, so a search starts from what a user would get without one; it joins
optuna's study when its values lie inside the space. Trials run with ``register=false``; when
the budget is spent and the last trial is done, the search becomes REGISTERING (under its lock)
and the best trial's model is registered as the version, outside the lock, by the worker that
finished it. Only then is the search SUCCEEDED, so "succeeded" always comes with its version. A
worker that dies while registering leaves a claim that goes stale; beat's ``searches_advance``
takes the step over (and retries a failed attempt), up to ``REGISTRATION_MAX_ATTEMPTS``.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from lepton_web.access import access_check
from lepton_web.jobs import BrokerUnavailable, JobStatus
from training_app import services
from training_app.checkpoints import checkpoint_sync_enabled
from training_app.models import HyperparameterSearch, TrainingEvent, TrainingMetric, TrainingRun

logger = logging.getLogger(__name__)

# The engine's validation metrics by task (training_app.engine.config.METRICS_BY_TASK); kept
# here so the web process needs no engine import to check a form.
SEARCH_METRICS = {
    "single_label": ("macro_f1", "accuracy", "loss"),
    "multi_label": ("macro_f1", "micro_f1", "subset_accuracy", "loss"),
    "regression": ("mse", "mae", "r2", "spearman", "loss"),
}
LOWER_IS_BETTER = frozenset({"loss", "mse", "mae"})
SEARCH_METHODS = ("full", "lora")
# Ranges that work for small encoders (MiniLM, BERT-base): full fine-tuning wants 1e-5..2e-4,
# LoRA about ten times more. Epochs, batch size, weight decay and warmup cover the usual spread.
DEFAULT_SPACE = {
    "methods": ["full", "lora"],
    "learning_rate": [1e-5, 2e-4],
    "lora_learning_rate": [1e-4, 3e-3],
    "epochs": [2, 10],
    "batch_size": [8, 16, 32],
    "weight_decay": [0.0, 0.1],
    "warmup_ratio": [0.0, 0.2],
    "lora_r": [4, 8, 16],
}
# (label, lowest, highest) of each range in the space
RANGES = {
    "learning_rate": ("Learning rate (full fine-tuning)", 1e-7, 1.0),
    "lora_learning_rate": ("Learning rate (LoRA)", 1e-7, 1.0),
    "epochs": ("Epochs", 1, 100),
    "weight_decay": ("Weight decay", 0.0, 1.0),
    "warmup_ratio": ("Warmup ratio", 0.0, 0.5),
}
CHOICES = {"batch_size": ("Batch size", 1, 4096), "lora_r": ("LoRA rank", 1, 512)}
SEARCHED_PARAMS = ("learning_rate", "epochs", "batch_size", "weight_decay", "warmup_ratio")
MAX_TRIALS = 500
MAX_MINUTES = 7 * 24 * 60
MAX_PARALLEL_TRIALS = 16
# A search stops when this many trials in a row failed: the next ones would fail the same way.
FAILURES_IN_A_ROW = 3
PRUNER_STARTUP_TRIALS = 2  # finished trials needed before any trial is pruned
PRUNER_WARMUP_EVALUATIONS = 1  # the first evaluation of a trial is never pruned
_STORAGE_PREFIX = "training/searches"
# Registering the best trial's model copies a folder (seconds to minutes): a claim older than
# this belongs to a worker that died, and beat takes the step over.
REGISTRATION_STALE_SECONDS = 600
REGISTRATION_MAX_ATTEMPTS = 3


# --- the search space -------------------------------------------------------------------------
def space_clean(space: dict | None) -> tuple[dict, list[str]]:
    """Fill the space's missing keys from DEFAULT_SPACE and check it; (space, problems)."""
    space = dict(space or {})
    problems: list[str] = []
    unknown = sorted(set(space) - set(DEFAULT_SPACE))
    for key in unknown:
        problems.append(
            f"{key!r} cannot be searched; the space may set {', '.join(DEFAULT_SPACE)}."
        )
    values = {**DEFAULT_SPACE, **{k: v for k, v in space.items() if k in DEFAULT_SPACE}}
    methods = values["methods"]
    if not isinstance(methods, list) or not methods:
        problems.append("Choose at least one method to search: full fine-tuning, LoRA or both.")
    elif any(m not in SEARCH_METHODS for m in methods) or len(set(methods)) != len(methods):
        problems.append("Methods must be “full” and/or “lora”, each once.")
    for key, (label, lowest, highest) in RANGES.items():
        value = values[key]
        if (
            not isinstance(value, list | tuple)
            or len(value) != 2
            or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in value)
        ):
            problems.append(f"{label}: give a range as two numbers, lowest first.")
            continue
        low, high = value
        if key == "epochs" and not (float(low).is_integer() and float(high).is_integer()):
            problems.append("Epochs: give whole numbers.")
        elif low > high:
            problems.append(f"{label}: the lowest value {low:g} is above the highest {high:g}.")
        elif low < lowest or high > highest:
            problems.append(f"{label}: keep the range within {lowest:g} to {highest:g}.")
        values[key] = [int(low), int(high)] if key == "epochs" else [float(low), float(high)]
    for key, (label, lowest, highest) in CHOICES.items():
        value = values[key]
        if not isinstance(value, list | tuple) or not value:
            if key == "batch_size" or "lora" in (methods or []):
                problems.append(f"{label}: give at least one value to try.")
            continue
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in value):
            problems.append(f"{label}: the values to try must be whole numbers.")
        elif min(value) < lowest or max(value) > highest:
            problems.append(f"{label}: the values must lie between {lowest} and {highest}.")
        else:
            values[key] = sorted(set(value))
    if not problems and _space_size(values) == 1:
        problems.append(
            "This search space holds a single setting, so there is nothing to search: widen "
            "at least one range or add a choice (or start a plain run with those values)."
        )
    return values, problems


def _space_size(space: dict) -> float:
    """How many different settings the space holds (inf once a float range is open)."""
    size = 0.0
    for method in space["methods"]:
        count = 1.0
        lr_key = "lora_learning_rate" if method == "lora" else "learning_rate"
        for key in (lr_key, "weight_decay", "warmup_ratio"):
            if space[key][0] != space[key][1]:
                count = math.inf
        count *= space["epochs"][1] - space["epochs"][0] + 1
        count *= len(space["batch_size"])
        if method == "lora":
            count *= len(space["lora_r"])
        size += count
    return size


def _distributions(space: dict) -> dict:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    return {
        "method": CategoricalDistribution(space["methods"]),
        "learning_rate": FloatDistribution(*space["learning_rate"], log=True),
        "lora_learning_rate": FloatDistribution(*space["lora_learning_rate"], log=True),
        "lora_r": CategoricalDistribution(space["lora_r"] or [8]),
        "epochs": IntDistribution(*space["epochs"]),
        "batch_size": CategoricalDistribution(space["batch_size"]),
        "weight_decay": FloatDistribution(*space["weight_decay"]),
        "warmup_ratio": FloatDistribution(*space["warmup_ratio"]),
    }


def trial_params_to_run(values: dict) -> tuple[str, dict]:
    """optuna's values of one trial -> (method, run params)."""
    method = values["method"]
    params = {key: values[key] for key in SEARCHED_PARAMS if key in values}
    if method == "lora":
        params["learning_rate"] = values["lora_learning_rate"]
        params["lora_r"] = values["lora_r"]
        params["lora_alpha"] = 2 * values["lora_r"]
    return method, params


def _suggest(trial, space: dict) -> dict:
    """Ask ``trial`` for one setting; LoRA's rank and learning rate only for LoRA."""
    method = trial.suggest_categorical("method", space["methods"])
    if method == "lora":
        trial.suggest_float("lora_learning_rate", *space["lora_learning_rate"], log=True)
        trial.suggest_categorical("lora_r", space["lora_r"])
    else:
        trial.suggest_float("learning_rate", *space["learning_rate"], log=True)
    trial.suggest_int("epochs", *space["epochs"])
    trial.suggest_categorical("batch_size", space["batch_size"])
    trial.suggest_float("weight_decay", *space["weight_decay"])
    trial.suggest_float("warmup_ratio", *space["warmup_ratio"])
    return dict(trial.params)


# --- the study, rebuilt from the rows -----------------------------------------------------------
def metric_direction(metric: str) -> str:
    return "minimize" if metric in LOWER_IS_BETTER else "maximize"


def trial_score(search: HyperparameterSearch, run: TrainingRun) -> float | None:
    """The trial's best validation value of the search's metric; None until it has one."""
    value = (run.best_metrics or {}).get(search.metric)
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
        return float(value)
    return None


def _intermediate_values(search: HyperparameterSearch, runs: list[TrainingRun]) -> dict:
    """{run id: {evaluation index: value}}: the validation curve of each trial, by the order of
    its evaluations (trials differ in steps per epoch, so steps are not comparable)."""
    curves: dict[int, dict[int, float]] = {run.pk: {} for run in runs}
    rows = TrainingMetric.objects.filter(
        run__in=[run.pk for run in runs], name=f"val_{search.metric}"
    ).order_by("run_id", "step")
    for run_id, value in rows.values_list("run_id", "value"):
        curve = curves[run_id]
        curve[len(curve)] = value
    return curves


def _frozen_trial(search, run, curve: dict, *, state=None):
    from optuna.trial import TrialState, create_trial

    dist = _distributions(search.space)
    score = trial_score(search, run)
    if state is None:
        if run.trial_pruned:
            state = TrialState.PRUNED
        elif run.is_active:
            state = TrialState.RUNNING
        elif run.status == JobStatus.SUCCEEDED and score is not None:
            state = TrialState.COMPLETE
        else:
            state = TrialState.FAIL
    return create_trial(
        state=state,
        value=score if state == TrialState.COMPLETE else None,
        params=run.trial_params,
        distributions={key: dist[key] for key in run.trial_params},
        intermediate_values=curve,
    )


def _pruner():
    import optuna

    return optuna.pruners.MedianPruner(
        n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNER_WARMUP_EVALUATIONS
    )


def search_study(search: HyperparameterSearch, trials: list[TrainingRun] | None = None):
    """An in-memory optuna study holding every trial of ``search`` (running ones as RUNNING, so
    the sampler's constant liar keeps parallel trials apart)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = list(search.trials.order_by("trial_number")) if trials is None else trials
    curves = _intermediate_values(search, trials)
    study = optuna.create_study(
        direction=metric_direction(search.metric),
        # A new seed per trial: the rebuilt sampler would otherwise repeat its first draw.
        sampler=optuna.samplers.TPESampler(
            seed=search.seed + len(trials), constant_liar=True, n_startup_trials=5
        ),
        pruner=_pruner(),
    )
    for run in trials:
        if run.trial_params and trial_fits_space(search.space, run.trial_params):
            study.add_trial(_frozen_trial(search, run, curves[run.pk]))
    return study


def search_next_params(search: HyperparameterSearch, trials: list[TrainingRun]) -> dict:
    study = search_study(search, trials)
    return _suggest(study.ask(), search.space)


def trial_should_prune(search: HyperparameterSearch, run: TrainingRun) -> bool:
    """The median pruner's decision for a running trial, from its validation curve so far."""
    from optuna.trial import TrialState

    if not trial_fits_space(search.space, run.trial_params):
        return False  # a default trial outside the space: not comparable, never pruned
    others = list(search.trials.exclude(pk=run.pk).order_by("trial_number"))
    study = search_study(search, others)
    curve = _intermediate_values(search, [run])[run.pk]
    if not curve:
        return False
    return bool(_pruner().prune(study, _frozen_trial(search, run, curve, state=TrialState.RUNNING)))


# --- starting -----------------------------------------------------------------------------------
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
    seed: int = 0,
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
        search.delete()
        raise
    search.refresh_from_db()
    return search


def _budget_left(search: HyperparameterSearch, started: int) -> bool:
    if search.max_trials is not None and started >= search.max_trials:
        return False
    if search.max_minutes is not None:
        elapsed = (timezone.now() - search.created_at).total_seconds()
        if elapsed >= search.max_minutes * 60:
            return False
    return True


def _default_trial_values(run: TrainingRun) -> dict:
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


def trial_fits_space(space: dict, values: dict) -> bool:
    """Whether optuna can take these values as a trial of ``space`` (a default trial may not)."""
    dist = _distributions(space)
    for key, value in values.items():
        distribution = dist.get(key)
        if distribution is None:
            return False
        choices = getattr(distribution, "choices", None)
        if choices is not None:
            if value not in choices:
                return False
        elif (
            not isinstance(value, int | float)
            or not (distribution.low <= value <= distribution.high)
            or (key == "epochs" and value != int(value))
        ):
            return False
    return True


def _trial_start(search: HyperparameterSearch, *, number: int, values: dict | None) -> TrainingRun:
    """Queue trial ``number`` with optuna's ``values``; None: the console's default settings
    (chosen from the data, full fine-tuning), recorded in the space's terms."""
    method, params = trial_params_to_run(values) if values else ("full", {})
    run = services.training_run_start(
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
        values = _default_trial_values(run)
    TrainingRun.objects.filter(pk=run.pk).update(
        search=search, trial_number=number, trial_params=values
    )
    # training_run_start published the task before this transaction commits: a worker that
    # took it then found no row and did nothing. Publish again once the row is visible (a
    # second copy is harmless: only one claim wins).
    transaction.on_commit(run.enqueue)
    run.search, run.trial_number, run.trial_params = search, number, values
    return run


def search_advance(*, search_id: int, raise_errors: bool = False) -> HyperparameterSearch | None:
    """Queue trials while the budget lasts (up to ``parallel_trials`` at once); once it is spent
    and no trial is left running, finish: pick the best trial and register its model.

    Safe to call any time and from any process: the search row is locked while deciding.
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
        failed_in_a_row = _failures_in_a_row(trials)
        if failed_in_a_row >= FAILURES_IN_A_ROW:
            last = [t for t in trials if t.status == JobStatus.FAILED][-1]
            search.message = (
                f"Stopped: the last {failed_in_a_row} trials failed. The last said: "
                f"{last.error_message}"
            )[:500]
            active = _cancel_active(trials)
            budget = False
        else:
            budget = _budget_left(search, len(trials))
        if budget:
            room = search.parallel_trials - active
            if search.max_trials is not None:
                room = min(room, search.max_trials - len(trials))
            for _ in range(max(0, room)):
                values = (
                    None  # trial 1: the default settings, so the search starts from them
                    if not trials and "full" in search.space["methods"]
                    else search_next_params(search, trials)
                )
                try:
                    trials.append(_trial_start(search, number=len(trials), values=values))
                except BrokerUnavailable:
                    if raise_errors:
                        raise
                    search.message = (
                        "The task queue cannot be reached; the next trial starts when a "
                        "running one finishes or the search is looked at again."
                    )
                    break
                except ValidationError:
                    if raise_errors:
                        raise
                    logger.exception("Search %s could not start a trial", search.pk)
                    search.message = "A trial could not start; see the worker log."
                    budget = False
                    break
                active += 1
            else:
                search.message = _progress_message(search, trials)
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
                shutil.rmtree(services.run_dir(trial.pk), ignore_errors=True)
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


def _failures_in_a_row(trials: list[TrainingRun]) -> int:
    count = 0
    for trial in reversed([t for t in trials if t.is_finished]):
        if trial.status != JobStatus.FAILED:
            break
        count += 1
    return count


def _cancel_active(trials: list[TrainingRun]) -> int:
    for trial in trials:
        if trial.is_active:
            trial.cancel()
    return 0


def _progress_message(search: HyperparameterSearch, trials: list[TrainingRun]) -> str:
    done = sum(1 for t in trials if t.is_finished)
    running = len(trials) - done
    budget = f" of {search.max_trials}" if search.max_trials else ""
    return f"{done}{budget} trials finished, {running} queued or running."


def search_best_trial(
    search: HyperparameterSearch, trials: list[TrainingRun] | None = None
) -> TrainingRun | None:
    """The succeeded trial with the best validation score (the earliest on a tie)."""
    trials = list(search.trials.order_by("trial_number")) if trials is None else trials
    scored = [
        (trial_score(search, t), t)
        for t in trials
        if t.status == JobStatus.SUCCEEDED and not t.trial_pruned
    ]
    scored = [(s, t) for s, t in scored if s is not None]
    if not scored:
        return None
    sign = 1 if metric_direction(search.metric) == "maximize" else -1
    return max(scored, key=lambda pair: (sign * pair[0], -pair[1].trial_number))[1]


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


# --- after a trial ---------------------------------------------------------------------------------
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


def search_trial_finished(*, run_id: int) -> None:
    """Called on the worker after a run's task returns: for a trial, keep its model folder only
    while it is the search's best so far, then ask for the next trials (or finish)."""
    run = TrainingRun.objects.filter(pk=run_id).select_related("search").first()
    if run is None or run.search is None or run.is_active:
        return
    folder = services.run_dir(run.pk)
    best = search_best_trial(run.search)
    if best is not None and best.pk == run.pk and (folder / "artifact").is_dir():
        if checkpoint_sync_enabled():  # the search may finish on another machine
            _artifact_upload(run.pk, folder / "artifact")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    search_advance(search_id=run.search_id)


def _artifact_prefix(run_id: int) -> str:
    return f"{_STORAGE_PREFIX}/run-{run_id}"


def _artifact_upload(run_id: int, folder: Path) -> None:
    prefix = _artifact_prefix(run_id)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = f"{prefix}/{path.relative_to(folder).as_posix()}"
        if default_storage.exists(name):
            default_storage.delete(name)
        with path.open("rb") as handle:
            default_storage.save(name, File(handle))


def _artifact_download(run_id: int, target: Path, prefix: str | None = None) -> bool:
    prefix = prefix or _artifact_prefix(run_id)
    try:
        folders, files = default_storage.listdir(prefix)
    except FileNotFoundError:
        return False
    target.mkdir(parents=True, exist_ok=True)
    for name in files:
        with default_storage.open(f"{prefix}/{name}") as source, (target / name).open("wb") as out:
            shutil.copyfileobj(source, out)
    for name in folders:
        _artifact_download(run_id, target / name, f"{prefix}/{name}")
    return bool(files or folders)


def _registration_claim(search_id: int, *, now: datetime) -> bool:
    """Take the registering step of a REGISTERING search nobody holds (an attempt failed) or
    whose holder went silent (its worker died). One conditional UPDATE: one taker wins."""
    stale = now - timedelta(seconds=REGISTRATION_STALE_SECONDS)
    return bool(
        HyperparameterSearch.objects.filter(
            pk=search_id,
            status=HyperparameterSearch.Status.REGISTERING,
            registration_attempts__lt=REGISTRATION_MAX_ATTEMPTS,
        )
        .filter(Q(registration_claimed_at__isnull=True) | Q(registration_claimed_at__lt=stale))
        .update(
            registration_claimed_at=now,
            registration_attempts=F("registration_attempts") + 1,
            updated_at=now,
        )
    )


def _registration_end(search: HyperparameterSearch, *, status: str, message: str) -> bool:
    """REGISTERING -> ``status`` (SUCCEEDED or FAILED), once: False when it had already left."""
    now = timezone.now()
    changes = {
        "status": status,
        "message": message[:500],
        "finished_at": now,
        "updated_at": now,
        "registration_claimed_at": None,
    }
    won = HyperparameterSearch.objects.filter(
        pk=search.pk, status=HyperparameterSearch.Status.REGISTERING
    ).update(**changes)
    if won:
        for key, value in changes.items():
            setattr(search, key, value)
    return bool(won)


def _registration_gave_up(search_id: int, *, now: datetime) -> None:
    """Fail a registering search whose last allowed attempt failed or went silent."""
    stale = now - timedelta(seconds=REGISTRATION_STALE_SECONDS)
    HyperparameterSearch.objects.filter(
        pk=search_id,
        status=HyperparameterSearch.Status.REGISTERING,
        registration_attempts__gte=REGISTRATION_MAX_ATTEMPTS,
    ).filter(Q(registration_claimed_at__isnull=True) | Q(registration_claimed_at__lt=stale)).update(
        status=HyperparameterSearch.Status.FAILED,
        registration_claimed_at=None,
        finished_at=now,
        updated_at=now,
        message=(
            f"Registering the best trial's model failed {REGISTRATION_MAX_ATTEMPTS} times, so "
            "nothing was registered; see the worker log, or run the best trial's settings as a "
            "plain run."
        ),
    )


def search_register(*, search_id: int, claimed: bool = False) -> HyperparameterSearch | None:
    """The last step of a search: register the best trial's model as the version, then mark
    the search SUCCEEDED (or FAILED when its model is gone). Safe to call any time.

    ``claimed``: the caller holds the step (it set REGISTERING itself). Otherwise the step is
    taken only when nobody holds it or its holder went silent for REGISTRATION_STALE_SECONDS;
    a failed attempt releases it for beat to retry, up to REGISTRATION_MAX_ATTEMPTS.
    """
    if not claimed:
        now = timezone.now()
        _registration_gave_up(search_id, now=now)
        if not _registration_claim(search_id, now=now):
            return HyperparameterSearch.objects.filter(pk=search_id).first()
    search = HyperparameterSearch.objects.select_related("best_trial").filter(pk=search_id).first()
    if search is None or search.status != HyperparameterSearch.Status.REGISTERING:
        return search
    try:
        _best_register(search)
    except Exception as exc:
        logger.exception("Registering the best trial of search %s failed", search.pk)
        message = (
            f"Registering the best trial's model failed (attempt {search.registration_attempts} "
            f"of {REGISTRATION_MAX_ATTEMPTS}): {exc}. It is tried again within a minute."
        )[:500]
        HyperparameterSearch.objects.filter(
            pk=search.pk, status=HyperparameterSearch.Status.REGISTERING
        ).update(registration_claimed_at=None, message=message, updated_at=timezone.now())
        search.refresh_from_db()
    return search


def _best_register(search: HyperparameterSearch) -> None:
    """Register the best trial's model, then end the search (slow: outside the search's lock).

    A version the best trial already has (a worker died between registering it and marking the
    search) is taken as it is."""
    from models_app.models import ModelVersion
    from models_app.services import model_version_register

    best = search.best_trial
    if best is None:  # the best trial's run was deleted meanwhile
        _registration_end(
            search,
            status=HyperparameterSearch.Status.FAILED,
            message="The best trial was deleted before its model was registered.",
        )
        return
    version = ModelVersion.objects.filter(training_run=best).first()
    is_new = version is None
    if version is None:
        local = services.run_dir(best.pk) / "artifact"
        try:
            with tempfile.TemporaryDirectory() as scratch:
                folder = local
                if not local.is_dir():
                    folder = Path(scratch) / "artifact"
                    if not (checkpoint_sync_enabled() and _artifact_download(best.pk, folder)):
                        raise FileNotFoundError(local)
                version = model_version_register(run=best, artifact_dir=folder)
        except FileNotFoundError:
            _registration_end(
                search,
                status=HyperparameterSearch.Status.FAILED,
                message=(
                    f"Best: trial {best.trial_number + 1}. Its model folder is not on this "
                    "worker and no copy is in storage, so nothing was registered; run its "
                    "settings as a plain run."
                ),
            )
            return
    if is_new:
        TrainingEvent.objects.create(
            run=best, kind="registered", message=f"Registered {version} as the search's best trial."
        )
    score = trial_score(search, best)
    _registration_end(
        search,
        status=HyperparameterSearch.Status.SUCCEEDED,
        message=(
            f"Best: trial {best.trial_number + 1}, validation {search.metric} "
            f"{score if score is not None else float('nan'):.4f}; registered {version}."
        ),
    )
    shutil.rmtree(services.run_dir(best.pk), ignore_errors=True)
    if checkpoint_sync_enabled():
        _storage_remove(_artifact_prefix(best.pk))


def _storage_remove(prefix: str) -> None:
    try:
        folders, files = default_storage.listdir(prefix)
    except FileNotFoundError:
        return
    for name in files:
        default_storage.delete(f"{prefix}/{name}")
    for name in folders:
        _storage_remove(f"{prefix}/{name}")


# --- cancelling -------------------------------------------------------------------------------------
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
