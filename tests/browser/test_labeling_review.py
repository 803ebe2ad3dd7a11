"""Overlap and review in real headless Chromium: an analyst sets two annotations per record
and assigns an annotator on the labeling settings page; two annotators disagree; the analyst
decides the record's label on the review page, with the annotations side by side."""

import pytest
from playwright.sync_api import expect

from datasets_app.models import DatasetAssignment, LabelChange, Record, ReviewItem
from datasets_app.services.labeling import label_schema_set, record_label_set
from tests.datasets_app.factories import imported_dataset

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("redis_url")]

PASSWORD = "correct horse battery staple"


@pytest.mark.django_db(transaction=True)
def test_analyst_sets_overlap_assigns_and_decides_a_tie(page, live_server, make_user):
    analyst = make_user("analyst", username="ana")
    dataset = imported_dataset(
        analyst,
        "text,label\nthe card was charged twice,\n",
        {"text_columns": ["text"], "label_column": "label"},
        report=False,
    )
    label_schema_set(dataset=dataset, user=analyst, labels=["billing", "cards"])
    alice = make_user("annotator", username="alice")
    bob = make_user("annotator", username="bob")
    page.goto(f"{live_server.url}/")
    page.get_by_label("Username").fill("ana")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("link", name="Labeling", exact=True).click()
    page.get_by_test_id("labeling-settings-link").click()
    page.get_by_test_id("overlap").fill("2")
    page.get_by_test_id("save-settings").click()
    expect(page.get_by_text("Labeling settings saved.")).to_be_visible()
    page.get_by_test_id("assign-user").select_option(label="alice")
    page.get_by_test_id("assign").click()
    expect(page.get_by_test_id("assigned")).to_contain_text("alice")
    dataset.refresh_from_db()
    assert dataset.label_overlap == 2
    assert list(DatasetAssignment.objects.values_list("user__username", flat=True)) == ["alice"]

    DatasetAssignment.objects.create(dataset=dataset, user=bob, assigned_by=analyst)
    record = Record.objects.get(import_run_id=dataset.active_import_id)
    record_label_set(dataset=dataset, user=alice, record_id=record.pk, label="billing")
    record_label_set(dataset=dataset, user=bob, record_id=record.pk, label="cards")

    page.get_by_test_id("review-link").click()
    item = page.get_by_test_id("review-item")
    expect(item).to_contain_text("the card was charged twice")
    expect(item.get_by_test_id("annotations")).to_contain_text("alice")
    expect(item.get_by_test_id("annotations")).to_contain_text("bob")
    item.get_by_role("button", name="cards").click()
    expect(page.get_by_text('The record is labeled "cards".')).to_be_visible()
    expect(page.get_by_test_id("review-empty")).to_be_visible()
    record.refresh_from_db()
    assert record.label == "cards"
    assert ReviewItem.objects.get().status == "resolved"
    assert LabelChange.objects.get(record=record).user == analyst
