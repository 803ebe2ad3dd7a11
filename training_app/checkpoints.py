"""Checkpoints kept through the storage API, so a run resumes on another machine.

The engine writes checkpoints into the worker's ``TRAINING_WORK_DIR``. When that folder is not
shared between GPU machines (the usual case), a run whose machine is lost could only start
over. With ``TRAINING_CHECKPOINT_SYNC`` on (the default when files live in S3-compatible
storage), every checkpoint the engine saves is copied to the storage under
``training/checkpoints/run-<id>/``, older copies are dropped as the engine drops its own, and a
worker that takes the run over fetches them before training resumes. A copy counts only once
its ``complete`` marker is written, so a machine lost in the middle of an upload leaves the
previous checkpoint in charge.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

MARKER = "complete"
_PREFIX = "training/checkpoints"


def checkpoint_sync_enabled() -> bool:
    mode = settings.TRAINING_CHECKPOINT_SYNC
    if mode == "auto":
        return settings.STORAGE_BACKEND != "local"
    return mode == "on"


def _run_prefix(run_id: int) -> str:
    return f"{_PREFIX}/run-{run_id}"


def _stored_checkpoints(run_id: int) -> list[str]:
    prefix = _run_prefix(run_id)
    try:
        folders, _ = default_storage.listdir(prefix)
    except FileNotFoundError:
        return []
    return sorted(name for name in folders if name.startswith("ckpt-"))


def storage_folder_delete(prefix: str) -> None:
    """Delete every file under ``prefix`` in the default storage (and, on a local disk, the
    emptied folders)."""
    try:
        folders, files = default_storage.listdir(prefix)
    except FileNotFoundError:
        return
    for name in files:
        default_storage.delete(f"{prefix}/{name}")
    for name in folders:
        storage_folder_delete(f"{prefix}/{name}")
    # A storage on the local disk keeps empty folders: remove them too (object stores have
    # no folders, and no path()).
    with contextlib.suppress(NotImplementedError):
        shutil.rmtree(default_storage.path(prefix), ignore_errors=True)


def checkpoint_upload(*, run_id: int, folder: Path) -> None:
    """Copy one checkpoint folder to the storage, then drop stored checkpoints that the
    engine no longer keeps in the folder beside it."""
    target = f"{_run_prefix(run_id)}/{folder.name}"
    default_storage.delete(f"{target}/{MARKER}")
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        name = f"{target}/{path.name}"
        default_storage.delete(name)  # local storage would otherwise pick another name
        with path.open("rb") as handle:
            default_storage.save(name, File(handle))
    default_storage.save(f"{target}/{MARKER}", ContentFile(folder.name.encode()))
    kept = {child.name for child in folder.parent.iterdir() if child.name.startswith("ckpt-")}
    for name in _stored_checkpoints(run_id):
        if name not in kept:
            storage_folder_delete(f"{_run_prefix(run_id)}/{name}")


def checkpoints_fetch(*, run_id: int, checkpoint_dir: Path) -> list[str]:
    """Download the run's complete stored checkpoints that this machine lacks; return their
    names. Incomplete uploads are skipped."""
    fetched = []
    for name in _stored_checkpoints(run_id):
        prefix = f"{_run_prefix(run_id)}/{name}"
        local = checkpoint_dir / name
        if local.is_dir() or not default_storage.exists(f"{prefix}/{MARKER}"):
            continue
        partial = checkpoint_dir / f".fetch-{name}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        _, files = default_storage.listdir(prefix)
        for file_name in files:
            if file_name == MARKER:
                continue
            with (
                default_storage.open(f"{prefix}/{file_name}", "rb") as source,
                (partial / file_name).open("wb") as target,
            ):
                shutil.copyfileobj(source, target, 1 << 20)
        partial.rename(local)  # whole or not at all, like the engine's own writes
        fetched.append(name)
    return fetched


def checkpoints_delete(*, run_id: int) -> None:
    storage_folder_delete(_run_prefix(run_id))
