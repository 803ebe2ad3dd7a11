"""Pages to try models: the playground (version and endpoint) and batch prediction.

htmx fragments: the playground posts a text and swaps in the result (class probabilities as a
bar chart, and on demand the words highlighted by their explanation); the version page loads
its batch-prediction card, whose running jobs poll the shared progress component.
"""

from __future__ import annotations

import contextlib

from django import forms
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from datasets_app.models import Snapshot
from lepton_web.access import access_required
from lepton_web.jobs import BrokerUnavailable
from models_app import batch_prediction as batch
from models_app.explanations import (
    DEFAULT_METHOD,
    PLAYGROUND_MAX_CHARS,
    deployment_try,
    highlighted_segments,
    model_version_try,
)
from models_app.models import BatchPrediction, Deployment
from models_app.selectors import deployment_get_for_user, model_version_get_for_user

METHOD_CHOICES = [("integrated_gradients", "Integrated gradients"), ("occlusion", "Occlusion")]


class PlaygroundForm(forms.Form):
    text = forms.CharField(
        max_length=PLAYGROUND_MAX_CHARS,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Type or paste a text"}),
        error_messages={"required": "Type or paste a text to try the model on."},
    )
    explain = forms.BooleanField(required=False)
    method = forms.ChoiceField(choices=METHOD_CHOICES, required=False)
    endpoint = forms.SlugField(required=False, max_length=60)


def _playground_response(request, form: PlaygroundForm, run):
    """Validate, run, and render the result fragment (errors in plain sentences, never a 500)."""
    context: dict = {}
    if not form.is_valid():
        context["errors"] = [e for errors in form.errors.values() for e in errors]
    else:
        data = form.cleaned_data
        try:
            result = run(data)
        except ValidationError as error:
            context["errors"] = error.messages
        else:
            context |= {
                "result": result,
                "label": result.result.get("label"),
                "segments": highlighted_segments(result.text, result.explanation),
                "method": dict(METHOD_CHOICES).get(data.get("method") or DEFAULT_METHOD),
            }
    return render(request, "models_app/_playground_result.html", context)


@require_POST
@access_required("model_version", "view")
def version_playground(request, version_id: int):
    version = model_version_get_for_user(user=request.user, version_id=version_id)

    def run(data):
        return model_version_try(
            version=version,
            text=data["text"],
            explain=data["explain"],
            method=data["method"] or DEFAULT_METHOD,
        )

    return _playground_response(request, PlaygroundForm(request.POST), run)


@require_http_methods(["GET", "POST"])
@access_required("deployment", "predict")
def endpoint_playground(request):
    """GET: the Deployments page's playground card; POST: try a text on an endpoint."""
    from models_app.serving import EndpointNotFound, EndpointUnavailable

    if request.method == "GET":
        endpoints = Deployment.objects.filter(status=Deployment.Status.LIVE).select_related(
            "version__registered_model"
        )
        return render(
            request,
            "models_app/_playground.html",
            {
                "endpoints": list(endpoints.order_by("slug")),
                "selected": request.GET.get("endpoint"),
            },
        )

    def run(data):
        if not data.get("endpoint"):
            raise ValidationError("Choose an endpoint.")
        try:
            deployment = deployment_get_for_user(user=request.user, slug=data["endpoint"])
            return deployment_try(
                deployment=deployment,
                text=data["text"],
                explain=data["explain"],
                method=data["method"] or DEFAULT_METHOD,
            )
        except (EndpointNotFound, EndpointUnavailable, Http404) as error:
            raise ValidationError(str(error)) from error

    return _playground_response(request, PlaygroundForm(request.POST), run)


# --------------------------------------------------------------------------- batch prediction


