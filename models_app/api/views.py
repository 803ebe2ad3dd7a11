from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from lepton_web.access import RolePermission
from models_app.models import BaseModel, ModelVersion
from models_app.selectors import (
    base_model_list_for_user,
    model_version_download_response,
    model_version_get_for_user,
    model_version_list_for_user,
)


class BaseModelOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = BaseModel
        fields = [
            "id",
            "name",
            "source",
            "location",
            "architecture",
            "parameter_count",
            "description",
            "licence",
            "is_default",
        ]


class BaseModelListApi(APIView):
    """The base-model catalogue that training runs start from."""

    access_resource = "base_model"
    permission_classes = [RolePermission]

    @extend_schema(responses={200: BaseModelOutputSerializer(many=True)})
    def get(self, request):
        base_models = base_model_list_for_user(user=request.user)
        return Response(BaseModelOutputSerializer(base_models, many=True).data)


class ModelVersionSerializer(serializers.ModelSerializer):
    registered_model_name = serializers.CharField(source="registered_model.name")

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "registered_model",
            "registered_model_name",
            "version",
            "training_run",
            "snapshot",
            "base_model",
            "task",
            "method",
            "label_names",
            "hyperparameters",
            "test_metrics",
            "artifact_uri",
            "artifact_files",
            "status",
            "status_message",
            "created_at",
        ]


class ModelVersionListApi(APIView):
    access_resource = "model_version"
    permission_classes = [RolePermission]

    @extend_schema(responses={200: ModelVersionSerializer(many=True)})
    def get(self, request):
        versions = model_version_list_for_user(user=request.user)
        return Response(ModelVersionSerializer(versions[:200], many=True).data)


class ModelVersionDetailApi(APIView):
    access_resource = "model_version"
    permission_classes = [RolePermission]

    @extend_schema(responses={200: ModelVersionSerializer})
    def get(self, request, version_id: int):
        version = model_version_get_for_user(user=request.user, version_id=version_id)
        return Response(ModelVersionSerializer(version).data)


class ModelVersionDownloadApi(APIView):
    """The version's Hugging Face folder as a zip."""

    access_resource = "model_version"
    permission_classes = [RolePermission]

    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY})
    def get(self, request, version_id: int):
        version = model_version_get_for_user(user=request.user, version_id=version_id)
        return model_version_download_response(version)
