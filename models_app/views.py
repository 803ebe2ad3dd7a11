from django.shortcuts import render
from django.views.decorators.http import require_GET

from lepton_web.access import access_required
from models_app.selectors import (
    base_model_list_for_user,
    model_version_download_response,
    model_version_get_for_user,
    registered_model_list_for_user,
)


@require_GET
@access_required("model_version", "view")
def model_list(request):
    context = {
        "base_models": base_model_list_for_user(user=request.user),
        "registered_models": registered_model_list_for_user(user=request.user),
    }
    return render(request, "models_app/model_list.html", context)


@require_GET
@access_required("model_version", "view")
def version_detail(request, version_id: int):
    version = model_version_get_for_user(user=request.user, version_id=version_id)
    return render(request, "models_app/version_detail.html", {"version": version})


@require_GET
@access_required("model_version", "view")
def version_download(request, version_id: int):
    """The version's Hugging Face folder as a zip (the page twin of the API download)."""
    version = model_version_get_for_user(user=request.user, version_id=version_id)
    return model_version_download_response(version)


@require_GET
@access_required("deployment", "view")
def deployment_list(request):
    return render(request, "models_app/deployment_list.html", {})
