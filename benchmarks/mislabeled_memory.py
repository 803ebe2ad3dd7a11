"""Peak memory of the likely-mislabeled scan's numbers (features, k-fold out-of-fold
probabilities, flags) per scanned record, ours against ``models_app/label_issues.py`` at
BASELINE (loaded from git), each in a fresh process so the peaks (ru_maxrss) do not mix.

    .venv/bin/python benchmarks/mislabeled_memory.py [--records 50000] [--folds 5] [--json FILE]

The encoder is not run (MiniLM at ~135 texts/s would take most of an hour for 100k texts and its
memory does not depend on the record count): synthetic texts (the ingest benchmark's vocabulary,
class words planted so the classes can be learned) and 384-dimension float32 "embeddings"
(random, L2-normalised, with a class direction added), 6 classes, 5% of labels flipped. The
baseline gets every embedding at once, as the job gave them to it (``encoder.embed`` of all
texts); ours gets them in chunks through ``text_features_streamed``, as the job now does. Each
side prints the peak resident memory above the process's memory before the embeddings (the texts
are held already), seconds, and the flags' precision/recall against
the flipped labels; then the ratio baseline/ours and the number of records that fit in the
baseline's peak at ours' rate.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
BASELINE = "97a8a03"  # label_issues.py before the float32 / streamed / zero-weight changes
CLASSES = 6
DIMENSIONS = 384


def data(records: int, seed: int = 3):
    from ingest import WORDS

    rng = np.random.default_rng(seed)
    truth = rng.integers(0, CLASSES, records)
    vocabulary = np.array(WORDS)
    marks = [f"class{c}word" for c in range(CLASSES)]
    texts = []
    for label in truth:
        words = list(rng.choice(vocabulary, rng.integers(5, 25)))
        if rng.random() < 0.25:
            words.insert(int(rng.integers(0, len(words))), marks[label])
        texts.append(" ".join(words))
    given = truth.copy()
    flipped = rng.choice(records, records // 20, replace=False)
    given[flipped] = (truth[flipped] + rng.integers(1, CLASSES, len(flipped))) % CLASSES
    directions = rng.normal(size=(CLASSES, DIMENSIONS)).astype(np.float32)
    return texts, truth, given, sorted(flipped.tolist()), directions


def embeddings_for(rows: np.ndarray, truth: np.ndarray, directions: np.ndarray, seed: int):
    rng = np.random.default_rng(seed)
    block = rng.normal(size=(len(rows), DIMENSIONS)).astype(np.float32)
    block += 0.12 * directions[truth[rows]]
    block /= np.linalg.norm(block, axis=1, keepdims=True)
    return block


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def load_baseline():
    source = subprocess.run(
        ["git", "show", f"{BASELINE}:models_app/label_issues.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    spec = importlib.util.spec_from_loader("label_issues_baseline", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    exec(compile(source, "label_issues_baseline.py", "exec"), module.__dict__)  # noqa: S102
    return module


def one_side(side: str, records: int, folds: int) -> dict:
    texts, truth, given, flipped, directions = data(records)
    # Imports and a warm-up before the baseline memory is taken.
    import scipy.sparse  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    from cleanlab.filter import find_label_issues  # noqa: F401

    from models_app import label_issues

    module = load_baseline() if side == "baseline" else label_issues
    started = time.perf_counter()
    if side == "baseline":
        # The job embedded every text into one array and kept it while the scan ran.
        before = rss_mb()
        everything = embeddings_for(np.arange(records), truth, directions, 0)
        features = module.text_features(everything, texts)
    else:
        before = rss_mb()

        def embed(chunk, offset):
            return embeddings_for(np.arange(offset, offset + len(chunk)), truth, directions, 0)

        features = module.text_features_streamed(texts, dimensions=DIMENSIONS, embed=embed)
    built = time.perf_counter() - started
    probabilities = module.out_of_fold_probabilities(
        features, given, class_count=CLASSES, folds=folds
    )
    issues = module.find_issues(probabilities, given)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    precision, recall = module.precision_recall([i.index for i in issues], flipped)
    return {
        "side": side,
        "records": records,
        "peak_above_start_mb": round(peak - before, 1),
        "features_mb": round(
            (features.data.nbytes + features.indices.nbytes + features.indptr.nbytes) / 2**20, 1
        ),
        "features_seconds": round(built, 1),
        "seconds": round(seconds, 1),
        "flagged": len(issues),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "accuracy": round(float((probabilities.argmax(axis=1) == truth).mean()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--json", default="")
    parser.add_argument("--side", choices=["baseline", "ours"], help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.side:
        print(json.dumps(one_side(arguments.side, arguments.records, arguments.folds)))
        return
    import os

    results = {}
    load = os.getloadavg()
    for side in ("baseline", "ours"):
        answer = subprocess.run(
            [
                sys.executable,
                __file__,
                "--side",
                side,
                "--records",
                str(arguments.records),
                "--folds",
                str(arguments.folds),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        results[side] = json.loads(answer.stdout.strip().splitlines()[-1])
        print(json.dumps(results[side]))
    base, ours = results["baseline"], results["ours"]
    ratio = base["peak_above_start_mb"] / max(ours["peak_above_start_mb"], 0.1)
    print(
        f"\n{arguments.records:,} records, {arguments.folds} folds, load average "
        f"{load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; baseline = {BASELINE}\n"
        f"  peak above start: baseline {base['peak_above_start_mb']:,.0f} MB, "
        f"ours {ours['peak_above_start_mb']:,.0f} MB ({ratio:.2f}x less); "
        f"per record {base['peak_above_start_mb'] * 1024 / arguments.records:.1f} KB -> "
        f"{ours['peak_above_start_mb'] * 1024 / arguments.records:.1f} KB\n"
        f"  feature matrix: {base['features_mb']:,.0f} MB -> {ours['features_mb']:,.0f} MB\n"
        f"  seconds: {base['seconds']} -> {ours['seconds']}; precision/recall of the flags: "
        f"{base['precision']}/{base['recall']} -> {ours['precision']}/{ours['recall']}; "
        f"flagged {base['flagged']} -> {ours['flagged']}"
    )
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
