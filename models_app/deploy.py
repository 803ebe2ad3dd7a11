"""Writes of endpoints: deploy, promote, rollback, stop, start, delete; aliases; archiving.

An endpoint is one row that points at a version and a runtime. Every change moves that pointer
in one short transaction (row locked) and writes a history event, so a serving process reads
either the old or the new pointer, never half of each: requests already running finish on the
model they picked up, the next ones load the new one (models_app/serving.py).
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import Http404
from django.utils import timezone

from lepton_web import vocabulary
from lepton_web.access import access_check
from models_app.models import (
    Deployment,
    DeploymentEvent,
    ModelAlias,
    ModelAliasEvent,
    ModelExport,
    ModelVersion,
    PredictionToken,
    RegisteredModel,
)

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,58}[a-z0-9])?$")
RUNTIME_SPEED_ORDER = ("onnx-int8", "onnx-fp32", "pytorch")


def export_for_runtime(version: ModelVersion, runtime: str) -> ModelExport | None:
    """The newest finished export of `version` for an ONNX runtime."""
    if runtime == Deployment.Runtime.PYTORCH:
        return None
    return (
        ModelExport.objects.filter(model_version=version, kind=runtime, status="succeeded")
        .order_by("-created_at")
        .first()
    )


def default_runtime(version: ModelVersion) -> str:
    """The fastest runtime whose export passed the parity check; PyTorch otherwise."""
    for runtime in RUNTIME_SPEED_ORDER[:-1]:
        export = export_for_runtime(version, runtime)
        if export is not None and export.passed_parity:
            return runtime
    return Deployment.Runtime.PYTORCH


def _check_servable(version: ModelVersion, runtime: str) -> ModelExport | None:
    if version.status != ModelVersion.Status.READY:
        raise ValidationError({"version": f"{version} is not ready, so it cannot be deployed."})
    if version.is_archived:
        raise ValidationError({"version": f"{version} is archived; unarchive it to deploy it."})
    if runtime not in Deployment.Runtime.values:
        raise ValidationError(
            {"runtime": f"Runtime must be one of {', '.join(Deployment.Runtime.values)}."}
        )
    export = export_for_runtime(version, runtime)
    if runtime != Deployment.Runtime.PYTORCH and export is None:
        raise ValidationError(
            {
                "runtime": f"{version} has no finished {vocabulary.word(runtime)} export. "
                "Export it first, or pick PyTorch."
            }
        )
    return export


def _move(
    deployment: Deployment,
    *,
    user,
    action: str,
    version: ModelVersion,
    runtime: str,
    export: ModelExport | None,
    message: str = "",
) -> Deployment:
    """Point `deployment` at `version`/`runtime`. A new, live or failed endpoint is live
    afterwards (a failed one gets its chance with the new version); a stopped one stays stopped
    until someone starts it, whichever way it moved (deploy, promote, rollback, alias), so moving
    a version never puts an endpoint someone stopped back on line."""
    stopped = bool(deployment.pk) and deployment.status == Deployment.Status.STOPPED
    status = Deployment.Status.STOPPED if stopped else Deployment.Status.LIVE
    event = DeploymentEvent(
        deployment=deployment,
        action=action,
        from_version=deployment.version if deployment.pk else None,
        to_version=version,
        from_runtime=deployment.runtime if deployment.pk else "",
        to_runtime=runtime,
        message=message[:300],
        user=user if getattr(user, "is_authenticated", False) else None,
    )
    previous = deployment.export if deployment.pk else None
    deployment.version = version
    deployment.runtime = runtime
    deployment.export = export
    deployment.status = status
    deployment.status_message = ""
    deployment.save()
    event.deployment = deployment
    event.save()
    if previous is not None and previous.pk != getattr(export, "pk", None):
        # The endpoint left `previous`: once committed, it is deleted with its file if a newer
        # export of its kind replaced it and no other endpoint serves it.
        from models_app.exports import model_export_prune_superseded

        transaction.on_commit(lambda: model_export_prune_superseded(previous))
    return deployment


def deployment_deploy(
    *,
    user,
    version: ModelVersion,
    slug: str,
    runtime: str | None = None,
    follow_alias: str = "",
) -> Deployment:
    """Deploy `version` at endpoint `slug`: creates the endpoint, or promotes it if it exists."""
    access_check(user, "deployment", "deploy")
    slug = (slug or "").strip().lower()
    if not SLUG.match(slug):
        raise ValidationError(
            {"slug": "An endpoint name uses lower-case letters, digits and dashes (at most 60)."}
        )
    runtime = runtime or default_runtime(version)
    export = _check_servable(version, runtime)
    follow_alias = (follow_alias or "").strip()
    if (
        follow_alias
        and not ModelAlias.objects.filter(
            registered_model=version.registered_model_id, name=follow_alias
        ).exists()
    ):
        raise ValidationError(
            {"follow_alias": f"{version.registered_model.name} has no alias {follow_alias!r}."}
        )
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().filter(slug=slug).first()
        if deployment is None:
            try:
                # A savepoint: a request that created the same slug meanwhile (a double
                # click) makes this insert fail, and the endpoint it made is promoted instead.
                with transaction.atomic():
                    return _move(
                        Deployment(slug=slug, created_by=user, follow_alias=follow_alias),
                        user=user,
                        action="deploy",
                        version=version,
                        runtime=runtime,
                        export=export,
                    )
            except IntegrityError:
                deployment = Deployment.objects.select_for_update().filter(slug=slug).first()
                if deployment is None:
                    raise
        deployment.follow_alias = follow_alias
        return _move(
            deployment,
            user=user,
            action="promote",
            version=version,
            runtime=runtime,
            export=export,
        )


def deployment_promote(
    *, user, deployment: Deployment, version: ModelVersion, runtime: str | None = None
) -> Deployment:
    """Point an existing endpoint at another version (and runtime) atomically."""
    access_check(user, "deployment", "deploy")
    runtime = runtime or default_runtime(version)
    export = _check_servable(version, runtime)
    with transaction.atomic():
        locked = _locked_deployment(deployment)
        return _move(
            locked, user=user, action="promote", version=version, runtime=runtime, export=export
        )


def deployment_change_sentence(deployment: Deployment, *, action: str = "promote") -> str:
    """What a deploy, promote or rollback did, in the sentence the pages and the API show: a
    stopped endpoint says that its new version serves only once it is started."""
    version, runtime = deployment.version, deployment.get_runtime_display()
    if deployment.status == Deployment.Status.STOPPED:
        return f"Endpoint {deployment.slug} is stopped; {version} will serve when you start it."
    if action == "deploy":
        return f"{version} is live at {deployment.slug} ({runtime})."
    if action == "rollback":
        return f"{deployment.slug} rolled back to {version} ({runtime})."
    return f"{deployment.slug} now serves {version} ({runtime})."


def _locked_deployment(deployment: Deployment) -> Deployment:
    """The endpoint's row, locked; a 404 that says so when it was deleted meanwhile (another
    tab, another user) instead of a DoesNotExist error."""
    locked = (
        Deployment.objects.select_for_update(of=("self",))
        .select_related("version__registered_model")
        .filter(pk=deployment.pk)
        .first()
    )
    if locked is None:
        raise Http404(f"The endpoint {deployment.slug} was deleted meanwhile.")
    return locked


def _locked_version(version: ModelVersion) -> ModelVersion:
    locked = (
        ModelVersion.objects.select_for_update(of=("self",))
        .select_related("registered_model")
        .filter(pk=version.pk)
        .first()
    )
    if locked is None:
        raise Http404(f"{version} was deleted meanwhile.")
    return locked


def deployment_previous(deployment: Deployment) -> DeploymentEvent | None:
    """The change that brought the endpoint to its current version (to roll back)."""
    return (
        DeploymentEvent.objects.filter(deployment=deployment, to_version=deployment.version_id)
        .exclude(from_version=None)
        .exclude(from_version=deployment.version_id)
        .order_by("-created_at", "-id")
        .first()
    )


def deployment_rollback(*, user, deployment: Deployment) -> Deployment:
    """Go back to the version (and runtime) the endpoint served before its last change."""
    access_check(user, "deployment", "deploy")
    with transaction.atomic():
        locked = _locked_deployment(deployment)
        previous = deployment_previous(locked)
        if previous is None or previous.from_version is None:
            raise ValidationError("This endpoint has no earlier version to roll back to.")
        version = previous.from_version
        runtime = previous.from_runtime or Deployment.Runtime.PYTORCH
        try:
            export = _check_servable(version, runtime)
        except ValidationError:
            runtime = Deployment.Runtime.PYTORCH
            export = _check_servable(version, runtime)
        return _move(
            locked, user=user, action="rollback", version=version, runtime=runtime, export=export
        )


def _set_status(*, user, deployment: Deployment, status: str, action: str) -> Deployment:
    access_check(user, "deployment", "deploy")
    with transaction.atomic():
        locked = _locked_deployment(deployment)
        if action == "start":
            _check_servable(locked.version, locked.runtime)
        locked.status = status
        locked.status_message = ""
        locked.save(update_fields=["status", "status_message", "updated_at"])
        DeploymentEvent.objects.create(
            deployment=locked,
            action=action,
            from_version=locked.version,
            to_version=locked.version,
            from_runtime=locked.runtime,
            to_runtime=locked.runtime,
            user=user,
        )
    return locked


def deployment_stop(*, user, deployment: Deployment) -> Deployment:
    return _set_status(
        user=user, deployment=deployment, status=Deployment.Status.STOPPED, action="stop"
    )


def deployment_start(*, user, deployment: Deployment) -> Deployment:
    return _set_status(
        user=user, deployment=deployment, status=Deployment.Status.LIVE, action="start"
    )


def deployment_delete(*, user, deployment: Deployment) -> None:
    access_check(user, "deployment", "deploy")
    deployment.delete()


def deployment_mark_failed(*, deployment_id: int, version_id: int, reason: str) -> None:
    """A serving process could not load the endpoint's model: say so on the page. Only while
    the endpoint still serves that version (a newer deploy may already have fixed it)."""
    Deployment.objects.filter(
        pk=deployment_id, version_id=version_id, status=Deployment.Status.LIVE
    ).update(
        status=Deployment.Status.FAILED, status_message=reason[:1000], updated_at=timezone.now()
    )


# --- aliases ------------------------------------------------------------------------------------
def model_alias_set(
    *, user, registered_model: RegisteredModel, name: str, version: ModelVersion
) -> ModelAlias:
    """Point alias `name` at `version` (created if new); endpoints following it redeploy."""
    access_check(user, "deployment", "deploy")
    name = (name or "").strip().lower()
    if not SLUG.match(name):
        raise ValidationError(
            {"name": "An alias uses lower-case letters, digits and dashes (e.g. production)."}
        )
    if version.registered_model_id != registered_model.pk:
        raise ValidationError({"version": f"{version} belongs to another model."})
    if version.is_archived:
        raise ValidationError({"version": f"{version} is archived."})
    if version.status != ModelVersion.Status.READY:
        # Endpoints following the alias would move onto a version without files.
        raise ValidationError(
            {"version": f"{version} is not ready, so an alias cannot point at it yet."}
        )
    with transaction.atomic():
        alias = (
            ModelAlias.objects.select_for_update()
            .filter(registered_model=registered_model, name=name)
            .first()
        )
        previous = alias.version if alias else None
        if alias is None:
            alias = ModelAlias(registered_model=registered_model, name=name)
        alias.version = version
        alias.updated_by = user
        alias.save()
        ModelAliasEvent.objects.create(
            registered_model=registered_model,
            name=name,
            from_version=previous,
            to_version=version,
            user=user,
        )
        following = Deployment.objects.select_for_update().filter(
            follow_alias=name, version__registered_model=registered_model
        )
        for deployment in following:
            if deployment.version_id == version.pk:
                continue
            runtime = default_runtime(version)
            _move(
                deployment,
                user=user,
                action="alias",
                version=version,
                runtime=runtime,
                export=export_for_runtime(version, runtime),
                message=f"Alias {name} moved to v{version.version}.",
            )
    return alias


def model_alias_delete(*, user, alias: ModelAlias) -> None:
    access_check(user, "deployment", "deploy")
    with transaction.atomic():
        ModelAliasEvent.objects.create(
            registered_model=alias.registered_model,
            name=alias.name,
            from_version=alias.version,
            to_version=None,
            user=user,
        )
        Deployment.objects.filter(
            follow_alias=alias.name, version__registered_model=alias.registered_model
        ).update(follow_alias="")
        alias.delete()


def model_version_archive(*, user, version: ModelVersion, archived: bool = True) -> ModelVersion:
    """Archive a version nothing deploys (no endpoint, no alias points at it), or unarchive."""
    access_check(user, "model_version", "delete")
    with transaction.atomic():
        locked = _locked_version(version)
        if archived:
            endpoints = list(
                Deployment.objects.filter(version=locked).values_list("slug", flat=True)
            )
            if endpoints:
                raise ValidationError(
                    f"{locked} is deployed at {', '.join(endpoints)}; deploy another version there first."
                )
            aliases = list(ModelAlias.objects.filter(version=locked).values_list("name", flat=True))
            if aliases:
                raise ValidationError(
                    f"Alias {', '.join(aliases)} points at {locked}; move it first."
                )
        locked.is_archived = archived
        locked.archived_at = timezone.now() if archived else None
        locked.save(update_fields=["is_archived", "archived_at", "updated_at"])
    version.is_archived, version.archived_at = locked.is_archived, locked.archived_at
    return locked


def model_version_delete(*, user, version: ModelVersion) -> dict[str, int]:
    """Delete an archived version with everything made from it: its files, its exports and
    its batch predictions (jobs, their input and output files). Refused while one of its jobs
    is queued or running. Returns how many jobs and files went."""
    from django.core.files.storage import default_storage

    from models_app.models import BatchPrediction

    access_check(user, "model_version", "delete")
    with transaction.atomic():
        locked = _locked_version(version)
        if not locked.is_archived:
            raise ValidationError(
                f"Archive {locked} before deleting it: archiving checks that nothing deploys it."
            )
        batches = list(BatchPrediction.objects.filter(model_version=locked))
        exports = list(ModelExport.objects.filter(model_version=locked))
        busy = _active_jobs_of(locked)
        if busy:
            raise ValidationError(
                f"{locked} still has {busy} job(s) queued or running (exports, batch "
                "predictions, evaluations); cancel them or let them finish, then delete it."
            )
        names = [f"{locked.artifact_uri}/{item['path']}" for item in locked.artifact_files]
        # Export files also go with their rows (models_app.exports.model_export_file_release,
        # when this commits, maybe before the loop below): counted here, while still there.
        export_names = {export.file_path for export in exports if export.file_path}
        export_files = sum(1 for name in export_names if default_storage.exists(name))
        names += sorted(export_names)
        for batch in batches:
            names += [name for name in (batch.output_file, batch.input_file.name) if name]
        folders = [locked.artifact_uri, *(f"predictions/{batch.pk}" for batch in batches)]
        locked.delete()  # exports and batch predictions go with it (CASCADE)
    # Files after the commit: a failed delete leaves the rows and their files as they were.
    removed = export_files
    for name in names:
        if default_storage.exists(name):
            default_storage.delete(name)
            removed += name not in export_names
    _remove_empty_folders(folders)
    from models_app.serving import serve_cache_forget

    serve_cache_forget(version_id=version.pk)  # this machine's local copies of it
    return {"batch_predictions": len(batches), "exports": len(exports), "files": removed}


def _active_jobs_of(version: ModelVersion) -> int:
    """Queued or running jobs that deleting ``version`` would delete with it, of any app
    (evaluations live in training_app: found through the relations, not imported)."""
    from django.db.models import CASCADE

    from lepton_web.jobs import ACTIVE_STATUSES, Job

    count = 0
    for relation in ModelVersion._meta.related_objects:
        model = relation.related_model
        if issubclass(model, Job) and relation.on_delete is CASCADE:
            count += model.objects.filter(
                **{relation.field.name: version}, status__in=ACTIVE_STATUSES
            ).count()
    return count


def _remove_empty_folders(prefixes: list[str]) -> None:
    """On disk storage, remove the folders the deleted files leave (remote storage has none)."""
    import shutil
    from pathlib import Path

    from django.core.files.storage import default_storage

    for prefix in prefixes:
        try:
            folder = Path(default_storage.path(prefix))
        except NotImplementedError:
            return
        if folder.is_dir() and not any(p.is_file() for p in folder.rglob("*")):
            shutil.rmtree(folder, ignore_errors=True)


# --- prediction-only tokens -----------------------------------------------------------------------
def prediction_token_create(*, user, name: str, slugs: list[str]) -> tuple[PredictionToken, str]:
    """A token that may only call predict on the named endpoints; returns it and its key (the
    key is not stored, only its hash, so it is shown once)."""
    import secrets

    from models_app.api.auth import KEY_PREFIX, hash_key

    access_check(user, "deployment", "deploy")
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "Give the token a name (the application that uses it)."})
    deployments = list(Deployment.objects.filter(slug__in=slugs))
    missing = sorted(set(slugs) - {d.slug for d in deployments})
    if missing:
        raise ValidationError({"endpoints": [f"No endpoint named {slug}." for slug in missing]})
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        token = PredictionToken.objects.create(
            name=name, key_hash=hash_key(key), prefix=key[:10], created_by=user
        )
        token.deployments.set(deployments)
    return token, key


def prediction_token_list(*, user):
    """The prediction tokens, with their endpoints and creator (deploy right: only those who may
    create and revoke tokens see them)."""
    access_check(user, "deployment", "deploy")
    return PredictionToken.objects.select_related("created_by").prefetch_related("deployments")


def prediction_token_revoke(*, user, token_id: int) -> str:
    """Revoke (delete) a prediction token: its key is refused at once in this process and
    within serving.STATE_TTL_SECONDS in the others (their memo of who a key is). Returns the
    revoked token's name."""
    access_check(user, "deployment", "deploy")
    token = PredictionToken.objects.filter(pk=token_id).first()
    if token is None:
        raise Http404("There is no prediction token with this id (revoked already?).")
    token.delete()
    return str(token)
