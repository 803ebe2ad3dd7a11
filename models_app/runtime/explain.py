"""Word-level explanations of one prediction: integrated gradients (default) or occlusion.

Plain Python, no Django. Scores are per word of the original text, with the word's character
offsets, so a page can highlight the text exactly as the user typed it. A positive score means
the word pushed the explained class up; negative, down.

- Integrated gradients (captum's LayerIntegratedGradients on the word embeddings) needs the
  PyTorch model: it follows gradients from a baseline where every word is [PAD] (special tokens
  kept) to the text, on the class's log-probability (the logit for multi-label, the value for
  regression). Its scores add up to f(text) - f(baseline) (completeness); the gap is returned
  as ``convergence_delta``.
- Occlusion masks one word at a time (its word pieces become [MASK]) and scores the drop of the
  class's probability (the value for regression). It needs only a
  ``logits(input_ids, attention_mask)`` function, so it works with any engine (ONNX Runtime
  included) and costs one forward pass per word, batched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

METHODS = ("integrated_gradients", "occlusion")
DEFAULT_METHOD = "integrated_gradients"
# On SST-2 sentences (13 words median) with fine-tuned MiniLM on one CPU thread, 8, 16 and 32
# steps all took ~0.85 s median (one batch of `n_steps` rows; short rows cost little), while the
# completeness gap at p95 fell from 121% (8) to 18% (16) to 0.7% (32): benchmarks/explain.py.
DEFAULT_STEPS = 32
TASKS = ("single_label", "multi_label", "regression")
OCCLUSION_BATCH = 32  # masked copies of the text per forward pass

LogitsFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]


class ExplainError(Exception):
    """A request that cannot be explained; the message is for the user."""


@dataclass
class WordScore:
    word: str
    start: int  # character offsets in the original text: text[start:end] == word
    end: int
    score: float

    def to_dict(self) -> dict:
        return {"word": self.word, "start": self.start, "end": self.end, "score": self.score}


_EXPLAINED_OUTPUT = {
    "single_label": "log_probability",
    "multi_label": "logit",
    "regression": "value",
}
_SCORED_OUTPUT = {
    "single_label": "probability",
    "multi_label": "probability",
    "regression": "value",
}


@dataclass
class Explanation:
    method: str
    target: int  # index of the explained class (0 for regression)
    target_score: float  # the class's probability (or the value) for the text
    baseline_score: float | None  # integrated gradients: the same for the all-[PAD] baseline
    # What word scores measure: integrated gradients attribute the log-probability (logit for
    # multi-label); occlusion scores the drop in probability when the word is masked.
    explained_output: str
    explained_change: float | None  # integrated gradients: output(text) - output(baseline)
    convergence_delta: float | None  # integrated gradients: sum(scores) - explained_change
    truncated: bool  # the text was longer than the model reads; later words have no score
    words: list[WordScore] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "target": self.target,
            "target_score": self.target_score,
            "baseline_score": self.baseline_score,
            "explained_output": self.explained_output,
            "explained_change": self.explained_change,
            "convergence_delta": self.convergence_delta,
            "truncated": self.truncated,
            "words": [word.to_dict() for word in self.words],
        }


@dataclass
class _Encoded:
    input_ids: list[int]
    offsets: list[tuple[int, int]]
    word_ids: list[int | None]  # None for special tokens
    truncated: bool


def explain(
    text: str,
    *,
    tokenizer: Any,
    model: Any = None,
    logits_function: LogitsFunction | None = None,
    method: str = DEFAULT_METHOD,
    task: str = "single_label",
    target: int | None = None,
    max_length: int = 512,
    n_steps: int = DEFAULT_STEPS,
    device: str = "cpu",
) -> Explanation:
    """Explain the prediction for one text.

    ``model`` is a PyTorch module mapping (input_ids, attention_mask) to logits, either a
    Hugging Face sequence classifier (``.logits`` is read) or a module returning the tensor;
    integrated gradients needs it, and it needs an ``embeddings_layer`` it can find (see
    ``_embedding_layer``). Occlusion takes ``logits_function`` (numpy in, numpy out) or wraps
    ``model``. ``target`` defaults to the predicted class. ``tokenizer`` must be a fast
    (Rust) tokenizer: its offsets map word pieces back to the text.
    """
    if method not in METHODS:
        raise ExplainError(f"The explanation method must be one of {', '.join(METHODS)}.")
    if task not in TASKS:
        raise ExplainError(f"The task must be one of {', '.join(TASKS)}; got {task!r}.")
    if not isinstance(text, str) or not text.strip():
        raise ExplainError("There is no text to explain; type a sentence first.")
    encoded = _encode(tokenizer, text, max_length)
    if method == "integrated_gradients":
        if model is None:
            raise ExplainError("Integrated gradients needs the PyTorch model.")
        return _integrated_gradients(
            text, encoded, tokenizer=tokenizer, model=model, task=task, target=target,
            n_steps=n_steps, device=device,
        )  # fmt: skip
    if logits_function is None:
        if model is None:
            raise ExplainError("Occlusion needs a model or a logits function.")
        logits_function = torch_logits_function(model)
    return _occlusion(
        text, encoded, tokenizer=tokenizer, logits_function=logits_function, task=task,
        target=target,
    )  # fmt: skip


def torch_logits_function(model: Any) -> LogitsFunction:
    """A numpy logits function over a PyTorch model, for occlusion."""
    import torch

    def logits(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            output = _call(
                model, torch.from_numpy(input_ids).long(), torch.from_numpy(attention_mask).long()
            )
        return output.float().cpu().numpy()

    return logits


# --------------------------------------------------------------------------- words


def _backend(tokenizer: Any) -> Any:
    """The `tokenizers.Tokenizer` behind a transformers fast tokenizer, the runtime's
    TextTokenizer, or the object itself."""
    for name in ("backend_tokenizer", "backend"):
        backend = getattr(tokenizer, name, None)
        if backend is not None:
            return backend
    if hasattr(tokenizer, "post_process") and hasattr(tokenizer, "token_to_id"):
        return tokenizer
    raise ExplainError("Explanations need a fast tokenizer (one with character offsets).")


def _special_id(tokenizer: Any, kind: str) -> int | None:
    value = getattr(tokenizer, f"{kind}_token_id", None)
    if value is not None:
        return int(value)
    backend = _backend(tokenizer)
    for token in (f"[{kind.upper()}]", f"<{kind}>"):
        value = backend.token_to_id(token)
        if value is not None:
            return int(value)
    return None


def _encode(tokenizer: Any, text: str, max_length: int) -> _Encoded:
    backend = _backend(tokenizer)
    # Encode without special tokens, cut to what the model reads, then add them: the backend's
    # own truncation settings (shared with prediction) are neither needed nor changed.
    plain = backend.encode(text, add_special_tokens=False)
    budget = max(1, max_length - backend.num_special_tokens_to_add(False))
    truncated = bool(plain.overflowing) or len(plain.ids) > budget
    plain.truncate(budget)
    encoding = backend.post_process(plain)
    keep = [i for i, mask in enumerate(encoding.attention_mask) if mask]  # padding, if set
    special = encoding.special_tokens_mask
    word_ids = encoding.word_ids
    return _Encoded(
        input_ids=[encoding.ids[i] for i in keep],
        offsets=[tuple(encoding.offsets[i]) for i in keep],
        word_ids=[None if special[i] else word_ids[i] for i in keep],
        truncated=truncated,
    )


def _words(text: str, encoded: _Encoded, token_scores: np.ndarray) -> list[WordScore]:
    """Sum word-piece scores into words, in text order, with the words' character spans."""
    words: dict[int, list] = {}
    for position, word_id in enumerate(encoded.word_ids):
        if word_id is None:
            continue
        start, end = encoded.offsets[position]
        if word_id not in words:
            words[word_id] = [start, end, 0.0]
        entry = words[word_id]
        entry[0] = min(entry[0], start)
        entry[1] = max(entry[1], end)
        entry[2] += float(token_scores[position])
    return [
        WordScore(word=text[start:end], start=int(start), end=int(end), score=score)
        for start, end, score in sorted(words.values())
    ]


