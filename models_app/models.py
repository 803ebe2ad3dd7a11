from django.conf import settings
from django.db import models

from lepton_web.jobs import Job


class BaseModel(models.Model):
    """A pretrained model that runs can start from: the base-model catalogue."""

    class Source(models.TextChoices):
        BUNDLED = "bundled", "Bundled with the console"
        LOCAL = "local", "Folder on the server"
        HUB = "hub", "Hugging Face Hub id"
        UPLOAD = "upload", "Uploaded folder"

    name = models.CharField(max_length=200, unique=True)
    source = models.CharField(max_length=16, choices=Source.choices)
    location = models.CharField(
        max_length=500, help_text="Folder path for bundled/local/upload, or the hub id."
    )
    architecture = models.CharField(max_length=100, blank=True)
    parameter_count = models.PositiveBigIntegerField(null=True, blank=True)
    description = models.TextField(blank=True)
    licence = models.CharField(max_length=200, blank=True)
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-is_default", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=models.Q(is_default=True),
                name="models_app_one_default_base_model",
            )
        ]

    def __str__(self) -> str:
        return self.name


class RegisteredModel(models.Model):
    """A named model in the registry (after MLflow); its versions are trained networks."""

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.SET_NULL,
        related_name="registered_models",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    registered_model = models.ForeignKey(
        RegisteredModel, on_delete=models.CASCADE, related_name="versions"
    )
    version = models.PositiveIntegerField()
    # Lazy reference: the registry and serving stand alone without training_app.
    training_run = models.OneToOneField(
        "training_app.TrainingRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="model_version",
    )
    snapshot = models.ForeignKey(
        "datasets_app.Snapshot",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="model_versions",
    )
    base_model = models.ForeignKey(
        BaseModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="model_versions"
    )
    task = models.CharField(max_length=20)
    method = models.CharField(max_length=20, blank=True)
    label_names = models.JSONField(default=list, blank=True)
    hyperparameters = models.JSONField(default=dict, blank=True)
    test_metrics = models.JSONField(default=dict, blank=True)
    artifact_uri = models.CharField(
        max_length=500, help_text="Storage prefix of the Hugging Face folder."
    )
    artifact_files = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    status_message = models.TextField(blank=True)
    validation_metrics = models.JSONField(default=dict, blank=True)
    is_archived = models.BooleanField(default=False)
    archived_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["registered_model", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["registered_model", "version"], name="model_version_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.registered_model.name} v{self.version}"


class ModelAlias(models.Model):
    """A movable name (production, staging, ...) for one version of a registered model."""

    registered_model = models.ForeignKey(
        RegisteredModel, on_delete=models.CASCADE, related_name="aliases"
    )
    name = models.SlugField(max_length=60)
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="aliases")
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["registered_model", "name"]
        constraints = [
            models.UniqueConstraint(fields=["registered_model", "name"], name="model_alias_unique")
        ]

    def __str__(self) -> str:
        return f"{self.registered_model.name}@{self.name}"


class ModelAliasEvent(models.Model):
    """History of an alias: who moved it, when, from which version to which."""

    registered_model = models.ForeignKey(
        RegisteredModel, on_delete=models.CASCADE, related_name="alias_events"
    )
    name = models.CharField(max_length=60)
    from_version = models.ForeignKey(
        ModelVersion, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    to_version = models.ForeignKey(
        ModelVersion, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name}: {self.from_version_id} -> {self.to_version_id}"


class ModelExport(Job):
    """An ONNX export of a version (fp32 or int8) with its parity check against PyTorch."""

    task_name = "models_app.tasks.model_export_execute_task"
    access_resource = "model_version"
    verbose_kind = "export"

    class Kind(models.TextChoices):
        ONNX_FP32 = "onnx-fp32", "ONNX fp32"
        ONNX_INT8 = "onnx-int8", "ONNX int8"

    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="exports"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    file_path = models.CharField(max_length=500, blank=True, help_text="Storage name of the .onnx.")
    size_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    agreement = models.FloatField(
        null=True, blank=True, help_text="Label agreement with PyTorch, 0-1."
    )
    max_abs_logit_delta = models.FloatField(null=True, blank=True)
    parity_examples = models.PositiveIntegerField(default=0)
    details = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta(Job.Meta):
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} export of {self.model_version}"

    @property
    def passed_parity(self) -> bool:
        from django.conf import settings as django_settings

        return (
            self.status == "succeeded"
            and self.agreement is not None
            and self.agreement >= django_settings.SERVE_PARITY_MIN_AGREEMENT
        )


