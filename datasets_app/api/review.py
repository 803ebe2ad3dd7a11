"""Labeling settings, assigned annotators and the review queue over the API (analysts; the
same services as the labeling settings and review pages)."""

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from datasets_app.models import MAX_OVERLAP, LabelingOrder, ReviewItem
from datasets_app.selectors import dataset_annotators, dataset_get_for_user, review_items_for_page
from datasets_app.services.labeling import (
    dataset_assign,
    dataset_unassign,
    labeling_settings_set,
    review_item_adjudicate,
    review_item_dismiss,
)
from lepton_web.access import RolePermission


class LabelingSettingsSerializer(serializers.Serializer):
    overlap = serializers.IntegerField(
        required=False,
        help_text=f"Annotations wanted per record, 1 to {MAX_OVERLAP}. Left out: unchanged.",
    )
    order = serializers.ChoiceField(
        choices=LabelingOrder.choices, required=False, help_text="The queue's order."
    )


class AnnotatorSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField(read_only=True)


class ReviewItemSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    record_id = serializers.IntegerField()
    reason = serializers.CharField()
    suggested_label = serializers.CharField()
    status = serializers.CharField()
    resolved_label = serializers.CharField()
    detail = serializers.JSONField()
    text = serializers.SerializerMethodField()
    annotations = serializers.SerializerMethodField()

    def get_text(self, item) -> str | None:
        return item.record_obj.text if item.record_obj else None

    def get_annotations(self, item) -> list[dict]:
        return [
            {"user": a.user.get_username() if a.user else None, "label": a.label}
            for a in item.annotations
        ]


class DecisionSerializer(serializers.Serializer):
    label = serializers.CharField(required=False, max_length=500, help_text="The label decided.")
    dismiss = serializers.BooleanField(
        required=False, default=False, help_text="Close the item; the record keeps its label."
    )


def _settings_body(dataset) -> dict:
    return {"overlap": dataset.label_overlap, "order": dataset.labeling_order}


class LabelingSettingsApi(APIView):
    permission_classes = [RolePermission]
    access_resource = "dataset"
    access_actions = {"PUT": "change"}

    @extend_schema(responses={200: LabelingSettingsSerializer})
    def get(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
        return Response(_settings_body(dataset))

    @extend_schema(request=LabelingSettingsSerializer, responses={200: LabelingSettingsSerializer})
    def put(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
        # The service words the errors (range, unknown order); the shape is checked here.
        if not isinstance(request.data, dict):
            raise serializers.ValidationError(
                {"non_field_errors": ['Send a JSON object, e.g. {"overlap": 2, "order": "file"}.']}
            )
        overlap = request.data.get("overlap")
        order = request.data.get("order")
        dataset = labeling_settings_set(
            dataset=dataset,
            user=request.user,
            overlap=overlap,
            order=None if order is None else str(order),
        )
        return Response(_settings_body(dataset))


class DatasetAnnotatorsApi(APIView):
    """The annotators assigned to a dataset; with any, only they see it."""

    permission_classes = [RolePermission]
    access_resource = "dataset"
    access_actions = {"GET": "change", "POST": "change", "DELETE": "change"}

    @extend_schema(responses={200: AnnotatorSerializer(many=True)})
    def get(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
        return Response(
            [
                {"id": u.pk, "username": u.get_username()}
                for u in dataset_annotators(dataset=dataset)
            ]
        )

    @extend_schema(request=AnnotatorSerializer, responses={201: AnnotatorSerializer})
    def post(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
        data = AnnotatorSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        annotator = get_user_model().objects.filter(pk=data.validated_data["id"]).first()
        if annotator is None:
            raise ValidationError("There is no user with that id.")
        dataset_assign(dataset=dataset, user=request.user, annotator=annotator)
        return Response(
            {"id": annotator.pk, "username": annotator.get_username()},
            status=status.HTTP_201_CREATED,
        )


class DatasetAnnotatorApi(APIView):
    permission_classes = [RolePermission]
    access_resource = "dataset"
    access_actions = {"DELETE": "change"}

    @extend_schema(responses={204: None})
    def delete(self, request, dataset_id: int, user_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
        annotator = get_user_model().objects.filter(pk=user_id).first()
        if annotator is None:
            raise ValidationError("There is no user with that id.")
        dataset_unassign(dataset=dataset, user=request.user, annotator=annotator)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ReviewItemsApi(APIView):
    """Open (or ?status=resolved|dismissed) review items with the annotations side by side."""

    permission_classes = [RolePermission]
    access_resource = "dataset"
    access_actions = {"GET": "change"}

    @extend_schema(responses={200: ReviewItemSerializer(many=True)})
    def get(self, request, dataset_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
        wanted = request.query_params.get("status", ReviewItem.Status.OPEN)
        if wanted not in ReviewItem.Status.values:
            raise ValidationError(
                f'"{wanted}" is not a status; use one of {", ".join(ReviewItem.Status.values)}.'
            )
        items = review_items_for_page(dataset=dataset, user=request.user, status=wanted, limit=200)
        return Response(ReviewItemSerializer(items, many=True).data)


class ReviewDecisionApi(APIView):
    """Adjudicate a review item with a label, or dismiss it."""

    permission_classes = [RolePermission]
    access_resource = "dataset"
    access_actions = {"POST": "change"}

    @extend_schema(request=DecisionSerializer, responses={200: ReviewItemSerializer})
    def post(self, request, dataset_id: int, item_id: int):
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id, action="change")
        data = DecisionSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if data.validated_data["dismiss"]:
            item = review_item_dismiss(dataset=dataset, user=request.user, item_id=item_id)
        else:
            if not data.validated_data.get("label"):
                raise ValidationError("Give the label decided, or dismiss the item.")
            item = review_item_adjudicate(
                dataset=dataset,
                user=request.user,
                item_id=item_id,
                label=data.validated_data["label"],
            )
        return Response(
            {
                "id": item.pk,
                "record_id": item.record_id,
                "status": item.status,
                "resolved_label": item.resolved_label,
            }
        )
