"""The quality report job, and cleaning fixes that never delete and can be undone."""

from __future__ import annotations

import logging
from datetime import timedelta

import numpy as np
import pandas as pd
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from datasets_app import cleaning
from datasets_app.models import (
    CleaningAction,
    CleaningChange,
    Dataset,
    DatasetJob,
    LabelChange,
    Record,
)
from datasets_app.services.jobs import dataset_lock
from datasets_app.services.search import search_entries_refresh
from lepton_web.access import access_check

logger = logging.getLogger(__name__)

BATCH = 5000
FIXES = {
    "drop_exact_duplicates": "Exclude exact duplicates, keeping the first of each",
    "drop_near_duplicates": "Exclude near-duplicates, keeping the first of each",
    "drop_empty": "Exclude empty texts",
    "resolve_conflicts_majority": "Relabel conflicting copies with the majority label",
    "resolve_conflicts_drop": "Exclude every copy of texts with conflicting labels",
    "repair_mojibake": "Repair mis-decoded characters (mojibake)",
    "strip_markup": "Strip HTML markup and entities",
    "exclude_length_outliers": "Exclude texts far from the typical length",
    "exclude_small_classes": "Exclude the records of labels with too few records",
    "exclude_mostly_noise": "Exclude texts that are mostly URLs, numbers or markup",
}
# Record ids per UPDATE when the report writes its flags (SQLite allows 32,766 parameters).
FLAG_BATCH = 20000


def records_frame(dataset: Dataset) -> pd.DataFrame:
    """The current (not excluded) records as a frame, in id (file) order: id, text, label, split.

    The order matters: "first" of a group of copies, which the fixes keep, is first in the frame.
    Without ORDER BY, PostgreSQL returns rows in heap order, which every UPDATE (a fix, its undo,
    the report's flags) shuffles.
    """
    rows = (
        Record.objects.filter(import_run_id=dataset.active_import_id, is_excluded=False)
        .order_by("id")
        .values_list("id", "text", "label", "split")
    )
    frame = pd.DataFrame.from_records(
        list(rows.iterator(chunk_size=20000)), columns=["id", "text", "label", "split"]
    )
    return frame.astype({"id": "int64"}) if len(frame) else frame


# --- the report job ---------------------------------------------------------------------------------
def dataset_report_start(*, dataset: Dataset, user) -> DatasetJob:
    from lepton_web.jobs import job_create_and_enqueue

    return job_create_and_enqueue(
        model=DatasetJob, dataset=dataset, kind=DatasetJob.Kind.REPORT, created_by=user
    )


def _storable(report: dict) -> dict:
    """The report without the full id lists (fixes recompute them), small enough for a JSON cell."""
    findings = [{k: v for k, v in f.items() if k != "record_ids"} for f in report["findings"]]
    return {**report, "findings": findings, "created_at": timezone.now().isoformat()}


def _record_flags_write(*, import_run_id: int, findings: list[dict]) -> int:
    """Set the report's finding tokens on the records of one import, keeping the import's own
    tokens; returns how many records changed. Call inside a transaction.

    Only records that have flags or are in a finding are read, and only changed ones are
    written: one UPDATE per distinct new value and batch of ids, so a million records that
    mostly have nothing to report cost a few statements, not a million.
    """
    rows = (
        Record.objects.filter(import_run_id=import_run_id)
        .exclude(flags="")
        .values_list("id", "flags")
    )
    flagged = pd.DataFrame.from_records(
        list(rows.iterator(chunk_size=20000)), columns=["id", "flags"]
    )
    current = pd.Series(
        flagged["flags"].to_numpy(dtype=object), index=flagged["id"].to_numpy(dtype=np.int64)
    )
    found_ids = [
        np.asarray(finding["record_ids"], dtype=np.int64)
        for finding in findings
        if finding["kind"] in cleaning.REPORT_FLAGS
    ]
    if found_ids:
        unflagged = np.setdiff1d(np.concatenate(found_ids), current.index.to_numpy())
        current = pd.concat([current, pd.Series("", index=unflagged, dtype=object)])
    new = cleaning.record_flags(current, findings)
    changed = new[new.to_numpy() != current.to_numpy()]
    for value, group in changed.groupby(changed, sort=False):
        ids = group.index.tolist()
        for start in range(0, len(ids), FLAG_BATCH):
            Record.objects.filter(
                import_run_id=import_run_id, id__in=ids[start : start + FLAG_BATCH]
            ).update(flags=value)
    return len(changed)


