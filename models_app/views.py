from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from lepton_web.access import access_required
from models_app import deploy
from models_app.exports import model_export_start
from models_app.forms import AliasForm, BaseModelForm, DeployForm, PredictionTokenForm, PromoteForm
from models_app.selectors import (
    base_model_list_for_user,
    deployment_get_for_user,
    deployment_list_for_user,
    deployment_page_rows,
    model_alias_history_for_user,
    model_alias_list_for_user,
    model_version_download_response,
    model_version_get_for_user,
    registered_model_get_for_user,
    registered_model_list_for_user,
    version_page_context,
)
from models_app.services import base_model_register, base_model_upload


def _model_list(request, form: BaseModelForm, status: int = 200):
    from models_app.services import best_version_ids

    registered = registered_model_list_for_user(user=request.user)
    context = {
        "base_models": base_model_list_for_user(user=request.user),
        "registered_models": registered,
        "best_version_ids": best_version_ids(v for m in registered for v in m.versions.all()),
        "base_model_form": form,
    }
    return render(request, "models_app/model_list.html", context, status=status)


@require_GET
@access_required("model_version", "view")
def model_list(request):
    return _model_list(request, BaseModelForm())


@require_POST
@access_required("base_model", "create")
def base_model_create(request):
    form = BaseModelForm(request.POST, request.FILES)
    if form.is_valid():
        data = form.cleaned_data
        try:
            if data["source"] == "upload":
                if not data.get("file"):
                    raise ValidationError({"file": "Attach the zipped model folder."})
                base_model = base_model_upload(
                    user=request.user, name=data["name"], archive=data["file"]
                )
            else:
                if not data.get("location"):
                    raise ValidationError({"location": "Give the folder path or the hub id."})
                base_model = base_model_register(
                    user=request.user,
                    name=data["name"],
                    source=data["source"],
                    location=data["location"],
                )
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        else:
            messages.success(request, f"Added the base model {base_model.name}.")
            return redirect("models:model_list")
    return _model_list(request, form, status=400)


@require_GET
@access_required("model_version", "view")
def version_detail(request, version_id: int):
    version = model_version_get_for_user(user=request.user, version_id=version_id)
    return _version_page(request, version, DeployForm(), AliasForm())


def _version_page(request, version, deploy_form, alias_form, status: int = 200):
    context = {
        "version": version,
        "deploy_form": deploy_form,
        "alias_form": alias_form,
        **version_page_context(version),
    }
    return render(request, "models_app/version_detail.html", context, status=status)


def _form_errors(form, error: ValidationError) -> None:
    if hasattr(error, "error_dict"):
        for field, errors in error.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, error.messages)


@require_POST
@access_required("deployment", "deploy")
def version_deploy(request, version_id: int):
    version = model_version_get_for_user(user=request.user, version_id=version_id)
    form = DeployForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            deployment = deploy.deployment_deploy(
                user=request.user,
                version=version,
                slug=data["slug"],
                runtime=data["runtime"] or None,
                follow_alias=data["follow_alias"],
            )
        except ValidationError as error:
            _form_errors(form, error)
        else:
            messages.success(
                request, deploy.deployment_change_sentence(deployment, action="deploy")
            )
            return redirect("models:deployment_list")
    return _version_page(request, version, form, AliasForm(), status=400)


@require_POST
@access_required("deployment", "deploy")
def version_alias(request, version_id: int):
    version = model_version_get_for_user(user=request.user, version_id=version_id)
    form = AliasForm(request.POST)
    if form.is_valid():
        try:
            alias = deploy.model_alias_set(
                user=request.user,
                registered_model=version.registered_model,
                name=form.cleaned_data["name"],
                version=version,
            )
        except ValidationError as error:
            _form_errors(form, error)
        else:
            messages.success(request, f"Alias {alias.name} now points at {version}.")
            return redirect("models:version_detail", version.pk)
    return _version_page(request, version, DeployForm(), form, status=400)


@require_POST
@access_required("model_version", "create")
def version_export(request, version_id: int):
    version = model_version_get_for_user(user=request.user, version_id=version_id)
    try:
        model_export_start(user=request.user, version=version, kind=request.POST.get("kind", ""))
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    return redirect("models:version_detail", version.pk)


@require_POST
@access_required("model_version", "delete")
def version_archive(request, version_id: int):
    version = model_version_get_for_user(user=request.user, version_id=version_id)
    archived = request.POST.get("archived", "true") == "true"
    try:
        deploy.model_version_archive(user=request.user, version=version, archived=archived)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, f"{version} {'archived' if archived else 'unarchived'}.")
    return redirect("models:version_detail", version.pk)


ALIAS_HISTORY_ROWS = 500


@require_GET
@access_required("model_version", "view")
def model_aliases(request, model_id: int):
    """A registered model's aliases with the version each names, and their full history."""
    registered = registered_model_get_for_user(user=request.user, model_id=model_id)
    context = {
        "registered_model": registered,
        "aliases": model_alias_list_for_user(user=request.user, registered_model=registered),
        "history": model_alias_history_for_user(
            user=request.user, registered_model=registered, limit=ALIAS_HISTORY_ROWS
        ),
        "history_rows": ALIAS_HISTORY_ROWS,
    }
    return render(request, "models_app/model_aliases.html", context)


