"""Training runs and evaluations: validation at creation, execution on a gpu worker, registry.

The engine (``training_app.engine``) imports torch, so it is imported inside the functions
that need it, never at module import: the web process pays for it only when a run is created.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import shutil
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from datasets_app.models import Snapshot, SnapshotRecord
from lepton_web import vocabulary
from lepton_web.access import access_check
from lepton_web.jobs import BrokerUnavailable, JobStatus, job_heartbeat
from models_app.models import BaseModel
from training_app.checkpoints import (
    checkpoint_sync_enabled,
    checkpoint_upload,
    checkpoints_delete,
    checkpoints_fetch,
)
from training_app.models import Evaluation, TrainingEvent, TrainingMetric, TrainingRun

logger = logging.getLogger(__name__)

MULTI_LABEL_SEPARATOR = "|"
# Hyperparameters users may set; everything else in TrainingConfig is derived.
PARAM_NAMES = (
    "learning_rate",
    "epochs",
    "batch_size",
    "max_length",
    "warmup_ratio",
    "weight_decay",
    "dropout",
    "optimizer",
    "scheduler",
    "gradient_accumulation",
    "class_weighting",
    "early_stopping_metric",
    "early_stopping_patience",
    "eval_every_steps",
    "seed",
    "device",
    "precision",
    "lora_r",
    "lora_alpha",
    "head_learning_rate_multiplier",
    "layer_decay",
    "class_weight_power",
    "refit_on_all_data",
    "weight_averaging",
)


def run_dir(run_id: int) -> Path:
    return Path(settings.TRAINING_WORK_DIR) / f"run-{run_id}"


NO_TRAIN_SPLIT = (
    "This snapshot has no train split, so there is nothing to train on. Assign splits on the "
    "dataset and take a new snapshot."
)


# --- reading a snapshot ---------------------------------------------------------------------------
def snapshot_splits(snapshot: Snapshot) -> dict[str, tuple[list[str], list[str]]]:
    rows = (
        SnapshotRecord.objects.filter(snapshot=snapshot)
        .order_by("id")
        .values_list("split", "text", "label")
    )
    splits: dict[str, tuple[list[str], list[str]]] = {
        s: ([], []) for s in ("train", "validation", "test")
    }
    for split, text, label in rows.iterator(chunk_size=10000):
        if split in splits:
            splits[split][0].append(text)
            splits[split][1].append(label)
    return splits


def _labels_for_task(task: str, labels: list[str], split: str) -> tuple[list, list[str]]:
    """Convert label strings for ``task``; returns (labels, problems)."""
    problems: list[str] = []
    if task == "regression":
        values = []
        for index, label in enumerate(labels):
            try:
                value = float(label)
            except ValueError:
                value = math.nan
            # "inf" and "NaN" parse as floats, but the engine refuses them (after a worker
            # took the run): refuse them here, at the start, like any other non-number.
            if not math.isfinite(value):
                problems.append(
                    f"Regression needs numeric labels, but the {split} split has {label!r} "
                    f"(record {index + 1}). Choose a classification task or fix the labels."
                )
                break
            values.append(value)
        return values, problems
    if task == "multi_label":
        return [
            [p.strip() for p in label.split(MULTI_LABEL_SEPARATOR) if p.strip()] for label in labels
        ], problems
    return labels, problems


def _check_snapshot(snapshot: Snapshot, task: str) -> tuple[dict, list[str], dict[str, list[str]]]:
    """Return (splits, label_names, errors by field) for a snapshot and task."""
    errors: dict[str, list[str]] = {}
    splits = snapshot_splits(snapshot)
    train_texts, train_labels = splits["train"]
    if not train_texts:
        errors.setdefault("snapshot", []).append(NO_TRAIN_SPLIT)
        return splits, [], errors
    for name in ("validation", "test"):
        if not splits[name][0]:
            errors.setdefault("snapshot", []).append(
                f"This snapshot has no {name} split. Assign train/validation/test splits and take a new snapshot."
            )
    all_labels = [label for name in splits for label in splits[name][1]]
    if not any(label.strip() for label in all_labels):
        errors.setdefault("snapshot", []).append(
            "This snapshot has no labels. Label the records first."
        )
        return splits, [], errors
    missing = sum(1 for label in train_labels if not label.strip())
    if missing:
        errors.setdefault("snapshot", []).append(
            f"{missing:,} training records have no label. Label them or exclude them, then take a new snapshot."
        )
    label_names: list[str] = []
    for name in ("train", "validation", "test"):
        converted, problems = _labels_for_task(task, splits[name][1], name)
        if problems:
            errors.setdefault("task", []).extend(problems)
        if task == "single_label":
            label_names.extend(converted)
        elif task == "multi_label":
            label_names.extend(x for labels in converted for x in labels)
    if task in ("single_label", "multi_label") and "task" not in errors:
        label_names = sorted({x for x in label_names if x})
        if len(label_names) < 2:
            errors.setdefault("snapshot", []).append(
                f"Classification needs at least two classes; this snapshot has only "
                f"{label_names[0] if label_names else 'none'}."
            )
        elif task == "single_label":
            counts = {name: {} for name in ("train", "validation", "test")}
            for name in counts:
                for label in splits[name][1]:
                    counts[name][label] = counts[name].get(label, 0) + 1
            too_small = [label for label in label_names if counts["train"].get(label, 0) < 2]
            if too_small:
                shown = ", ".join(repr(x) for x in too_small[:5])
                more = f" (and {len(too_small) - 5:,} more)" if len(too_small) > 5 else ""
                errors.setdefault("snapshot", []).append(
                    f"Class {shown} has fewer than 2 training examples. Add examples, merge or "
                    "exclude the class, then take a new snapshot."
                    if len(too_small) == 1
                    else f"Classes {shown}{more} have fewer than 2 training examples each. Add "
                    "examples, merge or exclude those classes, then take a new snapshot."
                )
    return splits, label_names, errors


def _check_base_model(base_model: BaseModel) -> str | None:
    if base_model.source in (
        BaseModel.Source.BUNDLED,
        BaseModel.Source.LOCAL,
        BaseModel.Source.UPLOAD,
    ):
        folder = Path(base_model.location)
        if not (folder / "config.json").is_file():
            return (
                f"The base model folder {folder} has no config.json, so it is not a Hugging Face "
                "model folder. Check the path or register the model again."
            )
        return None
    try:
        from huggingface_hub import HfApi

        HfApi().model_info(base_model.location, timeout=5)
    except Exception as exc:  # offline, unknown id, gated: all mean "cannot load"
        return (
            f"The base model {base_model.location!r} could not be found on the Hugging Face Hub "
            f"from this server ({type(exc).__name__}). Without internet access, use a model "
            "folder on the server or the bundled all-MiniLM-L6-v2."
        )
    return None


def _check_start_version(version, *, task: str) -> str | None:
    """Why a run cannot fine-tune from ``version``'s weights, or None."""
    import json

    from django.core.files.storage import default_storage

    from models_app.models import ModelVersion
    from models_app.runtime.artifact import UNMERGED_ADAPTER_KEY

    if version.status != ModelVersion.Status.READY or version.is_archived:
        return f"{version} is not a ready, unarchived version, so a run cannot start from it."
    if version.task != task:
        return f"{version} was trained for {version.task}, not {task}; start from the base model."
    try:
        with default_storage.open(f"{version.artifact_uri}/config.json", "rb") as handle:
            config = json.load(handle)
    except (OSError, ValueError):
        return f"{version}'s files are missing or damaged (no readable config.json)."
    if config.get(UNMERGED_ADAPTER_KEY):
        return (
            f"{version} keeps its adapter unmerged ({version.method}), so its weights cannot be "
            "fine-tuned further; start from the base model."
        )
    return None


