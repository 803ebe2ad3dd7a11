"""Sentence embeddings from an encoder folder: mean of the last hidden states over real tokens.

Used where a cheap text representation is enough (the likely-mislabeled scan fits a linear
model on them). Same tokenizer and length-sorted batches as prediction, under ``no_grad``;
torch is imported when an encoder is built, so importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from models_app.runtime.artifact import ArtifactError
from models_app.runtime.batching import length_batches, pad
from models_app.runtime.engines import thread_count
from models_app.runtime.tokenize import TextTokenizer

# Short texts (questions, reviews, intents) rarely pass 128 tokens; longer ones are cut, which
# changes a mean-pooled embedding little and keeps the cost of one text bounded.
EMBEDDING_MAX_LENGTH = 128


class EmbeddingStopped(Exception):
    """The progress callback asked to stop (the job was cancelled)."""


class SentenceEncoder:
    """A Hugging Face encoder (any ``AutoModel``) that turns texts into unit-length vectors."""

    def __init__(
        self,
        folder: str | Path,
        *,
        max_length: int = EMBEDDING_MAX_LENGTH,
        threads: int | None = None,
        batch_size: int = 64,
        token_budget: int = 4096,
    ) -> None:
        import json

        import torch
        from transformers import AutoModel

        folder = Path(folder)
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError) as error:
            raise ArtifactError(f"The encoder's config.json cannot be read: {error}.") from error
        positions = int(config.get("max_position_embeddings") or max_length)
        self.max_length = max(8, min(max_length, positions))
        self.tokenizer = TextTokenizer(folder, max_length=self.max_length)
        if config.get("pad_token_id") is not None:
            self.tokenizer.set_pad_token_id(int(config["pad_token_id"]))
        torch.set_num_threads(thread_count(threads))
        try:
            self.model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
        except Exception as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ArtifactError(f"The encoder cannot be loaded: {first_line}") from error
        self.dimensions = int(config.get("hidden_size") or 0)
        self.batch_size = batch_size
        self.token_budget = token_budget
        self._torch = torch

    def embed(
        self, texts: Sequence[str], *, progress: Callable[[int], bool] | None = None
    ) -> np.ndarray:
        """(len(texts), hidden) float32, each row L2-normalised. ``progress(done)`` is called
        after every batch with the count embedded so far; returning False stops with
        EmbeddingStopped."""
        torch = self._torch
        ids = self.tokenizer.encode(list(texts))
        result = np.zeros((len(ids), self.dimensions), dtype=np.float32)
        done = 0
        for batch in length_batches(
            [len(row) for row in ids], batch_size=self.batch_size, token_budget=self.token_budget
        ):
            input_ids, attention_mask = pad([ids[i] for i in batch], self.tokenizer.pad_token_id)
            mask = torch.from_numpy(attention_mask)
            with torch.no_grad():
                hidden = self.model(
                    input_ids=torch.from_numpy(input_ids), attention_mask=mask
                ).last_hidden_state
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            result[batch] = pooled.float().numpy()
            done += len(batch)
            if progress is not None and progress(done) is False:
                raise EmbeddingStopped
        return result