@require_POST
@access_required("model_version", "delete")
def version_delete(request, version_id: int):
    version = model_version_get_for_user(user=request.user, version_id=version_id)
    try:
        removed = deploy.model_version_delete(user=request.user, version=version)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
        return redirect("models:version_detail", version.pk)
    messages.success(
        request,
        f"{version} deleted, with its {removed['exports']} export(s), "
        f"{removed['batch_predictions']} batch prediction(s) and {removed['files']} file(s).",
    )
    return redirect("models:model_list")


@require_GET
@access_required("model_version", "view")
def export_download(request, export_id: int):
    from models_app.exports import model_export_download_response, model_export_get_for_user

    export = model_export_get_for_user(user=request.user, export_id=export_id)
    return model_export_download_response(export)


@require_GET
@access_required("model_version", "view")
def version_download(request, version_id: int):
    """The version's Hugging Face folder as a zip (the page twin of the API download)."""
    version = model_version_get_for_user(user=request.user, version_id=version_id)
    return model_version_download_response(version)


@require_GET
@access_required("deployment", "view")
def deployment_list(request):
    # A key just created is shown on the one page view after the create's redirect, then gone.
    new_key = request.session.pop(JUST_CREATED_SESSION_FIELD, "")
    return _deployment_page(request, PredictionTokenForm(slugs=_slugs(request)), new_key=new_key)


JUST_CREATED_SESSION_FIELD = "models.new_prediction_token_key"


def _slugs(request) -> list[str]:
    return list(deployment_list_for_user(user=request.user).values_list("slug", flat=True))


def _deployment_page(request, token_form, status: int = 200, new_key: str = ""):
    from lepton_web.access import can

    rows = deployment_page_rows(user=request.user)
    context = {"rows": rows, "token_form": token_form, "new_key": new_key}
    if request.htmx and request.GET.get("fragment") == "endpoints":
        return render(request, "models_app/_deployments.html", context)
    if can(request.user, "deployment", "deploy"):
        context["tokens"] = list(deploy.prediction_token_list(user=request.user))
    return render(request, "models_app/deployment_list.html", context, status=status)


@require_POST
@access_required("deployment", "deploy")
def deployment_action(request, slug: str, action: str):
    deployment = deployment_get_for_user(user=request.user, slug=slug)
    try:
        if action == "promote":
            form = PromoteForm(request.POST)
            if not form.is_valid():
                raise ValidationError("Pick a version to promote.")
            version = model_version_get_for_user(
                user=request.user, version_id=form.cleaned_data["version"]
            )
            deployment = deploy.deployment_promote(
                user=request.user,
                deployment=deployment,
                version=version,
                runtime=form.cleaned_data["runtime"] or None,
            )
            done = deploy.deployment_change_sentence(deployment)
        elif action == "rollback":
            deployment = deploy.deployment_rollback(user=request.user, deployment=deployment)
            done = deploy.deployment_change_sentence(deployment, action="rollback")
        elif action == "stop":
            deploy.deployment_stop(user=request.user, deployment=deployment)
            done = f"{deployment.slug} stopped; it answers 503 until started."
        elif action == "start":
            deploy.deployment_start(user=request.user, deployment=deployment)
            done = f"{deployment.slug} started."
        elif action == "delete":
            deploy.deployment_delete(user=request.user, deployment=deployment)
            done = f"Endpoint {slug} deleted."
        else:
            raise ValidationError("Unknown action.")
    except ValidationError as error:
        # Shown in the endpoint's own card (base.html leaves "inline" messages to the page).
        messages.error(request, " ".join(error.messages), extra_tags=f"inline endpoint-{slug}")
    except Http404 as error:  # deleted meanwhile (another tab, another user): no card to show it
        messages.error(request, str(error))
    else:
        messages.success(request, done)
    return redirect("models:deployment_list")


@require_POST
@access_required("deployment", "deploy")
def prediction_token_create(request):
    form = PredictionTokenForm(request.POST, slugs=_slugs(request))
    if form.is_valid():
        try:
            _token, key = deploy.prediction_token_create(
                user=request.user,
                name=form.cleaned_data["name"],
                slugs=form.cleaned_data["endpoints"],
            )
        except ValidationError as error:
            _form_errors(form, error)
        else:
            # Post/redirect/get: reloading the page must not create a second token.
            request.session[JUST_CREATED_SESSION_FIELD] = key
            return redirect("models:deployment_list")
    return _deployment_page(request, form, status=400)


@require_POST
@access_required("deployment", "deploy")
def prediction_token_revoke(request, token_id: int):
    from django.http import Http404

    try:
        name = deploy.prediction_token_revoke(user=request.user, token_id=token_id)
    except Http404:
        messages.info(
            request,
            "That token was already revoked; its key no longer works.",
            extra_tags="inline tokens",
        )
    else:
        messages.success(
            request,
            f"Token {name} revoked; applications using its key now get 401.",
            extra_tags="inline tokens",
        )
    return redirect("models:deployment_list")
