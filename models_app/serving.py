"""The Django side of serving: look up the endpoint, get its loaded model, count the request.

The model itself runs in models_app/runtime (plain Python). Each process keeps one loaded model
per (version, runtime, artifact) in `runtime.model_cache`. What an endpoint serves and who a
token belongs to are memoised per process for STATE_TTL_SECONDS (`live_deployments`,
`predict_callers`), so a predict call asks the database nothing in the common case; a change
made in this process clears both at once (signals below), and one made in another process is
seen within STATE_TTL_SECONDS. Requests in flight finish on the model object they hold, so a
promote never fails a request. `predict_answer` is the one implementation of the predict call,
behind both the DRF view and the WSGI fast path (models_app/fastpath.py).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.utils import timezone
from rest_framework.authtoken.models import Token

from lepton_web.access import can, denial_message
from models_app import runtime
from models_app.api.auth import PredictionPrincipal
from models_app.explanations import ExplainBusy, deployment_explain
from models_app.models import (
    Deployment,
    DeploymentMinute,
    ModelExport,
    ModelVersion,
    PredictionLog,
    PredictionToken,
)
from models_app.services import model_version_files_copy

logger = logging.getLogger(__name__)

# Upper bounds (ms) of the latency histogram kept per endpoint and minute.
LATENCY_BOUNDS_MS = (
    1,
    2,
    3,
    5,
    7,
    10,
    15,
    20,
    30,
    50,
    75,
    100,
    150,
    200,
    300,
    500,
    1000,
    2000,
    5000,
)
STATS_FLUSH_SECONDS = 5.0
# How stale a serving process's view of an endpoint or a token may be when the change was made
# by another process (a revoked token, a stopped endpoint, a promote).
STATE_TTL_SECONDS = 1.0
PREDICT_FORBIDDEN = "You may not call predict."  # who gets no role-specific reason


class EndpointUnavailable(Exception):
    """The endpoint exists but cannot answer (stopped, failed, broken files): a 503."""


class EndpointNotFound(Exception):
    """No endpoint of that name: a 404."""


@dataclass
class Prediction:
    results: list[dict]
    version: ModelVersion
    runtime: str
    deployment: Deployment


# --- artifacts on local disk -----------------------------------------------------------------
def serve_cache() -> runtime.FileCache:
    """This machine's copies of versions kept in remote storage (models_app/runtime/filecache)."""
    root = Path(settings.SERVE_CACHE_DIR)
    max_bytes = int(settings.SERVE_CACHE_MAX_MB) * 1024 * 1024
    cache = _SERVE_CACHES.get(root)
    if cache is None:
        cache = _SERVE_CACHES[root] = runtime.FileCache(root, max_bytes=max_bytes)
    cache.max_bytes = max_bytes
    return cache


_SERVE_CACHES: dict[Path, runtime.FileCache] = {}


def model_version_serving_copy(
    version: ModelVersion, extra_files: list[str] = ()
) -> runtime.FileLease:
    """The version's folder on local disk, held until the lease is released: in place on disk
    storage (nothing to hold); from remote storage (S3) a copy under SERVE_CACHE_DIR,
    downloaded once per machine and shared by its processes, which a sweep removes only once
    no process holds it (and the version or export it copies is gone, or the cache is over
    SERVE_CACHE_MAX_MB)."""
    try:
        return runtime.FileLease(path=Path(default_storage.path(version.artifact_uri)), name="")
    except NotImplementedError:
        pass
    global _cache_in_use
    _cache_in_use = True
    serve_cache_sweep_when_due()
    extra_files = list(extra_files)
    digest = hashlib.sha256(f"{version.artifact_uri}|{'|'.join(extra_files)}".encode()).hexdigest()
    names = [item["path"] for item in version.artifact_files] + extra_files
    return serve_cache().lease(
        f"v{version.pk}-{digest[:12]}",
        lambda folder: model_version_files_copy(version, folder, names),
        manifest={
            "version_id": version.pk,
            "artifact_uri": version.artifact_uri,
            "extra_files": extra_files,
        },
    )


def model_version_serving_dir(version: ModelVersion, extra_files: list[str] = ()) -> Path:
    """The path of `model_version_serving_copy`, not held: for a caller that only looks (a
    loader holds the copy while it reads, see `model_version_serving_copy`)."""
    with model_version_serving_copy(version, extra_files) as folder:
        return folder


def _copy_names(manifest: dict) -> set[str]:
    uri = manifest.get("artifact_uri") or ""
    return {f"{uri}/{name}" for name in manifest.get("extra_files") or []}


