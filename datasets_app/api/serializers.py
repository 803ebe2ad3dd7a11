from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from datasets_app.models import Dataset, DatasetJob, Record, Snapshot
from datasets_app.selectors import dataset_latest_jobs


class DatasetJobSerializer(serializers.ModelSerializer):
    class Meta:
        model = DatasetJob
        fields = [
            "id",
            "kind",
            "status",
            "progress",
            "message",
            "error_message",
            "problems",
            "rows_done",
            "rows_per_second",
            "seconds_left",
            "attempts",
            "started_at",
            "finished_at",
        ]


class DatasetSerializer(serializers.ModelSerializer):
    latest_import = serializers.SerializerMethodField()
    # Records per label ('' for none), exact now (the row's counts plus labels given since).
    label_counts = serializers.DictField(child=serializers.IntegerField(), read_only=True)

    class Meta:
        model = Dataset
        fields = [
            "id",
            "name",
            "description",
            "status",
            "status_message",
            "source_filename",
            "source_size_bytes",
            "source_sha256",
            "detection",
            "mapping",
            "record_count",
            "label_counts",
            "split_counts",
            "licence",
            "attribution",
            "created_at",
            "latest_import",
        ]

    def get_latest_import(self, dataset: Dataset) -> dict | None:
        job = dataset.jobs.filter(kind=DatasetJob.Kind.IMPORT).order_by("-created_at").first()
        return DatasetJobSerializer(job).data if job else None


class LatestJobsSerializer(serializers.Serializer):
    """The latest job of each kind ("import", "report", "search_index", "split", "clean"), or
    null when the dataset never had one."""

    def get_fields(self):
        return {
            kind.value: DatasetJobSerializer(
                allow_null=True, read_only=True, help_text=f"The latest {kind.label.lower()} job."
            )
            for kind in DatasetJob.Kind
        }


class DatasetDetailSerializer(DatasetSerializer):
    latest_jobs = serializers.SerializerMethodField(
        help_text="Poll this for the progress of a split or cleaning fix started with POST."
    )

    class Meta(DatasetSerializer.Meta):
        fields = [*DatasetSerializer.Meta.fields, "quality_report", "latest_jobs"]

    @extend_schema_field(LatestJobsSerializer)
    def get_latest_jobs(self, dataset: Dataset) -> dict:
        return LatestJobsSerializer(dataset_latest_jobs(dataset)).data


class RecordSerializer(serializers.ModelSerializer):
    class Meta:
        model = Record
        fields = [
            "id",
            "source_row",
            "text",
            "original_text",
            "label",
            "original_label",
            "split",
            "external_id",
            "metadata",
            "flags",
            "is_excluded",
            "exclusion_reason",
        ]


class RecordPageSerializer(serializers.Serializer):
    """One page of GET .../records/ (keyset paging: pass next_after as ``after``)."""

    results = RecordSerializer(many=True)
    next_after = serializers.IntegerField(
        allow_null=True,
        help_text="Pass as 'after' for the next page; null on the last page.",
    )
    search_mode = serializers.ChoiceField(
        choices=["", "full_text", "substring"],
        allow_blank=True,
        help_text="How 'search' matched: 'full_text' (words, websearch syntax, once the "
        "import's word index is built), 'substring' (before that, or for a search with no "
        "words to look up), '' without a search.",
    )
    search_note = serializers.CharField(
        allow_blank=True, help_text="The same in a sentence, naming the search engine used."
    )


class SnapshotSerializer(serializers.ModelSerializer):
    has_train_split = serializers.BooleanField(
        read_only=True, help_text="Whether it has train records (only then can runs train on it)."
    )
    warnings = serializers.ListField(
        source="training_gaps",
        child=serializers.CharField(),
        read_only=True,
        help_text="What it lacks for training, in sentences; empty when nothing is missing.",
    )

    class Meta:
        model = Snapshot
        fields = [
            "id",
            "dataset",
            "number",
            "note",
            "record_count",
            "label_counts",
            "split_counts",
            "has_train_split",
            "warnings",
            "created_at",
        ]


class MappingSerializer(serializers.Serializer):
    text_columns = serializers.ListField(child=serializers.CharField(), min_length=1)
    text_separator = serializers.CharField(default="\n", trim_whitespace=False, allow_blank=True)
    label_column = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    split_column = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    id_column = serializers.CharField(required=False, allow_blank=True, allow_null=True)
