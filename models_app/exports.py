"""ONNX export jobs: export, store next to the version's files, check parity, record it."""

from __future__ import annotations

import contextlib
import logging
import secrets
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.http import FileResponse, Http404

from lepton_web.access import access_check
from models_app.models import ModelExport, ModelVersion
from models_app.services import model_version_local_dir

logger = logging.getLogger(__name__)

PARITY_MAX_TEXTS = 1000


def model_export_start(*, user, version: ModelVersion, kind: str) -> ModelExport:
    from lepton_web.jobs import job_create_and_enqueue

    access_check(user, "model_version", "create")
    if kind not in ModelExport.Kind.values:
        raise ValidationError(
            {"kind": f"Export kind must be one of {', '.join(ModelExport.Kind.values)}."}
        )
    if version.status != ModelVersion.Status.READY:
        raise ValidationError({"version": f"{version} is not ready, so it cannot be exported."})
    if version.hyperparameters.get("method") == "prefix" or version.method == "prefix":
        raise ValidationError(
            {"kind": "Prefix-tuned versions cannot be exported to ONNX; serve them with PyTorch."}
        )
    if ModelExport.objects.filter(
        model_version=version, kind=kind, status__in=("queued", "running")
    ).exists():
        raise ValidationError({"kind": f"A {kind} export of {version} is already running."})
    return job_create_and_enqueue(
        model=ModelExport, model_version=version, kind=kind, created_by=user
    )


def _parity_texts(version: ModelVersion) -> tuple[list[str], str]:
    """Texts of the version's validation split (else its test split), at most 1,000."""
    if version.snapshot_id is None:
        return [], ""
    from datasets_app.models import SnapshotRecord

    for split in ("validation", "test"):
        texts = list(
            SnapshotRecord.objects.filter(snapshot_id=version.snapshot_id, split=split)
            .order_by("id")
            .values_list("text", flat=True)[:PARITY_MAX_TEXTS]
        )
        if texts:
            return texts, split
    return [], ""


def model_export_execute(*, export_id: int) -> ModelExport | None:
    from models_app import runtime
    from models_app.runtime.export import export_onnx, parity_check
    from models_app.runtime.predictor import ONNX_FILES

    export = ModelExport.objects.select_related("model_version").filter(pk=export_id).first()
    if export is None or not export.claim():
        return None
    version = export.model_version
    relative = ONNX_FILES[export.kind]
    from lepton_web.jobs import job_heartbeat

    stored = ""

    try:
        with (
            job_heartbeat(export),
            model_version_local_dir(version) as folder,
            tempfile.TemporaryDirectory() as temp,
        ):
            out = Path(temp) / Path(relative).name
            texts, split = _parity_texts(version)
            details = export_onnx(
                folder,
                out,
                kind=export.kind,
                progress=lambda percent, message: export.report(progress=percent, message=message),
                calibration_texts=texts,
            )
            export.report(progress=80, message="Checking parity with the PyTorch model.")
            threads = settings.SERVE_THREADS or None
            reference = runtime.load_predictor(
                folder, runtime="pytorch", task=version.task or None, threads=threads, device="cpu"
            )
            candidate = runtime.load_predictor(
                folder,
                runtime=export.kind,
                task=version.task or None,
                onnx_file=out,
                threads=threads,
            )
            parity = parity_check(reference, candidate, texts)
            export.report(progress=95, message="Storing the export.")
            # A name of its own: never the file another export (maybe served) is stored under.
            stored = export_storage_name(export)  # set first: a save that breaks is cleaned up
            with out.open("rb") as handle:
                stored = default_storage.save(stored, File(handle))
    except runtime.ArtifactError as error:
        _remove_unpublished(stored)
        export.fail(error=str(error))
        return export
    except Exception:
        _remove_unpublished(stored)
        logger.exception("Export %s crashed", export.pk)
        export.fail(error="The export stopped because of an internal error, which was logged.")
        raise
    if parity["agreement"] is None:
        message = "Exported; no validation or test split to check parity on, so it is not chosen by default."
    else:
        message = (
            f"Exported; {parity['agreement']:.1%} label agreement with PyTorch on "
            f"{parity['examples']:,} {split} texts, max |Δlogit| {parity['max_abs_logit_delta']:.4f}."
        )
    # Published: the row names the file and turns succeeded in one transaction, fenced by the
    # attempt this worker claimed, so nothing reads a half-stored file or a stale attempt's.
    try:
        with transaction.atomic():
            published = ModelExport.objects.filter(
                pk=export.pk, status="running", **export.attempt_filter()
            ).update(
                file_path=stored,
                size_bytes=details["size_bytes"],
                agreement=parity["agreement"],
                max_abs_logit_delta=parity["max_abs_logit_delta"],
                parity_examples=parity["examples"],
                details={**details, "parity_split": split},
            )
            won = bool(published) and export.succeed(message=message)
    except BaseException:
        _remove_unpublished(stored)
        raise
    if won:
        model_export_prune_superseded(export)
    else:  # the job was taken from this worker meanwhile: the file is nobody's
        _remove_unpublished(stored)
        export.refresh_from_db()
    return export


