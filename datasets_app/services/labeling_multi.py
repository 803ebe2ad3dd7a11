"""The labeling queue for datasets whose records may have several labels ("a|b").

The keyboard page ticks labels with the number keys and Enter saves the ticked set, or accepts
the model's suggested set when nothing was ticked. What that needs on the server:

- a suggested set is shown when every label in it is one the annotator can choose (a single-label
  suggestion must be one of the choices; ``labeling_keyboard.record_suggestions_shown`` checks
  only that), written in the label list's order;
- a set sent by the page is compared with the suggestion as a set ("b|a" accepts "a|b"), so the
  annotation records the suggestion as accepted or changed correctly.

Saving, holds, undo and the outbox are those of the single-label queue
(``labeling_keyboard``): a set is one label string, "a|b".
"""

from __future__ import annotations

from datasets_app.models import Dataset, Record, RecordSuggestion
from datasets_app.services.labeling import LABEL_SEPARATOR, label_choices, split_labels
from datasets_app.services.labeling_keyboard import labeling_submit, record_suggestions_shown


def label_set_canonical(label: str, choices: list[str]) -> str:
    """``label`` ("b|a", " a | b ", "a|a") as the page and the records store a set: each label
    once, in the order of ``choices`` (labels not among them last, by name)."""
    order = {choice: index for index, choice in enumerate(choices)}
    given = set(split_labels(label or ""))
    return LABEL_SEPARATOR.join(sorted(given, key=lambda one: (order.get(one, len(order)), one)))


def suggestions_shown(*, dataset: Dataset, record_ids: list[int]) -> dict[int, dict]:
    """The suggestion to show with each record, as ``record_suggestions_shown`` gives it: for a
    dataset whose records may have several labels, the newest suggested set whose labels are
    all choices, written in the list's order."""
    if not dataset.label_multiple:
        return record_suggestions_shown(dataset=dataset, record_ids=record_ids)
    if not record_ids:
        return {}
    choices = label_choices(dataset)
    offered = set(choices)
    shown: dict[int, dict] = {}
    rows = (
        RecordSuggestion.objects.filter(dataset=dataset, record_id__in=record_ids)
        .order_by("record_id", "-updated_at", "-id")
        .values_list("record_id", "label", "probability", "source")
    )
    for record_id, label, probability, source in rows:
        if record_id in shown:
            continue
        labels = split_labels(label)
        if not labels or not set(labels) <= offered:
            continue
        shown[record_id] = {
            "label": label_set_canonical(label, choices),
            "probability": probability,
            "source": source,
        }
    return shown


def labeling_submit_labels(
    *,
    dataset: Dataset,
    user,
    record_id: int,
    label: str,
    suggestion_label: str = "",
    **given,
) -> Record:
    """``labeling_submit`` for the page, the form and the API alike: where a record may have
    several labels, the set given and the suggested set are written in the list's order first,
    so a set equal to the suggestion counts as accepting it whatever order it came in. Other
    arguments (key, expected label, probability, time spent) go through unchanged."""
    if dataset.label_multiple:
        choices = label_choices(dataset)
        label = label_set_canonical(label, choices)
        if suggestion_label:
            suggestion_label = label_set_canonical(suggestion_label, choices)
    return labeling_submit(
        dataset=dataset,
        user=user,
        record_id=record_id,
        label=label,
        suggestion_label=suggestion_label,
        **given,
    )