@contextlib.contextmanager
def _start_weights(run: TrainingRun):
    """The folder a run loads its starting weights from: its start version's (on local disk)
    or its base model's."""
    if run.start_version_id is None:
        yield run.base_model.location
        return
    from models_app.services import model_version_local_dir

    with model_version_local_dir(run.start_version) as folder:
        yield str(folder)


def training_profile(
    *,
    snapshot: Snapshot,
    task: str,
    base_model: BaseModel | None = None,
    splits: dict | None = None,
):
    """What the data-driven defaults look at: the snapshot's training split (size, classes,
    largest/smallest class, 95th-percentile length) and the base model's size."""
    from training_app.calibration import snapshot_length_counts
    from training_app.engine.config import CHARS_PER_TOKEN, DataProfile

    key = f"training:profile:v2:{snapshot.pk}:{task}"
    counted = cache.get(key) if splits is None else None
    if counted is None:  # snapshots never change; the form asks on every settings change
        splits = splits if splits is not None else snapshot_splits(snapshot)
        labels, _ = _labels_for_task(task, splits["train"][1], "train")
        profiled = DataProfile.from_labels(task, labels)
        counted = [
            profiled.n_examples,
            profiled.n_classes,
            profiled.class_ratio,
            profiled.smallest_class,
        ]
        cache.set(key, counted, 3600)
    buckets = sorted(snapshot_length_counts(snapshot).get("train", []))
    p95_tokens = None
    total = sum(count for _, count in buckets)
    if total:
        seen = 0
        for chars, count in buckets:
            seen += count
            if seen >= 0.95 * total:
                p95_tokens = chars / CHARS_PER_TOKEN
                break
    n_examples, n_classes, class_ratio, smallest_class = counted
    return DataProfile(
        n_examples=n_examples,
        n_classes=n_classes,
        class_ratio=class_ratio,
        smallest_class=smallest_class,
        p95_tokens=p95_tokens,
        parameter_count=base_model.parameter_count if base_model is not None else None,
        validation_examples=int((snapshot.split_counts or {}).get("validation") or 0),
    )


