"""Deploy and predict over REST: the contract, auth, prediction-only tokens, limits, 503s."""

import shutil
import threading
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from rest_framework.test import APIClient

from models_app import runtime
from models_app.deploy import deployment_deploy, prediction_token_create
from models_app.models import Deployment, DeploymentEvent
from models_app.serving import stats
from tests.models_app.serving_helpers import make_version

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    runtime.model_cache.clear()
    yield
    runtime.model_cache.clear()


@pytest.fixture
def version(tmp_path_factory):
    return make_version(tmp_path_factory)


@pytest.fixture
def analyst_api(api_client_as):
    return api_client_as("analyst")


def _deploy(api, version, slug="reviews"):
    return api.post(
        "/api/v1/deployments/",
        {"slug": slug, "version": version.pk, "runtime": "pytorch"},
        format="json",
    )


def test_deploy_then_predict_names_version_and_runtime(analyst_api, version):
    created = _deploy(analyst_api, version)
    assert created.status_code == 201, created.json()
    assert created.json()["status"] == "live"

    response = analyst_api.post(
        "/api/v1/deployments/reviews/predict/", {"texts": ["a good movie", "bad"]}, format="json"
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["endpoint"] == "reviews"
    assert body["model"] == "reviews"
    assert body["version"] == 1
    assert body["version_id"] == version.pk
    assert body["runtime"] == "pytorch"
    assert len(body["predictions"]) == 2
    for prediction in body["predictions"]:
        assert prediction["label"] in ("negative", "positive")
        assert set(prediction["scores"]) == {"negative", "positive"}


def test_one_text_uses_the_same_shape(analyst_api, version):
    _deploy(analyst_api, version)

    response = analyst_api.post(
        "/api/v1/deployments/reviews/predict/", {"texts": ["fine"]}, format="json"
    )

    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1


def test_viewer_may_not_deploy(api_client_as, version):
    response = _deploy(api_client_as("viewer"), version)

    assert response.status_code == 403
    assert not Deployment.objects.exists()


def test_predict_without_credentials_is_401(version, analyst):
    deployment_deploy(user=analyst, version=version, slug="reviews", runtime="pytorch")

    response = APIClient().post(
        "/api/v1/deployments/reviews/predict/", {"texts": ["good"]}, format="json"
    )

    assert response.status_code == 401


def test_prediction_token_predicts_on_its_endpoints_only(version, analyst):
    deployment_deploy(user=analyst, version=version, slug="reviews", runtime="pytorch")
    deployment_deploy(user=analyst, version=version, slug="other", runtime="pytorch")
    _, key = prediction_token_create(user=analyst, name="shop", slugs=["reviews"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")

    allowed = client.post(
        "/api/v1/deployments/reviews/predict/", {"texts": ["good"]}, format="json"
    )
    refused = client.post("/api/v1/deployments/other/predict/", {"texts": ["good"]}, format="json")

    assert allowed.status_code == 200
    assert refused.status_code == 403
    assert refused.json()["detail"] == "This prediction token may not call this endpoint."


def test_prediction_token_carries_no_analyst_rights(version, analyst):
    deployment_deploy(user=analyst, version=version, slug="reviews", runtime="pytorch")
    _, key = prediction_token_create(user=analyst, name="shop", slugs=["reviews"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")

    # Elsewhere the key is no user token at all (401); nowhere does it act as a user.
    assert client.get("/api/v1/deployments/").status_code == 401
    assert client.get("/api/v1/datasets/").status_code == 401
    assert client.post("/api/v1/deployments/reviews/stop/").status_code == 401
    assert Deployment.objects.get().status == "live"


def test_a_revoked_prediction_token_is_refused_at_once(version, analyst, api_client_as):
    deployment_deploy(user=analyst, version=version, slug="reviews", runtime="pytorch")
    token, key = prediction_token_create(user=analyst, name="shop", slugs=["reviews"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    body = {"texts": ["good"]}
    assert (
        client.post("/api/v1/deployments/reviews/predict/", body, format="json").status_code == 200
    )

    viewer = api_client_as("viewer").delete(f"/api/v1/prediction-tokens/{token.pk}/")
    revoked = api_client_as("analyst").delete(f"/api/v1/prediction-tokens/{token.pk}/")
    again = api_client_as("analyst").delete(f"/api/v1/prediction-tokens/{token.pk}/")
    refused = client.post("/api/v1/deployments/reviews/predict/", body, format="json")

    assert viewer.status_code == 403
    assert revoked.status_code == 204
    assert again.status_code == 404
    assert refused.status_code == 401
    assert refused.json()["detail"] == "This prediction token is not valid."


def test_unknown_prediction_token_is_401(version, analyst):
    deployment_deploy(user=analyst, version=version, slug="reviews", runtime="pytorch")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token lpt_not-a-real-key")

    response = client.post(
        "/api/v1/deployments/reviews/predict/", {"texts": ["good"]}, format="json"
    )

    assert response.status_code == 401


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({}, "texts", 'Send {"texts": ["..."]}: a list of one or more texts.'),
        ({"texts": "good"}, "texts", "texts must be a list of strings, even for one text."),
        ({"texts": []}, "texts", "texts is empty; send at least one text."),
        ({"texts": ["good", 3]}, "texts[1]", "Text 1 is not a string."),
        ({"texts": ["a"] * 4}, "texts", "Send at most 3 texts per request; this one has 4."),
        ({"texts": ["ok", "x" * 21]}, "texts[1]", "Text 1 has 21 characters; the limit is 20."),
    ],
)
def test_limits_answer_400_by_field(analyst_api, version, settings, payload, field, message):
    settings.SERVE_MAX_TEXTS = 3
    settings.SERVE_MAX_CHARS = 20
    _deploy(analyst_api, version)

    response = analyst_api.post("/api/v1/deployments/reviews/predict/", payload, format="json")

    assert response.status_code == 400
    assert response.json() == {"detail": message, "errors": {field: [message]}}


def test_unknown_endpoint_is_404(analyst_api):
    response = analyst_api.post(
        "/api/v1/deployments/nothing/predict/", {"texts": ["good"]}, format="json"
    )

    assert response.status_code == 404
    assert response.json()["detail"] == "Nothing is deployed at nothing."


def test_stopped_endpoint_answers_503_with_a_reason(analyst_api, version):
    _deploy(analyst_api, version)
    assert analyst_api.post("/api/v1/deployments/reviews/stop/").status_code == 200

    response = analyst_api.post(
        "/api/v1/deployments/reviews/predict/", {"texts": ["good"]}, format="json"
    )

    assert response.status_code == 503
    assert response.json()["detail"] == (
        "The endpoint reviews is stopped. Start it on the Deployments page."
    )


def test_deleted_artifact_answers_503_and_marks_the_endpoint_failed(analyst_api, version):
    _deploy(analyst_api, version)
    shutil.rmtree(Path(default_storage.path(version.artifact_uri)))

    response = analyst_api.post(
        "/api/v1/deployments/reviews/predict/", {"texts": ["good"]}, format="json"
    )

    assert response.status_code == 503
    assert "cannot be loaded" in response.json()["detail"]
    deployment = Deployment.objects.get()
    assert deployment.status == "failed"
    assert "model files are missing" in deployment.status_message
    again = analyst_api.post(
        "/api/v1/deployments/reviews/predict/", {"texts": ["good"]}, format="json"
    )
    assert again.status_code == 503


def test_corrupt_weights_answer_503_not_500(analyst_api, version):
    _deploy(analyst_api, version)
    Path(default_storage.path(f"{version.artifact_uri}/model.safetensors")).write_bytes(b"broken")

    response = analyst_api.post(
        "/api/v1/deployments/reviews/predict/", {"texts": ["good"]}, format="json"
    )

    assert response.status_code == 503
    assert response.json()["detail"].startswith("The endpoint reviews has failed:")


def test_promote_and_rollback_switch_versions_and_keep_history(
    analyst_api, version, tmp_path_factory
):
    second = make_version(tmp_path_factory, seed=1)
    _deploy(analyst_api, version)

    promoted = analyst_api.post(
        "/api/v1/deployments/reviews/promote/", {"version": second.pk}, format="json"
    )
    after_promote = analyst_api.post(
        "/api/v1/deployments/reviews/predict/", {"texts": ["good"]}, format="json"
    )
    rolled = analyst_api.post("/api/v1/deployments/reviews/rollback/")
    after_rollback = analyst_api.post(
        "/api/v1/deployments/reviews/predict/", {"texts": ["good"]}, format="json"
    )

    assert promoted.status_code == 200
    assert after_promote.json()["version"] == 2
    assert rolled.status_code == 200
    assert after_rollback.json()["version"] == 1
    actions = list(
        DeploymentEvent.objects.order_by("id").values_list(
            "action", "from_version__version", "to_version__version"
        )
    )
    assert actions == [("deploy", None, 1), ("promote", 1, 2), ("rollback", 2, 1)]


def test_rollback_without_an_earlier_version_is_400(analyst_api, version):
    _deploy(analyst_api, version)

    response = analyst_api.post("/api/v1/deployments/reviews/rollback/")

    assert response.status_code == 400
    assert response.json()["detail"] == "This endpoint has no earlier version to roll back to."


def test_onnx_runtime_without_an_export_is_refused(analyst_api, version):
    response = analyst_api.post(
        "/api/v1/deployments/",
        {"slug": "reviews", "version": version.pk, "runtime": "onnx-int8"},
        format="json",
    )

    assert response.status_code == 400
    assert "has no finished ONNX int8 export" in response.json()["errors"]["runtime"][0]
    assert not Deployment.objects.exists()


def test_requests_are_counted_per_minute(analyst_api, version):
    _deploy(analyst_api, version)
    for _ in range(3):
        analyst_api.post("/api/v1/deployments/reviews/predict/", {"texts": ["good"]}, format="json")

    detail = analyst_api.get("/api/v1/deployments/reviews/").json()

    assert detail["usage"]["requests"] == 3
    assert detail["usage"]["errors"] == 0
    assert detail["usage"]["p50_ms"] is not None
    assert [h["action"] for h in detail["history"]] == ["deploy"]


def test_switch_under_load_fails_no_request(version, analyst, tmp_path_factory):
    """16 threads call predict while the endpoint is promoted twice and rolled back once."""
    from models_app.deploy import deployment_promote, deployment_rollback
    from models_app.serving import deployment_get_live, deployment_predict

    second = make_version(tmp_path_factory, seed=1)
    third = make_version(tmp_path_factory, seed=2)
    deployment = deployment_deploy(user=analyst, version=version, slug="reviews", runtime="pytorch")
    failures, versions_seen = [], []
    stop = threading.Event()

    def call():
        from django.db import connection

        try:
            while not stop.is_set():
                try:
                    live = deployment_get_live("reviews")
                    prediction = deployment_predict(deployment=live, texts=["a good movie"])
                    versions_seen.append(prediction.version.version)
                    assert prediction.results[0]["label"] in ("negative", "positive")
                except Exception as error:  # counted, not raised in the thread
                    failures.append(repr(error))
        finally:
            connection.close()

    threads = [threading.Thread(target=call) for _ in range(16)]
    for thread in threads:
        thread.start()
    try:
        for step in (
            lambda: deployment_promote(user=analyst, deployment=deployment, version=second),
            lambda: deployment_promote(user=analyst, deployment=deployment, version=third),
            lambda: deployment_rollback(user=analyst, deployment=deployment),
        ):
            seen = len(versions_seen)
            while len(versions_seen) < seen + 20 and not failures:
                threading.Event().wait(0.01)
            step()
        seen = len(versions_seen)
        while len(versions_seen) < seen + 20 and not failures:
            threading.Event().wait(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    stats.flush()

    assert failures == []
    assert {1, 2, 3} <= set(versions_seen)
    assert versions_seen[-1] == 2


@pytest.mark.parametrize(("role", "expected"), [("viewer", 200), ("annotator", 403), (None, 403)])
def test_user_tokens_predict_by_role(version, analyst, make_user, role, expected):
    from lepton_web.accounts import user_token_issue

    deployment_deploy(user=analyst, version=version, slug="reviews", runtime="pytorch")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {user_token_issue(user=make_user(role))}")

    response = client.post(
        "/api/v1/deployments/reviews/predict/", {"texts": ["good"]}, format="json"
    )

    assert response.status_code == expected


def test_token_of_a_deactivated_user_is_refused(version, analyst, make_user):
    from lepton_web.accounts import user_token_issue

    deployment_deploy(user=analyst, version=version, slug="reviews", runtime="pytorch")
    user = make_user("analyst")
    key = user_token_issue(user=user)
    user.is_active = False
    user.save()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")

    response = client.post(
        "/api/v1/deployments/reviews/predict/", {"texts": ["good"]}, format="json"
    )

    assert response.status_code == 401


def test_an_unknown_user_token_is_refused(version, analyst):
    deployment_deploy(user=analyst, version=version, slug="reviews", runtime="pytorch")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token 0123456789abcdef")

    response = client.post(
        "/api/v1/deployments/reviews/predict/", {"texts": ["good"]}, format="json"
    )

    assert response.status_code == 401


def test_session_login_predicts_too(client_as, version, analyst):
    deployment_deploy(user=analyst, version=version, slug="reviews", runtime="pytorch")

    response = client_as("analyst").post(
        "/api/v1/deployments/reviews/predict/", {"texts": ["good"]}, content_type="application/json"
    )

    assert response.status_code == 200


def test_a_deploy_racing_another_at_the_same_new_slug_promotes_what_the_other_made(
    version, analyst, monkeypatch
):
    """Two requests deploy at a new slug at once (a double click): both find no endpoint;
    the second one's insert meets the first one's row, and it promotes that endpoint instead
    of failing with an IntegrityError (a 500)."""
    from django.db import connection

    from models_app import deploy

    real_move = deploy._move

    def other_request_commits_first(deployment, **kwargs):
        if deployment.pk is None:

            def deploy_elsewhere():
                try:
                    Deployment.objects.create(slug="reviews", version=version, runtime="pytorch")
                finally:
                    connection.close()

            thread = threading.Thread(target=deploy_elsewhere)
            thread.start()
            thread.join()
        return real_move(deployment, **kwargs)

    monkeypatch.setattr(deploy, "_move", other_request_commits_first)

    deployment = deployment_deploy(user=analyst, version=version, slug="reviews")

    assert Deployment.objects.filter(slug="reviews").count() == 1
    assert Deployment.objects.get(slug="reviews").pk == deployment.pk
    assert list(DeploymentEvent.objects.values_list("action", flat=True)) == ["promote"]
