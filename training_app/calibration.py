"""Training-time estimates calibrated on the workers (issue 9, item 11).

The first run of a base model with a method on a kind of device measures it (a few training
steps at two sequence lengths, ``engine.calibrate``) and keeps the result in
``TrainingCalibration``; estimates for that model, method and device then come from seconds
measured there instead of an assumed device speed. Every run records the estimate made when
it started and the time it took (``run.estimate["at_start"]`` and ``["actual_seconds"]``), and
runs that went start to finish also add their ratio of actual to estimated time to the
calibration, which corrects later estimates and sets the width of their range.
"""

from __future__ import annotations

import logging
import time

from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.db.models.functions import Length

from datasets_app.models import Snapshot, SnapshotRecord
from models_app.models import BaseModel
from training_app.engine.config import WSD_MAX_EXTENSION
from training_app.estimates import (
    DEFAULT_CHARS_PER_TOKEN,
    MAX_RUN_RATIOS,
    describe_range,
    describe_seconds,
    estimate_seconds,
    token_length_counts,
    uncalibrated_range,
)
from training_app.models import TrainingCalibration, TrainingEvent, TrainingRun

logger = logging.getLogger(__name__)

LENGTH_BUCKET_CHARS = 8


def calibration_for(
    *, base_model: BaseModel, method: str, device: str = "auto"
) -> TrainingCalibration | None:
    """The calibration an estimate uses: for ``device`` "auto", the one measured last."""
    rows = TrainingCalibration.objects.filter(base_model=base_model, method=method)
    if device in ("cpu", "cuda"):
        rows = rows.filter(device=device)
    return rows.order_by("-updated_at", "-id").first()


def snapshot_length_counts(snapshot: Snapshot) -> dict[str, list[tuple[int, int]]]:
    """(characters, count) pairs of each split's texts, in buckets of 8 characters: one GROUP
    BY in the database, kept in the cache (snapshots never change)."""
    key = f"training:snapshot-lengths:{snapshot.pk}"
    counts = cache.get(key)
    if counts is None:
        rows = (
            SnapshotRecord.objects.filter(snapshot=snapshot)
            .annotate(bucket=Length("text") / LENGTH_BUCKET_CHARS)
            .values("split", "bucket")
            .annotate(count=Count("pk"))
            .order_by()
        )
        counts = {}
        for row in rows:
            chars = int(row["bucket"] or 0) * LENGTH_BUCKET_CHARS + LENGTH_BUCKET_CHARS // 2
            counts.setdefault(row["split"], []).append((chars, int(row["count"])))
        cache.set(key, counts, 3600)
    return counts


def training_time_estimate(
    *, snapshot: Snapshot, base_model: BaseModel, config, device: str | None = None
) -> dict:
    """Time and memory a run of ``config`` on ``snapshot`` should take: ``seconds`` and a range
    (``low_seconds``, ``high_seconds``), ``memory_bytes``, whether the time is ``calibrated``
    (measured on a worker) and, in a sentence, its ``basis``."""
    from training_app.engine.probe import estimate as arithmetic_estimate

    lengths = snapshot_length_counts(snapshot)
    calibration = calibration_for(
        base_model=base_model, method=config.method, device=device or config.device
    )
    chars_per_token = (
        calibration.chars_per_token if calibration and calibration.chars_per_token else None
    ) or DEFAULT_CHARS_PER_TOKEN
    train = token_length_counts(
        lengths.get("train", []), chars_per_token=chars_per_token, max_length=config.max_length
    )
    n_train = sum(count for _, count in train)
    mean_tokens = sum(tokens * count for tokens, count in train) / max(1, n_train)
    rough = arithmetic_estimate(
        config, n_train, mean_tokens, base_model.parameter_count or 22_700_000
    )
    if calibration is None:
        low, high = uncalibrated_range(rough["seconds"])
        return {
            **rough,
            "low_seconds": low,
            "high_seconds": high,
            "calibrated": False,
            "basis": (
                "Not measured yet: a count of the model's arithmetic against an assumed device "
                "speed, which can be off by 3 times either way. The first run of this model "
                "and method measures its speed on the worker, and later estimates use that."
            ),
        }
    n_validation = sum(count for _, count in lengths.get("validation", []))
    n_test = sum(count for _, count in lengths.get("test", []))
    evaluated = token_length_counts(
        [*lengths.get("validation", []), *lengths.get("test", [])],
        chars_per_token=chars_per_token,
        max_length=config.max_length,
    )
    timed = estimate_seconds(
        calibration=calibration.measurements,
        train_lengths=train,
        evaluation_lengths=evaluated,
        n_validation=n_validation,
        n_test=n_test,
        batch_size=config.batch_size,
        gradient_accumulation=config.gradient_accumulation,
        epochs=config.epochs,
        eval_every_steps=config.eval_every_steps,
        run_ratios=calibration.run_ratios,
    )
    stopping = " Stopping early makes a run shorter."
    if config.scheduler == "wsd":
        # Warmup-stable-decay trains on while validation still improves, up to its cap.
        timed["high_seconds"] = round(timed["high_seconds"] * WSD_MAX_EXTENSION, 1)
        stopping = (
            " The run decays sooner when validation stops improving, or goes on up to "
            f"{round((WSD_MAX_EXTENSION - 1) * 100)}% longer while it still improves."
        )
    runs = timed["runs_compared"]
    basis = f"Measured on a worker ({calibration.device_name or calibration.device})"
    basis += (
        f", corrected by the {runs} run{'' if runs == 1 else 's'} since."
        if runs
        else "; no run has finished since to check it against."
    )
    return {
        **timed,
        "memory_bytes": rough["memory_bytes"],
        "calibrated": True,
        "calibration_id": calibration.pk,
        "device": calibration.device,
        "basis": basis + stopping,
    }