def serve_cache_keep(manifest: dict) -> bool:
    """Whether a local copy still copies something that exists: its version (same files) and
    every export file it holds are still in the registry."""
    version_id, uri = manifest.get("version_id"), manifest.get("artifact_uri")
    if not ModelVersion.objects.filter(pk=version_id, artifact_uri=uri).exists():
        return False
    names = _copy_names(manifest)
    found = set(ModelExport.objects.filter(file_path__in=names).values_list("file_path", flat=True))
    return found == names


def serve_cache_forget(*, version_id: int | None = None, export_file: str = "") -> list[str]:
    """Forget what this process holds of a deleted version or export file (its loaded models,
    its local copies), now; copies another process still holds go at a later sweep."""
    if not export_file and version_id is None:
        return []

    def matches(manifest: dict | None) -> bool:
        if manifest is None:
            return False
        if version_id is not None and manifest.get("version_id") == version_id:
            return True
        return bool(export_file) and export_file in _copy_names(manifest)

    def loaded(key) -> bool:
        version_pk, _runtime, uri, onnx_relative = key
        return (version_id is not None and version_pk == version_id) or bool(
            export_file and onnx_relative and f"{uri}/{onnx_relative}" == export_file
        )

    runtime.model_cache.discard(loaded)
    return serve_cache().drop(matches)


def _loaded_from(key: tuple, manifest: dict) -> bool:
    """Whether the model cache entry `key` (see `served_model`) was loaded from that copy."""
    version_pk, _runtime, uri, onnx_relative = key
    return (version_pk, uri, [onnx_relative] if onnx_relative else []) == (
        manifest.get("version_id"),
        manifest.get("artifact_uri"),
        list(manifest.get("extra_files") or []),
    )


def serve_cache_sweep() -> dict:
    """Remove this machine's copies that copy something deleted, then the least recently used
    ones over SERVE_CACHE_MAX_MB; copies a process holds stay. Models this process loaded
    from a copy of something deleted are dropped first, so they do not hold it."""

    def keep(manifest: dict) -> bool:
        if serve_cache_keep(manifest):
            return True
        runtime.model_cache.discard(lambda key: _loaded_from(key, manifest))
        return False

    return serve_cache().sweep(keep)


_sweep_lock = threading.Lock()
_next_sweep = 0.0
_cache_in_use = False  # this process has used a copy (its storage is remote)


def serve_cache_sweep_when_due() -> None:
    """Start a sweep in the background when SERVE_CACHE_SWEEP_SECONDS have passed since the
    last one, in a process that uses copies (called on the request path and before each load:
    one flag and one clock read when not due). SERVE_CACHE_SWEEP_SECONDS=0 turns it off."""
    global _next_sweep
    if (
        not _cache_in_use
        or time.monotonic() < _next_sweep
        or not _sweep_lock.acquire(blocking=False)
    ):
        return
    if settings.SERVE_CACHE_SWEEP_SECONDS <= 0:
        _next_sweep = float("inf")
        _sweep_lock.release()
        return
    _next_sweep = time.monotonic() + settings.SERVE_CACHE_SWEEP_SECONDS

    def run() -> None:
        try:
            if Path(settings.SERVE_CACHE_DIR).is_dir():
                serve_cache_sweep()
        except Exception:
            logger.warning("The serve-cache sweep failed", exc_info=True)
        finally:
            connection.close()
            _sweep_lock.release()

    threading.Thread(target=run, name="serve-cache-sweep", daemon=True).start()


# --- the request path ---------------------------------------------------------------------------
_VERSIONS: dict[int, ModelVersion] = {}
_VERSIONS_MAX = 256


def _served_version(version_id: int) -> ModelVersion:
    """A version row with its model, kept per process: what serving reads of it (number,
    files, task, model name) does not change once it is registered."""
    version = _VERSIONS.get(version_id)
    if version is None:
        version = ModelVersion.objects.select_related("registered_model").get(pk=version_id)
        if len(_VERSIONS) >= _VERSIONS_MAX:
            _VERSIONS.clear()
        _VERSIONS[version_id] = version
    return version


live_deployments = runtime.TtlCache(ttl_seconds=STATE_TTL_SECONDS)
predict_callers = runtime.TtlCache(ttl_seconds=STATE_TTL_SECONDS)


