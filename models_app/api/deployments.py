"""Endpoints over REST: predict, deploy/promote/rollback/stop/start/delete, usage, tokens."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from lepton_web.access import RolePermission, can, denial_message
from models_app import deploy
from models_app.api.auth import (
    FastUserTokenAuthentication,
    PredictionPrincipal,
    PredictionTokenAuthentication,
)
from models_app.explanations import METHODS, explain_options
from models_app.models import Deployment, DeploymentEvent
from models_app.selectors import (
    deployment_get_for_user,
    deployment_list_for_user,
    model_version_get_for_user,
)
from models_app.serving import (
    PREDICT_FORBIDDEN,
    deployment_usage,
    predict_answer,
    predict_texts_problem,
)


def _error(detail: str, errors: dict | None = None, code: int = 400) -> Response:
    return Response({"detail": detail, "errors": errors or {}}, status=code)


class PredictPermission(BasePermission):
    """Users who may predict, or a prediction token (its endpoints are checked in the view)."""

    message = PREDICT_FORBIDDEN

    def has_permission(self, request, view) -> bool:
        user = request.user
        if isinstance(user, PredictionPrincipal):
            return True
        if not (user and user.is_authenticated):
            return False
        if can(user, "deployment", "predict"):
            return True
        self.message = denial_message(user, "deployment", "predict")
        return False


class PredictApi(APIView):
    """Predict with a deployed model: one result per text; the answer names version and runtime."""

    # Lean on purpose (the hot path): one query authenticates, one finds the endpoint.
    authentication_classes = [
        PredictionTokenAuthentication,
        FastUserTokenAuthentication,
        SessionAuthentication,
    ]
    permission_classes = [PredictPermission]
    answers_too_many_requests = True  # explain past EXPLAIN_CONCURRENCY

    @extend_schema(
        request=inline_serializer(
            "PredictInput",
            {
                "texts": serializers.ListField(child=serializers.CharField()),
                "explain": serializers.BooleanField(
                    required=False,
                    help_text="Add each text's words with their scores (integrated gradients "
                    "by default); ?explain=true works too.",
                ),
                "explain_method": serializers.ChoiceField(choices=list(METHODS), required=False),
            },
        ),
        responses={
            200: inline_serializer(
                "PredictOutput",
                {
                    "endpoint": serializers.CharField(),
                    "model": serializers.CharField(),
                    "version": serializers.IntegerField(),
                    "version_id": serializers.IntegerField(),
                    "runtime": serializers.CharField(),
                    "predictions": serializers.ListField(child=serializers.DictField()),
                },
            )
        },
    )
    def post(self, request, slug: str):
        texts = request.data.get("texts") if isinstance(request.data, dict) else None
        explain, method = (False, None)
        if not predict_texts_problem(texts):
            explain, method = explain_options(request, texts)
        code, body, headers = predict_answer(
            user=request.user, slug=slug, texts=texts, explain=explain, explain_method=method
        )
        return Response(body, status=code, headers=headers)


class DeploymentOutputSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="version.registered_model.name")
    version_number = serializers.IntegerField(source="version.version")
    notice = serializers.SerializerMethodField(
        help_text="A sentence on what the endpoint does now when that is not plain from "
        "status (a stopped endpoint's version serves only once it is started); else empty."
    )

    def get_notice(self, deployment: Deployment) -> str:
        if deployment.status == Deployment.Status.STOPPED:
            return deploy.deployment_change_sentence(deployment)
        return ""

    class Meta:
        model = Deployment
        fields = [
            "id",
            "slug",
            "model",
            "version",
            "version_number",
            "runtime",
            "status",
            "status_message",
            "follow_alias",
            "notice",
            "created_at",
            "updated_at",
        ]


class DeploymentEventSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", default=None)

    class Meta:
        model = DeploymentEvent
        fields = [
            "action",
            "from_version",
            "to_version",
            "from_runtime",
            "to_runtime",
            "message",
            "user",
            "created_at",
        ]


class DeploymentListApi(APIView):
    """Endpoints; POST deploys a version at a slug (or promotes it if the slug exists)."""

    access_resource = "deployment"
    access_actions = {"POST": "deploy"}
    permission_classes = [RolePermission]

    class InputSerializer(serializers.Serializer):
        slug = serializers.CharField(max_length=60)
        version = serializers.IntegerField(min_value=1, max_value=2**31 - 1)
        runtime = serializers.ChoiceField(choices=Deployment.Runtime.choices, required=False)
        follow_alias = serializers.CharField(max_length=60, required=False, allow_blank=True)

    @extend_schema(responses={200: DeploymentOutputSerializer(many=True)})
    def get(self, request):
        deployments = deployment_list_for_user(user=request.user)
        return Response(DeploymentOutputSerializer(deployments, many=True).data)

    @extend_schema(request=InputSerializer, responses={201: DeploymentOutputSerializer})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        version = model_version_get_for_user(user=request.user, version_id=values["version"])
        deployment = deploy.deployment_deploy(
            user=request.user,
            version=version,
            slug=values["slug"],
            runtime=values.get("runtime"),
            follow_alias=values.get("follow_alias", ""),
        )
        return Response(DeploymentOutputSerializer(deployment).data, status=status.HTTP_201_CREATED)


class DeploymentDetailApi(APIView):
    """One endpoint with its history and the last hour's requests, errors and latency."""

    access_resource = "deployment"
    access_actions = {"DELETE": "deploy"}
    permission_classes = [RolePermission]

    @extend_schema(responses={200: DeploymentOutputSerializer})
    def get(self, request, slug: str):
        deployment = deployment_get_for_user(user=request.user, slug=slug)
        data = DeploymentOutputSerializer(deployment).data
        data["history"] = DeploymentEventSerializer(deployment.events.all()[:50], many=True).data
        data["usage"] = deployment_usage(deployment)
        return Response(data)

    @extend_schema(responses={204: None})
    def delete(self, request, slug: str):
        deployment = deployment_get_for_user(user=request.user, slug=slug)
        deploy.deployment_delete(user=request.user, deployment=deployment)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DeploymentActionApi(APIView):
    """promote (with version, optional runtime), rollback, stop or start an endpoint."""

    access_resource = "deployment"
    access_actions = {"POST": "deploy"}
    permission_classes = [RolePermission]
    action = ""

    class InputSerializer(serializers.Serializer):
        version = serializers.IntegerField(min_value=1, max_value=2**31 - 1, required=False)
        runtime = serializers.ChoiceField(choices=Deployment.Runtime.choices, required=False)

    @extend_schema(request=InputSerializer, responses={200: DeploymentOutputSerializer})
    def post(self, request, slug: str):
        deployment = deployment_get_for_user(user=request.user, slug=slug)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        if self.action == "promote":
            if "version" not in values:
                raise serializers.ValidationError({"version": ["Name the version to promote."]})
            version = model_version_get_for_user(user=request.user, version_id=values["version"])
            deployment = deploy.deployment_promote(
                user=request.user,
                deployment=deployment,
                version=version,
                runtime=values.get("runtime"),
            )
        elif self.action == "rollback":
            deployment = deploy.deployment_rollback(user=request.user, deployment=deployment)
        elif self.action == "stop":
            deployment = deploy.deployment_stop(user=request.user, deployment=deployment)
        else:
            deployment = deploy.deployment_start(user=request.user, deployment=deployment)
        return Response(DeploymentOutputSerializer(deployment).data)


