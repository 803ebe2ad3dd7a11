from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from datasets_app.models import Snapshot
from lepton_web.access import RolePermission
from lepton_web.api import paging
from lepton_web.jobs import JobStatus
from models_app.models import BaseModel, ModelVersion
from training_app import services
from training_app.models import Evaluation, TrainingEvent, TrainingRun
from training_app.selectors import (
    evaluation_get_for_user,
    run_get_for_user,
    run_list_for_user,
    run_metric_series,
    run_model_version,
)


class RunOutputSerializer(serializers.ModelSerializer):
    dataset = serializers.CharField(source="snapshot.dataset.name")
    snapshot_number = serializers.IntegerField(source="snapshot.number")
    base_model_name = serializers.CharField(source="base_model.name")
    model_version = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "name",
            "status",
            "progress",
            "message",
            "error_message",
            "attempts",
            "checkpoint_step",
            "snapshot",
            "dataset",
            "snapshot_number",
            "base_model",
            "base_model_name",
            "task",
            "method",
            "params",
            "resolved_params",
            "estimate",
            "label_names",
            "steps_done",
            "total_steps",
            "examples_per_second",
            "seconds_left",
            "batch_size_used",
            "best_step",
            "best_metrics",
            "test_metrics",
            "stopped_early",
            "started_at",
            "finished_at",
            "created_at",
            "model_version",
        ]

    def get_model_version(self, run: TrainingRun) -> int | None:
        version = run_model_version(run)
        return version.pk if version else None


class EventSerializer(serializers.ModelSerializer):
    class Meta:
        model = TrainingEvent
        fields = ["kind", "message", "created_at"]


class RunDetailSerializer(RunOutputSerializer):
    events = EventSerializer(many=True, read_only=True)

    class Meta(RunOutputSerializer.Meta):
        fields = [*RunOutputSerializer.Meta.fields, "test_report", "worst_examples", "events"]


class RunInputSerializer(serializers.Serializer):
    snapshot = serializers.PrimaryKeyRelatedField(queryset=Snapshot.objects.all())
    base_model = serializers.PrimaryKeyRelatedField(
        queryset=BaseModel.objects.all(), required=False
    )
    task = serializers.ChoiceField(choices=TrainingRun.Task.choices, default="single_label")
    method = serializers.ChoiceField(choices=TrainingRun.Method.choices, default="full")
    params = serializers.DictField(
        required=False,
        default=dict,
        help_text="Omitted values are chosen from the snapshot's data (the estimate's `defaults` "
        "says how) or take the engine's defaults. `refit_on_all_data: true` retrains on train + "
        "validation for as many epochs as the best step found on validation and registers that "
        "model (left out: on for training splits of 10,000 examples or more).",
    )
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)


def _chosen_base_model(values: dict) -> BaseModel:
    """The base model asked for, else the catalogue's default."""
    base_model = values.get("base_model") or BaseModel.objects.filter(is_default=True).first()
    if base_model is None:
        raise serializers.ValidationError(
            {"base_model": ["No base model is registered; run the bootstrap."]}
        )
    return base_model


class RunListApi(APIView):
    access_resource = "training_run"
    permission_classes = [RolePermission]

    @extend_schema(
        parameters=[
            OpenApiParameter("dataset", OpenApiTypes.INT, description="Runs of this dataset."),
            OpenApiParameter("status", OpenApiTypes.STR, enum=list(JobStatus.values)),
            *paging.PARAMETERS,
            *paging.HEADERS,
        ],
        responses={200: RunOutputSerializer(many=True)},
    )
    def get(self, request):
        errors = {}
        dataset_id = None
        raw_dataset = request.query_params.get("dataset") or ""
        if raw_dataset:
            try:
                dataset_id = int(raw_dataset)
            except ValueError:
                errors["dataset"] = ["'dataset' must be a dataset id (a whole number)."]
            else:
                if not 0 < dataset_id < 2**63:
                    errors["dataset"] = ["'dataset' is out of range."]
        wanted = request.query_params.get("status") or None
        if wanted is not None and wanted not in JobStatus.values:
            errors["status"] = [
                f"Unknown status {wanted[:40]!r}. Choose one of: {', '.join(JobStatus.values)}."
            ]
        if errors:
            raise serializers.ValidationError(errors)
        runs = run_list_for_user(user=request.user, status=wanted, dataset_id=dataset_id)
        return paging.paged_response(request, runs, RunOutputSerializer)

    @extend_schema(request=RunInputSerializer, responses={201: RunDetailSerializer})
    def post(self, request):
        data = RunInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        base_model = _chosen_base_model(values)
        run = services.training_run_start(
            user=request.user,
            snapshot=values["snapshot"],
            base_model=base_model,
            task=values["task"],
            method=values["method"],
            params=values["params"],
            name=values.get("name", ""),
        )
        return Response(RunDetailSerializer(run).data, status=status.HTTP_201_CREATED)


