"""Hyperparameter search: trials are training runs on the gpu queue, chosen by optuna.

Modules: ``space`` (what is searched, checked), ``study`` (optuna rebuilt from the trial rows),
``pruning``, ``budget``, ``trials`` (the child runs), ``registration`` (the best trial's
version) and ``services`` (the entry points). Importers use this package's names.

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
optuna's study when its values lie inside the space. Trial 2 is the same trained twice as long
(``longer_default_values``; the defaults' short budget may underfit), when that fits the space;
from trial 3 TPE proposes (two startup trials, so a short search is not spent on random draws),
in a default space centred on the defaults (full fine-tuning, lr 5e-5..3e-4, 2..6 epochs). Each
search draws its own sampler seed unless given one, recorded on the row to replay it. Trials run with ``register=false``; when
the budget is spent and the last trial is done, the search becomes REGISTERING (under its lock)
and the best trial's model is registered as the version, outside the lock, by the worker that
finished it. Only then is the search SUCCEEDED, so "succeeded" always comes with its version. A
worker that dies while registering leaves a claim that goes stale; beat's ``searches_advance``
takes the step over (and retries a failed attempt), up to ``REGISTRATION_MAX_ATTEMPTS``.
"""

from training_app.search.budget import (
    FAILURES_IN_A_ROW,
    MAX_MINUTES,
    MAX_PARALLEL_TRIALS,
    MAX_TRIALS,
)
from training_app.search.pruning import search_trial_evaluated, trial_should_prune
from training_app.search.registration import (
    REGISTRATION_MAX_ATTEMPTS,
    REGISTRATION_STALE_SECONDS,
    search_register,
)
from training_app.search.services import (
    search_advance,
    search_cancel,
    search_start,
    search_trial_finished,
    searches_advance,
)
from training_app.search.space import (
    CHOICES,
    DEFAULT_SPACE,
    LOWER_IS_BETTER,
    RANGES,
    SEARCH_METHODS,
    SEARCH_METRICS,
    SEARCHED_PARAMS,
    metric_direction,
    space_clean,
    trial_fits_space,
    trial_params_to_run,
)
from training_app.search.study import (
    PRUNER_STARTUP_TRIALS,
    PRUNER_WARMUP_EVALUATIONS,
    search_best_trial,
    search_next_params,
    search_study,
    trial_score,
)

__all__ = [
    "CHOICES",
    "DEFAULT_SPACE",
    "FAILURES_IN_A_ROW",
    "LOWER_IS_BETTER",
    "MAX_MINUTES",
    "MAX_PARALLEL_TRIALS",
    "MAX_TRIALS",
    "PRUNER_STARTUP_TRIALS",
    "PRUNER_WARMUP_EVALUATIONS",
    "RANGES",
    "REGISTRATION_MAX_ATTEMPTS",
    "REGISTRATION_STALE_SECONDS",
    "SEARCHED_PARAMS",
    "SEARCH_METHODS",
    "SEARCH_METRICS",
    "metric_direction",
    "search_advance",
    "search_best_trial",
    "search_cancel",
    "search_next_params",
    "search_register",
    "search_start",
    "search_study",
    "search_trial_evaluated",
    "search_trial_finished",
    "searches_advance",
    "space_clean",
    "trial_fits_space",
    "trial_params_to_run",
    "trial_score",
    "trial_should_prune",
]
