"""Labeling settings (overlap, queue order, assigned annotators) and the review queue, for
analysts. Each view checks the shape of the form and calls one service."""

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from datasets_app.models import MAX_OVERLAP, LabelingOrder, ReviewItem
from datasets_app.selectors import (
    dataset_annotators,
    dataset_get_for_user,
    review_item_counts,
    review_items_for_page,
)
from datasets_app.services.labeling import (
    dataset_assign,
    dataset_unassign,
    label_choices,
    labeling_settings_set,
    review_item_adjudicate,
    review_item_dismiss,
)
from lepton_web.access import ANNOTATOR, access_required


def _error(exc: ValidationError) -> str:
    return " ".join(exc.messages)


def _annotator_candidates(assigned) -> list:
    users = get_user_model().objects.filter(is_active=True, groups__name=ANNOTATOR)
    return list(users.exclude(pk__in=[user.pk for user in assigned]).order_by("username"))


@require_http_methods(["GET", "POST"])
@access_required("dataset", "change")
def labeling_settings(request, dataset_id: int):
    """Overlap (annotations per record) and the queue's order."""
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
    if request.method == "GET":
        return _labeling_settings_page(request, dataset)
    values = {"overlap": request.POST.get("overlap", ""), "order": request.POST.get("order", "")}
    errors = {}
    # One service call per field, so each sentence goes next to its own field; nothing is
    # saved unless both are valid.
    with transaction.atomic():
        # An empty order leaves it as it is; an empty overlap is the service's mistake to name.
        for name, value in (("overlap", values["overlap"]), ("order", values["order"] or None)):
            try:
                labeling_settings_set(dataset=dataset, user=request.user, **{name: value})
            except ValidationError as exc:
                errors[name] = _error(exc)
        if errors:
            transaction.set_rollback(True)
    if errors:
        dataset.refresh_from_db()
        return _labeling_settings_page(request, dataset, values=values, errors=errors, status=400)
    messages.success(request, "Labeling settings saved.")
    return redirect("datasets:labeling_settings", dataset_id=dataset.pk)


def _labeling_settings_page(request, dataset, *, values=None, errors=None, status: int = 200):
    assigned = dataset_annotators(dataset=dataset)
    return render(
        request,
        "datasets_app/labeling_settings.html",
        {
            "dataset": dataset,
            "values": values or {"overlap": dataset.label_overlap, "order": dataset.labeling_order},
            "errors": errors or {},
            "orders": LabelingOrder.choices,
            "max_overlap": MAX_OVERLAP,
            "assigned": assigned,
            "candidates": _annotator_candidates(assigned),
            "open_reviews": ReviewItem.objects.filter(
                dataset=dataset, status=ReviewItem.Status.OPEN
            ).count(),
        },
        status=status,
    )


@require_POST
@access_required("dataset", "change")
def labeling_assign(request, dataset_id: int):
    """Assign an annotator (``user``), or take one off (``remove``)."""
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
    users = get_user_model().objects
    try:
        if request.POST.get("remove"):
            annotator = users.filter(pk=_int(request.POST["remove"])).first()
            if annotator is None:
                raise ValidationError("That user does not exist any more.")
            dataset_unassign(dataset=dataset, user=request.user, annotator=annotator)
            messages.success(request, f"{annotator.get_username()} is no longer assigned.")
        else:
            annotator = users.filter(pk=_int(request.POST.get("user", ""))).first()
            if annotator is None:
                raise ValidationError("Choose an annotator to assign.")
            dataset_assign(dataset=dataset, user=request.user, annotator=annotator)
            messages.success(request, f"{annotator.get_username()} is assigned to this dataset.")
    except ValidationError as exc:
        messages.error(request, _error(exc))
    return redirect("datasets:labeling_settings", dataset_id=dataset.pk)


def _int(raw: str) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        return 0


@access_required("dataset", "change")
def review_queue(request, dataset_id: int):
    """Records whose annotators disagree, or that a model believes mislabeled: the annotations
    side by side and the labels to decide with."""
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
    status = request.GET.get("status", ReviewItem.Status.OPEN)
    if status not in ReviewItem.Status.values:
        status = ReviewItem.Status.OPEN
    items = review_items_for_page(dataset=dataset, user=request.user, status=status)
    counts = review_item_counts(dataset=dataset)
    return render(
        request,
        "datasets_app/review_queue.html",
        {
            "dataset": dataset,
            "items": items,
            "labels": label_choices(dataset),
            "status": status,
            "status_total": counts[status],
            "status_open": counts[ReviewItem.Status.OPEN],
            "status_done": counts[ReviewItem.Status.RESOLVED] + counts[ReviewItem.Status.DISMISSED],
            "statuses": [(value, text, counts[value]) for value, text in ReviewItem.Status.choices],
        },
    )


@require_POST
@access_required("dataset", "change")
def review_decide(request, dataset_id: int, item_id: int):
    """Adjudicate (``label``) or dismiss (``dismiss``) one review item."""
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
    try:
        if request.POST.get("dismiss"):
            review_item_dismiss(dataset=dataset, user=request.user, item_id=item_id)
            messages.success(request, "Dismissed; the record keeps its label.")
        else:
            item = review_item_adjudicate(
                dataset=dataset,
                user=request.user,
                item_id=item_id,
                label=request.POST.get("label", ""),
            )
            messages.success(request, f'The record is labeled "{item.resolved_label}".')
    except ValidationError as exc:
        messages.error(request, _error(exc))
    return redirect(reverse("datasets:review_queue", args=[dataset.pk]))
