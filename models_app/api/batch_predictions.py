"""Batch prediction over REST: start (snapshot split or uploaded file), read, cancel, download."""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from datasets_app.selectors import snapshot_get_for_user
from lepton_web.access import RolePermission
from lepton_web.api import paging
from models_app.batch_prediction import (
    SPLITS,
    batch_prediction_cancel,
    batch_prediction_download_response,
    batch_prediction_get_for_user,
    batch_prediction_list_for_version,
    batch_prediction_start,
)
from models_app.models import BatchPrediction
from models_app.selectors import model_version_get_for_user


class BatchPredictionSerializer(serializers.ModelSerializer):
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = BatchPrediction
        fields = [
            "id",
            "model_version",
            "source",
            "snapshot",
            "split",
            "dataset",
            "deployment",
            "runtime",
            "input_filename",
            "text_column",
            "label_column",
            "output_format",
            "store_suggestions",
            "status",
            "progress",
            "message",
            "error_message",
            "rows_total",
            "rows_done",
            "summary",
            "suggestions_stored",
            "download_url",
            "created_at",
            "finished_at",
        ]

    def get_download_url(self, batch: BatchPrediction) -> str | None:
        if batch.status != BatchPrediction.Status.SUCCEEDED:
            return None
        return reverse("api_batch_prediction_download", args=[batch.pk])


class VersionBatchPredictionListApi(APIView):
    """A version's batch predictions; POST starts one over a snapshot (one split or all) or an
    uploaded CSV/JSON Lines file (multipart ``file``)."""

    access_resource = "model_version"
    permission_classes = [RolePermission]
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    class InputSerializer(serializers.Serializer):
        snapshot = serializers.IntegerField(required=False, min_value=1, max_value=2**31 - 1)
        split = serializers.ChoiceField(choices=["", *SPLITS], required=False, default="")
        file = serializers.FileField(required=False)
        text_column = serializers.CharField(
            required=False, default="", allow_blank=True, max_length=200
        )
        label_column = serializers.CharField(
            required=False, default="", allow_blank=True, max_length=200
        )
        output_format = serializers.ChoiceField(
            choices=BatchPrediction.Format.values, default=BatchPrediction.Format.CSV
        )
        store_suggestions = serializers.BooleanField(default=False)

        def validate(self, attrs: dict) -> dict:
            if ("snapshot" in attrs) == ("file" in attrs):
                raise serializers.ValidationError(
                    {"snapshot": "Give a snapshot id or upload a file (one of them)."}
                )
            return attrs

    @extend_schema(
        parameters=[*paging.PARAMETERS, *paging.HEADERS],
        responses={200: BatchPredictionSerializer(many=True)},
    )
    def get(self, request, version_id: int):
        version = model_version_get_for_user(user=request.user, version_id=version_id)
        batches = batch_prediction_list_for_version(user=request.user, version=version)
        return paging.paged_response(request, batches, BatchPredictionSerializer)

    @extend_schema(request=InputSerializer, responses={202: BatchPredictionSerializer})
    def post(self, request, version_id: int):
        version = model_version_get_for_user(user=request.user, version_id=version_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        snapshot = None
        if "snapshot" in values:
            snapshot = snapshot_get_for_user(user=request.user, snapshot_id=values["snapshot"])
        batch = batch_prediction_start(
            user=request.user,
            version=version,
            snapshot=snapshot,
            split=values["split"],
            upload=values.get("file"),
            text_column=values["text_column"],
            label_column=values["label_column"],
            output_format=values["output_format"],
            store_suggestions=values["store_suggestions"],
        )
        return Response(BatchPredictionSerializer(batch).data, status=status.HTTP_202_ACCEPTED)


class BatchPredictionDetailApi(APIView):
    access_resource = "model_version"
    permission_classes = [RolePermission]

    @extend_schema(responses={200: BatchPredictionSerializer})
    def get(self, request, batch_id: int):
        batch = batch_prediction_get_for_user(user=request.user, batch_id=batch_id)
        return Response(BatchPredictionSerializer(batch).data)


class BatchPredictionCancelApi(APIView):
    access_resource = "model_version"
    permission_classes = [RolePermission]

    @extend_schema(request=None, responses={200: BatchPredictionSerializer})
    def post(self, request, batch_id: int):
        batch = batch_prediction_get_for_user(user=request.user, batch_id=batch_id)
        batch = batch_prediction_cancel(user=request.user, batch=batch)
        return Response(BatchPredictionSerializer(batch).data)


class BatchPredictionDownloadApi(APIView):
    """The predictions file (CSV or JSON Lines) of a finished batch."""

    access_resource = "model_version"
    permission_classes = [RolePermission]

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.BINARY})
    def get(self, request, batch_id: int):
        batch = batch_prediction_get_for_user(user=request.user, batch_id=batch_id)
        return batch_prediction_download_response(batch)
