import json

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import StreamingHttpResponse
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from datasets_app import services
from datasets_app.api.serializers import (
    DatasetDetailSerializer,
    DatasetJobSerializer,
    DatasetSerializer,
    MappingSerializer,
    RecordPageSerializer,
    RecordSerializer,
    SnapshotSerializer,
)
from datasets_app.models import DatasetJob
from datasets_app.selectors import (
    FLAG_FILTERS,
    RECORD_SPLIT_FILTERS,
    dataset_get_for_user,
    dataset_list_for_user,
    export_stream,
    record_filter_errors,
    record_page,
    snapshot_get_for_user,
)
from lepton_web.access import RolePermission
from lepton_web.api import paging
from lepton_web.filenames import safe_filename
from lepton_web.jobs import BrokerUnavailable


class DatasetApiBase(APIView):
    access_resource = "dataset"
    permission_classes = [RolePermission]
    access_actions = {"POST": "change", "DELETE": "delete"}


class DatasetListApi(DatasetApiBase):
    parser_classes = [MultiPartParser, FormParser, JSONParser]
    access_actions = {"POST": "create"}

    class InputSerializer(serializers.Serializer):
        file = serializers.FileField()
        name = serializers.CharField(required=False, allow_blank=True, max_length=200)
        description = serializers.CharField(required=False, allow_blank=True)
        mapping = serializers.JSONField(
            required=False, help_text="Optional: start the import at once with this column mapping."
        )

    @extend_schema(
        parameters=[*paging.PARAMETERS, *paging.HEADERS],
        responses={200: DatasetSerializer(many=True)},
    )
    def get(self, request):
        datasets = dataset_list_for_user(user=request.user)
        return paging.paged_response(request, datasets, DatasetSerializer)

    @extend_schema(
        request={"multipart/form-data": InputSerializer}, responses={201: DatasetSerializer}
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        mapping = data.validated_data.get("mapping")
        if isinstance(mapping, str):
            try:
                mapping = json.loads(mapping)
            except json.JSONDecodeError:
                raise ApiValidationError(
                    {"mapping": ["The mapping must be a JSON object."]}
                ) from None
        if mapping is not None:
            mapped = MappingSerializer(data=mapping)
            mapped.is_valid(raise_exception=True)
            mapping = mapped.validated_data
        dataset = services.dataset_upload(
            user=request.user,
            file=data.validated_data["file"],
            name=data.validated_data.get("name", ""),
            description=data.validated_data.get("description", ""),
        )
        import_errors = None
        if mapping is not None and dataset.detection:
            try:
                services.dataset_import_start(dataset=dataset, user=request.user, mapping=mapping)
            except DjangoValidationError as exc:
                # The file is stored either way: answer with the dataset so the client can fix
                # the mapping and POST .../import/ without uploading again.
                import_errors = (
                    exc.message_dict if hasattr(exc, "error_dict") else {"mapping": exc.messages}
                )
            except BrokerUnavailable as exc:
                # Stored, but not queued: the client retries POST .../import/ later.
                import_errors = {"broker": [str(exc)]}
            dataset.refresh_from_db()
        body = DatasetSerializer(dataset).data
        if import_errors is not None:
            body["import_errors"] = import_errors
        return Response(body, status=status.HTTP_201_CREATED)


class DatasetDetailApi(DatasetApiBase):
    @extend_schema(responses={200: DatasetDetailSerializer})
    def get(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
        return Response(DatasetDetailSerializer(dataset).data)

    @extend_schema(responses={204: None})
    def delete(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="delete")
        services.dataset_delete(dataset=dataset, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DatasetDetectApi(DatasetApiBase):
    class InputSerializer(serializers.Serializer):
        # Blank or absent means "detect it". What the values may be is checked in one place,
        # csv_io.override_errors (through the service), for this API and the page alike.
        encoding = serializers.CharField(
            required=False, allow_blank=True, allow_null=True, max_length=40
        )
        delimiter = serializers.CharField(
            required=False, allow_blank=True, allow_null=True, trim_whitespace=False
        )
        quoting = serializers.CharField(
            required=False,
            allow_blank=True,
            allow_null=True,
            help_text='"double", "single" or "none"; blank or absent detects it.',
        )
        has_header = serializers.BooleanField(required=False, allow_null=True, default=None)

    @extend_schema(request=InputSerializer, responses={200: DatasetSerializer})
    def post(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        overrides = data.validated_data
        dataset = services.dataset_detect(
            dataset=dataset,
            encoding=overrides.get("encoding") or None,
            delimiter=overrides.get("delimiter") or None,
            quoting=overrides.get("quoting") or None,
            has_header=overrides.get("has_header"),
        )
        return Response(DatasetSerializer(dataset).data)


class DatasetImportApi(DatasetApiBase):
    @extend_schema(request=MappingSerializer, responses={202: DatasetJobSerializer})
    def post(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
        mapping = None
        if request.data:
            data = MappingSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            mapping = data.validated_data
        job = services.dataset_import_start(dataset=dataset, user=request.user, mapping=mapping)
        return Response(DatasetJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class DatasetImportCancelApi(DatasetApiBase):
    @extend_schema(request=None, responses={200: DatasetJobSerializer})
    def post(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
        job = dataset.jobs.filter(kind=DatasetJob.Kind.IMPORT).order_by("-created_at").first()
        if job is None:
            raise ApiValidationError("This dataset has no import to cancel.")
        job = services.dataset_import_cancel(job=job, user=request.user)
        return Response(DatasetJobSerializer(job).data)


class RecordListApi(DatasetApiBase):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "after", OpenApiTypes.INT, description="Continue after this record id."
            ),
            OpenApiParameter("label", OpenApiTypes.STR),
            OpenApiParameter(
                "split",
                OpenApiTypes.STR,
                enum=list(RECORD_SPLIT_FILTERS),
                description="An empty value lists the records without a split.",
            ),
            OpenApiParameter("flag", OpenApiTypes.STR, enum=list(FLAG_FILTERS)),
            OpenApiParameter("search", OpenApiTypes.STR),
            OpenApiParameter("page_size", OpenApiTypes.INT),
        ],
        responses={200: RecordPageSerializer},
    )
    def get(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
        params = request.query_params
        errors = record_filter_errors(split=params.get("split"), flag=params.get("flag"))
        try:
            after = int(params["after"]) if params.get("after") else None
        except ValueError:
            errors["after"] = ["'after' must be a whole number (a record id)."]
            after = None
        try:
            page_size = min(500, max(1, int(params.get("page_size", 50))))
        except ValueError:
            errors["page_size"] = ["'page_size' must be a whole number from 1 to 500."]
        if after is not None and not 0 <= after < 2**63:
            errors["after"] = ["'after' is out of range."]
        if errors:
            raise ApiValidationError(errors)
        page = record_page(
            dataset=dataset,
            after=after,
            label=params.get("label"),
            split=params.get("split"),
            flag=params.get("flag"),
            search=params.get("search", "")[:200],
            page_size=page_size,
        )
        return Response(
            {
                "results": RecordSerializer(page.records, many=True).data,
                "next_after": page.next_after,
                # "full_text" once the word index of the import is built, "substring" before
                # (or for a search with no words to look up), "" without a search.
                "search_mode": page.search_mode,
                "search_note": page.search_note,
            }
        )


class DatasetCleanApi(DatasetApiBase):
    class InputSerializer(serializers.Serializer):
        kind = serializers.CharField()

    @extend_schema(
        summary="Apply a cleaning fix (as a background job)",
        description=(
            "Checks the fix, then queues it and answers 202 with the job at once. Poll "
            "GET /api/v1/datasets/{id}/ (latest_jobs.clean) until its status is succeeded "
            "(message says what changed, e.g. 'Excluded 212 exact copies.') or failed "
            "(error_message says why; nothing was changed). 400 when the fix is unknown, the "
            "dataset has no records, or an import, split or fix of it is queued or running."
        ),
        request=InputSerializer,
        responses={202: DatasetJobSerializer, 400: OpenApiResponse(description="Refused.")},
    )
    def post(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = services.dataset_clean_start(
            dataset=dataset, user=request.user, kind=data.validated_data["kind"]
        )
        return Response(DatasetJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class DatasetCleanUndoApi(DatasetApiBase):
    @extend_schema(request=None, responses={200: DatasetSerializer})
    def post(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
        services.dataset_clean_undo(dataset=dataset, user=request.user)
        dataset.refresh_from_db()
        return Response(DatasetSerializer(dataset).data)


class DatasetSplitApi(DatasetApiBase):
    class InputSerializer(serializers.Serializer):
        mode = serializers.ChoiceField(choices=["random", "file"], default="random")
        ratios = serializers.ListField(
            child=serializers.FloatField(min_value=0, max_value=1),
            min_length=3,
            max_length=3,
            default=[0.8, 0.1, 0.1],
        )
        seed = serializers.IntegerField(min_value=0, max_value=2**31 - 1, default=13)

    @extend_schema(
        summary="Assign train/validation/test splits (as a background job)",
        description=(
            "Checks the parameters, then queues the split and answers 202 with the job at once. "
            "Poll GET /api/v1/datasets/{id}/ (latest_jobs.split) until its status is succeeded "
            "(message gives the counts, e.g. 'Assigned 800 train, 100 validation, 100 test.'; "
            "split_counts follow) or failed (error_message says why; no split was changed). "
            "400 when the ratios or mode are wrong, there is nothing to split, or an import, "
            "split or fix of the dataset is queued or running."
        ),
        request=InputSerializer,
        responses={202: DatasetJobSerializer, 400: OpenApiResponse(description="Refused.")},
    )
    def post(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = services.dataset_split_start(
            dataset=dataset,
            user=request.user,
            mode=data.validated_data["mode"],
            ratios=tuple(data.validated_data["ratios"]),
            seed=data.validated_data["seed"],
        )
        return Response(DatasetJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class SnapshotListApi(DatasetApiBase):
    class InputSerializer(serializers.Serializer):
        note = serializers.CharField(required=False, allow_blank=True, max_length=300)

    @extend_schema(
        parameters=[*paging.PARAMETERS, *paging.HEADERS],
        responses={200: SnapshotSerializer(many=True)},
    )
    def get(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
        return paging.paged_response(
            request, dataset.snapshots.order_by("-number", "-id"), SnapshotSerializer
        )

    @extend_schema(request=InputSerializer, responses={201: SnapshotSerializer})
    def post(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        snapshot = services.snapshot_create(
            dataset=dataset, user=request.user, **data.validated_data
        )
        return Response(SnapshotSerializer(snapshot).data, status=status.HTTP_201_CREATED)


class SnapshotDetailApi(DatasetApiBase):
    @extend_schema(responses={200: SnapshotSerializer})
    def get(self, request, snapshot_id: int):
        snapshot = snapshot_get_for_user(user=request.user, snapshot_id=snapshot_id)
        return Response(SnapshotSerializer(snapshot).data)


def export_response(*, dataset, snapshot, fmt: str) -> StreamingHttpResponse:
    if fmt not in ("csv", "jsonl"):
        raise ApiValidationError({"format": ["Choose format=csv or format=jsonl."]})
    stem = f"{dataset.name}-v{snapshot.number}" if snapshot else f"{dataset.name}-current"
    safe = safe_filename(stem, max_length=100)
    response = StreamingHttpResponse(
        export_stream(dataset=dataset, snapshot=snapshot, fmt=fmt),
        content_type="text/csv; charset=utf-8"
        if fmt == "csv"
        else "application/x-ndjson; charset=utf-8",
    )
    response["Content-Disposition"] = content_disposition_header(
        as_attachment=True, filename=f"{safe}.{fmt}"
    )
    return response


EXPORT_DESCRIPTION = (
    "Stream the current records (excluded ones left out) or a snapshot, as CSV (default) or "
    "JSON Lines.\n\n"
    "Each record has `source_row`, `text`, `label` and `split`; when the import mapped an id "
    "column, `id`; when the file had other columns, their values: in JSON Lines a `metadata` "
    "object, in CSV one column per file column (in the file's order, named as in the file, "
    "with a `metadata.` prefix where that name is already a column). CSV cells that a "
    "spreadsheet would run as a formula (starting with = + - @, tab or carriage return) get a "
    "leading `'`; JSON Lines keeps every value exactly.\n\n"
    "A snapshot holds text, label and split; its `id` and `metadata` are read from the "
    "records it was taken from, so they are left out once a later import of the dataset "
    "replaced those records."
)


class DatasetExportApi(DatasetApiBase):
    access_actions = {"GET": "export", "HEAD": "export"}

    @extend_schema(
        description=EXPORT_DESCRIPTION,
        parameters=[
            OpenApiParameter("format", OpenApiTypes.STR, enum=["csv", "jsonl"], default="csv"),
            OpenApiParameter(
                "snapshot", OpenApiTypes.INT, description="Export this snapshot instead."
            ),
        ],
        responses={
            (200, media_type): OpenApiResponse(
                response=OpenApiTypes.STR,
                description="UTF-8 text/csv (format=csv: a header row, then one row per record) "
                "or application/x-ndjson (format=jsonl: one JSON object per line).",
            )
            for media_type in ("text/csv", "application/x-ndjson")
        },
    )
    def get(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
        snapshot = None
        if request.query_params.get("snapshot"):
            try:
                snapshot = dataset.snapshots.filter(
                    pk=int(request.query_params["snapshot"])
                ).first()
            except (ValueError, OverflowError):
                snapshot = None
            if snapshot is None:
                raise ApiValidationError({"snapshot": ["This dataset has no such snapshot."]})
        return export_response(
            dataset=dataset, snapshot=snapshot, fmt=request.query_params.get("format", "csv")
        )


class DemoDatasetApi(DatasetApiBase):
    access_actions = {"POST": "create"}

    @extend_schema(request=None, responses={201: DatasetSerializer})
    def post(self, request):
        dataset = services.demo_dataset_load(user=request.user)
        return Response(DatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)
