"""The model in the loop, per dataset: pre-label the unlabeled records with a version or an
endpoint, and retrain on new labels, with live progress (also shown on the labeling page)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from datasets_app.selectors import dataset_get_for_user
from lepton_web.access import access_required
from lepton_web.jobs import BrokerUnavailable
from models_app.batch_prediction import batch_prediction_start, prelabel_choices, prelabel_latest
from models_app.models import Deployment, ModelVersion
from training_app import retrain


def _context(request, dataset) -> dict:
    loop = retrain.retrain_loop_latest(dataset)
    return {
        "dataset": dataset,
        "loop": loop,
        "loop_progress": retrain.retrain_loop_progress(loop) if loop else None,
        "prelabel": prelabel_latest(dataset),
        "start_versions": list(retrain.retrain_start_versions(dataset)[:20]),
        **prelabel_choices(user=request.user),
    }


@require_GET
@access_required("training_run", "view")
def model_loop(request, dataset_id: int):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    return render(request, "training_app/model_loop.html", _context(request, dataset))


@require_GET
@access_required("training_run", "view")
def model_loop_live(request, dataset_id: int):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    return render(request, "training_app/_model_loop_live.html", _context(request, dataset))


def _prelabel_source(raw: str) -> dict:
    """The form's one choice, "version:<id>" or "endpoint:<slug>", as service arguments."""
    kind, _, value = (raw or "").partition(":")
    if kind == "version" and value.isdigit():
        version = ModelVersion.objects.filter(pk=int(value)).first()
        if version is not None:
            return {"version": version}
    elif kind == "endpoint" and value:
        deployment = Deployment.objects.filter(slug=value).first()
        if deployment is not None:
            return {"deployment": deployment}
    raise ValidationError("Choose a model version or an endpoint to pre-label with.")


@require_POST
@access_required("model_version", "create")
def model_loop_prelabel(request, dataset_id: int):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    try:
        source = _prelabel_source(request.POST.get("source", ""))
        batch = batch_prediction_start(user=request.user, dataset=dataset, **source)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    except BrokerUnavailable as error:
        messages.error(request, str(error))
    else:
        messages.success(
            request,
            f"Pre-labeling {batch.rows_total:,} unlabeled records with {batch.model_version} "
            f"({batch.runtime}).",
        )
    return redirect("training:model_loop", dataset.pk)


@require_POST
@access_required("training_run", "create")
def model_loop_retrain(request, dataset_id: int):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    raw = request.POST.get("version", "")
    version = None
    if raw:
        version = ModelVersion.objects.filter(pk=int(raw)).first() if raw.isdigit() else None
        if version is None:
            messages.error(request, "Choose a version trained on this dataset to start from.")
            return redirect("training:model_loop", dataset.pk)
    try:
        loop = retrain.retrain_loop_start(user=request.user, dataset=dataset, version=version)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    except BrokerUnavailable as error:
        messages.error(request, str(error))
    else:
        messages.success(
            request,
            f"Retraining {loop.from_version} on the new labels: snapshot, fine-tune, register, "
            "pre-label. Progress shows here and on the labeling page.",
        )
    return redirect("training:model_loop", dataset.pk)


@require_GET
@access_required("training_run", "view")
def retrain_loops_live(request):
    """The labeling page's panel: loops running now and those finished in the last hour."""
    rows = retrain.retrain_loops_recent()
    return render(
        request,
        "training_app/_retrain_loops.html",
        {"rows": rows, "polling": any(row["loop"].is_active for row in rows)},
    )
