"""Training pages: run list and comparison, the new-run form with its live estimate, the run page,
and the evaluations panel of a model version page."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from lepton_web.access import access_check, access_required
from lepton_web.jobs import BrokerUnavailable
from models_app.selectors import model_version_get_for_user
from training_app import services
from training_app.forms import EvaluationForm, RunFilterForm, RunForm
from training_app.selectors import (
    base_model_choices_for_user,
    evaluation_list_for_version,
    run_dataset_choices_for_user,
    run_events,
    run_events_empty_text,
    run_get_for_user,
    run_headline_metric,
    run_list_for_user,
    run_live_state,
    run_metric_series,
    run_model_version,
    run_parameters,
    run_resume_note,
    run_status_line,
    run_test_report,
    run_tiles,
    runs_compare,
    runs_get_for_user,
    runs_validation_series,
    snapshot_choices_for_user,
    snapshot_training_choices_for_user,
)

RUNS_PER_PAGE = 50


def _error_sentences(error: ValidationError) -> list[str]:
    if hasattr(error, "error_dict"):
        return [m for messages_ in error.message_dict.values() for m in messages_]
    return list(error.messages)


def _ids(values: list[str]) -> list[int]:
    """Run ids from ``?runs=1,2,3`` (or ``?runs=1&runs=2``); anything else is ignored."""
    ids = []
    for value in values:
        for part in value.split(","):
            if part.strip().isdigit() and len(part.strip()) <= 18:
                ids.append(int(part))
    return ids


# --- list and compare -----------------------------------------------------------------------------
@require_GET
@access_required("training_run", "view")
def run_list(request):
    filters = RunFilterForm(
        request.GET or None, datasets=run_dataset_choices_for_user(user=request.user)
    )
    status = dataset_id = None
    if filters.is_bound and filters.is_valid():
        status = filters.cleaned_data["status"] or None
        dataset = filters.cleaned_data["dataset"]
        dataset_id = dataset.pk if dataset else None
    runs = run_list_for_user(user=request.user, status=status, dataset_id=dataset_id)
    page = Paginator(runs, RUNS_PER_PAGE).get_page(request.GET.get("page"))
    context = {
        "filters": filters,
        "is_filtered": bool(status or dataset_id),
        "page": page,
        "rows": [{"run": run, "metric": run_headline_metric(run)} for run in page],
        "has_any_run": bool(page.object_list) or run_list_for_user(user=request.user).exists(),
    }
    return render(request, "training_app/run_list.html", context)


@require_GET
@access_required("training_run", "view")
def run_compare(request):
    runs = runs_get_for_user(user=request.user, run_ids=_ids(request.GET.getlist("runs")))
    if len(runs) < 2:
        messages.warning(request, "Tick at least two runs, then press Compare selected.")
        return redirect("training:run_list")
    context = {
        "comparison": runs_compare(runs),
        "curves": runs_validation_series(runs),
    }
    return render(request, "training_app/run_compare.html", context)


# --- new run --------------------------------------------------------------------------------------
def _run_form(request, data=None) -> RunForm:
    initial = {}
    snapshot_id = request.GET.get("snapshot", "")
    if snapshot_id.isdigit() and len(snapshot_id) <= 18:
        initial["snapshot"] = int(snapshot_id)
    return RunForm(
        data,
        initial=initial,
        snapshots=snapshot_training_choices_for_user(user=request.user),
        base_models=base_model_choices_for_user(user=request.user),
    )


@require_http_methods(["GET", "POST"])
@access_required("training_run", "create")
def run_create(request):
    form = _run_form(request, request.POST if request.method == "POST" else None)
    status = 200
    if form.is_bound:
        status = 400
        if form.is_valid():
            try:
                run = services.training_run_start(
                    user=request.user, name=form.cleaned_data["name"], **form.service_arguments()
                )
            except ValidationError as exc:
                form.add_service_errors(exc)
            except BrokerUnavailable as exc:
                messages.error(request, str(exc))
                status = 503
            else:
                messages.success(
                    request,
                    f"Run “{run}” is queued. It starts as soon as a worker on the gpu queue "
                    "is free; this page follows it live.",
                )
                return redirect("training:run_detail", run.pk)
    return render(request, "training_app/run_create.html", {"form": form}, status=status)


@require_POST
@access_required("training_run", "create")
def run_estimate(request):
    """The estimate panel (htmx fragment): time and memory, or why there is no estimate."""
    form = _run_form(request, request.POST)
    context: dict = {"estimate": None, "problems": []}
    if not form.is_valid():
        if "snapshot" in form.errors and not request.POST.get("snapshot"):
            context["problems"] = ["Choose a snapshot to see an estimate."]
        else:
            context["problems"] = [
                f"{form.fields[name].label}: {message}" if name in form.fields else message
                for name, errors in form.errors.items()
                for message in errors
            ]
    else:
        arguments = form.service_arguments()
        try:
            estimate = services.training_run_estimate(**arguments)
        except ValidationError as exc:
            context["problems"] = _error_sentences(exc)
        else:
            from training_app.calibration import estimate_in_words

            context["estimate"] = {
                **(estimate_in_words(estimate) or {"range": "—", "basis": ""}),
                "gigabytes": float(estimate.get("memory_bytes") or 0) / 1e9,
                "train_records": arguments["snapshot"].split_counts.get("train", 0),
                "defaults": estimate.get("defaults", ""),
            }
    return render(request, "training_app/_estimate.html", context)


# --- one run --------------------------------------------------------------------------------------
@require_GET
@access_required("training_run", "view")
def run_detail(request, run_id: int):
    from training_app.calibration import run_timing

    run = run_get_for_user(user=request.user, run_id=run_id)
    context = {
        "run": run,
        "events": run_events(run),
        "events_empty_text": run_events_empty_text(run),
        "series": run_metric_series(run),
        "report": run_test_report(run) if run.is_finished else None,
        "model_version": run_model_version(run),
        "tiles": run_tiles(run),
        "status_line": run_status_line(run),
        "parameters": run_parameters(run),
        "live_url": reverse("training:run_live", args=[run.pk]),
        "resume_note": run_resume_note(run),
        "timing": run_timing(run),
    }
    return render(request, "training_app/run_detail.html", context)


@require_GET
@access_required("training_run", "view")
def run_live(request, run_id: int):
    """The run page's live state as JSON: badge, progress, tiles, events and charts together."""
    run = run_get_for_user(user=request.user, run_id=run_id)
    response = JsonResponse(run_live_state(run))
    response["Cache-Control"] = "no-store"
    return response


