"""The last step of a search: register the best trial's model as the version.

The search is REGISTERING from the moment its best trial is chosen (under its lock) until that
version exists; only then SUCCEEDED. The worker that chose the best trial holds the step; beat
(``searches_advance``) takes over a claim that went silent (a dead worker) and retries a failed
attempt, up to ``REGISTRATION_MAX_ATTEMPTS``. Keeps the best-so-far trial's model folder in
storage meanwhile, for a search that finishes on another machine."""

from __future__ import annotations

import logging
import shutil
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from django.core.files import File
from django.core.files.storage import default_storage
from django.db.models import F, Q
from django.utils import timezone

from training_app import services as training_services
from training_app.checkpoints import checkpoint_sync_enabled, storage_folder_delete
from training_app.models import HyperparameterSearch, TrainingEvent
from training_app.search.study import trial_score

logger = logging.getLogger(__name__)


_STORAGE_PREFIX = "training/searches"
# Registering the best trial's model copies a folder (seconds to minutes): a claim older than
# this belongs to a worker that died, and beat takes the step over.
REGISTRATION_STALE_SECONDS = 600
REGISTRATION_MAX_ATTEMPTS = 3


def artifact_prefix(run_id: int) -> str:
    return f"{_STORAGE_PREFIX}/run-{run_id}"


def artifact_upload(run_id: int, folder: Path) -> None:
    prefix = artifact_prefix(run_id)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = f"{prefix}/{path.relative_to(folder).as_posix()}"
        if default_storage.exists(name):
            default_storage.delete(name)
        with path.open("rb") as handle:
            default_storage.save(name, File(handle))


def artifact_download(run_id: int, target: Path, prefix: str | None = None) -> bool:
    prefix = prefix or artifact_prefix(run_id)
    try:
        folders, files = default_storage.listdir(prefix)
    except FileNotFoundError:
        return False
    target.mkdir(parents=True, exist_ok=True)
    for name in files:
        with default_storage.open(f"{prefix}/{name}") as source, (target / name).open("wb") as out:
            shutil.copyfileobj(source, out)
    for name in folders:
        artifact_download(run_id, target / name, f"{prefix}/{name}")
    return bool(files or folders)


def _registration_claim(search_id: int, *, now: datetime) -> bool:
    """Take the registering step of a REGISTERING search nobody holds (an attempt failed) or
    whose holder went silent (its worker died). One conditional UPDATE: one taker wins."""
    stale = now - timedelta(seconds=REGISTRATION_STALE_SECONDS)
    return bool(
        HyperparameterSearch.objects.filter(
            pk=search_id,
            status=HyperparameterSearch.Status.REGISTERING,
            registration_attempts__lt=REGISTRATION_MAX_ATTEMPTS,
        )
        .filter(Q(registration_claimed_at__isnull=True) | Q(registration_claimed_at__lt=stale))
        .update(
            registration_claimed_at=now,
            registration_attempts=F("registration_attempts") + 1,
            updated_at=now,
        )
    )


def _registration_end(search: HyperparameterSearch, *, status: str, message: str) -> bool:
    """REGISTERING -> ``status`` (SUCCEEDED or FAILED), once: False when it had already left."""
    now = timezone.now()
    changes = {
        "status": status,
        "message": message[:500],
        "finished_at": now,
        "updated_at": now,
        "registration_claimed_at": None,
    }
    won = HyperparameterSearch.objects.filter(
        pk=search.pk, status=HyperparameterSearch.Status.REGISTERING
    ).update(**changes)
    if won:
        for key, value in changes.items():
            setattr(search, key, value)
    return bool(won)


def _registration_gave_up(search_id: int, *, now: datetime) -> None:
    """Fail a registering search whose last allowed attempt failed or went silent."""
    stale = now - timedelta(seconds=REGISTRATION_STALE_SECONDS)
    HyperparameterSearch.objects.filter(
        pk=search_id,
        status=HyperparameterSearch.Status.REGISTERING,
        registration_attempts__gte=REGISTRATION_MAX_ATTEMPTS,
    ).filter(Q(registration_claimed_at__isnull=True) | Q(registration_claimed_at__lt=stale)).update(
        status=HyperparameterSearch.Status.FAILED,
        registration_claimed_at=None,
        finished_at=now,
        updated_at=now,
        message=(
            f"Registering the best trial's model failed {REGISTRATION_MAX_ATTEMPTS} times, so "
            "nothing was registered; see the worker log, or run the best trial's settings as a "
            "plain run."
        ),
    )


