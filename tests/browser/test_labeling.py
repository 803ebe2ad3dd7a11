"""Labeling in real headless Chromium: an annotator works through the queue with the keyboard
(number keys label, S skips, B goes back), sees the progress move, and is told in a sentence
when someone else labeled the record meanwhile, instead of overwriting it."""

import pytest
from playwright.sync_api import expect

from datasets_app.models import Record
from datasets_app.services.labeling import record_label_set
from tests.datasets_app.factories import imported_dataset

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("redis_url")]

PASSWORD = "correct horse battery staple"
CSV = "text,label\nalpha,a\nbeta,b\ncharlie,\ndelta,\necho,\n"


def press(page, key: str) -> None:
    """Press ``key`` once labeling.js listens on the page shown now."""
    expect(page.get_by_test_id("label-form")).to_have_attribute("data-keys", "ready")
    page.keyboard.press(key)


@pytest.mark.django_db(transaction=True)
def test_annotator_labels_with_the_keyboard(page, live_server, make_user):
    analyst = make_user("analyst")
    dataset = imported_dataset(
        analyst, CSV, {"text_columns": ["text"], "label_column": "label"}, report=False
    )
    make_user("annotator", username="ann")
    page.goto(f"{live_server.url}/")
    page.get_by_label("Username").fill("ann")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("link", name="Labeling", exact=True).click()
    expect(page.get_by_test_id("labeling")).to_contain_text("40%")
    page.get_by_test_id("start-labeling").click()

    text = page.get_by_test_id("label-text")
    progress = page.get_by_test_id("labeling-progress")
    expect(text).to_have_text("charlie")
    expect(progress).to_contain_text("2 of 5 records labeled")
    press(page, "2")  # the second label, "b"
    expect(text).to_have_text("delta")
    expect(progress).to_contain_text("3 of 5 records labeled")
    expect(progress).to_contain_text("you labeled 1 today")
    assert Record.objects.get(text="charlie").label == "b"

    press(page, "s")  # skip delta
    expect(text).to_have_text("echo")
    press(page, "b")  # back to the last label given
    expect(text).to_have_text("charlie")
    expect(page.get_by_test_id("current-label")).to_have_text("b")

    # Another annotator labels the record shown here before this one chooses.
    page.goto(
        f"{live_server.url}/datasets/{dataset.pk}/label/?after={Record.objects.get(text='charlie').pk}"
    )
    expect(text).to_have_text("delta")
    delta = Record.objects.get(text="delta")
    record_label_set(
        dataset=dataset, user=make_user("annotator", username="bo"), record_id=delta.pk, label="a"
    )
    press(page, "2")
    expect(page.get_by_test_id("label-error")).to_have_text(
        'While you were reading, bo changed this record\'s label to "a". It is shown as it is '
        "now; choose again to change it."
    )
    expect(page.get_by_test_id("current-label")).to_have_text("a")
    assert Record.objects.get(pk=delta.pk).label == "a"
    press(page, "2")  # now knowingly changed
    expect(text).to_have_text("echo")
    expect(progress).to_have_attribute("data-waiting", "0")  # sent in the background
    assert Record.objects.get(pk=delta.pk).label == "b"


@pytest.mark.django_db(transaction=True)
def test_several_labels_are_ticked_with_keys_and_saved_with_enter(page, live_server, make_user):
    from datasets_app.services.labeling import label_schema_set

    analyst = make_user("analyst", username="ana")
    dataset = imported_dataset(
        analyst, "text\nfirst\nsecond\n", {"text_columns": ["text"]}, report=False
    )
    label_schema_set(
        dataset=dataset, user=analyst, labels=["urgent", "billing", "bug"], multiple=True
    )
    page.goto(f"{live_server.url}/")
    page.get_by_label("Username").fill("ana")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/label/")

    text = page.get_by_test_id("label-text")
    expect(text).to_have_text("first")
    press(page, "1")
    press(page, "3")
    expect(page.locator('input[value="urgent"]')).to_be_checked()
    expect(page.locator('input[value="bug"]')).to_be_checked()
    press(page, "3")  # changed my mind
    expect(page.locator('input[value="bug"]')).not_to_be_checked()
    press(page, "2")
    press(page, "Enter")
    expect(text).to_have_text("second")
    # The queue sends the set in the background (tests/browser/test_labeling_multi.py).
    expect(page.get_by_test_id("labeling-progress")).to_have_attribute("data-waiting", "0")
    assert Record.objects.get(text="first").label == "urgent|billing"


