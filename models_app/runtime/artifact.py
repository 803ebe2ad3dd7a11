"""What a model version's folder holds, read from its config.json without loading weights."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

TASK_BY_PROBLEM_TYPE = {
    "single_label_classification": "single_label",
    "multi_label_classification": "multi_label",
    "regression": "regression",
}
UNMERGED_ADAPTER_KEY = "lepton_unmerged_adapter"
DEFAULT_MAX_LENGTH = 512


class ArtifactError(Exception):
    """The folder cannot be served; the message says why in a sentence a user can act on."""


@dataclass(frozen=True)
class ModelInfo:
    folder: Path
    task: str  # single_label | multi_label | regression
    label_names: list[str] = field(default_factory=list)
    max_length: int = DEFAULT_MAX_LENGTH
    model_type: str = ""
    pad_token_id: int | None = None
    unmerged_adapter: str | None = None
    num_labels: int = 0  # outputs of the saved head (0: unknown, use the task's count)

    @property
    def output_count(self) -> int:
        if self.num_labels:
            return self.num_labels
        return 1 if self.task == "regression" else len(self.label_names)


def read_model_info(folder: str | Path, *, task: str | None = None) -> ModelInfo:
    """Task, label names and max length of a Hugging Face sequence-classification folder."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ArtifactError(
            f"The model files are missing ({config_path.name} not found in {folder})."
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as error:
        raise ArtifactError(f"The model's config.json cannot be read: {error}.") from error
    id2label = config.get("id2label") or {}
    names = [str(id2label[key]) for key in sorted(id2label, key=lambda k: int(k))]
    if task is None:
        task = TASK_BY_PROBLEM_TYPE.get(config.get("problem_type") or "", "")
        if not task:
            task = (
                "regression"
                if int(config.get("num_labels", len(names)) or 0) == 1
                else "single_label"
            )
    if task == "regression":
        names = []
    max_length = int(config.get("lepton_max_length") or 0)
    if max_length <= 0:
        max_length = min(
            DEFAULT_MAX_LENGTH, int(config.get("max_position_embeddings") or DEFAULT_MAX_LENGTH)
        )
    return ModelInfo(
        folder=folder,
        task=task,
        label_names=names,
        max_length=max_length,
        model_type=str(config.get("model_type") or ""),
        pad_token_id=(
            int(config["pad_token_id"]) if config.get("pad_token_id") is not None else None
        ),
        unmerged_adapter=config.get(UNMERGED_ADAPTER_KEY) or None,
        num_labels=int(config.get("num_labels") or len(id2label) or 0),
    )
