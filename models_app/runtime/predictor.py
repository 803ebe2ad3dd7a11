"""The whole prediction path for one loaded model: tokenize, batch, run, post-process."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models_app.runtime.artifact import ArtifactError, ModelInfo, read_model_info
from models_app.runtime.batching import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_TOKEN_BUDGET,
    ONNX_CPU_TOKEN_BUDGET,
    length_batches,
    pad,
)
from models_app.runtime.engines import Engine, OnnxEngine, TorchEngine
from models_app.runtime.tokenize import TextTokenizer

RUNTIMES = ("onnx-int8", "onnx-fp32", "pytorch")
ONNX_FILES = {"onnx-int8": "onnx/model-int8.onnx", "onnx-fp32": "onnx/model-fp32.onnx"}
MULTI_LABEL_THRESHOLD = 0.5


class Predictor:
    """A loaded model version: `predict(texts)` gives one result per text, in order."""

    def __init__(
        self,
        info: ModelInfo,
        tokenizer: TextTokenizer,
        engine: Engine,
        *,
        runtime: str,
        batch_size: int = DEFAULT_BATCH_SIZE,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
        threshold: float = MULTI_LABEL_THRESHOLD,
    ) -> None:
        self.info = info
        self.tokenizer = tokenizer
        self.engine = engine
        self.runtime = runtime
        self.batch_size = batch_size
        self.token_budget = token_budget
        self.threshold = threshold

    @property
    def task(self) -> str:
        return self.info.task

    @property
    def label_names(self) -> list[str]:
        return self.info.label_names

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer.encode(texts)

    def logits_from_ids(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        """Logits (float32, one row per input, in order) from token ids, length-batched."""
        if not rows:
            return np.zeros((0, self.info.output_count), dtype=np.float32)
        out = np.zeros((len(rows), self.info.output_count), dtype=np.float32)
        # An engine that runs several batches at once gets at least that many when there are
        # rows enough (a micro-batch of 16 texts on two threads: two batches of 8).
        workers = max(1, self.engine.workers)
        batch_size = min(self.batch_size, max(1, math.ceil(len(rows) / workers)))

        def run(batch: np.ndarray) -> None:
            input_ids, attention_mask = pad([rows[i] for i in batch], self.tokenizer.pad_token_id)
            out[batch] = self.engine.run(input_ids, attention_mask)

        self.engine.map(
            run,
            length_batches(
                [len(row) for row in rows], batch_size=batch_size, token_budget=self.token_budget
            ),
        )
        return out

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        return self.logits_from_ids(self.encode(texts))

    def results(self, logits: np.ndarray) -> list[dict]:
        """Logits -> one result per row: {label, scores} / {labels, scores} / {value}."""
        task = self.info.task
        names = self.info.label_names
        if task == "regression":
            return [{"value": _finite(float(row[0]))} for row in logits]
        if task == "multi_label":
            probabilities = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
            results = []
            for row in probabilities:
                scores = {name: round(float(p), 6) for name, p in zip(names, row, strict=True)}
                labels = [name for name, p in zip(names, row, strict=True) if p >= self.threshold]
                results.append({"labels": labels, "scores": scores})
            return results
        shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
        probabilities = np.exp(shifted)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        best = probabilities.argmax(axis=1)
        return [
            {
                "label": names[int(best[i])],
                "scores": {name: round(float(p), 6) for name, p in zip(names, row, strict=True)},
            }
            for i, row in enumerate(probabilities)
        ]

    def predict(self, texts: Sequence[str]) -> list[dict]:
        return self.results(self.logits(texts))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def onnx_path(folder: str | Path, runtime: str) -> Path:
    return Path(folder) / ONNX_FILES[runtime]


def load_predictor(
    folder: str | Path,
    *,
    runtime: str = "pytorch",
    task: str | None = None,
    threads: int | None = None,
    device: str = "auto",
    onnx_file: str | Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    token_budget: int | None = None,
) -> Predictor:
    """Load a version folder (Hugging Face folder with its tokenizer) for `runtime`.

    ONNX runtimes read `onnx/model-int8.onnx` / `onnx/model-fp32.onnx` in the folder unless
    `onnx_file` names another file. `token_budget` (padded tokens per batch) defaults to a
    small one for ONNX Runtime on a CPU (see batching.ONNX_CPU_TOKEN_BUDGET), else a large one.
    Raises ArtifactError with a plain reason when it cannot.
    """
    if runtime not in RUNTIMES:
        raise ArtifactError(f"Runtime must be one of {', '.join(RUNTIMES)}; got {runtime!r}.")
    info = read_model_info(folder, task=task)
    tokenizer = TextTokenizer(folder, max_length=info.max_length)
    if info.pad_token_id is not None:
        tokenizer.set_pad_token_id(info.pad_token_id)
    if runtime == "pytorch":
        engine: Engine = TorchEngine(info, threads=threads, device=device)
    else:
        engine = OnnxEngine(onnx_file or onnx_path(folder, runtime), threads=threads, device=device)
    if token_budget is None:
        onnx_on_cpu = runtime != "pytorch" and engine.device == "cpu"
        token_budget = ONNX_CPU_TOKEN_BUDGET if onnx_on_cpu else DEFAULT_TOKEN_BUDGET
    return Predictor(
        info, tokenizer, engine, runtime=runtime, batch_size=batch_size, token_budget=token_budget
    )
