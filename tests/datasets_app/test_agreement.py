"""Agreement figures against hand-computed values and maintained implementations
(scikit-learn's cohen_kappa_score, the krippendorff package)."""

from __future__ import annotations

import math
import random
import statistics

import krippendorff
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from datasets_app import agreement

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: four observers,
# twelve units, nominal values (None: the observer gave none). Published alpha: 0.743.
KRIPPENDORFF_2011 = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}


def as_annotations(table: dict[str, list]) -> list[tuple[int, str, str]]:
    return [
        (unit, observer, str(value))
        for observer, values in table.items()
        for unit, value in enumerate(values)
        if value is not None
    ]


def test_cohen_kappa_of_a_hand_computed_pair():
    # 4 of 6 equal (0.667); each said a and b three times, so chance is 0.5: (0.667-0.5)/0.5.
    first = ["a", "a", "b", "b", "a", "b"]
    second = ["a", "b", "b", "b", "a", "a"]

    assert agreement.cohen_kappa(first, second) == pytest.approx(1 / 3)


@pytest.mark.parametrize("seed", range(5))
def test_cohen_kappa_equals_scikit_learn(seed):
    rng = random.Random(seed)  # noqa: S311 test data
    first = [rng.choice("abcd") for _ in range(60)]
    second = [label if rng.random() < 0.6 else rng.choice("abcd") for label in first]

    assert agreement.cohen_kappa(first, second) == pytest.approx(cohen_kappa_score(first, second))


def test_cohen_kappa_is_undefined_when_both_used_one_label_only():
    assert agreement.cohen_kappa(["a", "a"], ["a", "a"]) is None
    assert agreement.cohen_kappa([], []) is None


def test_krippendorff_alpha_of_the_published_example():
    alpha = agreement.krippendorff_alpha(as_annotations(KRIPPENDORFF_2011))

    assert alpha == pytest.approx(0.743, abs=5e-4)
    reliability = np.array(
        [[np.nan if v is None else v for v in values] for values in KRIPPENDORFF_2011.values()]
    )
    assert alpha == pytest.approx(
        krippendorff.alpha(reliability_data=reliability, level_of_measurement="nominal")
    )


@pytest.mark.parametrize("seed", range(5))
def test_krippendorff_alpha_equals_the_krippendorff_package_with_gaps(seed):
    rng = random.Random(seed)  # noqa: S311 test data
    truth = [rng.randrange(4) for _ in range(50)]
    table = {
        coder: [
            None if rng.random() < 0.3 else (t if rng.random() < 0.7 else rng.randrange(4))
            for t in truth
        ]
        for coder in ("ann", "bob", "cy")
    }
    reliability = np.array(
        [[np.nan if v is None else v for v in values] for values in table.values()], dtype=float
    )

    assert agreement.krippendorff_alpha(as_annotations(table)) == pytest.approx(
        krippendorff.alpha(reliability_data=reliability, level_of_measurement="nominal")
    )


def test_krippendorff_alpha_is_undefined_without_pairs_or_with_one_label():
    assert agreement.krippendorff_alpha([(1, "a", "x"), (2, "b", "y")]) is None
    assert agreement.krippendorff_alpha([(1, "a", "x"), (1, "b", "x")]) is None


def test_pairwise_kappas_use_only_the_records_both_labeled():
    annotations = [
        (1, "ann", "a"), (1, "bob", "a"),
        (2, "ann", "b"), (2, "bob", "a"), (2, "cy", "b"),
        (3, "ann", "b"), (3, "bob", "b"),
        (4, "cy", "a"),
    ]  # fmt: skip

    pairs = agreement.pairwise_kappas(annotations)

    assert [(p["first"], p["second"], p["records"]) for p in pairs] == [
        ("ann", "bob", 3),
        ("ann", "cy", 1),
        ("bob", "cy", 1),
    ]
    ann_bob = pairs[0]
    assert ann_bob["agreement"] == pytest.approx(2 / 3)
    assert ann_bob["kappa"] == pytest.approx(cohen_kappa_score(["a", "b", "b"], ["a", "a", "b"]))
    assert pairs[1]["kappa"] is None  # one record, one label each: chance is already 1
    assert pairs[2]["agreement"] == 0.0


def test_confusion_between_annotators_counts_ordered_pairs_per_record():
    annotations = [
        (1, "ann", "a"), (1, "bob", "a"),
        (2, "ann", "a"), (2, "bob", "b"), (2, "cy", "b"),
        (3, "ann", "c"),  # alone: no pair
    ]  # fmt: skip

    confusion = agreement.annotator_confusion(annotations, ["a", "b", "c"])

    # Record 1: (a,a) twice. Record 2: (a,b) x2, (b,a) x2, (b,b) x2.
    assert confusion["matrix"] == [[2, 2, 0], [2, 2, 0], [0, 0, 0]]
    assert confusion["shares"] == [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]
    assert confusion["per_label"] == [
        {"label": "a", "pairs": 4, "agreement": 0.5},
        {"label": "b", "pairs": 4, "agreement": 0.5},
        {"label": "c", "pairs": 0, "agreement": None},
    ]


def test_agreement_with_the_resolved_label_leaves_out_single_annotations():
    annotations = [
        (1, "ann", "a"), (1, "bob", "a"), (1, "cy", "b"),
        (2, "ann", "b"), (2, "bob", "b"),
        (3, "cy", "a"),  # one annotation: its own label, not counted
        (4, "ann", "a"), (4, "bob", "b"),  # a tie: not resolved yet
    ]  # fmt: skip
    resolved = {1: "a", 2: "b", 3: "a", 4: ""}

    result = agreement.agreement_with_resolved(annotations, resolved)

    assert result == {
        "ann": {"records": 2, "agreement": 1.0},
        "bob": {"records": 2, "agreement": 1.0},
        "cy": {"records": 1, "agreement": 0.0},
    }


def test_annotator_speed_is_the_median_and_labels_per_hour_of_the_total():
    speed = agreement.annotator_speed([2.0, 4.0, 12.0])

    assert speed == {"timed": 3, "median_seconds": 4.0, "per_hour": 600.0}
    assert agreement.annotator_speed([]) == {
        "timed": 0,
        "median_seconds": None,
        "per_hour": None,
    }


def test_acceptance_rate_counts_only_labels_given_with_a_suggestion():
    result = agreement.acceptance_rate([True, True, False, None, True, None])

    assert result["shown"] == 4
    assert result["accepted"] == 3
    assert math.isclose(result["rate"], 0.75)
    assert agreement.acceptance_rate([None])["rate"] is None


@pytest.mark.parametrize("seed", range(6))
def test_median_from_counts_equals_the_median_of_the_values(seed):
    rng = random.Random(seed)  # noqa: S311 test data
    values = [rng.choice([0.5, 1.0, 2.5, 3.0, 7.5]) for _ in range(rng.randint(1, 12))]
    counts = {value: values.count(value) for value in set(values)}

    assert agreement.median_from_counts(counts) == pytest.approx(statistics.median(values))
    assert agreement.median_from_counts({}) is None
