from django.shortcuts import render
from django.views.decorators.http import require_GET

from lepton_web.access import access_required
from models_app.selectors import base_model_list_for_user


@require_GET
@access_required("model_version", "view")
def model_list(request):
    base_models = base_model_list_for_user(user=request.user)
    return render(request, "models_app/model_list.html", {"base_models": base_models})


@require_GET
@access_required("deployment", "view")
def deployment_list(request):
    return render(request, "models_app/deployment_list.html", {})
