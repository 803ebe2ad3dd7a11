"""Labels, tokenisation (cached, unpadded) and length-grouped batching."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training_app.engine.config import TrainingData, TrainingError

MEGABATCH_MULTIPLIER = 50


def _describe_label(task: str, names: list[str], encoded: Any) -> Any:
    if task == "single_label":
        return names[int(encoded)]
    if task == "multi_label":
        return [name for name, on in zip(names, encoded, strict=True) if on > 0.5]
    return float(encoded)


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
