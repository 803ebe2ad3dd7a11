from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from lepton_web.access import access_required
from models_app.forms import BaseModelForm
from models_app.selectors import (
    base_model_list_for_user,
    model_version_download_response,
    model_version_get_for_user,
    registered_model_list_for_user,
)
from models_app.services import base_model_register, base_model_upload


def _model_list(request, form: BaseModelForm, status: int = 200):
    context = {
        "base_models": base_model_list_for_user(user=request.user),
        "registered_models": registered_model_list_for_user(user=request.user),
        "base_model_form": form,
    }
    return render(request, "models_app/model_list.html", context, status=status)


@require_GET
@access_required("model_version", "view")
def model_list(request):
    return _model_list(request, BaseModelForm())


@require_POST
@access_required("base_model", "create")
def base_model_create(request):
    form = BaseModelForm(request.POST, request.FILES)
    if form.is_valid():
        data = form.cleaned_data
        try:
            if data["source"] == "upload":
                if not data.get("file"):
                    raise ValidationError({"file": "Attach the zipped model folder."})
                base_model = base_model_upload(
                    user=request.user, name=data["name"], archive=data["file"]
                )
            else:
                if not data.get("location"):
                    raise ValidationError({"location": "Give the folder path or the hub id."})
                base_model = base_model_register(
                    user=request.user,
                    name=data["name"],
                    source=data["source"],
                    location=data["location"],
                )
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        else:
            messages.success(request, f"Added the base model {base_model.name}.")
            return redirect("models:model_list")
    return _model_list(request, form, status=400)


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
