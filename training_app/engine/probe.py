"""Before a run: the arithmetic estimate and the measured speed probe (calibrate)."""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import torch

from training_app.engine.config import TrainingConfig, TrainingData, _SafeCallbacks
from training_app.engine.data import _prepare_labels, _TokenizedSplit
from training_app.engine.device import (
    _cpu_count,
    _resolve_autocast,
    _resolve_device,
    _synchronized,
    _thread_count,
    device_description,
)
from training_app.engine.loop import _Run
from training_app.engine.modeling import _predict


def estimate(
    config: TrainingConfig, n_train: int, mean_tokens: float, parameter_count: int
) -> dict:
    """Rough pre-start estimate: {"seconds": float, "memory_bytes": int}.

    Time: ~6 FLOPs per weight per token for full fine-tuning (forward 2, backward 4), ~4 for
    adapters (no weight gradients for frozen weights), against a sustained rate per device.
    Memory: weights, gradients and AdamW moments of the trainable part, plus activations of the
    longest batch (~68 bytes x hidden size per token per layer in fp32). The layer count and
    hidden size are guessed from the parameter count with BERT-like proportions.
    """
    parameters = max(int(parameter_count), 1)
    hidden = max(64.0, math.sqrt(parameters / 150))
    vocab_guess = 30522
    layers = max(1.0, (parameters - vocab_guess * hidden) / (12 * hidden * hidden))
    compute_parameters = max(parameters - vocab_guess * hidden, parameters * 0.3)

    full = config.method == "full"
    flops_per_token = (6 if full else 4) * compute_parameters
    padding_overhead = 1.15  # length-grouped batches still pad a little
    epochs = float(config.epochs)
    train_tokens = n_train * epochs * max(mean_tokens, 1.0) * padding_overhead
    eval_flops = 0.2 * n_train * max(mean_tokens, 1.0) * 2 * compute_parameters * math.ceil(epochs)

    device = _resolve_device(config, check=False)
    if device.type == "cuda":
        sustained = 60e12 if _resolve_autocast(config, device, check=False) else 15e12
    else:
        sustained = _cpu_count() * 22e9  # ~20% of a modern core's fp32 peak through BERT
    seconds = (train_tokens * flops_per_token + eval_flops) / sustained + 10.0

    trainable_fraction = 1.0 if full else 0.02
    bytes_per_weight = 4
    weights = parameters * bytes_per_weight
    optimizer_state = (
        parameters
        * trainable_fraction
        * bytes_per_weight
        * (3 if config.optimizer == "adamw" else 2)
    )
    longest = min(config.max_length, max(mean_tokens * 4, 16))
    activations = config.batch_size * longest * layers * 68 * hidden
    if not full:
        activations *= 0.8
    memory_bytes = int(weights + optimizer_state + activations + 300e6)
    return {"seconds": float(round(seconds, 1)), "memory_bytes": memory_bytes}


PROBE_LENGTHS = (32, 128)


PROBE_MAX_BATCH_SIZE = 32


PROBE_STEPS = 2