class BatchPredictionForm(forms.Form):
    source = forms.ChoiceField(
        choices=[("snapshot", "A snapshot of a dataset"), ("upload", "A CSV or JSON Lines file")],
        initial="snapshot",
        widget=forms.RadioSelect,
    )
    snapshot = forms.ModelChoiceField(
        queryset=Snapshot.objects.none(), required=False, empty_label="Choose a snapshot"
    )
    split = forms.ChoiceField(
        choices=[("", "Every split"), *[(s, s.capitalize()) for s in batch.SPLITS]],
        required=False,
    )
    file = forms.FileField(required=False, help_text="Read like a dataset upload.")
    text_column = forms.CharField(
        max_length=200, required=False, help_text="Default: a column named text, sentence, …"
    )
    label_column = forms.CharField(
        max_length=200, required=False, help_text="Optional: given labels, for accuracy and F1."
    )
    output_format = forms.ChoiceField(choices=BatchPrediction.Format.choices, initial="csv")
    store_suggestions = forms.BooleanField(
        required=False,
        label="Store as suggestions",
        help_text="Save each prediction on the dataset's record for the labeling queue.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["snapshot"].queryset = Snapshot.objects.select_related("dataset").order_by(
            "-created_at", "-id"
        )

    def clean(self):
        data = super().clean()
        if data.get("source") == "snapshot" and not data.get("snapshot"):
            self.add_error("snapshot", "Choose a snapshot.")
        if data.get("source") == "upload" and not data.get("file"):
            self.add_error("file", "Choose a file to upload.")
        return data


def _batch_card(request, version, form: BatchPredictionForm, status: int = 200):
    batches = batch.batch_prediction_list_for_version(user=request.user, version=version)[:20]
    return render(
        request,
        "models_app/_batch_predictions.html",
        {"version": version, "form": form, "batches": batches},
        status=status,
    )


@require_GET
@access_required("model_version", "view")
def version_batch_predictions(request, version_id: int):
    version = model_version_get_for_user(user=request.user, version_id=version_id)
    return _batch_card(request, version, _new_batch_form(version))


def _new_batch_form(version) -> BatchPredictionForm:
    # The snapshot the version was trained on is the usual choice: preselect it.
    return BatchPredictionForm(initial={"snapshot": version.snapshot_id})


@require_POST
@access_required("model_version", "create")
def version_batch_prediction_start(request, version_id: int):
    version = model_version_get_for_user(user=request.user, version_id=version_id)
    form = BatchPredictionForm(request.POST, request.FILES)
    if form.is_valid():
        data = form.cleaned_data
        from_snapshot = data["source"] == "snapshot"
        try:
            batch.batch_prediction_start(
                user=request.user,
                version=version,
                snapshot=data["snapshot"] if from_snapshot else None,
                split=data["split"] if from_snapshot else "",
                upload=None if from_snapshot else data["file"],
                text_column=data["text_column"],
                label_column=data["label_column"],
                output_format=data["output_format"],
                store_suggestions=data["store_suggestions"],
            )
        except ValidationError as error:
            if hasattr(error, "error_dict"):
                for field, errors in error.message_dict.items():
                    form.add_error(field if field in form.fields else None, errors)
            else:
                form.add_error(None, error.messages)
        except BrokerUnavailable as error:
            form.add_error(None, str(error))
        else:
            form = _new_batch_form(version)
    # The card is an htmx fragment: swapped in with the new job, or bound with the errors beside
    # the fields (200, so htmx swaps it; the markup says what is wrong).
    return _batch_card(request, version, form)


@require_POST
@access_required("model_version", "create")
def batch_prediction_cancel(request, batch_id: int):
    found = batch.batch_prediction_get_for_user(user=request.user, batch_id=batch_id)
    with contextlib.suppress(ValidationError):  # it finished meanwhile: the card shows how
        batch.batch_prediction_cancel(user=request.user, batch=found)
    if request.headers.get("HX-Request") == "true":
        return _batch_card(request, found.model_version, BatchPredictionForm())
    return redirect(reverse("models:version_detail", args=[found.model_version_id]) + "#batch")


@require_GET
@access_required("model_version", "view")
def batch_prediction_download(request, batch_id: int):
    found = batch.batch_prediction_get_for_user(user=request.user, batch_id=batch_id)
    return batch.batch_prediction_download_response(found)
