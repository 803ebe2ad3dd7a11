from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, register_converter
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from lepton_web import views
from lepton_web.api import views as api_views
from lepton_web.converters import IdConverter

register_converter(IdConverter, "id")

api_v1 = [
    path("", api_views.ApiRootApi.as_view(), name="api_root"),
    path("me/", api_views.MeApi.as_view(), name="api_me"),
    path("health/", api_views.HealthApi.as_view(), name="api_health"),
    path("worker-checks/", api_views.WorkerCheckListApi.as_view(), name="api_worker_checks"),
    path(
        "worker-checks/<id:job_id>/",
        api_views.WorkerCheckDetailApi.as_view(),
        name="api_worker_check",
    ),
    path("", include("models_app.api.urls")),
    path("", include("datasets_app.api.urls")),
    path("", include("training_app.api.urls")),
]

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("dashboard/health/", views.dashboard_health, name="dashboard_health"),
    path("worker-checks/", views.worker_checks_start, name="worker_checks_start"),
    path("jobs/<str:label>/<id:job_id>/progress/", views.job_progress, name="job_progress"),
    path("healthz", views.healthz, name="healthz"),
    path("favicon.ico", views.favicon, name="favicon"),
    path(
        "login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("datasets/", include("datasets_app.urls")),
    path("training/", include("training_app.urls")),
    path("models/", include("models_app.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path(
        "api/docs/",
        # The docs page with a bar back to the console (drf-spectacular's page has no way back);
        # the split view serves its start-up script as a file (?script), so no inline script.
        SpectacularSwaggerSplitView.as_view(
            url_name="schema", template_name="lepton_web/api_docs.html"
        ),
        name="api_docs",
    ),
]

handler403 = "lepton_web.views.error_403"
handler404 = "lepton_web.views.error_404"
handler500 = "lepton_web.views.error_500"
