"""Splits and immutable snapshots."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F, Max

from datasets_app import cleaning
from datasets_app.models import Dataset, Record, Snapshot, SnapshotRecord
from datasets_app.selectors import record_distribution
from lepton_web.access import access_check
from lepton_web.bulk import can_check_keys_once, keys_checked_once

SPLITS = ("train", "validation", "test")
ID_BATCH = 20000


def dataset_file_split_column(dataset: Dataset) -> str | None:
    """The split column of the import whose records are active. ``dataset.mapping`` is the
    latest *attempted* import's, which may have failed and left these records in place."""
    active = dataset.active_import
    if active is None:
        return None
    return (active.mapping or {}).get("split_column") or None


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
    whose split counts and split-leakage finding follow the new splits."""
    from datasets_app.services.cleaning import dataset_report_queue_on_commit, records_frame
    from datasets_app.services.imports import dataset_refresh_counts

    access_check(user, "dataset", "change")
    if not dataset.is_ready:
        raise ValidationError("This dataset has no imported records to split yet.")
    if mode == "file":
        if not dataset_file_split_column(dataset):
            raise ValidationError(
                {"mode": "The file had no split column mapped. Choose a random split."}
            )
        active = Record.objects.filter(import_run_id=dataset.active_import_id, is_excluded=False)
        missing = active.filter(file_split="").count()
        if missing:
            noun, them = ("record has", "it") if missing == 1 else ("records have", "them")
            raise ValidationError(
                {
                    "mode": f"{missing:,} {noun} no split in the file. Fill {them} in, or split at random."
                }
            )
        with transaction.atomic():
            active.exclude(split=F("file_split")).update(split=F("file_split"))
            dataset_report_queue_on_commit(dataset=dataset)
            return dataset_refresh_counts(dataset)
    if mode != "random":
        raise ValidationError({"mode": "Mode must be 'random' or 'file'."})
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise ValidationError(
            {"ratios": "Give three ratios (train, validation, test) that add up to 1."}
        )
    if ratios[0] <= 0:
        raise ValidationError({"ratios": "The train ratio must be above 0."})
    frame = records_frame(dataset)
    if frame.empty:
        raise ValidationError("All records are excluded; there is nothing to split.")
    try:
        splits = cleaning.assign_splits(
            frame,
            ratios=ratios,
            seed=int(seed),
            group_key=cleaning.text_hashes(frame["text"]),
        )
    except ValueError as exc:
        raise ValidationError({"ratios": str(exc)}) from None
    with transaction.atomic():
        for split in SPLITS:
            ids = frame.loc[splits.to_numpy() == split, "id"].tolist()
            for start in range(0, len(ids), ID_BATCH):
                Record.objects.filter(id__in=ids[start : start + ID_BATCH]).update(split=split)
        dataset_refresh_counts(dataset)
        dataset_report_queue_on_commit(dataset=dataset)
    return dataset


def snapshot_create(*, dataset: Dataset, user, note: str = "") -> Snapshot:
    """Freeze the current records (text, label, split) as the next numbered snapshot.

    One INSERT ... SELECT copies the rows inside the database, so a million records never pass
    through Python.
    """
    access_check(user, "dataset", "change")
    with transaction.atomic():
        locked = Dataset.objects.select_for_update().get(pk=dataset.pk)
        if not locked.is_ready or not locked.active_import_id:
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
                "WHERE import_run_id = %s AND NOT is_excluded ORDER BY id",
                [snapshot.pk, locked.active_import_id],
            )
        snapshot.record_count, snapshot.label_counts, snapshot.split_counts = record_distribution(
            SnapshotRecord.objects.filter(snapshot=snapshot)
        )
        if snapshot.record_count == 0:
            raise ValidationError("Every record is excluded; a snapshot needs at least one record.")
        snapshot.save(update_fields=["record_count", "label_counts", "split_counts", "updated_at"])
    return snapshot
