"""Labeling records one at a time: the label schema, the queue, and saving a label.

The queue hands each annotator the next record without a label, in id order, and holds it
for them (a ``LabelClaim``) so that two people labeling the same dataset never get the same
record. Saving a label checks that the record still has the label the annotator saw, so a
label someone else gave meanwhile is never overwritten without them seeing it. Label counts
are kept up to date in the same transaction; the first label a record had is kept
(``original_label``), and every label given is logged (``LabelChange``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from datasets_app.models import BulkLabel, Dataset, LabelChange, LabelClaim, Record
from datasets_app.services.jobs import dataset_lock
from lepton_web.access import access_check

MAX_LABELS = 200
MAX_LABEL_CHARS = 500
LABEL_SEPARATOR = "|"  # several labels of one record, as multi-label training reads them


class LabelConflict(ValidationError):
    """The record's label changed after the annotator was shown it."""


class LabelsInUse(ValidationError):
    """A new label list leaves out labels that records have; ``labels`` maps each to its
    record count."""

    def __init__(self, message: str, *, labels: dict[str, int]):
        super().__init__(message)
        self.labels = labels


# Pieces of a page template (a tag the page failed to render) are never labels: saving them
# would replace the list with debris, as a tag broken over two lines once did.
TEMPLATE_DEBRIS = ("{{", "}}", "{%", "%}")


def _labels_in_use(dataset: Dataset, multiple: bool) -> dict[str, int]:
    """Labels the dataset's current records have (not excluded), with their record counts."""
    used: dict[str, int] = {}
    for label, count in (dataset.label_counts or {}).items():
        for one in split_labels(label) if multiple else [label]:
            if one and count > 0:
                used[one] = used.get(one, 0) + count
    return used


@dataclass(frozen=True)
class LabelingItem:
    record: Record | None  # None: nothing left to label
    remaining: int  # records without a label (not excluded), this one included
    labels: list[str]
    previous_id: int | None  # the record this user labeled last, to go back to


def _claim_seconds() -> int:
    return settings.LABELING_CLAIM_SECONDS


def label_schema_set(
    *,
    dataset: Dataset,
    user,
    labels: list[str],
    multiple: bool | None = None,
    drop_labels_in_use: bool = False,
) -> Dataset:
    """Set the labels annotators choose from, in order, and whether a record may get several
    of them (``multiple``; None keeps the current choice). Records keep the labels they have.

    A list that leaves out labels records have raises ``LabelsInUse`` (nothing changes) unless
    ``drop_labels_in_use``: those labels would silently stop being offered."""
    access_check(user, "dataset", "change")
    multiple = dataset.label_multiple if multiple is None else bool(multiple)
    cleaned: list[str] = []
    for raw in labels:
        label = str(raw).strip()
        if not label:
            continue
        if any(piece in label for piece in TEMPLATE_DEBRIS):
            raise ValidationError(
                f'The label "{label[:40]}" looks like a piece of a page template, not a label. '
                "Write the labels themselves, one per line."
            )
        if multiple and LABEL_SEPARATOR in label:
            raise ValidationError(
                f'The label "{label[:40]}" contains "{LABEL_SEPARATOR}", which joins the labels '
                "of a record that has several. Rename it, or allow one label per record."
            )
        if len(label) > MAX_LABEL_CHARS:
            raise ValidationError(
                f'The label "{label[:40]}…" is longer than {MAX_LABEL_CHARS} characters.'
            )
        if label in cleaned:
            raise ValidationError(f'The label "{label}" is listed twice.')
        cleaned.append(label)
    if not cleaned:
        raise ValidationError("Give at least one label, one per line.")
    if len(cleaned) > MAX_LABELS:
        raise ValidationError(
            f"{len(cleaned)} labels were given; a schema holds at most {MAX_LABELS}."
        )
    with transaction.atomic():
        dataset = dataset_lock(dataset)
        missing = {
            label: count
            for label, count in _labels_in_use(dataset, multiple).items()
            if label not in cleaned
        }
        if missing and not drop_labels_in_use:
            listed = ", ".join(
                f'"{label[:40]}" ({count:,} record{"" if count == 1 else "s"})'
                for label, count in sorted(missing.items(), key=lambda item: (-item[1], item[0]))[
                    :10
                ]
            )
            more = f" and {len(missing) - 10:,} more" if len(missing) > 10 else ""
            raise LabelsInUse(
                f"The new list leaves out labels that records have: {listed}{more}. Records "
                "keep their labels either way, but these would no longer be offered. Add them "
                "back to the list, or confirm that you mean to leave them off.",
                labels=missing,
            )
        dataset.label_schema = cleaned
        dataset.label_multiple = multiple
        dataset.save(update_fields=["label_schema", "label_multiple", "updated_at"])
    return dataset


