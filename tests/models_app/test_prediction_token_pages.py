"""Prediction tokens on the Deployments page: list, create, revoke (the same service the API
calls), role checks, CSRF, and a revoked key refused at once."""

import pytest
from django.test import Client
from rest_framework.test import APIClient

from models_app import runtime
from models_app.deploy import deployment_deploy, prediction_token_create
from models_app.models import PredictionToken
from tests.models_app.serving_helpers import make_version

pytestmark = pytest.mark.django_db

PREDICT = "/api/v1/deployments/reviews/predict/"


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    runtime.model_cache.clear()
    yield
    runtime.model_cache.clear()


@pytest.fixture
def live(tmp_path_factory, analyst):
    version = make_version(tmp_path_factory)
    return deployment_deploy(user=analyst, version=version, slug="reviews", runtime="pytorch")


def _predict(key: str):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client.post(PREDICT, {"texts": ["good"]}, format="json")


def test_the_page_lists_tokens_without_their_keys(client_as, live, analyst):
    token, key = prediction_token_create(user=analyst, name="shop", slugs=["reviews"])

    page = client_as("analyst").get("/models/deployments/").content.decode()

    section = page.split('data-testid="prediction-tokens"')[1]
    assert 'data-testid="token-name">shop<' in section
    assert f"{token.prefix}…" in section
    assert "reviews" in section
    assert f"by {analyst.username}" in section
    assert "never" in section  # not used yet
    assert key not in page
    assert f'action="/models/deployments/tokens/{token.pk}/revoke/"' in section


def test_empty_state_says_what_a_token_is_for_with_a_curl_line(client_as, live):
    page = client_as("analyst").get("/models/deployments/").content.decode()

    assert 'data-testid="token-empty"' in page
    assert "curl -X POST http://testserver/api/v1/deployments/&lt;endpoint&gt;/predict/" in page
    assert "Authorization: Token &lt;key&gt;" in page


def test_viewer_sees_no_tokens_and_cannot_revoke(client_as, live, analyst):
    token, key = prediction_token_create(user=analyst, name="shop", slugs=["reviews"])
    client = client_as("viewer")

    page = client.get("/models/deployments/").content.decode()
    revoke = client.post(f"/models/deployments/tokens/{token.pk}/revoke/")

    assert page.count('data-testid="prediction-tokens"') == 0
    assert "shop" not in page
    assert revoke.status_code == 403
    assert PredictionToken.objects.filter(pk=token.pk).exists()
    assert _predict(key).status_code == 200


def test_revoke_refuses_the_key_at_once_and_says_so(client_as, live, analyst):
    token, key = prediction_token_create(user=analyst, name="shop", slugs=["reviews"])
    assert _predict(key).status_code == 200  # the key is memoised in this process now
    client = client_as("analyst")

    response = client.post(f"/models/deployments/tokens/{token.pk}/revoke/", follow=True)

    assert response.redirect_chain[-1][0] == "/models/deployments/"
    page = response.content.decode()
    assert "Token shop (" in page
    assert "revoked; applications using its key now get 401." in page
    assert 'data-testid="token-row"' not in page
    assert not PredictionToken.objects.exists()
    refused = _predict(key)
    assert refused.status_code == 401
    assert refused.json()["detail"] == "This prediction token is not valid."


def test_revoking_a_token_already_gone_is_a_plain_sentence_not_a_404(client_as, live, analyst):
    token, _key = prediction_token_create(user=analyst, name="shop", slugs=["reviews"])
    client = client_as("analyst")
    client.post(f"/models/deployments/tokens/{token.pk}/revoke/")

    again = client.post(f"/models/deployments/tokens/{token.pk}/revoke/", follow=True)

    assert again.status_code == 200
    assert "That token was already revoked; its key no longer works." in again.content.decode()


def test_revoke_needs_the_csrf_token(make_user, live, analyst):
    token, _key = prediction_token_create(user=analyst, name="shop", slugs=["reviews"])
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("analyst"))

    page = client.get("/models/deployments/")
    forged = client.post(f"/models/deployments/tokens/{token.pk}/revoke/")
    assert forged.status_code == 403
    assert PredictionToken.objects.filter(pk=token.pk).exists()

    csrf = page.content.decode().split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
    signed = client.post(
        f"/models/deployments/tokens/{token.pk}/revoke/", {"csrfmiddlewaretoken": csrf}
    )
    assert signed.status_code == 302
    assert not PredictionToken.objects.filter(pk=token.pk).exists()


def test_revoke_is_post_only(client_as, live, analyst):
    token, _key = prediction_token_create(user=analyst, name="shop", slugs=["reviews"])

    assert (
        client_as("analyst").get(f"/models/deployments/tokens/{token.pk}/revoke/").status_code
        == 405
    )
    assert PredictionToken.objects.filter(pk=token.pk).exists()


def test_the_api_lists_through_the_same_service(api_client_as, live, analyst):
    prediction_token_create(user=analyst, name="shop", slugs=["reviews"])

    listed = api_client_as("analyst").get("/api/v1/prediction-tokens/")
    viewer = api_client_as("viewer").get("/api/v1/prediction-tokens/")

    assert listed.status_code == 200
    assert [(t["name"], t["endpoints"]) for t in listed.json()] == [("shop", ["reviews"])]
    assert viewer.status_code == 403
