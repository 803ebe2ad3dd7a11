"""The likely-mislabeled page of a dataset (analysts): start or cancel a scan, follow it, and
read its flags (review items with the suggested label)."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from datasets_app.selectors import dataset_get_for_user
from lepton_web.access import access_required
from lepton_web.jobs import BrokerUnavailable
from models_app import mislabeled

FLAGS_SHOWN = 200


def _error_text(error: ValidationError) -> str:
    if hasattr(error, "error_dict"):
        return " ".join(m for msgs in error.message_dict.values() for m in msgs)
    return " ".join(error.messages)


@require_GET
@access_required("dataset", "change")
def dataset_mislabeled(request, dataset_id: int):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
    scans = mislabeled.mislabeled_scans_for_dataset(dataset=dataset)
    shown = next((scan for scan in scans if scan.status == "succeeded"), None)
    flags = mislabeled.mislabeled_flags(scan=shown, limit=FLAGS_SHOWN) if shown else []
    return render(
        request,
        "models_app/mislabeled.html",
        {
            "dataset": dataset,
            "scans": scans,
            "active": next((scan for scan in scans if scan.is_active), None),
            "shown": shown,
            "flags": flags,
            "flags_limit": FLAGS_SHOWN,
        },
    )


@require_POST
@access_required("dataset", "change")
def dataset_mislabeled_start(request, dataset_id: int):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
    try:
        mislabeled.mislabeled_scan_start(user=request.user, dataset=dataset)
    except ValidationError as error:
        messages.error(request, _error_text(error))
    except BrokerUnavailable as error:
        messages.error(request, str(error))
    else:
        messages.success(request, "The scan is queued; its progress shows below.")
    return redirect(reverse("models:dataset_mislabeled", args=[dataset.pk]))


@require_POST
@access_required("dataset", "change")
def dataset_mislabeled_cancel(request, dataset_id: int, scan_id: int):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
    scan = mislabeled.mislabeled_scan_get(dataset=dataset, scan_id=scan_id)
    try:
        mislabeled.mislabeled_scan_cancel(user=request.user, scan=scan)
    except ValidationError as error:
        messages.error(request, _error_text(error))
    else:
        messages.success(request, "The scan was cancelled; nothing was flagged.")
    return redirect(reverse("models:dataset_mislabeled", args=[dataset.pk]))