class Deployment(models.Model):
    """A live endpoint: a slug that serves one model version with one runtime."""

    class Runtime(models.TextChoices):
        ONNX_INT8 = "onnx-int8", "ONNX int8"
        ONNX_FP32 = "onnx-fp32", "ONNX fp32"
        PYTORCH = "pytorch", "PyTorch"

    class Status(models.TextChoices):
        LIVE = "live", "Live"
        STOPPED = "stopped", "Stopped"
        FAILED = "failed", "Failed"

    slug = models.SlugField(max_length=60, unique=True)
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="deployments")
    runtime = models.CharField(max_length=16, choices=Runtime.choices)
    export = models.ForeignKey(
        ModelExport, null=True, blank=True, on_delete=models.PROTECT, related_name="deployments"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.LIVE)
    status_message = models.TextField(blank=True)
    follow_alias = models.SlugField(max_length=60, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class DeploymentEvent(models.Model):
    """History of an endpoint: deploy, promote, rollback, stop, start (who, when, from, to)."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="events")
    action = models.CharField(max_length=20)
    from_version = models.ForeignKey(
        ModelVersion, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    to_version = models.ForeignKey(
        ModelVersion, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    from_runtime = models.CharField(max_length=16, blank=True)
    to_runtime = models.CharField(max_length=16, blank=True)
    message = models.CharField(max_length=300, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.deployment_id} {self.action}"


class DeploymentMinute(models.Model):
    """Requests, errors and a latency histogram of one endpoint in one minute (for the charts)."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="minutes")
    minute = models.DateTimeField()
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    texts = models.PositiveIntegerField(default=0)
    latency_buckets = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["deployment", "minute"]
        constraints = [
            models.UniqueConstraint(
                fields=["deployment", "minute"], name="deployment_minute_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.deployment_id}@{self.minute:%H:%M} {self.requests}"


class PredictionToken(models.Model):
    """An application's token that may only call predict on chosen endpoints (no user rights).

    Only a SHA-256 of the key is stored; the key is shown once when the token is created."""

    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=12)
    deployments = models.ManyToManyField(Deployment, related_name="prediction_tokens", blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class PredictionLog(models.Model):
    """Inputs and outputs of predict calls, kept only when SERVE_LOG_PREDICTIONS is on."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="logs")
    version = models.ForeignKey(
        ModelVersion, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    text = models.TextField()
    result = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.deployment_id}: {self.text[:40]}"


class BatchPrediction(Job):
    """Predictions for many texts at once (a snapshot's split or an uploaded file) as a file."""

    task_name = "models_app.tasks.batch_prediction_execute_task"
    access_resource = "model_version"
    verbose_kind = "batch prediction"

    class Source(models.TextChoices):
        SNAPSHOT = "snapshot", "Snapshot"
        UPLOAD = "upload", "Uploaded file"
        UNLABELED = "unlabeled", "Unlabeled records of a dataset"

    class Format(models.TextChoices):
        CSV = "csv", "CSV"
        JSONL = "jsonl", "JSON Lines"

    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="batch_predictions"
    )
    source = models.CharField(max_length=16, choices=Source.choices)
    snapshot = models.ForeignKey(
        "datasets_app.Snapshot",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="batch_predictions",
    )
    split = models.CharField(max_length=16, blank=True, help_text="Empty: every split.")
    # Source "unlabeled": the dataset whose unlabeled records are pre-labeled.
    dataset = models.ForeignKey(
        "datasets_app.Dataset",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="batch_predictions",
    )
    # The endpoint it was asked through (its version and runtime at the start), if any.
    deployment = models.ForeignKey(
        Deployment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    runtime = models.CharField(
        max_length=16, blank=True, help_text="The runtime that made the predictions."
    )
    input_file = models.FileField(upload_to="predictions/inputs/%Y/%m/", max_length=500, blank=True)
    input_filename = models.CharField(max_length=255, blank=True)
    text_column = models.CharField(max_length=200, blank=True)
    label_column = models.CharField(max_length=200, blank=True)
    output_format = models.CharField(max_length=8, choices=Format.choices, default=Format.CSV)
    output_file = models.CharField(max_length=500, blank=True, help_text="Storage name.")
    rows_total = models.PositiveIntegerField(default=0)
    rows_done = models.PositiveIntegerField(default=0)
    summary = models.JSONField(default=dict, blank=True)
    store_suggestions = models.BooleanField(default=False)
    suggestions_stored = models.PositiveIntegerField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta(Job.Meta):
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Batch prediction {self.pk} with {self.model_version}"


class MislabeledScan(Job):
    """A likely-mislabeled scan of a dataset's labeled records (models_app/mislabeled.py): out-
    of-fold probabilities from sentence embeddings and a linear model, then confident learning.
    Its flags are review items (reason "likely_mislabeled") whose detail names this scan."""

    task_name = "models_app.tasks.mislabeled_scan_execute_task"
    access_resource = "dataset"
    verbose_kind = "likely-mislabeled scan"
    # Nothing is written before the end, so a rerun starts over; twice is enough.
    max_attempts = 2

    dataset = models.ForeignKey(
        "datasets_app.Dataset", on_delete=models.CASCADE, related_name="mislabeled_scans"
    )
    base_model = models.ForeignKey(
        BaseModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    folds = models.PositiveSmallIntegerField(default=5)
    seed = models.PositiveIntegerField(default=0)
    filter_by = models.CharField(max_length=32, default="low_self_confidence")
    records_total = models.PositiveIntegerField(default=0)
    records_done = models.PositiveIntegerField(default=0)
    flagged_count = models.PositiveIntegerField(null=True, blank=True)
    # Figures for the page: out-of-fold accuracy, the baseline's flag count, labels left out,
    # seconds per step.
    summary = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta(Job.Meta):
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Likely-mislabeled scan {self.pk} of {self.dataset}"
