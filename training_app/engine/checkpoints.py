"""Atomic folders, RNG state and the checkpoint methods of a run (`ckpt-<step>/`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_PREFIX = "ckpt-"


ARTIFACT_ADAPTER_DIR = "adapter"


CHECKPOINT_FORMAT = 1
AVERAGED_WEIGHTS_FILE = "averaged.safetensors"


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


NEUTRAL_LATER_SETTINGS = {
    "head_learning_rate_multiplier": 1.0,
    "layer_decay": 1.0,
    "class_weight_power": 1.0,
    "refit_on_all_data": False,
    "weight_averaging": 0.0,
}


class _CheckpointMixin:
    """The checkpoint half of `loop._Run`: writing, finding and loading `ckpt-<step>/`
    folders. Uses the run's config, model, optimizer, scheduler and distributed helpers."""

    def _fingerprint(self) -> str:
        config = asdict(self.config)
        for volatile in ("device", "num_workers", "precision"):
            config.pop(volatile, None)
        # Settings added later count only when set: checkpoints of runs started before them
        # still resume.
        for name, neutral in NEUTRAL_LATER_SETTINGS.items():
            if config.get(name) == neutral:
                config.pop(name, None)
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
            averaged = self._averaged_state()
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
                if averaged is not None:
                    save_file(averaged, str(folder / AVERAGED_WEIGHTS_FILE))
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

    def _averaged_state(self) -> dict[str, torch.Tensor] | None:
        averaged = getattr(self, "averaged", None)
        if averaged is None:
            return None
        return {
            name: average.detach().cpu().contiguous().clone()
            for (name, _), average in zip(self.trainable, averaged, strict=True)
        }

    def _load_weights(self, folder: Path, *, averaged: bool = False) -> None:
        """The checkpoint's trained weights into the model, or with `averaged` its averaged
        weights (weight averaging keeps those as the run's model)."""
        filename = AVERAGED_WEIGHTS_FILE if averaged else "trainable.safetensors"
        weights = load_file(str(folder / filename))
        with torch.no_grad():
            for name, parameter in self.trainable:
                parameter.copy_(weights[name].to(parameter.device))

    def _load_checkpoint(self, folder: Path) -> dict:
        state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
        self._load_weights(folder)
        averaged = getattr(self, "averaged", None)
        if averaged is not None:
            saved = load_file(str(folder / AVERAGED_WEIGHTS_FILE))
            with torch.no_grad():
                for (name, _), average in zip(self.trainable, averaged, strict=True):
                    average.copy_(saved[name].to(average.device))
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
