"""The agreement page of a dataset (analysts): figures from services.agreement."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from datasets_app.selectors import dataset_get_for_user
from datasets_app.services.agreement import dataset_agreement_count_start, dataset_agreement_get
from lepton_web.access import access_required
from lepton_web.jobs import BrokerUnavailable


@require_GET
@access_required("dataset", "change")
def dataset_agreement(request, dataset_id: int):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
    figures = dataset_agreement_get(user=request.user, dataset=dataset)
    return render(request, "datasets_app/agreement.html", {"dataset": dataset, "figures": figures})


@require_POST
@access_required("dataset", "change")
def dataset_agreement_count(request, dataset_id: int):
    """Count again after a background count failed (or could not be queued)."""
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
    try:
        dataset_agreement_count_start(user=request.user, dataset=dataset, again=True)
    except BrokerUnavailable as error:
        messages.error(request, f"The agreement figures could not be counted: {error}")
    return redirect("datasets:dataset_agreement", dataset.pk)