def search_register(*, search_id: int, claimed: bool = False) -> HyperparameterSearch | None:
    """The last step of a search: register the best trial's model as the version, then mark
    the search SUCCEEDED (or FAILED when its model is gone). Safe to call any time.

    ``claimed``: the caller holds the step (it set REGISTERING itself). Otherwise the step is
    taken only when nobody holds it or its holder went silent for REGISTRATION_STALE_SECONDS;
    a failed attempt releases it for beat to retry, up to REGISTRATION_MAX_ATTEMPTS.
    """
    if not claimed:
        found = _registering_with_version(search_id)
        if found is not None:
            # Its holder died after registering the version (maybe on its last attempt): the
            # step is done but for the mark, which needs no claim (the end is one conditional
            # UPDATE).
            _best_register(found)
            return found
        now = timezone.now()
        _registration_gave_up(search_id, now=now)
        if not _registration_claim(search_id, now=now):
            return HyperparameterSearch.objects.filter(pk=search_id).first()
    search = HyperparameterSearch.objects.select_related("best_trial").filter(pk=search_id).first()
    if search is None or search.status != HyperparameterSearch.Status.REGISTERING:
        return search
    try:
        _best_register(search)
    except Exception as exc:
        logger.exception("Registering the best trial of search %s failed", search.pk)
        message = (
            f"Registering the best trial's model failed (attempt {search.registration_attempts} "
            f"of {REGISTRATION_MAX_ATTEMPTS}): {exc}. It is tried again within a minute."
        )[:500]
        HyperparameterSearch.objects.filter(
            pk=search.pk, status=HyperparameterSearch.Status.REGISTERING
        ).update(registration_claimed_at=None, message=message, updated_at=timezone.now())
        search.refresh_from_db()
    return search


def _registering_with_version(search_id: int) -> HyperparameterSearch | None:
    """The search, when it is REGISTERING and its best trial's version already exists."""
    from models_app.models import ModelVersion

    search = (
        HyperparameterSearch.objects.select_related("best_trial")
        .filter(
            pk=search_id,
            status=HyperparameterSearch.Status.REGISTERING,
            best_trial__isnull=False,
        )
        .first()
    )
    if search is None or not ModelVersion.objects.filter(training_run=search.best_trial).exists():
        return None
    return search


def _best_register(search: HyperparameterSearch) -> None:
    """Register the best trial's model, then end the search (slow: outside the search's lock).

    A version the best trial already has (a worker died between registering it and marking the
    search) is taken as it is."""
    from models_app.models import ModelVersion
    from models_app.services import model_version_register

    best = search.best_trial
    if best is None:  # the best trial's run was deleted meanwhile
        _registration_end(
            search,
            status=HyperparameterSearch.Status.FAILED,
            message="The best trial was deleted before its model was registered.",
        )
        return
    version = ModelVersion.objects.filter(training_run=best).first()
    is_new = version is None
    if version is None:
        local = training_services.run_dir(best.pk) / "artifact"
        try:
            with tempfile.TemporaryDirectory() as scratch:
                folder = local
                if not local.is_dir():
                    folder = Path(scratch) / "artifact"
                    if not (checkpoint_sync_enabled() and artifact_download(best.pk, folder)):
                        raise FileNotFoundError(local)
                version = model_version_register(run=best, artifact_dir=folder)
        except FileNotFoundError:
            _registration_end(
                search,
                status=HyperparameterSearch.Status.FAILED,
                message=(
                    f"Best: trial {best.trial_number + 1}. Its model folder is not on this "
                    "worker and no copy is in storage, so nothing was registered; run its "
                    "settings as a plain run."
                ),
            )
            return
    if is_new:
        TrainingEvent.objects.create(
            run=best, kind="registered", message=f"Registered {version} as the search's best trial."
        )
    score = trial_score(search, best)
    _registration_end(
        search,
        status=HyperparameterSearch.Status.SUCCEEDED,
        message=(
            f"Best: trial {best.trial_number + 1}, validation {search.metric} "
            f"{score if score is not None else float('nan'):.4f}; registered {version}."
        ),
    )
    shutil.rmtree(training_services.run_dir(best.pk), ignore_errors=True)
    if checkpoint_sync_enabled():
        storage_folder_delete(artifact_prefix(best.pk))