@require_GET
@access_required("training_run", "view")
def run_events_fragment(request, run_id: int):
    run = run_get_for_user(user=request.user, run_id=run_id)
    context = {
        "run": run,
        "events": run_events(run),
        "events_empty_text": run_events_empty_text(run),
    }
    return render(request, "training_app/_run_events.html", context)


@require_POST
@access_required("training_run", "cancel")
def run_cancel(request, run_id: int):
    run = run_get_for_user(user=request.user, run_id=run_id)
    try:
        services.training_run_cancel(run=run, user=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(_error_sentences(exc)))
    else:
        messages.success(request, "The run is cancelled. A running worker stops at its next step.")
    return redirect("training:run_detail", run.pk)


@require_POST
@access_required("training_run", "create")
def run_resume(request, run_id: int):
    run = run_get_for_user(user=request.user, run_id=run_id)
    try:
        run = services.training_run_resume(run=run, user=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(_error_sentences(exc)))
    except BrokerUnavailable as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"The run is queued again. {run.message}")
    return redirect("training:run_detail", run.pk)


# --- evaluations of a model version (a panel of the model version page) -------------------------
@require_http_methods(["GET", "POST"])
@access_required("training_run", "view")
def version_evaluations(request, version_id: int):
    """GET: the panel. POST: start an evaluation; htmx gets the panel back (errors next to the
    fields), a plain form post is redirected to the model version page with a flash message."""
    version = model_version_get_for_user(user=request.user, version_id=version_id)
    snapshots = snapshot_choices_for_user(user=request.user)
    form = EvaluationForm(snapshots=snapshots, initial={"snapshot": version.snapshot_id})
    started = None
    if request.method == "POST":
        access_check(request.user, "training_run", "create")
        form = EvaluationForm(request.POST, snapshots=snapshots)
        if form.is_valid():
            try:
                started = services.evaluation_start(
                    user=request.user,
                    model_version=version,
                    snapshot=form.cleaned_data["snapshot"],
                    split=form.cleaned_data["split"],
                )
            except ValidationError as exc:
                form.add_service_errors(exc)
            except BrokerUnavailable as exc:
                form.add_error(None, str(exc))
        if request.headers.get("HX-Request") != "true":
            if started:
                messages.success(request, f"{started} is queued.")
            for sentence in form.error_sentences():
                messages.error(request, sentence)
            return redirect("models:version_detail", version.pk)
        if started:
            form = EvaluationForm(snapshots=snapshots, initial={"snapshot": started.snapshot_id})
    context = {
        "version": version,
        "form": form,
        "started": started,
        "evaluations": evaluation_list_for_version(user=request.user, model_version=version),
    }
    # htmx swaps only 2xx answers, so a refused evaluation is a 200 with the errors in the panel.
    return render(request, "training_app/_evaluations.html", context)
