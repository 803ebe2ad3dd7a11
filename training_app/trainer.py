"""Fine-tuning engine: a plain PyTorch loop around Hugging Face sequence-classification models.

No Django here. The service reads a dataset snapshot into `TrainingData`, builds a
`TrainingConfig`, passes a `Callbacks` object (progress, checkpoints, cancel) and calls `train()`.
torch, transformers, peft and accelerate are imported only in this module (and in
`models_app/inference.py`); importing it costs ~10 s, so import it lazily from the Celery task.

What makes it fast on a CPU (see shared STACK.md for the measurements behind this):
- texts are tokenised once, without padding, and cached in `checkpoint_dir/tokenized/` under a
  key made of the tokenizer, `max_length` and a hash of the texts;
- batches are length-grouped: the epoch's shuffled indices are cut into mega-batches of 50
  batches, each sorted by length and cut into batches, then the batch order is shuffled (the
  longest batch goes first, so an out-of-memory error shows at once, not an hour in);
- every batch is padded only to its own longest text (dynamic padding), straight from the
  cached token arrays in the training process: no DataLoader workers, because with the texts
  already tokenised a batch costs microseconds to assemble, less than handing it between
  processes would;
- the last layer of a BERT classifier computes only the [CLS] position its head reads (keys
  and values still see every token): the same logits and gradients, an eighth less work;
- fused AdamW where torch has it (CPU and CUDA in recent torch), bf16 autocast on GPUs that
  support it, `torch.inference_mode()` for evaluation;
- torch uses every core this process may run on, unless OMP_NUM_THREADS says fewer: on a shared
  machine a thread whose core is taken stalls every operation (a MiniLM step measured 0.2-3.3 s
  with 2 threads under load, a steady 0.33 s with 1), so a worker that shares its cores should
  set it.

Methods: "full" fine-tuning, or peft's LoRA, AdaLoRA, prefix tuning and IA3. For LoRA, AdaLoRA
and IA3 the artifact holds the adapter merged into the weights (a plain Hugging Face folder) plus
the raw adapter in `adapter/`. Prefix tuning cannot be merged: its artifact holds the base
weights with the trained classifier head, the prefix in `adapter/`, and `config.json` carries
`"lepton_unmerged_adapter": "adapter"`; load it with `load_artifact()` (transformers 5 renamed
BERT's `past_key_values` argument to `cache`, and peft 0.21's own prefix forward rejects it, so
this module passes the prefix itself).

After training: `evaluate_artifact()` scores a saved artifact on labelled texts (the same report
as the test split's) and `predict_logits()` gives its logits, both through the serving runtime
(`models_app/runtime`), so an evaluation scores exactly what an endpoint answers;
`load_artifact()` loads one as a torch module.

Steps, checkpoints and resuming. One step is one optimizer update over `batch_size *
gradient_accumulation` examples (a "step group"), split into micro-batches of `batch_size`. At
every evaluation (once per epoch unless `eval_every_steps`), and when cancelled, a checkpoint is
written atomically (a temp folder, then a rename) into `checkpoint_dir/ckpt-<step>/`: trainable
weights, optimizer, scheduler, RNG states and the data position (epoch, step within the epoch and
that epoch's batch order). The latest and the best checkpoints are kept. `train(resume=True)`
continues from the latest one and ends with the same weights as an uninterrupted run with the
same seed. A checkpoint written for other data or settings is ignored (event
"checkpoint_ignored"). `checkpoint_dir` also holds the tokenised-text cache; keep it outside
`output_dir`, which is replaced whole when the artifact is written.

CUDA out of memory: the step is retried with half the micro-batch (twice the accumulation, so the
effective batch and the maths stay the same) and an "oom_retry" event; at a micro-batch of 1 it
raises `TrainingError` saying what to change.

Several GPUs (data parallel). With `config.distributed = True`, `train()` uses accelerate's
`Accelerator` and must run in every process, e.g.::

    accelerate launch --num_processes 4 run_training.py      # GPUs
    accelerate launch --cpu --num_processes 2 run_training.py   # or torchrun; CPU uses gloo

where `run_training.py` calls `train(...)` with the same arguments in each process. Every
process sees the same step groups and takes its own share of each (`group[rank::world]`);
gradients are averaged by DDP and the loss is scaled so that the update equals the
single-process one. Evaluation is sharded and gathered to every process, so early-stopping
decisions agree. Only the main process calls the callbacks (its `should_stop()` answer is
broadcast), and writes checkpoints and the artifact; `checkpoint_dir` and `output_dir` must be on
a filesystem all processes share. Out-of-memory retry is single-process only: with several
processes an OOM raises `TrainingError` (the ranks could not agree on a new batch size mid-step).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as functional
from safetensors.torch import load_file, save_file

from models_app.runtime.artifact import UNMERGED_ADAPTER_KEY
from models_app.runtime.engines import prefix_cache_argument, prefix_logits

TASKS = ("single_label", "multi_label", "regression")
METHODS = ("full", "lora", "adalora", "prefix", "ia3")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULERS = ("linear", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
METRICS_BY_TASK = {
    "single_label": ("macro_f1", "accuracy", "loss"),
    "multi_label": ("macro_f1", "micro_f1", "subset_accuracy", "loss"),
    "regression": ("mse", "mae", "r2", "spearman", "loss"),
}
LOWER_IS_BETTER = frozenset({"loss", "mse", "mae"})
# Measured defaults for all-MiniLM-L6-v2 on short texts; adapters train few weights and need
# larger steps (LoRA ~10x, IA3 and prefix vectors more).
DEFAULT_LEARNING_RATES = {
    "full": 5e-5,
    # Measured on Financial PhraseBank (benchmarks/train.py --accuracy, batch 32, 3 epochs):
    # 5e-4 reached 0.685 accuracy, 1e-3 reached 0.762, the level of Trainer's LoRA at batch 16.
    "lora": 1e-3,
    "adalora": 1e-3,
    "ia3": 3e-3,
    "prefix": 1e-2,
}
PREFIX_VIRTUAL_TOKENS = 20
MEGABATCH_MULTIPLIER = 50
MAX_WORST_EXAMPLES = 20
CHECKPOINT_PREFIX = "ckpt-"
ARTIFACT_ADAPTER_DIR = "adapter"
CHECKPOINT_FORMAT = 1


class TrainingError(Exception):
    """A failure the user can act on; the message is shown to them as it is."""


# --------------------------------------------------------------------------- public types


@dataclass
class TrainingConfig:
    task: str  # "single_label" | "multi_label" | "regression"
    method: str = "full"  # "full" | "lora" | "adalora" | "prefix" | "ia3"
    # None picks the method's default: 5e-5 full, 1e-3 LoRA/AdaLoRA, 3e-3 IA3, 1e-2 prefix.
    learning_rate: float | None = None
    epochs: float = 3
    batch_size: int = 32
    max_length: int = 128
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    dropout: float | None = None  # None keeps the model's own dropout
    optimizer: str = "adamw"  # "adamw" | "sgd"
    scheduler: str = "linear"  # "linear" | "cosine" | "constant"
    gradient_accumulation: int = 1
    class_weighting: bool = False
    # single_label: macro_f1, accuracy, loss; multi_label: macro_f1, micro_f1,
    # subset_accuracy, loss; regression: mse, mae, r2, spearman, loss.
    early_stopping_metric: str = "macro_f1"
    early_stopping_patience: int = 3  # evaluations without improvement; 0 turns it off
    eval_every_steps: int | None = None  # None: once per epoch
    seed: int = 42
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    precision: str = "auto"  # "auto" (bf16 on GPUs that support it) | "fp32" | "bf16"
    lora_r: int = 8
    lora_alpha: int = 16
    # Accepted and validated, but batches are cut from the cached token arrays in the training
    # process (microseconds a batch), so worker processes would only add inter-process copies.
    num_workers: int = 0
    distributed: bool = False  # accelerate data parallel; see the module docstring
    max_grad_norm: float | None = 1.0

    @property
    def effective_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return DEFAULT_LEARNING_RATES.get(self.method, DEFAULT_LEARNING_RATES["full"])

    def validate(self) -> list[str]:
        """Readable sentences, one per bad value; empty when the configuration is usable."""
        errors: list[str] = []

        def choice(label: str, value: object, options: Sequence[str]) -> None:
            if value not in options:
                errors.append(f"{label} must be one of {', '.join(options)}; got {value!r}.")

        def number(
            label: str,
            value: object,
            low: float,
            high: float,
            *,
            integer: bool = False,
            low_inclusive: bool = True,
            low_text: str | None = None,
        ) -> None:
            kind = "a whole number" if integer else "a number"
            is_number = isinstance(value, int | float) and not isinstance(value, bool)
            if not is_number or (integer and not isinstance(value, int)):
                errors.append(f"{label} must be {kind}; got {value!r}.")
                return
            if isinstance(value, float) and not math.isfinite(value):
                errors.append(f"{label} must be a finite number; got {value!r}.")
                return
            too_low = value < low if low_inclusive else value <= low
            if too_low or value > high:
                low_words = low_text or _format_number(low)
                errors.append(
                    f"{label} must be between {low_words} and {_format_number(high)}; "
                    f"got {_format_number(value)}."
                )

        choice("Task", self.task, TASKS)
        choice("Method", self.method, METHODS)
        if self.learning_rate is not None:
            number("Learning rate", self.learning_rate, 1e-7, 1, low_text="1e-7")
        number("Epochs", self.epochs, 0, 100, low_inclusive=False, low_text="0 (exclusive)")
        number("Batch size", self.batch_size, 1, 4096, integer=True)
        number("Max length", self.max_length, 2, 8192, integer=True)
        number("Warmup ratio", self.warmup_ratio, 0, 1)
        number("Weight decay", self.weight_decay, 0, 1)
        if self.dropout is not None:
            number("Dropout", self.dropout, 0, 0.9)
        choice("Optimizer", self.optimizer, OPTIMIZERS)
        choice("Scheduler", self.scheduler, SCHEDULERS)
        number("Gradient accumulation", self.gradient_accumulation, 1, 1024, integer=True)
        if not isinstance(self.class_weighting, bool):
            errors.append(f"Class weighting must be true or false; got {self.class_weighting!r}.")
        if self.class_weighting is True and self.task == "regression":
            errors.append(
                "Class weighting applies to classification only; turn it off for regression."
            )
        if (
            self.task in METRICS_BY_TASK
            and self.early_stopping_metric not in METRICS_BY_TASK[self.task]
        ):
            task_words = self.task.replace("_", "-")
            errors.append(
                f"Early stopping metric {self.early_stopping_metric!r} does not apply to "
                f"{task_words} tasks; choose one of {', '.join(METRICS_BY_TASK[self.task])}."
            )
        number("Early stopping patience", self.early_stopping_patience, 0, 1000, integer=True)
        if self.eval_every_steps is not None:
            number("Evaluation interval", self.eval_every_steps, 1, 10**7, integer=True)
        number("Seed", self.seed, 0, 2**32 - 1, integer=True)
        choice("Device", self.device, DEVICES)
        choice("Precision", self.precision, PRECISIONS)
        number("LoRA rank", self.lora_r, 1, 256, integer=True)
        number("LoRA alpha", self.lora_alpha, 1, 1024, integer=True)
        number("Data loader workers", self.num_workers, 0, 32, integer=True)
        if not isinstance(self.distributed, bool):
            errors.append(f"Distributed must be true or false; got {self.distributed!r}.")
        if self.max_grad_norm is not None:
            number("Gradient clipping norm", self.max_grad_norm, 0, 1000, low_inclusive=False)
        return errors


@dataclass
class TrainingData:
    """Plain lists read from a dataset snapshot.

    Labels: a class name per row (single_label), a list of class names (multi_label, may be
    empty) or a number (regression). `label_names` fixes the class order; None derives it
    from the training labels, sorted.
    """

    train_texts: list[str]
    train_labels: list
    validation_texts: list[str] = field(default_factory=list)
    validation_labels: list = field(default_factory=list)
    test_texts: list[str] = field(default_factory=list)
    test_labels: list = field(default_factory=list)
    label_names: list[str] | None = None


class Callbacks(Protocol):
    """Implemented by the service. Every method is optional; a missing one is skipped."""

    def on_log(self, *, step: int, epoch: float, metrics: dict) -> None: ...

    def on_evaluate(self, *, step: int, epoch: float, metrics: dict) -> None: ...

    def on_checkpoint(self, *, step: int, path: str) -> None: ...

    def on_event(self, *, kind: str, message: str) -> None: ...

    def on_start(self, *, resolved: dict) -> None: ...

    def should_stop(self) -> bool: ...


@dataclass
class TrainingResult:
    status: str  # "succeeded" | "cancelled"
    best_step: int | None
    best_metrics: dict
    test_metrics: dict
    test_report: dict
    worst_examples: list[dict]
    final_batch_size: int
    gradient_accumulation: int
    artifact_dir: str | None
    elapsed_seconds: float
    examples_per_second: float
    total_steps: int = 0
    steps_done: int = 0
    stopped_early: bool = False
    label_names: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)  # every validation, in order

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- estimate


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


# --------------------------------------------------------------------------- artifacts


def load_artifact(artifact_dir: str, *, device: str = "cpu") -> tuple[torch.nn.Module, Any]:
    """Load an artifact written by `train()`: a module mapping (input_ids, attention_mask) to
    logits, and its tokenizer. Handles the unmerged prefix-tuning case."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(artifact_dir, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(artifact_dir, local_files_only=True)
    adapter = getattr(model.config, UNMERGED_ADAPTER_KEY, None)
    prefix = False
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, os.path.join(artifact_dir, adapter))
        prefix = True
    else:
        _last_layer_for_the_head_only(model)
    module = _LogitsModule(model, prefix=prefix).to(device)
    module.eval()
    return module, tokenizer


