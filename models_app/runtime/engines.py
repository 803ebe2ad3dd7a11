"""Engines: (input_ids, attention_mask) int64 arrays -> float32 logits.

TorchEngine runs the Hugging Face model (CPU; CUDA with bf16 autocast when a GPU is present).
OnnxEngine runs an exported ONNX graph with ONNX Runtime. Both take an explicit thread count:
several serving processes on one machine each with every core's worth of threads spin and
steal the CPU from each other (measured: a MiniLM step went from a steady 0.33 s to 0.2-3.3 s),
so a process gets `cores / processes` threads (see `thread_count`).
"""

from __future__ import annotations

import inspect
import os
import threading
from pathlib import Path

import numpy as np

from models_app.runtime.artifact import ArtifactError, ModelInfo


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def thread_count(configured: int | None = None, *, processes: int = 1) -> int:
    """Threads for one engine: `configured` if given, else LEPTON_SERVE_THREADS, else
    OMP_NUM_THREADS, else this process's share of the cores."""
    if configured and configured > 0:
        return int(configured)
    for name in ("LEPTON_SERVE_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return max(1, cpu_count() // max(1, processes))


def choose_device(requested: str = "auto", *, cuda_available: bool | None = None) -> str:
    """ "cuda" when asked for ("auto") and a GPU is present, else "cpu"; an explicit device
    ("cpu", "cuda", "cuda:1") is kept, but a CUDA one falls back to "cpu" without a GPU."""
    requested = (requested or "auto").strip().lower()
    if requested == "cpu":
        return "cpu"
    if cuda_available is None:
        import torch

        cuda_available = bool(torch.cuda.is_available())
    if not cuda_available:
        return "cpu"
    return "cuda" if requested == "auto" else requested


def onnx_providers(available: list[str], device: str) -> list[str]:
    """ONNX Runtime execution providers for `device`: CUDA first when on a GPU and this
    onnxruntime build has it (ORT falls back to the CPU provider for any node CUDA lacks)."""
    if device.startswith("cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class Engine:
    name = ""
    device = "cpu"

    # Batches this engine runs at once (`map`); 1 runs them one after the other.
    workers = 1

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def map(self, function, items: list) -> list:
        """`function` over `items` (batches), in order; engines that can run several batches
        at once do."""
        return [function(item) for item in items]


class TorchEngine(Engine):
    """The PyTorch model under inference_mode; handles the unmerged prefix-tuning artifact."""

    name = "pytorch"

    def __init__(
        self, info: ModelInfo, *, threads: int | None = None, device: str = "auto"
    ) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification

        self._torch = torch
        device = choose_device(device)
        self.device = device
        if device == "cpu":
            # Process-wide in torch: the last engine loaded decides, which is what we want.
            torch.set_num_threads(thread_count(threads))
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                str(info.folder), local_files_only=True
            )
        except Exception as error:
            raise ArtifactError(
                f"The model weights cannot be loaded: {_first_line(error)}"
            ) from error
        self.prefix = False
        if info.unmerged_adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(Path(info.folder) / info.unmerged_adapter))
            self.prefix = True
            self._cache_argument = prefix_cache_argument(model)
        self.model = model.to(device).eval()
        self.autocast_dtype = None
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            self.autocast_dtype = torch.bfloat16

    def module_forward(self, input_ids, attention_mask):
        """Logits tensor from tensors (for explanations, which need gradients)."""
        if not self.prefix:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return prefix_logits(
            self.model, input_ids, attention_mask, cache_argument=self._cache_argument
        )

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        ids = torch.from_numpy(input_ids).to(self.device)
        mask = torch.from_numpy(attention_mask).to(self.device)
        with torch.inference_mode():
            if self.autocast_dtype is not None:
                with torch.autocast(device_type="cuda", dtype=self.autocast_dtype):
                    logits = self.module_forward(ids, mask)
            else:
                logits = self.module_forward(ids, mask)
        return logits.float().cpu().numpy()


