"""The pure parts of benchmarks/quality.py: the held-out test split (stratified, seed 13,
deterministic, disjoint from train and validation), the train caps, the scores and the verdict.
No model is trained here."""

from __future__ import annotations

import importlib.util
import random
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location(
        "bench_quality", ROOT / "benchmarks" / "quality.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


quality = _load()


def _rows(seed: int = 0) -> tuple[list[str], list[str]]:
    """600 rows in 3 imbalanced classes; a few texts repeat (same label), one with a twist of
    case and spacing that the console's near-duplicate key treats as the same text."""
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    texts, labels = [], []
    for label, count in (("alpha", 360), ("beta", 180), ("gamma", 60)):
        for i in range(count):
            texts.append(f"{label} example number {i} {rng.randint(0, 10**9)}")
            labels.append(label)
    for i in range(0, 40, 4):
        texts.append(texts[i])
        labels.append(labels[i])
    texts.append(texts[1].upper() + "  ")
    labels.append(labels[1])
    return texts, labels


def _pairs(split) -> Counter:
    return Counter(zip(split.texts, split.labels, strict=True))


def test_holdout_is_deterministic_and_independent_of_row_order():
    texts, labels = _rows()
    first = quality.holdout_splits(texts, labels)
    second = quality.holdout_splits(list(texts), list(labels))
    for name in ("train", "validation", "test"):
        assert first[name].texts == second[name].texts
        assert first[name].labels == second[name].labels
    order = list(range(len(texts)))
    random.Random(5).shuffle(order)  # noqa: S311 - test data
    shuffled = quality.holdout_splits([texts[i] for i in order], [labels[i] for i in order])
    for name in ("train", "validation", "test"):
        assert _pairs(shuffled[name]) == _pairs(first[name])


def test_test_split_is_a_stratified_tenth_and_never_overlaps_train_or_validation():
    texts, labels = _rows()
    splits = quality.holdout_splits(texts, labels)
    assert sum(len(s) for s in splits.values()) == len(texts)
    assert _pairs(splits["train"]) + _pairs(splits["validation"]) + _pairs(
        splits["test"]
    ) == Counter(zip(texts, labels, strict=True))
    # Repeated texts (and the upper-cased near-duplicate) stay on one side of the test line.
    normal = {t.strip().lower() for t in splits["test"].texts}
    rest = {t.strip().lower() for t in splits["train"].texts + splits["validation"].texts}
    assert not normal & rest
    assert not set(splits["train"].texts) & set(splits["validation"].texts)
    test_counts = Counter(splits["test"].labels)
    for label, count in Counter(labels).items():
        assert abs(test_counts[label] - count / 10) <= 2, (label, test_counts)
    # The rest follows the console's 80/10/10: validation is about an eighth of train.
    assert abs(len(splits["validation"]) - len(texts) / 10) <= 3
    assert abs(len(splits["train"]) - len(texts) * 0.8) <= 3


def test_a_different_seed_gives_a_different_test_split(monkeypatch):
    texts, labels = _rows()
    base = set(quality.holdout_splits(texts, labels)["test"].texts)
    monkeypatch.setattr(quality, "SEED", 14)
    other = set(quality.holdout_splits(texts, labels)["test"].texts)
    assert base != other


def test_cap_samples_train_and_validation_stratified_and_leaves_test_alone():
    texts, labels = _rows()
    splits = quality.holdout_splits(texts, labels)
    small = quality.capped(splits, 100)
    assert len(small["train"]) == pytest.approx(100, abs=2)
    assert small["test"] is splits["test"]
    assert _pairs(small["train"]) <= _pairs(splits["train"])
    assert _pairs(small["validation"]) <= _pairs(splits["validation"])
    counts = Counter(small["train"].labels)
    assert counts["alpha"] == pytest.approx(60, abs=2)
    assert counts["gamma"] == pytest.approx(10, abs=2)
    again = quality.capped(splits, 100)
    assert again["train"].texts == small["train"].texts
    assert quality.capped(splits, None) is splits
    assert quality.capped(splits, 10**6) is splits


def test_scores_and_verdict():
    truth = ["a", "a", "a", "b"]
    figures = quality.scores(truth, ["a", "a", "b", "b"])
    assert figures["accuracy"] == 0.75
    # a: precision 1, recall 2/3 -> 0.8; b: precision 1/2, recall 1 -> 2/3.
    assert figures["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert quality.scores(truth, ["b"] * 4)["macro_f1"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="equal length"):
        quality.scores(truth, ["a"])

    baseline = {"accuracy": 0.9, "macro_f1": 0.8, "seconds": 100.0}
    better = quality.verdict({"accuracy": 0.95, "macro_f1": 0.85, "seconds": 50.0}, baseline)
    assert better["target_met"] is True
    assert better["ratios"]["seconds"] == 0.5
    slower = quality.verdict({"accuracy": 0.95, "macro_f1": 0.85, "seconds": 150.0}, baseline)
    assert slower["target_met"] is False
    worse_f1 = quality.verdict({"accuracy": 0.95, "macro_f1": 0.8, "seconds": 50.0}, baseline)
    assert worse_f1["target_met"] is False


def test_several_seeds_are_judged_on_their_means():
    def run(seed, ours, baseline):
        return {
            "dataset": "fpb",
            "seed": seed,
            "ours": dict(zip(("accuracy", "macro_f1", "seconds"), ours, strict=True)),
            "baseline": dict(zip(("accuracy", "macro_f1", "seconds"), baseline, strict=True)),
        }

    # Seed 7 alone would fail (F1 below the baseline); the mean is ahead on both scores.
    runs = [
        run(42, (0.83, 0.82, 100.0), (0.83, 0.81, 200.0)),
        run(7, (0.84, 0.81, 120.0), (0.82, 0.812, 220.0)),
    ]
    assert quality.verdict(runs[1]["ours"], runs[1]["baseline"])["target_met"] is False
    mean = quality.mean_over_seeds(runs)
    assert mean["seeds"] == [42, 7]
    assert mean["ours"] == pytest.approx({"accuracy": 0.835, "macro_f1": 0.815, "seconds": 110.0})
    assert mean["baseline"]["macro_f1"] == pytest.approx(0.811)
    assert mean["ratios"]["seconds"] == pytest.approx(110 / 210)
    assert mean["target_met"] is True
    assert "target MET on the means" in quality.describe_mean(mean)

    tied = quality.mean_over_seeds([run(1, (0.8, 0.8, 1.0), (0.8, 0.79, 2.0))])
    assert tied["target_met"] is False  # a tie in accuracy does not beat it
    with pytest.raises(ValueError, match="no results"):
        quality.mean_over_seeds([])


def test_bad_seeds_are_refused_before_anything_trains(capsys):
    for bad in ("42,x", ","):
        with pytest.raises(SystemExit):
            quality.main(["--seeds", bad])
    errors = capsys.readouterr().err
    assert "--seeds takes whole numbers separated by commas; got '42,x'" in errors
    assert "--seeds needs at least one seed" in errors


def test_seed_and_seeds_together_are_refused(capsys):
    with pytest.raises(SystemExit):
        quality.main(["--seed", "7", "--seeds", "42,13"])
    assert "argument --seeds: not allowed with argument --seed" in capsys.readouterr().err


def test_dataset_names_are_checked():
    assert [d.key for d in quality.resolve_datasets("TREC, financial_phrasebank")] == [
        "trec",
        "fpb",
    ]
    with pytest.raises(SystemExit, match="Unknown dataset 'imdb'"):
        quality.resolve_datasets("trec,imdb")