def serving_state_clear(**kwargs) -> None:
    """Forget the memoised endpoints and callers, now and again when the current transaction
    commits (so a request that read the old rows meanwhile does not keep them)."""
    live_deployments.clear()
    predict_callers.clear()
    if kwargs.get("sender") is not None and connection.in_atomic_block:
        transaction.on_commit(_clear_both)


def _clear_both() -> None:
    live_deployments.clear()
    predict_callers.clear()


for _model in (Deployment, ModelExport, PredictionToken, Token, get_user_model()):
    post_save.connect(serving_state_clear, sender=_model, dispatch_uid=f"serving-{_model}-save")
    post_delete.connect(serving_state_clear, sender=_model, dispatch_uid=f"serving-{_model}-del")
for _through in (PredictionToken.deployments.through, get_user_model().groups.through):
    m2m_changed.connect(serving_state_clear, sender=_through, dispatch_uid=f"serving-{_through}")


def deployment_get_live(slug: str) -> Deployment:
    """The endpoint as it is now (at most STATE_TTL_SECONDS old when another process changed
    it). Raises EndpointNotFound or EndpointUnavailable (stopped, failed) with a plain reason."""
    found = live_deployments.get_or_compute(slug, lambda: _deployment_read(slug))
    if isinstance(found, tuple):  # a refusal: a fresh exception each time (threads share it)
        refusal, message = found
        raise refusal(message)
    return found


def _deployment_read(slug: str) -> Deployment | tuple[type[Exception], str]:
    """One plain query (the ORM's compile cost is a millisecond here); a refusal is returned as
    (exception class, message), not raised, so it is memoised like an answer."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT d.id, d.status, d.status_message, d.version_id, d.runtime, d.export_id, "  # noqa: S608 table names from the models
            f"e.file_path FROM {Deployment._meta.db_table} d "
            f"LEFT JOIN {ModelExport._meta.db_table} e ON e.id = d.export_id WHERE d.slug = %s",
            [slug],
        )
        row = cursor.fetchone()
    if row is None:
        return EndpointNotFound, f"Nothing is deployed at {slug}."
    pk, status, status_message, version_id, runtime_name, export_id, file_path = row
    if status == Deployment.Status.STOPPED:
        return (
            EndpointUnavailable,
            f"The endpoint {slug} is stopped. Start it on the Deployments page.",
        )
    if status == Deployment.Status.FAILED:
        reason = status_message or "its model could not be loaded"
        return EndpointUnavailable, f"The endpoint {slug} has failed: {reason}"
    deployment = Deployment(
        pk=pk,
        slug=slug,
        status=status,
        status_message=status_message,
        version_id=version_id,
        runtime=runtime_name,
        export_id=export_id,
    )
    deployment.version = _served_version(version_id)
    if export_id is not None:
        deployment.export = ModelExport(pk=export_id, file_path=file_path or "")
    return deployment


def export_relative_name(version: ModelVersion, export: ModelExport) -> str:
    """The export's file relative to the version's folder. Every export has a storage name of
    its own (models_app.exports.export_storage_name), so the name also keys the model cache and
    the remote-storage copy: a re-export is a new entry, never a change under an old one."""
    prefix = f"{version.artifact_uri}/"
    name = export.file_path
    return name[len(prefix) :] if name.startswith(prefix) else name


def _onnx_relative(deployment: Deployment) -> str | None:
    """What the endpoint serves is the file of the export row it points at: a newer export of
    the same kind changes nothing here until a deploy or promote moves the endpoint onto it."""
    if deployment.runtime == Deployment.Runtime.PYTORCH or deployment.export is None:
        return None
    return export_relative_name(deployment.version, deployment.export)


def served_model(deployment: Deployment) -> runtime.MicroBatcher:
    """The loaded model (behind its micro-batcher) for the endpoint's current version."""
    version = deployment.version
    onnx_relative = _onnx_relative(deployment)
    key = (version.pk, deployment.runtime, version.artifact_uri, onnx_relative)

    def load() -> runtime.MicroBatcher:
        lease = model_version_serving_copy(version, [onnx_relative] if onnx_relative else [])
        try:
            folder = lease.path
            predictor = runtime.load_predictor(
                folder,
                runtime=deployment.runtime,
                task=version.task or None,
                threads=settings.SERVE_THREADS
                or runtime.engines.thread_count(processes=settings.SERVE_PROCESSES),
                onnx_file=folder / onnx_relative if onnx_relative else None,
            )
        except BaseException:
            lease.release()
            raise
        # The copy is held for as long as the model stays loaded (released when dropped).
        return _ServedModel(
            predictor, lease=lease, window_seconds=settings.SERVE_BATCH_WINDOW_MS / 1000.0
        )

    runtime.model_cache.max_models = settings.SERVE_MAX_MODELS
    serve_cache_sweep_when_due()
    return runtime.model_cache.get_or_load(key, load)


