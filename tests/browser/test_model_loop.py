"""The model in the loop through the pages in headless Chromium: from the labeling page to a
dataset's loop page, pre-label its unlabeled records (checked in the database), watch the
progress update by itself; and a registered model's alias page from the Models page."""

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from datasets_app.models import RecordSuggestion
from models_app.batch_prediction import batch_prediction_execute
from models_app.models import BatchPrediction
from tests.browser.test_deployments import log_in
from tests.conftest import broker_for_this_process
from tests.models_app.tiny_classifier import save_tiny_classifier
from tests.training_app.retrain_helpers import UNLABELED, labeled_dataset_with_version

pytestmark = pytest.mark.browser


def test_pre_label_from_the_labeling_page_and_see_it_finish(
    page, live_server, make_user, redis_url, tmp_path, transactional_db
):
    analyst = make_user("analyst", username="ana")
    dataset, version = labeled_dataset_with_version(
        save_tiny_classifier(tmp_path / "tiny"), user=analyst
    )
    log_in(page, live_server, "ana")

    with broker_for_this_process(redis_url):
        page.goto(live_server.url + reverse("datasets:labeling"))
        expect(page.get_by_test_id("retrain-loops")).to_contain_text(
            "No dataset is being retrained"
        )
        page.get_by_test_id("model-loop-link").click()
        expect(page.get_by_test_id("retrain-loop-none")).to_be_visible()
        page.get_by_label("Predict with").select_option(f"version:{version.pk}")
        page.get_by_test_id("prelabel-start").click()
        expect(page.get_by_role("status").first).to_contain_text(
            f"Pre-labeling {UNLABELED} unlabeled records with {version}"
        )

    batch = BatchPrediction.objects.get(dataset=dataset)
    batch_prediction_execute(batch_id=batch.pk)  # the worker
    expect(page.get_by_test_id("model-loop-status")).to_contain_text(
        f"{UNLABELED} suggestions stored", timeout=15_000
    )
    assert RecordSuggestion.objects.filter(dataset=dataset).count() == UNLABELED

    page.goto(f"{live_server.url}/models/")
    page.get_by_test_id("alias-history-link").first.click()
    expect(page.get_by_test_id("aliases-empty")).to_be_visible()
    expect(page.get_by_test_id("alias-history-empty")).to_be_visible()