def _word_positions(encoded: _Encoded) -> list[list[int]]:
    positions: dict[int, list[int]] = {}
    for position, word_id in enumerate(encoded.word_ids):
        if word_id is not None:
            positions.setdefault(word_id, []).append(position)
    return [positions[word_id] for word_id in sorted(positions)]


# --------------------------------------------------------------------------- outputs


def _scores_numpy(logits: np.ndarray, task: str) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    if task == "single_label":
        shifted = logits - logits.max(axis=-1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=-1, keepdims=True)
    if task == "multi_label":
        return 1.0 / (1.0 + np.exp(-logits))
    return logits


def _explained_torch(logits: Any, task: str) -> Any:
    """What integrated gradients attributes: log-probabilities, logits (log-odds) or the value.

    Not probabilities: a confident classifier's probability is flat along most of the path
    from the baseline and jumps in a few steps that a short integral misses, scoring every
    word ~0; its log-probability changes over the whole path.
    """
    if task == "single_label":
        return logits.log_softmax(dim=-1)
    return logits


def _pick_target(scores: np.ndarray, target: int | None, task: str) -> int:
    classes = scores.shape[-1]
    if target is None:
        return 0 if task == "regression" else int(np.argmax(scores))
    if not 0 <= int(target) < classes:
        raise ExplainError(f"The class to explain must be between 0 and {classes - 1}.")
    return int(target)


