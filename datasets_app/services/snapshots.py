"""Splits and immutable snapshots."""

from __future__ import annotations

import math

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F, Max

from datasets_app import cleaning
from datasets_app.models import Dataset, DatasetJob, Record, Snapshot, SnapshotRecord
from datasets_app.selectors import record_distribution
from lepton_web.access import access_check
from lepton_web.bulk import can_check_keys_once, keys_checked_once

SPLITS = ("train", "validation", "test")
ID_BATCH = 20000  # ids per UPDATE through the ORM (SQLite allows 32,766 parameters)
SPLIT_WRITE_BATCH = 100_000  # (id, split) pairs per UPDATE on PostgreSQL, one array each
RATIOS_MESSAGE = "Give three ratios (train, validation, test) that add up to 1."


def dataset_file_split_column(dataset: Dataset) -> str | None:
    """The split column of the import whose records are active. ``dataset.mapping`` is the
    latest *attempted* import's, which may have failed and left these records in place."""
    active = dataset.active_import
    if active is None:
        return None
    return (active.mapping or {}).get("split_column") or None


def _split_check(
    *, dataset: Dataset, mode: str, ratios: tuple[float, float, float]
) -> tuple[float, float, float]:
    """Everything that can be said about a split before doing it; returns the ratios as floats."""
    # Records exist also while a new import of the file runs (then starting says so).
    if not dataset.active_import_id:
        raise ValidationError("This dataset has no imported records to split yet.")
    active = Record.objects.filter(import_run_id=dataset.active_import_id, is_excluded=False)
    if mode == "file":
        if not dataset_file_split_column(dataset):
            raise ValidationError(
                {"mode": "The file had no split column mapped. Choose a random split."}
            )
        missing = active.filter(file_split="").count()
        if missing:
            noun, them = ("record has", "it") if missing == 1 else ("records have", "them")
            raise ValidationError(
                {
                    "mode": f"{missing:,} {noun} no split in the file. Fill {them} in, or split at random."
                }
            )
        return (0.0, 0.0, 0.0)
    if mode != "random":
        raise ValidationError({"mode": "Mode must be 'random' or 'file'."})
    try:
        ratios = tuple(float(r) for r in ratios)
    except (TypeError, ValueError):
        raise ValidationError({"ratios": RATIOS_MESSAGE}) from None
    if (
        len(ratios) != 3
        or not all(math.isfinite(r) and r >= 0 for r in ratios)
        or abs(sum(ratios) - 1) > 1e-6
    ):
        raise ValidationError({"ratios": RATIOS_MESSAGE})
    if ratios[0] <= 0:
        raise ValidationError({"ratios": "The train ratio must be above 0."})
    if not active.exists():
        raise ValidationError("All records are excluded; there is nothing to split.")
    return ratios


def dataset_split(
    *,
    dataset: Dataset,
    user,
    mode: str = "random",
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 13,
) -> Dataset:
    """Assign train/validation/test: stratified by label, near-duplicates kept together; or
    keep the split column the file brought (``mode="file"``). Queues a fresh quality report,
    whose split counts and split-leakage finding follow the new splits.

    The work itself, here and now; pages and the API start it as a job (``dataset_split_start``).
    """
    access_check(user, "dataset", "change")
    ratios = _split_check(dataset=dataset, mode=mode, ratios=ratios)
    _split_apply(dataset=dataset, mode=mode, ratios=ratios, seed=int(seed))
    return dataset


def dataset_split_start(
    *,
    dataset: Dataset,
    user,
    mode: str = "random",
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 13,
) -> DatasetJob:
    """Check everything a split needs, then queue it as a job; nothing is queued when the
    parameters are wrong or another import, split or cleaning fix of the dataset is active."""
    from datasets_app.services.jobs import dataset_job_start

    access_check(user, "dataset", "change")
    ratios = _split_check(dataset=dataset, mode=mode, ratios=ratios)
    params = {"mode": mode, "ratios": list(ratios), "seed": int(seed)}
    return dataset_job_start(dataset=dataset, kind=DatasetJob.Kind.SPLIT, params=params, user=user)


def dataset_split_execute(*, job_id: int) -> DatasetJob | None:
    """Run a queued split job (the worker's side of ``dataset_split_start``)."""
    from datasets_app.services.jobs import dataset_job_run

    def work(job: DatasetJob) -> None:
        params = job.mapping or {}
        mode = params.get("mode", "random")
        # Checked again: records may have changed while the job waited.
        ratios = _split_check(
            dataset=job.dataset, mode=mode, ratios=params.get("ratios", (0.8, 0.1, 0.1))
        )
        _split_apply(
            dataset=job.dataset, mode=mode, ratios=ratios, seed=int(params.get("seed", 13)), job=job
        )

    return dataset_job_run(
        job_id=job_id, kind=DatasetJob.Kind.SPLIT, work=work, what="Assigning splits"
    )


def split_summary(split_counts: dict[str, int]) -> str:
    """'Assigned 800,000 train, 100,000 validation, 100,000 test.'"""
    named = [s for s in SPLITS if split_counts.get(s)]
    parts = [f"{split_counts[s]:,} {s}" for s in named]
    if split_counts.get(""):
        parts.append(f"{split_counts['']:,} without a split")
    return f"Assigned {', '.join(parts) or 'no records'}."


