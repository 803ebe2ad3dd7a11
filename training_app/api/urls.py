from django.urls import path

from training_app.api import retrain_views, search_views, views

urlpatterns = [
    path("runs/", views.RunListApi.as_view(), name="api_runs"),
    path("runs/estimate/", views.RunEstimateApi.as_view(), name="api_run_estimate"),
    path("runs/<id:run_id>/", views.RunDetailApi.as_view(), name="api_run"),
    path("runs/<id:run_id>/metrics/", views.RunMetricsApi.as_view(), name="api_run_metrics"),
    path("runs/<id:run_id>/cancel/", views.RunCancelApi.as_view(), name="api_run_cancel"),
    path("runs/<id:run_id>/resume/", views.RunResumeApi.as_view(), name="api_run_resume"),
    path("searches/", search_views.SearchListApi.as_view(), name="api_searches"),
    path("searches/<id:search_id>/", search_views.SearchDetailApi.as_view(), name="api_search"),
    path(
        "searches/<id:search_id>/cancel/",
        search_views.SearchCancelApi.as_view(),
        name="api_search_cancel",
    ),
    path(
        "datasets/<id:dataset_id>/pre-labels/",
        retrain_views.PreLabelApi.as_view(),
        name="api_dataset_pre_labels",
    ),
    path(
        "datasets/<id:dataset_id>/retrain/",
        retrain_views.RetrainLoopApi.as_view(),
        name="api_dataset_retrain",
    ),
    path("evaluations/", views.EvaluationListApi.as_view(), name="api_evaluations"),
    path(
        "evaluations/<id:evaluation_id>/",
        views.EvaluationDetailApi.as_view(),
        name="api_evaluation",
    ),
]
