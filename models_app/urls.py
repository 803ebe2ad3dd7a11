from django.urls import path

from models_app import views

app_name = "models"
urlpatterns = [
    path("", views.model_list, name="model_list"),
    path("base-models/", views.base_model_create, name="base_model_create"),
    path("versions/<id:version_id>/", views.version_detail, name="version_detail"),
    path("versions/<id:version_id>/download/", views.version_download, name="version_download"),
    path("deployments/", views.deployment_list, name="deployment_list"),
]
