"""The model in the loop over REST: pre-label a dataset's unlabeled records with a version or an
endpoint, and retrain on new labels (with where each one is)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from datasets_app.selectors import dataset_get_for_user
from lepton_web.access import RolePermission
from models_app.batch_prediction import batch_prediction_start, prelabel_latest
from models_app.selectors import deployment_get_for_user, model_version_get_for_user
from training_app import retrain


def _batch_data(batch) -> dict | None:
    if batch is None:
        return None
    return {
        "id": batch.pk,
        "status": batch.status,
        "progress": batch.progress,
        "message": batch.message,
        "error": batch.error_message,
        "model_version": batch.model_version_id,
        "endpoint": batch.deployment.slug if batch.deployment else None,
        "runtime": batch.runtime,
        "rows_total": batch.rows_total,
        "rows_done": batch.rows_done,
        "suggestions_stored": batch.suggestions_stored,
    }


def _loop_data(loop) -> dict | None:
    if loop is None:
        return None
    progress = retrain.retrain_loop_progress(loop)
    return {
        "id": loop.pk,
        "step": loop.step,
        "percent": progress["percent"],
        "message": progress["line"],
        "error": loop.error_message,
        "from_version": loop.from_version_id,
        "snapshot": loop.snapshot_id,
        "training_run": loop.training_run_id,
        "new_version": loop.new_version_id,
        "batch_prediction": loop.batch_prediction_id,
        "created_at": loop.created_at,
        "finished_at": loop.finished_at,
    }


class PreLabelApi(APIView):
    """GET: the dataset's latest pre-labeling job. POST {"version": id} or {"endpoint": slug}:
    predict every unlabeled record and store the suggestions (202, the job)."""

    access_resource = "model_version"
    access_actions = {"GET": "view", "POST": "create"}
    permission_classes = [RolePermission]

    class InputSerializer(serializers.Serializer):
        version = serializers.IntegerField(required=False, min_value=1)
        endpoint = serializers.SlugField(required=False)

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
        return Response({"pre_labels": _batch_data(prelabel_latest(dataset))})

    @extend_schema(request=InputSerializer, responses={202: OpenApiTypes.OBJECT})
    def post(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        if ("version" in values) == ("endpoint" in values):
            raise ValidationError({"version": "Give a model version id or an endpoint slug."})
        source = (
            {"version": model_version_get_for_user(user=request.user, version_id=values["version"])}
            if "version" in values
            else {"deployment": deployment_get_for_user(user=request.user, slug=values["endpoint"])}
        )
        batch = batch_prediction_start(user=request.user, dataset=dataset, **source)
        return Response(_batch_data(batch), status=status.HTTP_202_ACCEPTED)


class RetrainLoopApi(APIView):
    """GET: the dataset's latest retrain loop. POST {"version": id (optional; default the newest
    version trained on it)}: retrain on the new labels (202, the loop)."""

    access_resource = "training_run"
    access_actions = {"GET": "view", "POST": "create"}
    permission_classes = [RolePermission]

    class InputSerializer(serializers.Serializer):
        version = serializers.IntegerField(required=False, min_value=1)

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
        return Response({"loop": _loop_data(retrain.retrain_loop_latest(dataset))})

    @extend_schema(request=InputSerializer, responses={202: OpenApiTypes.OBJECT})
    def post(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = None
        if "version" in data.validated_data:
            version = model_version_get_for_user(
                user=request.user, version_id=data.validated_data["version"]
            )
        loop = retrain.retrain_loop_start(user=request.user, dataset=dataset, version=version)
        return Response(_loop_data(loop), status=status.HTTP_202_ACCEPTED)
