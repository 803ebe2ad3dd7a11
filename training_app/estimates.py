"""Training-time estimates from a measured speed probe. Pure: no Django, no torch.

The probe (``engine.calibrate``) times real training steps and evaluation batches of one base
model with one method on one device at two sequence lengths. Seconds per example grow about
linearly with the padded length over the lengths classifiers use, so two points give a line;
the estimate walks the snapshot's text lengths the way the engine batches them (sorted by
length, each batch padded to its longest text), adds evaluations, checkpoints, loading and
saving, and finally applies the ratio of actual to estimated time of the runs that already
finished with this calibration (what the probe cannot see: other load on the machine,
data-dependent early stopping aside).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

DEFAULT_CHARS_PER_TOKEN = 4.2  # English WordPiece; the probe measures the model's own
SPECIAL_TOKENS = 2  # [CLS] and [SEP]
MAX_RUN_RATIOS = 20  # finished runs remembered per calibration
# Without finished runs the probe alone: the spread seen between probe and runs on one machine.
PROBE_RANGE = (0.8, 1.3)
# Without a probe (FLOP count against an assumed device speed): a factor of 3 either way was
# seen (issue 9: 118 s estimated, 370 s taken; 4,347 s estimated, 1,491 s taken).
UNCALIBRATED_RANGE = (0.4, 3.0)
CHECKPOINT_BYTES_PER_SECOND = 300e6
TOKENIZE_SECONDS_PER_TEXT = 3e-5
FIXED_SECONDS = 1.0  # the worst-examples pass, writing the model card and tokenizer


def token_length_counts(
    char_length_counts: Iterable[tuple[int, int]], *, chars_per_token: float, max_length: int
) -> list[tuple[int, int]]:
    """(tokens, count) pairs, ascending, from (characters, count) pairs of texts."""
    per_token = (
        chars_per_token if chars_per_token and chars_per_token > 0 else DEFAULT_CHARS_PER_TOKEN
    )
    merged: dict[int, int] = {}
    for chars, count in char_length_counts:
        tokens = min(int(max_length), math.ceil(max(int(chars), 0) / per_token) + SPECIAL_TOKENS)
        merged[tokens] = merged.get(tokens, 0) + int(count)
    return sorted((tokens, count) for tokens, count in merged.items() if count > 0)


def _line(points: Sequence[dict], key: str) -> tuple[float, float]:
    """(intercept, slope) of seconds per example against tokens, both at least 0."""
    measured = sorted((float(point["tokens"]), float(point[key])) for point in points)
    if not measured:
        return 0.0, 0.0
    (x1, y1), (x2, y2) = measured[0], measured[-1]
    if x2 <= x1:
        return 0.0, max(y1, y2) / max(x1, 1.0)
    slope = max(0.0, (y2 - y1) / (x2 - x1))
    return max(0.0, y1 - slope * x1), slope


def _padded_batches(
    lengths: Sequence[tuple[int, int]], batch_size: int
) -> Iterable[tuple[int, int]]:
    """(examples, padded length) of each batch of a length-sorted epoch."""
    batch_size = max(1, int(batch_size))
    filled, last = 0, 0
    for tokens, count in lengths:
        last, remaining = tokens, count
        if filled:  # the open batch takes the shortest of these, and pads to their length
            take = min(batch_size - filled, remaining)
            filled, remaining = filled + take, remaining - take
            if filled < batch_size:
                continue
            yield batch_size, tokens
        full, filled = divmod(remaining, batch_size)
        if full:
            yield full * batch_size, tokens
    if filled:
        yield filled, last


def estimate_seconds(
    *,
    calibration: dict,
    train_lengths: Sequence[tuple[int, int]],
    evaluation_lengths: Sequence[tuple[int, int]],
    n_validation: int,
    n_test: int,
    batch_size: int,
    gradient_accumulation: int,
    epochs: float,
    eval_every_steps: int | None,
    run_ratios: Sequence[float] = (),
) -> dict:
    """Seconds a run should take (``seconds``, ``low_seconds``, ``high_seconds``) and its parts.

    ``train_lengths`` / ``evaluation_lengths``: (tokens, count) pairs of the train texts and of
    the validation and test texts. ``run_ratios``: actual / estimated of finished runs.
    """
    points = calibration.get("points") or []
    train_a, train_b = _line(points, "train_seconds_per_example")
    eval_a, eval_b = _line(points, "eval_seconds_per_example")
    n_train = sum(count for _, count in train_lengths)
    group = max(1, int(batch_size) * max(1, int(gradient_accumulation)))
    steps_per_epoch = max(1, math.ceil(n_train / group))
    total_steps = max(1, math.ceil(float(epochs) * steps_per_epoch))

    epoch_seconds = sum(
        examples * (train_a + train_b * padded)
        for examples, padded in _padded_batches(train_lengths, batch_size)
    )
    train_seconds = epoch_seconds * total_steps / steps_per_epoch + total_steps * float(
        calibration.get("optimizer_step_seconds") or 0.0
    )
    n_evaluated = sum(count for _, count in evaluation_lengths)
    seconds_per_evaluated = (
        sum(count * (eval_a + eval_b * tokens) for tokens, count in evaluation_lengths)
        / n_evaluated
        if n_evaluated
        else eval_a + eval_b * 32
    )
    evaluations = math.ceil(total_steps / (eval_every_steps or steps_per_epoch))
    evaluate_seconds = seconds_per_evaluated * (evaluations * n_validation + n_test)
    trainable = float(calibration.get("trainable_parameters") or 0)
    parameters = float(calibration.get("parameters") or 0)
    # A checkpoint holds the trainable weights and two AdamW moments; the artifact all weights.
    save_seconds = (evaluations * trainable * 4 * 3 + parameters * 4) / CHECKPOINT_BYTES_PER_SECOND
    setup_seconds = (
        float(calibration.get("load_seconds") or 0.0)
        + (n_train + n_validation + n_test) * TOKENIZE_SECONDS_PER_TEXT
        + FIXED_SECONDS
    )
    raw = train_seconds + evaluate_seconds + save_seconds + setup_seconds
    ratios = [float(r) for r in run_ratios if r and r > 0][-MAX_RUN_RATIOS:]
    correction = statistics.median(ratios) if ratios else 1.0
    seconds = raw * correction
    if len(ratios) >= 3:
        low = seconds * min(0.9, 0.95 * min(ratios) / correction)
        high = seconds * max(1.1, 1.05 * max(ratios) / correction)
    else:
        low, high = seconds * PROBE_RANGE[0], seconds * PROBE_RANGE[1]
    return {
        "seconds": round(seconds, 1),
        "low_seconds": round(low, 1),
        "high_seconds": round(high, 1),
        "parts": {
            "setup": round(setup_seconds, 1),
            "train": round(train_seconds, 1),
            "evaluate": round(evaluate_seconds, 1),
            "save": round(save_seconds, 1),
        },
        "total_steps": total_steps,
        "correction": round(correction, 3),
        "runs_compared": len(ratios),
    }


def uncalibrated_range(seconds: float) -> tuple[float, float]:
    return round(seconds * UNCALIBRATED_RANGE[0], 1), round(seconds * UNCALIBRATED_RANGE[1], 1)


def describe_seconds(seconds: float) -> str:
    """A duration in words: "45 s", "6 min", "1.5 h"."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe_range(low: float, high: float) -> str:
    """A range of durations in words, in one unit: "40–70 s", "4–6 min", "1.2–2.0 h"."""
    low, high = max(0.0, float(low)), max(0.0, float(high))
    if high < 90:
        return f"{low:.0f}–{high:.0f} s"
    if high < 90 * 60:
        return f"{max(1, round(low / 60))}–{max(1, round(high / 60))} min"
    return f"{low / 3600:.1f}–{high / 3600:.1f} h"
