"""The dataset file size limit (DATASET_MAX_FILE_MB), enforced before and while the body is read.

The upload service checks the size of the file it is given, but by then Django has read the
whole request and spooled it to a temporary file: a 50 GB upload would fill the disk before
being refused. So ``DatasetUploadLimitMiddleware``, ahead of every middleware that reads the
body (the NUL check, CSRF), for the upload page and the upload API:

- refuses a request whose ``Content-Length`` is over the limit (plus an allowance for the form's
  other fields) before reading any of it: 413 with one plain sentence, and
- has the body's files read through ``DatasetUploadLimitHandler``, which stops reading at the
  limit when no length was declared. (A declared length within the allowance bounds what can
  be read; the service then refuses a file over the limit with its exact size.)
"""

from __future__ import annotations

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import Resolver404, resolve, reverse
from rest_framework import status

from datasets_app.limits import human_bytes
from lepton_web.views import wants_json

# Room in Content-Length for multipart boundaries and the form's other fields (name,
# description, mapping), so a file just under the limit is never refused for its wrapping.
FORM_FIELDS_ALLOWANCE_BYTES = 1024 * 1024
_REFUSAL = "_dataset_upload_refusal"  # request attribute: why the upload was refused


def upload_limit_bytes() -> int:
    return settings.DATASET_MAX_FILE_BYTES


def declared_size_refusal(request: HttpRequest) -> str | None:
    """The message refusing ``request`` by its Content-Length, or None when it may be read."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None  # Django refuses a malformed length itself, before reading
    limit = upload_limit_bytes()
    if declared <= limit + FORM_FIELDS_ALLOWANCE_BYTES:
        return None
    return (
        f"Files can be up to {human_bytes(limit)}; this upload is {human_bytes(declared)}. "
        "Split the file, or compress it (.gz), and upload it again."
    )


class DatasetUploadLimitHandler(FileUploadHandler):
    """Counts the bytes of uploaded files and stops reading the request past the limit.

    Passes every chunk on to the next handlers (memory or temporary file) until then, so at
    most the limit is ever held or written.
    """

    def __init__(self, request: HttpRequest, *, limit_bytes: int, allowance_bytes: int = 0):
        super().__init__(request)
        self.limit_bytes, self.allowance_bytes = limit_bytes, allowance_bytes
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > self.limit_bytes + self.allowance_bytes:
            setattr(
                self.request,
                _REFUSAL,
                f"Files can be up to {human_bytes(self.limit_bytes)}; this one is larger, so "
                "the upload was stopped there. Split the file, or compress it (.gz), and "
                "upload it again.",
            )
            # Stop reading; what the client still sends is never read or stored.
            raise StopUpload(connection_reset=True)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler builds the file


def install_upload_limit(request: HttpRequest) -> None:
    """Read this request's files through DatasetUploadLimitHandler. Call before request.POST.

    With a declared length (already checked by ``declared_size_refusal``) the handler allows
    the same margin, so a file a little over the limit is still refused by the service, with
    its exact size; without one it stops at the limit itself.
    """
    declared = bool(request.META.get("CONTENT_LENGTH"))
    handler = DatasetUploadLimitHandler(
        request,
        limit_bytes=upload_limit_bytes(),
        allowance_bytes=FORM_FIELDS_ALLOWANCE_BYTES if declared else 0,
    )
    request.upload_handlers.insert(0, handler)


def upload_refusal(request: HttpRequest) -> str | None:
    """Why the upload in ``request`` was stopped while it was read, or None."""
    return getattr(request, _REFUSAL, None)


UPLOAD_VIEWS = {"datasets:dataset_upload", "api_datasets"}


def _is_upload(request: HttpRequest) -> bool:
    if request.method != "POST":
        return False
    try:
        return resolve(request.path_info).view_name in UPLOAD_VIEWS
    except Resolver404:
        return False


def _refusal_response(request: HttpRequest, message: str) -> HttpResponse:
    """413 with ``message``: JSON for the API and the page's script, else a plain page (this
    runs before sessions and login, so it cannot be the Datasets page itself)."""
    if wants_json(request):
        return JsonResponse(
            {"detail": message, "errors": {"file": [message]}},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    return render(
        request,
        "datasets_app/upload_too_large.html",
        {"message": message, "back_url": reverse("datasets:dataset_list")},
        status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    )


class DatasetUploadLimitMiddleware:
    """See the module docstring. Must come before any middleware that reads request.POST."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not _is_upload(request):
            return self.get_response(request)
        message = declared_size_refusal(request)
        if message:
            return _refusal_response(request, message)
        install_upload_limit(request)
        response = self.get_response(request)
        message = upload_refusal(request)
        if message:  # the view saw no file (or CSRF no token): say what really happened
            return _refusal_response(request, message)
        return response