def training_defaults_choose(*, task: str, method: str, params: dict, profile):
    """The data-driven defaults (`engine.config.Defaults`: values, which the user set, and an
    explanation in a sentence) for ``profile``, the user's ``params`` overriding them."""
    from training_app.engine.config import choose_defaults

    return choose_defaults(
        task=task, method=method, profile=profile, user_params={**params, "register": None}
    )


def training_config_build(*, task: str, method: str, params: dict, profile=None):
    """A validated `TrainingConfig` from the user's ``params``; with a data ``profile`` (see
    `training_profile`) the settings they left empty get the data-driven defaults."""
    from training_app.engine.config import METRICS_BY_TASK, TrainingConfig

    unknown = sorted(set(params) - set(PARAM_NAMES))
    if unknown:
        raise ValidationError({"params": [f"Unknown hyperparameter {name!r}." for name in unknown]})
    values = {k: v for k, v in params.items() if v is not None}
    if profile is not None and task in METRICS_BY_TASK and method in TrainingRun.Method.values:
        chosen = training_defaults_choose(task=task, method=method, params=values, profile=profile)
        values = {k: v for k, v in chosen.values.items() if k in PARAM_NAMES}
    if task in METRICS_BY_TASK:
        # The engine's default metric (macro-F1) only fits classification; follow the task.
        values.setdefault("early_stopping_metric", METRICS_BY_TASK[task][0])
    config = TrainingConfig(task=task, method=method, **values)
    problems = config.validate()
    if problems:
        raise ValidationError({"params": problems})
    return config


def training_run_estimate(
    *,
    snapshot: Snapshot,
    base_model: BaseModel,
    task: str,
    method: str,
    params: dict,
    profile=None,
) -> dict:
    """Time (a range, calibrated on the workers once measured) and memory; see calibration.py.
    Also the data-driven defaults: ``defaults`` (the explanation) and ``defaults_user_set``."""
    from training_app.calibration import training_time_estimate

    if not (snapshot.split_counts or {}).get("train"):
        raise ValidationError({"snapshot": [NO_TRAIN_SPLIT]})
    if profile is None:
        profile = training_profile(snapshot=snapshot, task=task, base_model=base_model)
    config = training_config_build(task=task, method=method, params=params, profile=profile)
    estimate = training_time_estimate(snapshot=snapshot, base_model=base_model, config=config)
    if config.refit_on_all_data:
        # The refit trains again, on train + validation, for the first pass's best number of
        # epochs: at most the whole first pass again in epochs (its steps times the larger
        # set's share), typically a little less.
        ratio = refit_step_ratio(snapshot.split_counts)
        for key, share in (("seconds", 0.8), ("low_seconds", 0.5), ("high_seconds", 1.0)):
            if isinstance(estimate.get(key), int | float):
                estimate[key] = round(estimate[key] * (1 + share * ratio), 1)
        estimate["basis"] = (
            f"{estimate.get('basis', '')} Includes the refit on train + validation."
        ).strip()
    if task in TrainingRun.Task.values and method in TrainingRun.Method.values:
        defaults = training_defaults_choose(
            task=task,
            method=method,
            params={k: v for k, v in params.items() if v is not None},
            profile=profile,
        )
        estimate["defaults"] = defaults.explanation
        estimate["defaults_user_set"] = defaults.user_set
    return estimate


