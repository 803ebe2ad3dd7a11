"""Where and how a run computes: device, threads, autocast, out-of-memory handling."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import torch

from training_app.engine.config import TrainingConfig, TrainingError


def _thread_count() -> int:
    """All the cores this process may use, unless OMP_NUM_THREADS says otherwise (when other
    work shares the machine, idle torch threads spin and steal time from it)."""
    configured = os.environ.get("OMP_NUM_THREADS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return _cpu_count()


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _resolve_device(config: TrainingConfig, *, check: bool = True) -> torch.device:
    if config.device == "cpu":
        return torch.device("cpu")
    if config.device == "cuda":
        if not torch.cuda.is_available():
            if check:
                raise TrainingError(
                    "The GPU was requested but this worker has no CUDA device. Choose device "
                    "'auto' or 'cpu', or run the job on a GPU worker."
                )
            return torch.device("cpu")
        return torch.device("cuda")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _resolve_autocast(
    config: TrainingConfig, device: torch.device, *, check: bool = True
) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32."""
    if config.precision == "fp32":
        return None
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        if config.precision == "bf16" and not supported and check:
            raise TrainingError(
                "This GPU does not support bf16. Choose precision 'auto' or 'fp32'."
            )
        return torch.bfloat16 if supported else None
    # On CPU bf16 autocast is slower than fp32 unless the CPU has AMX (bf16 matrix tiles):
    # "auto" takes it there. Measured on a 2-core AMX Xeon with MiniLM (benchmarks/quality.py,
    # 480 TREC rows): training steps 1.7x faster, the same test accuracy (0.881 and 0.883).
    if config.precision == "bf16" or (config.precision == "auto" and _cpu_has_amx()):
        return torch.bfloat16
    return None


def _cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (fast bf16 matrix products)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except Exception:  # an old or odd build: take the safe answer
        return False


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


@contextlib.contextmanager
def _autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def _free_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def device_description(config: TrainingConfig) -> tuple[str, str]:
    """The device type a run with ``config`` trains on here ("cpu" or "cuda") and its name."""
    device = _resolve_device(config, check=False)
    if device.type == "cuda":
        return "cuda", torch.cuda.get_device_name(device)
    return "cpu", f"CPU, {_thread_count()} thread{'s' if _thread_count() != 1 else ''}"


def _synchronized(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.monotonic()