def predict_logits(artifact_dir: str, texts: list[str], *, batch_size: int = 64) -> np.ndarray:
    """Logits for `texts` from an artifact folder, through the serving runtime's PyTorch engine
    (length-sorted batches, inference mode): training scores what serving will answer."""
    predictor = _runtime_predictor(artifact_dir, batch_size=batch_size)
    return predictor.logits(list(texts))


def _runtime_predictor(artifact_dir: str, *, task: str | None = None, batch_size: int = 64):
    from models_app.runtime import ArtifactError, load_predictor

    try:
        return load_predictor(
            artifact_dir,
            runtime="pytorch",
            task=task,
            threads=_thread_count(),
            device="cpu",
            batch_size=batch_size,
        )
    except ArtifactError as error:
        raise TrainingError(f"Could not load the model from {artifact_dir}: {error}") from error


def evaluate_artifact(
    artifact_dir: str,
    texts: list[str],
    labels: list,
    *,
    task: str,
    label_names: list[str] | None = None,
    split_name: str = "evaluation",
    batch_size: int = 64,
) -> dict:
    """Score a saved artifact on labelled texts (labels shaped as in `TrainingData`).

    Returns the report `train()` gives for its test split (accuracy, macro_f1, per-class
    figures and confusion matrix; micro/macro F1 and subset accuracy; or mse, mae, r2 and
    spearman), plus "loss", "examples" and "worst_examples". Numbers sit at the top level.
    """
    if task not in TASKS:
        raise TrainingError(f"Task must be one of {', '.join(TASKS)}; got {task!r}.")
    _check_texts(split_name, texts, labels)
    if not texts:
        raise TrainingError(f"The {split_name} split is empty; there is nothing to evaluate.")
    predictor = _runtime_predictor(artifact_dir, task=task, batch_size=batch_size)
    info = predictor.info
    if label_names is None and task != "regression":
        label_names = list(info.label_names)
    names = _class_names(task, label_names, labels)
    expected_outputs = 1 if task == "regression" else len(names)
    if info.output_count != expected_outputs:
        raise TrainingError(
            f"This model has {info.output_count} outputs but the task needs {expected_outputs}; "
            "evaluate it with the task and classes it was trained for."
        )
    truth = _encode_labels(task, names, split_name, labels)
    logits = predictor.logits(list(texts))
    metrics, report, losses, predicted = _evaluation(logits, truth, task, names)
    order = np.argsort(-losses, kind="stable")[:MAX_WORST_EXAMPLES]
    worst = [
        {
            "text": texts[i],
            "label": _describe_label(task, names, truth[i]),
            "predicted": _describe_label(task, names, predicted[i]),
            "loss": float(losses[i]),
        }
        for i in order
    ]
    return {**report, "loss": metrics["loss"], "examples": len(texts), "worst_examples": worst}


def _describe_label(task: str, names: list[str], encoded: Any) -> Any:
    if task == "single_label":
        return names[int(encoded)]
    if task == "multi_label":
        return [name for name, on in zip(names, encoded, strict=True) if on > 0.5]
    return float(encoded)


# --------------------------------------------------------------------------- train


def train(
    *,
    base_model_path: str,
    data: TrainingData,
    config: TrainingConfig,
    output_dir: str,
    checkpoint_dir: str,
    callbacks: Callbacks | None = None,
    resume: bool = True,
) -> TrainingResult:
    """Fine-tune `base_model_path` on `data`; write the artifact to `output_dir`.

    Raises `TrainingError` for problems the user can fix (bad settings, an unloadable model,
    labels that don't match the classes, a model that does not fit in memory).
    """
    problems = config.validate()
    if problems:
        raise TrainingError(" ".join(problems))
    run = _Run(
        base_model_path=str(base_model_path),
        data=data,
        config=config,
        output_dir=str(output_dir),
        checkpoint_dir=str(checkpoint_dir),
        callbacks=_SafeCallbacks(callbacks),
        resume=resume,
    )
    return run.execute()


# --------------------------------------------------------------------------- internals


def _format_number(value: float) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    text = f"{value:g}"
    return text.replace("e-0", "e-").replace("e+0", "e+").replace("e+", "e")


