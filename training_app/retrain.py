"""Retrain on new labels: one button snapshots a dataset, fine-tunes from the current version on
the gpu queue, registers the new version and pre-labels the unlabeled records with it, so an
uncertainty-ordered queue reorders.

A ``RetrainLoop`` row is a small state machine: queued -> training -> predicting -> succeeded
(or failed). ``retrain_loop_advance`` moves it as far as the jobs it is made of allow, and every
step is idempotent (the snapshot, the run and the batch prediction are each made once and
remembered on the row), so it can be called any number of times from anywhere:

- right after the user presses the button (a task on the default queue);
- when the training run's task ends (``training_run_execute_task``);
- after the pre-label batch it runs in the same task ends;
- and every minute from beat (``retrain_loops_sweep``), which picks up a loop whose message or
  worker was lost: the jobs themselves are requeued by the job sweeper, as always.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from lepton_web.access import access_check
from lepton_web.jobs import FINISHED_STATUSES, BrokerUnavailable, JobStatus
from training_app.models import RetrainLoop

logger = logging.getLogger(__name__)

STALE_QUEUED_SECONDS = 60  # a loop queued this long lost its message: the sweep advances it


# --- reads ----------------------------------------------------------------------------------------
def retrain_start_versions(dataset) -> QuerySet:
    """Versions a loop on ``dataset`` can fine-tune from: ready, unarchived classifiers trained
    on one of its snapshots, newest first (the first is the "current" version)."""
    from models_app.models import ModelVersion

    return (
        ModelVersion.objects.filter(
            snapshot__dataset=dataset,
            status=ModelVersion.Status.READY,
            is_archived=False,
            task__in=["single_label", "multi_label"],
        )
        .select_related("registered_model")
        .order_by("-created_at", "-id")
    )


def retrain_loop_latest(dataset) -> RetrainLoop | None:
    return (
        RetrainLoop.objects.filter(dataset=dataset)
        .select_related(
            "from_version__registered_model",
            "new_version__registered_model",
            "training_run",
            "batch_prediction",
            "snapshot",
        )
        .first()
    )


def retrain_loop_progress(loop: RetrainLoop) -> dict:
    """Where a loop is, for the page: an overall percentage and a sentence."""
    run, batch = loop.training_run, loop.batch_prediction
    if loop.step == RetrainLoop.Step.QUEUED:
        return {"percent": 2, "line": loop.message or "Waiting for a worker to take a snapshot."}
    if loop.step == RetrainLoop.Step.TRAINING and run is not None:
        return {
            "percent": 5 + int(0.75 * (run.progress or 0)),
            "line": f"Fine-tuning (run #{run.pk}): {run.message or run.get_status_display()}",
        }
    if loop.step == RetrainLoop.Step.PREDICTING:
        done = batch.progress if batch is not None else 0
        line = batch.message if batch is not None else "Starting the pre-labels."
        return {"percent": 80 + int(0.2 * done), "line": f"Pre-labeling: {line}"}
    if loop.step == RetrainLoop.Step.SUCCEEDED:
        return {"percent": 100, "line": loop.message}
    return {"percent": 100, "line": loop.error_message or loop.message}


def retrain_loops_recent(*, hours: int = 1) -> list[dict]:
    """Loops running now and those finished in the last ``hours``, with their progress."""
    from django.db.models import Q

    since = timezone.now() - timedelta(hours=hours)
    loops = RetrainLoop.objects.filter(
        Q(step__in=RetrainLoop.ACTIVE_STEPS) | Q(finished_at__gte=since)
    ).select_related(
        "dataset", "from_version__registered_model", "training_run", "batch_prediction"
    )[:50]
    return [{"loop": loop, "progress": retrain_loop_progress(loop)} for loop in loops]


# --- start ----------------------------------------------------------------------------------------
def retrain_loop_start(*, user, dataset, version=None) -> RetrainLoop:
    """Queue a loop on ``dataset`` from ``version`` (default: the newest one trained on it)."""
    access_check(user, "training_run", "create")
    if not dataset.is_ready:
        raise ValidationError(f"{dataset} is not ready yet; retrain once its import finished.")
    candidates = retrain_start_versions(dataset)
    if version is None:
        version = candidates.first()
        if version is None:
            raise ValidationError(
                f"No ready model was trained on {dataset} yet: train one from Training first, "
                "then retrain it on new labels here."
            )
    elif not candidates.filter(pk=version.pk).exists():
        raise ValidationError(
            {"version": f"{version} is not a ready classifier trained on {dataset}."}
        )
    try:
        with transaction.atomic():
            loop = RetrainLoop.objects.create(
                dataset=dataset,
                from_version=version,
                created_by=user,
                message="Queued: a snapshot of the labels comes first.",
            )
    except IntegrityError:
        raise ValidationError(
            f"{dataset} is already being retrained; wait for that loop to finish."
        ) from None
    try:
        _publish_advance(loop.pk)
    except BrokerUnavailable:
        loop.delete()
        raise
    return loop


def _publish_advance(loop_id: int, *, countdown: float | None = None) -> None:
    """Ask a default-queue worker to advance the loop (the pre-labels run there too)."""
    from kombu.exceptions import OperationalError

    from lepton_web.celery import queue_name
    from training_app.tasks import retrain_loop_advance_task

    try:
        retrain_loop_advance_task.apply_async(
            args=[loop_id], queue=queue_name("default"), retry=False, countdown=countdown
        )
    except (OperationalError, OSError) as error:
        raise BrokerUnavailable() from error


# --- the state machine ----------------------------------------------------------------------------
def retrain_loop_advance(*, loop_id: int) -> RetrainLoop | None:
    """Move the loop as far as its jobs allow; safe to call at any time, any number of times."""
    loop = RetrainLoop.objects.filter(pk=loop_id).first()
    if loop is None or not loop.is_active:
        return loop
    try:
        if loop.step == RetrainLoop.Step.QUEUED:
            loop = _start_training(loop)
        if loop.step == RetrainLoop.Step.TRAINING:
            loop = _after_training(loop)
        if loop.step == RetrainLoop.Step.PREDICTING:
            loop = _prelabel(loop)
    except ValidationError as error:
        _finish(loop, failed=True, text=" ".join(error.messages))
    except BrokerUnavailable:
        logger.warning("Retrain loop %s: broker down; the next sweep retries.", loop.pk)
    except Exception:
        logger.exception("Retrain loop %s failed", loop.pk)
        _finish(
            loop,
            failed=True,
            text="The loop stopped on an unexpected error; it is logged for the administrators.",
        )
        raise
    loop.refresh_from_db()
    return loop


def _locked(loop: RetrainLoop) -> RetrainLoop:
    return RetrainLoop.objects.select_for_update().get(pk=loop.pk)


def _set(loop: RetrainLoop, **changes) -> RetrainLoop:
    RetrainLoop.objects.filter(pk=loop.pk).update(updated_at=timezone.now(), **changes)
    loop.refresh_from_db()
    return loop


def _finish(loop: RetrainLoop, *, failed: bool, text: str) -> None:
    step = RetrainLoop.Step.FAILED if failed else RetrainLoop.Step.SUCCEEDED
    changes = {"step": step, "finished_at": timezone.now(), "message": text[:500]}
    if failed:
        changes["error_message"] = text
    RetrainLoop.objects.filter(pk=loop.pk, step__in=RetrainLoop.ACTIVE_STEPS).update(
        updated_at=timezone.now(), **changes
    )
    loop.refresh_from_db()


def _start_training(loop: RetrainLoop) -> RetrainLoop:
    """Snapshot the labels (once), then start the fine-tuning run (once) on the gpu queue."""
    from datasets_app.services.snapshots import snapshot_create
    from training_app.services import training_run_cancel, training_run_start

    with transaction.atomic():
        locked = _locked(loop)
        if locked.step != RetrainLoop.Step.QUEUED:
            return locked
        if locked.snapshot_id is None:
            snapshot = snapshot_create(
                dataset=locked.dataset,
                user=locked.created_by,
                note=f"Retrain on new labels (loop {locked.pk}): labeled records",
                labeled_only=True,
            )
            locked.snapshot = snapshot
            locked.message = f"Took snapshot v{snapshot.number}; starting the fine-tuning run."
            locked.save(update_fields=["snapshot", "message", "updated_at"])
    if locked.training_run_id is not None:
        return _set(locked, step=RetrainLoop.Step.TRAINING)
    version = locked.from_version
    if version is None:
        raise ValidationError("The version this loop started from was deleted.")
    base_model = version.base_model or _default_base_model()
    # Committed and published before the loop points at it (a run enqueued inside the loop's
    # transaction could reach a worker before its row exists).
    run = training_run_start(
        user=locked.created_by,
        snapshot=locked.snapshot,
        base_model=base_model,
        task=version.task,
        method="full",
        params=_params_from(version),
        name=f"{locked.dataset.name}: retrain {version} on new labels"[:200],
        start_version=version,
    )
    with transaction.atomic():
        locked = _locked(loop)
        if locked.training_run_id is None and locked.step == RetrainLoop.Step.QUEUED:
            locked.training_run = run
            locked.step = RetrainLoop.Step.TRAINING
            locked.message = f"Fine-tuning run #{run.pk} queued on the gpu queue."
            locked.save(update_fields=["training_run", "step", "message", "updated_at"])
            return locked
    # Another advance got there first: this copy of the run is not needed.
    training_run_cancel(run=run, user=locked.created_by)
    return locked


def _default_base_model():
    from models_app.models import BaseModel

    base_model = BaseModel.objects.filter(is_default=True).first() or BaseModel.objects.first()
    if base_model is None:
        raise ValidationError("The base-model catalogue is empty; register a base model first.")
    return base_model


def _params_from(version) -> dict:
    """The version's own settings where the new run accepts them (max length, epochs...)."""
    from training_app.services import PARAM_NAMES

    kept = ("epochs", "learning_rate", "batch_size", "max_length", "seed")
    return {
        key: value
        for key, value in (version.hyperparameters or {}).items()
        if key in kept and key in PARAM_NAMES and value is not None
    }


