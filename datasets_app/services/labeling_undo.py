"""Undoing one's last label over the API: which label is "the last", and why an undo is refused.

The undo itself is the labeling page's (``labeling_keyboard.record_label_undo``): the annotation
is marked undone, the record gets back the label it had before when that label came from it,
and the record is held for the person to label again. This module adds what an API client needs
around it: without a record id it undoes the caller's most recent label in the dataset (so
calling it again walks back, as U does on the page), with one it undoes that label only if it is
still the caller's last (a retried request then cannot undo a second label), and each refusal is
a distinct exception so the API can answer 404 (no such record) or 409 (nothing to undo, not
the last label, changed by someone else since, too late).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.http import Http404

from datasets_app.models import Annotation, Dataset, Record
from datasets_app.services.labeling_keyboard import UNDO_MINUTES, record_label_undo
from lepton_web.access import access_check


class NothingToUndo(ValidationError):
    """The caller has no label (not undone yet) to undo: in the dataset, or on that record."""


class UndoRefused(ValidationError):
    """The caller's label exists but cannot be undone now (not their last, too old, or someone
    changed the record's label since); nothing changed."""


@dataclass(frozen=True)
class UndoResult:
    record: Record  # as it is now, held for the caller
    undone_label: str  # the label that was undone


def labeling_undo_last(*, dataset: Dataset, user, record_id: int | None = None) -> UndoResult:
    """Undo ``user``'s last label in ``dataset`` (the annotation of theirs, not undone, changed
    most recently, on a record of the current import). With ``record_id`` the label undone must
    be on that record and must be that last one.

    Raises ``Http404`` when ``record_id`` is not a record of the dataset, ``NothingToUndo``
    when the user has no label to undo there, ``UndoRefused`` when their label cannot be undone
    (not their last, older than UNDO_MINUTES, changed by someone else since). Nothing changes
    when it raises.
    """
    access_check(user, "labeling", "label")
    active = Annotation.objects.filter(
        dataset=dataset,
        user=user,
        undone_at__isnull=True,
        record__import_run_id=dataset.active_import_id,
    )
    if record_id is not None:
        if not Record.objects.filter(pk=record_id, import_run_id=dataset.active_import_id).exists():
            raise Http404(
                f"Record {record_id} is not in this dataset (it was imported again or deleted), "
                "so there is no label of yours on it to undo."
            )
        if not active.filter(record_id=record_id).exists():
            raise NothingToUndo(
                f"You have no label on record {record_id} to undo: it was undone already, or "
                "the record was labeled by someone else."
            )
    last = active.order_by("-updated_at", "-id").values_list("record_id", "label").first()
    if last is None:
        raise NothingToUndo(
            "You have no label in this dataset to undo: you have not labeled a record here, or "
            "your labels were undone already."
        )
    last_record_id, label = last
    if record_id is not None and record_id != last_record_id:
        raise UndoRefused(
            f"Only your last label can be undone, and your last label in this dataset is on "
            f"record {last_record_id}, not {record_id}. Undo that one first."
        )
    try:
        record = record_label_undo(dataset=dataset, user=user, record_id=last_record_id)
    except ValidationError as exc:
        # Checked under the record's lock by the page's undo: someone changed the record's label
        # since, the label is older than UNDO_MINUTES, or a concurrent undo got there first.
        # DatasetBusy (a job saving the dataset) is left to the caller as it is.
        from datasets_app.services.jobs import DatasetBusy

        if isinstance(exc, DatasetBusy):
            raise
        raise UndoRefused(exc.messages) from exc
    return UndoResult(record=record, undone_label=label)


__all__ = ["UNDO_MINUTES", "NothingToUndo", "UndoRefused", "UndoResult", "labeling_undo_last"]