class OnnxEngine(Engine):
    """An ONNX graph under ONNX Runtime: CUDA when a GPU and onnxruntime's CUDA provider are
    both present, else the CPU.

    On the CPU, `threads` are spent across batches rather than inside one: the session runs
    each batch on one thread and `map` runs up to `threads` batches at once (ONNX Runtime's
    `run` is thread-safe and releases the GIL). A MiniLM's matrices at serving sizes (a few
    hundred tokens per batch) are too small for two threads to share one operator without
    waiting on each other between operators (a MiniLM int8 graph, 2 threads, 1,000 TREC
    questions on a loaded 2-core machine: 120 texts/s with the threads inside each batch,
    236/s with one batch per thread). A lone batch runs on one thread."""

    name = "onnx"

    def __init__(
        self, model_path: str | Path, *, threads: int | None = None, device: str = "auto"
    ) -> None:
        import onnxruntime

        model_path = Path(model_path)
        if not model_path.is_file():
            raise ArtifactError(f"The ONNX file is missing ({model_path.name}).")
        available = onnxruntime.get_available_providers()
        providers = onnx_providers(
            available, choose_device(device) if "CUDAExecutionProvider" in available else "cpu"
        )
        on_cpu = providers[0] == "CPUExecutionProvider"
        self.workers = thread_count(threads) if on_cpu else 1
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1 if on_cpu else thread_count(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Worker threads (on a GPU machine) spin only while a run lasts and stop as soon as it
        # returns, so that idle ones do not take the CPU from other processes.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        options.add_session_config_entry("session.force_spinning_stop", "1")
        try:
            self.session = onnxruntime.InferenceSession(
                str(model_path), sess_options=options, providers=providers
            )
        except Exception as error:
            raise ArtifactError(f"The ONNX file cannot be loaded: {_first_line(error)}") from error
        used = self.session.get_providers()
        self.device = "cuda" if used and used[0] == "CUDAExecutionProvider" else "cpu"
        self.input_names = {item.name for item in self.session.get_inputs()}
        self.output_name = self.session.get_outputs()[0].name
        # At most `workers` runs at once, whoever calls: direct callers from many threads do
        # not oversubscribe the cores either.
        self._slots = threading.BoundedSemaphore(self.workers)
        self._pool = None
        self._pool_lock = threading.Lock()

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        feeds = {name: value for name, value in feeds.items() if name in self.input_names}
        with self._slots:
            (logits,) = self.session.run([self.output_name], feeds)
        return np.asarray(logits, dtype=np.float32)

    def map(self, function, items: list) -> list:
        if self.workers <= 1 or len(items) <= 1:
            return [function(item) for item in items]
        with self._pool_lock:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="onnx-batch")
        return list(self._pool.map(function, items))


def prefix_cache_argument(model) -> str:
    """The keyword under which a prefix-tuned peft model's backbone takes the learned prefix
    (transformers 5 renamed BERT's `past_key_values` to `cache`)."""
    backbone = model.base_model.get_submodule(model.transformer_backbone_name)
    parameters = inspect.signature(backbone.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def prefix_logits(model, input_ids, attention_mask, *, cache_argument: str):
    """Logits of a prefix-tuned peft model. peft 0.21's own prefix forward passes
    `past_key_values`, which transformers 5 renamed to `cache`, so the learned prefix is passed
    here as the cache, with its attention mask. Training (training_app/trainer.py) runs the same
    forward, so a model is trained, evaluated and served alike."""
    import torch

    batch = input_ids.shape[0]
    prompt = model.get_prompt(batch_size=batch)
    virtual = model.active_peft_config.num_virtual_tokens
    prefix_mask = torch.ones(
        batch, virtual, dtype=attention_mask.dtype, device=attention_mask.device
    )
    mask = torch.cat([prefix_mask, attention_mask], dim=1)
    return model.base_model(
        input_ids=input_ids, attention_mask=mask, **{cache_argument: prompt}
    ).logits


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