# --- creating, cancelling -----------------------------------------------------------------------------
def training_run_start(
    *,
    user,
    snapshot: Snapshot,
    base_model: BaseModel,
    task: str,
    method: str = "full",
    params: dict | None = None,
    name: str = "",
    start_version=None,
    enqueue: bool = True,
) -> TrainingRun:
    """Validate everything, then create a queued run; nothing is queued when anything is wrong.

    With ``start_version`` (a registered ModelVersion) the run fine-tunes from that version's
    weights instead of the base model's; ``base_model`` names the catalogue entry it came from.
    ``enqueue=False``: the caller creates the run inside its own transaction and publishes it
    (``run.enqueue()``) once that commits, as a search does with its trials; publishing here
    would reach a worker before the row exists."""
    access_check(user, "training_run", "create")
    params = dict(params or {})
    errors: dict[str, list[str]] = {}
    if task not in TrainingRun.Task.values:
        errors["task"] = [f"Task must be one of {', '.join(TrainingRun.Task.values)}."]
    if method not in TrainingRun.Method.values:
        errors["method"] = [f"Method must be one of {', '.join(TrainingRun.Method.values)}."]
    # Not a hyperparameter: whether a finished run registers a model version (default yes).
    register = params.pop("register", True)
    if not isinstance(register, bool):
        errors["params"] = ["register must be true or false."]
    config = None
    label_names: list[str] = []
    splits = None
    if "task" not in errors:
        splits, label_names, snapshot_errors = _check_snapshot(snapshot, task)
        for key, messages in snapshot_errors.items():
            errors.setdefault(key, []).extend(messages)
    profile = None
    if not errors:
        profile = training_profile(
            snapshot=snapshot, task=task, base_model=base_model, splits=splits
        )
    if not any(key in errors for key in ("task", "method", "params")):
        try:
            config = training_config_build(task=task, method=method, params=params, profile=profile)
        except ValidationError as exc:
            errors.update(exc.message_dict)
    if start_version is not None:
        problem = _check_start_version(start_version, task=task)
    else:
        problem = _check_base_model(base_model)
    if problem:
        errors.setdefault("base_model", []).append(problem)
    if errors:
        raise ValidationError(errors)
    estimate = training_run_estimate(
        snapshot=snapshot,
        base_model=base_model,
        task=task,
        method=method,
        params=params,
        profile=profile,
    )
    explanation = estimate.pop("defaults", "")
    estimate.pop("defaults_user_set", None)
    resolved = {k: v for k, v in dataclasses.asdict(config).items() if k in PARAM_NAMES}
    if register is False:
        resolved["register"] = False
    with transaction.atomic():
        run = TrainingRun.objects.create(
            name=(
                name
                or f"{snapshot.dataset.name} v{snapshot.number} · "
                f"{start_version or base_model.name} · {method}"
            )[:200],
            snapshot=snapshot,
            base_model=base_model,
            start_version=start_version,
            task=task,
            method=method,
            params=resolved,
            # The engine refines these when it starts (device, precision, the model's dropout).
            resolved_params={**resolved, "learning_rate": config.effective_learning_rate},
            estimate=estimate,
            label_names=label_names,
            created_by=user,
        )
        if explanation:
            # Shown on the run page at once, and again in the engine's "started" event.
            TrainingEvent.objects.create(run=run, kind="defaults_chosen", message=explanation)
    if not enqueue:
        return run
    try:
        run.enqueue()
    except BrokerUnavailable:
        run.delete()
        raise
    return run


def training_run_cancel(*, run: TrainingRun, user) -> TrainingRun:
    access_check(user, "training_run", "cancel")
    if not run.cancel():
        raise ValidationError("This run has already finished.")
    TrainingEvent.objects.create(
        run=run,
        kind="cancel_requested",
        message="Cancel requested; the run stops at the next step.",
    )
    return run


