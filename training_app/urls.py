from django.urls import path

from training_app import retrain_views, search_views, views

app_name = "training"
urlpatterns = [
    path("", views.run_list, name="run_list"),
    path("compare/", views.run_compare, name="run_compare"),
    path("new/", views.run_create, name="run_create"),
    path("estimate/", views.run_estimate, name="run_estimate"),
    path("searches/", search_views.search_list, name="search_list"),
    path("searches/new/", search_views.search_create, name="search_create"),
    path("searches/<id:search_id>/", search_views.search_detail, name="search_detail"),
    path("searches/<id:search_id>/live/", search_views.search_live, name="search_live"),
    path("searches/<id:search_id>/cancel/", search_views.search_cancel, name="search_cancel"),
    path("loop/", retrain_views.retrain_loops_live, name="retrain_loops_live"),
    path("loop/<id:dataset_id>/", retrain_views.model_loop, name="model_loop"),
    path("loop/<id:dataset_id>/live/", retrain_views.model_loop_live, name="model_loop_live"),
    path(
        "loop/<id:dataset_id>/pre-label/",
        retrain_views.model_loop_prelabel,
        name="model_loop_prelabel",
    ),
    path(
        "loop/<id:dataset_id>/retrain/", retrain_views.model_loop_retrain, name="model_loop_retrain"
    ),
    path("<id:run_id>/", views.run_detail, name="run_detail"),
    path("<id:run_id>/live/", views.run_live, name="run_live"),
    path("<id:run_id>/events/", views.run_events_fragment, name="run_events"),
    path("<id:run_id>/cancel/", views.run_cancel, name="run_cancel"),
    path("<id:run_id>/resume/", views.run_resume, name="run_resume"),
    path(
        "model-versions/<id:version_id>/evaluations/",
        views.version_evaluations,
        name="version_evaluations",
    ),
]
