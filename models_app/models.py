from django.conf import settings
from django.db import models


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
