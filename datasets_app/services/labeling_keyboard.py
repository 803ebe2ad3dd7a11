"""The labeling page at the keyboard: model suggestions shown with a record, a label sent by the
page (with its idempotency key and whether the suggestion was accepted), and undoing one's own
last labels.

The queue itself (hand-out, holds, saving and resolving labels) is ``labeling.py``; this module
adds what the page needs around it.
"""

from __future__ import annotations

import re
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from datasets_app.models import (
    Annotation,
    Dataset,
    LabelChange,
    LabelClaim,
    Record,
    RecordSuggestion,
)
from datasets_app.services.labeling import (
    dataset_label_counts_move,
    dataset_labelable_check,
    dataset_labeling_read,
    label_choices,
    record_label_resolve,
    record_label_set,
)
from lepton_web.access import access_check

# A label can be undone from the queue this long after it was given; later, relabel the record.
UNDO_MINUTES = 30
CLIENT_KEY = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_TIME_SPENT_MS = 24 * 3600 * 1000


def record_suggestions_shown(*, dataset: Dataset, record_ids: list[int]) -> dict[int, dict]:
    """The suggestion to show with each record: the newest stored one (of any source) whose
    label is one the annotator can choose, as ``{"label", "probability", "source"}``."""
    if not record_ids:
        return {}
    choices = set(label_choices(dataset))
    shown: dict[int, dict] = {}
    rows = (
        RecordSuggestion.objects.filter(dataset=dataset, record_id__in=record_ids)
        .order_by("record_id", "-updated_at", "-id")
        .values_list("record_id", "label", "probability", "source")
    )
    for record_id, label, probability, source in rows:
        if record_id in shown or label not in choices:
            continue
        shown[record_id] = {"label": label, "probability": probability, "source": source}
    return shown


def labeling_submit(
    *,
    dataset: Dataset,
    user,
    record_id: int,
    label: str,
    client_key: str = "",
    expected_label: str | None = None,
    suggestion_label: str = "",
    suggestion_probability: float | None = None,
    time_spent_ms: int | None = None,
) -> Record:
    """Save a label sent by the labeling page.

    ``client_key`` is made by the page (or an API client) for this one label and sent again
    with every retry: a label whose key this user already sent is not applied twice ("": no
    such protection). ``suggestion_label`` is the
    model suggestion the page showed ("" for none): the annotation records whether the label
    given is that suggestion (accepted) or another one (changed).
    """
    client_key = (client_key or "").strip()
    if client_key and not CLIENT_KEY.match(client_key):
        raise ValidationError(
            "The label's request key must be 8 to 64 letters, digits, - or _. Reload the "
            "page and label the record again."
        )
    suggestion_label = (suggestion_label or "").strip()
    if suggestion_probability is not None and not 0 <= suggestion_probability <= 1:
        raise ValidationError("The suggestion's probability must be between 0 and 1.")
    if time_spent_ms is not None and not 0 <= time_spent_ms <= MAX_TIME_SPENT_MS:
        time_spent_ms = None  # a clock that jumped: unknown rather than wrong
    return record_label_set(
        dataset=dataset,
        user=user,
        record_id=record_id,
        label=label,
        expected_label=expected_label,
        time_spent_ms=time_spent_ms,
        suggestion_label=suggestion_label,
        suggestion_probability=suggestion_probability if suggestion_label else None,
        suggestion_accepted=(label.strip() == suggestion_label) if suggestion_label else None,
        client_key=client_key,
    )


