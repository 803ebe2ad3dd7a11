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

from models_app.api import deployments  # noqa: E402

urlpatterns += [
    path("deployments/", deployments.DeploymentListApi.as_view(), name="api_deployments"),
    path(
        "deployments/<slug:slug>/", deployments.DeploymentDetailApi.as_view(), name="api_deployment"
    ),
    path(
        "deployments/<slug:slug>/predict/",
        deployments.PredictApi.as_view(),
        name="api_deployment_predict",
    ),
    path(
        "prediction-tokens/", deployments.PredictionTokenApi.as_view(), name="api_prediction_tokens"
    ),
    path(
        "prediction-tokens/<id:token_id>/",
        deployments.PredictionTokenDetailApi.as_view(),
        name="api_prediction_token",
    ),
]
for _action in ("promote", "rollback", "stop", "start"):
    urlpatterns.append(
        path(
            f"deployments/<slug:slug>/{_action}/",
            deployments.DeploymentActionApi.as_view(action=_action),
            name=f"api_deployment_{_action}",
        )
    )

from models_app.api import registry  # noqa: E402

urlpatterns += [
    path(
        "model-versions/<id:version_id>/exports/",
        registry.VersionExportListApi.as_view(),
        name="api_model_version_exports",
    ),
    path(
        "model-versions/<id:version_id>/alias/",
        registry.VersionAliasApi.as_view(),
        name="api_model_version_alias",
    ),
    path(
        "model-versions/<id:version_id>/archive/",
        registry.VersionArchiveApi.as_view(),
        name="api_model_version_archive",
    ),
    path("model-aliases/", registry.ModelAliasListApi.as_view(), name="api_model_aliases"),
    path("exports/<id:export_id>/", registry.ExportDetailApi.as_view(), name="api_export"),
    path(
        "exports/<id:export_id>/download/",
        registry.ExportDownloadApi.as_view(),
        name="api_export_download",
    ),
]

from models_app.api import batch_predictions  # noqa: E402

urlpatterns += [
    path(
        "model-versions/<id:version_id>/batch-predictions/",
        batch_predictions.VersionBatchPredictionListApi.as_view(),
        name="api_model_version_batch_predictions",
    ),
    path(
        "batch-predictions/<id:batch_id>/",
        batch_predictions.BatchPredictionDetailApi.as_view(),
        name="api_batch_prediction",
    ),
    path(
        "batch-predictions/<id:batch_id>/cancel/",
        batch_predictions.BatchPredictionCancelApi.as_view(),
        name="api_batch_prediction_cancel",
    ),
    path(
        "batch-predictions/<id:batch_id>/download/",
        batch_predictions.BatchPredictionDownloadApi.as_view(),
        name="api_batch_prediction_download",
    ),
]

from models_app.api import mislabeled  # noqa: E402

urlpatterns += [
    path(
        "datasets/<id:dataset_id>/mislabeled-scans/",
        mislabeled.MislabeledScanListApi.as_view(),
        name="api_mislabeled_scans",
    ),
    path(
        "datasets/<id:dataset_id>/mislabeled-scans/<id:scan_id>/",
        mislabeled.MislabeledScanDetailApi.as_view(),
        name="api_mislabeled_scan",
    ),
    path(
        "datasets/<id:dataset_id>/mislabeled-scans/<id:scan_id>/cancel/",
        mislabeled.MislabeledScanCancelApi.as_view(),
        name="api_mislabeled_scan_cancel",
    ),
]
