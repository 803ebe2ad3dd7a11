"""The agreement page's figures for one dataset: the annotations read once, computed by the
pure functions of ``datasets_app.agreement``.

Only the current import's records count, and only annotations not undone. The figures about
named people's work are for those who manage the dataset (analysts and admins), so reading
them takes the right to change the dataset.
"""

from __future__ import annotations

from collections import defaultdict

from django.contrib.auth import get_user_model

from datasets_app import agreement
from datasets_app.models import Annotation, Dataset, Record
from lepton_web.access import access_check


def dataset_agreement_get(*, user, dataset: Dataset) -> dict:
    """Every figure of the page and the API: pairs' kappa, alpha, the confusion between
    annotators, and per annotator their labels, speed, agreement with the resolved label and
    suggestion acceptance."""
    access_check(user, "dataset", "change")
    rows = list(
        Annotation.objects.filter(
            dataset=dataset,
            undone_at__isnull=True,
            user__isnull=False,
            record__import_run_id=dataset.active_import_id,
        ).values_list("record_id", "user_id", "label", "time_spent_ms", "suggestion_accepted")
    )
    annotations = [(record_id, user_id, label) for record_id, user_id, label, _, _ in rows]
    names = dict(
        get_user_model()
        .objects.filter(pk__in={user_id for _, user_id, _ in annotations})
        .values_list("pk", "username")
    )
    per_record: dict[int, int] = {}
    for record_id, _, _ in annotations:
        per_record[record_id] = per_record.get(record_id, 0) + 1
    overlapping = [record_id for record_id, count in per_record.items() if count >= 2]
    resolved = dict(
        Record.objects.filter(
            dataset=dataset, import_run_id=dataset.active_import_id, annotation_count__gte=2
        ).values_list("id", "label")
    )
    # The confusion matrix's rows: the dataset's labels in their button order, then any other
    # label given; only those that were given.
    seen = {label for _, _, label in annotations}
    labels = [label for label in dataset.label_choices if label in seen]
    labels += sorted(seen - set(labels))
    by_user: dict[int, list[tuple]] = defaultdict(list)
    for row in rows:
        by_user[row[1]].append(row)

    with_resolved = agreement.agreement_with_resolved(annotations, resolved)
    annotators = []
    for user_id in sorted(names, key=lambda pk: names[pk].lower()):
        mine = by_user[user_id]
        seconds = [row[3] / 1000 for row in mine if row[3]]
        speed = agreement.annotator_speed(seconds)
        resolved_figures = with_resolved.get(user_id, {"records": 0, "agreement": None})
        annotators.append(
            {
                "user_id": user_id,
                "username": names[user_id],
                "labels": len(mine),
                **speed,
                "resolved_records": resolved_figures["records"],
                "agreement_with_resolved": resolved_figures["agreement"],
                "suggestions": agreement.acceptance_rate(row[4] for row in mine),
            }
        )
    pairs = [
        {**pair, "first": names[pair["first"]], "second": names[pair["second"]]}
        for pair in agreement.pairwise_kappas(annotations)
    ]
    confusion = agreement.annotator_confusion(annotations, labels)
    return {
        "overlap": dataset.label_overlap,
        "annotations": len(annotations),
        "annotators": annotators,
        "records_annotated": len(per_record),
        "records_overlapping": len(overlapping),
        "alpha": agreement.krippendorff_alpha(annotations),
        "pairs": pairs,
        "confusion": confusion,
        # For the page's heat map: each row's cells with their count and share of the row.
        "confusion_rows": [
            {
                **confusion["per_label"][index],
                "cells": [
                    {"count": count, "share": share}
                    for count, share in zip(
                        confusion["matrix"][index], confusion["shares"][index], strict=True
                    )
                ],
            }
            for index in range(len(confusion["labels"]))
        ],
        "suggestions": agreement.acceptance_rate(row[4] for row in rows),
    }
