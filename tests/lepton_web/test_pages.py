"""Pages users touch: login and logout, expired sessions under htmx, the dashboard, job progress,
and the JSON answers of the API for anonymous callers and unknown addresses."""

import pytest
from django.contrib.sessions.models import Session

from lepton_web.models import WorkerCheck

PASSWORD = "correct horse battery staple"  # what tests.factories.UserFactory sets
WRONG_LOGIN = (
    "Please enter a correct username and password. Note that both fields may be case-sensitive."
)
CHECK_WORKERS_BUTTON = '<button class="btn" type="submit">Check workers</button>'
HEALTH_TILES = (
    'data-testid="health-database"',
    'data-testid="health-broker"',
    'data-testid="health-queue-default"',
    'data-testid="health-queue-gpu"',
)


def progress_url(job: WorkerCheck) -> str:
    return f"/jobs/lepton_web.workercheck/{job.pk}/progress/"


# --- login and logout -------------------------------------------------------------------------
def test_login_page_renders_the_form(client, db):
    response = client.get("/login/")

    assert response.status_code == 200
    assert [t.name for t in response.templates] == ["registration/login.html"]
    content = response.content.decode()
    assert 'name="username" id="id_username"' in content
    assert 'name="password" id="id_password"' in content


def test_wrong_password_shows_the_form_error_and_logs_nobody_in(client, make_user):
    make_user("analyst", username="ana")

    response = client.post("/login/", {"username": "ana", "password": "not it"})

    assert response.status_code == 200
    assert [t.name for t in response.templates] == ["registration/login.html"]
    assert f'<div class="flash flash-error" role="alert">{WRONG_LOGIN}</div>' in (
        response.content.decode()
    )
    assert "_auth_user_id" not in client.session


def test_correct_password_logs_in_and_redirects_to_the_dashboard(client, make_user):
    user = make_user("analyst", username="ana")

    response = client.post("/login/", {"username": "ana", "password": PASSWORD})

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.session["_auth_user_id"] == str(user.pk)


def test_login_returns_to_the_page_named_in_next(client, make_user):
    make_user("analyst", username="ana")

    response = client.post(
        "/login/", {"username": "ana", "password": PASSWORD, "next": "/training/"}
    )

    assert response.status_code == 302
    assert response["Location"] == "/training/"


def test_logout_by_get_is_refused_and_keeps_the_session(client_as):
    client = client_as("analyst")
    user_id = client.session["_auth_user_id"]

    response = client.get("/logout/")

    assert response.status_code == 405
    assert client.session["_auth_user_id"] == user_id


def test_logout_by_post_ends_the_session(client_as):
    client = client_as("analyst")

    response = client.post("/logout/")

    assert response.status_code == 302
    assert response["Location"] == "/login/"
    assert "_auth_user_id" not in client.session
    assert client.get("/")["Location"] == "/login/?next=/"


# --- expired sessions under htmx -------------------------------------------------------------------
def test_htmx_request_with_an_expired_session_gets_hx_redirect_to_login(client_as):
    client = client_as("analyst")
    job = WorkerCheck.objects.create()
    Session.objects.all().delete()

    response = client.get(progress_url(job), headers={"HX-Request": "true"})

    assert response.status_code == 200
    assert (
        response["HX-Redirect"] == f"/login/?next=/jobs/lepton_web.workercheck/{job.pk}/progress/"
    )
    assert response.content == b""


def test_htmx_request_without_a_session_is_sent_back_to_the_page_it_came_from(client, db):
    response = client.get(
        "/dashboard/health/",
        headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/datasets/?page=2"},
    )

    assert response.status_code == 200
    assert response["HX-Redirect"] == "/login/?next=http%3A//testserver/datasets/%3Fpage%3D2"


def test_plain_request_without_a_session_is_redirected_not_hx_redirected(client, db):
    response = client.get("/dashboard/health/")

    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/dashboard/health/"
    assert "HX-Redirect" not in response


# --- API answers in JSON -----------------------------------------------------------------------------
def test_anonymous_api_request_gets_json_401_not_a_login_redirect(client, db):
    response = client.get("/api/v1/base-models/")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json() == {
        "detail": "Authentication credentials were not provided.",
        "errors": {},
    }


def test_unknown_api_address_gets_json_404(client, db):
    response = client.get("/api/v1/no-such-thing/")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "errors": {}}


def test_unknown_page_address_gets_the_html_404_page(client_as):
    response = client_as("analyst").get("/no-such-page/")

    assert response.status_code == 404
    assert [t.name for t in response.templates] == ["404.html"]


def test_worker_check_id_of_25_digits_gets_json_404_not_500(api_client_as):
    response = api_client_as("analyst").get(f"/api/v1/worker-checks/{'9' * 25}/")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "errors": {}}


def test_missing_worker_check_of_18_digits_gets_json_404(api_client_as):
    response = api_client_as("analyst").get(f"/api/v1/worker-checks/{'9' * 18}/")

    assert response.status_code == 404
    assert response.json() == {"detail": "No WorkerCheck matches the given query.", "errors": {}}


def test_job_progress_id_of_25_digits_gets_404_not_500(client_as):
    response = client_as("analyst").get(f"/jobs/lepton_web.workercheck/{'9' * 25}/progress/")

    assert response.status_code == 404


# --- dashboard ------------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ["admin", "analyst", "annotator", "viewer"])
def test_dashboard_shows_the_health_tiles(client_as, role):
    content = client_as(role).get("/").content.decode()

    assert [tile in content for tile in HEALTH_TILES] == [True] * len(HEALTH_TILES)


@pytest.mark.parametrize(
    ("role", "shown"),
    [("admin", True), ("analyst", True), ("annotator", False), ("viewer", False)],
)
def test_check_workers_button_shows_only_for_roles_that_may_create_checks(client_as, role, shown):
    response = client_as(role).get("/")

    assert (CHECK_WORKERS_BUTTON in response.content.decode()) is shown


def test_viewer_cannot_press_check_workers(client_as):
    response = client_as("viewer").post("/worker-checks/")

    assert response.status_code == 403
    assert not WorkerCheck.objects.exists()


# --- job progress fragment -------------------------------------------------------------------------
@pytest.mark.parametrize("status", ["queued", "running"])
def test_progress_fragment_keeps_polling_while_the_job_is_active(client_as, status):
    client = client_as("viewer")
    job = WorkerCheck.objects.create(status=status, progress=40)

    content = client.get(progress_url(job)).content.decode()

    assert f'hx-get="{progress_url(job)}" hx-trigger="every 2s" hx-swap="outerHTML"' in content
    assert 'aria-valuenow="40"' in content


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_progress_fragment_stops_polling_once_the_job_is_finished(client_as, status):
    client = client_as("viewer")
    job = WorkerCheck.objects.create(status=status, progress=100)

    response = client.get(progress_url(job))

    assert response.status_code == 200
    assert f'data-status="{status}"' in response.content.decode()
    assert "hx-trigger" not in response.content.decode()


def test_progress_fragment_of_an_unknown_job_kind_is_404(client_as):
    response = client_as("analyst").get("/jobs/auth.user/1/progress/")

    assert response.status_code == 404


def test_progress_fragment_is_refused_to_a_user_with_no_role(client_as):
    job = WorkerCheck.objects.create()

    response = client_as(None).get(progress_url(job))

    assert response.status_code == 403