def _unlabeled(dataset: Dataset):
    return Record.objects.filter(
        import_run_id=dataset.active_import_id, label="", is_excluded=False
    )


def _previous_id(dataset: Dataset, user) -> int | None:
    return (
        LabelChange.objects.filter(dataset=dataset, user=user)
        .order_by("-created_at", "-id")
        .values_list("record_id", flat=True)
        .first()
    )


def _claim(dataset: Dataset, user, record: Record) -> bool:
    """Hold ``record`` for ``user``; False if someone else holds it and their hold is fresh."""
    now = timezone.now()
    expires = now + timedelta(seconds=_claim_seconds())
    try:
        with transaction.atomic():
            claim, created = LabelClaim.objects.select_for_update().get_or_create(
                record=record, defaults={"dataset": dataset, "user": user, "expires_at": expires}
            )
    except IntegrityError:  # taken by a concurrent claim between our read and insert
        return False
    if created:
        return True
    if claim.user_id != user.pk and claim.expires_at > now:
        return False
    LabelClaim.objects.filter(pk=claim.pk).update(user=user, expires_at=expires)
    return True


def labeling_next(
    *, dataset: Dataset, user, after: int | None = None, record_id: int | None = None
) -> LabelingItem:
    """The record to show ``user`` now, held for them.

    ``record_id`` asks for one record (to relabel it, or to go back); otherwise the next record
    without a label after ``after`` in id order, wrapping around to the records skipped
    earlier, and never one held by someone else. Runs under the dataset row lock, so it never
    hands out a record of an import that another transaction is replacing.
    """
    access_check(user, "labeling", "label")
    with transaction.atomic():
        dataset = dataset_lock(dataset)
        if not dataset.active_import_id:
            raise ValidationError("This dataset has no imported records yet; import it first.")
        labels = label_choices(dataset)
        previous = _previous_id(dataset, user)
        # One claim per person and dataset: letting go of the last record first.
        mine = LabelClaim.objects.filter(dataset=dataset, user=user)
        if record_id is not None:
            record = Record.objects.filter(
                pk=record_id, import_run_id=dataset.active_import_id
            ).first()
            if record is None:
                raise ValidationError(
                    "That record is not in this dataset any more (it was imported again or "
                    "deleted)."
                )
            mine.exclude(record=record).delete()
            _claim(dataset, user, record)
            return LabelingItem(record, _remaining(dataset), labels, previous)
        mine.delete()
        record = _next_unclaimed(dataset, user, after)
        return LabelingItem(record, _remaining(dataset), labels, previous)


def _next_unclaimed(dataset: Dataset, user, after: int | None) -> Record | None:
    now = timezone.now()
    refused: list[int] = []
    for start in ((after,) if after else ()) + (None,):
        while True:
            held = LabelClaim.objects.filter(dataset=dataset, expires_at__gt=now).exclude(user=user)
            candidates = _unlabeled(dataset).exclude(id__in=held.values("record_id"))
            if start:
                candidates = candidates.filter(id__gt=start)
            if refused:
                candidates = candidates.exclude(id__in=refused)
            candidates = candidates.order_by("id")
            if connection.features.has_select_for_update_skip_locked:
                # Belt and braces with the dataset lock: a row being labeled is skipped.
                candidates = candidates.select_for_update(skip_locked=True)
            found = candidates.first()
            if found is None:
                break
            if _claim(dataset, user, found):
                return found
            refused.append(found.pk)
    return None


