from django.apps import AppConfig


class ModelsAppConfig(AppConfig):
    name = "models_app"
    verbose_name = "Model registry"

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from models_app.exports import model_export_file_release
        from models_app.models import ModelExport

        # An export's file goes when its row does (and no other row names it).
        post_delete.connect(
            model_export_file_release, sender=ModelExport, dispatch_uid="model-export-file-release"
        )