class _ServedModel(runtime.MicroBatcher):
    """An endpoint's loaded model, holding its local copy until the model cache drops it."""

    def __init__(self, predictor, *, lease: runtime.FileLease, **kwargs) -> None:
        super().__init__(predictor, **kwargs)
        self.lease = lease

    def close(self) -> None:
        super().close()
        self.lease.release()


def deployment_predict(*, deployment: Deployment, texts: list[str]) -> Prediction:
    """Run `texts` on the endpoint's current model. Raises EndpointUnavailable (a 503 with a
    plain reason) when the model cannot be loaded or run; never lets a traceback through."""
    started = time.perf_counter()
    try:
        try:
            model = served_model(deployment)
        except (runtime.ArtifactError, OSError) as error:
            reason = f"the files of {deployment.version} cannot be loaded ({error})"
            from models_app.deploy import deployment_mark_failed

            deployment_mark_failed(
                deployment_id=deployment.pk, version_id=deployment.version_id, reason=reason
            )
            live_deployments.clear()
            raise EndpointUnavailable(
                f"The endpoint {deployment.slug} has failed: {reason}"
            ) from error
        try:
            results = model.submit(texts, timeout=120)
        except Exception as error:
            logger.exception("Prediction failed on %s", deployment.slug)
            raise EndpointUnavailable(
                f"The endpoint {deployment.slug} could not run {deployment.version}; the error was logged."
            ) from error
    except EndpointUnavailable:
        stats.record(deployment.pk, time.perf_counter() - started, texts=len(texts), error=True)
        raise
    stats.record(deployment.pk, time.perf_counter() - started, texts=len(texts), error=False)
    if settings.SERVE_LOG_PREDICTIONS:
        PredictionLog.objects.bulk_create(
            PredictionLog(deployment=deployment, version=deployment.version, text=t, result=r)
            for t, r in zip(texts, results, strict=True)
        )
    return Prediction(
        results=results,
        version=deployment.version,
        runtime=deployment.runtime,
        deployment=deployment,
    )


def deployment_record_error(deployment_id: int) -> None:
    stats.record(deployment_id, 0.0, texts=0, error=True)


def predict_answer(
    *, user, slug: str, texts, explain: bool = False, explain_method: str | None = None
) -> tuple[int, dict, dict]:
    """(status, body, headers) of a predict call by an authenticated `user` (a user or a
    PredictionPrincipal): the one implementation behind the DRF view and the WSGI fast path."""
    if isinstance(user, PredictionPrincipal):
        if slug not in user.slugs:
            return 403, _body("This prediction token may not call this endpoint."), {}
    elif not can(user, "deployment", "predict"):
        return 403, _body(denial_message(user, "deployment", "predict")), {}
    problem = predict_texts_problem(texts)
    if problem:
        return 400, _body(problem[1], {problem[0]: [problem[1]]}), {}
    try:
        deployment = deployment_get_live(slug)
        prediction = deployment_predict(deployment=deployment, texts=texts)
        if explain:
            explained = deployment_explain(
                deployment=deployment, texts=texts, method=explain_method
            )
            for result, explanation in zip(prediction.results, explained, strict=True):
                result["explanation"] = explanation
    except EndpointNotFound as error:
        return 404, _body(str(error)), {}
    except EndpointUnavailable as error:
        return 503, _body(str(error)), {"Retry-After": "30"}
    except ExplainBusy as error:
        return 429, _body(error.message), {"Retry-After": str(error.retry_after)}
    version = prediction.version
    return (
        200,
        {
            "endpoint": deployment.slug,
            "model": version.registered_model.name,
            "version": version.version,
            "version_id": version.pk,
            "runtime": prediction.runtime,
            "predictions": prediction.results,
        },
        {},
    )