class RunEstimateOutputSerializer(serializers.Serializer):
    seconds = serializers.FloatField(help_text="The most likely time, in seconds.")
    low_seconds = serializers.FloatField(help_text="The range's short end.")
    high_seconds = serializers.FloatField(help_text="The range's long end (no early stopping).")
    memory_bytes = serializers.IntegerField()
    calibrated = serializers.BooleanField(
        help_text="Measured on a worker for this base model, method and device; false: a rough "
        "count of the arithmetic, off by up to 3 times either way."
    )
    basis = serializers.CharField(help_text="Where the estimate comes from, in a sentence.")
    runs_compared = serializers.IntegerField(
        required=False, help_text="Finished runs whose actual time corrected it."
    )
    defaults = serializers.CharField(
        required=False,
        help_text="The settings chosen for this snapshot's data, and which were yours, in a "
        "sentence.",
    )
    defaults_user_set = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="The settings you set."
    )


class RunEstimateApi(APIView):
    access_resource = "training_run"
    permission_classes = [RolePermission]

    @extend_schema(request=RunInputSerializer, responses={200: RunEstimateOutputSerializer})
    def post(self, request):
        data = RunInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        base_model = _chosen_base_model(values)
        estimate = services.training_run_estimate(
            snapshot=values["snapshot"],
            base_model=base_model,
            task=values["task"],
            method=values["method"],
            params=values["params"],
        )
        return Response(estimate)


class RunDetailApi(APIView):
    access_resource = "training_run"
    permission_classes = [RolePermission]

    @extend_schema(responses={200: RunDetailSerializer})
    def get(self, request, run_id: int):
        run = run_get_for_user(user=request.user, run_id=run_id)
        return Response(RunDetailSerializer(run).data)


class RunMetricsApi(APIView):
    access_resource = "training_run"
    permission_classes = [RolePermission]

    @extend_schema(responses={200: dict})
    def get(self, request, run_id: int):
        run = run_get_for_user(user=request.user, run_id=run_id)
        return Response({"status": run.status, "series": run_metric_series(run)})


class RunCancelApi(APIView):
    access_resource = "training_run"
    access_actions = {"POST": "cancel"}
    permission_classes = [RolePermission]

    @extend_schema(request=None, responses={200: RunOutputSerializer})
    def post(self, request, run_id: int):
        run = run_get_for_user(user=request.user, run_id=run_id)
        run = services.training_run_cancel(run=run, user=request.user)
        return Response(RunOutputSerializer(run).data)


class RunResumeApi(APIView):
    """Queue a failed or cancelled run again; it continues from its kept checkpoint."""

    access_resource = "training_run"
    access_actions = {"POST": "create"}
    permission_classes = [RolePermission]

    @extend_schema(request=None, responses={202: RunOutputSerializer})
    def post(self, request, run_id: int):
        run = run_get_for_user(user=request.user, run_id=run_id)
        run = services.training_run_resume(run=run, user=request.user)
        return Response(RunOutputSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class EvaluationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Evaluation
        fields = [
            "id",
            "model_version",
            "snapshot",
            "split",
            "status",
            "progress",
            "message",
            "error_message",
            "metrics",
            "evaluation_report",
            "created_at",
            "finished_at",
        ]


class EvaluationListApi(APIView):
    access_resource = "training_run"
    permission_classes = [RolePermission]

    class InputSerializer(serializers.Serializer):
        model_version = serializers.PrimaryKeyRelatedField(queryset=ModelVersion.objects.all())
        snapshot = serializers.PrimaryKeyRelatedField(queryset=Snapshot.objects.all())
        split = serializers.ChoiceField(choices=["train", "validation", "test"], default="test")

    @extend_schema(request=InputSerializer, responses={201: EvaluationSerializer})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        evaluation = services.evaluation_start(user=request.user, **data.validated_data)
        return Response(EvaluationSerializer(evaluation).data, status=status.HTTP_201_CREATED)


class EvaluationDetailApi(APIView):
    access_resource = "training_run"
    permission_classes = [RolePermission]

    @extend_schema(responses={200: EvaluationSerializer})
    def get(self, request, evaluation_id: int):
        evaluation = evaluation_get_for_user(user=request.user, evaluation_id=evaluation_id)
        return Response(EvaluationSerializer(evaluation).data)
