"""The playground (version page and Deployments page) and the batch-prediction card."""

from __future__ import annotations

import json
import re

import pytest

from models_app import runtime
from models_app.batch_prediction import batch_prediction_execute
from models_app.deploy import deployment_deploy
from models_app.explanations import explain_cache
from models_app.models import BatchPrediction
from tests.conftest import broker_for_this_process
from tests.models_app.batch_helpers import toy_snapshot, toy_version


@pytest.fixture(autouse=True)
def _fresh_caches():
    runtime.model_cache.clear()
    explain_cache.clear()
    yield
    runtime.model_cache.clear()
    explain_cache.clear()


@pytest.fixture
def version(db, tmp_path_factory):
    return toy_version(tmp_path_factory)


@pytest.fixture
def broker(redis_url):
    with broker_for_this_process(redis_url):
        yield


def scored_words(html: str) -> dict[str, float]:
    return {
        word: float(score)
        for score, word in re.findall(r'data-score="([^"]+)"[^>]*>([^<]+)</mark>', html)
    }


def test_the_version_page_has_a_playground_and_loads_the_batch_card(client_as, version):
    page = client_as("viewer").get(f"/models/versions/{version.pk}/").content.decode()

    assert 'data-testid="playground"' in page
    assert f'hx-post="/models/versions/{version.pk}/playground/"' in page
    assert f'hx-get="/models/versions/{version.pk}/batch-predictions/"' in page


def test_predict_shows_the_label_and_the_class_probabilities(client_as, version):
    response = client_as("viewer").post(
        f"/models/versions/{version.pk}/playground/", {"text": "the story was great"}
    )

    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-testid="playground-label">positive<' in html
    bars = json.loads(re.search(r'id="playground-bars-data"[^>]*>(.*?)</script>', html).group(1))
    assert [bar["label"] for bar in bars] == ["positive", "negative"]
    assert sum(bar["score"] for bar in bars) == pytest.approx(1.0, abs=1e-5)
    assert "playground-explanation" not in html


@pytest.mark.parametrize("method", ["integrated_gradients", "occlusion"])
def test_explain_highlights_the_word_that_decided(client_as, version, method):
    response = client_as("analyst").post(
        f"/models/versions/{version.pk}/playground/",
        {"text": "the story was great", "explain": "on", "method": method},
    )

    html = response.content.decode()
    words = scored_words(html)
    assert list(words) == ["the", "story", "was", "great"]
    assert max(words, key=words.get) == "great"
    assert 'class="word word-positive" style="--strength: 100%"' in html


def test_a_busy_server_says_so_in_the_playground(client_as, version, settings):
    from models_app.explanations import _explain_slots

    settings.EXPLAIN_CONCURRENCY = 1
    settings.EXPLAIN_WAIT_SECONDS = 0
    slots = _explain_slots()
    assert slots.acquire(timeout=1)  # an explanation in flight
    try:
        response = client_as("analyst").post(
            f"/models/versions/{version.pk}/playground/",
            {"text": "the story was great", "explain": "on", "method": "occlusion"},
        )
    finally:
        slots.release()

    assert response.status_code == 200
    assert "explaining as many texts as it can at once right now" in response.content.decode()


def test_an_empty_text_gets_a_plain_message(client_as, version):
    response = client_as("analyst").post(
        f"/models/versions/{version.pk}/playground/", {"text": " "}
    )

    assert response.status_code == 200
    assert "Type or paste a text to try the model on." in response.content.decode()


def test_annotators_may_not_use_the_playground(client_as, version):
    response = client_as("annotator").post(
        f"/models/versions/{version.pk}/playground/", {"text": "great"}
    )

    assert response.status_code == 403


@pytest.mark.django_db(transaction=True)
def test_the_deployments_playground_tries_a_live_endpoint(client_as, make_user, tmp_path_factory):
    version = toy_version(tmp_path_factory)
    deployment_deploy(user=make_user("analyst"), version=version, slug="toy", runtime="pytorch")
    client = client_as("analyst")

    card = client.get("/models/playground/").content.decode()
    result = client.post(
        "/models/playground/", {"endpoint": "toy", "text": "great", "explain": "on"}
    ).content.decode()
    missing = client.post("/models/playground/", {"endpoint": "nope", "text": "great"})

    assert '<option value="toy">' in card
    assert 'data-testid="playground-label">positive<' in result
    assert "by endpoint toy (PyTorch, toy-sentiment v1)" in result
    assert list(scored_words(result)) == ["great"]
    assert "Nothing is deployed at nope." in missing.content.decode()


def test_the_batch_card_starts_a_job_and_shows_it(client_as, version, broker):
    snapshot = toy_snapshot(rows=4)
    client = client_as("analyst")

    response = client.post(
        f"/models/versions/{version.pk}/batch-predictions/start/",
        {"source": "snapshot", "snapshot": snapshot.pk, "split": "test", "output_format": "csv"},
    )

    html = response.content.decode()
    batch = BatchPrediction.objects.get()
    assert (batch.snapshot, batch.split, batch.status) == (snapshot, "test", "queued")
    assert 'data-testid="batch-prediction" data-status="queued"' in html
    batch_prediction_execute(batch_id=batch.pk)
    card = client.get(f"/models/versions/{version.pk}/batch-predictions/").content.decode()
    assert f'href="/models/batch-predictions/{batch.pk}/download/"' in card
    assert "Accuracy <strong>1.0000</strong>" in card
    download = client.get(f"/models/batch-predictions/{batch.pk}/download/")
    assert download.status_code == 200
    assert b"".join(download.streaming_content).startswith(b"row,record_id,text,label,prediction")


def test_a_batch_without_its_input_is_shown_again_with_the_error(client_as, version):
    response = client_as("analyst").post(
        f"/models/versions/{version.pk}/batch-predictions/start/",
        {"source": "snapshot", "split": "test", "output_format": "jsonl", "label_column": "y"},
    )

    html = response.content.decode()
    assert "Choose a snapshot." in html
    assert 'value="y"' in html  # the user's values are kept
    assert not BatchPrediction.objects.exists()


def test_cancel_from_the_card(client_as, version, broker):
    client = client_as("analyst")
    client.post(
        f"/models/versions/{version.pk}/batch-predictions/start/",
        {"source": "snapshot", "snapshot": toy_snapshot(rows=2).pk, "output_format": "csv"},
    )
    batch = BatchPrediction.objects.get()

    response = client.post(f"/models/batch-predictions/{batch.pk}/cancel/", HTTP_HX_REQUEST="true")

    batch.refresh_from_db()
    assert batch.status == "cancelled"
    assert 'data-status="cancelled"' in response.content.decode()
