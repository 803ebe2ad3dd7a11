"""Likely mislabeled in real headless Chromium: an analyst starts a scan from the dataset page,
the page follows the job to its end and lists the flags, and the review queue takes the
suggested label with one click."""

import pytest
from playwright.sync_api import expect

from datasets_app.models import Record, ReviewItem
from models_app.mislabeled import mislabeled_scan_execute
from models_app.models import BaseModel, MislabeledScan
from tests.conftest import broker_for_this_process
from tests.datasets_app.factories import imported_dataset
from tests.models_app.test_mislabeled import MAPPING, planted_csv
from tests.training_app.tiny_model import save_tiny_bert

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("redis_url")]

PASSWORD = "correct horse battery staple"


@pytest.mark.django_db(transaction=True)
def test_analyst_scans_reads_the_flags_and_accepts_a_suggestion(
    page, live_server, make_user, redis_url, tmp_path
):
    analyst = make_user("analyst", username="ana")
    text, planted = planted_csv(rows=60)
    dataset = imported_dataset(analyst, text, MAPPING, report=False)
    BaseModel.objects.create(
        name="tiny-bert",
        source=BaseModel.Source.LOCAL,
        location=str(save_tiny_bert(tmp_path / "encoder")),
        is_default=True,
    )
    page.goto(f"{live_server.url}/")
    page.get_by_label("Username").fill("ana")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/")
    page.get_by_test_id("mislabeled-link").click()
    expect(page.get_by_test_id("mislabeled-empty")).to_be_visible()

    with broker_for_this_process(redis_url):
        page.get_by_test_id("mislabeled-start").click()
        expect(page.get_by_test_id("job-progress")).to_be_visible()
    scan = MislabeledScan.objects.get(dataset=dataset)
    mislabeled_scan_execute(scan_id=scan.pk)  # as the worker would

    # The progress component notices the end and reloads the page with the flags.
    expect(page.get_by_test_id("flag-table")).to_be_visible()
    scan.refresh_from_db()
    expect(page.get_by_test_id("flag-row")).to_have_count(scan.flagged_count)
    first = page.get_by_test_id("flag-row").first
    suggested = first.locator("strong").inner_text()

    page.get_by_test_id("review-queue-link").click()
    item = page.get_by_test_id("review-item").first
    expect(item.get_by_test_id("suggested")).to_have_text(suggested)
    item.locator("button.btn-primary[data-testid=decide]").click()
    expect(page.get_by_text(f'The record is labeled "{suggested}".')).to_be_visible()

    resolved = ReviewItem.objects.get(status="resolved")
    assert resolved.reason == "likely_mislabeled"
    record = Record.objects.get(pk=resolved.record_id)
    assert record.label == suggested
    assert record.source_row in planted
