"""REST API of hyperparameter searches: start and list, get (with trials), cancel."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from datasets_app.models import Snapshot
from lepton_web.access import RolePermission
from lepton_web.api import paging
from models_app.models import BaseModel
from training_app import search as search_services
from training_app import search_selectors
from training_app.api.views import _chosen_base_model
from training_app.models import HyperparameterSearch, TrainingRun


class SearchOutputSerializer(serializers.ModelSerializer):
    dataset = serializers.CharField(source="snapshot.dataset.name")
    snapshot_number = serializers.IntegerField(source="snapshot.number")
    base_model_name = serializers.CharField(source="base_model.name")
    model_version = serializers.SerializerMethodField()

    class Meta:
        model = HyperparameterSearch
        fields = [
            "id",
            "name",
            "status",
            "message",
            "snapshot",
            "dataset",
            "snapshot_number",
            "base_model",
            "base_model_name",
            "task",
            "space",
            "fixed_params",
            "metric",
            "max_trials",
            "max_minutes",
            "parallel_trials",
            "seed",
            "best_trial",
            "model_version",
            "created_at",
            "finished_at",
        ]
        extra_kwargs = {
            "status": {
                "help_text": "running: trials are queued or training; registering: the trials "
                "are done and the best trial's model version is being registered; succeeded: "
                "that version exists (model_version); failed; cancelled."
            }
        }

    def get_model_version(self, search: HyperparameterSearch) -> int | None:
        from training_app.selectors import run_model_version

        version = run_model_version(search.best_trial) if search.best_trial else None
        return version.pk if version else None


class TrialSerializer(serializers.ModelSerializer):
    state = serializers.SerializerMethodField(help_text='The run status, or "pruned".')
    score = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "trial_number",
            "state",
            "status",
            "trial_pruned",
            "method",
            "trial_params",
            "params",
            "progress",
            "best_metrics",
            "score",
            "error_message",
        ]

    def get_state(self, run: TrainingRun) -> str:
        return search_selectors.trial_state(run)[0]

    def get_score(self, run: TrainingRun) -> float | None:
        return search_services.trial_score(run.search, run)


class SearchDetailSerializer(SearchOutputSerializer):
    trials = serializers.SerializerMethodField()
    importance = serializers.SerializerMethodField()

    class Meta(SearchOutputSerializer.Meta):
        fields = [*SearchOutputSerializer.Meta.fields, "trials", "importance"]

    def get_trials(self, search: HyperparameterSearch) -> list[dict]:
        trials = search.trials.select_related("search").order_by("trial_number")
        return TrialSerializer(trials, many=True).data

    def get_importance(self, search: HyperparameterSearch) -> list[dict]:
        return search_selectors.search_param_importance(search)


class SearchInputSerializer(serializers.Serializer):
    snapshot = serializers.PrimaryKeyRelatedField(queryset=Snapshot.objects.all())
    base_model = serializers.PrimaryKeyRelatedField(
        queryset=BaseModel.objects.all(), required=False
    )
    task = serializers.ChoiceField(choices=TrainingRun.Task.choices, default="single_label")
    space = serializers.DictField(
        required=False,
        default=dict,
        help_text="Omitted keys take the defaults: methods, learning_rate, lora_learning_rate, "
        "epochs, weight_decay, warmup_ratio ([low, high]); batch_size, lora_r (values to try).",
    )
    metric = serializers.CharField(required=False, allow_blank=True, default="")
    max_trials = serializers.IntegerField(required=False, allow_null=True, default=None)
    max_minutes = serializers.IntegerField(required=False, allow_null=True, default=None)
    parallel_trials = serializers.IntegerField(required=False, default=1)
    params = serializers.DictField(
        required=False, default=dict, help_text="Fixed hyperparameters every trial uses."
    )
    seed = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        help_text="The sampler's seed; a new one per search when left out (it is recorded).",
    )
    name = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")


class SearchListApi(APIView):
    access_resource = "training_run"
    permission_classes = [RolePermission]

    @extend_schema(
        parameters=[*paging.PARAMETERS, *paging.HEADERS],
        responses={200: SearchOutputSerializer(many=True)},
    )
    def get(self, request):
        searches = search_selectors.search_list_for_user(user=request.user)
        return paging.paged_response(request, searches, SearchOutputSerializer)

    @extend_schema(request=SearchInputSerializer, responses={201: SearchDetailSerializer})
    def post(self, request):
        data = SearchInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        values["base_model"] = _chosen_base_model(values)
        search = search_services.search_start(user=request.user, **values)
        return Response(SearchDetailSerializer(search).data, status=status.HTTP_201_CREATED)


class SearchDetailApi(APIView):
    access_resource = "training_run"
    permission_classes = [RolePermission]

    @extend_schema(responses={200: SearchDetailSerializer})
    def get(self, request, search_id: int):
        search = search_selectors.search_get_for_user(user=request.user, search_id=search_id)
        return Response(SearchDetailSerializer(search).data)


class SearchCancelApi(APIView):
    access_resource = "training_run"
    access_actions = {"POST": "cancel"}
    permission_classes = [RolePermission]

    @extend_schema(request=None, responses={200: SearchOutputSerializer})
    def post(self, request, search_id: int):
        search = search_selectors.search_get_for_user(user=request.user, search_id=search_id)
        search = search_services.search_cancel(search=search, user=request.user)
        return Response(SearchOutputSerializer(search).data)
