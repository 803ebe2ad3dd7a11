"""Agreement figures over the API: the same numbers as the agreement page."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from datasets_app.selectors import dataset_get_for_user
from datasets_app.services.agreement import dataset_agreement_get
from lepton_web.access import RolePermission

_SUGGESTIONS = inline_serializer(
    "AgreementSuggestions",
    {
        "shown": serializers.IntegerField(help_text="Labels given with a suggestion shown."),
        "accepted": serializers.IntegerField(help_text="Of those, how many took it."),
        "rate": serializers.FloatField(allow_null=True, help_text="accepted / shown."),
    },
)


class AgreementSerializer(serializers.Serializer):
    overlap = serializers.IntegerField(help_text="Annotations wanted per record (overlap k).")
    annotations = serializers.IntegerField(help_text="Annotations counted (not undone).")
    records_annotated = serializers.IntegerField()
    records_overlapping = serializers.IntegerField(help_text="Records with 2+ annotations.")
    alpha = serializers.FloatField(
        allow_null=True,
        help_text="Krippendorff's alpha (nominal) over records with 2+ annotations; null "
        "when undefined (no such record, or a single label used).",
    )
    pairs = inline_serializer(
        "AgreementPair",
        {
            "first": serializers.CharField(),
            "second": serializers.CharField(),
            "records": serializers.IntegerField(help_text="Records both labeled."),
            "agreement": serializers.FloatField(help_text="Share of equal labels."),
            "kappa": serializers.FloatField(allow_null=True, help_text="Cohen's kappa."),
        },
        many=True,
    )
    confusion = inline_serializer(
        "AgreementConfusion",
        {
            "labels": serializers.ListField(child=serializers.CharField()),
            "matrix": serializers.ListField(
                child=serializers.ListField(child=serializers.IntegerField()),
                help_text="Row: one annotator's label; column: another's, on the same record.",
            ),
            "shares": serializers.ListField(
                child=serializers.ListField(child=serializers.FloatField()),
                help_text="The matrix with each row divided by its total.",
            ),
            "per_label": inline_serializer(
                "AgreementPerLabel",
                {
                    "label": serializers.CharField(),
                    "pairs": serializers.IntegerField(),
                    "agreement": serializers.FloatField(allow_null=True),
                },
                many=True,
            ),
        },
    )
    annotators = inline_serializer(
        "AgreementAnnotator",
        {
            "user_id": serializers.IntegerField(),
            "username": serializers.CharField(),
            "labels": serializers.IntegerField(),
            "timed": serializers.IntegerField(help_text="Labels with a measured time."),
            "median_seconds": serializers.FloatField(allow_null=True),
            "per_hour": serializers.FloatField(allow_null=True, help_text="Records per hour."),
            "resolved_records": serializers.IntegerField(),
            "agreement_with_resolved": serializers.FloatField(allow_null=True),
            "suggestions": _SUGGESTIONS,
        },
        many=True,
    )
    suggestions = _SUGGESTIONS
    computed_at = serializers.DateTimeField(
        help_text="When these figures were counted: they are kept until an annotation or a "
        "record's label changes in the dataset."
    )
    compute_seconds = serializers.FloatField(help_text="How long counting them took.")
    stale = serializers.BooleanField(
        help_text="True: labels changed since; a large dataset's figures are counted again by a "
        "worker meanwhile (ask again later)."
    )
    recount_started_at = serializers.DateTimeField(
        allow_null=True, help_text="When that worker started (null when not stale)."
    )


class AgreementCountingSerializer(serializers.Serializer):
    counting = serializers.BooleanField(
        help_text="True: a large dataset's figures are being counted for the first time by a "
        "background job; ask again when its progress reaches 100."
    )
    overlap = serializers.IntegerField(help_text="Annotations wanted per record (overlap k).")
    job_id = serializers.IntegerField(allow_null=True, source="count_job.pk", default=None)
    status = serializers.CharField(allow_null=True, source="count_job.status", default=None)
    progress = serializers.IntegerField(allow_null=True, source="count_job.progress", default=None)
    error = serializers.CharField(
        allow_null=True,
        source="count_error",
        help_text="Why the count failed or could not be started, in a sentence (the agreement "
        "page's Count again button starts it again).",
    )


class DatasetAgreementApi(APIView):
    """Inter-annotator agreement of a dataset (analysts and admins)."""

    permission_classes = [RolePermission]
    access_resource = "dataset"
    access_actions = {"GET": "change", "HEAD": "change"}

    @extend_schema(responses={200: AgreementSerializer, 202: AgreementCountingSerializer})
    def get(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
        figures = dataset_agreement_get(user=request.user, dataset=dataset)
        if figures["counting"]:
            return Response(AgreementCountingSerializer(figures).data, status=202)
        return Response(AgreementSerializer(figures).data)
