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
from collections.abc import Hashable, Iterable, Mapping, Sequence
from itertools import combinations

Annotation = tuple[Hashable, Hashable, str]  # (record_id, annotator, label)


def kappa_from_joint(joint: Mapping[tuple[str, str], int]) -> float | None:
    """Cohen's kappa from the counts of (first annotator's label, second's) over the records
    both labeled."""
    count = sum(joint.values())
    if count == 0:
        return None
    observed = sum(n for (a, b), n in joint.items() if a == b) / count
    first_counts: Counter = Counter()
    second_counts: Counter = Counter()
    for (a, b), n in joint.items():
        first_counts[a] += n
        second_counts[b] += n
    expected = sum(first_counts[label] * second_counts[label] for label in first_counts) / (
        count * count
    )
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float | None:
    """Cohen's kappa of two annotators' labels for the same records (in the same order)."""
    if len(first) != len(second):
        raise ValueError("both annotators need one label per record, in the same order")
    return kappa_from_joint(Counter(zip(first, second, strict=True)))


# The pair table: how many records had annotators (first, second) give labels (first_label,
# second_label), by the number m of annotations those records have; first < second. Every
# figure below is a sum over it, so the database can count it (GROUP BY) and only this small
# table crosses into Python, however many annotations there are.
PairTable = Mapping[tuple[Hashable, Hashable, str, str, int], int]


def _by_record(annotations: Iterable[Annotation]) -> dict[Hashable, dict[Hashable, str]]:
    records: dict[Hashable, dict[Hashable, str]] = defaultdict(dict)
    for record_id, annotator, label in annotations:
        records[record_id][annotator] = label
    return records


def pair_table(annotations: Iterable[Annotation]) -> Counter:
    """The pair table of a list of annotations (what the service's query counts)."""
    table: Counter = Counter()
    for labels in _by_record(annotations).values():
        size = len(labels)
        for first, second in combinations(sorted(labels, key=str), 2):
            table[(first, second, labels[first], labels[second], size)] += 1
    return table


def pairwise_kappas_from_table(table: PairTable) -> list[dict]:
    """Cohen's kappa for every pair of annotators who labeled at least one record in common:
    ``{"first", "second", "records", "agreement" (share of equal labels), "kappa"}``."""
    joints: dict[tuple, Counter] = defaultdict(Counter)
    for (first, second, first_label, second_label, _), count in table.items():
        joints[(first, second)][(first_label, second_label)] += count
    result = []
    for (first, second), joint in sorted(joints.items(), key=lambda item: str(item[0])):
        records = sum(joint.values())
        result.append(
            {
                "first": first,
                "second": second,
                "records": records,
                "agreement": sum(n for (a, b), n in joint.items() if a == b) / records,
                "kappa": kappa_from_joint(joint),
            }
        )
    return result


def pairwise_kappas(annotations: Iterable[Annotation]) -> list[dict]:
    return pairwise_kappas_from_table(pair_table(annotations))


def alpha_from_table(table: PairTable) -> float | None:
    """Krippendorff's alpha (nominal) from the pair table: each pair of values of a record
    with m values adds 1/(m-1) to the coincidences, both ways."""
    coincidences: dict[tuple[str, str], float] = defaultdict(float)
    for (_, _, first_label, second_label, size), count in table.items():
        weight = count / (size - 1)
        coincidences[(first_label, second_label)] += weight
        coincidences[(second_label, first_label)] += weight
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


def krippendorff_alpha(annotations: Iterable[Annotation]) -> float | None:
    """Krippendorff's alpha for nominal labels over the records with 2+ annotations (a single
    value is not pairable: it tells nothing about agreement)."""
    return alpha_from_table(pair_table(annotations))


def confusion_from_table(table: PairTable, labels: Sequence[str] | None = None) -> dict:
    """For every record and ordered pair of its annotators, the first one's label (row)
    against the second one's (column); the matrix is symmetric. Per label: how often a second
    annotator gave the same label when one gave it. ``labels`` orders the rows (default: every
    label seen, by name); labels outside it are left out."""
    counts: Counter = Counter()
    for (_, _, first_label, second_label, _), count in table.items():
        counts[(first_label, second_label)] += count
        counts[(second_label, first_label)] += count
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


def annotator_confusion(
    annotations: Iterable[Annotation], labels: Sequence[str] | None = None
) -> dict:
    return confusion_from_table(pair_table(annotations), labels)


def speed_figures(*, timed: int, total_seconds: float, median_seconds: float | None) -> dict:
    """Median seconds per label and labels per hour (from the total time) of ``timed`` labels."""
    if not timed:
        return {"timed": 0, "median_seconds": None, "per_hour": None}
    return {
        "timed": timed,
        "median_seconds": median_seconds,
        "per_hour": 3600.0 * timed / total_seconds if total_seconds > 0 else None,
    }


def median_from_counts(counts: Mapping[float, int]) -> float | None:
    """The median of values given as {value: how many times}."""
    total = sum(counts.values())
    if not total:
        return None
    middle: list[float] = []
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        # The middle one (odd total) or two (even total): positions (total-1)//2 and total//2.
        while len(middle) < 2 and seen > [(total - 1) // 2, total // 2][len(middle)]:
            middle.append(value)
        if len(middle) == 2:
            break
    return sum(middle) / 2


def annotator_speed(seconds: Sequence[float]) -> dict:
    """Speed from the times an annotator spent on their records (unknown times left out)."""
    return speed_figures(
        timed=len(seconds),
        total_seconds=sum(seconds),
        median_seconds=statistics.median(seconds) if seconds else None,
    )


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


def acceptance_figures(*, shown: int, accepted: int) -> dict:
    return {"shown": shown, "accepted": accepted, "rate": accepted / shown if shown else None}


def acceptance_rate(outcomes: Iterable[bool | None]) -> dict:
    """Of the labels given with a suggestion shown (True: accepted, False: changed; None: no
    suggestion, left out), how many and the share accepted."""
    shown = [outcome for outcome in outcomes if outcome is not None]
    return acceptance_figures(shown=len(shown), accepted=sum(1 for outcome in shown if outcome))