def dataset_report_execute(*, job_id: int) -> DatasetJob | None:
    job = DatasetJob.objects.select_related("dataset").filter(pk=job_id).first()
    if job is None or not job.claim():
        return None
    dataset = job.dataset
    job.report(progress=10, message="Reading records.")
    frame = records_frame(dataset)
    job.report(progress=40, message=f"Checking {len(frame):,} records.")
    report = cleaning.quality_report(frame)
    job.report(progress=80, message="Marking the records of each finding.")
    with transaction.atomic():
        # Flags and the stored report change together, and not under a fix that is running.
        dataset_lock(dataset, wait=None)  # a worker waits its turn
        _record_flags_write(import_run_id=dataset.active_import_id, findings=report["findings"])
        Dataset.objects.filter(pk=dataset.pk).update(quality_report=_storable(report))
    found = sum(f["count"] for f in report["findings"])
    job.succeed(message=f"Checked {len(frame):,} records; {found:,} findings.")
    return job


# --- fixes -----------------------------------------------------------------------------------------
def _changes_for(kind: str, frame: pd.DataFrame) -> pd.DataFrame:
    if kind == "drop_exact_duplicates":
        return cleaning.fix_drop_duplicates(frame, "exact_duplicate")
    if kind == "drop_near_duplicates":
        return cleaning.fix_drop_duplicates(frame, "near_duplicate")
    if kind == "drop_empty":
        return cleaning.fix_drop_empty(frame)
    if kind == "resolve_conflicts_majority":
        return cleaning.fix_resolve_conflicts(frame, "majority")
    if kind == "resolve_conflicts_drop":
        return cleaning.fix_resolve_conflicts(frame, "drop")
    if kind == "repair_mojibake":
        return cleaning.fix_repair_mojibake(frame)
    if kind == "strip_markup":
        return cleaning.fix_strip_markup(frame)
    if kind == "exclude_length_outliers":
        return cleaning.fix_exclude_length_outliers(frame)
    if kind == "exclude_small_classes":
        return cleaning.fix_exclude_small_classes(frame)
    if kind == "exclude_mostly_noise":
        return cleaning.fix_exclude_mostly_noise(frame)
    raise ValidationError({"kind": f"Unknown fix '{kind}'. Choose one of: {', '.join(FIXES)}."})


# What a finished fix says, singular and plural: "Excluded 212 exact copies."
FIX_DONE = {
    "drop_exact_duplicates": ("Excluded {n} exact copy.", "Excluded {n} exact copies."),
    "drop_near_duplicates": ("Excluded {n} near-duplicate.", "Excluded {n} near-duplicates."),
    "drop_empty": ("Excluded {n} empty text.", "Excluded {n} empty texts."),
    "resolve_conflicts_majority": (
        "Changed {n} record with a conflicting label to the majority label.",
        "Changed {n} records with conflicting labels to the majority label.",
    ),
    "resolve_conflicts_drop": (
        "Excluded {n} copy of a text with conflicting labels.",
        "Excluded {n} copies of texts with conflicting labels.",
    ),
    "repair_mojibake": (
        "Repaired mis-decoded characters in {n} text.",
        "Repaired mis-decoded characters in {n} texts.",
    ),
    "strip_markup": ("Stripped markup from {n} text.", "Stripped markup from {n} texts."),
    "exclude_length_outliers": (
        "Excluded {n} text far from the typical length.",
        "Excluded {n} texts far from the typical length.",
    ),
    "exclude_small_classes": (
        "Excluded {n} record of labels with too few records.",
        "Excluded {n} records of labels with too few records.",
    ),
    "exclude_mostly_noise": (
        "Excluded {n} text that is mostly URLs, numbers or markup.",
        "Excluded {n} texts that are mostly URLs, numbers or markup.",
    ),
}
NOTHING_TO_FIX = "Nothing to fix: no record matches this finding any more."
SMALL_CLASSES_ARE_ALL = (
    f"Every label has fewer than {cleaning.MIN_CLASS_SIZE} records, so this fix would exclude "
    "every labeled record and leave nothing to train on. Add records to the small labels or "
    "merge them instead."
)


def fix_summary(kind: str, count: int) -> str:
    one, many = FIX_DONE.get(kind, ("Changed {n} record.", "Changed {n} records."))
    return (one if count == 1 else many).format(n=f"{count:,}")