def _after_training(loop: RetrainLoop) -> RetrainLoop:
    from models_app.models import ModelVersion

    run = loop.training_run
    if run is None:
        raise ValidationError("The fine-tuning run of this loop was deleted.")
    if run.status not in FINISHED_STATUSES:
        return loop
    if run.status != JobStatus.SUCCEEDED:
        reason = run.error_message or f"the run was {run.get_status_display().lower()}"
        raise ValidationError(f"The fine-tuning run #{run.pk} did not finish: {reason}")
    version = ModelVersion.objects.filter(training_run=run).first()
    if version is None:
        raise ValidationError(f"Run #{run.pk} finished without registering a version.")
    return _set(
        loop,
        new_version=version,
        step=RetrainLoop.Step.PREDICTING,
        message=f"Registered {version}; pre-labeling the unlabeled records with it.",
    )


def _prelabel(loop: RetrainLoop) -> RetrainLoop:
    """Predict the unlabeled records with the new version (a batch prediction job, run here,
    in this default-queue task), then finish."""
    from models_app.batch_prediction import (
        batch_prediction_execute,
        batch_prediction_start,
        unlabeled_records,
    )
    from models_app.models import BatchPrediction

    if loop.batch_prediction_id is None:
        with transaction.atomic():
            locked = _locked(loop)
            if locked.step != RetrainLoop.Step.PREDICTING:
                return locked
            if locked.batch_prediction_id is None:
                if not unlabeled_records(locked.dataset).exists():
                    _finish(
                        locked,
                        failed=False,
                        text=f"Registered {locked.new_version}; no record is left without a "
                        "label, so there was nothing to pre-label.",
                    )
                    return locked
                # Queued, not published: this task runs it below. If this worker is lost,
                # the job sweeper publishes the still-queued job for another worker.
                locked.batch_prediction = batch_prediction_start(
                    user=locked.created_by,
                    version=locked.new_version,
                    dataset=locked.dataset,
                    enqueue=False,
                )
                locked.save(update_fields=["batch_prediction", "updated_at"])
        loop = locked
    batch = BatchPrediction.objects.get(pk=loop.batch_prediction_id)
    if batch.status == JobStatus.QUEUED:
        batch_prediction_execute(batch_id=batch.pk)
        batch.refresh_from_db()
    if batch.status not in FINISHED_STATUSES:
        return loop  # another worker runs it; its end is picked up by the sweep
    if batch.status != JobStatus.SUCCEEDED:
        reason = batch.error_message or f"it was {batch.get_status_display().lower()}"
        raise ValidationError(f"The pre-labels did not finish: {reason}")
    _finish(
        loop,
        failed=False,
        text=f"Registered {loop.new_version} and pre-labeled {batch.suggestions_stored or 0:,} "
        "unlabeled records with it.",
    )
    return loop


