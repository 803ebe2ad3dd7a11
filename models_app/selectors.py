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
        "registered_model__name", "-version"
    )


def model_version_get_for_user(*, user, version_id: int) -> ModelVersion:
    access_check(user, "model_version", "view")
    version = ModelVersion.objects.select_related("registered_model").filter(pk=version_id).first()
    if version is None:
        raise Http404("This model version does not exist.")
    return version


def model_version_download_response(version: ModelVersion) -> FileResponse:
    from models_app.services import model_version_zip

    name = f"{version.registered_model.name}-v{version.version}"
    safe = safe_filename(name)
    return FileResponse(
        model_version_zip(version),
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
