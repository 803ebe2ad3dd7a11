"""Local copies of remote files (a version's folder from S3) shared by the processes of one
machine, bounded in size and cleaned of copies nothing needs any more.

Each copy is an entry: a folder ``<root>/<name>/`` with a manifest (what it is a copy of, so a
sweep can ask whether that still exists) and a lock file ``<root>/<name>.lock``. A process that
uses a copy holds a *lease*: a shared ``flock`` on the lock file, from before it looks at the
folder until it lets go (a serving process: for as long as the model stays loaded). A sweep
removes an entry only under an exclusive, non-blocking lock on the same file, so an entry that
any process holds is skipped, never removed under it; a process that dies drops its locks
with it, so nothing is held for good. The sweep unlinks the lock file with the entry; a reader
that opened the old lock file checks after locking that the name still leads to the file it
locked, and tries again if not.

Copies are filled in a temporary folder and renamed into place, so a reader sees a whole
entry or none. Plain Python (no Django): the caller says what an entry holds (``fill``) and
which manifests still name something that exists (``keep``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

MANIFEST = ".serve-cache.json"
LOCK_SUFFIX = ".lock"
TEMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
# A fill that has not finished in this long was left by a process that died.
TEMP_MAX_AGE_SECONDS = 3600.0


@dataclass
class Lease:
    """A held copy: ``path`` stays on disk until ``release()`` (or the process's end)."""

    path: Path
    name: str
    manifest: dict = field(default_factory=dict)
    _fd: int | None = field(default=None, repr=False)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # drops the shared lock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc_info) -> None:
        self.release()

    def __del__(self) -> None:  # a lease nobody released still lets go with its object
        with contextlib.suppress(Exception):
            self.release()


@dataclass
class Entry:
    name: str
    path: Path
    manifest: dict | None  # None: no readable manifest (a copy from before manifests)
    last_used: float
    size_bytes: int


class FileCache:
    def __init__(self, root: str | Path, *, max_bytes: int = 0) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes  # 0: no size bound

    # --- readers --------------------------------------------------------------------------
    def lease(self, name: str, fill: Callable[[Path], None], *, manifest: dict) -> Lease:
        """Hold entry `name`, filling it first with ``fill(folder)`` if it is missing. The
        manifest is written into the entry (a sweep passes it to its ``keep``)."""
        _check_name(name)
        self.root.mkdir(parents=True, exist_ok=True)
        fd = self._lock_shared(name)
        try:
            target = self.root / name
            if not target.is_dir():
                self._fill(target, fill, manifest)
            lock = self._lock_path(name)
            with contextlib.suppress(OSError):
                os.utime(lock)  # last use, for the size bound's oldest-first order
        except BaseException:
            os.close(fd)
            raise
        return Lease(path=target, name=name, manifest=manifest, _fd=fd)

    def lease_existing(self, path: str | Path) -> Lease | None:
        """Hold the entry at `path` if it is one of this cache's and still there; None for a
        path outside the cache (files on local storage need no lease)."""
        path = Path(path)
        if path.parent != self.root:
            return None
        fd = self._lock_shared(path.name)
        if not path.is_dir():
            os.close(fd)
            raise FileNotFoundError(f"The local copy {path} was removed; load the model again.")
        return Lease(path=path, name=path.name, manifest=_read_manifest(path) or {}, _fd=fd)

    def _lock_shared(self, name: str) -> int:
        lock = self._lock_path(name)
        for _ in range(100):
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
                if _same_file(fd, lock):
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # a sweep removed the entry meanwhile: lock the new file
        raise OSError(f"Could not lock the local copy {name}: it keeps being removed.")

    def _fill(self, target: Path, fill: Callable[[Path], None], manifest: dict) -> None:
        temp = self.root / f"{TEMP_PREFIX}{target.name}-{secrets.token_hex(4)}"
        temp.mkdir()
        try:
            fill(temp)
            (temp / MANIFEST).write_text(json.dumps(manifest))
        except BaseException:  # a file missing or unreadable: no half copy left behind
            shutil.rmtree(temp, ignore_errors=True)
            raise
        try:
            temp.rename(target)
        except OSError:  # another process filled it first
            shutil.rmtree(temp, ignore_errors=True)

    # --- sweeps ---------------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.iterdir():
            if path.name.startswith(".") or not path.is_dir():
                continue
            try:
                last_used = self._lock_path(path.name).stat().st_mtime
            except FileNotFoundError:
                last_used = _mtime(path)
            found.append(
                Entry(
                    name=path.name,
                    path=path,
                    manifest=_read_manifest(path),
                    last_used=last_used,
                    size_bytes=_size(path),
                )
            )
        return found

    def remove(self, name: str) -> bool:
        """Remove entry `name` unless a process holds it; True when it is gone."""
        lock = self._lock_path(name)
        target = self.root / name
        trash = None
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # in use: a later sweep tries again
            if not _same_file(fd, lock):
                return False  # another sweep removed it and a reader made it again
            if target.is_dir():
                trash = self.root / f"{TRASH_PREFIX}{name}-{secrets.token_hex(4)}"
                target.rename(trash)  # gone for readers at once
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
        finally:
            os.close(fd)
        if trash is not None:  # deleted after the lock is let go: no reader waits on it
            shutil.rmtree(trash, ignore_errors=True)
        return True

    def drop(self, predicate: Callable[[dict | None], bool]) -> list[str]:
        """Remove the entries whose manifest matches (those not held); returns their names."""
        return [
            entry.name
            for entry in self.entries()
            if predicate(entry.manifest) and self.remove(entry.name)
        ]

    def sweep(self, keep: Callable[[dict], bool], *, now: float | None = None) -> dict:
        """Remove entries that copy something gone (``keep(manifest)`` is False, or no
        manifest), then the least recently used ones while the cache is over ``max_bytes``,
        and leftovers of fills and removals by processes that died. Entries a process holds are
        skipped. Returns counts: removed, kept_in_use, bytes_left."""
        now = time.time() if now is None else now
        removed = in_use = 0
        self._remove_leftovers(now)
        alive = []
        for entry in self.entries():
            try:
                wanted = entry.manifest is not None and keep(entry.manifest)
            except Exception:  # the question could not be answered (database down): keep it
                logger.warning("Could not check the local copy %s", entry.name, exc_info=True)
                wanted = True
            if wanted:
                alive.append(entry)
            elif self.remove(entry.name):
                removed += 1
            else:
                in_use += 1
                alive.append(entry)
        total = sum(entry.size_bytes for entry in alive)
        if self.max_bytes:
            for entry in sorted(alive, key=lambda e: e.last_used):
                if total <= self.max_bytes:
                    break
                if self.remove(entry.name):
                    removed += 1
                    total -= entry.size_bytes
                else:
                    in_use += 1
        self._remove_stray_locks()
        return {"removed": removed, "kept_in_use": in_use, "bytes_left": total}

    def _remove_leftovers(self, now: float) -> None:
        if not self.root.is_dir():
            return
        for path in self.root.iterdir():
            if path.name.startswith(TRASH_PREFIX) or (
                path.name.startswith(TEMP_PREFIX) and now - _mtime(path) > TEMP_MAX_AGE_SECONDS
            ):
                shutil.rmtree(path, ignore_errors=True)

    def _remove_stray_locks(self) -> None:
        """Lock files whose entry is gone (a fill that failed): removed like an entry."""
        for lock in self.root.glob(f"*{LOCK_SUFFIX}"):
            name = lock.name[: -len(LOCK_SUFFIX)]
            if not (self.root / name).exists():
                self.remove(name)

    def _lock_path(self, name: str) -> Path:
        return self.root / f"{name}{LOCK_SUFFIX}"


def _check_name(name: str) -> None:
    if not name or name.startswith(".") or "/" in name or name.endswith(LOCK_SUFFIX):
        raise ValueError(f"Not a cache entry name: {name!r}")


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def _read_manifest(folder: Path) -> dict | None:
    try:
        value = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _size(folder: Path) -> int:
    total = 0
    for path in _walk(folder):
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    return total


def _walk(folder: Path) -> Iterator[Path]:
    with contextlib.suppress(OSError):
        for path in folder.rglob("*"):
            if path.is_file():
                yield path
