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
    path("versions/<id:version_id>/delete/", views.version_delete, name="version_delete"),
    path("registered/<id:model_id>/aliases/", views.model_aliases, name="model_aliases"),
    path("exports/<id:export_id>/download/", views.export_download, name="export_download"),
    path("deployments/", views.deployment_list, name="deployment_list"),
    path("deployments/tokens/", views.prediction_token_create, name="prediction_token_create"),
    path(
        "deployments/tokens/<id:token_id>/revoke/",
        views.prediction_token_revoke,
        name="prediction_token_revoke",
    ),
    path(
        "deployments/<slug:slug>/<str:action>/",
        views.deployment_action,
        name="deployment_action",
    ),
]

from models_app import views_try  # noqa: E402

urlpatterns += [
    path("playground/", views_try.endpoint_playground, name="endpoint_playground"),
    path(
        "versions/<id:version_id>/playground/",
        views_try.version_playground,
        name="version_playground",
    ),
    path(
        "versions/<id:version_id>/batch-predictions/",
        views_try.version_batch_predictions,
        name="version_batch_predictions",
    ),
    path(
        "versions/<id:version_id>/batch-predictions/start/",
        views_try.version_batch_prediction_start,
        name="version_batch_prediction_start",
    ),
    path(
        "batch-predictions/<id:batch_id>/cancel/",
        views_try.batch_prediction_cancel,
        name="batch_prediction_cancel",
    ),
    path(
        "batch-predictions/<id:batch_id>/download/",
        views_try.batch_prediction_download,
        name="batch_prediction_download",
    ),
]

from models_app import views_mislabeled  # noqa: E402

urlpatterns += [
    path(
        "datasets/<id:dataset_id>/mislabeled/",
        views_mislabeled.dataset_mislabeled,
        name="dataset_mislabeled",
    ),
    path(
        "datasets/<id:dataset_id>/mislabeled/start/",
        views_mislabeled.dataset_mislabeled_start,
        name="dataset_mislabeled_start",
    ),
    path(
        "datasets/<id:dataset_id>/mislabeled/<id:scan_id>/cancel/",
        views_mislabeled.dataset_mislabeled_cancel,
        name="dataset_mislabeled_cancel",
    ),
]
