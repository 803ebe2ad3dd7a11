"""The labeling queue at the keyboard for records that may have several labels, in real headless
Chromium (issue 12): number keys tick and untick labels, Enter saves the ticked set or accepts
the model's suggested set, U undoes the last set given, and sets given while the connection is
lost wait in the page and arrive once. Everything is checked in the database."""

import pytest
from playwright.sync_api import expect

from datasets_app.models import Annotation, LabelChange, Record, RecordSuggestion
from datasets_app.services.labeling import label_schema_set
from tests.datasets_app.factories import imported_dataset

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("redis_url")]

PASSWORD = "correct horse battery staple"
TEXTS = [f"ticket {number:02d}" for number in range(1, 9)]


def press(page, key: str) -> None:
    expect(page.get_by_test_id("label-form")).to_have_attribute("data-keys", "ready")
    page.keyboard.press(key)


def log_in_to_the_queue(page, live_server, make_user):
    analyst = make_user("analyst")
    dataset = imported_dataset(
        analyst,
        "text\n" + "".join(f"{t}\n" for t in TEXTS),
        {"text_columns": ["text"]},
        report=False,
    )
    label_schema_set(
        dataset=dataset, user=analyst, labels=["urgent", "billing", "bug"], multiple=True
    )
    make_user("annotator", username="ann")
    page.goto(f"{live_server.url}/")
    page.get_by_label("Username").fill("ann")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    return dataset


def box(page, label: str):
    return page.locator(f'input[type=checkbox][value="{label}"]')


@pytest.mark.django_db(transaction=True)
def test_several_labels_by_keyboard_with_a_suggested_set_and_an_undo(page, live_server, make_user):
    dataset = log_in_to_the_queue(page, live_server, make_user)
    RecordSuggestion.objects.create(
        dataset=dataset,
        record=Record.objects.get(text="ticket 02"),
        label="bug|urgent",  # as a multi-label model may write it: the page shows list order
        probability=0.74,
        source="tiny v1",
    )
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/label/")
    text = page.get_by_test_id("label-text")
    progress = page.get_by_test_id("labeling-progress")
    status = page.get_by_test_id("label-status")
    suggestion = page.get_by_test_id("suggestion")
    expect(text).to_have_text("ticket 01")
    expect(page.get_by_test_id("label-record")).to_have_attribute("data-queue", "")

    # ticket 01: nothing ticked, no suggestion: Enter says what to do and gives nothing.
    press(page, "Enter")
    expect(status).to_have_text(
        "Tick at least one label with its number key, then press Enter to save."
    )
    press(page, "1")
    press(page, "3")
    expect(box(page, "urgent")).to_be_checked()
    expect(box(page, "bug")).to_be_checked()
    expect(box(page, "billing")).not_to_be_checked()
    expect(text).to_have_text("ticket 01")  # ticking does not move on
    press(page, "Enter")

    # ticket 02: the suggested set is shown and highlighted; Enter accepts it.
    expect(text).to_have_text("ticket 02")
    expect(box(page, "urgent")).not_to_be_checked()  # the new record starts unticked
    expect(suggestion).to_be_visible()
    expect(suggestion).to_contain_text("urgent, bug")
    expect(suggestion).to_contain_text("74%")
    expect(page.locator(".label-toggle.suggested")).to_have_count(2)
    press(page, "Enter")

    # ticket 03: a label ticked, unticked, another ticked.
    expect(text).to_have_text("ticket 03")
    expect(suggestion).to_be_hidden()
    press(page, "2")
    press(page, "2")
    expect(box(page, "billing")).not_to_be_checked()
    press(page, "1")
    press(page, "Enter")

    # ticket 04: a mistake, undone with U once it reached the server, then given again.
    expect(text).to_have_text("ticket 04")
    press(page, "2")
    press(page, "3")
    press(page, "Enter")
    expect(text).to_have_text("ticket 05")
    expect(progress).to_have_attribute("data-waiting", "0")
    assert Record.objects.get(text="ticket 04").label == "billing|bug"
    press(page, "u")
    expect(text).to_have_text("ticket 04")
    expect(status).to_contain_text("has its earlier label back")
    expect(page.get_by_test_id("record-label-state")).to_have_text("No label yet")
    expect(box(page, "billing")).not_to_be_checked()
    assert Record.objects.get(text="ticket 04").label == ""
    press(page, "2")
    press(page, "Enter")
    expect(text).to_have_text("ticket 05")  # the record that was shown before the undo

    # ticket 05: a set given and undone before it was sent (Backspace): simply not sent.
    page.context.set_offline(True)
    press(page, "3")
    press(page, "Enter")
    expect(text).to_have_text("ticket 06")
    press(page, "Backspace")
    expect(text).to_have_text("ticket 05")
    expect(status).to_contain_text("is back without your label")
    # Offline still: sets wait in the page (and in localStorage), then arrive once.
    press(page, "1")
    press(page, "2")
    press(page, "3")
    press(page, "Enter")
    expect(text).to_have_text("ticket 06")
    banner = page.get_by_test_id("connection-banner")
    expect(banner).to_contain_text("Connection lost")
    expect(progress).to_have_attribute("data-waiting", "1")
    stored = page.evaluate(
        "JSON.parse(Object.entries(localStorage)"
        ".find(([name]) => name.startsWith('lepton-labeling-outbox-'))[1])"
    )
    assert [item["label"] for item in stored] == ["urgent|billing|bug"]
    assert Record.objects.get(text="ticket 05").label == ""
    page.context.set_offline(False)
    expect(progress).to_have_attribute("data-waiting", "0")
    expect(banner).to_be_hidden()
    expect(progress).to_contain_text("5 of 8 records labeled")

    labels = dict(Record.objects.filter(dataset=dataset).values_list("text", "label"))
    assert labels == {
        "ticket 01": "urgent|bug",
        "ticket 02": "urgent|bug",
        "ticket 03": "urgent",
        "ticket 04": "billing",
        "ticket 05": "urgent|billing|bug",
        "ticket 06": "",
        "ticket 07": "",
        "ticket 08": "",
    }
    annotations = {a.record.text: a for a in Annotation.objects.select_related("record")}
    assert set(annotations) == {f"ticket 0{n}" for n in range(1, 6)}
    assert annotations["ticket 02"].suggestion_label == "urgent|bug"
    assert annotations["ticket 02"].suggestion_accepted is True
    assert annotations["ticket 01"].suggestion_accepted is None
    assert all(a.undone_at is None and a.client_key for a in annotations.values())
    assert list(
        LabelChange.objects.filter(record__text="ticket 04")
        .order_by("id")
        .values_list("old_label", "new_label")
    ) == [("", "billing|bug"), ("billing|bug", ""), ("", "billing")]
    assert LabelChange.objects.filter(record__text="ticket 05").count() == 1