def _thread_count() -> int:
    """All the cores this process may use, unless OMP_NUM_THREADS says otherwise (when other
    work shares the machine, idle torch threads spin and steal time from it)."""
    configured = os.environ.get("OMP_NUM_THREADS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return _cpu_count()


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _resolve_device(config: TrainingConfig, *, check: bool = True) -> torch.device:
    if config.device == "cpu":
        return torch.device("cpu")
    if config.device == "cuda":
        if not torch.cuda.is_available():
            if check:
                raise TrainingError(
                    "The GPU was requested but this worker has no CUDA device. Choose device "
                    "'auto' or 'cpu', or run the job on a GPU worker."
                )
            return torch.device("cpu")
        return torch.device("cuda")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _resolve_autocast(
    config: TrainingConfig, device: torch.device, *, check: bool = True
) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32."""
    if config.precision == "fp32":
        return None
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        if config.precision == "bf16" and not supported and check:
            raise TrainingError(
                "This GPU does not support bf16. Choose precision 'auto' or 'fp32'."
            )
        return torch.bfloat16 if supported else None
    # On CPU bf16 autocast is slower than fp32 unless the CPU has AMX; only when asked for.
    return torch.bfloat16 if config.precision == "bf16" else None


class _SafeCallbacks:
    """Calls the service's callbacks where they exist; all of them are optional."""

    def __init__(self, callbacks: object | None, *, enabled: bool = True) -> None:
        self._callbacks = callbacks
        self.enabled = enabled

    def _get(self, name: str) -> Callable | None:
        if not self.enabled or self._callbacks is None:
            return None
        return getattr(self._callbacks, name, None)

    def on_log(self, **kwargs: Any) -> None:
        if method := self._get("on_log"):
            method(**kwargs)

    def on_evaluate(self, **kwargs: Any) -> None:
        if method := self._get("on_evaluate"):
            method(**kwargs)

    def on_checkpoint(self, **kwargs: Any) -> None:
        if method := self._get("on_checkpoint"):
            method(**kwargs)

    def on_event(self, *, kind: str, message: str) -> None:
        if method := self._get("on_event"):
            method(kind=kind, message=message)

    def on_start(self, *, resolved: dict) -> None:
        if method := self._get("on_start"):
            method(resolved=resolved)

    def should_stop(self) -> bool:
        method = self._get("should_stop")
        return bool(method()) if method else False


@dataclass
class _TokenizedSplit:
    """Ragged token ids: row i is ids[offsets[i]:offsets[i + 1]]."""

    ids: np.ndarray  # int32
    offsets: np.ndarray  # int64, len n + 1

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]]) -> _TokenizedSplit:
        lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.fromiter(
            (token for row in rows for token in row), dtype=np.int32, count=int(offsets[-1])
        )
        return cls(ids=ids, offsets=offsets)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def collate(
        self, indices: np.ndarray, pad_id: int, pad_multiple: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = self.offsets[indices + 1] - self.offsets[indices]
        width = int(lengths.max()) if len(indices) else 1
        if pad_multiple > 1:
            width = -(-width // pad_multiple) * pad_multiple
        input_ids = np.full((len(indices), width), pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(indices), width), dtype=np.int64)
        for row, (index, length) in enumerate(zip(indices, lengths, strict=True)):
            start = self.offsets[index]
            input_ids[row, :length] = self.ids[start : start + length]
            attention_mask[row, :length] = 1
        return torch.from_numpy(input_ids), torch.from_numpy(attention_mask)


class _LogitsModule(torch.nn.Module):
    """(input_ids, attention_mask) -> logits, for every method; DDP wraps this module."""

    def __init__(self, model: torch.nn.Module, *, prefix: bool) -> None:
        super().__init__()
        self.model = model
        self.prefix = prefix
        self._cache_argument = prefix_cache_argument(model) if prefix else "cache"

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if not self.prefix:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        # The serving runtime's prefix forward (peft 0.21 and transformers 5 disagree on the
        # cache's name), so training runs the model exactly as serving will.
        return prefix_logits(
            self.model, input_ids, attention_mask, cache_argument=self._cache_argument
        )


def _last_layer_for_the_head_only(model: torch.nn.Module) -> bool:
    """Make the last encoder layer of a BERT classifier compute only the first token.

    BertForSequenceClassification reads the last layer at the first ([CLS]) position alone
    (its pooler takes ``hidden_states[:, 0]``), yet the layer computes its attention output,
    feed-forward block and layer norms for every token. Here that layer's queries, attention
    output and feed-forward run for [CLS] only, while keys and values still come from every
    token: the logits and gradients are the same (to float rounding; tested) and about an
    eighth of a six-layer model's matrix work is skipped in training and in inference. Only
    the instance's forward changes, so weights and saved artifacts are untouched. Other
    architectures, decoder or cross-attention setups, feed-forward chunking and prefix
    tuning (which feeds a cache to every layer) keep the library's forward. Returns whether
    the layer was changed.
    """
    import types

    from transformers.models.bert.modeling_bert import BertForSequenceClassification, BertLayer

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not isinstance(base, BertForSequenceClassification):
        return False
    layer = base.bert.encoder.layer[-1]
    if (
        type(layer) is not BertLayer
        or layer.is_decoder
        or layer.add_cross_attention
        or layer.chunk_size_feed_forward
        or base.config._attn_implementation not in ("sdpa", "eager")
    ):
        return False
    original = layer.forward

    def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
        # The encoder passes encoder_hidden_states (None here) positionally.
        cross = [*args, kwargs.get("encoder_hidden_states"), kwargs.get("cache")]
        if any(value is not None for value in cross) or kwargs.get("past_key_values") is not None:
            return original(hidden_states, attention_mask, *args, **kwargs)
        attention = self.attention.self
        batch, length, _ = hidden_states.shape
        size = attention.attention_head_size
        first = hidden_states[:, :1]
        # (batch, heads, positions, head size), as the library lays them out
        query = attention.query(first).view(batch, 1, -1, size).transpose(1, 2)
        key = attention.key(hidden_states).view(batch, length, -1, size).transpose(1, 2)
        value = attention.value(hidden_states).view(batch, length, -1, size).transpose(1, 2)
        mask = attention_mask
        if mask is not None and mask.dim() == 4 and mask.shape[-2] > 1:
            mask = mask[:, :, :1, :]  # the [CLS] query's row
        context = functional.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=mask,
            dropout_p=attention.dropout.p if self.training else 0.0,
            scale=attention.scaling,
        )
        context = context.transpose(1, 2).reshape(batch, 1, -1)
        attended = self.attention.output(context, first)
        return self.output(self.intermediate(attended), attended)

    layer.forward = types.MethodType(forward, layer)
    return True


