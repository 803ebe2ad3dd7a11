"""The playground and batch prediction in real headless Chromium: a version page predicts and
explains a text (bar chart, highlighted words), the Deployments page tries a live endpoint, and
a batch prediction runs on a real worker and downloads."""

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from models_app import runtime
from models_app.deploy import deployment_deploy
from models_app.explanations import explain_cache
from tests.models_app.batch_helpers import toy_snapshot, toy_version

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _fresh_caches():
    runtime.model_cache.clear()
    explain_cache.clear()
    yield
    runtime.model_cache.clear()
    explain_cache.clear()


def log_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_test_id("current-user")).to_have_text(username)


def word_scores(page) -> dict[str, float]:
    words = page.get_by_test_id("explained-word")
    return {
        words.nth(i).inner_text(): float(words.nth(i).get_attribute("data-score"))
        for i in range(words.count())
    }


def test_the_version_playground_predicts_charts_and_explains(
    page, live_server, make_user, tmp_path_factory
):
    make_user("viewer", username="vic")
    version = toy_version(tmp_path_factory)
    log_in(page, live_server, "vic")
    page.goto(f"{live_server.url}/models/versions/{version.pk}/")
    playground = page.get_by_test_id("playground")

    playground.get_by_test_id("playground-text").fill("the story was great")
    playground.get_by_test_id("playground-predict").click()

    expect(playground.get_by_test_id("playground-label")).to_have_text("positive")
    expect(playground.get_by_test_id("playground-chart")).to_have_attribute("data-chart", "ready")
    expect(playground.get_by_test_id("explained-word")).to_have_count(0)

    playground.get_by_test_id("playground-explain").click()

    expect(playground.get_by_test_id("explained-word")).to_have_count(4)
    scores = word_scores(page)
    assert list(scores) == ["the", "story", "was", "great"]
    assert max(scores, key=scores.get) == "great"
    expect(page.locator("mark.word-positive", has_text="great")).to_be_visible()

    playground.get_by_test_id("playground-method").select_option("occlusion")
    playground.get_by_test_id("playground-text").fill("a good film")
    playground.get_by_test_id("playground-explain").click()
    expect(playground.get_by_test_id("explained-word")).to_have_text(["a", "good", "film"])
    scores = word_scores(page)
    assert max(scores, key=scores.get) == "good"

    playground.get_by_test_id("playground-text").fill("   ")
    playground.get_by_test_id("playground-predict").click()
    expect(playground.get_by_test_id("playground-error")).to_contain_text(
        "Type or paste a text to try the model on."
    )


@pytest.mark.django_db(transaction=True)
def test_the_deployments_page_tries_a_live_endpoint(page, live_server, make_user, tmp_path_factory):
    analyst = make_user("analyst", username="ana")
    version = toy_version(tmp_path_factory)
    deployment_deploy(user=analyst, version=version, slug="toy", runtime="pytorch")
    log_in(page, live_server, "ana")
    page.goto(f"{live_server.url}/models/deployments/")
    playground = page.get_by_test_id("playground")

    expect(playground.get_by_test_id("playground-endpoint")).to_have_value("toy")
    playground.get_by_test_id("playground-text").fill("it was great")
    playground.get_by_test_id("playground-explain").click()

    expect(playground.get_by_test_id("playground-label")).to_have_text("positive")
    expect(playground.get_by_test_id("playground-result")).to_contain_text(
        "by endpoint toy (PyTorch, toy-sentiment v1)"
    )
    expect(playground.get_by_test_id("explained-word")).to_have_text(["it", "was", "great"])
    expect(playground.get_by_test_id("playground-chart")).to_have_attribute("data-chart", "ready")


def test_a_batch_prediction_runs_on_a_worker_and_downloads(
    page, live_server, redis_worker, make_user, tmp_path_factory
):
    redis_worker(queues="default", OMP_NUM_THREADS="1")
    analyst = make_user("analyst", username="ana")
    version = toy_version(tmp_path_factory)
    snapshot = toy_snapshot(rows=40, user=analyst)
    log_in(page, live_server, "ana")
    page.goto(f"{live_server.url}/models/versions/{version.pk}/")
    card = page.get_by_test_id("batch-predictions")

    card.get_by_label("Snapshot", exact=True).select_option(str(snapshot.pk))
    card.get_by_label("Split", exact=True).select_option("test")
    card.get_by_label("Store as suggestions").check()
    card.get_by_test_id("batch-start").click()

    # The job's progress component reloads the page when it ends.
    expect(page.get_by_test_id("batch-summary")).to_contain_text(
        re.compile(r"Accuracy 1\.0000 · macro-F1 1\.0000 on 20 labelled rows of 20"),
        timeout=120_000,
    )
    expect(page.get_by_test_id("batch-prediction").first).to_contain_text(
        "Stored 20 suggestions on the dataset's records."
    )
    with page.expect_download() as info:
        page.get_by_test_id("batch-download").click()
    download = info.value
    assert download.suggested_filename == f"predictions-{version.batch_predictions.get().pk}.csv"
    lines = Path(download.path()).read_text(encoding="utf-8").splitlines()
    assert lines[0] == "row,record_id,text,label,prediction,score,score:negative,score:positive"
    assert len(lines) == 21
