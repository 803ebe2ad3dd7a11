from django.urls import path

from models_app.api import views

urlpatterns = [
    path("base-models/", views.BaseModelListApi.as_view(), name="api_base_models"),
    path("model-versions/", views.ModelVersionListApi.as_view(), name="api_model_versions"),
    path(
        "model-versions/<id:version_id>/",
        views.ModelVersionDetailApi.as_view(),
        name="api_model_version",
    ),
    path(
        "model-versions/<id:version_id>/download/",
        views.ModelVersionDownloadApi.as_view(),
        name="api_model_version_download",
    ),
]