def calibrate(
    *,
    base_model_path: str,
    config: TrainingConfig,
    sample_texts: Sequence[str] = (),
    lengths: Sequence[int] = PROBE_LENGTHS,
    batch_size: int | None = None,
    steps: int = PROBE_STEPS,
) -> dict:
    """Time a few real training steps (forward, backward, optimizer) and evaluation batches of
    ``base_model_path`` with ``config``'s method on this machine, at a couple of sequence
    lengths; seconds, not FLOPs, so the estimate fits this device, threads and model. Batches
    are the run's own size (at most 32) at every length: smaller batches at the long length
    (8 x 128 tokens) measured each example about twice as slow as the runs went on a CPU
    (benchmarks/estimate.py). The fastest timed step counts (load only ever slows one down).

    Random token ids stand in for texts (speed does not depend on which tokens). With
    ``sample_texts``, also measures the tokenizer's characters per token on them. Takes a few
    seconds for a small model on a CPU; nothing is written.
    """
    batch_size = batch_size or max(1, min(int(config.batch_size), PROBE_MAX_BATCH_SIZE))
    probe_config = TrainingConfig(
        **{
            **asdict(config),
            "batch_size": batch_size,
            "gradient_accumulation": 1,
            "max_length": max(max(lengths), 2),
            "distributed": False,
            "class_weighting": False,
        }
    )
    names = ["a", "b"] if config.task != "regression" else None
    labels = [0.0, 1.0] if config.task == "regression" else ["a", "b"]
    if config.task == "multi_label":
        labels = [["a"], ["b"]]
    data = TrainingData(train_texts=["a", "b"], train_labels=labels, label_names=names)
    with tempfile.TemporaryDirectory(prefix="lepton-probe-") as folder:
        run = _Run(
            base_model_path=str(base_model_path),
            data=data,
            config=probe_config,
            output_dir=folder,
            checkpoint_dir=folder,
            callbacks=_SafeCallbacks(None, enabled=False),
            resume=False,
        )
        run.device = _resolve_device(probe_config)
        if run.device.type == "cpu":
            torch.set_num_threads(_thread_count())
        run.autocast_dtype = _resolve_autocast(probe_config, run.device)
        # As the run does: "auto" on a CPU scores in fp32 (loop._Run.execute).
        eval_dtype = (
            None
            if run.device.type == "cpu" and probe_config.precision == "auto"
            else run.autocast_dtype
        )
        run.pad_multiple = 8 if run.device.type == "cuda" else 1
        run.label_names, train_y, _, _ = _prepare_labels(data, probe_config.task)
        started = time.monotonic()
        run._load_model_and_tokenizer()
        load_seconds = time.monotonic() - started
        chars_per_token = None
        if sample_texts:
            texts = [text for text in sample_texts if text][:500]
            counted = run.tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]
            tokens = sum(len(ids) for ids in counted)
            if tokens:
                chars_per_token = sum(len(text) for text in texts) / tokens
        generator = np.random.default_rng(0)
        vocabulary = max(10, int(getattr(run.tokenizer, "vocab_size", 1000) or 1000))
        points = []
        optimizer_seconds: list[float] = []
        lengths = sorted({min(int(length), run.max_length) for length in lengths})
        sizes = [batch_size] * len(lengths)
        run.train_y = train_y[np.arange(sizes[0]) % len(train_y)]  # the largest batch
        for position, (length, size) in enumerate(zip(lengths, sizes, strict=True)):
            group = np.arange(size)
            rows = generator.integers(5, vocabulary, size=(size, length)).tolist()
            run.train_split = _TokenizedSplit.from_lists(rows)
            if position == 0:  # the model, adapters and optimizer, once
                run._build_training_objects()
            timings = []
            for step in range(steps + 1):  # the first step warms up (allocations, kernels)
                began = time.monotonic()
                run._train_step(group)
                middle = _synchronized(run.device)
                run._optimizer_step(step)
                ended = _synchronized(run.device)
                if step:
                    timings.append(middle - began)
                    optimizer_seconds.append(ended - middle)
            evaluations = []
            for _ in range(3):  # the first warms up
                began = time.monotonic()
                _predict(
                    run.module,
                    run.train_split,
                    group,
                    size,
                    run.pad_id,
                    run.device,
                    eval_dtype,
                    run.pad_multiple,
                )
                evaluations.append(_synchronized(run.device) - began)
            evaluation = min(evaluations[1:])
            points.append(
                {
                    "tokens": length,
                    "batch_size": size,
                    "train_seconds_per_example": min(timings) / size,
                    "eval_seconds_per_example": evaluation / size,
                }
            )
        parameters = sum(parameter.numel() for parameter in run.model.parameters())
        trainable = sum(parameter.numel() for _, parameter in run.trainable)
        device_type, device_name = device_description(probe_config)
        return {
            "device": device_type,
            "device_name": device_name,
            "method": config.method,
            "batch_size": batch_size,
            "points": points,
            "optimizer_step_seconds": min(optimizer_seconds),
            "load_seconds": load_seconds,
            "parameters": int(parameters),
            "trainable_parameters": int(trainable),
            "chars_per_token": chars_per_token,
        }
