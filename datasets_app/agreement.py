"""Inter-annotator agreement, pure Python: no Django, no I/O.

Labels are nominal categories (a multi-label record's joined "a|b" counts as one category).
An annotation is ``(record_id, annotator, label)``; every function takes a list of them with at
most one per record and annotator (the queue keeps one per person; undone ones are left out by
the caller).

- Cohen's kappa for a pair of annotators, on the records both labeled (Cohen 1960), equal to
  ``sklearn.metrics.cohen_kappa_score``.
- Krippendorff's alpha, nominal, over every record with two or more annotations (Krippendorff
  2011, "Computing Krippendorff's Alpha-Reliability"), equal to ``krippendorff.alpha`` with
  ``level_of_measurement="nominal"``; it allows any number of annotators and missing values.
- The confusion matrix between annotators: for every record and every ordered pair of two of
  its annotators, the first one's label against the second one's.

A figure that the data cannot define (fewer than two records in common, or one label used by
everybody, where chance agreement is already 1) is None, never a made-up 0 or 1.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from itertools import combinations, permutations

Annotation = tuple[Hashable, Hashable, str]  # (record_id, annotator, label)


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float | None:
    """Cohen's kappa of two annotators' labels for the same records (in the same order)."""
    if len(first) != len(second):
        raise ValueError("both annotators need one label per record, in the same order")
    count = len(first)
    if count == 0:
        return None
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / count
    first_counts, second_counts = Counter(first), Counter(second)
    expected = sum(first_counts[label] * second_counts[label] for label in first_counts) / (
        count * count
    )
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def _by_record(annotations: Iterable[Annotation]) -> dict[Hashable, dict[Hashable, str]]:
    records: dict[Hashable, dict[Hashable, str]] = defaultdict(dict)
    for record_id, annotator, label in annotations:
        records[record_id][annotator] = label
    return records


def pairwise_kappas(annotations: Iterable[Annotation]) -> list[dict]:
    """Cohen's kappa for every pair of annotators who labeled at least one record in common:
    ``{"first", "second", "records", "agreement" (share of equal labels), "kappa"}``, pairs
    in order of their annotators."""
    records = _by_record(annotations)
    shared: dict[tuple, list[tuple[str, str]]] = defaultdict(list)
    for labels in records.values():
        for first, second in combinations(sorted(labels, key=str), 2):
            shared[(first, second)].append((labels[first], labels[second]))
    result = []
    for (first, second), pairs in sorted(shared.items(), key=lambda item: str(item[0])):
        first_labels = [a for a, _ in pairs]
        second_labels = [b for _, b in pairs]
        result.append(
            {
                "first": first,
                "second": second,
                "records": len(pairs),
                "agreement": sum(a == b for a, b in pairs) / len(pairs),
                "kappa": cohen_kappa(first_labels, second_labels),
            }
        )
    return result


def krippendorff_alpha(annotations: Iterable[Annotation]) -> float | None:
    """Krippendorff's alpha for nominal labels over the records with 2+ annotations."""
    coincidences: dict[tuple[str, str], float] = defaultdict(float)
    for labels in _by_record(annotations).values():
        values = list(labels.values())
        if len(values) < 2:
            continue  # a single value is not pairable: it tells nothing about agreement
        weight = 1.0 / (len(values) - 1)
        for first, second in permutations(range(len(values)), 2):
            coincidences[(values[first], values[second])] += weight
    totals: dict[str, float] = defaultdict(float)
    for (first, _), weight in coincidences.items():
        totals[first] += weight
    pairable = sum(totals.values())
    if pairable <= 1:
        return None
    disagreement = sum(w for (first, second), w in coincidences.items() if first != second)
    expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k)
    if expected == 0:
        return None  # everybody used one label: chance agreement is complete
    return 1.0 - (pairable - 1) * disagreement / expected


def annotator_confusion(
    annotations: Iterable[Annotation], labels: Sequence[str] | None = None
) -> dict:
    """For every record and ordered pair of its annotators, the first one's label (row)
    against the second one's (column); the matrix is symmetric. Per label: how often a second
    annotator gave the same label when one gave it. ``labels`` orders the rows (default: every
    label seen, by name); labels outside it are left out."""
    counts: Counter = Counter()
    for values in _by_record(annotations).values():
        for first, second in permutations(list(values.values()), 2):
            counts[(first, second)] += 1
    order = (
        list(labels) if labels is not None else sorted({label for pair in counts for label in pair})
    )
    matrix = [[counts[(row, column)] for column in order] for row in order]
    # Each row as shares of its total: what the page shades a cell by.
    shares = [[count / sum(row) if sum(row) else 0.0 for count in row] for row in matrix]
    per_label = []
    for index, label in enumerate(order):
        total = sum(matrix[index])
        per_label.append(
            {
                "label": label,
                "pairs": total,
                "agreement": matrix[index][index] / total if total else None,
            }
        )
    return {"labels": order, "matrix": matrix, "shares": shares, "per_label": per_label}


def annotator_speed(seconds: Sequence[float]) -> dict:
    """Median seconds per label and labels per hour (from the total time), from the times an
    annotator spent on their records; unknown times are left out by the caller."""
    if not seconds:
        return {"timed": 0, "median_seconds": None, "per_hour": None}
    total = sum(seconds)
    return {
        "timed": len(seconds),
        "median_seconds": statistics.median(seconds),
        "per_hour": 3600.0 * len(seconds) / total if total > 0 else None,
    }


def agreement_with_resolved(
    annotations: Iterable[Annotation], resolved: dict[Hashable, str]
) -> dict[Hashable, dict]:
    """Per annotator, on records that have a resolved label and 2+ annotations (with one
    annotation the resolved label is that annotation, which says nothing): how many such
    records, and the share where the annotator's label is the resolved one."""
    records = _by_record(annotations)
    tally: dict[Hashable, list[int]] = defaultdict(lambda: [0, 0])
    for record_id, labels in records.items():
        final = resolved.get(record_id, "")
        if not final or len(labels) < 2:
            continue
        for annotator, label in labels.items():
            tally[annotator][0] += 1
            tally[annotator][1] += label == final
    return {
        annotator: {"records": total, "agreement": matched / total}
        for annotator, (total, matched) in tally.items()
    }


def acceptance_rate(outcomes: Iterable[bool | None]) -> dict:
    """Of the labels given with a suggestion shown (True: accepted, False: changed; None: no
    suggestion, left out), how many and the share accepted."""
    shown = [outcome for outcome in outcomes if outcome is not None]
    accepted = sum(1 for outcome in shown if outcome)
    return {
        "shown": len(shown),
        "accepted": accepted,
        "rate": accepted / len(shown) if shown else None,
    }
