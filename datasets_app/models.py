from django.conf import settings
from django.contrib.postgres.search import SearchVectorField
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from lepton_web.jobs import Job

MAX_OVERLAP = 10


class LabelingOrder(models.TextChoices):
    FILE = "file", "File order"
    LEAST_CONFIDENCE = "least_confidence", "Least confident suggestion first"
    MARGIN = "margin", "Smallest margin first"
    ENTROPY = "entropy", "Highest entropy first"


class Dataset(models.Model):
    """An uploaded file and the records imported from it.

    The raw file is stored first, unchanged, with its checksum. Records become visible only
    when an import succeeds (``active_import``), so a failed or cancelled import never leaves
    half a dataset behind, and the mapping can be changed and the import retried without
    uploading again.
    """

    class Status(models.TextChoices):
        UPLOADED = "uploaded", "Uploaded"
        IMPORTING = "importing", "Importing"
        READY = "ready", "Ready"
        FAILED = "failed", "Import failed"

    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.UPLOADED)
    status_message = models.TextField(blank=True)
    source_file = models.FileField(upload_to="datasets/raw/%Y/%m/", max_length=500)
    source_filename = models.CharField(max_length=255)
    source_size_bytes = models.PositiveBigIntegerField(default=0)
    source_sha256 = models.CharField(max_length=64)
    # What the import found in the file (encoding, delimiter, header, columns, estimated rows).
    detection = models.JSONField(default=dict, blank=True)
    # How columns map to fields; see csv_io.ColumnMapping.
    mapping = models.JSONField(default=dict, blank=True)
    active_import = models.ForeignKey(
        "datasets_app.DatasetJob",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    record_count = models.PositiveIntegerField(default=0)
    # The label counts as the last import, split, fix or recount set them (under the dataset
    # lock). Labels given since then are counted in LabelCountShard rows, so that annotators
    # never write this row; ``label_counts`` adds the two up.
    label_counts_base = models.JSONField(default=dict, blank=True, db_column="label_counts")
    split_counts = models.JSONField(default=dict, blank=True)
    quality_report = models.JSONField(default=dict, blank=True)
    # The import whose records the full-text index covers (PostgreSQL). Search is full-text
    # when it equals active_import_id, and plain substring matching until then.
    search_import_id = models.BigIntegerField(null=True, blank=True)
    # The labels annotators choose from, in the order of their buttons (keys 1-9). Empty: the
    # labels the import found (see ``label_choices``).
    label_schema = models.JSONField(default=list, blank=True)
    # Records may carry several labels of the list, stored joined with "|" (the separator
    # multi-label training reads).
    label_multiple = models.BooleanField(default=False)
    # Overlap: how many annotators label each record in the queue (1: one label per record, the
    # label given is the record's label). Above 1 the record's label is the strict majority of
    # its annotations once this many exist; ties and disagreements go to the review queue.
    label_overlap = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(MAX_OVERLAP)]
    )
    # The order the queue hands records out in: the file's, or most uncertain suggestion first.
    labeling_order = models.CharField(
        max_length=20, choices=LabelingOrder.choices, default=LabelingOrder.FILE
    )
    licence = models.CharField(max_length=200, blank=True)
    attribution = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="datasets"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_ready(self) -> bool:
        return self.status == self.Status.READY

    @property
    def label_counts(self) -> dict[str, int]:
        """Records per label (not excluded; '' for none), exact now: the counts on this row
        plus the labels given since they were set (one query; see ``label_counts_now``)."""
        from datasets_app.services.label_counts import (
            KNOWN,
            SHARDS_ANNOTATION,
            label_counts_known,
            label_counts_now,
        )

        known = self.__dict__.get(KNOWN)
        if known is None and SHARDS_ANNOTATION in self.__dict__:
            # Read with the row (with_label_counts): the same snapshot, no query.
            label_counts_known(self, self.__dict__[SHARDS_ANNOTATION])
            known = self.__dict__[KNOWN]
        return dict(known) if known is not None else label_counts_now(self)

    def refresh_from_db(self, *args, **kwargs):
        from datasets_app.services.label_counts import KNOWN, SHARDS_ANNOTATION

        self.__dict__.pop(KNOWN, None)
        self.__dict__.pop(SHARDS_ANNOTATION, None)
        return super().refresh_from_db(*args, **kwargs)

    @property
    def unlabeled_count(self) -> int:
        """Records without a label (not excluded), from the kept counts."""
        return int((self.label_counts or {}).get("", 0))

    @property
    def labeling_totals(self) -> dict[str, int]:
        """Records counted (not excluded), labeled, unlabeled and the labeled percentage."""
        counts = self.label_counts
        total = sum(counts.values())
        unlabeled = int(counts.get("", 0))
        labeled = total - unlabeled
        percent = round(100 * labeled / total) if total else 0
        return {"total": total, "labeled": labeled, "unlabeled": unlabeled, "percent": percent}

    @property
    def label_choices(self) -> list[str]:
        """The labels offered in the labeling queue: the schema an analyst set, else the
        labels the records already have, by name."""
        if self.label_schema:
            return list(self.label_schema)
        return sorted(label for label in (self.label_counts or {}) if label)