def _call(model: Any, input_ids: Any, attention_mask: Any) -> Any:
    output = model(input_ids=input_ids, attention_mask=attention_mask)
    return output.logits if hasattr(output, "logits") else output


# --------------------------------------------------------------------------- occlusion


def _occlusion(
    text: str,
    encoded: _Encoded,
    *,
    tokenizer: Any,
    logits_function: LogitsFunction,
    task: str,
    target: int | None,
) -> Explanation:
    mask_id = _special_id(tokenizer, "mask")
    if mask_id is None:
        mask_id = _special_id(tokenizer, "pad") or 0
    groups = _word_positions(encoded)
    ids = np.asarray(encoded.input_ids, dtype=np.int64)
    batch = np.tile(ids, (len(groups) + 1, 1))
    for row, positions in enumerate(groups, start=1):
        batch[row, positions] = mask_id
    chunks = [
        batch[start : start + OCCLUSION_BATCH] for start in range(0, len(batch), OCCLUSION_BATCH)
    ]
    logits = np.concatenate([logits_function(chunk, np.ones_like(chunk)) for chunk in chunks])
    scores = _scores_numpy(logits, task)
    chosen = _pick_target(scores[0], target, task)
    drops = scores[0, chosen] - scores[1:, chosen]
    token_scores = np.zeros(len(ids))
    for drop, positions in zip(drops, groups, strict=True):
        # Spread a word's drop over its pieces so _words adds it back up to the word.
        token_scores[positions] = drop / len(positions)
    return Explanation(
        method="occlusion",
        target=chosen,
        target_score=float(scores[0, chosen]),
        baseline_score=None,
        explained_output=_SCORED_OUTPUT[task],
        explained_change=None,
        convergence_delta=None,
        truncated=encoded.truncated,
        words=_words(text, encoded, token_scores),
    )


# --------------------------------------------------------------------------- integrated gradients


def _embedding_layer(model: Any) -> Any:
    for candidate in (model, getattr(model, "model", None)):
        if candidate is not None and hasattr(candidate, "get_input_embeddings"):
            return candidate.get_input_embeddings()
    raise ExplainError("This model does not expose its word embeddings; use occlusion instead.")


