"""explain=true on the predict API: each prediction carries its words with scores."""

import pytest

from models_app import runtime
from models_app.explanations import EXPLAIN_MAX_TEXTS, explain_cache
from tests.models_app.batch_helpers import toy_version

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fresh_caches():
    runtime.model_cache.clear()
    explain_cache.clear()
    yield
    runtime.model_cache.clear()
    explain_cache.clear()


@pytest.fixture
def api(api_client_as, tmp_path_factory):
    client = api_client_as("analyst")
    version = toy_version(tmp_path_factory)
    created = client.post(
        "/api/v1/deployments/",
        {"slug": "toy", "version": version.pk, "runtime": "pytorch"},
        format="json",
    )
    assert created.status_code == 201, created.json()
    return client


@pytest.mark.parametrize("method", ["integrated_gradients", "occlusion"])
def test_explain_true_adds_words_with_scores_to_each_prediction(api, method):
    text = "the story was great"

    response = api.post(
        "/api/v1/deployments/toy/predict/",
        {"texts": [text, "the plot"], "explain": True, "explain_method": method},
        format="json",
    )

    assert response.status_code == 200, response.json()
    first, second = response.json()["predictions"]
    assert first["label"] == "positive"
    explanation = first["explanation"]
    assert explanation["method"] == method
    assert [w["word"] for w in explanation["words"]] == ["the", "story", "was", "great"]
    for word in explanation["words"]:
        assert text[word["start"] : word["end"]] == word["word"]
    assert max(explanation["words"], key=lambda w: w["score"])["word"] == "great"
    assert second["label"] == "negative"
    assert second["explanation"]["target"] == 0


def test_the_query_parameter_works_too_and_without_it_nothing_is_explained(api):
    plain = api.post("/api/v1/deployments/toy/predict/", {"texts": ["great"]}, format="json")
    explained = api.post(
        "/api/v1/deployments/toy/predict/?explain=true", {"texts": ["great"]}, format="json"
    )

    assert "explanation" not in plain.json()["predictions"][0]
    assert explained.json()["predictions"][0]["explanation"]["words"][0]["word"] == "great"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"explain": "maybe"}, "explain", "explain must be true or false."),
        ({"explain": True, "explain_method": "lime"}, "explain_method", "must be one of"),
        (
            {"explain": True, "texts": ["good", "  "]},
            "texts[1]",
            "Text 1: There is no text to explain; type a sentence first.",
        ),
        (
            {"explain": True, "texts": ["good"] * (EXPLAIN_MAX_TEXTS + 1)},
            "texts",
            f"Explain at most {EXPLAIN_MAX_TEXTS} texts per request",
        ),
    ],
)
def test_bad_explain_requests_answer_400_by_field(api, body, field, message):
    response = api.post(
        "/api/v1/deployments/toy/predict/", {"texts": ["good"], **body}, format="json"
    )

    assert response.status_code == 400
    assert message in " ".join(response.json()["errors"][field])


def test_explanations_past_the_concurrency_limit_get_429_and_predictions_still_work(api, settings):
    """A burst of explain calls cannot take every core: past EXPLAIN_CONCURRENCY explanations
    at once a request waits EXPLAIN_WAIT_SECONDS, then gets 429 with Retry-After and a
    sentence; plain predictions go on, and once a slot is free explain works again."""
    from models_app.explanations import _explain_slots

    settings.EXPLAIN_CONCURRENCY = 1
    settings.EXPLAIN_WAIT_SECONDS = 0
    slots = _explain_slots()
    assert slots.acquire(timeout=1)  # an explanation in flight
    try:
        busy = api.post(
            "/api/v1/deployments/toy/predict/",
            {"texts": ["great"], "explain": True},
            format="json",
        )
        plain = api.post("/api/v1/deployments/toy/predict/", {"texts": ["great"]}, format="json")
    finally:
        slots.release()
    again = api.post(
        "/api/v1/deployments/toy/predict/", {"texts": ["great"], "explain": True}, format="json"
    )

    assert busy.status_code == 429
    assert busy["Retry-After"] == "5"
    assert "explaining as many texts as it can" in busy.json()["detail"]
    assert plain.status_code == 200
    assert again.status_code == 200
    assert "explanation" in again.json()["predictions"][0]
