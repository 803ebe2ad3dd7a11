"""A stopped endpoint stays stopped whichever way its version moves (promote, rollback, deploy
onto its name, alias), and the page and the API say that the new version serves once it is
started; a failed endpoint is live again on a new version."""

import pytest

from models_app import runtime
from models_app.deploy import (
    deployment_deploy,
    deployment_mark_failed,
    deployment_stop,
    model_alias_set,
)
from models_app.models import Deployment, DeploymentEvent
from tests.models_app.serving_helpers import make_version

pytestmark = pytest.mark.django_db

STOPPED_V2 = "Endpoint reviews is stopped; reviews v2 will serve when you start it."


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    runtime.model_cache.clear()
    yield
    runtime.model_cache.clear()


@pytest.fixture
def versions(tmp_path_factory):
    return make_version(tmp_path_factory), make_version(tmp_path_factory, seed=1)


@pytest.fixture
def stopped(versions, analyst):
    first, _second = versions
    deployment = deployment_deploy(user=analyst, version=first, slug="reviews", runtime="pytorch")
    deployment_stop(user=analyst, deployment=deployment)
    return Deployment.objects.get()


def _endpoint() -> tuple[int, str]:
    deployment = Deployment.objects.select_related("version").get(slug="reviews")
    return deployment.version.version, deployment.status


def test_promote_from_the_page_keeps_a_stopped_endpoint_stopped_and_says_so(
    client_as, versions, stopped
):
    client = client_as("analyst")

    client.post("/models/deployments/reviews/promote/", {"version": versions[1].pk})

    assert _endpoint() == (2, "stopped")
    page = client.get("/models/deployments/").content.decode()
    assert STOPPED_V2 in page
    assert DeploymentEvent.objects.filter(action="promote").count() == 1

    client.post("/models/deployments/reviews/start/")
    assert _endpoint() == (2, "live")


def test_promote_over_the_api_keeps_a_stopped_endpoint_stopped_and_says_so(
    api_client_as, versions, stopped
):
    api = api_client_as("analyst")

    response = api.post(
        "/api/v1/deployments/reviews/promote/", {"version": versions[1].pk}, format="json"
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["version_number"], body["status"], body["notice"]) == (2, "stopped", STOPPED_V2)
    predicted = api.post("/api/v1/deployments/reviews/predict/", {"texts": ["good"]}, format="json")
    assert predicted.status_code == 503
    assert "is stopped" in predicted.json()["detail"]

    started = api.post("/api/v1/deployments/reviews/start/")
    assert (started.json()["status"], started.json()["notice"]) == ("live", "")
    predicted = api.post("/api/v1/deployments/reviews/predict/", {"texts": ["good"]}, format="json")
    assert (predicted.status_code, predicted.json()["version"]) == (200, 2)


def test_deploying_onto_a_stopped_endpoints_name_keeps_it_stopped(
    client_as, api_client_as, versions, stopped
):
    client = client_as("analyst")
    client.post(f"/models/versions/{versions[1].pk}/deploy/", {"slug": "reviews", "runtime": ""})
    assert _endpoint() == (2, "stopped")
    assert STOPPED_V2 in client.get("/models/deployments/").content.decode()

    response = api_client_as("analyst").post(
        "/api/v1/deployments/",
        {"slug": "reviews", "version": versions[0].pk, "runtime": "pytorch"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["status"] == "stopped"
    assert response.json()["notice"] == (
        "Endpoint reviews is stopped; reviews v1 will serve when you start it."
    )


def test_rollback_of_a_stopped_endpoint_keeps_it_stopped(client_as, versions, stopped):
    client = client_as("analyst")
    client.post("/models/deployments/reviews/promote/", {"version": versions[1].pk})

    client.post("/models/deployments/reviews/rollback/")

    assert _endpoint() == (1, "stopped")
    page = client.get("/models/deployments/").content.decode()
    assert "Endpoint reviews is stopped; reviews v1 will serve when you start it." in page


def test_an_alias_move_and_a_promote_treat_a_stopped_endpoint_alike(analyst, versions, stopped):
    first, second = versions
    model_alias_set(
        user=analyst, registered_model=first.registered_model, name="production", version=first
    )
    Deployment.objects.filter(pk=stopped.pk).update(follow_alias="production")

    model_alias_set(
        user=analyst, registered_model=first.registered_model, name="production", version=second
    )

    assert _endpoint() == (2, "stopped")


def test_a_failed_endpoint_is_live_again_on_a_new_version_by_promote_or_alias(
    analyst, client_as, versions
):
    first, second = versions
    deployment = deployment_deploy(user=analyst, version=first, slug="reviews", runtime="pytorch")
    deployment_mark_failed(deployment_id=deployment.pk, version_id=first.pk, reason="broken")
    client = client_as("analyst")

    client.post("/models/deployments/reviews/promote/", {"version": second.pk})

    assert _endpoint() == (2, "live")
    assert (
        "reviews now serves reviews v2 (PyTorch)."
        in client.get("/models/deployments/").content.decode()
    )

    model_alias_set(
        user=analyst, registered_model=first.registered_model, name="production", version=second
    )
    Deployment.objects.filter(pk=deployment.pk).update(follow_alias="production")
    deployment_mark_failed(deployment_id=deployment.pk, version_id=second.pk, reason="broken")
    model_alias_set(
        user=analyst, registered_model=first.registered_model, name="production", version=first
    )
    assert _endpoint() == (1, "live")
