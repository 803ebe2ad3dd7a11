from django.urls import path

from models_app import views

app_name = "models"
urlpatterns = [
    path("", views.model_list, name="model_list"),
    path("base-models/", views.base_model_create, name="base_model_create"),
    path("versions/<id:version_id>/", views.version_detail, name="version_detail"),
    path("versions/<id:version_id>/download/", views.version_download, name="version_download"),
    path("versions/<id:version_id>/deploy/", views.version_deploy, name="version_deploy"),
    path("versions/<id:version_id>/alias/", views.version_alias, name="version_alias"),
    path("versions/<id:version_id>/export/", views.version_export, name="version_export"),
    path("versions/<id:version_id>/archive/", views.version_archive, name="version_archive"),
    path("exports/<id:export_id>/download/", views.export_download, name="export_download"),
    path("deployments/", views.deployment_list, name="deployment_list"),
    path("deployments/tokens/", views.prediction_token_create, name="prediction_token_create"),
    path(
        "deployments/<slug:slug>/<str:action>/",
        views.deployment_action,
        name="deployment_action",
    ),
]
