from django.db.models import QuerySet
from django.http import FileResponse, Http404

from lepton_web.access import access_check
from lepton_web.filenames import safe_filename
from models_app.models import BaseModel, ModelVersion


def base_model_list_for_user(*, user) -> QuerySet[BaseModel]:
    access_check(user, "base_model", "view")
    return BaseModel.objects.all()


def model_version_list_for_user(*, user) -> QuerySet[ModelVersion]:
    access_check(user, "model_version", "view")
    return ModelVersion.objects.select_related("registered_model", "base_model").order_by(
        "registered_model__name", "-version", "-id"
    )


def model_version_get_for_user(*, user, version_id: int) -> ModelVersion:
    access_check(user, "model_version", "view")
    version = ModelVersion.objects.select_related("registered_model").filter(pk=version_id).first()
    if version is None:
        raise Http404("This model version does not exist.")
    return version


def model_version_download_response(version: ModelVersion) -> FileResponse:
    from models_app.services import model_version_zip

    if version.status != ModelVersion.Status.READY or not version.artifact_files:
        raise Http404("This version has no files to download: it is not ready.")
    name = f"{version.registered_model.name}-v{version.version}"
    safe = safe_filename(name)
    try:
        archive = model_version_zip(version)
    except FileNotFoundError as error:  # removed from storage since: a 404 that says so
        raise Http404(
            "A file of this version is missing from storage, so it cannot be downloaded."
        ) from error
    return FileResponse(
        archive,
        as_attachment=True,
        filename=f"{safe}.zip",
        content_type="application/zip",
    )


def registered_model_list_for_user(*, user) -> QuerySet:
    """Registered models with their versions (newest first), for the Models page."""
    from django.db.models import Prefetch

    from models_app.models import RegisteredModel

    access_check(user, "model_version", "view")
    versions = ModelVersion.objects.select_related("base_model").order_by("-version")
    return RegisteredModel.objects.prefetch_related(Prefetch("versions", queryset=versions))


def registered_model_get_for_user(*, user, model_id: int):
    from models_app.models import RegisteredModel

    access_check(user, "model_version", "view")
    registered = RegisteredModel.objects.filter(pk=model_id).first()
    if registered is None:
        raise Http404("This registered model does not exist.")
    return registered


def model_alias_list_for_user(*, user, registered_model=None) -> QuerySet:
    from models_app.models import ModelAlias

    access_check(user, "model_version", "view")
    aliases = ModelAlias.objects.select_related("registered_model", "version", "updated_by")
    if registered_model is not None:
        aliases = aliases.filter(registered_model=registered_model)
    return aliases


def model_alias_history_for_user(*, user, registered_model=None, limit: int = 200) -> QuerySet:
    """Alias moves, newest first: who moved which alias from which version to which."""
    from models_app.models import ModelAliasEvent

    access_check(user, "model_version", "view")
    events = ModelAliasEvent.objects.select_related(
        "registered_model", "from_version", "to_version", "user"
    )
    if registered_model is not None:
        events = events.filter(registered_model=registered_model)
    return events.order_by("-created_at", "-id")[:limit]


def deployment_list_for_user(*, user) -> QuerySet:
    from models_app.models import Deployment

    access_check(user, "deployment", "view")
    return Deployment.objects.select_related("version", "version__registered_model")


def deployment_get_for_user(*, user, slug: str):
    from models_app.models import Deployment

    access_check(user, "deployment", "view")
    deployment = (
        Deployment.objects.select_related("version", "version__registered_model")
        .filter(slug=slug)
        .first()
    )
    if deployment is None:
        raise Http404(f"Nothing is deployed at {slug}.")
    return deployment


def version_page_context(version: ModelVersion) -> dict:
    """Exports, aliases, endpoints and best-version flag for the version page."""
    from models_app.deploy import default_runtime
    from models_app.models import Deployment, ModelAlias
    from models_app.services import best_version_ids, version_selection_metric

    siblings = ModelVersion.objects.filter(registered_model=version.registered_model_id)
    return {
        "exports": list(version.exports.all()[:10]),
        "aliases": list(ModelAlias.objects.filter(version=version)),
        "endpoints": list(Deployment.objects.filter(version=version)),
        "default_runtime": default_runtime(version),
        "is_best": version.pk in best_version_ids(siblings),
        "selection_metric": version_selection_metric(version.task),
    }


def deployment_page_rows(*, user) -> list[dict]:
    """Each endpoint with its last hour's usage, history and the versions it may move to."""
    from models_app.deploy import deployment_previous
    from models_app.serving import deployment_usage

    rows = []
    for deployment in deployment_list_for_user(user=user):
        previous = deployment_previous(deployment)
        rows.append(
            {
                "deployment": deployment,
                "usage": deployment_usage(deployment),
                "history": list(
                    deployment.events.select_related("from_version", "to_version", "user")[:10]
                ),
                "rollback_to": previous.from_version if previous else None,
                "versions": list(
                    ModelVersion.objects.filter(
                        registered_model=deployment.version.registered_model_id,
                        status=ModelVersion.Status.READY,
                        is_archived=False,
                    ).order_by("-version")
                ),
            }
        )
    return rows