def _integrated_gradients(
    text: str,
    encoded: _Encoded,
    *,
    tokenizer: Any,
    model: Any,
    task: str,
    target: int | None,
    n_steps: int,
    device: str,
) -> Explanation:
    import torch
    from captum.attr import LayerIntegratedGradients

    if n_steps < 2:
        raise ExplainError("Integrated gradients needs at least 2 steps.")
    pad_id = _special_id(tokenizer, "pad") or 0
    input_ids = torch.tensor([encoded.input_ids], dtype=torch.long, device=device)
    baseline_ids = input_ids.clone()
    for position, word_id in enumerate(encoded.word_ids):
        if word_id is not None:
            baseline_ids[0, position] = pad_id
    attention_mask = torch.ones_like(input_ids)

    def forward(ids: Any, mask: Any) -> Any:
        return _explained_torch(_call(model, ids, mask), task)

    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with torch.no_grad():
            logits = _call(model, torch.cat([input_ids, baseline_ids]), attention_mask.repeat(2, 1))
        scores = _scores_numpy(logits.double().cpu().numpy(), task)
        explained = _explained_torch(logits.double(), task).cpu().numpy()
        chosen = _pick_target(scores[0], target, task)
        attribution = LayerIntegratedGradients(forward, _embedding_layer(model))
        # The attention mask is the same along the path: pass it as a fixed extra argument.
        attributions, delta = attribution.attribute(
            inputs=input_ids,
            baselines=baseline_ids,
            additional_forward_args=(attention_mask,),
            target=chosen,
            n_steps=n_steps,
            internal_batch_size=n_steps,
            return_convergence_delta=True,
        )
    finally:
        model.train(was_training)
    token_scores = attributions.sum(dim=-1)[0].detach().double().cpu().numpy()
    return Explanation(
        method="integrated_gradients",
        target=chosen,
        target_score=float(scores[0, chosen]),
        baseline_score=float(scores[1, chosen]),
        explained_output=_EXPLAINED_OUTPUT[task],
        explained_change=float(explained[0, chosen] - explained[1, chosen]),
        convergence_delta=float(delta.reshape(-1)[0]),
        truncated=encoded.truncated,
        words=_words(text, encoded, token_scores),
    )


def explain_prediction(
    predictor: Any,
    text: str,
    *,
    method: str = DEFAULT_METHOD,
    target: int | None = None,
    n_steps: int = DEFAULT_STEPS,
    torch_engine: Any = None,
) -> Explanation:
    """Explain one text with a loaded runtime Predictor.

    Occlusion runs on the predictor's own engine (ONNX Runtime included). Integrated gradients
    needs gradients, so it runs on ``torch_engine`` (a TorchEngine for the same folder, which the
    caller loads and caches) or else the predictor's own engine when that is PyTorch.
    """
    tokenizer = predictor.tokenizer
    common = {
        "tokenizer": tokenizer,
        "method": method,
        "task": predictor.task,
        "target": target,
        "max_length": predictor.info.max_length,
    }
    if method == "occlusion":
        return explain(text, logits_function=predictor.engine.run, **common)
    # A given engine wins: callers pass a private one so captum's hooks on the embeddings never
    # touch the model that serves predictions meanwhile.
    engine = torch_engine
    if engine is None and hasattr(predictor.engine, "module_forward"):
        engine = predictor.engine
    if engine is None:
        raise ExplainError("Integrated gradients needs the PyTorch model; use occlusion instead.")
    return explain(
        text, model=_EngineModule(engine), n_steps=n_steps, device=str(engine.device), **common
    )


class _EngineModule:
    """A runtime TorchEngine seen as a module: (input_ids, attention_mask) -> logits tensor."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.training = False

    def __call__(self, input_ids: Any, attention_mask: Any) -> Any:
        return self.engine.module_forward(input_ids, attention_mask)

    def get_input_embeddings(self) -> Any:
        return self.engine.model.get_input_embeddings()

    def eval(self) -> None:
        self.engine.model.eval()

    def train(self, mode: bool = True) -> None:
        self.engine.model.train(mode)


def top_words(explanation: Explanation, count: int = 3) -> Sequence[WordScore]:
    """The words that pushed the explained output up the most."""
    return sorted(explanation.words, key=lambda word: -word.score)[:count]