def training_run_resume(*, run: TrainingRun, user) -> TrainingRun:
    """Queue a failed or cancelled run again; it continues from its kept checkpoint, if any.

    The count of lost workers starts again, so a run that failed after losing its worker three
    times gets three more tries. Raises BrokerUnavailable (and leaves the run as it was) when
    the broker is down.
    """
    access_check(user, "training_run", "create")
    previous = (
        TrainingRun.objects.filter(pk=run.pk)
        .values("status", "message", "error_message", "attempts", "finished_at")
        .first()
    )
    if previous is None or previous["status"] not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise ValidationError("Only a failed or cancelled run can be resumed.")
    step = run.checkpoint_step
    message = (
        f"Resuming from the checkpoint at step {step:,}."
        if step
        else "No checkpoint was kept, so the run starts from the beginning."
    )
    if not run._transition(
        allowed=(JobStatus.FAILED, JobStatus.CANCELLED),
        status=JobStatus.QUEUED,
        message=message,
        error_message="",
        attempts=0,
        finished_at=None,
        progress=0,
    ):
        raise ValidationError("Only a failed or cancelled run can be resumed.")
    try:
        run.enqueue()
    except BrokerUnavailable:
        TrainingRun.objects.filter(pk=run.pk, status=JobStatus.QUEUED).update(**previous)
        run.refresh_from_db()
        raise
    TrainingEvent.objects.create(run=run, kind="resume_requested", message=message)
    return run