def _validated_label(dataset: Dataset, label: str) -> str:
    """``label`` checked against the dataset's labels; several (a|b) where the list allows
    them, stored once each in the list's order."""
    label = (label or "").strip()
    if not label:
        raise ValidationError("Choose a label.")
    choices = label_choices(dataset)
    given = split_labels(label) if dataset.label_multiple else [label]
    if not given:
        raise ValidationError("Choose a label.")
    for one in given:
        if one not in choices:
            shown = ", ".join(f'"{choice}"' for choice in choices[:20]) or "none yet"
            raise ValidationError(
                f'"{one[:80]}" is not one of this dataset\'s labels ({shown}). An analyst '
                "can add it to the label list."
            )
    # Several labels are stored once each, in the list's order: "b|a" and "a|b" are one.
    label = LABEL_SEPARATOR.join(sorted(set(given), key=choices.index))
    if len(label) > MAX_LABEL_CHARS:
        raise ValidationError(
            f"Together these labels are {len(label):,} characters long; a record's labels "
            f"can be at most {MAX_LABEL_CHARS}. Choose fewer of them."
        )
    return label


def split_labels(label: str) -> list[str]:
    """The labels of one record that may have several ("a|b")."""
    return [part.strip() for part in label.split(LABEL_SEPARATOR) if part.strip()]


def label_choices(dataset: Dataset) -> list[str]:
    """The labels offered: the list an analyst wrote; else every label the records have now
    or were given in the queue (so a label stays offered after its last record is relabeled,
    and a new import's labels appear), by name."""
    if dataset.label_schema:
        return list(dataset.label_schema)
    seen = set(dataset.label_choices)
    for old, new in (
        LabelChange.objects.filter(dataset=dataset).values_list("old_label", "new_label").distinct()
    ):
        seen.update(label for label in (old, new) if label)
    if dataset.label_multiple:  # "a|b" is two labels
        seen = {part for label in seen for part in split_labels(label)}
    return sorted(seen)


def _remaining(dataset: Dataset) -> int:
    return dataset.unlabeled_count


def _sorted_counts(counts: dict[str, int]) -> dict[str, int]:
    kept = {label: count for label, count in counts.items() if count > 0}
    return dict(sorted(kept.items(), key=lambda item: (-item[1], item[0])))


def record_label_set(
    *,
    dataset: Dataset,
    user,
    record_id: int,
    label: str,
    expected_label: str | None = None,
) -> Record:
    """Give record ``record_id`` the label ``label``.

    ``expected_label`` is the label the annotator saw; if the record has another one now,
    ``LabelConflict`` is raised and nothing changes.
    """
    access_check(user, "labeling", "label")
    label = (label or "").strip()
    if not label:
        raise ValidationError("Choose a label.")
    with transaction.atomic():
        # Counts are read and written under the dataset lock: no increment is ever lost.
        dataset = dataset_lock(dataset)
        label = _validated_label(dataset, label)
        record = (
            Record.objects.select_for_update()
            .filter(pk=record_id, import_run_id=dataset.active_import_id)
            .first()
        )
        if record is None:
            raise ValidationError(
                "That record is not in this dataset any more (it was imported again or deleted)."
            )
        if expected_label is not None and record.label != expected_label:
            last = (
                LabelChange.objects.filter(record=record)
                .select_related("user")
                .order_by("-created_at", "-id")
                .first()
            )
            who = last.user.get_username() if last and last.user else "someone else"
            now = f'"{record.label}"' if record.label else "no label"
            raise LabelConflict(
                f"While you were reading, {who} changed this record's label to {now}. It is "
                "shown as it is now; choose again to change it."
            )
        old = record.label
        LabelClaim.objects.filter(record=record).delete()
        if old == label:
            return record
        if record.original_label is None and old:
            # The label the file (or cleaning) gave, kept; a record that had none keeps NULL
            # ("never edited"): its history is in LabelChange.
            record.original_label = old
        record.label = label
        record.save(update_fields=["label", "original_label"])
        LabelChange.objects.create(
            dataset=dataset, record=record, old_label=old, new_label=label, user=user
        )
        if not record.is_excluded:
            counts = dict(dataset.label_counts or {})
            counts[old] = counts.get(old, 0) - 1
            counts[label] = counts.get(label, 0) + 1
            dataset.label_counts = _sorted_counts(counts)
            dataset.save(update_fields=["label_counts", "updated_at"])
    return record


def labeling_progress(*, dataset: Dataset, user) -> dict:
    """How far the dataset is, and how many labels ``user`` gave today."""
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    mine = LabelChange.objects.filter(dataset=dataset, user=user, created_at__gte=today).count()
    return {**dataset.labeling_totals, "mine_today": mine}


CARRY_BATCH = 2000


