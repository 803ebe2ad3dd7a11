from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from lepton_web.access import RolePermission
from lepton_web.api import paging
from models_app.models import BaseModel, ModelVersion
from models_app.selectors import (
    base_model_list_for_user,
    model_version_download_response,
    model_version_get_for_user,
    model_version_list_for_user,
)
from models_app.services import base_model_register, base_model_upload


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

    parser_classes = [JSONParser, MultiPartParser, FormParser]

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=200)
        source = serializers.ChoiceField(choices=["local", "hub", "upload"])
        location = serializers.CharField(
            required=False, max_length=500, help_text="Server folder (local) or hub id (hub)."
        )
        file = serializers.FileField(
            required=False, help_text="A zip of a Hugging Face folder (upload)."
        )
        description = serializers.CharField(required=False, allow_blank=True)

    @extend_schema(responses={200: BaseModelOutputSerializer(many=True)})
    def get(self, request):
        base_models = base_model_list_for_user(user=request.user)
        return Response(BaseModelOutputSerializer(base_models, many=True).data)

    @extend_schema(request=InputSerializer, responses={201: BaseModelOutputSerializer})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        if values["source"] == "upload":
            if "file" not in values:
                raise serializers.ValidationError({"file": ["Attach the zipped model folder."]})
            base_model = base_model_upload(
                user=request.user,
                name=values["name"],
                archive=values["file"],
                description=values.get("description", ""),
            )
        else:
            if not values.get("location"):
                raise serializers.ValidationError(
                    {"location": ["Give the folder path or the hub id."]}
                )
            base_model = base_model_register(
                user=request.user,
                name=values["name"],
                source=values["source"],
                location=values["location"],
                description=values.get("description", ""),
            )
        return Response(BaseModelOutputSerializer(base_model).data, status=status.HTTP_201_CREATED)


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

    @extend_schema(
        parameters=[*paging.PARAMETERS, *paging.HEADERS],
        responses={200: ModelVersionSerializer(many=True)},
    )
    def get(self, request):
        versions = model_version_list_for_user(user=request.user)
        return paging.paged_response(request, versions, ModelVersionSerializer)


class ModelVersionDetailApi(APIView):
    access_resource = "model_version"
    permission_classes = [RolePermission]

    @extend_schema(responses={200: ModelVersionSerializer})
    def get(self, request, version_id: int):
        version = model_version_get_for_user(user=request.user, version_id=version_id)
        return Response(ModelVersionSerializer(version).data)

    @extend_schema(
        responses={
            200: inline_serializer(
                "ModelVersionDeleteOutput",
                {
                    "batch_predictions": serializers.IntegerField(
                        help_text="Batch predictions deleted with the version."
                    ),
                    "exports": serializers.IntegerField(help_text="Exports deleted with it."),
                    "files": serializers.IntegerField(help_text="Stored files removed."),
                },
            )
        }
    )
    def delete(self, request, version_id: int):
        """Delete an archived version with its exports and batch predictions (rows and files)."""
        from models_app.deploy import model_version_delete

        version = model_version_get_for_user(user=request.user, version_id=version_id)
        return Response(model_version_delete(user=request.user, version=version))


class ModelVersionDownloadApi(APIView):
    """The version's Hugging Face folder as a zip."""

    access_resource = "model_version"
    permission_classes = [RolePermission]

    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY})
    def get(self, request, version_id: int):
        version = model_version_get_for_user(user=request.user, version_id=version_id)
        return model_version_download_response(version)
