"""Limit and offset for the API's list endpoints, which answer a plain JSON array.

A list used to stop silently at 200 items (runs, model versions, searches) or return every row
(datasets, snapshots, batch predictions). Each now takes ``limit`` (1-1000, default 200) and
``offset``, says the whole count in ``X-Total-Count`` and links the next page in ``Link``
(``rel="next"``, as GitHub's API does), so a client can read a list of any length; the body
keeps its shape. Orderings end on the primary key, so pages never overlap or skip a row."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

DEFAULT_LIMIT = 200
MAX_LIMIT = 1000

PARAMETERS = [
    OpenApiParameter(
        "limit",
        OpenApiTypes.INT,
        description=f"At most this many items (1-{MAX_LIMIT}, default {DEFAULT_LIMIT}).",
    ),
    OpenApiParameter(
        "offset", OpenApiTypes.INT, description="Skip this many items first (default 0)."
    ),
]
HEADERS = [
    OpenApiParameter(
        "X-Total-Count",
        OpenApiTypes.INT,
        location=OpenApiParameter.HEADER,
        response=True,
        description="How many items the list has in all (with its filters).",
    ),
    OpenApiParameter(
        "Link",
        OpenApiTypes.STR,
        location=OpenApiParameter.HEADER,
        response=True,
        description='`<url>; rel="next"` while more items follow.',
    ),
]


def _whole_number(request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ValidationError({name: [f"'{name}' must be a whole number from {low} to {high:,}."]})
    return value


def paged_response(request, items, serializer_class, **serializer_kwargs) -> Response:
    """One page of ``items`` (a queryset or list) serialized, with the paging headers."""
    limit = _whole_number(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _whole_number(request, "offset", 0, 0, 2**31 - 1)
    total = items.count() if hasattr(items, "count") and not isinstance(items, list) else len(items)
    page = items[offset : offset + limit]
    response = Response(serializer_class(page, many=True, **serializer_kwargs).data)
    response["X-Total-Count"] = str(total)
    if offset + limit < total:
        query = request.query_params.copy()
        query["limit"] = str(limit)
        query["offset"] = str(offset + limit)
        url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
        response["Link"] = f'<{url}>; rel="next"'
    return response