def labels_carry_over(*, dataset_id: int, previous_import_id: int, import_id: int) -> int:
    """Keep labels given in the console when the file is imported again.

    A record labeled in the console whose row (same source row, and the same text as the file
    gave it or as cleaning left it) is in the new import gets its console label there, and its
    label history follows it. Rows whose text changed (another text mapping) keep what the file
    says. Returns how many were carried. Runs in the transaction that makes the new import
    active; one join finds every pair, however many labels there are.
    """
    from django.db.models import Case, When

    record = Record._meta.db_table
    change = LabelChange._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT old.id, new.id, old.label, new.label, new.original_label "  # noqa: S608
            f"FROM {record} old JOIN {record} new "
            "ON new.import_run_id = %s AND new.source_row = old.source_row "
            "AND (new.text = old.text OR new.text = old.original_text) "
            "WHERE old.import_run_id = %s AND old.id IN "
            f"(SELECT record_id FROM {change} WHERE dataset_id = %s)",
            [import_id, previous_import_id, dataset_id],
        )
        pairs = cursor.fetchall()
    updated = [
        Record(
            id=new_id,
            label=label,
            original_label=file_original if file_original is not None else (file_label or None),
        )
        for _, new_id, label, file_label, file_original in pairs
        if label != file_label
    ]
    Record.objects.bulk_update(updated, ["label", "original_label"], batch_size=CARRY_BATCH)
    for start in range(0, len(pairs), CARRY_BATCH):
        chunk = pairs[start : start + CARRY_BATCH]
        LabelChange.objects.filter(record_id__in=[old for old, *_ in chunk]).update(
            record_id=Case(*(When(record_id=old, then=new) for old, new, *_ in chunk))
        )
    return len(pairs)


BULK_LIMIT = 50_000
BULK_FILTERS = ("label", "split", "flag", "search")


def _bulk_filters(filters: dict) -> dict:
    """The records page's filters that bulk labeling takes; refuses none at all."""
    filters = {key: value for key, value in filters.items() if key in BULK_FILTERS}
    # "" is a choice for label and split (no label, unassigned); for flag and search it is none.
    chosen = [
        key
        for key, value in filters.items()
        if (key in ("label", "split") and value is not None and value != "__any__")
        or (key in ("flag", "search") and value)
    ]
    if not chosen:
        raise ValidationError(
            "Choose a filter first (a search, a label, a split or a flag): labeling every "
            "record at once is not offered."
        )
    return filters


def _bulk_changing(dataset: Dataset, label: str, filters: dict):
    """The matching records that do not have ``label`` yet, refused past BULK_LIMIT."""
    from datasets_app.selectors import records_filtered

    records, _ = records_filtered(dataset=dataset, **filters)
    changing = records.exclude(label=label)
    if changing.order_by().values("id")[BULK_LIMIT : BULK_LIMIT + 1].exists():
        raise ValidationError(
            f"More than {BULK_LIMIT:,} records match these filters; label at most "
            f"{BULK_LIMIT:,} at once. Narrow the filters and try again."
        )
    return records, changing


@dataclass(frozen=True)
class BulkLabelPreview:
    label: str
    matching: int  # records the filters match
    changing: int  # of them, those that do not have the label yet
    by_label: dict[str, int]  # the labels the changing ones have now ("" = none), most first


def records_label_bulk_preview(
    *, dataset: Dataset, user, label: str, filters: dict
) -> BulkLabelPreview:
    """What ``records_label_bulk`` would change, to show before asking to confirm."""
    from django.db.models import Count

    access_check(user, "dataset", "change")
    filters = _bulk_filters(filters)
    if not dataset.active_import_id:
        raise ValidationError("This dataset has no imported records yet; import it first.")
    label = _validated_label(dataset, label)
    records, changing = _bulk_changing(dataset, label, filters)
    by_label = {
        row["label"]: row["count"]
        for row in changing.order_by().values("label").annotate(count=Count("id"))
    }
    return BulkLabelPreview(
        label=label,
        matching=records.count(),
        changing=sum(by_label.values()),
        by_label=dict(sorted(by_label.items(), key=lambda item: (-item[1], item[0]))),
    )


