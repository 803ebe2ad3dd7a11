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
