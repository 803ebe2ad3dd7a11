import json
from datetime import timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import JsonResponse, RawPostDataException
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from datasets_app import services
from datasets_app.api.views import export_response
from datasets_app.forms import (
    CleanForm,
    DetectForm,
    MappingForm,
    SnapshotForm,
    SplitForm,
    UploadForm,
    encoding_name,
    separator_initial,
)
from datasets_app.limits import human_bytes, import_limits
from datasets_app.selectors import (
    FLAG_FILTERS,
    bulk_labels_undoable,
    dataset_get_for_user,
    dataset_latest_jobs,
    dataset_list_for_user,
    datasets_needing_labels,
    record_page,
    review_item_counts,
)
from lepton_web.access import access_required
from lepton_web.jobs import BrokerUnavailable


def _error_text(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return " ".join(m for msgs in exc.message_dict.values() for m in msgs)
    return " ".join(exc.messages)


def _limits_context() -> dict:
    limits = import_limits()
    return {
        "max_file": human_bytes(limits.max_file_bytes),
        "max_uncompressed": human_bytes(limits.max_uncompressed_bytes),
        "max_columns": limits.max_columns,
        "max_text_chars": limits.max_text_chars,
    }


@require_GET
@access_required("dataset", "view")
def dataset_list(request):
    context = {
        "datasets": dataset_list_for_user(user=request.user),
        "upload_form": UploadForm(),
        "limits": _limits_context(),
    }
    return render(request, "datasets_app/dataset_list.html", context)


@require_POST
@access_required("dataset", "create")
def dataset_upload(request):
    """Multipart upload from the drop zone (XHR, JSON answer) or the plain form (redirect)."""
    wants_json = request.headers.get("Accept", "").startswith("application/json")
    form = UploadForm(request.POST, request.FILES)
    error = None
    if form.is_valid():
        try:
            dataset = services.dataset_upload(
                user=request.user, file=form.cleaned_data["file"], name=form.cleaned_data["name"]
            )
        except ValidationError as exc:
            error = _error_text(exc)
        else:
            url = reverse("datasets:dataset_detail", args=[dataset.pk])
            if wants_json:
                return JsonResponse({"redirect": url}, status=201)
            return redirect(url)
    else:
        error = " ".join(e for errs in form.errors.values() for e in errs)
        if "file" in form.errors:
            error = "Choose a file to upload (CSV, TSV, JSON Lines, optionally .gz)."
    if wants_json:
        return JsonResponse({"detail": error, "errors": {"file": [error]}}, status=400)
    context = {
        "datasets": dataset_list_for_user(user=request.user),
        "upload_form": form,
        "upload_error": error,
        "limits": _limits_context(),
    }
    return render(request, "datasets_app/dataset_list.html", context, status=400)


@require_POST
@access_required("dataset", "create")
def dataset_demo(request):
    try:
        dataset = services.demo_dataset_load(user=request.user)
    except (BrokerUnavailable, ValidationError) as exc:
        messages.error(
            request, str(exc) if isinstance(exc, BrokerUnavailable) else _error_text(exc)
        )
        # The demo's file may be stored already (see DemoImportNotQueued): show its page.
        saved = getattr(exc, "dataset", None)
        if saved is None:
            return redirect("datasets:dataset_list")
        return redirect("datasets:dataset_detail", saved.pk)
    if dataset.status == dataset.Status.IMPORTING:
        messages.success(request, "The demo dataset is being imported.")
    else:
        messages.info(request, "The demo dataset is already loaded.")
    return redirect("datasets:dataset_detail", dataset.pk)


def _top_labels(label_counts: dict, limit: int = 40) -> dict:
    # JSON columns do not keep key order on PostgreSQL (jsonb), so sort by count here.
    ranked = sorted(label_counts.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return {
        "labels": [label or "(no label)" for label, _ in ranked],
        "values": [count for _, count in ranked],
    }


JOB_SHOWN_AFTER_END = timedelta(minutes=10)


def _recent(job):
    """The job while it is active or ended less than JOB_SHOWN_AFTER_END ago, else None."""
    if job is None or job.is_active:
        return job
    ended = job.finished_at or job.updated_at
    return job if ended and timezone.now() - ended < JOB_SHOWN_AFTER_END else None


def _detail_context(request, dataset, **extra) -> dict:
    jobs = dataset_latest_jobs(dataset)
    # A worker ends a job and changes the dataset in one transaction (an import's status, a
    # split's counts). The dataset was read before the jobs: a commit between the two reads
    # showed the job finished (so no longer polling) beside the dataset as it was, "Importing"
    # for good. Read after the jobs, the dataset is at least as new as they are.
    dataset.refresh_from_db()
    latest = jobs["import"]
    columns = dataset.detection.get("columns", [])
    mapping = dataset.mapping or {}
    mapping_initial = {
        "text_columns": mapping.get("text_columns", []),
        **separator_initial(mapping.get("text_separator")),
        "label_column": mapping.get("label_column") or "",
        "split_column": mapping.get("split_column") or "",
        "id_column": mapping.get("id_column") or "",
    }
    report = dataset.quality_report or {}
    label_counts = dataset.label_counts or {}
    review_counts = review_item_counts(dataset=dataset)
    context = {
        "dataset": dataset,
        "import_job": jobs["import"],
        "report_job": jobs["report"],
        "search_job": jobs["search_index"],
        # A split or fix shows while it runs and for a while after, with how it ended.
        "split_job": _recent(jobs["split"]),
        "clean_job": _recent(jobs["clean"]),
        # While records are being written, the buttons that would write them too are disabled.
        "records_busy": any(
            job is not None and job.is_active
            for job in (jobs["import"], jobs["split"], jobs["clean"])
        ),
        "encoding_name": encoding_name(dataset.detection.get("encoding", "")),
        "detect_form": DetectForm(),
        "mapping_form": MappingForm(initial=mapping_initial, columns=columns) if columns else None,
        "split_form": SplitForm(dataset=dataset),
        "snapshot_form": SnapshotForm(),
        "snapshots": dataset.snapshots.all(),
        "cleaning_actions": dataset.cleaning_actions.all()[:10],
        "can_undo": dataset.cleaning_actions.filter(
            undone_at__isnull=True, superseded_at__isnull=True
        ).exists(),
        "report": report,
        "label_chart": _top_labels(label_counts),
        "limits": _limits_context(),
        # The review queue is linked once there is something to review or overlap makes it likely.
        "review_link": dataset.label_overlap > 1 or any(review_counts.values()),
        "review_open": review_counts["open"],
        **extra,
    }
    # A Ready dataset offers "Import again with another mapping", opened when its latest
    # import failed (its records stay; the problems show there) or the mapping sent was invalid.
    form = context["mapping_form"]
    detect_form = context["detect_form"]
    context["reimport_open"] = dataset.is_ready and (
        (latest is not None and latest.status == latest.Status.FAILED)
        or bool(form is not None and form.is_bound and form.errors)
        or bool(detect_form.is_bound and detect_form.errors)
        or not dataset.detection  # reading again failed: the settings need changing
    )
    return context


@require_GET
@access_required("dataset", "view")
def dataset_detail(request, dataset_id: int):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    return render(request, "datasets_app/dataset_detail.html", _detail_context(request, dataset))


def _run(request, dataset, action, *, success: str | None = None):
    try:
        action()
    except ValidationError as exc:
        messages.error(request, _error_text(exc))
    except BrokerUnavailable as exc:
        messages.error(request, str(exc))
    else:
        if success:
            messages.success(request, success)
    return redirect("datasets:dataset_detail", dataset.pk)


@require_POST
@access_required("dataset", "change")
def dataset_detect(request, dataset_id: int):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
    form = DetectForm(request.POST)
    if form.is_valid():
        try:
            dataset = services.dataset_detect(dataset=dataset, **form.overrides())
        except ValidationError as exc:
            if not hasattr(exc, "error_dict"):
                messages.error(request, _error_text(exc))
                return redirect("datasets:dataset_detail", dataset.pk)
            form.add_error(None, exc)  # an override no file can be read with: at its field
        else:
            if dataset.detection:
                messages.success(request, "The file was read again with your settings.")
            else:
                messages.error(request, f"The file could not be read: {dataset.status_message}")
            return redirect("datasets:dataset_detail", dataset.pk)
    context = _detail_context(request, dataset, detect_form=form)
    return render(request, "datasets_app/dataset_detail.html", context, status=400)


@require_POST
@access_required("dataset", "change")
def dataset_import(request, dataset_id: int):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
    form = MappingForm(request.POST, columns=dataset.detection.get("columns", []))
    if not form.is_valid():
        context = _detail_context(request, dataset, mapping_form=form)
        return render(request, "datasets_app/dataset_detail.html", context, status=400)
    return _run(
        request,
        dataset,
        lambda: services.dataset_import_start(
            dataset=dataset, user=request.user, mapping=form.mapping()
        ),
        success="Import started.",
    )


@require_POST
@access_required("dataset", "change")
def dataset_import_cancel(request, dataset_id: int):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
    job = dataset_latest_jobs(dataset)["import"]
    if job is None:
        return redirect("datasets:dataset_detail", dataset.pk)
    return _run(
        request,
        dataset,
        lambda: services.dataset_import_cancel(job=job, user=request.user),
        success="Import cancelled.",
    )


@require_POST
@access_required("dataset", "change")
def dataset_clean(request, dataset_id: int):
    """Queue the fix; the quality report card shows its progress and reloads when it ends."""
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
    form = CleanForm(request.POST)
    kind = form.data.get("kind", "")
    try:
        services.dataset_clean_start(dataset=dataset, user=request.user, kind=kind)
    except (ValidationError, BrokerUnavailable) as exc:
        error = _error_text(exc) if isinstance(exc, ValidationError) else str(exc)
        context = _detail_context(request, dataset, clean_error=error)
        return render(request, "datasets_app/dataset_detail.html", context, status=400)
    return redirect(f"{reverse('datasets:dataset_detail', args=[dataset.pk])}#quality-report")


@require_POST
@access_required("dataset", "change")
def dataset_clean_undo(request, dataset_id: int):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
    return _run(
        request,
        dataset,
        lambda: services.dataset_clean_undo(dataset=dataset, user=request.user),
        success="The last cleaning step was undone.",
    )


@require_POST
@access_required("dataset", "change")
def dataset_split(request, dataset_id: int):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
    form = SplitForm(request.POST)
    if not form.is_valid():
        context = _detail_context(request, dataset, split_form=form)
        return render(request, "datasets_app/dataset_detail.html", context, status=400)
    try:
        services.dataset_split_start(
            dataset=dataset,
            user=request.user,
            mode=form.cleaned_data["mode"],
            ratios=form.ratios(),
            seed=form.cleaned_data["seed"],
        )
    except (ValidationError, BrokerUnavailable) as exc:
        # Next to the form, as a sentence, with what the user chose kept.
        form.add_error(None, _error_text(exc) if isinstance(exc, ValidationError) else str(exc))
        context = _detail_context(request, dataset, split_form=form)
        return render(request, "datasets_app/dataset_detail.html", context, status=400)
    # The split card shows the job's progress and reloads the page when it ends.
    return redirect(f"{reverse('datasets:dataset_detail', args=[dataset.pk])}#splits")


@require_POST
@access_required("dataset", "change")
def snapshot_create(request, dataset_id: int):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
    form = SnapshotForm(request.POST)
    form.is_valid()
    try:
        snapshot = services.snapshot_create(
            dataset=dataset, user=request.user, note=form.cleaned_data.get("note", "")
        )
    except ValidationError as exc:
        messages.error(request, _error_text(exc))
    else:
        # Taken anyway (it may be wanted for export), but the page says what it lacks.
        gaps = snapshot.training_gaps
        if gaps:
            messages.warning(request, f"Snapshot v{snapshot.number} created. {' '.join(gaps)}")
        else:
            messages.success(request, f"Snapshot v{snapshot.number} created.")
    return redirect(f"{reverse('datasets:dataset_detail', args=[dataset.pk])}#snapshots")


@require_POST
@access_required("dataset", "delete")
def dataset_delete(request, dataset_id: int):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="delete")
    try:
        services.dataset_delete(dataset=dataset, user=request.user)
    except ValidationError as exc:
        messages.error(request, _error_text(exc))
        return redirect("datasets:dataset_detail", dataset.pk)
    messages.success(request, f"Deleted {dataset.name}.")
    return redirect("datasets:dataset_list")


@require_GET
@access_required("dataset", "view")
def dataset_records(request, dataset_id: int):
    from datasets_app.services.labeling import label_choices

    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    params = request.GET
    try:
        after = int(params.get("after") or 0) or None
    except ValueError:
        after = None
    if after is not None and after >= 2**63:
        after = None
    filters = {
        "label": params.get("label")
        if "label" in params and params.get("label") != "__any__"
        else None,
        "split": params.get("split")
        if "split" in params and params.get("split") != "__any__"
        else None,
        "flag": params.get("flag") or None,
        "search": params.get("search", "")[:200],
    }
    page = record_page(dataset=dataset, after=after, **filters)
    query = request.GET.copy()
    query.pop("after", None)
    context = {
        "dataset": dataset,
        "page": page,
        "filters": filters,
        "flag_filters": FLAG_FILTERS,
        "labels": list(dataset.label_counts),
        "label_choices": label_choices(dataset),
        "filtered": any(value not in (None, "") for key, value in filters.items() if key != "label")
        or filters["label"] is not None,
        "query_without_after": query.urlencode(),
        # Where "label"/"relabel" comes back to: this page, filters and place kept.
        "here": request.get_full_path(),
        "bulk_labels": bulk_labels_undoable(dataset=dataset),
    }
    return render(request, "datasets_app/dataset_records.html", context)


@require_GET
@access_required("dataset", "export")
def dataset_export(request, dataset_id: int):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    snapshot = None
    raw = request.GET.get("snapshot", "")
    if raw:
        snapshot = (
            dataset.snapshots.filter(pk=int(raw)).first()
            if raw.isascii() and raw.isdigit() and len(raw) < 18
            else None
        )
        if snapshot is None:
            messages.error(request, "This dataset has no such snapshot.")
            return redirect("datasets:dataset_detail", dataset.pk)
    fmt = request.GET.get("format", "csv")
    if fmt not in ("csv", "jsonl"):
        messages.error(request, "Choose CSV or JSON Lines for the export.")
        return redirect("datasets:dataset_detail", dataset.pk)
    return export_response(dataset=dataset, snapshot=snapshot, fmt=fmt)


@require_GET
@access_required("labeling", "view")
def labeling(request):
    rows = datasets_needing_labels(user=request.user)
    return render(request, "datasets_app/labeling.html", {"rows": rows})


def _positive_int(raw: str | None) -> int | None:
    """A record id from a query string, or None when absent or not a usable id."""
    if raw and raw.isascii() and raw.isdigit() and len(raw) < 19:
        return int(raw) or None
    return None


def _safe_next(request, raw: str | None) -> str:
    """``raw`` if it is a path on this site (where to go back to after labeling), else ""."""
    if not raw or len(raw) > 2000 or not raw.startswith("/") or raw.startswith(("//", "/\\")):
        return ""
    if not url_has_allowed_host_and_scheme(
        raw, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return ""
    return raw


def _labeling_page(
    request,
    dataset,
    item,
    *,
    error: str = "",
    status: int = 200,
    schema_form: dict | None = None,
    next_url: str = "",
):
    """The labeling page; ``schema_form`` re-shows a refused label list as it was typed
    (``text``, ``multiple``, ``error``, ``labels_in_use``); ``next_url``: the page to go back
    to once the record is labeled (the records list it was opened from)."""
    from datasets_app.services.labeling import labeling_progress, split_labels

    context = {
        "dataset": dataset,
        "item": item,
        "record": item.record,
        "keyed_labels": [
            (label, str(index + 1) if index < 9 else ("0" if index == 9 else ""))
            for index, label in enumerate(item.labels)
        ],
        "current_labels": set(split_labels(item.record.label)) if item.record else set(),
        # Joined here: a template tag cannot span lines (a newline inside {{ }} left the tag
        # unparsed, and saving the editor unchanged replaced the labels with its pieces).
        "label_list_text": "\n".join(item.labels),
        "schema_form": schema_form or {},
        "next_url": next_url,
        "progress": labeling_progress(dataset=dataset, user=request.user),
        "error": error,
        "claim_minutes": max(1, settings.LABELING_CLAIM_SECONDS // 60),
    }
    record = item.record
    if record is not None:
        from datasets_app.services.labeling_multi import suggestions_shown

        suggestion = suggestions_shown(dataset=dataset, record_ids=[record.pk])
        context["suggestion"] = suggestion.get(record.pk)
        # The queue (not opened from the records list) runs in the page: records fetched
        # ahead, labels sent in the background, undo (labeling.js); where a record may have
        # several labels, keys tick them and Enter saves the set.
        if item.labels and not next_url:
            context["queue_config"] = {
                "dataset": dataset.pk,
                "user": request.user.pk,
                "multiple": dataset.label_multiple,
                "record": _record_json(record, context["suggestion"]),
                "error": error,
                "urls": {
                    "next": reverse("datasets:labeling_next_json", args=[dataset.pk]),
                    "submit": reverse("datasets:labeling_submit_json", args=[dataset.pk]),
                    "undo": reverse("datasets:labeling_undo_json", args=[dataset.pk]),
                },
            }
    return render(request, "datasets_app/label_record.html", context, status=status)


def _record_meta(record) -> str:
    """The line above a record's text: its row, id, split and exclusion."""
    parts = [f"Row {record.source_row:,}"]
    if record.external_id:
        parts.append(f"id {record.external_id}")
    if record.split:
        parts.append(record.split)
    if record.is_excluded:
        parts.append(f"excluded: {record.exclusion_reason}")
    return " · ".join(parts)


def _record_json(record, suggestion: dict | None) -> dict:
    """A record as the labeling page shows it."""
    return {
        "id": record.pk,
        "text": record.text,
        "label": record.label,
        "meta": _record_meta(record),
        "metadata": record.metadata or {},
        "suggestion": suggestion
        and {"label": suggestion["label"], "probability": suggestion["probability"]},
    }


def _json_error(exc: ValidationError, status: int = 400, **extra) -> JsonResponse:
    return JsonResponse({"error": _error_text(exc), **extra}, status=status)


def _json_body(request) -> dict:
    try:
        raw = request.body
    except RawPostDataException as exc:  # a form post, already read as form fields
        raise ValidationError(
            "The request must be JSON (Content-Type: application/json), not a form."
        ) from exc
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError("The request was not valid JSON.") from exc
    if not isinstance(body, dict):
        raise ValidationError("The request must be a JSON object.")
    return body


def _json_record_id(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        raise ValidationError("record_id must be a record id (a whole number).")
    return value


def _progress_json(request, dataset) -> dict:
    from datasets_app.services.labeling import labeling_progress

    dataset.refresh_from_db()
    return labeling_progress(dataset=dataset, user=request.user)


# Records a labeling page may ask to keep holding: shown, fetched ahead, and labels given while
# the connection was lost, not sent yet.
MAX_KEEP = 200


@require_GET
@access_required("labeling", "label")
def labeling_next_json(request, dataset_id: int):
    """The next record for the labeling page to show, fetched ahead, held for this user
    together with the records in ``keep`` (shown, fetched ahead or labeled and not yet sent)."""
    from datasets_app.services.labeling import labeling_next
    from datasets_app.services.labeling_keyboard import labeling_holds_extend
    from datasets_app.services.labeling_multi import suggestions_shown

    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    keep_raw = request.GET.get("keep", "")
    keep = [_positive_int(part) for part in keep_raw.split(",")[:MAX_KEEP] if part]
    if None in keep:
        return _json_error(ValidationError("keep must be record ids separated by commas."))
    try:
        item = labeling_next(
            dataset=dataset,
            user=request.user,
            after=_positive_int(request.GET.get("after")),
            keep=keep,
        )
    except ValidationError as exc:
        return _json_error(exc)
    labeling_holds_extend(dataset=dataset, user=request.user, record_ids=keep)
    record = item.record
    suggestion = (
        suggestions_shown(dataset=dataset, record_ids=[record.pk]).get(record.pk)
        if record
        else None
    )
    return JsonResponse(
        {
            "record": _record_json(record, suggestion) if record else None,
            "progress": _progress_json(request, dataset),
        }
    )


@require_POST
@access_required("labeling", "label")
def labeling_submit_json(request, dataset_id: int):
    """Save one label sent by the labeling page (JSON: record_id, label, key, expected_label,
    suggestion_label, suggestion_probability, time_spent_ms). A key sent again is applied once.
    Refused (400, or 409 when someone else labeled the record meanwhile) with the reason and
    the record as it is now."""
    from datasets_app.services.jobs import DatasetBusy
    from datasets_app.services.labeling import LabelConflict
    from datasets_app.services.labeling_keyboard import labeling_record_now
    from datasets_app.services.labeling_multi import labeling_submit_labels, suggestions_shown

    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    try:
        body = _json_body(request)
        record_id = _json_record_id(body.get("record_id"))
        probability = body.get("suggestion_probability")
        spent = body.get("time_spent_ms")
        if probability is not None and (
            isinstance(probability, bool) or not isinstance(probability, int | float)
        ):
            raise ValidationError("suggestion_probability must be a number between 0 and 1.")
        if spent is not None and (isinstance(spent, bool) or not isinstance(spent, int)):
            spent = None
        for name in ("label", "key", "suggestion_label"):
            if not isinstance(body.get(name, ""), str):
                raise ValidationError(f"{name} must be text.")
        if not body.get("key"):
            raise ValidationError(
                "The label came without a request key. Reload the page and label the record again."
            )
        expected = body.get("expected_label")
        if expected is not None and not isinstance(expected, str):
            raise ValidationError("expected_label must be text.")
    except ValidationError as exc:
        return _json_error(exc)
    try:
        labeling_submit_labels(
            dataset=dataset,
            user=request.user,
            record_id=record_id,
            label=body.get("label", ""),
            client_key=body.get("key", ""),
            expected_label=expected,
            suggestion_label=body.get("suggestion_label", ""),
            suggestion_probability=probability,
            time_spent_ms=spent,
        )
    except DatasetBusy as exc:
        return _json_error(exc, status=503)  # the page keeps it and sends it again
    except ValidationError as exc:
        record = labeling_record_now(dataset=dataset, record_id=record_id)
        shown = None
        if record is not None:
            suggestion = suggestions_shown(dataset=dataset, record_ids=[record.pk])
            shown = _record_json(record, suggestion.get(record.pk))
        status = 409 if isinstance(exc, LabelConflict) else 400
        return _json_error(exc, status=status, record=shown)
    return JsonResponse({"saved": True, "progress": _progress_json(request, dataset)})


@require_POST
@access_required("labeling", "label")
def labeling_undo_json(request, dataset_id: int):
    """Undo this user's label on one record (JSON: record_id); answers with the record as it is
    now, held for them, or 400 with the reason it can no longer be undone."""
    from datasets_app.services.labeling_keyboard import record_label_undo
    from datasets_app.services.labeling_multi import suggestions_shown

    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    try:
        body = _json_body(request)
        record = record_label_undo(
            dataset=dataset, user=request.user, record_id=_json_record_id(body.get("record_id"))
        )
    except ValidationError as exc:
        return _json_error(exc)
    suggestion = suggestions_shown(dataset=dataset, record_ids=[record.pk])
    return JsonResponse(
        {
            "record": _record_json(record, suggestion.get(record.pk)),
            "progress": _progress_json(request, dataset),
        }
    )


@require_GET
@access_required("labeling", "label")
def labeling_queue(request, dataset_id: int):
    """The next record to label (or ``?record=`` one), held for this user."""
    from datasets_app.services.labeling import labeling_next

    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    try:
        item = labeling_next(
            dataset=dataset,
            user=request.user,
            after=_positive_int(request.GET.get("after")),
            record_id=_positive_int(request.GET.get("record")),
        )
    except ValidationError as exc:
        messages.error(request, _error_text(exc))
        return redirect("datasets:labeling")
    return _labeling_page(
        request, dataset, item, next_url=_safe_next(request, request.GET.get("next"))
    )


def _probability_or_none(raw: str | None) -> float | None:
    """A suggestion's probability sent back by the page's form; None when absent or garbled
    (it is only a note on the annotation)."""
    try:
        value = float(raw) if raw else None
    except ValueError:
        return None
    return value if value is not None and 0 <= value <= 1 else None


@require_POST
@access_required("labeling", "label")
def labeling_save(request, dataset_id: int, record_id: int):
    """Save one label, then show the next record; on a conflict or a bad label, show this
    record again as it is now, with the reason next to the labels."""
    from datasets_app.services.jobs import DatasetBusy
    from datasets_app.services.labeling import LABEL_SEPARATOR, LabelConflict, labeling_next
    from datasets_app.services.labeling_multi import labeling_submit_labels

    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    next_url = _safe_next(request, request.POST.get("next"))
    try:
        probability = request.POST.get("suggestion_probability") or None
        labeling_submit_labels(
            dataset=dataset,
            user=request.user,
            record_id=record_id,
            # Several ticked labels (a list that allows several) or the one button pressed.
            label=LABEL_SEPARATOR.join(request.POST.getlist("label")),
            expected_label=request.POST.get("expected_label"),
            suggestion_label=request.POST.get("suggestion_label", ""),
            suggestion_probability=_probability_or_none(probability),
        )
    except DatasetBusy as exc:
        # Saving would wait on a split or fix: say so and come back to this record.
        messages.error(request, _error_text(exc))
        query = {"record": record_id, **({"next": next_url} if next_url else {})}
        return redirect(
            reverse("datasets:labeling_queue", args=[dataset.pk]) + "?" + urlencode(query)
        )
    except ValidationError as exc:
        try:
            item = labeling_next(dataset=dataset, user=request.user, record_id=record_id)
        except ValidationError:
            messages.error(request, _error_text(exc))
            return redirect(next_url or reverse("datasets:labeling_queue", args=[dataset.pk]))
        status = 409 if isinstance(exc, LabelConflict) else 400
        return _labeling_page(
            request, dataset, item, error=_error_text(exc), status=status, next_url=next_url
        )
    if next_url:  # opened from the records list: back to it, filters and place kept
        return redirect(next_url)
    after = "" if request.POST.get("stay") else f"?after={record_id}"
    return redirect(reverse("datasets:labeling_queue", args=[dataset.pk]) + after)


@require_POST
@access_required("dataset", "change")
def label_schema_edit(request, dataset_id: int):
    from datasets_app.services.labeling import LabelsInUse, label_schema_set, labeling_next

    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
    text = request.POST.get("labels", "")
    multiple = request.POST.get("multiple") == "on"
    try:
        dataset = label_schema_set(
            dataset=dataset,
            user=request.user,
            labels=text.splitlines(),
            multiple=multiple,
            drop_labels_in_use=request.POST.get("drop_labels_in_use") == "on",
        )
    except ValidationError as exc:
        # Shown again as typed, with the reason (and, for labels in use, a box to confirm).
        try:
            item = labeling_next(dataset=dataset, user=request.user)
        except ValidationError:
            messages.error(request, _error_text(exc))
            return redirect("datasets:labeling")
        schema_form = {
            "text": text,
            "multiple": multiple,
            "error": _error_text(exc),
            "labels_in_use": isinstance(exc, LabelsInUse),
        }
        return _labeling_page(request, dataset, item, status=400, schema_form=schema_form)
    messages.success(request, f"The label list now has {len(dataset.label_schema)} labels.")
    return redirect("datasets:labeling_queue", dataset.pk)


def _records_url(dataset, filters: dict) -> str:
    back = reverse("datasets:dataset_records", args=[dataset.pk])
    return f"{back}?{urlencode(filters)}" if filters else back


def _filters_in_words(filters: dict) -> list[str]:
    words = []
    if filters.get("search"):
        words.append(f"text matches “{filters['search']}”")
    if filters.get("label") not in (None, "__any__"):
        words.append(f"label is “{filters['label']}”" if filters["label"] else "no label")
    if filters.get("split") not in (None, "__any__"):
        words.append(f"split is {filters['split']}" if filters["split"] else "no split")
    if filters.get("flag"):
        words.append(f"{FLAG_FILTERS.get(filters['flag'], filters['flag'])}".lower())
    return words


@require_POST
@access_required("dataset", "change")
def records_label_bulk(request, dataset_id: int):
    """Label every record matching the records page's filters: first a page that says how many
    records would change and asks to confirm, then (confirmed) the change, back on the list."""
    from datasets_app.services.labeling import records_label_bulk as label_bulk
    from datasets_app.services.labeling import records_label_bulk_preview

    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
    post = request.POST
    filters = {key: post[key] for key in ("label", "split", "flag", "search") if key in post}
    label = post.get("new_label", "")
    back = _records_url(dataset, filters)
    expected = post.get("expected_count")
    try:
        if expected is None:
            preview = records_label_bulk_preview(
                dataset=dataset, user=request.user, label=label, filters=filters
            )
            if not preview.changing:
                messages.info(request, "Every matching record already has that label.")
                return redirect(back)
            context = {
                "dataset": dataset,
                "preview": preview,
                "filters": filters,
                "filters_in_words": _filters_in_words(filters),
                "back": back,
            }
            return render(request, "datasets_app/records_label_bulk_confirm.html", context)
        if not (expected.isascii() and expected.isdigit() and len(expected) < 10):
            raise ValidationError("Confirm the number of records to label again.")
        bulk = label_bulk(
            dataset=dataset,
            user=request.user,
            label=label,
            filters=filters,
            expected_count=int(expected),
        )
    except ValidationError as exc:
        messages.error(request, _error_text(exc))
    else:
        if bulk:
            noun = "record" if bulk.changed_count == 1 else "records"
            messages.success(
                request,
                f"Labeled {bulk.changed_count:,} {noun} “{bulk.label}”. If that was a mistake, "
                "undo it under “Bulk labels” on this page.",
            )
        else:
            messages.info(request, "Every matching record already has that label.")
    return redirect(back)


@require_POST
@access_required("dataset", "change")
def records_label_bulk_undo(request, dataset_id: int, bulk_label_id: int):
    """Undo one bulk label, then show the records it was given to."""
    from datasets_app.services.labeling import records_label_bulk_undo as undo

    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
    try:
        bulk = undo(dataset=dataset, user=request.user, bulk_label_id=bulk_label_id)
    except ValidationError as exc:
        messages.error(request, _error_text(exc))
        return redirect("datasets:dataset_records", dataset.pk)
    restored = bulk.restored_count or 0
    kept = bulk.changed_count - restored
    text = (
        f"Undid the bulk label “{bulk.label}”: {restored:,} "
        f"record{'' if restored == 1 else 's'} got their earlier label back."
    )
    if kept:
        text += (
            f" {kept:,} record{' was' if kept == 1 else 's were'} labeled again (or replaced "
            "by an import) since, and keep their newer label."
        )
    messages.success(request, text)
    return redirect(_records_url(dataset, bulk.filters))
