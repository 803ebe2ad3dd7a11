from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ApiErrorSerializer(serializers.Serializer):
    """What every refused request answers (lepton_web.api.errors)."""

    detail = serializers.CharField(help_text="Why, in a sentence (the first message).")
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Messages by field or parameter (`texts[3]`, `params`, `non_field_errors`); "
        "empty when the refusal is about no one field.",
    )


ERROR_ANSWERS = {
    "400": "Refused: a field or parameter is missing or wrong (each named in `errors`).",
    "401": "No credentials, or a token that is not (or no longer) valid.",
    "403": "Your role, or this prediction token, may not do this.",
    "404": "No such object, or none that you may see.",
}


class ConsoleAutoSchema(AutoSchema):
    """Name nested serializers after their view (``DatasetSplitApi.InputSerializer`` becomes
    ``DatasetSplitApiInput``), so the house style of one InputSerializer per view yields
    distinct OpenAPI components; and document the one error shape on every operation."""

    def _get_serializer_name(self, serializer, direction, bypass_extensions=False) -> str:
        name = super()._get_serializer_name(serializer, direction, bypass_extensions)
        qualname = type(serializer).__qualname__
        if "." in qualname:
            outer = qualname.split(".")[0]
            if not name.startswith(outer):
                name = f"{outer}{name}"
        return name

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        codes = dict(ERROR_ANSWERS)
        if self.method != "GET":
            codes["503"] = (
                "A service this needs is unavailable (the job broker, or a stopped endpoint "
                "for predict); the reason is in `detail`. Retry later."
            )
        if getattr(self.view, "answers_too_many_requests", False):
            codes["429"] = (
                "Too many requests of this kind at once (explanations: EXPLAIN_CONCURRENCY "
                "per serving process); `Retry-After` says when to try again."
            )
        for code, description in codes.items():
            answer = responses.get(code)
            if answer is not None and answer.get("content"):
                continue  # the operation documents its own body for this code
            error = self._get_response_for_code(
                OpenApiResponse(
                    ApiErrorSerializer,
                    description=(answer or {}).get("description") or description,
                ),
                code,
                direction=direction,
            )
            responses[code] = error
        return responses
