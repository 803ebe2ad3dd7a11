from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from lepton_web.access import RolePermission, user_roles
from lepton_web.models import WorkerCheck
from lepton_web.selectors import system_health
from lepton_web.services import worker_check_start


class ApiRootApi(APIView):
    @extend_schema(responses={200: dict})
    def get(self, request):
        return Response(
            {
                "me": reverse("api_me", request=request),
                "health": reverse("api_health", request=request),
                "worker-checks": reverse("api_worker_checks", request=request),
                "base-models": reverse("api_base_models", request=request),
                "datasets": reverse("api_datasets", request=request),
                "runs": reverse("api_runs", request=request),
                "evaluations": reverse("api_evaluations", request=request),
                "model-versions": reverse("api_model_versions", request=request),
                "schema": reverse("schema", request=request),
                "docs": reverse("api_docs", request=request),
            }
        )


class MeApi(APIView):
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        username = serializers.CharField()
        roles = serializers.ListField(child=serializers.CharField())

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request):
        user = request.user
        data = {"id": user.pk, "username": user.get_username(), "roles": sorted(user_roles(user))}
        return Response(self.OutputSerializer(data).data)


class HealthApi(APIView):
    access_resource = "dashboard"
    permission_classes = [RolePermission]

    @extend_schema(responses={200: dict})
    def get(self, request):
        return Response(system_health())


class WorkerCheckOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = WorkerCheck
        fields = [
            "id",
            "queue",
            "status",
            "progress",
            "message",
            "error_message",
            "attempts",
            "worker_hostname",
            "heartbeat_at",
            "started_at",
            "finished_at",
            "created_at",
        ]


class WorkerCheckListApi(APIView):
    """Start a diagnostic job on a queue, or list recent ones."""

    access_resource = "worker_check"
    permission_classes = [RolePermission]

    class InputSerializer(serializers.Serializer):
        queue = serializers.ChoiceField(choices=WorkerCheck.Queue.choices)
        steps = serializers.IntegerField(min_value=1, max_value=50, default=5)

    @extend_schema(responses={200: WorkerCheckOutputSerializer(many=True)})
    def get(self, request):
        jobs = WorkerCheck.objects.order_by("-created_at")[:50]
        return Response(WorkerCheckOutputSerializer(jobs, many=True).data)

    @extend_schema(request=InputSerializer, responses={201: WorkerCheckOutputSerializer})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = worker_check_start(user=request.user, **data.validated_data)
        return Response(WorkerCheckOutputSerializer(job).data, status=status.HTTP_201_CREATED)


class WorkerCheckDetailApi(APIView):
    access_resource = "worker_check"
    permission_classes = [RolePermission]

    @extend_schema(responses={200: WorkerCheckOutputSerializer})
    def get(self, request, job_id: int):
        job = get_object_or_404(WorkerCheck, pk=job_id)
        return Response(WorkerCheckOutputSerializer(job).data)
