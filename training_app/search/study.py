"""The optuna study, rebuilt in memory from the trial rows for each decision (no optuna storage):
each trial's score and validation curve, the sampler's next suggestion, the best trial."""

from __future__ import annotations

from lepton_web.jobs import JobStatus
from training_app.models import HyperparameterSearch, TrainingMetric, TrainingRun
from training_app.search.space import (
    distributions,
    metric_direction,
    suggest,
    trial_fits_space,
)

# TPE models the finished trials from the third trial on: trial 1 is the defaults and trial 2
# the defaults trained twice as long (``longer_default_values``), so a short search does not
# spend its budget on random draws before the sampler learns anything.
SAMPLER_STARTUP_TRIALS = 2
PRUNER_STARTUP_TRIALS = 2  # finished trials needed before any trial is pruned
PRUNER_WARMUP_EVALUATIONS = 1  # the first evaluation of a trial is never pruned


def trial_score(search: HyperparameterSearch, run: TrainingRun) -> float | None:
    """The trial's best validation value of the search's metric; None until it has one."""
    value = (run.best_metrics or {}).get(search.metric)
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
        return float(value)
    return None


def intermediate_values(search: HyperparameterSearch, runs: list[TrainingRun]) -> dict:
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


def frozen_trial(search, run, curve: dict, *, state=None):
    from optuna.trial import TrialState, create_trial

    dist = distributions(search.space)
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


def median_pruner():
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
    curves = intermediate_values(search, trials)
    study = optuna.create_study(
        direction=metric_direction(search.metric),
        # A new seed per trial: the rebuilt sampler would otherwise repeat its first draw.
        sampler=optuna.samplers.TPESampler(
            seed=search.seed + len(trials),
            constant_liar=True,
            n_startup_trials=SAMPLER_STARTUP_TRIALS,
        ),
        pruner=median_pruner(),
    )
    for run in trials:
        if run.trial_params and trial_fits_space(search.space, run.trial_params):
            study.add_trial(frozen_trial(search, run, curves[run.pk]))
    return study


def longer_default_values(search: HyperparameterSearch, trials: list[TrainingRun]) -> dict | None:
    """Trial 2: trial 1's default settings with twice the epochs (clipped to the space), since
    the defaults' short budget may underfit; None when trial 1 was not the defaults (full
    fine-tuning), the doubled epochs add nothing, or the values fall outside the space."""
    if len(trials) != 1 or trials[0].trial_number != 0:
        return None
    first = dict(trials[0].trial_params or {})
    if first.get("method") != "full" or not isinstance(first.get("epochs"), int):
        return None
    epochs = min(search.space["epochs"][1], 2 * first["epochs"])
    values = {**first, "epochs": epochs}
    if epochs <= first["epochs"] or not trial_fits_space(search.space, values):
        return None
    return values


def search_next_params(search: HyperparameterSearch, trials: list[TrainingRun]) -> dict:
    longer = longer_default_values(search, trials)
    if longer is not None:
        return longer
    study = search_study(search, trials)
    return suggest(study.ask(), search.space)


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