class DatasetJob(Job):
    """Background work on a dataset: an import of its file, a quality report, its search index,
    a split, or a cleaning fix."""

    access_resource = "dataset"
    max_attempts = 2
    task_name = "datasets_app.tasks.dataset_job_execute_task"

    class Kind(models.TextChoices):
        IMPORT = "import", "Import"
        REPORT = "report", "Quality report"
        SEARCH_INDEX = "search_index", "Search index"
        SPLIT = "split", "Split"
        CLEAN = "clean", "Cleaning fix"
        # The first count of a large dataset's agreement figures (services.agreement).
        AGREEMENT = "agreement", "Agreement count"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # The job's parameters: an import's column mapping; a split's {"mode", "ratios", "seed"};
    # a cleaning fix's {"kind"}. (Named for the first kind of job, imports.)
    mapping = models.JSONField(default=dict, blank=True)
    rows_done = models.PositiveIntegerField(default=0)
    rows_per_second = models.FloatField(null=True, blank=True)
    seconds_left = models.FloatField(null=True, blank=True)
    # Up to 20 problems: {"line": int | None, "column": str | None, "message": str}.
    problems = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="dataset_jobs",
    )

    class Meta(Job.Meta):
        ordering = ["-created_at"]
        constraints = [
            *Job.Meta.constraints,
            # Two pages opened at once start one agreement count, not two.
            models.UniqueConstraint(
                fields=["dataset"],
                condition=Q(kind="agreement", status__in=["queued", "running"]),
                name="datasetjob_one_active_agreement_count",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of {self.dataset.name}"

    @property
    def verbose_kind(self) -> str:
        return {
            self.Kind.IMPORT: "import",
            self.Kind.SEARCH_INDEX: "search index",
            self.Kind.SPLIT: "split",
            self.Kind.CLEAN: "cleaning fix",
            self.Kind.AGREEMENT: "agreement count",
        }.get(self.kind, "quality report")

    def abandoned_note(self) -> str:
        # Imports drop what they staged; splits and fixes write in one transaction.
        if self.kind == self.Kind.IMPORT:
            return "Nothing was imported; start the import again to retry."
        if self.kind in (self.Kind.SPLIT, self.Kind.CLEAN):
            return "Nothing was changed; start it again to retry."
        if self.kind == self.Kind.AGREEMENT:
            return "Open the agreement page and press Count again to retry."
        return super().abandoned_note()

    def recover(self) -> str:
        """After the sweeper's verdict, an import that will not run again releases its dataset."""
        from datasets_app.services.imports import dataset_import_abandoned

        outcome = super().recover()
        if outcome == "failed" and self.kind == self.Kind.IMPORT:
            dataset_import_abandoned(job=self)
        return outcome


# Record ids are handed out in blocks: the id sequence steps by this much on PostgreSQL
# (migration 0006), and an import takes one block per chunk of rows with one nextval call.
RECORD_ID_BLOCK = 1 << 16


class Record(models.Model):
    """One row of a dataset. Cleaning never deletes: it excludes, or edits keeping the original."""

    # No single-column FK indexes: (import_run, id) serves every read, and each extra index
    # is paid on every row of every import.
    dataset = models.ForeignKey(
        Dataset, on_delete=models.CASCADE, related_name="records", db_index=False
    )
    import_run = models.ForeignKey(
        DatasetJob, on_delete=models.CASCADE, related_name="records", db_index=False
    )
    source_row = models.PositiveIntegerField(help_text="1-based row number in the file.")
    text = models.TextField()
    original_text = models.TextField(null=True, blank=True)  # noqa: DJ001 NULL = never edited
    label = models.CharField(max_length=500, blank=True)
    original_label = models.CharField(max_length=500, null=True, blank=True)  # noqa: DJ001 NULL = never edited
    split = models.CharField(max_length=16, blank=True)
    # The split the file gave, kept so "use the file's split" works after a random split.
    file_split = models.CharField(max_length=16, blank=True)
    external_id = models.CharField(max_length=255, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # Comma-wrapped tokens (",empty,truncated,") so any database can filter with LIKE.
    flags = models.CharField(max_length=200, blank=True)
    is_excluded = models.BooleanField(default=False)
    exclusion_reason = models.CharField(max_length=200, blank=True)
    # Annotations given in the queue and not undone (see Annotation); the queue hands a record
    # out while fewer than the dataset's overlap exist.
    # db_default: imports COPY rows without this column.
    annotation_count = models.PositiveSmallIntegerField(default=0, db_default=0)

    class Meta:
        indexes = [
            models.Index(fields=["import_run", "id"], name="record_run_id"),
            models.Index(fields=["import_run", "label", "id"], name="record_run_label_id"),
            # The labeling queue's walk in file order: only records still without a label, so
            # it never steps over the labeled ones (the primary key would, by the thousand).
            models.Index(
                fields=["import_run", "id"],
                name="record_run_unlabeled",
                condition=Q(label="", is_excluded=False),
            ),
            # Pages filtered by a flag, excluded or edited records: few rows of a large import,
            # which a keyset walk of (import_run, id) would have to scan for. Imports add
            # entries only for their empty or cut texts.
            models.Index(
                fields=["import_run", "id"],
                name="record_run_noteworthy",
                condition=~Q(flags="")
                | Q(is_excluded=True)
                | Q(original_text__isnull=False)
                | Q(original_label__isnull=False),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(split__in=["", "train", "validation", "test"]),
                name="record_split_valid",
            )
        ]

    def __str__(self) -> str:
        return f"{self.dataset_id}:{self.source_row}"


class RecordSearch(models.Model):
    """The full-text index of records (PostgreSQL only; the table is made by migration 0005).

    A side table filled by a job after an import commits, not an index on the records table:
    computing and indexing the words of a million texts is most of the work of an import, and
    records are browsable and filterable without it. Rows are keyed by record and deleted with
    them (``records_delete``); cleaning fixes that edit texts refresh theirs.
    """

    record = models.OneToOneField(
        Record, primary_key=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    import_run_id = models.BigIntegerField()
    vector = SearchVectorField()

    class Meta:
        managed = False
        db_table = "datasets_app_recordsearch"

    def __str__(self) -> str:
        return str(self.record_id)


class CleaningAction(models.Model):
    """One applied fix; its changes keep the previous values so the fix can be undone."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="cleaning_actions")
    kind = models.CharField(max_length=40)
    description = models.CharField(max_length=300)
    affected_count = models.PositiveIntegerField(default=0)
    undone_at = models.DateTimeField(null=True, blank=True)
    # Set when an import replaced the records this fix changed: it can no longer be undone,
    # and was not undone either.
    superseded_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.description


class CleaningChange(models.Model):
    action = models.ForeignKey(CleaningAction, on_delete=models.CASCADE, related_name="changes")
    # DO_NOTHING lets Django delete a million records with one DELETE instead of loading them
    # to cascade; records_delete() removes their changes first, and the deferred foreign key
    # still rejects any change left pointing at a deleted record.
    record = models.ForeignKey(Record, on_delete=models.DO_NOTHING, related_name="+")
    old_text = models.TextField()
    old_label = models.CharField(max_length=500, blank=True)
    old_is_excluded = models.BooleanField()
    old_exclusion_reason = models.CharField(max_length=200, blank=True)

    def __str__(self) -> str:
        return f"{self.action_id}:{self.record_id}"


class BulkLabel(models.Model):
    """One label given at once to every record a records-page filter matched. Its changes
    are the LabelChange rows pointing at it; it can be undone, as cleaning fixes can."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="bulk_labels")
    label = models.CharField(max_length=500)
    filters = models.JSONField(default=dict, blank=True)
    changed_count = models.PositiveIntegerField(default=0)
    undone_at = models.DateTimeField(null=True, blank=True)
    undone_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # How many records the undo gave their earlier label back (the rest were relabeled since).
    restored_count = models.PositiveIntegerField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.changed_count} records labeled {self.label!r}"


class LabelChange(models.Model):
    """One label given in the labeling queue: by whom, when, and the label it replaced."""

    # No index of its own: (dataset, ...) indexes below serve it.
    dataset = models.ForeignKey(
        Dataset, on_delete=models.CASCADE, related_name="label_changes", db_index=False
    )
    # Removed with their records by records_delete(), like cleaning changes.
    record = models.ForeignKey(Record, on_delete=models.DO_NOTHING, related_name="+")
    old_label = models.CharField(max_length=500, blank=True)
    new_label = models.CharField(max_length=500)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Set when the label was given to many records at once (records page, "Label them").
    # Indexed only where set (labelchange_bulk_label): the queue's labels have none.
    bulk_label = models.ForeignKey(
        BulkLabel,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="changes",
        db_index=False,
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["dataset", "user", "-created_at"], name="labelchange_user_recent"),
            # The labels ever given or replaced in a dataset (the labels offered without a label
            # list): one index step per distinct label, not a read of the whole log.
            models.Index(fields=["dataset", "new_label"], name="labelchange_dataset_new"),
            models.Index(fields=["dataset", "old_label"], name="labelchange_dataset_old"),
            models.Index(
                fields=["bulk_label"],
                condition=Q(bulk_label__isnull=False),
                name="labelchange_bulk_label",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.record_id}: {self.old_label!r} -> {self.new_label!r}"


class LabelCountShard(models.Model):
    """Label count changes made by labeling since the dataset's counts were last set: per
    dataset, import and shard (the labeling user's id modulo SHARDS), label -> change. An
    annotator's label adds to their own shard's row while it holds the dataset row FOR SHARE,
    so annotators never wait on each other's counts, and whoever sets the dataset's counts
    (holding the row exclusively) removes these rows in the same transaction."""

    SHARDS = 16

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="+")
    import_run_id = models.BigIntegerField()
    shard = models.PositiveSmallIntegerField()
    counts = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["dataset", "import_run_id", "shard"], name="labelcountshard_unique"
            )
        ]

    def __str__(self) -> str:
        return f"dataset {self.dataset_id} import {self.import_run_id} shard {self.shard}"


