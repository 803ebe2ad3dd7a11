"""Fine-tuning engine: a plain PyTorch loop around Hugging Face sequence-classification models.

No Django here. The service reads a dataset snapshot into `TrainingData`, builds a
`TrainingConfig`, passes a `Callbacks` object (progress, checkpoints, cancel) and calls `train()`.
Importing this package is free: its names load on first use (PEP 562 `__getattr__`), and
`engine.config` (settings, defaults, types) never imports torch. The other modules import torch,
transformers and peft (~10 s), so touch them lazily from the Celery task.

Modules: `config` (settings, validation, data-driven defaults, public types), `data` (labels,
tokenisation, batching), `loop` (the run), `checkpoints`, `reports` (losses and metrics),
`modeling` (logits module, prediction), `device` (device, threads, autocast), `artifacts`
(load, predict, evaluate a saved model), `probe` (estimate and calibrate).

Defaults. A plain `TrainingConfig` has fixed defaults (3 epochs, batch 32, lr 5e-5);
`config.choose_defaults` (or `config.defaults_for_data`) chooses them from the training split
instead: size, classes, class balance, text length, method and model size, with an explanation
in a sentence; the console uses it for every run. With `refit_on_all_data`, `train()` runs a
second pass: a fresh model on train + validation for the first pass's best number of epochs
(its own checkpoints in `checkpoint_dir/refit/`), whose artifact replaces the first one;
`TrainingResult.refit` describes it and `best_metrics` stay the first pass's validation scores.

Warmup-stable-decay (`scheduler="wsd"`, what the defaults choose): after the warmup the learning
rate holds; the last `WSD_DECAY_FRACTION` of the planned steps decay it linearly to zero. The
decay starts sooner when validation has not improved for `early_stopping_patience` evaluations
(event "decay_started"; the run then ends after the decay instead of stopping at once), and
later when validation still improved at the evaluation before the planned decay: the end moves
on by an evaluation interval at a time (event "extended"), up to `WSD_MAX_EXTENSION` times the
planned steps. `TrainingResult.total_steps` is the end the run reached.

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
  support it and, with precision "auto", for training steps on CPUs with AMX tiles (1.7x faster
  MiniLM steps, the same accuracy; evaluation stays fp32 there, as served),
  `torch.inference_mode()` for evaluation;
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
every evaluation (once per epoch unless `eval_every_steps`) but the one after the last step
(the artifact is written next), and when cancelled, a checkpoint is
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

import importlib
from typing import Any

# Public name -> the module that defines it; loaded on first access.
_EXPORTS = {
    "TASKS": "config",
    "METHODS": "config",
    "OPTIMIZERS": "config",
    "SCHEDULERS": "config",
    "DEVICES": "config",
    "PRECISIONS": "config",
    "METRICS_BY_TASK": "config",
    "LOWER_IS_BETTER": "config",
    "DEFAULT_LEARNING_RATES": "config",
    "PREFIX_VIRTUAL_TOKENS": "config",
    "TrainingError": "config",
    "TrainingConfig": "config",
    "TrainingData": "config",
    "Callbacks": "config",
    "TrainingResult": "config",
    "device_description": "device",
    "CHECKPOINT_PREFIX": "checkpoints",
    "ARTIFACT_ADAPTER_DIR": "checkpoints",
    "CHECKPOINT_FORMAT": "checkpoints",
    "load_artifact": "artifacts",
    "predict_logits": "artifacts",
    "evaluate_artifact": "artifacts",
    "train": "loop",
    "estimate": "probe",
    "calibrate": "probe",
    "PROBE_LENGTHS": "probe",
    "PROBE_MAX_BATCH_SIZE": "probe",
    "PROBE_STEPS": "probe",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