def _clean_check(*, dataset: Dataset, kind: str) -> None:
    if kind not in FIXES:
        raise ValidationError({"kind": f"Unknown fix '{kind}'. Choose one of: {', '.join(FIXES)}."})
    # Records exist also while a new import of the file runs (then starting says so).
    if not dataset.active_import_id:
        raise ValidationError("This dataset has no imported records to clean yet.")


def dataset_clean_apply(*, dataset: Dataset, user, kind: str) -> CleaningAction:
    """Apply one fix: exclude or edit records, keeping every previous value for undo.

    The work itself, here and now; pages and the API start it as a job (``dataset_clean_start``).
    """
    access_check(user, "dataset", "change")
    _clean_check(dataset=dataset, kind=kind)
    return _clean_apply(dataset=dataset, kind=kind, user=user)


def dataset_clean_start(*, dataset: Dataset, user, kind: str) -> DatasetJob:
    """Check the fix, then queue it as a job; nothing is queued when the fix is unknown, the
    dataset has no records, or another import, split or cleaning fix of it is active."""
    from datasets_app.services.jobs import dataset_job_start

    access_check(user, "dataset", "change")
    _clean_check(dataset=dataset, kind=kind)
    return dataset_job_start(
        dataset=dataset, kind=DatasetJob.Kind.CLEAN, params={"kind": kind}, user=user
    )


def dataset_clean_execute(*, job_id: int) -> DatasetJob | None:
    """Run a queued cleaning fix (the worker's side of ``dataset_clean_start``)."""
    from datasets_app.services.jobs import dataset_job_run

    def work(job: DatasetJob) -> None:
        kind = (job.mapping or {}).get("kind", "")
        _clean_check(dataset=job.dataset, kind=kind)
        _clean_apply(dataset=job.dataset, kind=kind, user=job.created_by, job=job)

    return dataset_job_run(
        job_id=job_id, kind=DatasetJob.Kind.CLEAN, work=work, what="The cleaning fix"
    )


def _clean_apply(
    *, dataset: Dataset, kind: str, user, job: DatasetJob | None = None
) -> CleaningAction:
    """Compute the fix, then write it in one transaction (all or nothing is ever visible); with
    a job, report progress on the way and mark it succeeded in that same transaction."""
    from datasets_app.services.jobs import JobLost, job_succeed_in_transaction
    from lepton_web.jobs import job_progress_aside

    def report(progress: int, message: str) -> None:
        if job is not None and not job.report(progress=progress, message=message):
            raise JobLost()

    report(5, "Reading records.")
    # A label saved just before this instant may commit after the read: a margin covers it
    # (records labeled in it are only left alone, never harmed).
    read_at = timezone.now() - timedelta(seconds=5)
    frame = records_frame(dataset)
    report(25, f"Finding what to fix among {len(frame):,} records.")
    changes = _changes_for(kind, frame)
    labeled = int((frame["label"] != "").sum())
    if kind == cleaning.FIX_EXCLUDE_SMALL_CLASSES and not changes.empty and len(changes) >= labeled:
        raise ValidationError(SMALL_CLASSES_ARE_ALL)
    del frame
    if changes.empty:
        raise ValidationError(NOTHING_TO_FIX)
    ids = changes["id"].astype("int64").tolist()
    total = len(ids)
    rows = {int(row["id"]): row for row in changes.to_dict("records")}
    report(40, f"Saving changes: 0 of {total:,} records.")
    with transaction.atomic():
        dataset_lock(dataset, wait=None)  # a worker waits its turn
        # Labels given in the labeling queue since the records were read are newer than this
        # fix's view of them: those records are left as the person left them.
        relabeled = set(
            LabelChange.objects.filter(dataset=dataset, created_at__gte=read_at).values_list(
                "record_id", flat=True
            )
        )
        if relabeled:
            ids = [record_id for record_id in ids if record_id not in relabeled]
            total = len(ids)
            if not total:
                raise ValidationError(NOTHING_TO_FIX)
        action = CleaningAction.objects.create(
            dataset=dataset,
            kind=kind,
            description=FIXES[kind],
            affected_count=total,
            created_by=user,
        )
        edited: list[int] = []
        # Progress inside the transaction goes through another connection (see
        # job_progress_aside); its block ends before succeed() writes the job row here.
        with job_progress_aside(job) as aside:
            for start in range(0, total, BATCH * 4):
                chunk = ids[start : start + BATCH * 4]
                edited += _fix_write(action, kind, Record.objects.in_bulk(chunk), rows)
                done = start + len(chunk)
                aside(
                    40 + int(50 * done / total),
                    f"Saving changes: {done:,} of {total:,} records ({100 * done // total}%).",
                )
            aside(92, "Counting records.")
            search_entries_refresh(edited)
            _after_cleaning(dataset)
        if job is not None:
            job_succeed_in_transaction(job, message=fix_summary(kind, total))
    return action


