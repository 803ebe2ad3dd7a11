"""Labeling over the API: the label list, the queue, and saving a label (the same services as
the labeling page)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from datasets_app.api.serializers import RecordSerializer
from datasets_app.selectors import dataset_get_for_user
from datasets_app.services.jobs import DatasetBusy
from datasets_app.services.labeling import (
    LabelConflict,
    label_choices,
    label_schema_set,
    labeling_next,
    records_label_bulk,
    records_label_bulk_undo,
)
from datasets_app.services.labeling_multi import labeling_submit_labels
from datasets_app.services.labeling_undo import (
    UNDO_MINUTES,
    NothingToUndo,
    UndoRefused,
    labeling_undo_last,
)
from lepton_web.access import RolePermission


class LabelSchemaSerializer(serializers.Serializer):
    labels = serializers.ListField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
        help_text="The labels annotators choose from, in the order of their buttons.",
    )
    multiple = serializers.BooleanField(
        required=False,
        help_text=(
            'A record may have several of the labels, joined with "|" (as multi-label training '
            "reads them). Left out: unchanged."
        ),
    )
    drop_labels_in_use = serializers.BooleanField(
        required=False,
        default=False,
        write_only=True,
        help_text=(
            "Save a list that leaves out labels records have (they keep them). Without it such "
            "a list is refused with a 400 naming those labels."
        ),
    )
    from_schema = serializers.BooleanField(
        read_only=True,
        help_text="False when no list was set and the labels are those the records have.",
    )


class LabelingNextSerializer(serializers.Serializer):
    record = RecordSerializer(allow_null=True, help_text="Null when nothing is left to label.")
    remaining = serializers.IntegerField(help_text="Records without a label, not excluded.")
    labels = serializers.ListField(child=serializers.CharField())
    previous_id = serializers.IntegerField(
        allow_null=True, help_text="The record this user labeled last."
    )


class LabelInputSerializer(serializers.Serializer):
    label = serializers.CharField(
        max_length=500,
        help_text='One of the labels; where a record may have several, e.g. "a|b".',
    )
    expected_label = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=500,
        help_text=(
            "The label the record had when it was shown (empty for none). If it has another "
            "one now the answer is 409 and nothing changes. Leave it out to overwrite."
        ),
    )
    key = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=64,
        help_text=(
            "An idempotency key made by the client for this one label (8-64 letters, digits, - "
            "or _), sent again unchanged with every retry: a label whose key you sent before is "
            "not applied twice."
        ),
    )
    suggestion_label = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=500,
        help_text=(
            "The model suggestion shown with the record, if any: the annotation records whether "
            "the label given accepted it or changed it."
        ),
    )
    suggestion_probability = serializers.FloatField(
        required=False, allow_null=True, min_value=0, max_value=1
    )
    time_spent_ms = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=0,
        help_text="Milliseconds the annotator spent on the record.",
    )


def _id_param(request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise ApiValidationError({name: [f"'{name}' must be a record id (a whole number)."]})
    return int(raw)


def _schema_body(dataset) -> dict:
    return {
        "labels": label_choices(dataset),
        "multiple": dataset.label_multiple,
        "from_schema": bool(dataset.label_schema),
    }


class LabelSchemaApi(APIView):
    permission_classes = [RolePermission]
    access_resource = "dataset"
    access_actions = {"PUT": "change"}

    @extend_schema(responses={200: LabelSchemaSerializer})
    def get(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
        return Response(_schema_body(dataset))

    @extend_schema(request=LabelSchemaSerializer, responses={200: LabelSchemaSerializer})
    def put(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
        data = LabelSchemaSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        dataset = label_schema_set(
            dataset=dataset,
            user=request.user,
            labels=data.validated_data["labels"],
            multiple=data.validated_data.get("multiple"),
            drop_labels_in_use=data.validated_data["drop_labels_in_use"],
        )
        return Response(_schema_body(dataset))


class LabelingNextApi(APIView):
    """The next record without a label, held for the caller so nobody else is given it."""

    permission_classes = [RolePermission]
    access_resource = "labeling"
    access_actions = {"GET": "label"}

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "after", OpenApiTypes.INT, description="Continue after this record id (skip)."
            ),
            OpenApiParameter(
                "record", OpenApiTypes.INT, description="This record instead (relabel, go back)."
            ),
        ],
        responses={200: LabelingNextSerializer},
    )
    def get(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
        item = labeling_next(
            dataset=dataset,
            user=request.user,
            after=_id_param(request, "after"),
            record_id=_id_param(request, "record"),
        )
        return Response(
            {
                "record": RecordSerializer(item.record).data if item.record else None,
                "remaining": item.remaining,
                "labels": item.labels,
                "previous_id": item.previous_id,
            }
        )


class RecordLabelApi(APIView):
    permission_classes = [RolePermission]
    access_resource = "labeling"
    access_actions = {"POST": "label"}

    @extend_schema(
        request=LabelInputSerializer,
        responses={
            200: RecordSerializer,
            400: OpenApiResponse(description="Not one of the dataset's labels."),
            409: OpenApiResponse(
                description="The record's label changed since it was shown; nothing changed."
            ),
        },
    )
    def post(self, request, dataset_id: int, record_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
        data = LabelInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        given = data.validated_data
        try:
            record = labeling_submit_labels(
                dataset=dataset,
                user=request.user,
                record_id=record_id,
                label=given["label"],
                expected_label=given.get("expected_label"),
                client_key=given.get("key", ""),
                suggestion_label=given.get("suggestion_label", ""),
                suggestion_probability=given.get("suggestion_probability"),
                time_spent_ms=given.get("time_spent_ms"),
            )
        except LabelConflict as exc:
            return Response(
                {"detail": " ".join(exc.messages), "errors": {"label": exc.messages}},
                status=status.HTTP_409_CONFLICT,
            )
        return Response(RecordSerializer(record).data)


class LabelUndoInputSerializer(serializers.Serializer):
    record_id = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=2**63 - 1,
        help_text=(
            "The record whose label you mean to undo: refused (409) unless it is your last "
            "label, so a retried request never undoes a second one. Left out: your last label."
        ),
    )


class LabelUndoResultSerializer(serializers.Serializer):
    record = RecordSerializer(
        help_text="The record as it is now (its earlier label back, or none), held for you."
    )
    undone_label = serializers.CharField(help_text="The label of yours that was undone.")


class LabelingUndoApi(APIView):
    """Undo your last label in this dataset, as U does on the labeling page: your annotation is
    marked undone, the record gets back the label it had before (when its label came from
    yours) and is held for you to label again. Call it again to undo the label before."""

    permission_classes = [RolePermission]
    access_resource = "labeling"
    access_actions = {"POST": "label"}

    @extend_schema(
        operation_id="v1_datasets_labeling_undo",
        request=LabelUndoInputSerializer,
        responses={
            200: LabelUndoResultSerializer,
            400: OpenApiResponse(description="record_id is not a record id (a whole number)."),
            404: OpenApiResponse(
                description=(
                    "No such dataset, the dataset is not assigned to you, or record_id is not "
                    "a record of it."
                )
            ),
            409: OpenApiResponse(
                description=(
                    "Nothing to undo (no label of yours here, or on that record), record_id is "
                    "not your last label, someone changed the record's label since, or the label "
                    f"is older than {UNDO_MINUTES} minutes. Nothing changed."
                )
            ),
            503: OpenApiResponse(description="A job is saving the dataset; retry shortly."),
        },
    )
    def post(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
        data = LabelUndoInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            result = labeling_undo_last(
                dataset=dataset,
                user=request.user,
                record_id=data.validated_data.get("record_id"),
            )
        except DatasetBusy as exc:
            return Response(
                {"detail": " ".join(exc.messages), "errors": {}},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        except (NothingToUndo, UndoRefused) as exc:
            return Response(
                {"detail": " ".join(exc.messages), "errors": {"record_id": exc.messages}},
                status=status.HTTP_409_CONFLICT,
            )
        return Response(
            {"record": RecordSerializer(result.record).data, "undone_label": result.undone_label}
        )


class BulkLabelSerializer(serializers.Serializer):
    class Filters(serializers.Serializer):
        label = serializers.CharField(required=False, allow_blank=True, help_text='"" = no label')
        split = serializers.CharField(required=False, allow_blank=True, help_text='"" = unassigned')
        flag = serializers.CharField(required=False, allow_blank=True)
        search = serializers.CharField(required=False, allow_blank=True, max_length=200)

    label = serializers.CharField(max_length=500, help_text="The label to give them.")
    filters = Filters(help_text="The records page's filters; at least one is required.")
    expected_count = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=10**9,
        help_text=(
            "How many records you expect to change; if another number would, nothing changes (400)."
        ),
    )


class RecordsLabelBulkApi(APIView):
    """Label every current record matching the filters (at most 50,000; analysts)."""

    permission_classes = [RolePermission]
    access_resource = "dataset"
    access_actions = {"POST": "change"}

    @extend_schema(
        operation_id="v1_datasets_records_label_bulk",
        request=BulkLabelSerializer,
        responses={
            200: inline_serializer(
                "BulkLabelResult",
                {
                    "changed": serializers.IntegerField(),
                    "bulk_label_id": serializers.IntegerField(
                        allow_null=True,
                        help_text="Undo it with POST …/bulk-labels/{id}/undo/; null if none changed.",
                    ),
                },
            ),
            400: OpenApiResponse(description="No filter, too many records, or an unknown label."),
        },
    )
    def post(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
        data = BulkLabelSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        bulk = records_label_bulk(
            dataset=dataset,
            user=request.user,
            label=data.validated_data["label"],
            filters=dict(data.validated_data["filters"]),
            expected_count=data.validated_data.get("expected_count"),
        )
        return Response(
            {"changed": bulk.changed_count if bulk else 0, "bulk_label_id": bulk and bulk.pk}
        )


class BulkLabelUndoApi(APIView):
    """Give the records a bulk label changed their earlier labels back (analysts); records
    labeled again since keep their newer label."""

    permission_classes = [RolePermission]
    access_resource = "dataset"
    access_actions = {"POST": "change"}

    @extend_schema(
        operation_id="v1_datasets_bulk_labels_undo",
        request=None,
        responses={
            200: inline_serializer(
                "BulkLabelUndoResult",
                {
                    "restored": serializers.IntegerField(),
                    "kept": serializers.IntegerField(
                        help_text="Records labeled again since (or replaced by an import)."
                    ),
                },
            ),
            400: OpenApiResponse(description="No such bulk label, or it was undone already."),
        },
    )
    def post(self, request, dataset_id: int, bulk_label_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
        bulk = records_label_bulk_undo(
            dataset=dataset, user=request.user, bulk_label_id=bulk_label_id
        )
        restored = bulk.restored_count or 0
        return Response({"restored": restored, "kept": bulk.changed_count - restored})