@pytest.mark.django_db(transaction=True)
def test_label_list_saved_unchanged_keeps_the_labels(page, live_server, make_user):
    """Issue 9, item 1: the editor showed a template tag split over two lines, and saving it
    unchanged replaced the labels with the tag's two halves."""
    analyst = make_user("analyst", username="ana")
    dataset = imported_dataset(
        analyst, CSV, {"text_columns": ["text"], "label_column": "label"}, report=False
    )
    page.goto(f"{live_server.url}/")
    page.get_by_label("Username").fill("ana")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/label/")

    for round_trip in range(2):  # the imported labels, then the list saved from them
        page.get_by_text("Label list", exact=True).click()
        editor = page.get_by_test_id("label-list")
        expect(editor).to_be_visible()
        expect(editor).to_have_value("a\nb")
        page.get_by_role("button", name="Save the label list").click()
        expect(page.locator("body")).to_contain_text("The label list now has 2 labels.")
        dataset.refresh_from_db()
        assert dataset.label_schema == ["a", "b"], round_trip
        form = page.get_by_test_id("label-form")
        expect(form.get_by_role("button")).to_have_text(["1 a", "2 b"])
    assert "{{" not in page.content()


@pytest.mark.django_db(transaction=True)
def test_bulk_label_asks_first_can_be_undone_and_relabel_comes_back(page, live_server, make_user):
    """Issue 9, items 14 and 15."""
    from datasets_app.services.labeling import label_schema_set

    analyst = make_user("analyst", username="ana")
    dataset = imported_dataset(
        analyst,
        "text,label\nrefund please,\nmy refund is late,other\ncard lost,card\n",
        {"text_columns": ["text"], "label_column": "label"},
        report=False,
    )
    label_schema_set(dataset=dataset, user=analyst, labels=["refund", "card", "other"])
    page.goto(f"{live_server.url}/")
    page.get_by_label("Username").fill("ana")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    records = f"{live_server.url}/datasets/{dataset.pk}/records/?search=refund"
    page.goto(records)

    bulk = page.get_by_test_id("bulk-label")
    bulk.get_by_role("button", name="Label them…").click()  # no label chosen: nothing happens
    expect(page).to_have_url(records)
    bulk.get_by_label("Label for every matching record").select_option("refund")
    bulk.get_by_role("button", name="Label them…").click()
    confirm = page.get_by_test_id("bulk-label-confirm")
    expect(confirm.get_by_test_id("bulk-label-count")).to_have_text("2")
    assert not Record.objects.filter(label="refund").exists()
    confirm.get_by_role("button", name="Label 2 records").click()
    expect(page.locator("body")).to_contain_text("Labeled 2 records “refund”.")
    assert Record.objects.filter(label="refund").count() == 2

    page.get_by_text("Bulk labels (1 that can be undone)").click()
    page.get_by_test_id("bulk-label-undo").click()
    expect(page.locator("body")).to_contain_text("2 records got their earlier label back.")
    assert Record.objects.get(text="my refund is late").label == "other"

    late = page.get_by_role("row").filter(has_text="my refund is late")
    late.get_by_role("link", name="relabel").click()
    expect(page.get_by_test_id("label-text")).to_have_text("my refund is late")
    page.get_by_test_id("label-form").get_by_role("button", name="card").click()
    expect(page).to_have_url(records)
    expect(page.get_by_test_id("records")).to_contain_text("card")
    assert Record.objects.get(text="my refund is late").label == "card"