def training_checkpoints_expire(*, now=None) -> dict[str, int]:
    """Remove checkpoints of runs that failed or were cancelled longer ago than the retention.

    Runs on a gpu worker (hourly, from beat): it removes this machine's work folders of those
    runs (and of runs that succeeded or no longer exist) and the copies in storage.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(hours=settings.TRAINING_CHECKPOINT_RETENTION_HOURS)
    expired = TrainingRun.objects.filter(
        status__in=(JobStatus.FAILED, JobStatus.CANCELLED), finished_at__lt=cutoff
    )
    outcome = {"folders": 0, "stored": 0}
    work_dir = Path(settings.TRAINING_WORK_DIR)
    if work_dir.is_dir():
        folders = {}
        for folder in work_dir.glob("run-*"):
            with contextlib.suppress(ValueError):
                folders[int(folder.name.removeprefix("run-"))] = folder
        active = set(
            TrainingRun.objects.filter(pk__in=folders)
            .exclude(pk__in=expired.values("pk"))
            .exclude(status=JobStatus.SUCCEEDED)
            .values_list("pk", flat=True)
        )
        for run_id, folder in folders.items():
            if run_id not in active:
                shutil.rmtree(folder, ignore_errors=True)
                outcome["folders"] += 1
    kept = expired.exclude(checkpoint_step=None)
    if checkpoint_sync_enabled():
        for run_id in kept.values_list("pk", flat=True):
            checkpoints_delete(run_id=run_id)
            outcome["stored"] += 1
    for run in kept:
        TrainingEvent.objects.create(
            run=run,
            kind="checkpoint_removed",
            message=f"Its checkpoint was removed after "
            f"{settings.TRAINING_CHECKPOINT_RETENTION_HOURS} hours; Resume now starts over.",
        )
    kept.update(checkpoint_step=None)
    return outcome


# --- execution -----------------------------------------------------------------------------------------
def refit_step_ratio(split_counts: dict | None) -> float:
    """The refit's steps per first-pass step: it trains as many epochs on train + validation
    (the engine's `refit_steps`), so (train + validation) / train of the snapshot's rows."""
    counts = split_counts or {}
    train = int(counts.get("train") or 0)
    if train <= 0:
        return 1.0
    return (train + int(counts.get("validation") or 0)) / train


class RunCallbacks:
    """Bridges the engine's callbacks to the run row: metrics, events, progress, heartbeat, cancel."""

    def __init__(self, run: TrainingRun):
        self.run = run
        self._last_cancel_check = 0.0
        self._stop = False
        self._refit_ratio: float | None = None

    def _refit_step_ratio(self) -> float:
        if self._refit_ratio is None:
            self._refit_ratio = refit_step_ratio(self.run.snapshot.split_counts)
        return self._refit_ratio

    def write_metrics(self, *, step: int, epoch: float, metrics: dict, prefix: str) -> None:
        rows = [
            TrainingMetric(
                run=self.run, step=step, epoch=epoch, name=f"{prefix}{key}", value=float(value)
            )
            for key, value in metrics.items()
            if isinstance(value, int | float) and not isinstance(value, bool) and value == value
        ]
        TrainingMetric.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["run", "step", "name"],
            update_fields=["value", "epoch"],
        )

    def on_log(self, *, step: int, epoch: float, metrics: dict) -> None:
        metrics = dict(metrics)
        total = int(metrics.pop("total_steps", 0) or self.run.total_steps or 0)
        seconds_left = metrics.pop("seconds_left", None)  # a state of the run, not a curve
        self.write_metrics(step=step, epoch=epoch, metrics=metrics, prefix="train_")
        # With a refit to follow, the first pass is the first half of the bar, and the time left
        # counts the refit too: at most as many epochs again (more steps: the validation rows
        # join), at this pass's pace.
        refit = bool(self.run.params.get("refit_on_all_data"))
        share = 49 if refit else 99
        progress = int(share * step / total) if total else None
        if refit and isinstance(seconds_left, int | float) and 0 < step < total:
            seconds_left += seconds_left / (total - step) * total * self._refit_step_ratio()
        # Only this worker's attempt: a stale one (given up on by the sweeper) writes nothing.
        TrainingRun.objects.filter(pk=self.run.pk, **self.run.attempt_filter()).update(
            steps_done=step,
            total_steps=total,
            examples_per_second=metrics.get("examples_per_second"),
            seconds_left=seconds_left,
        )
        loss = metrics.get("loss")
        still = self.run.report(
            progress=progress,
            message=f"Step {step:,} of {total:,}"
            + (f", loss {loss:.4f}." if isinstance(loss, float) else "."),
        )
        if not still:
            self._stop = True

    def on_refit_progress(
        self, *, step: int, total_steps: int | None, seconds_left: float | None = None
    ) -> None:
        """The refit on train + validation: the second half of the bar; the run's steps and
        curves stay the first pass's."""
        total = int(total_steps or 0)
        TrainingRun.objects.filter(pk=self.run.pk, **self.run.attempt_filter()).update(
            seconds_left=seconds_left
        )
        still = self.run.report(
            progress=50 + int(49 * step / total) if total else None,
            message=f"Refit on train + validation: step {step:,} of {total:,}.",
        )
        if not still:
            self._stop = True

    def on_evaluate(self, *, step: int, epoch: float, metrics: dict) -> None:
        self.write_metrics(step=step, epoch=epoch, metrics=metrics, prefix="val_")
        shown = ", ".join(
            f"{vocabulary.metric(k)} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)
        )[:300]
        TrainingEvent.objects.create(
            run=self.run, kind="evaluated", message=f"Step {step}: {shown}"
        )
        if self.run.search_id:
            # A trial of a hyperparameter search: its pruner may stop it here (through cancel).
            from training_app.search import search_trial_evaluated

            try:
                search_trial_evaluated(run_id=self.run.pk)
            except Exception:  # a pruning decision must never break the run
                logger.exception("Pruning decision for run %s failed", self.run.pk)

    def on_checkpoint(self, *, step: int, path: str) -> None:
        TrainingRun.objects.filter(pk=self.run.pk).update(checkpoint_step=step)
        message = f"Checkpoint saved at step {step}."
        if checkpoint_sync_enabled():
            try:
                checkpoint_upload(run_id=self.run.pk, folder=Path(path))
                message = f"Checkpoint saved at step {step} and copied to storage."
            except Exception:  # the run goes on; only a resume elsewhere would miss it
                logger.exception("Copying checkpoint %s of run %s failed", step, self.run.pk)
                message = (
                    f"Checkpoint saved at step {step} on this machine only: copying it to "
                    "storage failed (see the worker log). Training goes on."
                )
        TrainingEvent.objects.create(run=self.run, kind="checkpoint", message=message)

    def on_event(self, *, kind: str, message: str) -> None:
        if kind == "started":
            chosen = (
                TrainingEvent.objects.filter(run=self.run, kind="defaults_chosen")
                .order_by("-pk")
                .values_list("message", flat=True)
                .first()
            )
            if chosen:
                message = f"{message} {chosen}"
        TrainingEvent.objects.create(run=self.run, kind=kind, message=message[:2000])

    def on_start(self, *, resolved: dict) -> None:
        """Record the values the engine trains with (what Compare and the run page show)."""
        values = {**(self.run.resolved_params or self.run.params), **resolved}
        self.run.resolved_params = values
        TrainingRun.objects.filter(pk=self.run.pk).update(resolved_params=values)

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self._stop and now - self._last_cancel_check > 1.0:
            self._last_cancel_check = now
            self._stop = not TrainingRun.objects.filter(
                pk=self.run.pk, status=JobStatus.RUNNING
            ).exists()
        return self._stop


