"""Suggested labels on records, made by a model (batch prediction) for the labeling queue."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from datasets_app.models import Dataset, Record, RecordSuggestion

STORE_BATCH = 5_000
MAX_LABEL_CHARS = 500
MAX_SOURCE_CHARS = 200


def record_suggestions_store(
    *,
    dataset: Dataset,
    predictions: Iterable[dict],
    source: str,
    user=None,
    replaces_prefix: str = "",
) -> dict[str, int]:
    """Store one suggestion per record for ``source``, replacing that source's earlier ones.

    ``predictions`` holds ``{"record_id", "label", "probability"}`` (probability 0-1 or None),
    and optionally ``"margin"`` (top-1 minus top-2 probability) and ``"entropy"`` (nats) for
    ordering the queue by uncertainty.
    Records that are not (or no longer) in the dataset, for example replaced by a re-import
    since the snapshot was taken, are skipped and counted. With ``replaces_prefix``, the
    dataset's suggestions of other sources starting with it are removed in the same
    transaction (a dataset keeps one model's pre-labels). Returns ``{"stored", "skipped"}``.
    """
    source = (source or "").strip()
    if not source:
        raise ValidationError("Name the source of the suggestions (for example the model version).")
    if len(source) > MAX_SOURCE_CHARS:
        raise ValidationError(
            f"The source name can be up to {MAX_SOURCE_CHARS} characters; this one has "
            f"{len(source)}."
        )
    stored = skipped = 0
    rows = iter(predictions)
    with transaction.atomic():
        while chunk := list(islice(rows, STORE_BATCH)):
            wanted = {int(item["record_id"]) for item in chunk}
            present = set(
                Record.objects.filter(dataset=dataset, id__in=wanted).values_list("id", flat=True)
            )
            now = timezone.now()
            suggestions = []
            for item in chunk:
                record_id = int(item["record_id"])
                label = str(item.get("label") or "")
                if record_id not in present or not label:
                    skipped += 1
                    continue
                suggestions.append(
                    RecordSuggestion(
                        dataset=dataset,
                        record_id=record_id,
                        label=label[:MAX_LABEL_CHARS],
                        probability=_probability(item.get("probability")),
                        margin=_probability(item.get("margin")),
                        entropy=_number(item.get("entropy")),
                        source=source,
                        created_by=user,
                        created_at=now,
                        updated_at=now,
                    )
                )
            RecordSuggestion.objects.bulk_create(
                suggestions,
                update_conflicts=True,
                unique_fields=["record", "source"],
                update_fields=[
                    "label",
                    "probability",
                    "margin",
                    "entropy",
                    "created_by",
                    "updated_at",
                ],
            )
            stored += len(suggestions)
        if replaces_prefix:
            RecordSuggestion.objects.filter(
                dataset=dataset, source__startswith=replaces_prefix
            ).exclude(source=source).delete()
    return {"stored": stored, "skipped": skipped}


def _probability(value: object) -> float | None:
    if value is None:
        return None
    number = float(value)
    if number != number:  # NaN
        return None
    return min(1.0, max(0.0, number))


def _number(value: object) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if number != number else max(0.0, number)