class PredictionTokenApi(APIView):
    """Create a prediction-only token for chosen endpoints; the key is shown once."""

    access_resource = "deployment"
    access_actions = {"POST": "deploy", "GET": "deploy"}
    permission_classes = [RolePermission]

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100)
        endpoints = serializers.ListField(child=serializers.SlugField(max_length=60), min_length=1)

    @extend_schema(
        responses={
            200: inline_serializer(
                "PredictionTokenOutput",
                {"name": serializers.CharField(), "prefix": serializers.CharField()},
                many=True,
            )
        }
    )
    def get(self, request):
        return Response(
            [
                {
                    "id": token.pk,
                    "name": token.name,
                    "prefix": token.prefix,
                    "endpoints": [d.slug for d in token.deployments.all()],
                    "last_used_at": token.last_used_at,
                }
                for token in deploy.prediction_token_list(user=request.user)
            ]
        )

    @extend_schema(
        request=InputSerializer,
        responses={
            201: inline_serializer(
                "PredictionTokenCreated",
                {"name": serializers.CharField(), "key": serializers.CharField()},
            )
        },
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        token, key = deploy.prediction_token_create(
            user=request.user, name=values["name"], slugs=values["endpoints"]
        )
        return Response(
            {
                "id": token.pk,
                "name": token.name,
                "key": key,
                "endpoints": [d.slug for d in token.deployments.all()],
            },
            status=status.HTTP_201_CREATED,
        )


class PredictionTokenDetailApi(APIView):
    """Revoke a prediction token: its key stops working (within a second in every process)."""

    access_resource = "deployment"
    access_actions = {"DELETE": "deploy"}
    permission_classes = [RolePermission]

    @extend_schema(responses={204: None})
    def delete(self, request, token_id: int):
        deploy.prediction_token_revoke(user=request.user, token_id=token_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
