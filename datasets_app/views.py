from django.shortcuts import render
from django.views.decorators.http import require_GET

from lepton_web.access import access_required


@require_GET
@access_required("dataset", "view")
def dataset_list(request):
    return render(request, "datasets_app/dataset_list.html", {})


@require_GET
@access_required("labeling", "view")
def labeling(request):
    return render(request, "datasets_app/labeling.html", {})
