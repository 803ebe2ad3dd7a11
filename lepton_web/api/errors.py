"""One shape for every API error: ``{"detail": "...", "errors": {...}}``, never a traceback."""

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from lepton_web.jobs import BrokerUnavailable

logger = logging.getLogger(__name__)


def _django_validation_errors(exc: DjangoValidationError) -> tuple[str, dict]:
    if hasattr(exc, "error_dict"):
        errors = {field: [str(m) for m in msgs] for field, msgs in exc.message_dict.items()}
        first = next(iter(errors.values()))[0]
        return first, errors
    messages = [str(m) for m in exc.messages]
    return " ".join(messages), {"non_field_errors": messages}


def _flatten(detail) -> dict:
    if isinstance(detail, dict):
        return {
            k: [str(x) for x in v]
            if isinstance(v, list)
            else _flatten(v)
            if isinstance(v, dict)
            else [str(v)]
            for k, v in detail.items()
        }
    if isinstance(detail, list):
        return {"non_field_errors": [str(x) for x in detail]}
    return {}


def exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        detail, errors = _django_validation_errors(exc)
        return Response({"detail": detail, "errors": errors}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, BrokerUnavailable):
        return Response(
            {"detail": str(exc), "errors": {}}, status=status.HTTP_503_SERVICE_UNAVAILABLE
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    if isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)

    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("Unhandled API error", exc_info=exc)
        return Response(
            {"detail": "Something went wrong on the server. The error was logged.", "errors": {}},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        first = next(iter(errors.values()), ["Invalid input."])
        first_text = first[0] if isinstance(first, list) else "Invalid input."
        response.data = {"detail": first_text, "errors": errors}
    else:
        detail = (
            response.data.get("detail", str(exc)) if isinstance(response.data, dict) else str(exc)
        )
        response.data = {"detail": str(detail), "errors": {}}
    return response


def json_error(request, *, status_code: int, detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail, "errors": {}}, status=status_code)