def export_storage_name(export: ModelExport) -> str:
    """Where `export` stores its graph: a folder of its own under the version's files
    (``onnx/export-<id>-<random>/model-int8.onnx``), so a re-export never writes over the file an
    endpoint serves, and a cache keyed on the name sees a new export as a new entry."""
    from models_app.runtime.predictor import ONNX_FILES

    filename = Path(ONNX_FILES[export.kind]).name
    unique = secrets.token_hex(4)  # two attempts of one job never share a name either
    return f"{export.model_version.artifact_uri}/onnx/export-{export.pk}-{unique}/{filename}"


def _remove_unpublished(name: str) -> None:
    """Remove what a failed or superseded attempt stored (whole or half), unless a row names it."""
    if not name or ModelExport.objects.filter(file_path=name).exists():
        return
    try:
        default_storage.delete(name)
    except Exception:  # a leftover file is only wasted space
        logger.warning("Could not remove the unpublished export file %s", name, exc_info=True)


def model_export_prune_superseded(export: ModelExport) -> int:
    """Delete the finished exports of `export`'s version and kind that are superseded (not
    the newest) and that no endpoint points at; their files go with them (see
    `model_export_file_release`). An export an endpoint still serves stays until a deploy or
    promote moves the endpoint onto another one (which prunes again): a new export never
    switches a live endpoint by itself. Returns how many were deleted."""
    from django.db.models import ProtectedError

    finished = ModelExport.objects.filter(
        model_version_id=export.model_version_id, kind=export.kind, status="succeeded"
    ).order_by("-created_at", "-pk")
    newest = finished.values_list("pk", flat=True).first()
    deleted = 0
    for pk in list(
        finished.exclude(pk=newest).filter(deployments__isnull=True).values_list("pk", flat=True)
    ):
        try:
            with transaction.atomic():
                row = ModelExport.objects.select_for_update().filter(pk=pk).first()
                if row is None or row.deployments.exists():
                    continue
                row.delete()
                deleted += 1
        except ProtectedError:  # an endpoint was moved onto it meanwhile: it stays
            continue
    return deleted


def model_export_file_release(*, sender, instance: ModelExport, **kwargs) -> None:
    """post_delete of an export row: remove its file once the delete commits, unless another
    export row names the same file (rows from before exports had folders of their own shared
    one name per kind). A row an endpoint uses cannot be deleted (PROTECT)."""
    name = instance.file_path
    if not name:
        return

    def remove() -> None:
        from models_app.serving import serve_cache_forget

        if ModelExport.objects.filter(file_path=name).exists():
            return
        if default_storage.exists(name):
            default_storage.delete(name)
        _remove_empty_parent(name)
        # This machine's local copies of it go too (other machines' at their next sweep).
        serve_cache_forget(export_file=name)

    transaction.on_commit(remove)


def model_export_zip(export: ModelExport):
    """The export with the tokenizer and config as a zip file object."""
    import shutil
    import zipfile

    from lepton_web.filenames import safe_filename

    version = export.model_version
    archive = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)  # noqa: SIM115 returned open
    folder = safe_filename(f"{version.registered_model.name}-v{version.version}-{export.kind}")
    keep = [
        item["path"]
        for item in version.artifact_files
        if not item["path"].endswith((".safetensors", ".bin")) and "/" not in item["path"]
    ]
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zipped:
        for relative in keep:
            with (
                default_storage.open(f"{version.artifact_uri}/{relative}", "rb") as source,
                zipped.open(f"{folder}/{relative}", "w") as target,
            ):
                shutil.copyfileobj(source, target, 1024 * 1024)
        with (
            default_storage.open(export.file_path, "rb") as source,
            zipped.open(f"{folder}/model.onnx", "w", force_zip64=True) as target,
        ):
            shutil.copyfileobj(source, target, 1024 * 1024)
    archive.seek(0)
    return archive


# --------------------------------------------------------------------------- reads


def model_export_get_for_user(*, user, export_id: int) -> ModelExport:
    access_check(user, "model_version", "view")
    export = (
        ModelExport.objects.select_related("model_version__registered_model")
        .filter(pk=export_id)
        .first()
    )
    if export is None:
        raise Http404("This export does not exist.")
    return export


def model_export_download_response(export: ModelExport) -> FileResponse:
    from lepton_web.filenames import safe_filename

    if export.status != "succeeded" or not export.file_path:
        raise Http404("This export has not finished, so there is nothing to download.")
    version = export.model_version
    name = safe_filename(f"{version.registered_model.name}-v{version.version}-{export.kind}")
    try:
        archive = model_export_zip(export)
    except FileNotFoundError as error:  # removed from storage since: a 404 that says so
        raise Http404(
            "A file of this export is missing from storage; export the version again."
        ) from error
    return FileResponse(
        archive,
        as_attachment=True,
        filename=f"{name}.zip",
        content_type="application/zip",
    )


def _remove_empty_parent(name: str) -> None:
    """On disk storage, the export's own folder once its file is gone (remote storage has no
    folders)."""
    try:
        folder = Path(default_storage.path(name)).parent
    except NotImplementedError:
        return
    if folder.name.startswith("export-"):
        with contextlib.suppress(OSError):  # not empty, or already gone
            folder.rmdir()
