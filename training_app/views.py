from django.shortcuts import render
from django.views.decorators.http import require_GET

from lepton_web.access import access_required


@require_GET
@access_required("training_run", "view")
def run_list(request):
    return render(request, "training_app/run_list.html", {})