def predict_texts_problem(texts) -> tuple[str, str] | None:
    """(field, message) of what is wrong with a predict call's `texts`, or None."""
    max_texts = settings.SERVE_MAX_TEXTS
    max_chars = settings.SERVE_MAX_CHARS
    if texts is None:
        return "texts", 'Send {"texts": ["..."]}: a list of one or more texts.'
    if not isinstance(texts, list):
        return "texts", "texts must be a list of strings, even for one text."
    if not texts:
        return "texts", "texts is empty; send at least one text."
    if len(texts) > max_texts:
        return "texts", f"Send at most {max_texts} texts per request; this one has {len(texts)}."
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            return f"texts[{index}]", f"Text {index} is not a string."
        if len(text) > max_chars:
            return (
                f"texts[{index}]",
                f"Text {index} has {len(text):,} characters; the limit is {max_chars:,}.",
            )
    return None


def _body(detail: str, errors: dict | None = None) -> dict:
    return {"detail": detail, "errors": errors or {}}


# --- per-minute counts ----------------------------------------------------------------------------
def _bucket(seconds: float) -> int:
    milliseconds = seconds * 1000.0
    for index, bound in enumerate(LATENCY_BOUNDS_MS):
        if milliseconds <= bound:
            return index
    return len(LATENCY_BOUNDS_MS)


class _Stats:
    """Counts in memory, written to DeploymentMinute every few seconds (one upsert per endpoint
    and minute), so a request does not pay for a database write."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[int, datetime], list] = {}
        self._last_flush = time.monotonic()

    def record(self, deployment_id: int, seconds: float, *, texts: int, error: bool) -> None:
        minute = timezone.now().replace(second=0, microsecond=0)
        with self._lock:
            entry = self._pending.setdefault(
                (deployment_id, minute), [0, 0, 0, [0] * (len(LATENCY_BOUNDS_MS) + 1)]
            )
            entry[0] += 1
            entry[1] += int(error)
            entry[2] += texts
            if not error:
                entry[3][_bucket(seconds)] += 1
            due = time.monotonic() - self._last_flush >= STATS_FLUSH_SECONDS
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            self._last_flush = time.monotonic()
        for (deployment_id, minute), (requests, errors, texts, buckets) in pending.items():
            try:
                with transaction.atomic():
                    # Locks the endpoint so it cannot be deleted under us; skip one deleted
                    # meanwhile (its foreign key would only fail at commit).
                    if not Deployment.objects.select_for_update().filter(pk=deployment_id).exists():
                        continue
                    row, _ = DeploymentMinute.objects.select_for_update().get_or_create(
                        deployment_id=deployment_id, minute=minute
                    )
                    merged = list(row.latency_buckets or [0] * len(buckets))
                    merged += [0] * (len(buckets) - len(merged))
                    row.latency_buckets = [a + b for a, b in zip(merged, buckets, strict=True)]
                    row.requests += requests
                    row.errors += errors
                    row.texts += texts
                    row.save()
            except Exception:  # the endpoint was deleted meanwhile, or the database hiccuped
                logger.warning("Could not write request counts of endpoint %s", deployment_id)


stats = _Stats()


def latency_percentile(buckets: list[int], fraction: float) -> float | None:
    """The upper bound (ms) of the bucket holding the given fraction of requests."""
    total = sum(buckets)
    if not total:
        return None
    needed = fraction * total
    running = 0
    for index, count in enumerate(buckets):
        running += count
        if running >= needed:
            return (
                float(LATENCY_BOUNDS_MS[index])
                if index < len(LATENCY_BOUNDS_MS)
                else float(LATENCY_BOUNDS_MS[-1] * 2)
            )
    return None


def deployment_usage(deployment: Deployment, *, minutes: int = 60) -> dict:
    """The last hour: totals, p50/p95, and one point per minute for the chart."""
    stats.flush()
    since = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
    rows = list(DeploymentMinute.objects.filter(deployment=deployment, minute__gte=since))
    width = len(LATENCY_BOUNDS_MS) + 1
    total = [0] * width
    for row in rows:
        for index, count in enumerate(row.latency_buckets[:width]):
            total[index] += count
    by_minute = {row.minute: row for row in rows}
    series = []
    for offset in range(minutes):
        minute = since + timedelta(minutes=offset)
        row = by_minute.get(minute)
        buckets = row.latency_buckets if row else []
        series.append(
            {
                "minute": minute.isoformat(),
                "requests": row.requests if row else 0,
                "errors": row.errors if row else 0,
                "p50_ms": latency_percentile(buckets, 0.5),
                "p95_ms": latency_percentile(buckets, 0.95),
            }
        )
    return {
        "requests": sum(r.requests for r in rows),
        "errors": sum(r.errors for r in rows),
        "p50_ms": latency_percentile(total, 0.5),
        "p95_ms": latency_percentile(total, 0.95),
        "series": series,
    }
