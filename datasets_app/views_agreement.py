"""The agreement page of a dataset (analysts): figures from services.agreement."""

from django.shortcuts import render
from django.views.decorators.http import require_GET

from datasets_app.selectors import dataset_get_for_user
from datasets_app.services.agreement import dataset_agreement_get
from lepton_web.access import access_required


@require_GET
@access_required("dataset", "change")
def dataset_agreement(request, dataset_id: int):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
    figures = dataset_agreement_get(user=request.user, dataset=dataset)
    return render(request, "datasets_app/agreement.html", {"dataset": dataset, "figures": figures})
