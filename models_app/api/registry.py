"""Registry over REST: ONNX exports (start, read, download), aliases, archiving."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from lepton_web.access import RolePermission
from models_app import deploy
from models_app.exports import (
    model_export_download_response,
    model_export_get_for_user,
    model_export_start,
)
from models_app.models import ModelExport
from models_app.selectors import (
    model_alias_history_for_user,
    model_alias_list_for_user,
    model_version_get_for_user,
)


class ExportSerializer(serializers.ModelSerializer):
    passed_parity = serializers.BooleanField(read_only=True)

    class Meta:
        model = ModelExport
        fields = [
            "id",
            "model_version",
            "kind",
            "status",
            "progress",
            "message",
            "error_message",
            "size_bytes",
            "agreement",
            "max_abs_logit_delta",
            "parity_examples",
            "passed_parity",
            "details",
            "created_at",
            "finished_at",
        ]


class VersionExportListApi(APIView):
    """A version's ONNX exports; POST starts one (a background job with progress)."""

    access_resource = "model_version"
    permission_classes = [RolePermission]

    class InputSerializer(serializers.Serializer):
        kind = serializers.ChoiceField(choices=ModelExport.Kind.values)

    @extend_schema(responses={200: ExportSerializer(many=True)})
    def get(self, request, version_id: int):
        version = model_version_get_for_user(user=request.user, version_id=version_id)
        return Response(ExportSerializer(version.exports.all(), many=True).data)

    @extend_schema(request=InputSerializer, responses={202: ExportSerializer})
    def post(self, request, version_id: int):
        version = model_version_get_for_user(user=request.user, version_id=version_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        export = model_export_start(
            user=request.user, version=version, kind=data.validated_data["kind"]
        )
        return Response(ExportSerializer(export).data, status=status.HTTP_202_ACCEPTED)


class ExportDetailApi(APIView):
    access_resource = "model_version"
    permission_classes = [RolePermission]

    @extend_schema(responses={200: ExportSerializer})
    def get(self, request, export_id: int):
        export = model_export_get_for_user(user=request.user, export_id=export_id)
        return Response(ExportSerializer(export).data)


class ExportDownloadApi(APIView):
    """The exported model.onnx with the tokenizer and config, as a zip."""

    access_resource = "model_version"
    permission_classes = [RolePermission]

    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY})
    def get(self, request, export_id: int):
        export = model_export_get_for_user(user=request.user, export_id=export_id)
        return model_export_download_response(export)


class VersionAliasApi(APIView):
    """Point an alias (production, staging, ...) of the version's model at this version."""

    access_resource = "deployment"
    access_actions = {"POST": "deploy"}
    permission_classes = [RolePermission]

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=60)

    @extend_schema(
        request=InputSerializer,
        responses={
            200: inline_serializer(
                "VersionAliasOutput",
                {
                    "model": serializers.CharField(),
                    "alias": serializers.CharField(),
                    "version": serializers.IntegerField(help_text="The version's number."),
                },
            )
        },
    )
    def post(self, request, version_id: int):
        version = model_version_get_for_user(user=request.user, version_id=version_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        alias = deploy.model_alias_set(
            user=request.user,
            registered_model=version.registered_model,
            name=data.validated_data["name"],
            version=version,
        )
        return Response(
            {"model": alias.registered_model.name, "alias": alias.name, "version": version.version}
        )


class ModelAliasListApi(APIView):
    """Every alias with its version, and each alias's history (who, when, from, to)."""

    access_resource = "model_version"
    permission_classes = [RolePermission]

    @extend_schema(
        responses={
            200: inline_serializer(
                "ModelAliasListOutput",
                {
                    "aliases": inline_serializer(
                        "ModelAliasOutput",
                        {
                            "model": serializers.CharField(),
                            "name": serializers.CharField(),
                            "version": serializers.IntegerField(),
                            "version_id": serializers.IntegerField(),
                            "updated_at": serializers.DateTimeField(),
                        },
                        many=True,
                    ),
                    "history": inline_serializer(
                        "ModelAliasEventOutput",
                        {
                            "model": serializers.CharField(),
                            "name": serializers.CharField(),
                            "from_version": serializers.IntegerField(allow_null=True),
                            "to_version": serializers.IntegerField(allow_null=True),
                            "user": serializers.CharField(allow_null=True),
                            "created_at": serializers.DateTimeField(),
                        },
                        many=True,
                    ),
                },
            )
        }
    )
    def get(self, request):
        aliases = model_alias_list_for_user(user=request.user)
        events = model_alias_history_for_user(user=request.user)
        return Response(
            {
                "aliases": [
                    {
                        "model": a.registered_model.name,
                        "name": a.name,
                        "version": a.version.version,
                        "version_id": a.version_id,
                        "updated_at": a.updated_at,
                    }
                    for a in aliases
                ],
                "history": [
                    {
                        "model": e.registered_model.name,
                        "name": e.name,
                        "from_version": e.from_version.version if e.from_version else None,
                        "to_version": e.to_version.version if e.to_version else None,
                        "user": e.user.username if e.user else None,
                        "created_at": e.created_at,
                    }
                    for e in events
                ],
            }
        )


class VersionArchiveApi(APIView):
    """Archive ({"archived": true}) a version nothing deploys, or unarchive it."""

    access_resource = "model_version"
    access_actions = {"POST": "delete"}
    permission_classes = [RolePermission]

    class InputSerializer(serializers.Serializer):
        archived = serializers.BooleanField(default=True)

    @extend_schema(
        request=InputSerializer,
        responses={
            200: inline_serializer(
                "VersionArchiveOutput",
                {"id": serializers.IntegerField(), "is_archived": serializers.BooleanField()},
            )
        },
    )
    def post(self, request, version_id: int):
        version = model_version_get_for_user(user=request.user, version_id=version_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = deploy.model_version_archive(
            user=request.user, version=version, archived=data.validated_data["archived"]
        )
        return Response({"id": version.pk, "is_archived": version.is_archived})