def records_label_bulk(
    *,
    dataset: Dataset,
    user,
    label: str,
    filters: dict,
    expected_count: int | None = None,
) -> BulkLabel | None:
    """Give every current record matching the records page's ``filters`` (label, split, flag,
    search) the label ``label``, e.g. all texts that mention "refund". Returns the BulkLabel
    (``changed_count``; undo it with ``records_label_bulk_undo``), or None if none changed.

    For analysts (it rewrites many records at once); at most BULK_LIMIT records, so a filter
    left empty by mistake cannot relabel a whole dataset. ``expected_count``: the number of
    records the person confirmed; if another number would change now, nothing does. Each change
    is logged like a label given in the queue, the file's label is kept as the original, and
    counts are recomputed.
    """
    from datasets_app.services.imports import dataset_refresh_counts

    access_check(user, "dataset", "change")
    filters = _bulk_filters(filters)
    with transaction.atomic():
        dataset = dataset_lock(dataset)
        if not dataset.active_import_id:
            raise ValidationError("This dataset has no imported records yet; import it first.")
        label = _validated_label(dataset, label)
        _, changing_records = _bulk_changing(dataset, label, filters)
        changing = list(changing_records.order_by("id").values_list("id", "label"))
        if expected_count is not None and len(changing) != expected_count:
            raise ValidationError(
                f"{len(changing):,} records would get this label now, not the "
                f"{expected_count:,} you confirmed (the records changed meanwhile). Nothing "
                "was changed; check the list and confirm again."
            )
        if not changing:
            return None
        bulk = BulkLabel.objects.create(
            dataset=dataset,
            label=label,
            filters=filters,
            changed_count=len(changing),
            created_by=user,
        )
        ids = [record_id for record_id, _ in changing]
        for start in range(0, len(ids), 10_000):
            chunk = ids[start : start + 10_000]
            # The file's (or cleaning's) label is kept once, as for a label given in the queue.
            Record.objects.filter(id__in=chunk, original_label__isnull=True).exclude(
                label=""
            ).update(original_label=F("label"))
            Record.objects.filter(id__in=chunk).update(label=label)
        LabelChange.objects.bulk_create(
            [
                LabelChange(
                    dataset=dataset,
                    record_id=record_id,
                    old_label=old,
                    new_label=label,
                    user=user,
                    bulk_label=bulk,
                )
                for record_id, old in changing
            ],
            batch_size=5000,
        )
        LabelClaim.objects.filter(record_id__in=ids).delete()
        dataset_refresh_counts(dataset)
    return bulk


def records_label_bulk_undo(*, dataset: Dataset, user, bulk_label_id: int) -> BulkLabel:
    """Give the records a bulk label changed the labels they had before it.

    A record labeled again since (in the queue, or by a later bulk label that was not undone)
    or changed by cleaning keeps its newer label, as a cleaning undo keeps queue labels; so
    does a record an import replaced. ``restored_count`` on the returned row says how many
    got their earlier label back.
    """
    from datasets_app.services.imports import dataset_refresh_counts

    access_check(user, "dataset", "change")
    with transaction.atomic():
        dataset = dataset_lock(dataset)
        bulk = (
            BulkLabel.objects.select_for_update().filter(pk=bulk_label_id, dataset=dataset).first()
        )
        if bulk is None:
            raise ValidationError("This dataset has no such bulk label.")
        if bulk.undone_at is not None:
            raise ValidationError("This bulk label was undone already.")
        changes = list(bulk.changes.values_list("record_id", "old_label"))
        restored: list[Record] = []
        for start in range(0, len(changes), 10_000):
            chunk = dict(changes[start : start + 10_000])
            newer = (
                LabelChange.objects.filter(
                    record_id__in=list(chunk), created_at__gte=bulk.created_at
                )
                .exclude(bulk_label=bulk)
                .exclude(bulk_label__undone_at__isnull=False)
                .values("record_id")
            )
            records = (
                Record.objects.filter(
                    id__in=list(chunk), import_run_id=dataset.active_import_id, label=bulk.label
                )
                .exclude(id__in=newer)
                .only("id", "label", "original_label")
            )
            for record in records:
                record.label = chunk[record.id]
                if record.original_label == record.label:
                    record.original_label = None  # as before the bulk label kept it
                restored.append(record)
        Record.objects.bulk_update(restored, ["label", "original_label"], batch_size=5000)
        LabelClaim.objects.filter(record_id__in=[record.id for record in restored]).delete()
        bulk.undone_at = timezone.now()
        bulk.undone_by = user
        bulk.restored_count = len(restored)
        bulk.save(update_fields=["undone_at", "undone_by", "restored_count", "updated_at"])
        dataset_refresh_counts(dataset)
    return bulk
