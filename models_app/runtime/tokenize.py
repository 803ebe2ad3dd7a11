"""Tokenization with the fast `tokenizers` library: truncated ids, no padding (batches pad)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from models_app.runtime.artifact import ArtifactError


class TextTokenizer:
    """Token ids for texts, truncated to `max_length`, with the model's special tokens."""

    def __init__(self, folder: str | Path, *, max_length: int) -> None:
        folder = Path(folder)
        self.max_length = max_length
        self._fast = None
        self._slow = None
        path = folder / "tokenizer.json"
        if path.is_file():
            from tokenizers import Tokenizer

            try:
                tokenizer = Tokenizer.from_file(str(path))
            except Exception as error:
                raise ArtifactError(f"The tokenizer cannot be read: {error}.") from error
            tokenizer.no_padding()
            tokenizer.enable_truncation(max_length=max_length)
            self._fast = tokenizer
            self.pad_token_id = 0
            for token in ("[PAD]", "<pad>", "<|endoftext|>"):
                if tokenizer.token_to_id(token) is not None:
                    self.pad_token_id = tokenizer.token_to_id(token)
                    break
        else:
            # No tokenizer.json (a slow-only tokenizer): transformers builds one, slower.
            from transformers import AutoTokenizer

            try:
                self._slow = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            except Exception as error:
                raise ArtifactError(f"The tokenizer cannot be loaded: {error}.") from error
            self.pad_token_id = int(self._slow.pad_token_id or 0)

    @property
    def backend(self):
        """The `tokenizers.Tokenizer` (character offsets for explanations), or None if slow."""
        if self._fast is not None:
            return self._fast
        return getattr(self._slow, "backend_tokenizer", None)

    def set_pad_token_id(self, pad_token_id: int) -> None:
        self.pad_token_id = int(pad_token_id)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        if self._fast is not None:
            return [encoding.ids for encoding in self._fast.encode_batch(list(texts))]
        return self._slow(list(texts), truncation=True, max_length=self.max_length)["input_ids"]

    def tokens(self, text: str) -> list[str]:
        """The tokens of one text (for explanations)."""
        if self._fast is not None:
            return self._fast.encode(text).tokens
        return self._slow.convert_ids_to_tokens(self.encode([text])[0])
