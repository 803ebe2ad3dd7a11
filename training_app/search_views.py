"""Search pages: the list, the new-search form, the search page and its live fragment."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from lepton_web.access import access_required
from lepton_web.jobs import BrokerUnavailable
from training_app import search as search_services
from training_app import search_selectors
from training_app.search_forms import SearchForm
from training_app.selectors import (
    base_model_choices_for_user,
    run_model_version,
    snapshot_training_choices_for_user,
)


@require_GET
@access_required("training_run", "view")
def search_list(request):
    searches = search_selectors.search_list_for_user(user=request.user)[:200]
    return render(request, "training_app/search_list.html", {"searches": searches})


@require_http_methods(["GET", "POST"])
@access_required("training_run", "create")
def search_create(request):
    initial = {}
    snapshot_id = request.GET.get("snapshot", "")
    if snapshot_id.isdigit() and len(snapshot_id) <= 18:
        initial["snapshot"] = int(snapshot_id)
    form = SearchForm(
        request.POST if request.method == "POST" else None,
        initial=initial,
        snapshots=snapshot_training_choices_for_user(user=request.user),
        base_models=base_model_choices_for_user(user=request.user),
    )
    status = 200
    if form.is_bound:
        status = 400
        if form.is_valid():
            try:
                search = search_services.search_start(user=request.user, **form.service_arguments())
            except ValidationError as exc:
                form.add_service_errors(exc)
            except BrokerUnavailable as exc:
                messages.error(request, str(exc))
                status = 503
            else:
                messages.success(
                    request,
                    f"Search “{search}” started: its first trials are queued on the gpu queue.",
                )
                return redirect("training:search_detail", search.pk)
    return render(request, "training_app/search_create.html", {"form": form}, status=status)


def _live_context(search) -> dict:
    rows = search_selectors.search_trial_rows(search)
    return {
        "search": search,
        "rows": rows,
        "chart": search_selectors.search_chart(rows, search),
        "importance": search_selectors.search_param_importance(search),
        "progress": search_selectors.search_progress(search, rows),
        "model_version": run_model_version(search.best_trial) if search.best_trial else None,
    }


@require_GET
@access_required("training_run", "view")
def search_detail(request, search_id: int):
    search = search_selectors.search_get_for_user(user=request.user, search_id=search_id)
    return render(request, "training_app/search_detail.html", _live_context(search))


@require_GET
@access_required("training_run", "view")
def search_live(request, search_id: int):
    """The live part of the search page (htmx polls it every 3 s while the search runs)."""
    search = search_selectors.search_get_for_user(user=request.user, search_id=search_id)
    response = render(request, "training_app/_search_live.html", _live_context(search))
    response["Cache-Control"] = "no-store"
    return response


@require_POST
@access_required("training_run", "cancel")
def search_cancel(request, search_id: int):
    search = search_selectors.search_get_for_user(user=request.user, search_id=search_id)
    try:
        search_services.search_cancel(search=search, user=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(
            request, "The search is cancelled; running trials stop at their next step."
        )
    return redirect("training:search_detail", search.pk)