def _fix_write(action: CleaningAction, kind: str, old: dict[int, Record], rows: dict) -> list[int]:
    """Keep the previous values of these records, then change them; returns the ids of those
    whose text was ever edited (their search entries follow)."""
    CleaningChange.objects.bulk_create(
        [
            CleaningChange(
                action=action,
                record_id=record.id,
                old_text=record.text,
                old_label=record.label,
                old_is_excluded=record.is_excluded,
                old_exclusion_reason=record.exclusion_reason,
            )
            for record in old.values()
        ],
        batch_size=BATCH,
    )
    updated = []
    for record_id, record in old.items():
        row = rows[record_id]
        if row.get("exclude"):
            record.is_excluded = True
            record.exclusion_reason = str(row.get("reason") or FIXES[kind])[:200]
        new_text = row.get("new_text")
        if isinstance(new_text, str) and new_text != record.text:
            if record.original_text is None:
                record.original_text = record.text
            record.text = new_text
        new_label = row.get("new_label")
        if isinstance(new_label, str) and new_label != record.label:
            if record.original_label is None:
                record.original_label = record.label
            record.label = new_label
        updated.append(record)
    Record.objects.bulk_update(
        updated,
        ["is_excluded", "exclusion_reason", "text", "original_text", "label", "original_label"],
        batch_size=BATCH,
    )
    return [record.id for record in updated if record.original_text is not None]


def dataset_clean_undo(*, dataset: Dataset, user) -> CleaningAction:
    """Undo the most recent fix that is still applied (fixes are undone last-first)."""
    from datasets_app.services.jobs import dataset_busy_check

    access_check(user, "dataset", "change")
    with transaction.atomic():
        dataset_lock(dataset)
        # A fix being computed would write over what the undo restores.
        dataset_busy_check(dataset)
        action = (
            CleaningAction.objects.select_for_update()
            .filter(dataset=dataset, undone_at__isnull=True, superseded_at__isnull=True)
            .order_by("-created_at", "-id")
            .first()
        )
        if action is None:
            raise ValidationError("There is no cleaning step to undo.")
        changed_ids = list(action.changes.values_list("record_id", flat=True))
        records = Record.objects.in_bulk(changed_ids)
        # A label someone gave in the labeling queue after this fix is newer than both: it
        # stays, and the rest of the record is restored.
        relabeled = set(
            LabelChange.objects.filter(
                dataset=dataset, record_id__in=changed_ids, created_at__gt=action.created_at
            ).values_list("record_id", flat=True)
        )
        restored = []
        for change in action.changes.all().iterator(chunk_size=BATCH):
            record = records.get(change.record_id)
            if record is None:
                continue
            record.text = change.old_text
            if change.record_id not in relabeled:
                record.label = change.old_label
            record.is_excluded = change.old_is_excluded
            record.exclusion_reason = change.old_exclusion_reason
            if record.original_text == record.text:
                record.original_text = None
            if record.original_label == record.label:
                record.original_label = None
            restored.append(record)
        Record.objects.bulk_update(
            restored,
            [
                "text",
                "label",
                "is_excluded",
                "exclusion_reason",
                "original_text",
                "original_label",
            ],
            batch_size=BATCH,
        )
        search_entries_refresh([record.id for record in restored])
        action.undone_at = timezone.now()
        action.save(update_fields=["undone_at", "updated_at"])
        _after_cleaning(dataset)
    return action


def _after_cleaning(dataset: Dataset) -> None:
    from datasets_app.services.imports import dataset_refresh_counts

    dataset_refresh_counts(dataset)
    dataset_report_queue_on_commit(dataset=dataset)


def dataset_report_queue_on_commit(*, dataset: Dataset) -> None:
    """Queue a fresh quality report once the current transaction commits (after records
    changed); a broker that is down is logged, not raised: the change itself stands."""
    from lepton_web.jobs import BrokerUnavailable

    def refresh_report() -> None:
        try:
            dataset_report_start(dataset=dataset, user=None)
        except BrokerUnavailable:
            logger.warning("Quality report for dataset %s not queued: broker down", dataset.pk)

    transaction.on_commit(refresh_report)
