"""Likely-mislabeled scans over REST (analysts): start, list, read with flags, cancel."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from datasets_app.selectors import dataset_get_for_user
from lepton_web.access import RolePermission
from models_app import label_issues
from models_app.mislabeled import (
    MAX_FOLDS,
    mislabeled_flags,
    mislabeled_scan_cancel,
    mislabeled_scan_get,
    mislabeled_scan_start,
    mislabeled_scans_for_dataset,
)
from models_app.models import BaseModel, MislabeledScan

FLAGS_RETURNED = 1000


class MislabeledScanSerializer(serializers.ModelSerializer):
    class Meta:
        model = MislabeledScan
        fields = [
            "id",
            "dataset",
            "base_model",
            "folds",
            "seed",
            "filter_by",
            "status",
            "progress",
            "message",
            "error_message",
            "records_total",
            "records_done",
            "flagged_count",
            "summary",
            "created_at",
            "finished_at",
        ]


FlagSerializer = inline_serializer(
    "MislabeledFlag",
    {
        "review_item_id": serializers.IntegerField(),
        "record_id": serializers.IntegerField(),
        "text": serializers.CharField(),
        "given_label": serializers.CharField(),
        "suggested_label": serializers.CharField(),
        "given_probability": serializers.FloatField(allow_null=True),
        "suggested_probability": serializers.FloatField(allow_null=True),
        "score": serializers.FloatField(allow_null=True, help_text="Lower: more likely wrong."),
        "rank": serializers.IntegerField(allow_null=True),
        "status": serializers.CharField(help_text="The review item's: open/resolved/dismissed."),
        "resolved_label": serializers.CharField(),
    },
    many=True,
)


class MislabeledScanListApi(APIView):
    """A dataset's scans, newest first; POST queues one (202)."""

    permission_classes = [RolePermission]
    access_resource = "dataset"
    access_actions = {"GET": "change", "HEAD": "change", "POST": "change"}

    class InputSerializer(serializers.Serializer):
        folds = serializers.IntegerField(
            required=False, default=label_issues.DEFAULT_FOLDS, min_value=2, max_value=MAX_FOLDS
        )
        base_model = serializers.IntegerField(
            required=False,
            min_value=1,
            max_value=2**31 - 1,
            help_text="A base model id; left out: the default base model.",
        )

    @extend_schema(responses={200: MislabeledScanSerializer(many=True)})
    def get(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
        scans = mislabeled_scans_for_dataset(dataset=dataset, limit=50)
        return Response(MislabeledScanSerializer(scans, many=True).data)

    @extend_schema(request=InputSerializer, responses={202: MislabeledScanSerializer})
    def post(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        base_model = None
        if "base_model" in data.validated_data:
            base_model = BaseModel.objects.filter(pk=data.validated_data["base_model"]).first()
            if base_model is None:
                raise serializers.ValidationError({"base_model": "There is no such base model."})
        scan = mislabeled_scan_start(
            user=request.user,
            dataset=dataset,
            base_model=base_model,
            folds=data.validated_data["folds"],
        )
        return Response(MislabeledScanSerializer(scan).data, status=status.HTTP_202_ACCEPTED)


class MislabeledScanDetailApi(APIView):
    """One scan, with its flags (most likely wrong first, up to 1,000)."""

    permission_classes = [RolePermission]
    access_resource = "dataset"
    access_actions = {"GET": "change", "HEAD": "change"}

    @extend_schema(
        responses={
            200: inline_serializer(
                "MislabeledScanWithFlags",
                {"scan": MislabeledScanSerializer(), "flags": FlagSerializer},
            )
        }
    )
    def get(self, request, dataset_id: int, scan_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
        scan = mislabeled_scan_get(dataset=dataset, scan_id=scan_id)
        return Response(
            {
                "scan": MislabeledScanSerializer(scan).data,
                "flags": mislabeled_flags(scan=scan, limit=FLAGS_RETURNED),
            }
        )


class MislabeledScanCancelApi(APIView):
    """Cancel a queued or running scan; nothing it found is flagged."""

    permission_classes = [RolePermission]
    access_resource = "dataset"
    access_actions = {"POST": "change"}

    @extend_schema(request=None, responses={200: MislabeledScanSerializer})
    def post(self, request, dataset_id: int, scan_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
        scan = mislabeled_scan_get(dataset=dataset, scan_id=scan_id)
        return Response(
            MislabeledScanSerializer(mislabeled_scan_cancel(user=request.user, scan=scan)).data
        )
