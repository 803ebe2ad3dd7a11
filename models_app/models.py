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