# --- who advances it ------------------------------------------------------------------------------
def retrain_loops_after_run(*, run_id: int) -> int:
    """A training run's task ended: advance the loops waiting on it (on the default queue)."""
    loops = list(
        RetrainLoop.objects.filter(
            training_run_id=run_id, step=RetrainLoop.Step.TRAINING
        ).values_list("pk", flat=True)
    )
    for loop_id in loops:
        try:
            _publish_advance(loop_id)
        except BrokerUnavailable:
            logger.warning("Retrain loop %s: broker down; the sweep advances it.", loop_id)
    return len(loops)


def retrain_loops_sweep(*, now=None) -> int:
    """Advance active loops whose message or worker was lost: queued for a minute, or waiting
    on a job that has finished. Returns how many were published."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=STALE_QUEUED_SECONDS)
    published = 0
    for loop in RetrainLoop.objects.filter(step__in=RetrainLoop.ACTIVE_STEPS).select_related(
        "training_run", "batch_prediction"
    ):
        waiting_on = loop.training_run if loop.step == RetrainLoop.Step.TRAINING else None
        if loop.step == RetrainLoop.Step.PREDICTING:
            waiting_on = loop.batch_prediction
        due = (
            loop.updated_at < stale
            if waiting_on is None
            else waiting_on.status in FINISHED_STATUSES
        )
        if due:
            try:
                _publish_advance(loop.pk)
            except BrokerUnavailable:
                break
            published += 1
    return published