def training_run_execute(*, run_id: int) -> TrainingRun | None:
    """Run (or resume) a claimed run on this worker; a second delivery does nothing."""
    from training_app import engine

    run = (
        TrainingRun.objects.select_related("snapshot", "base_model", "start_version")
        .filter(pk=run_id)
        .first()
    )
    if run is None or not run.claim():
        return None
    # The heartbeat thread runs from the claim to the end, so reading the snapshot, fetching
    # checkpoints, loading the model and uploading the artifact all count as alive.
    with job_heartbeat(run):
        return _training_run_execute_claimed(run, engine=engine)


def _training_run_execute_claimed(run: TrainingRun, *, engine) -> TrainingRun:
    if run.attempts > 1:
        # The engine then says "resumed" (from a checkpoint) or "started" (none was saved yet).
        TrainingEvent.objects.create(
            run=run,
            kind="worker_replaced",
            message=f"A new worker took over after the previous one was lost (attempt {run.attempts}).",
        )
    splits = snapshot_splits(run.snapshot)
    converted = {
        name: _labels_for_task(run.task, labels, name)[0] for name, (_, labels) in splits.items()
    }
    data = engine.TrainingData(
        train_texts=splits["train"][0],
        train_labels=converted["train"],
        validation_texts=splits["validation"][0],
        validation_labels=converted["validation"],
        test_texts=splits["test"][0],
        test_labels=converted["test"],
        label_names=run.label_names or None,
    )
    engine_params = {k: v for k, v in run.params.items() if k != "register"}
    config = engine.TrainingConfig(task=run.task, method=run.method, **engine_params)
    workdir = run_dir(run.pk)
    callbacks = RunCallbacks(run)
    if checkpoint_sync_enabled():
        # Taken over from a lost machine, or resumed by a user: the checkpoints may be in
        # storage only (this fetches none that this folder already has).
        fetched = checkpoints_fetch(run_id=run.pk, checkpoint_dir=workdir / "checkpoints")
        if fetched:
            TrainingEvent.objects.create(
                run=run,
                kind="checkpoint_fetched",
                message=f"Fetched {len(fetched)} checkpoint(s) from storage, the latest "
                f"at step {int(fetched[-1].rsplit('-', 1)[1]):,}.",
            )
    from training_app.calibration import training_run_calibrate, training_run_record_actual

    training_run_calibrate(run=run, config=config, train_texts=data.train_texts, engine=engine)
    try:
        with _start_weights(run) as start_path:
            result = engine.train(
                base_model_path=start_path,
                data=data,
                config=config,
                output_dir=str(workdir / "artifact"),
                checkpoint_dir=str(workdir / "checkpoints"),
                callbacks=callbacks,
                resume=True,
            )
    except engine.TrainingError as exc:
        run.fail(error=str(exc))
        TrainingEvent.objects.create(run=run, kind="failed", message=str(exc))
        return run
    except Exception:
        logger.exception("Training run %s crashed", run.pk)
        run.fail(
            error="The run stopped because of an internal error, which was logged. Its last checkpoint is kept."
        )
        raise

    # Fenced by the attempt like succeed() below: a stale attempt's results never land on the
    # row of the attempt that replaced it.
    TrainingRun.objects.filter(pk=run.pk, **run.attempt_filter()).update(
        best_step=result.best_step,
        best_metrics=result.best_metrics,
        test_metrics=result.test_metrics,
        test_report=result.test_report,
        worst_examples=result.worst_examples,
        batch_size_used=result.final_batch_size,
        examples_per_second=result.examples_per_second,
        stopped_early=result.stopped_early,
        steps_done=result.steps_done,
        total_steps=result.total_steps or run.total_steps,
        seconds_left=0,
    )
    if result.test_metrics:
        callbacks.write_metrics(
            step=result.steps_done, epoch=0, metrics=result.test_metrics, prefix="test_"
        )
    if result.refit:
        refit = result.refit
        shown = ", ".join(
            f"{vocabulary.metric(k)} {v:.4f}"
            for k, v in refit["validation_metrics"].items()
            if isinstance(v, float)
        )
        values = {
            **(run.resolved_params or run.params),
            "refit_steps": refit["steps"],
            "refit_examples": refit["examples"],
        }
        TrainingRun.objects.filter(pk=run.pk).update(resolved_params=values)
        run.resolved_params = values
        TrainingEvent.objects.create(
            run=run,
            kind="refit",
            message=(
                f"Refit on train + validation ({refit['examples']:,} examples) for "
                f"{refit['steps']:,} steps: {refit['first_pass_epochs']:g} epochs, as at the first "
                f"pass's best step (validation: {shown}). The registered model is the refit one; its test scores are above."
            )[:2000],
        )
    if result.status != "cancelled":
        training_run_record_actual(run=run, result=result)
    if result.status == "cancelled":
        TrainingEvent.objects.create(
            run=run,
            kind="cancelled",
            message="Stopped at a step boundary; metrics so far are kept.",
        )
        return run
    if run.params.get("register") is False:
        run.succeed(
            message=f"Finished in {result.elapsed_seconds:.0f} s; not registered (register=false)."
            + (" Stopped early." if result.stopped_early else "")
        )
        TrainingEvent.objects.create(
            run=run, kind="succeeded", message="Finished without registering a model version."
        )
        _run_files_remove(run, workdir / "checkpoints")
        return run
    from models_app.services import model_version_register

    version = model_version_register(run=run, artifact_dir=Path(result.artifact_dir))
    run.succeed(
        message=f"Finished in {result.elapsed_seconds:.0f} s; registered {version}."
        + (" Stopped early." if result.stopped_early else "")
    )
    TrainingEvent.objects.create(run=run, kind="succeeded", message=f"Registered {version}.")
    # The registry holds the artifact now: no second copy, checkpoints or caches stay behind.
    _run_files_remove(run, workdir)
    return run