def training_run_calibrate(*, run: TrainingRun, config, train_texts: list[str], engine) -> None:
    """On the worker, before training: measure this model, method and device if nothing has
    yet (a few seconds), then record the estimate the run starts with. Never fails the run: a
    probe that breaks is logged and the estimate stays as it was."""
    device, device_name = engine.device_description(config)
    calibration = calibration_for(base_model=run.base_model, method=run.method, device=device)
    if calibration is None:
        began = time.monotonic()
        try:
            measurements = engine.calibrate(
                base_model_path=run.base_model.location,
                config=config,
                sample_texts=train_texts[:500],
            )
        except Exception:  # the run itself reports a model that cannot load or train
            logger.exception("Speed probe for run %s failed", run.pk)
            return
        try:
            calibration, _ = TrainingCalibration.objects.update_or_create(
                base_model=run.base_model,
                method=run.method,
                device=device,
                defaults={
                    "device_name": device_name[:200],
                    "measurements": measurements,
                    "chars_per_token": measurements.get("chars_per_token"),
                },
            )
        except IntegrityError:  # another worker measured it at the same moment
            calibration = calibration_for(
                base_model=run.base_model, method=run.method, device=device
            )
        TrainingEvent.objects.create(
            run=run,
            kind="speed_measured",
            message=(
                f"Measured how fast {run.base_model.name} trains with {run.method} on this "
                f"worker ({device_name}) in {time.monotonic() - began:.0f} s; time estimates "
                "for this model use it from now on."
            ),
        )
    if (run.estimate or {}).get("at_start"):
        return  # resumed: the first start's estimate stands
    at_start = training_time_estimate(
        snapshot=run.snapshot, base_model=run.base_model, config=config, device=device
    )
    with transaction.atomic():
        locked = TrainingRun.objects.select_for_update().get(pk=run.pk)
        locked.estimate = {**(locked.estimate or {}), "at_start": at_start}
        locked.save(update_fields=["estimate"])
    run.estimate = locked.estimate


def training_run_record_actual(*, run: TrainingRun, result) -> None:
    """After a run trained to the end: record how long it took next to its estimates, and, if
    it went start to finish in one go on a calibrated estimate, teach the calibration."""
    actual = round(float(result.elapsed_seconds or 0.0), 1)  # as recorded: ratios match it
    with transaction.atomic():
        locked = TrainingRun.objects.select_for_update().get(pk=run.pk)
        estimate = dict(locked.estimate or {})
        estimate["actual_seconds"] = actual
        locked.estimate = estimate
        locked.save(update_fields=["estimate"])
    run.estimate = estimate
    at_start = estimate.get("at_start") or {}
    raw = float(at_start.get("seconds") or 0) / float(at_start.get("correction") or 1.0)
    teaches = (
        at_start.get("calibrated")
        and raw > 0
        and actual > 0
        and locked.attempts <= 1
        and not result.stopped_early
        and result.steps_done >= result.total_steps
    )
    if not teaches:
        return
    with transaction.atomic():
        calibration = (
            TrainingCalibration.objects.select_for_update()
            .filter(pk=at_start.get("calibration_id"))
            .first()
        )
        if calibration is None:
            return
        ratios = [*calibration.run_ratios, round(actual / raw, 4)][-MAX_RUN_RATIOS:]
        calibration.run_ratios = ratios
        calibration.save(update_fields=["run_ratios", "updated_at"])


def estimate_in_words(estimate: dict) -> dict | None:
    """The estimate's range and basis for a page, or None when there is none."""
    seconds = float((estimate or {}).get("seconds") or 0)
    if not seconds:
        return None
    low = float(estimate.get("low_seconds") or seconds)
    high = float(estimate.get("high_seconds") or seconds)
    return {
        "range": describe_range(low, high),
        "seconds": seconds,
        "calibrated": bool(estimate.get("calibrated")),
        "basis": estimate.get("basis", ""),
    }


def run_timing(run: TrainingRun) -> dict:
    """What the run page shows about time: the estimate it started with (made on the worker
    once calibrated, else the one made when it was queued), and for a finished run the time
    it took and how far off the estimate was."""
    estimate = run.estimate or {}
    shown = estimate_in_words(estimate.get("at_start") or estimate)
    actual = estimate.get("actual_seconds")
    timing: dict = {"estimate": shown, "actual": None, "verdict": ""}
    if actual is not None and shown:
        actual = float(actual)
        at_start = estimate.get("at_start") or estimate
        low = float(at_start.get("low_seconds") or shown["seconds"])
        high = float(at_start.get("high_seconds") or shown["seconds"])
        timing["actual"] = describe_seconds(actual)
        timing["actual_seconds"] = actual
        timing["ratio"] = round(actual / shown["seconds"], 2)
        if actual < low:
            timing["verdict"] = "shorter than estimated"
        elif actual > high:
            timing["verdict"] = "longer than estimated"
        else:
            timing["verdict"] = "within the estimate"
    return timing