class LabelClaim(models.Model):
    """A record the queue is showing to an annotator, held for them a few minutes so that no
    more people than the dataset's overlap work on one record at once (one, by default). One
    per user and dataset; an expired claim is free for anyone."""

    # No single-column indexes: every hand-out deletes and inserts claims, and the indexes
    # below (record, user) and (dataset, ...) answer every lookup; the table stays small, so a
    # deleted user's claims are found by a scan.
    record = models.ForeignKey(
        Record, on_delete=models.DO_NOTHING, related_name="+", db_index=False
    )
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="+", db_index=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["dataset", "expires_at"], name="labelclaim_dataset_expiry"),
            models.Index(fields=["dataset", "user"], name="labelclaim_dataset_user"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["record", "user"], name="labelclaim_record_user")
        ]

    def __str__(self) -> str:
        return f"{self.record_id} held by {self.user_id}"


class Annotation(models.Model):
    """One annotator's label for one record, given in the labeling queue: one row per record and
    person (labeling it again replaces the label). The record's label is resolved from these:
    with overlap 1 the label given; above 1 the strict majority once ``label_overlap`` exist."""

    # No single-column indexes for dataset and record: (dataset, user, ...) and the unique
    # (record, user) answer those lookups, and each label writes one index entry less apiece.
    dataset = models.ForeignKey(
        Dataset, on_delete=models.CASCADE, related_name="annotations", db_index=False
    )
    # Removed with their records by records_delete(), like label changes.
    record = models.ForeignKey(
        Record, on_delete=models.DO_NOTHING, related_name="+", db_index=False
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    label = models.CharField(max_length=500)
    # Milliseconds the annotator spent on the record, as the page measured it (None: unknown).
    time_spent_ms = models.PositiveIntegerField(null=True, blank=True)
    # The model suggestion shown with the record ("" = none), its probability, and whether the
    # annotator accepted it (None: no suggestion was shown; False: they chose another label).
    suggestion_label = models.CharField(max_length=500, blank=True)
    suggestion_probability = models.FloatField(null=True, blank=True)
    suggestion_accepted = models.BooleanField(null=True, blank=True)
    # The page's idempotency key: a retried submission with the same key is applied once.
    client_key = models.CharField(max_length=64, blank=True)
    # Undo marks the annotation instead of deleting it; undone ones do not count.
    undone_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["record", "created_at", "id"]
        indexes = [
            models.Index(fields=["dataset", "user", "created_at"], name="annotation_user_time"),
            # The queue's "back" link and today's count: a person's latest annotation.
            models.Index(
                fields=["dataset", "user", "-updated_at", "-id"], name="annotation_user_recent"
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["record", "user"], name="annotation_record_user"),
            models.UniqueConstraint(
                fields=["user", "client_key"],
                condition=~Q(client_key=""),
                name="annotation_client_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.record_id} by {self.user_id}: {self.label!r}"

    @property
    def suggestion_shown(self) -> bool:
        return bool(self.suggestion_label)


class ReviewItem(models.Model):
    """A record an analyst should look at: its annotators disagree, or a model believes its
    label is wrong. Adjudicating sets the record's label (logged as a LabelChange) and closes
    every open item of the record."""

    class Reason(models.TextChoices):
        DISAGREEMENT = "disagreement", "Annotators disagree"
        LIKELY_MISLABELED = "likely_mislabeled", "Likely mislabeled"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        RESOLVED = "resolved", "Resolved"
        DISMISSED = "dismissed", "Dismissed"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="review_items")
    # Removed with their records by records_delete().
    record = models.ForeignKey(Record, on_delete=models.DO_NOTHING, related_name="+")
    reason = models.CharField(max_length=20, choices=Reason.choices)
    suggested_label = models.CharField(max_length=500, blank=True)
    # Why, for the page: e.g. {"probability": 0.97, "source": "..."} or the annotation counts.
    detail = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    resolved_label = models.CharField(max_length=500, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["dataset", "status", "id"], name="reviewitem_dataset_status"),
            models.Index(fields=["record"], name="reviewitem_record"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["record", "reason"],
                condition=Q(status="open"),
                name="reviewitem_open_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.record_id}: {self.reason} ({self.status})"


class DatasetAssignment(models.Model):
    """An annotator assigned to a dataset by an analyst. A dataset with assignments is shown to
    (and labeled by) only its assigned annotators; one without any is open to every annotator,
    as before assignments existed. Analysts and admins see every dataset."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="assignments")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="dataset_assignments"
    )
    assigned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset", "user"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "user"], name="assignment_dataset_user")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} on {self.dataset_id}"


TRAINING_SPLITS = ("train", "validation", "test")


class Snapshot(models.Model):
    """An immutable, numbered version of a dataset: which records, their text, label and split."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="snapshots")
    number = models.PositiveIntegerField()
    note = models.CharField(max_length=300, blank=True)
    record_count = models.PositiveIntegerField(default=0)
    label_counts = models.JSONField(default=dict, blank=True)
    split_counts = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["dataset", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "number"], name="snapshot_number_unique")
        ]

    def __str__(self) -> str:
        return f"{self.dataset.name} v{self.number}"

    @property
    def has_labels(self) -> bool:
        return bool({k for k in self.label_counts if k})

    @property
    def has_train_split(self) -> bool:
        """Whether it has train records: only then is it offered to train on."""
        return bool((self.split_counts or {}).get("train"))

    @property
    def training_gaps(self) -> list[str]:
        """What this snapshot lacks for training, in sentences (none: nothing is missing)."""
        splits = self.split_counts or {}
        gaps = []
        missing = [name for name in TRAINING_SPLITS if not splits.get(name)]
        if len(missing) == len(TRAINING_SPLITS):
            none = (
                "Its record has no split"
                if self.record_count == 1
                else f"None of its {self.record_count:,} records has a split"
            )
            gaps.append(
                f"{none} yet, so it cannot be trained on. Assign splits on the dataset, then "
                "take a new snapshot."
            )
        elif missing:
            named = " or ".join(missing)
            gaps.append(
                f"It has no {named} records, so it cannot be trained on (training needs train, "
                "validation and test). Assign splits on the dataset, then take a new snapshot."
            )
        elif splits.get(""):
            count = splits[""]
            noun = "record has" if count == 1 else "records have"
            gaps.append(f"{count:,} {noun} no split; training leaves them out.")
        if self.record_count and not self.has_labels:
            gaps.append("No record has a label yet: label the records before training on them.")
        return gaps


class SnapshotRecord(models.Model):
    snapshot = models.ForeignKey(Snapshot, on_delete=models.CASCADE, related_name="records")
    record_id = models.BigIntegerField()
    source_row = models.PositiveIntegerField()
    text = models.TextField()
    label = models.CharField(max_length=500, blank=True)
    split = models.CharField(max_length=16, blank=True)

    class Meta:
        indexes = [models.Index(fields=["snapshot", "split", "id"], name="snaprec_snap_split_id")]

    def __str__(self) -> str:
        return f"{self.snapshot_id}:{self.record_id}"


class RecordSuggestion(models.Model):
    """A model's suggested label for a record (batch prediction), for the labeling queue.

    One per record and source: storing a source's predictions again overwrites them."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="suggestions")
    record = models.ForeignKey(Record, on_delete=models.CASCADE, related_name="suggestions")
    label = models.CharField(max_length=500)
    probability = models.FloatField(null=True, blank=True)
    # Uncertainty figures for ordering a queue (single-label models; null otherwise). Least
    # confidence is 1 - probability; margin is top-1 minus top-2 probability; entropy is the
    # Shannon entropy of the class probabilities in nats.
    margin = models.FloatField(null=True, blank=True)
    entropy = models.FloatField(null=True, blank=True)
    # What made it, e.g. "sentiment v3 (batch prediction 12)"; free text so datasets_app needs
    # nothing from models_app.
    source = models.CharField(max_length=200)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["record", "-probability"]
        indexes = [
            models.Index(fields=["dataset", "source"], name="suggestion_dataset_source"),
            # Uncertainty-first queues walk these, most uncertain first (see LabelingOrder).
            models.Index(fields=["dataset", "probability", "record"], name="suggestion_least_conf"),
            models.Index(fields=["dataset", "margin", "record"], name="suggestion_margin"),
            models.Index(fields=["dataset", "-entropy", "record"], name="suggestion_entropy"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["record", "source"], name="suggestion_unique"),
            models.CheckConstraint(
                condition=Q(probability__isnull=True) | Q(probability__gte=0, probability__lte=1),
                name="suggestion_probability_0_1",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.record_id}: {self.label} ({self.source})"


class AgreementCounts(models.Model):
    """The count tables behind a dataset's agreement page (a few hundred rows however many
    annotations), kept with the change stamp of the annotations and records they were counted
    from: the page counts again only when the stamp differs (services.agreement)."""

    dataset = models.OneToOneField(
        Dataset, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    stamp = models.CharField(max_length=500)
    counts = models.JSONField(default=dict)
    computed_at = models.DateTimeField()
    seconds = models.FloatField(default=0.0)
    # Set while a worker counts them again (a large dataset's page shows these meanwhile).
    recount_started_at = models.DateTimeField(null=True, blank=True)
    # When the stamp was read, and the latest annotation change it saw: see
    # services.agreement._settled.
    stamp_read_at = models.DateTimeField(null=True, blank=True)
    latest_change = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"agreement counts of dataset {self.dataset_id} at {self.computed_at}"