def _forward_logits(
    module: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """One forward pass; a separate function so tests can simulate running out of memory."""
    return module(input_ids, attention_mask)


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def _predict(
    module: torch.nn.Module,
    split: _TokenizedSplit,
    indices: np.ndarray,
    batch_size: int,
    pad_id: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    pad_multiple: int,
) -> np.ndarray:
    """Logits (float32, one row per index, in the order given), longest texts first."""
    if len(indices) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    lengths = split.lengths[indices]
    order = np.argsort(-lengths, kind="stable")
    results: list[np.ndarray | None] = [None] * len(indices)
    was_training = module.training
    module.eval()
    position = 0
    try:
        with torch.inference_mode():
            while position < len(order):
                chunk = order[position : position + batch_size]
                input_ids, attention_mask = split.collate(indices[chunk], pad_id, pad_multiple)
                try:
                    with _autocast(device, autocast_dtype):
                        logits = _forward_logits(
                            module, input_ids.to(device), attention_mask.to(device)
                        )
                except Exception as error:
                    if not _is_out_of_memory(error):
                        raise
                    if batch_size == 1:
                        raise TrainingError(
                            "Evaluation does not fit in GPU memory even one text at a time. "
                            "Lower max_length or use a GPU with more memory."
                        ) from error
                    batch_size = max(1, batch_size // 2)
                    _free_memory(device)
                    continue
                values = logits.float().cpu().numpy()
                for row, item in enumerate(chunk):
                    results[item] = values[row]
                position += len(chunk)
    finally:
        module.train(was_training)
    return np.stack(results).astype(np.float32)


@contextlib.contextmanager
def _autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def _free_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _epoch_plan(lengths: np.ndarray, group_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Step groups for one epoch: shuffle, sort by length within mega-batches, cut into groups,
    shuffle the group order and put the longest group first. Depends only on (seed, epoch), so a
    resumed run sees the same order."""
    rng = np.random.default_rng([seed, epoch])
    permutation = rng.permutation(len(lengths))
    megabatch = group_size * MEGABATCH_MULTIPLIER
    groups: list[np.ndarray] = []
    for start in range(0, len(permutation), megabatch):
        chunk = permutation[start : start + megabatch]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        groups.extend(chunk[i : i + group_size] for i in range(0, len(chunk), group_size))
    order = rng.permutation(len(groups))
    groups = [groups[i] for i in order]
    longest = int(np.argmax([lengths[group].max() for group in groups]))
    groups.insert(0, groups.pop(longest))
    return groups


# --- labels and metrics


def _check_texts(split_name: str, texts: Sequence[str], labels: Sequence) -> None:
    if len(texts) != len(labels):
        raise TrainingError(
            f"The {split_name} split has {len(texts)} texts but {len(labels)} labels; "
            "every text needs exactly one label entry."
        )
    for row, text in enumerate(texts, start=1):
        if not isinstance(text, str):
            raise TrainingError(f"Row {row} of the {split_name} split has no text ({text!r}).")


def _class_names(task: str, label_names: Sequence[str] | None, train_labels: Sequence) -> list[str]:
    if task == "regression":
        return list(label_names or ["score"])[:1]
    if label_names is not None:
        names = [str(name) for name in label_names]
        if len(set(names)) != len(names):
            raise TrainingError("The class list names a class twice; each class must be unique.")
    elif task == "single_label":
        names = sorted({str(label) for label in train_labels})
    else:
        found: set[str] = set()
        for row, label in enumerate(train_labels, start=1):
            found.update(_label_list(label, "training", row))
        names = sorted(found)
    minimum = 2 if task == "single_label" else 1
    if len(names) < minimum:
        shown = ", ".join(map(repr, names)) or "none"
        raise TrainingError(f"Training needs at least two classes; found only {shown}.")
    return names


def _encode_labels(task: str, names: list[str], split_name: str, labels: Sequence) -> np.ndarray:
    """Labels as arrays: class ids (single), 0/1 rows (multi) or floats (regression)."""
    if task == "regression":
        values = np.zeros(len(labels), dtype=np.float32)
        for row, label in enumerate(labels, start=1):
            try:
                number = float(label)
            except (TypeError, ValueError):
                number = math.nan
            if not math.isfinite(number):
                raise TrainingError(
                    f"Row {row} of the {split_name} split has the label {label!r}, which is not "
                    "a number. Regression needs a numeric label on every row."
                )
            values[row - 1] = number
        return values

    index = {name: i for i, name in enumerate(names)}
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")

    def lookup(label: object, row: int) -> int:
        key = str(label)
        if key not in index:
            raise TrainingError(
                f"Row {row} of the {split_name} split has the label {key!r}, which is not one of "
                f"the classes ({shown}). Fix the label or add the class."
            )
        return index[key]

    if task == "single_label":
        return np.array(
            [lookup(label, row) for row, label in enumerate(labels, start=1)], dtype=np.int64
        )
    values = np.zeros((len(labels), len(names)), dtype=np.float32)
    for row, label in enumerate(labels, start=1):
        for item in _label_list(label, split_name, row):
            values[row - 1, lookup(item, row)] = 1.0
    return values


def _prepare_labels(
    data: TrainingData, task: str
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Encode the three splits' labels; raise TrainingError naming the first bad row."""
    splits = (
        ("training", data.train_texts, data.train_labels),
        ("validation", data.validation_texts, data.validation_labels),
        ("test", data.test_texts, data.test_labels),
    )
    for split_name, texts, labels in splits:
        _check_texts(split_name, texts, labels)
    if not data.train_texts:
        raise TrainingError("The training split is empty. Add rows or change the split.")
    names = _class_names(task, data.label_names, data.train_labels)
    train_y, validation_y, test_y = (
        _encode_labels(task, names, split_name, labels) for split_name, _, labels in splits
    )
    return names, train_y, validation_y, test_y


def _label_list(label: object, split_name: str, row: int) -> list[str]:
    if isinstance(label, str | bytes) or not isinstance(label, list | tuple | set | frozenset):
        raise TrainingError(
            f"Row {row} of the {split_name} split has the label {label!r}; multi-label rows "
            "need a list of class names (an empty list for none)."
        )
    return [str(item) for item in label]


def _per_example_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    task: str,
    class_weights: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example loss and weight; the batch loss is sum(loss * weight) / sum(weight)."""
    logits = logits.float()
    if task == "single_label":
        losses = functional.cross_entropy(logits, labels, reduction="none")
        weights = class_weights[labels] if class_weights is not None else torch.ones_like(losses)
    elif task == "multi_label":
        losses = functional.binary_cross_entropy_with_logits(
            logits, labels, reduction="none", pos_weight=class_weights
        ).mean(dim=1)
        weights = torch.ones_like(losses)
    else:
        losses = (logits.view(-1) - labels.view(-1)) ** 2
        weights = torch.ones_like(losses)
    return losses, weights


def _class_weights(task: str, labels: np.ndarray, n_classes: int) -> np.ndarray | None:
    if task == "single_label":
        counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
        weights = np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 1.0)
        return weights.astype(np.float32)
    if task == "multi_label":
        positives = labels.sum(axis=0).astype(np.float64)
        negatives = len(labels) - positives
        weights = np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0)
        return np.clip(weights, 0.1, 100.0).astype(np.float32)
    return None


def _losses_numpy(logits: np.ndarray, labels: np.ndarray, task: str) -> np.ndarray:
    with torch.no_grad():
        losses, _ = _per_example_loss(
            torch.from_numpy(logits), torch.from_numpy(labels), task, None
        )
    return losses.numpy()


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _safe_divide(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else 0.0


def _single_label_report(truth: np.ndarray, predicted: np.ndarray, names: list[str]) -> dict:
    k = len(names)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    per_class = {}
    f1_values = []
    for i, name in enumerate(names):
        true_positive = confusion[i, i]
        precision = _safe_divide(true_positive, confusion[:, i].sum())
        recall = _safe_divide(true_positive, confusion[i, :].sum())
        f1 = _f1(precision, recall)
        support = int(confusion[i, :].sum())
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        if support > 0 or confusion[:, i].sum() > 0:
            f1_values.append(f1)
    return {
        "accuracy": _safe_divide(np.trace(confusion), confusion.sum()),
        "macro_f1": float(np.mean(f1_values)) if f1_values else 0.0,
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "labels": list(names),
    }


def _multi_label_report(truth: np.ndarray, predicted: np.ndarray, names: list[str]) -> dict:
    truth = truth.astype(bool)
    predicted = predicted.astype(bool)
    true_positive = (truth & predicted).sum(axis=0)
    false_positive = (~truth & predicted).sum(axis=0)
    false_negative = (truth & ~predicted).sum(axis=0)
    per_class = {}
    f1_values = []
    for i, name in enumerate(names):
        precision = _safe_divide(true_positive[i], true_positive[i] + false_positive[i])
        recall = _safe_divide(true_positive[i], true_positive[i] + false_negative[i])
        f1 = _f1(precision, recall)
        support = int(truth[:, i].sum())
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        if support > 0 or predicted[:, i].any():
            f1_values.append(f1)
    micro = _safe_divide(
        2 * true_positive.sum(),
        2 * true_positive.sum() + false_positive.sum() + false_negative.sum(),
    )
    return {
        "micro_f1": micro,
        "macro_f1": float(np.mean(f1_values)) if f1_values else 0.0,
        "subset_accuracy": float((truth == predicted).all(axis=1).mean()) if len(truth) else 0.0,
        "per_class": per_class,
        "labels": list(names),
    }


def _rank(values: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as scipy.stats.rankdata)."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def _regression_report(truth: np.ndarray, predicted: np.ndarray) -> dict:
    truth = truth.astype(np.float64)
    predicted = predicted.astype(np.float64)
    errors = predicted - truth
    total = float(((truth - truth.mean()) ** 2).sum()) if len(truth) else 0.0
    spearman = 0.0
    if len(truth) > 1:
        truth_ranks, predicted_ranks = _rank(truth), _rank(predicted)
        if truth_ranks.std() > 0 and predicted_ranks.std() > 0:
            spearman = float(np.corrcoef(truth_ranks, predicted_ranks)[0, 1])
    return {
        "mse": float((errors**2).mean()) if len(truth) else 0.0,
        "mae": float(np.abs(errors).mean()) if len(truth) else 0.0,
        "r2": 1.0 - float((errors**2).sum()) / total if total > 0 else 0.0,
        "spearman": spearman,
    }


def _evaluation(
    logits: np.ndarray, labels: np.ndarray, task: str, names: list[str]
) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    """(metrics, report, per-example losses, predictions) for one split."""
    losses = _losses_numpy(logits, labels, task)
    if task == "single_label":
        predicted = logits.argmax(axis=1)
        report = _single_label_report(labels, predicted, names)
        keys = ("accuracy", "macro_f1")
    elif task == "multi_label":
        predicted = (logits > 0).astype(np.float32)
        report = _multi_label_report(labels, predicted, names)
        keys = ("micro_f1", "macro_f1", "subset_accuracy")
    else:
        predicted = logits.reshape(-1)
        report = _regression_report(labels, predicted)
        keys = ("mse", "mae", "r2", "spearman")
    metrics = {"loss": float(losses.mean())}
    metrics.update({key: float(report[key]) for key in keys})
    return metrics, report, losses, predicted


def _is_better(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best - 1e-12 if metric in LOWER_IS_BETTER else value > best + 1e-12


# --- AdaLoRA


def _adalora_orthogonal_penalty(peft_model: torch.nn.Module) -> torch.Tensor | float:
    """AdaLoRA's orthogonal regularisation, which peft adds only when the model computes the
    loss itself (we compute it here, for class weights)."""
    adapter = peft_model.base_model.trainable_adapter_name
    weight = peft_model.base_model.peft_config[adapter].orth_reg_weight
    penalty: torch.Tensor | float = 0.0
    count = 0
    for name, parameter in peft_model.named_parameters():
        if ("lora_A" in name or "lora_B" in name) and adapter in name and parameter.requires_grad:
            covariance = parameter @ parameter.T if "lora_A" in name else parameter.T @ parameter
            identity = torch.eye(
                *covariance.size(), device=covariance.device, dtype=covariance.dtype
            )
            penalty = penalty + torch.norm(covariance - identity, p="fro")
            count += 1
    return weight * penalty / count if count else 0.0


# --- files


def _write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Build a folder in a temp dir beside `target`, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        write(temporary)
        if target.exists():
            # A rename cannot replace a non-empty folder; move the old one aside first.
            old = target.parent / f".old-{target.name}-{os.getpid()}-{time.monotonic_ns()}"
            target.rename(old)
            temporary.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            temporary.rename(target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _hash_texts(digest: Any, texts: Sequence[str]) -> None:
    digest.update(str(len(texts)).encode())
    for text in texts:
        encoded = text.encode("utf-8", "surrogatepass")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    return digest.hexdigest()


def _tokenize_cached(
    tokenizer: Any, texts: list[str], max_length: int, cache_dir: Path, fingerprint: str
) -> _TokenizedSplit:
    digest = hashlib.sha256(f"{fingerprint}|{max_length}|".encode())
    _hash_texts(digest, texts)
    path = cache_dir / f"{digest.hexdigest()[:32]}.npz"
    if path.exists():
        try:
            with np.load(path) as stored:
                return _TokenizedSplit(ids=stored["ids"], offsets=stored["offsets"])
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # a damaged cache file is rebuilt
    rows: list[list[int]] = []
    chunk = 8192
    for start in range(0, len(texts), chunk):
        encoded = tokenizer(
            texts[start : start + chunk],
            truncation=True,
            max_length=max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        rows.extend(encoded["input_ids"])
    split = _TokenizedSplit.from_lists(rows)
    cache_dir.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=cache_dir)
    with os.fdopen(handle, "wb") as file:
        np.savez(file, ids=split.ids, offsets=split.offsets)
    os.replace(temporary, path)
    return split


def _rng_state() -> dict:
    numpy_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [
            numpy_state[0],
            torch.from_numpy(numpy_state[1].astype(np.int64)),
            int(numpy_state[2]),
            int(numpy_state[3]),
            float(numpy_state[4]),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_as_tuple(item) for item in value)
    return value


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# --------------------------------------------------------------------------- the run


class _Run:
    def __init__(
        self,
        *,
        base_model_path: str,
        data: TrainingData,
        config: TrainingConfig,
        output_dir: str,
        checkpoint_dir: str,
        callbacks: _SafeCallbacks,
        resume: bool,
    ) -> None:
        self.base_model_path = base_model_path
        self.data = data
        self.config = config
        self.output_dir = Path(output_dir)
        self.checkpoint_dir = Path(checkpoint_dir)
        self.callbacks = callbacks
        self.resume = resume
        self.task = config.task
        self.started = time.monotonic()
        self.accelerator: Any = None
        self.rank = 0
        self.world_size = 1

    # --- setup

    def execute(self) -> TrainingResult:
        config = self.config
        if config.distributed:
            from accelerate import Accelerator

            wanted = _resolve_device(config)
            self.accelerator = Accelerator(cpu=wanted.type == "cpu")
            self.device = self.accelerator.device
            self.rank = self.accelerator.process_index
            self.world_size = self.accelerator.num_processes
            self.callbacks.enabled = self.accelerator.is_main_process
            if self.device.type == "cpu":
                # Processes on one machine share its cores; oversubscribing makes all slower.
                torch.set_num_threads(max(1, _cpu_count() // self._local_world_size()))
        else:
            self.device = _resolve_device(config)
            if self.device.type == "cpu":
                torch.set_num_threads(_thread_count())
        self.autocast_dtype = _resolve_autocast(config, self.device)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.pad_multiple = 8 if self.device.type == "cuda" else 1

        self.label_names, self.train_y, self.validation_y, self.test_y = _prepare_labels(
            self.data, self.task
        )
        _seed_everything(config.seed + self.rank)
        self._load_model_and_tokenizer()
        self._tokenize()
        self._build_training_objects()
        return self._train_loop()

    def _local_world_size(self) -> int:
        return int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size))

    def _load_model_and_tokenizer(self) -> None:
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        path = self.base_model_path
        local = os.path.isdir(path)
        if not local and (os.path.exists(path) or path.startswith(("/", ".", "~"))):
            raise TrainingError(
                f"Could not load the base model from {path}: no such folder. Check the path "
                "or choose another base model."
            )
        task = self.task
        names = self.label_names
        problem_type = {
            "single_label": "single_label_classification",
            "multi_label": "multi_label_classification",
            "regression": "regression",
        }[task]
        num_labels = 1 if task == "regression" else len(names)
        id2label = dict(enumerate(names))
        label2id = {name: i for i, name in enumerate(names)}
        try:
            model_config = AutoConfig.from_pretrained(path, local_files_only=local)
            overrides: dict[str, Any] = {}
            if self.config.dropout is not None:
                for attribute in (
                    "hidden_dropout_prob",
                    "attention_probs_dropout_prob",
                    "classifier_dropout",
                    "dropout",
                    "attention_dropout",
                    "seq_classif_dropout",
                ):
                    if hasattr(model_config, attribute):
                        overrides[attribute] = float(self.config.dropout)
            model = AutoModelForSequenceClassification.from_pretrained(
                path,
                num_labels=num_labels,
                problem_type=problem_type,
                id2label=id2label,
                label2id=label2id,
                local_files_only=local,
                ignore_mismatched_sizes=True,
                **overrides,
            )
        except TrainingError:
            raise
        except Exception as error:
            raise TrainingError(
                f"Could not load the base model from {path}: {_first_line(error)}"
            ) from error
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
        except Exception as error:
            raise TrainingError(
                f"Could not load the tokenizer from {path}: {_first_line(error)}"
            ) from error
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token is None:
                raise TrainingError(
                    f"The tokenizer in {path} has no padding token and no end-of-text token to "
                    "pad with; choose another base model."
                )
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self.pad_id = int(tokenizer.pad_token_id)

        limits = [int(self.config.max_length)]
        positions = getattr(model.config, "max_position_embeddings", None)
        if isinstance(positions, int) and positions > 0:
            # RoBERTa-style models reserve positions for padding (offset pad_token_id + 1).
            offset = (
                2
                if getattr(model.config, "model_type", "")
                in {"roberta", "xlm-roberta", "camembert"}
                else 0
            )
            virtual = PREFIX_VIRTUAL_TOKENS if self.config.method == "prefix" else 0
            limits.append(positions - offset - virtual)
        model_max = getattr(tokenizer, "model_max_length", None)
        if isinstance(model_max, int) and 0 < model_max < 100_000:
            limits.append(model_max)
        self.max_length = max(2, min(limits))
        if self.max_length < self.config.max_length:
            self.callbacks.on_event(
                kind="max_length_clamped",
                message=(
                    f"Max length {self.config.max_length} is more than this model accepts; "
                    f"using {self.max_length} tokens."
                ),
            )
        model.config.lepton_max_length = self.max_length
        self.dropout_used = next(
            (
                float(value)
                for value in (
                    getattr(model.config, name, None)
                    for name in ("hidden_dropout_prob", "dropout", "seq_classif_dropout")
                )
                if isinstance(value, int | float) and not isinstance(value, bool)
            ),
            self.config.dropout,
        )
        self.base_model = model
        self.tokenizer = tokenizer

    def _tokenize(self) -> None:
        cache_dir = self.checkpoint_dir / "tokenized"
        fingerprint = _tokenizer_fingerprint(self.tokenizer)
        self.tokenizer_fingerprint = fingerprint

        def tokenize(texts: list[str]) -> _TokenizedSplit:
            return _tokenize_cached(
                self.tokenizer, list(texts), self.max_length, cache_dir, fingerprint
            )

        if self.accelerator is not None:
            # One process writes the cache; the others then read it.
            with self.accelerator.main_process_first():
                self.train_split = tokenize(self.data.train_texts)
                self.validation_split = tokenize(self.data.validation_texts)
                self.test_split = tokenize(self.data.test_texts)
        else:
            self.train_split = tokenize(self.data.train_texts)
            self.validation_split = tokenize(self.data.validation_texts)
            self.test_split = tokenize(self.data.test_texts)
        digest = hashlib.sha256()
        for texts in (self.data.train_texts, self.data.validation_texts, self.data.test_texts):
            _hash_texts(digest, texts)
        for labels in (self.train_y, self.validation_y, self.test_y):
            digest.update(np.ascontiguousarray(labels).tobytes())
        digest.update(json.dumps(self.label_names).encode())
        self.data_hash = digest.hexdigest()

    def _build_training_objects(self) -> None:
        config = self.config
        self.group_size = config.batch_size * config.gradient_accumulation
        self.steps_per_epoch = math.ceil(len(self.train_split) / self.group_size)
        self.total_steps = max(1, math.ceil(config.epochs * self.steps_per_epoch))
        self.micro_batch_size = config.batch_size

        model = self.base_model
        self.peft_model = None
        if config.method != "full":
            model = self._apply_peft(model)
            self.peft_model = model
        self.model = model.to(self.device)
        if config.method != "prefix":
            _last_layer_for_the_head_only(self.model)
        self.module = _LogitsModule(self.model, prefix=config.method == "prefix")

        self.trainable = [
            (name, parameter)
            for name, parameter in self.model.named_parameters()
            if parameter.requires_grad
        ]
        if not self.trainable:
            raise TrainingError("The chosen method leaves no weights to train.")
        self.optimizer = self._make_optimizer()
        self.scheduler = self._make_scheduler()

        if self.accelerator is not None:
            self.module = self.accelerator.prepare_model(self.module)

        weights = (
            _class_weights(self.task, self.train_y, len(self.label_names))
            if config.class_weighting
            else None
        )
        self.class_weights = (
            torch.from_numpy(weights).to(self.device) if weights is not None else None
        )
        self.example_weights = (
            weights[self.train_y]
            if weights is not None and self.task == "single_label"
            else np.ones(len(self.train_split), dtype=np.float32)
        )
        self.train_y_tensor = torch.from_numpy(self.train_y)

    def _apply_peft(self, model: torch.nn.Module) -> torch.nn.Module:
        from peft import (
            AdaLoraConfig,
            IA3Config,
            LoraConfig,
            PrefixTuningConfig,
            TaskType,
            get_peft_model,
        )

        config = self.config
        lora_dropout = config.dropout if config.dropout is not None else 0.1

        def build(target_modules: Any) -> Any:
            if config.method == "lora":
                return LoraConfig(
                    task_type=TaskType.SEQ_CLS,
                    r=config.lora_r,
                    lora_alpha=config.lora_alpha,
                    lora_dropout=lora_dropout,
                    target_modules=target_modules,
                )
            if config.method == "adalora":
                total = self.total_steps
                tinit = int(total * 0.1)
                tfinal = int(total * 0.2)
                if tinit >= total - tfinal:
                    tinit, tfinal = 0, 0
                return AdaLoraConfig(
                    task_type=TaskType.SEQ_CLS,
                    init_r=max(config.lora_r + 1, config.lora_r * 3 // 2),
                    target_r=config.lora_r,
                    lora_alpha=config.lora_alpha,
                    lora_dropout=lora_dropout,
                    total_step=total,
                    tinit=tinit,
                    tfinal=tfinal,
                    deltaT=max(1, total // 100),
                    target_modules=target_modules,
                )
            if config.method == "ia3":
                feedforward = None if target_modules is None else []
                return IA3Config(
                    task_type=TaskType.SEQ_CLS,
                    target_modules=target_modules,
                    feedforward_modules=feedforward,
                )
            return PrefixTuningConfig(
                task_type=TaskType.SEQ_CLS, num_virtual_tokens=PREFIX_VIRTUAL_TOKENS
            )

        try:
            return get_peft_model(model, build(None))
        except ValueError as error:
            if config.method == "prefix":
                raise TrainingError(
                    f"Prefix tuning does not support this model ({_first_line(error)}). Choose LoRA."
                ) from error
            # peft knows default target layers only for common architectures.
            try:
                return get_peft_model(model, build("all-linear"))
            except ValueError as second:
                raise TrainingError(
                    f"The {config.method} method does not support this model: {_first_line(second)}"
                ) from second

    def _make_optimizer(self) -> torch.optim.Optimizer:
        config = self.config
        decay, no_decay = [], []
        for name, parameter in self.trainable:
            lowered = name.lower()
            if parameter.ndim < 2 or "layernorm" in lowered or "layer_norm" in lowered:
                no_decay.append(parameter)
            else:
                decay.append(parameter)
        groups = [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        groups = [group for group in groups if group["params"]]
        learning_rate = config.effective_learning_rate
        if config.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=learning_rate, momentum=0.9)
        try:
            optimizer = torch.optim.AdamW(groups, lr=learning_rate, fused=True)
            self.fused = True
        except (RuntimeError, TypeError, ValueError):  # fused not built for this device
            optimizer = torch.optim.AdamW(groups, lr=learning_rate, foreach=True)
            self.fused = False
        return optimizer

    def _make_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        from transformers import (
            get_constant_schedule_with_warmup,
            get_cosine_schedule_with_warmup,
            get_linear_schedule_with_warmup,
        )

        warmup = math.ceil(self.config.warmup_ratio * self.total_steps)
        if self.config.scheduler == "linear":
            return get_linear_schedule_with_warmup(self.optimizer, warmup, self.total_steps)
        if self.config.scheduler == "cosine":
            return get_cosine_schedule_with_warmup(self.optimizer, warmup, self.total_steps)
        return get_constant_schedule_with_warmup(self.optimizer, warmup)

    # --- checkpoints

    def _fingerprint(self) -> str:
        config = asdict(self.config)
        for volatile in ("device", "num_workers", "precision"):
            config.pop(volatile, None)
        payload = {
            "format": CHECKPOINT_FORMAT,
            "config": config,
            "data": self.data_hash,
            "model": os.path.abspath(self.base_model_path)
            if os.path.isdir(self.base_model_path)
            else self.base_model_path,
            "tokenizer": self.tokenizer_fingerprint,
            "max_length": self.max_length,
            "world_size": self.world_size,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def _checkpoints(self) -> list[tuple[int, Path]]:
        found = []
        if self.checkpoint_dir.is_dir():
            for child in self.checkpoint_dir.iterdir():
                if child.name.startswith(CHECKPOINT_PREFIX) and (child / "meta.json").exists():
                    with contextlib.suppress(ValueError):
                        found.append((int(child.name[len(CHECKPOINT_PREFIX) :]), child))
        return sorted(found)

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return {
            name: parameter.detach().cpu().contiguous().clone()
            for name, parameter in self.trainable
        }

    def _save_checkpoint(self, state: dict) -> Path:
        step = state["global_step"]
        target = self.checkpoint_dir / f"{CHECKPOINT_PREFIX}{step:09d}"
        rng_states = self._gather(_rng_state())
        if self.rank == 0:
            weights = self._trainable_state()
            adalora = self._adalora_state()
            full_state = {
                **state,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": rng_states,
                "adalora": adalora,
            }

            def write(folder: Path) -> None:
                save_file(weights, str(folder / "trainable.safetensors"))
                torch.save(full_state, folder / "state.pt")
                meta = {
                    "step": step,
                    "fingerprint": self._fingerprint(),
                    "format": CHECKPOINT_FORMAT,
                }
                (folder / "meta.json").write_text(json.dumps(meta))

            _write_atomically(target, write)
            keep = {step, state.get("best_step")}
            for old_step, path in self._checkpoints():
                if old_step not in keep:
                    shutil.rmtree(path, ignore_errors=True)
        self._barrier()
        return target

    def _adalora_state(self) -> dict | None:
        if self.config.method != "adalora":
            return None
        tuner = self.peft_model.base_model
        allocator = tuner.rankallocator
        adapter_config = tuner.peft_config[tuner.trainable_adapter_name]
        return {
            "ipt": {k: v.detach().cpu() for k, v in allocator.ipt.items()},
            "exp_avg_ipt": {k: v.detach().cpu() for k, v in allocator.exp_avg_ipt.items()},
            "exp_avg_unc": {k: v.detach().cpu() for k, v in allocator.exp_avg_unc.items()},
            "rank_pattern": adapter_config.rank_pattern,
        }

    def _load_weights(self, folder: Path) -> None:
        weights = load_file(str(folder / "trainable.safetensors"))
        with torch.no_grad():
            for name, parameter in self.trainable:
                parameter.copy_(weights[name].to(parameter.device))

    def _load_checkpoint(self, folder: Path) -> dict:
        state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
        self._load_weights(folder)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        rng = state["rng"]
        if isinstance(rng, list) and self.rank < len(rng):
            _set_rng_state(rng[self.rank])
        adalora = state.get("adalora")
        if adalora and self.config.method == "adalora":
            tuner = self.peft_model.base_model
            allocator = tuner.rankallocator
            allocator.ipt = {k: v.to(self.device) for k, v in adalora["ipt"].items()}
            allocator.exp_avg_ipt = {
                k: v.to(self.device) for k, v in adalora["exp_avg_ipt"].items()
            }
            allocator.exp_avg_unc = {
                k: v.to(self.device) for k, v in adalora["exp_avg_unc"].items()
            }
            tuner.peft_config[tuner.trainable_adapter_name].rank_pattern = adalora["rank_pattern"]
        return state

    def _find_resume_point(self) -> Path | None:
        checkpoints = self._checkpoints()
        if not self.resume:
            if self.rank == 0:
                for _, path in checkpoints:
                    shutil.rmtree(path, ignore_errors=True)
            self._barrier()
            return None
        if not checkpoints:
            return None
        step, path = checkpoints[-1]
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("fingerprint") != self._fingerprint():
            self.callbacks.on_event(
                kind="checkpoint_ignored",
                message=(
                    f"The checkpoint at step {step} was made with other data or settings; "
                    "starting from the beginning."
                ),
            )
            self._barrier()
            if self.rank == 0:
                for _, old in checkpoints:
                    shutil.rmtree(old, ignore_errors=True)
            self._barrier()
            return None
        return path

    # --- distributed helpers

    def _barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    def _gather(self, value: Any) -> list:
        if self.accelerator is None:
            return [value]
        gathered: list = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, value)
        return gathered

    def _broadcast_flag(self, flag: bool) -> bool:
        if self.accelerator is None:
            return flag
        box = [flag]
        torch.distributed.broadcast_object_list(box, src=0)
        return bool(box[0])

    def _all_reduce_sum(self, value: float) -> float:
        if self.accelerator is None:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor)
        return float(tensor.item())

    # --- steps

    def _labels_for(self, indices: np.ndarray) -> torch.Tensor:
        return self.train_y_tensor[torch.from_numpy(indices)].to(self.device)

    def _train_step(self, group: np.ndarray) -> float:
        """Forward and backward over one step group (this rank's share); returns the summed
        weighted loss of the whole group (all ranks)."""
        total_weight = float(self.example_weights[group].sum())
        local = group[self.rank :: self.world_size]
        dummy = len(local) == 0
        if dummy:  # every rank must join the gradient all-reduce
            local = group[:1]
        while True:
            try:
                loss_sum = self._accumulate(local, total_weight, len(group), dummy)
                break
            except Exception as error:
                if not _is_out_of_memory(error):
                    raise
                self.optimizer.zero_grad(set_to_none=True)
                _free_memory(self.device)
                if self.accelerator is not None:
                    raise TrainingError(
                        f"Out of GPU memory at batch size {self.micro_batch_size} per process. "
                        "Lower the batch size or max_length (with more gradient accumulation), "
                        "or choose LoRA."
                    ) from error
                if self.micro_batch_size == 1:
                    raise TrainingError(
                        "The model does not fit in GPU memory even with a batch size of 1 at "
                        f"max length {self.max_length}. Lower max_length, choose LoRA or IA3 "
                        "instead of full fine-tuning, or use a GPU with more memory."
                    ) from error
                self.micro_batch_size = max(1, self.micro_batch_size // 2)
                accumulation = math.ceil(self.group_size / self.micro_batch_size)
                self.callbacks.on_event(
                    kind="oom_retry",
                    message=(
                        f"Out of memory; retrying with batch size {self.micro_batch_size} and "
                        f"gradient accumulation {accumulation} (same effective batch of "
                        f"{self.group_size})."
                    ),
                )
        return self._all_reduce_sum(loss_sum)

    def _accumulate(
        self, local: np.ndarray, total_weight: float, group_count: int, dummy: bool
    ) -> float:
        micro = [
            local[i : i + self.micro_batch_size]
            for i in range(0, len(local), self.micro_batch_size)
        ]
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        scale = float(self.world_size) / max(total_weight, 1e-12)
        for position, indices in enumerate(micro):
            last = position == len(micro) - 1
            sync = (
                self.accelerator.no_sync(self.module)
                if self.accelerator is not None and not last
                else contextlib.nullcontext()
            )
            with sync:
                input_ids, attention_mask = self.train_split.collate(
                    indices, self.pad_id, self.pad_multiple
                )
                input_ids = input_ids.to(self.device, non_blocking=True)
                attention_mask = attention_mask.to(self.device, non_blocking=True)
                labels = self._labels_for(indices)
                with _autocast(self.device, self.autocast_dtype):
                    logits = _forward_logits(self.module, input_ids, attention_mask)
                losses, weights = _per_example_loss(logits, labels, self.task, self.class_weights)
                weighted = (losses * weights).sum()
                loss = weighted * scale
                if self.config.method == "adalora":
                    share = len(indices) / group_count * self.world_size
                    loss = loss + _adalora_orthogonal_penalty(self.peft_model) * share
                if dummy:
                    loss = loss * 0.0
                if self.accelerator is not None:
                    self.accelerator.backward(loss)
                else:
                    loss.backward()
            if not dummy:
                loss_sum += weighted.detach().double()
        return float(loss_sum.item())

    def _optimizer_step(self, global_step: int) -> float | None:
        grad_norm = None
        if self.config.max_grad_norm is not None:
            parameters = [parameter for _, parameter in self.trainable]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(parameters, self.config.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        if self.config.method == "adalora":
            self.peft_model.base_model.update_and_allocate(global_step)
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    # --- evaluation

    def _evaluate_split(self, split: _TokenizedSplit) -> np.ndarray:
        indices = np.arange(len(split))
        local = indices[self.rank :: self.world_size]
        logits = _predict(
            self._eval_module(),
            split,
            local,
            max(1, self.micro_batch_size * 2),
            self.pad_id,
            self.device,
            self.autocast_dtype,
            self.pad_multiple,
        )
        if self.accelerator is None:
            return logits
        pieces = self._gather((local, logits))
        width = max(piece[1].shape[1] if piece[1].size else 0 for piece in pieces) or 1
        merged = np.zeros((len(split), width), dtype=np.float32)
        for piece_indices, piece_logits in pieces:
            if len(piece_indices):
                merged[piece_indices] = piece_logits
        return merged

    def _eval_module(self) -> torch.nn.Module:
        # No DDP wrapper for evaluation: inference needs no gradient synchronisation.
        return (
            self.module.module
            if hasattr(self.module, "module") and self.accelerator
            else self.module
        )

    def resolved_config(self) -> dict:
        """The values this run trains with, defaults and "auto" resolved on this machine."""
        config = self.config
        return {
            "learning_rate": config.effective_learning_rate,
            "dropout": self.dropout_used,
            "eval_every_steps": config.eval_every_steps or self.steps_per_epoch,
            "device": self.device.type,
            "precision": "bf16" if self.autocast_dtype == torch.bfloat16 else "fp32",
            "max_length": self.max_length,
        }

    # --- the loop

    def _train_loop(self) -> TrainingResult:
        config = self.config
        resume_from = self._find_resume_point()
        state: dict[str, Any] = {
            "global_step": 0,
            "epoch": 0,
            "step_in_epoch": 0,
            "plan": None,
            "best_step": None,
            "best_value": None,
            "best_metrics": {},
            "evaluations_without_improvement": 0,
            "history": [],
            "stopped_early": False,
            "micro_batch_size": self.micro_batch_size,
            "train_seconds": 0.0,
            "examples_seen": 0,
            "elapsed_before": 0.0,
            "finished": False,
        }
        if resume_from is not None:
            loaded = self._load_checkpoint(resume_from)
            for key in state:
                if key in loaded:
                    state[key] = loaded[key]
            self.micro_batch_size = int(state["micro_batch_size"])
            self.callbacks.on_event(
                kind="resumed",
                message=f"Resumed from the checkpoint at step {state['global_step']} of {self.total_steps}.",
            )
        else:
            self.callbacks.on_event(
                kind="started",
                message=(
                    f"Training on {len(self.train_split):,} examples for {_format_number(config.epochs)} "
                    f"epoch{'' if config.epochs == 1 else 's'} ({self.total_steps:,} steps of "
                    f"{self.group_size}) on {self.device.type}"
                    + (" in bf16 autocast" if self.autocast_dtype == torch.bfloat16 else "")
                    + (f" with {self.world_size} processes" if self.world_size > 1 else "")
                    + f", learning rate {_format_number(config.effective_learning_rate)}."
                ),
            )

        self.callbacks.on_start(resolved=self.resolved_config())

        plan: list[np.ndarray] | None = (
            [tensor.numpy() for tensor in state["plan"]] if state["plan"] is not None else None
        )
        lengths = self.train_split.lengths
        log_every = max(1, min(25, self.total_steps // 20))
        window_loss, window_weight, window_examples = 0.0, 0.0, 0
        window_train_seconds = 0.0
        call_examples = 0
        call_train_seconds = 0.0
        status = "succeeded"
        self.module.train()

        def snapshot() -> dict:
            return {
                **state,
                "plan": [torch.from_numpy(np.asarray(group)) for group in plan]
                if plan is not None
                else None,
                "micro_batch_size": self.micro_batch_size,
                "train_seconds": state["train_seconds"] + call_train_seconds,
                "examples_seen": state["examples_seen"] + call_examples,
                "elapsed_before": state["elapsed_before"] + (time.monotonic() - self.started),
            }

        while state["global_step"] < self.total_steps and not state["stopped_early"]:
            if plan is None:
                plan = _epoch_plan(lengths, self.group_size, config.seed, state["epoch"])
            if state["step_in_epoch"] >= len(plan):
                state["epoch"] += 1
                state["step_in_epoch"] = 0
                plan = None
                continue
            if self._broadcast_flag(self.callbacks.should_stop()):
                status = "cancelled"
                path = self._save_checkpoint(snapshot())
                self.callbacks.on_checkpoint(step=state["global_step"], path=str(path))
                self.callbacks.on_event(
                    kind="cancelled",
                    message=f"Cancelled at step {state['global_step']} of {self.total_steps}; the checkpoint is kept.",
                )
                break

            group = plan[state["step_in_epoch"]]
            step_started = time.monotonic()
            loss_sum = self._train_step(group)
            grad_norm = self._optimizer_step(state["global_step"])
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            step_seconds = time.monotonic() - step_started
            call_train_seconds += step_seconds
            call_examples += len(group)
            state["global_step"] += 1
            state["step_in_epoch"] += 1
            window_loss += loss_sum
            window_weight += float(self.example_weights[group].sum())
            window_examples += len(group)
            window_train_seconds += step_seconds
            step = state["global_step"]
            epoch_position = state["epoch"] + state["step_in_epoch"] / len(plan)

            if step % log_every == 0 or step == 1 or step == self.total_steps:
                # Training time only: evaluations and checkpoints inside the window do not count.
                window_seconds = max(window_train_seconds, 1e-9)
                seconds_per_step = (state["train_seconds"] + call_train_seconds) / max(step, 1)
                metrics = {
                    "loss": window_loss / max(window_weight, 1e-12),
                    "learning_rate": float(self.scheduler.get_last_lr()[0]),
                    "examples_per_second": window_examples / window_seconds,
                    "seconds_left": seconds_per_step * (self.total_steps - step),
                    "batch_size": self.micro_batch_size,
                    "total_steps": self.total_steps,
                }
                if grad_norm is not None:
                    metrics["grad_norm"] = grad_norm
                self.callbacks.on_log(step=step, epoch=epoch_position, metrics=metrics)
                window_loss, window_weight, window_examples = 0.0, 0.0, 0
                window_train_seconds = 0.0

            end_of_epoch = state["step_in_epoch"] >= len(plan)
            due = step % config.eval_every_steps == 0 if config.eval_every_steps else end_of_epoch
            if due or step == self.total_steps:
                self._evaluate_and_track(state, step, epoch_position)
                path = self._save_checkpoint(snapshot())
                self.callbacks.on_checkpoint(step=step, path=str(path))
                if state["stopped_early"]:
                    self.callbacks.on_event(
                        kind="early_stopped",
                        message=(
                            f"Stopped early at step {step} of {self.total_steps}: "
                            f"{config.early_stopping_metric} has not improved for "
                            f"{config.early_stopping_patience} evaluations; keeping step "
                            f"{state['best_step']}."
                        ),
                    )

        examples_seen = state["examples_seen"] + call_examples
        train_seconds = state["train_seconds"] + call_train_seconds
        result = TrainingResult(
            status=status,
            best_step=state["best_step"],
            best_metrics=dict(state["best_metrics"]),
            test_metrics={},
            test_report={},
            worst_examples=[],
            final_batch_size=self.micro_batch_size,
            gradient_accumulation=math.ceil(self.group_size / self.micro_batch_size),
            artifact_dir=None,
            elapsed_seconds=0.0,
            examples_per_second=examples_seen / train_seconds if train_seconds > 0 else 0.0,
            total_steps=self.total_steps,
            steps_done=state["global_step"],
            stopped_early=bool(state["stopped_early"]),
            label_names=list(self.label_names),
            history=list(state["history"]),
        )
        if status == "succeeded":
            self._finish(result, state)
        result.elapsed_seconds = state["elapsed_before"] + (time.monotonic() - self.started)
        return result

    def _evaluate_and_track(self, state: dict, step: int, epoch_position: float) -> None:
        config = self.config
        if len(self.validation_split) == 0:
            # Without validation data the latest weights count as the best.
            state["best_step"] = step
            return
        logits = self._evaluate_split(self.validation_split)
        metrics, _, _, _ = _evaluation(logits, self.validation_y, self.task, self.label_names)
        self.callbacks.on_evaluate(step=step, epoch=epoch_position, metrics=dict(metrics))
        state["history"].append({"step": step, "epoch": epoch_position, **metrics})
        name = config.early_stopping_metric
        value = metrics[name]
        if _is_better(name, value, state["best_value"]):
            state["best_value"] = value
            state["best_step"] = step
            state["best_metrics"] = dict(metrics)
            state["evaluations_without_improvement"] = 0
        else:
            state["evaluations_without_improvement"] += 1
            patience = config.early_stopping_patience
            if (
                patience
                and state["evaluations_without_improvement"] >= patience
                and step < self.total_steps
            ):
                state["stopped_early"] = True

    # --- final evaluation and artifact

    def _finish(self, result: TrainingResult, state: dict) -> None:
        best_step = state["best_step"]
        if best_step is not None and best_step != state["global_step"]:
            folder = self.checkpoint_dir / f"{CHECKPOINT_PREFIX}{best_step:09d}"
            self._load_weights(folder)
            if self.config.method == "adalora":
                # The saved adapter keeps the ranks named by rank_pattern; use the pattern that
                # belongs to these weights, not the one the run ended with.
                best = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
                tuner = self.peft_model.base_model
                adapter_config = tuner.peft_config[tuner.trainable_adapter_name]
                adapter_config.rank_pattern = best["adalora"]["rank_pattern"]
        if len(self.test_split):
            logits = self._evaluate_split(self.test_split)
            metrics, report, losses, predicted = _evaluation(
                logits, self.test_y, self.task, self.label_names
            )
            result.test_metrics = metrics
            result.test_report = report
            result.worst_examples = self._worst_examples(losses, predicted)
        if self.rank == 0:
            self._write_artifact()
            result.artifact_dir = str(self.output_dir)
        self._barrier()
        if self.rank != 0:
            result.artifact_dir = str(self.output_dir)
        self.callbacks.on_event(
            kind="finished",
            message=f"Finished after {state['global_step']} steps; the best step was {best_step}.",
        )

    def _worst_examples(self, losses: np.ndarray, predicted: np.ndarray) -> list[dict]:
        order = np.argsort(-losses, kind="stable")[:MAX_WORST_EXAMPLES]
        rows = []
        for index in order:
            rows.append(
                {
                    "text": self.data.test_texts[index],
                    "label": _describe_label(self.task, self.label_names, self.test_y[index]),
                    "predicted": _describe_label(self.task, self.label_names, predicted[index]),
                    "loss": float(losses[index]),
                }
            )
        return rows

    def _write_artifact(self) -> None:
        model = self.model
        method = self.config.method

        def write(folder: Path) -> None:
            self.tokenizer.save_pretrained(str(folder))
            if method == "full":
                model.save_pretrained(str(folder))
                return
            model.save_pretrained(str(folder / ARTIFACT_ADAPTER_DIR))
            if method == "prefix":
                base = _unwrap_modules_to_save(model.base_model)
                setattr(base.config, UNMERGED_ADAPTER_KEY, ARTIFACT_ADAPTER_DIR)
                base.save_pretrained(str(folder))
                delattr(base.config, UNMERGED_ADAPTER_KEY)
            else:
                merged = model.merge_and_unload()
                merged.save_pretrained(str(folder))

        _write_atomically(self.output_dir, write)


def _unwrap_modules_to_save(model: torch.nn.Module) -> torch.nn.Module:
    """Replace peft's ModulesToSaveWrapper (the trained classifier copy) with the trained
    module itself, so the base model saves as a plain transformers model."""
    from peft.utils.other import ModulesToSaveWrapper

    for name, module in list(model.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            trained = module.modules_to_save[module.active_adapters[0]]
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, trained)
    return model


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


# --------------------------------------------------------------------------- speed probe

PROBE_LENGTHS = (32, 128)
PROBE_MAX_BATCH_SIZE = 32
PROBE_STEPS = 2


def device_description(config: TrainingConfig) -> tuple[str, str]:
    """The device type a run with ``config`` trains on here ("cpu" or "cuda") and its name."""
    device = _resolve_device(config, check=False)
    if device.type == "cuda":
        return "cuda", torch.cuda.get_device_name(device)
    return "cpu", f"CPU, {_thread_count()} thread{'s' if _thread_count() != 1 else ''}"


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
                    run.autocast_dtype,
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


def _synchronized(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.monotonic()