def _split_apply(
    *,
    dataset: Dataset,
    mode: str,
    ratios: tuple[float, float, float],
    seed: int,
    job: DatasetJob | None = None,
) -> None:
    """Write the split in one transaction (all of it or none is ever visible); with a job,
    report progress at each step and mark it succeeded in that same transaction."""
    from datasets_app.services.cleaning import dataset_report_queue_on_commit, records_frame
    from datasets_app.services.imports import dataset_refresh_counts
    from datasets_app.services.jobs import dataset_lock, job_succeed_in_transaction
    from lepton_web.jobs import job_progress_aside

    def report(progress: int, message: str) -> None:
        if job is not None and not job.report(progress=progress, message=message):
            raise _job_lost()

    if mode == "file":
        report(20, "Copying the splits the file gave.")
        with transaction.atomic():
            dataset_lock(dataset, wait=None)  # a worker waits its turn
            Record.objects.filter(
                import_run_id=dataset.active_import_id, is_excluded=False
            ).exclude(split=F("file_split")).update(split=F("file_split"))
            dataset_refresh_counts(dataset)
            if job is not None:
                job_succeed_in_transaction(job, message=split_summary(dataset.split_counts or {}))
            dataset_report_queue_on_commit(dataset=dataset)
        return
    report(5, "Reading records.")
    frame = records_frame(dataset)
    if frame.empty:
        raise ValidationError("All records are excluded; there is nothing to split.")
    report(15, f"Grouping near-duplicates among {len(frame):,} records.")
    try:
        splits = cleaning.assign_splits(
            frame,
            ratios=ratios,
            seed=seed,
            group_key=cleaning.text_hashes(frame["text"]),
        )
    except ValueError as exc:
        raise ValidationError({"ratios": str(exc)}) from None
    # Only records whose split changes are written: a re-split with the same seed writes none.
    new = splits.to_numpy(dtype=object)
    changed = new != frame["split"].to_numpy(dtype=object)
    ids, values = frame["id"].to_numpy()[changed], new[changed]
    del frame, splits
    total = len(ids)
    report(35, f"Writing splits: 0 of {total:,} records.")
    with transaction.atomic():
        dataset_lock(dataset, wait=None)
        # Progress inside the transaction goes through another connection (see
        # job_progress_aside); its block ends before succeed() writes the job row here.
        with job_progress_aside(job) as aside:
            done = 0
            for split in SPLITS:
                split_ids = ids[values == split]
                for start in range(0, len(split_ids), _write_batch()):
                    batch = split_ids[start : start + _write_batch()].tolist()
                    _split_batch_write(batch, split)
                    done += len(batch)
                    aside(
                        35 + int(55 * done / total),
                        f"Writing splits: {done:,} of {total:,} records ({100 * done // total}%).",
                    )
            aside(92, "Counting records per split.")
            dataset_refresh_counts(dataset)
        if job is not None:
            job_succeed_in_transaction(job, message=split_summary(dataset.split_counts or {}))
        dataset_report_queue_on_commit(dataset=dataset)


def _job_lost():
    from datasets_app.services.jobs import JobLost

    return JobLost()


def _write_batch() -> int:
    return SPLIT_WRITE_BATCH if connection.vendor == "postgresql" else ID_BATCH


def _split_batch_write(ids: list[int], split: str) -> None:
    """Set ``split`` on these records: one statement with one array parameter on PostgreSQL."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {Record._meta.db_table} SET split = %s "  # noqa: S608
                "WHERE id = ANY(%s::bigint[]) AND split <> %s",
                [split, ids, split],
            )
        return
    Record.objects.filter(id__in=ids).exclude(split=split).update(split=split)


def snapshot_create(
    *, dataset: Dataset, user, note: str = "", labeled_only: bool = False
) -> Snapshot:
    """Freeze the current records (text, label, split) as the next numbered snapshot;
    ``labeled_only`` leaves out the records without a label (to train while labeling goes on).

    One INSERT ... SELECT copies the rows inside the database, so a million records never pass
    through Python.
    """
    access_check(user, "dataset", "change")
    from datasets_app.services.jobs import dataset_lock

    with transaction.atomic():
        locked = dataset_lock(dataset, no_key=False)
        # While a new import runs, the snapshot freezes the records that are active now.
        if not locked.active_import_id:
            raise ValidationError("This dataset has no imported records to snapshot yet.")
        number = (locked.snapshots.aggregate(n=Max("number"))["n"] or 0) + 1
        snapshot = Snapshot.objects.create(
            dataset=locked, number=number, note=note[:300], created_by=user
        )
        target, source = SnapshotRecord._meta.db_table, Record._meta.db_table
        # Every row has this snapshot as parent: its key is checked once (lepton_web/bulk.py).
        parents = [(Snapshot._meta.db_table, snapshot.pk)]
        with (
            connection.cursor() as cursor,
            keys_checked_once(cursor, parents, enabled=can_check_keys_once()),
        ):
            cursor.execute(
                f"INSERT INTO {target} (snapshot_id, record_id, source_row, text, label, split) "  # noqa: S608
                f"SELECT %s, id, source_row, text, label, split FROM {source} "
                "WHERE import_run_id = %s AND NOT is_excluded "
                + ("AND label <> '' " if labeled_only else "")
                + "ORDER BY id",
                [snapshot.pk, locked.active_import_id],
            )
        snapshot.record_count, snapshot.label_counts, snapshot.split_counts = record_distribution(
            SnapshotRecord.objects.filter(snapshot=snapshot)
        )
        if snapshot.record_count == 0:
            if labeled_only:
                raise ValidationError("No record has a label yet; label some records first.")
            raise ValidationError("Every record is excluded; a snapshot needs at least one record.")
        snapshot.save(update_fields=["record_count", "label_counts", "split_counts", "updated_at"])
    return snapshot