def _run_files_remove(run: TrainingRun, folder: Path) -> None:
    """After a success: remove ``folder`` of the work folder and the checkpoints in storage;
    the run keeps no checkpoint to resume from."""
    shutil.rmtree(folder, ignore_errors=True)
    if checkpoint_sync_enabled():
        checkpoints_delete(run_id=run.pk)
    TrainingRun.objects.filter(pk=run.pk).update(checkpoint_step=None)


# --- evaluations ----------------------------------------------------------------------------------------
def evaluation_start(*, user, model_version, snapshot: Snapshot, split: str = "test") -> Evaluation:
    from lepton_web.jobs import job_create_and_enqueue

    access_check(user, "training_run", "create")
    if split not in ("train", "validation", "test"):
        raise ValidationError({"split": "Split must be train, validation or test."})
    if not SnapshotRecord.objects.filter(snapshot=snapshot, split=split).exists():
        raise ValidationError({"split": f"Snapshot v{snapshot.number} has no {split} records."})
    if model_version.status != "ready":
        raise ValidationError({"model_version": "This model version is not ready."})
    return job_create_and_enqueue(
        model=Evaluation,
        model_version=model_version,
        snapshot=snapshot,
        split=split,
        created_by=user,
    )


def evaluation_execute(*, evaluation_id: int) -> Evaluation | None:
    from training_app import engine

    evaluation = (
        Evaluation.objects.select_related("model_version", "snapshot")
        .filter(pk=evaluation_id)
        .first()
    )
    if evaluation is None or not evaluation.claim():
        return None
    with job_heartbeat(evaluation):  # loading and running the model can hold the CPU a while
        return _evaluation_execute_claimed(evaluation, engine=engine)


def _evaluation_execute_claimed(evaluation: Evaluation, *, engine) -> Evaluation:
    from models_app.services import model_version_local_dir

    version = evaluation.model_version
    texts, labels = snapshot_splits(evaluation.snapshot)[evaluation.split]
    converted, problems = _labels_for_task(version.task, labels, evaluation.split)
    if problems:
        evaluation.fail(error=problems[0])
        return evaluation
    evaluation.report(progress=10, message=f"Evaluating on {len(texts):,} records.")
    try:
        with model_version_local_dir(version) as folder:
            report = engine.evaluate_artifact(
                str(folder),
                texts,
                converted,
                task=version.task,
                label_names=version.label_names or None,
            )
    except engine.TrainingError as exc:
        evaluation.fail(error=str(exc))
        return evaluation
    Evaluation.objects.filter(pk=evaluation.pk).update(
        metrics={k: v for k, v in report.items() if isinstance(v, int | float)},
        evaluation_report=report,
    )
    evaluation.succeed(message=f"Evaluated {len(texts):,} records at {timezone.now():%H:%M}.")
    return evaluation