def record_label_undo(*, dataset: Dataset, user, record_id: int) -> Record:
    """Undo the label ``user`` gave record ``record_id`` in the queue: their annotation is
    marked undone; if their label was the last change to the record's label, the record gets
    back the label it had before (logged as a LabelChange; none: it is back in the queue), and
    the record is resolved again from the other annotations. The record is held for ``user``
    to label again.

    Only one's own labels, given in the last UNDO_MINUTES, and only while nobody else has
    changed the record's label since (then it is refused and nothing changes).
    """
    access_check(user, "labeling", "label")
    with transaction.atomic():
        # The dataset's share lock (to the commit) before the record's, as the label paths
        # take them (a split holding the dataset and waiting for the record: no deadlock).
        dataset = dataset_labeling_read(dataset)
        dataset_labelable_check(dataset, user)
        record = (
            Record.objects.select_for_update(of=("self",))
            .filter(pk=record_id, import_run_id=dataset.active_import_id)
            .first()
        )
        if record is None:
            raise ValidationError(
                "That record is not in this dataset any more (it was imported again or deleted), "
                "so its label cannot be undone."
            )
        annotation = (
            Annotation.objects.select_for_update()
            .filter(record=record, user=user, undone_at__isnull=True)
            .first()
        )
        if annotation is None:
            raise ValidationError(
                "You have no label on this record to undo (it was undone already, or the label "
                "was given by someone else)."
            )
        now = timezone.now()
        if annotation.updated_at < now - timedelta(minutes=UNDO_MINUTES):
            raise ValidationError(
                f"This label was given more than {UNDO_MINUTES} minutes ago and can no longer "
                "be undone here; open the record from the records page to change it."
            )
        last = (
            LabelChange.objects.filter(record=record)
            .select_related("user")
            .order_by("-created_at", "-id")
            .first()
        )
        mine = last is not None and last.user_id == user.pk and last.bulk_label_id is None
        later = last is not None and not mine and last.created_at > annotation.updated_at
        if later and (dataset.label_overlap == 1 or _overrides(record, last)):
            who = last.user.get_username() if last.user else "someone else"
            now_label = f'"{last.new_label}"' if last.new_label else "no label"
            raise ValidationError(
                f"{who} changed this record's label to {now_label} after you labeled it, so "
                "your label can no longer be undone. Open the record to change it."
            )
        annotation.undone_at = now
        annotation.save(update_fields=["undone_at", "updated_at"])
        # The record's label came from this label (alone, or as one of the votes that resolved
        # it): it goes back to the label it had before, and is resolved again from the rest.
        if (mine or later) and last.new_label == record.label and last.old_label != record.label:
            _label_restore(dataset, record, last.old_label, user)
        record_label_resolve(dataset=dataset, record=record, user=user)
        LabelClaim.objects.filter(dataset=dataset, user=user, record=record).delete()
        LabelClaim.objects.create(
            dataset=dataset,
            user=user,
            record=record,
            expires_at=now + timedelta(seconds=settings.LABELING_CLAIM_SECONDS),
        )
    return record


def _overrides(record: Record, change: LabelChange) -> bool:
    """Whether ``change`` set the record's label over its annotators (a bulk label, or an
    analyst's decision) rather than resolving their votes."""
    if change.bulk_label_id is not None or change.user_id is None:
        return True
    return not Annotation.objects.filter(
        record=record, user_id=change.user_id, undone_at__isnull=True
    ).exists()


def _label_restore(dataset: Dataset, record: Record, label: str, user) -> None:
    """Give the locked ``record`` back ``label``, the one it had before an undone label: logged,
    counts moved, and the file's label no longer kept apart once it is the label again."""
    old = record.label
    record.label = label
    if record.original_label is not None and record.original_label == label:
        record.original_label = None  # as before the undone label kept it
    record.save(update_fields=["label", "original_label"])
    LabelChange.objects.create(
        dataset=dataset, record=record, old_label=old, new_label=label, user=user
    )
    if not record.is_excluded:
        dataset_label_counts_move(dataset, {old: -1, label: +1}, user=user)


def labeling_holds_extend(*, dataset: Dataset, user, record_ids: list[int]) -> int:
    """Hold the records the page still has (shown, fetched ahead, labeled and not yet sent) for
    ``user`` another LABELING_CLAIM_SECONDS from now; a page left alone lets them go when that
    runs out. Returns how many holds were extended."""
    if not record_ids:
        return 0
    expires = timezone.now() + timedelta(seconds=settings.LABELING_CLAIM_SECONDS)
    return LabelClaim.objects.filter(dataset=dataset, user=user, record_id__in=record_ids).update(
        expires_at=expires
    )


def labeling_record_now(*, dataset: Dataset, record_id: int) -> Record | None:
    """Record ``record_id`` as it is now, if it is in the dataset's current import (to show
    again with the reason a label was refused)."""
    return Record.objects.filter(pk=record_id, import_run_id=dataset.active_import_id).first()
