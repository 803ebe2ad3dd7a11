"""The pages: Deploy on the version page and registry list, the Deployments page with its
actions, exports and aliases from the version page, prediction tokens."""

import pytest

from models_app import runtime
from models_app.deploy import deployment_deploy
from models_app.models import Deployment, ModelAlias, ModelExport, PredictionToken
from tests.models_app.serving_helpers import make_version

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    runtime.model_cache.clear()
    yield
    runtime.model_cache.clear()


@pytest.fixture
def version(tmp_path_factory):
    return make_version(tmp_path_factory)


def test_registry_list_links_each_ready_version_to_deploy(client_as, version):
    page = client_as("analyst").get("/models/")

    assert page.status_code == 200
    assert f'href="/models/versions/{version.pk}/#deploy"' in page.content.decode()


def test_viewer_sees_no_deploy_button(client_as, version):
    page = client_as("viewer").get(f"/models/versions/{version.pk}/")

    assert page.status_code == 200
    assert 'data-testid="deploy-form"' not in page.content.decode()


def test_deploy_from_the_version_page(client_as, version):
    client = client_as("analyst")

    response = client.post(
        f"/models/versions/{version.pk}/deploy/", {"slug": "reviews", "runtime": "pytorch"}
    )

    assert response.status_code == 302
    deployment = Deployment.objects.get()
    assert (deployment.slug, deployment.version_id, deployment.runtime) == (
        "reviews",
        version.pk,
        "pytorch",
    )
    page = client.get("/models/deployments/").content.decode()
    assert "reviews v1" in page
    assert "is live at reviews" in page


def test_deploy_with_a_bad_slug_shows_the_form_again_with_the_error(client_as, version):
    response = client_as("analyst").post(
        f"/models/versions/{version.pk}/deploy/", {"slug": "Not a slug!", "runtime": ""}
    )

    assert response.status_code == 400
    assert 'value="Not a slug!"' in response.content.decode()
    assert not Deployment.objects.exists()


def test_deploying_onnx_without_an_export_says_so(client_as, version):
    response = client_as("analyst").post(
        f"/models/versions/{version.pk}/deploy/", {"slug": "reviews", "runtime": "onnx-int8"}
    )

    assert response.status_code == 400
    assert "has no finished ONNX int8 export" in response.content.decode()


def test_promote_rollback_stop_start_delete_from_the_deployments_page(
    client_as, version, tmp_path_factory, analyst
):
    second = make_version(tmp_path_factory, seed=1)
    deployment_deploy(user=analyst, version=version, slug="reviews", runtime="pytorch")
    client = client_as("analyst")

    client.post("/models/deployments/reviews/promote/", {"version": second.pk, "runtime": ""})
    assert Deployment.objects.get().version_id == second.pk
    page = client.get("/models/deployments/").content.decode()
    assert "Roll back to v1" in page

    client.post("/models/deployments/reviews/rollback/")
    assert Deployment.objects.get().version_id == version.pk
    client.post("/models/deployments/reviews/stop/")
    assert Deployment.objects.get().status == "stopped"
    client.post("/models/deployments/reviews/start/")
    assert Deployment.objects.get().status == "live"
    client.post("/models/deployments/reviews/delete/")
    assert not Deployment.objects.exists()


def test_deployments_page_shows_counts_after_requests(client_as, version, analyst):
    from models_app.serving import deployment_get_live, deployment_predict

    deployment_deploy(user=analyst, version=version, slug="reviews", runtime="pytorch")
    for _ in range(2):
        deployment_predict(deployment=deployment_get_live("reviews"), texts=["good"])

    page = client_as("viewer").get("/models/deployments/", HTTP_HX_REQUEST="true")

    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-testid="endpoint-requests">2<' in html
    # The chart's data is a JSON script the chart reads, not text shown on the page.
    assert '<script id="latency-reviews" type="application/json">' in html
    assert "&lt;script" not in html
    assert 'data-testid="promote-form"' not in html  # viewers cannot change endpoints


def test_alias_from_the_version_page(client_as, version):
    response = client_as("analyst").post(
        f"/models/versions/{version.pk}/alias/", {"name": "production"}
    )

    assert response.status_code == 302
    assert ModelAlias.objects.get().name == "production"


def test_export_button_queues_an_export_job(client_as, version, monkeypatch):
    monkeypatch.setattr(ModelExport, "enqueue", lambda self, **kwargs: None)

    client_as("analyst").post(f"/models/versions/{version.pk}/export/", {"kind": "onnx-int8"})

    export = ModelExport.objects.get()
    assert (export.kind, export.status) == ("onnx-int8", "queued")
    page = client_as("analyst").get(f"/models/versions/{version.pk}/").content.decode()
    assert 'data-testid="job-progress"' in page


def test_prediction_token_key_is_shown_once(client_as, version, analyst):
    deployment_deploy(user=analyst, version=version, slug="reviews", runtime="pytorch")
    client = client_as("analyst")

    response = client.post(
        "/models/deployments/tokens/", {"name": "shop", "endpoints": ["reviews"]}
    )
    # Post/redirect/get: a reload of the page shows the key, it does not create a second token.
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()

    token = PredictionToken.objects.get()
    assert token.prefix in page
    assert 'data-testid="new-token-key">lpt_' in page
    assert (
        token.prefix
        not in client.get("/models/deployments/").content.decode().split("Prediction tokens")[0]
    )


def test_counts_of_an_endpoint_deleted_meanwhile_are_dropped(version, analyst):
    """Inside one transaction (as here) a count row for a deleted endpoint would only fail at
    commit; the flush skips it instead."""
    from models_app.deploy import deployment_delete
    from models_app.models import DeploymentMinute
    from models_app.serving import stats

    deployment = deployment_deploy(user=analyst, version=version, slug="gone", runtime="pytorch")
    stats.record(deployment.pk, 0.01, texts=1, error=False)
    deployment_id = deployment.pk
    deployment_delete(user=analyst, deployment=deployment)

    stats.flush()

    assert not DeploymentMinute.objects.filter(deployment_id=deployment_id).exists()


def test_inputs_and_outputs_are_logged_only_when_the_setting_is_on(version, analyst, settings):
    from models_app.models import PredictionLog
    from models_app.serving import deployment_get_live, deployment_predict

    deployment_deploy(user=analyst, version=version, slug="reviews", runtime="pytorch")
    deployment_predict(deployment=deployment_get_live("reviews"), texts=["not kept"])
    assert not PredictionLog.objects.exists()

    settings.SERVE_LOG_PREDICTIONS = True
    prediction = deployment_predict(deployment=deployment_get_live("reviews"), texts=["kept"])

    log = PredictionLog.objects.get()
    assert (log.text, log.version_id, log.result) == ("kept", version.pk, prediction.results[0])
