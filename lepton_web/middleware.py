import json
from urllib.parse import quote

from django.conf import settings
from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render, resolve_url

from lepton_web.views import wants_json


class ConsoleLoginRequiredMiddleware(LoginRequiredMiddleware):
    """Every page needs a login; the API answers for itself (JSON 401/403, token auth).

    An htmx request whose session expired gets ``HX-Redirect`` so the whole page goes to the
    login form, instead of the login form being swapped into a progress bar.
    """

    def process_view(self, request, view_func, view_args, view_kwargs):
        if request.path_info == "/api/docs/":
            # The API docs are a page for people: a browser opening them signed out goes to
            # the login form like on any page (DRF marks its views as not needing a login, so
            # the parent class would let it through). API clients (a token, another method)
            # get DRF's answers.
            browser = request.method == "GET" and "HTTP_AUTHORIZATION" not in request.META
            if request.user.is_authenticated or not browser:
                return None
            return self.handle_no_permission(request, view_func)
        if request.path_info.startswith("/api/"):
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)

    def handle_no_permission(self, request, view_func):
        if request.headers.get("HX-Request") == "true":
            login_url = resolve_url(settings.LOGIN_URL)
            current = request.headers.get("HX-Current-URL") or request.get_full_path()
            response = HttpResponse(status=200)
            response["HX-Redirect"] = f"{login_url}?next={quote(current)}"
            return response
        return super().handle_no_permission(request, view_func)


NUL_MESSAGE = "contains a NUL character (\\x00), which is not allowed. Remove it and try again."
# Multipart bodies up to this size are parsed here to look at their text fields (HTML forms
# are parsed by the CSRF check anyway); larger API uploads are left to the serializers, whose
# CharFields refuse NUL themselves, so a big file is not read before the view's size checks.
NUL_CHECK_MULTIPART_MAX_BYTES = 2 * 1024 * 1024


def _nul_in_json(value, path: str) -> str | None:
    """The dotted path (``params.note.1``) of the first key or string holding a NUL."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return child.replace("\x00", "\\x00")
            found = _nul_in_json(item, child)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_in_json(item, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None


def _nul_in_querydict(data) -> str | None:
    for key, values in data.lists():
        if "\x00" in key:
            return key.replace("\x00", "\\x00")
        if any("\x00" in value for value in values):
            return key
    return None


class RejectNulCharactersMiddleware:
    """Answer 400 naming the field when a query parameter, form field or JSON key/value holds
    a NUL character, before any view, form or serializer sees it.

    PostgreSQL cannot store NUL in text ("A string literal cannot contain NUL (0x00)
    characters."), so one left through is a 500 wherever it reaches a query; checking here
    covers every page and endpoint, including the ones added later, in one place.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        field = self._field_with_nul(request)
        if field is not None:
            return self._refuse(request, field)
        return self.get_response(request)

    def _field_with_nul(self, request) -> str | None:
        if "\x00" in request.path_info:
            return "path"
        query = request.META.get("QUERY_STRING", "")
        if "%00" in query or "\x00" in query:
            found = _nul_in_querydict(request.GET)
            if found is not None:
                return found
        if request.method in ("GET", "HEAD", "OPTIONS", "TRACE"):
            return None
        content_type = request.content_type or ""
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None
        if content_type == "application/json" or content_type.endswith("+json"):
            if not length or length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
                return None  # empty, or too big: the parser answers for it
            body = request.body
            if b"\\u0000" not in body and b"\x00" not in body:
                return None
            try:
                data = json.loads(body)
            except ValueError:
                return None  # not JSON: the parser answers 400 for it
            return _nul_in_json(data, "")
        if content_type == "application/x-www-form-urlencoded" or (
            content_type == "multipart/form-data"
            and (
                not request.path_info.startswith("/api/") or length <= NUL_CHECK_MULTIPART_MAX_BYTES
            )
        ):
            try:
                return _nul_in_querydict(request.POST)
            except Exception:  # a malformed body is the view's to answer
                return None
        return None

    def _refuse(self, request, field: str):
        message = f"This value {NUL_MESSAGE}"
        detail = f"{field}: {message}"
        if wants_json(request):
            return JsonResponse({"detail": detail, "errors": {field: [message]}}, status=400)
        return render(
            request,
            "400.html",
            {"detail": f"The field “{field}” {NUL_MESSAGE}"},
            status=400,
        )


# Addresses that take an uploaded file, and the largest body each accepts (setting names or
# bytes, read at request time). The dataset upload has its own middleware (datasets_app/
# uploads.py), which also stops a body sent without a length.
FORM_ALLOWANCE_BYTES = 1024 * 1024
UPLOAD_BODY_LIMITS = {
    "models:base_model_create": "BASE_MODEL_MAX_UNPACKED_BYTES",
    "api_base_models": "BASE_MODEL_MAX_UNPACKED_BYTES",
    "models:version_batch_prediction_start": "batch",
    "api_model_version_batch_predictions": "batch",
}
OWN_LIMIT_VIEWS = {"datasets:dataset_upload", "api_datasets"}


def _body_limit(request) -> int | None:
    """The most bytes ``request``'s address reads from a body, or None for its own check."""
    from django.urls import Resolver404, resolve

    try:
        view_name = resolve(request.path_info).view_name
    except Resolver404:
        view_name = ""
    if view_name in OWN_LIMIT_VIEWS:
        return None
    kind = UPLOAD_BODY_LIMITS.get(view_name)
    if kind == "batch":
        from models_app.batch_prediction import MAX_UPLOAD_BYTES

        return MAX_UPLOAD_BYTES + FORM_ALLOWANCE_BYTES
    if kind is not None:
        return getattr(settings, kind) + FORM_ALLOWANCE_BYTES
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE + FORM_ALLOWANCE_BYTES


class RequestBodyLimitMiddleware:
    """Answer 413 to a body whose Content-Length is over what its address accepts, before
    anything reads it.

    Django bounds form fields and JSON bodies (DATA_UPLOAD_MAX_MEMORY_SIZE) but not the files
    of a multipart body: those are written to a temporary file as they arrive. Any POST with a
    multipart body is read before the login check (by the CSRF and NUL checks, or the login
    form), so without this an anonymous client could fill the disk with one request. A body
    without a length is not read by Django at all.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return self.get_response(request)  # Django answers a malformed length itself
        if declared <= settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            return self.get_response(request)  # the common case: no address refuses it
        limit = _body_limit(request)
        if limit is None or declared <= limit:
            return self.get_response(request)
        message = (
            f"This request is {declared / 1024**2:.1f} MB; this address accepts at most "
            f"{limit / 1024**2:.0f} MB."
        )
        if wants_json(request):
            return JsonResponse({"detail": message, "errors": {}}, status=413)
        return render(request, "400.html", {"detail": message}, status=413)


class MethodNotAllowedPageMiddleware:
    """A page address asked with a method it does not take (the address of a form's button,
    typed or bookmarked) answers 405 with a sentence instead of an empty page. The API's 405s
    are JSON already and left as they are."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            response.status_code != 405
            or getattr(response, "streaming", False)
            or response.content
            or wants_json(request)
        ):
            return response
        allowed = response.get("Allow", "")
        detail = (
            f"This address does not take {request.method} requests (only {allowed}): it is "
            "the target of a button on a page. Go back to the page and use the button."
        )
        page = render(request, "400.html", {"detail": detail}, status=405)
        page["Allow"] = allowed
        return page
