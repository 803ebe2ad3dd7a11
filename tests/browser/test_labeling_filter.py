"""The labeling queue with more labels than keys (20, Banking77's style of names), in real
headless Chromium: the filter box has the focus, typing narrows the buttons, Enter gives the
first match, ↓ moves to another, and from the empty box Enter accepts the model's suggestion,
Backspace undoes, a number key gives its label and ? shows the keys. Checked in the database."""

import pytest
from playwright.sync_api import expect

from datasets_app.models import Annotation, Record, RecordSuggestion
from datasets_app.services.labeling import label_schema_set
from tests.datasets_app.factories import imported_dataset

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("redis_url")]

PASSWORD = "correct horse battery staple"
LABELS = [
    "activate_my_card",
    "age_limit",
    "apple_pay_or_google_pay",
    "atm_support",
    "automatic_top_up",
    "balance_not_updated_after_bank_transfer",
    "beneficiary_not_allowed",
    "cancel_transfer",
    "card_about_to_expire",
    "card_acceptance",
    "card_arrival",
    "card_delivery_estimate",
    "card_linking",
    "card_not_working",
    "exchange_rate",
    "lost_or_stolen_card",
    "pending_top_up",
    "top_up_failed",
    "top_up_reverted",
    "wrong_amount_of_cash_received",
]
TEXTS = [f"message {number}" for number in range(1, 9)]


@pytest.mark.django_db(transaction=True)
def test_twenty_labels_are_given_by_typing_their_names(page, live_server, make_user):
    assert len(LABELS) == 20
    analyst = make_user("analyst")
    dataset = imported_dataset(
        analyst, "text\n" + "".join(f"{text}\n" for text in TEXTS), {"text_columns": ["text"]}
    )
    label_schema_set(dataset=dataset, user=analyst, labels=LABELS)
    RecordSuggestion.objects.create(
        dataset=dataset,
        record=Record.objects.get(text="message 4"),
        label="exchange_rate",
        probability=0.91,
        source="tiny v1",
    )
    make_user("annotator", username="ann")
    page.goto(f"{live_server.url}/")
    page.get_by_label("Username").fill("ann")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/label/")
    expect(page.get_by_test_id("label-form")).to_have_attribute("data-keys", "ready")
    text = page.get_by_test_id("label-text")
    box = page.get_by_test_id("label-filter")
    count = page.get_by_test_id("filter-count")
    form = page.get_by_test_id("label-form")
    shown = form.locator("button[name=label]:visible")
    expect(text).to_have_text("message 1")
    expect(box).to_be_focused()
    expect(shown).to_have_count(20)

    # Words in any order, _ as a space: one match, Enter gives it.
    page.keyboard.type("stolen card")
    expect(shown).to_have_count(1)
    expect(shown).to_contain_text("lost_or_stolen_card")
    expect(count).to_contain_text("1 of 20 labels")
    page.keyboard.press("Enter")
    expect(text).to_have_text("message 2")
    expect(box).to_have_value("")  # empty again, every label back, still focused
    expect(shown).to_have_count(20)
    expect(box).to_be_focused()

    # Several matches: Enter would give the first; ↓ moves to the second.
    page.keyboard.type("card ac")
    expect(shown).to_have_count(2)  # activate_my_card, card_acceptance
    expect(form.locator("button.filter-active")).to_contain_text("activate_my_card")
    page.keyboard.press("ArrowDown")
    expect(form.locator("button.filter-active")).to_contain_text("card_acceptance")
    page.keyboard.press("Enter")
    expect(text).to_have_text("message 3")

    # Nothing matches: said under the box, Enter gives nothing, Esc empties the box.
    page.keyboard.type("zzz")
    expect(shown).to_have_count(0)
    expect(count).to_contain_text("No label contains “zzz”")
    page.keyboard.press("Enter")
    expect(text).to_have_text("message 3")
    page.keyboard.press("Escape")
    expect(box).to_have_value("")
    expect(shown).to_have_count(20)
    page.keyboard.type("top")  # pending_top_up, automatic_top_up, top_up_failed, top_up_reverted
    expect(shown).to_have_count(4)
    page.keyboard.press("Enter")  # the first in the list's order
    expect(text).to_have_text("message 4")

    # The empty box keeps the queue's keys: Enter accepts the suggestion.
    expect(page.locator("button.suggested")).to_contain_text("exchange_rate")
    page.keyboard.press("Enter")
    expect(text).to_have_text("message 5")
    # Backspace in the empty box undoes the last label (message 4's, saved or not).
    page.keyboard.press("Backspace")
    expect(text).to_have_text("message 4")
    expect(page.get_by_test_id("label-status")).to_contain_text("Undone")
    page.keyboard.type("exch")
    page.keyboard.press("Enter")  # the same label, typed this time
    expect(text).to_have_text("message 5")
    # ? shows the keys (the box's own among them); Esc closes them and the box has the focus.
    help_overlay = page.get_by_test_id("help-overlay")
    page.keyboard.press("?")
    expect(help_overlay).to_be_visible()
    expect(help_overlay).to_contain_text("Type in the label box")
    page.keyboard.press("Escape")
    expect(help_overlay).to_be_hidden()
    expect(box).to_be_focused()
    expect(box).to_have_value("")
    # A number key from the empty box gives its label, as on a page with few labels.
    page.keyboard.press("2")
    expect(text).to_have_text("message 6")
    # Esc leaves the box: the letter keys are the queue's again (S skips); / comes back.
    page.keyboard.press("Escape")
    expect(box).not_to_be_focused()
    page.keyboard.press("s")
    expect(text).to_have_text("message 7")
    page.keyboard.press("/")
    expect(box).to_be_focused()
    page.keyboard.type("wrong cash")
    page.keyboard.press("Enter")
    expect(text).to_have_text("message 8")
    expect(page.get_by_test_id("labeling-progress")).to_have_attribute("data-waiting", "0")

    labels = dict(Record.objects.filter(dataset=dataset).values_list("text", "label"))
    assert labels == {
        "message 1": "lost_or_stolen_card",
        "message 2": "card_acceptance",
        "message 3": "automatic_top_up",
        "message 4": "exchange_rate",
        "message 5": "age_limit",
        "message 6": "",
        "message 7": "wrong_amount_of_cash_received",
        "message 8": "",
    }
    annotations = {a.record.text: a for a in Annotation.objects.select_related("record")}
    assert len(annotations) == 6
    # Typed after the undo, the suggested label still counts as the suggestion accepted.
    assert annotations["message 4"].suggestion_label == "exchange_rate"
    assert annotations["message 4"].suggestion_accepted is True
    assert annotations["message 4"].undone_at is None
    assert annotations["message 1"].suggestion_accepted is None


@pytest.mark.django_db(transaction=True)
def test_a_record_opened_from_the_records_list_is_labeled_by_typing(page, live_server, make_user):
    """The page without the queue (opened from the records list): the same box, Enter gives the
    first match and the page goes back to the list."""
    analyst = make_user("analyst", username="ana")
    dataset = imported_dataset(analyst, "text\nmessage 1\n", {"text_columns": ["text"]})
    label_schema_set(dataset=dataset, user=analyst, labels=LABELS)
    record = Record.objects.get(dataset=dataset)
    page.goto(f"{live_server.url}/")
    page.get_by_label("Username").fill("ana")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    back = f"/datasets/{dataset.pk}/records/"
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/label/?record={record.pk}&next={back}")
    expect(page.get_by_test_id("label-form")).to_have_attribute("data-keys", "ready")
    box = page.get_by_test_id("label-filter")
    shown = page.get_by_test_id("label-form").locator("button[name=label]:visible")

    box.click()
    page.keyboard.type("rate exch")
    expect(shown).to_have_count(1)
    expect(page.get_by_test_id("filter-count")).to_contain_text("Enter gives “exchange_rate”")
    page.keyboard.press("Enter")

    page.wait_for_url(f"{live_server.url}{back}")
    record.refresh_from_db()
    assert record.label == "exchange_rate"


@pytest.mark.django_db(transaction=True)
def test_several_labels_are_ticked_by_typing_and_saved_with_enter(page, live_server, make_user):
    """Where a record may have several labels: Enter in the box ticks the match, Enter in the
    empty box saves the ticked set."""
    analyst = make_user("analyst")
    dataset = imported_dataset(analyst, "text\nmessage 1\nmessage 2\n", {"text_columns": ["text"]})
    label_schema_set(dataset=dataset, user=analyst, labels=LABELS, multiple=True)
    make_user("annotator", username="ann")
    page.goto(f"{live_server.url}/")
    page.get_by_label("Username").fill("ann")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/label/")
    expect(page.get_by_test_id("label-form")).to_have_attribute("data-keys", "ready")
    text = page.get_by_test_id("label-text")
    box = page.get_by_test_id("label-filter")
    expect(text).to_have_text("message 1")
    expect(box).to_be_focused()

    page.keyboard.type("top fail")
    expect(page.get_by_test_id("filter-count")).to_contain_text("Enter ticks “top_up_failed”")
    page.keyboard.press("Enter")
    page.keyboard.type("lost")
    page.keyboard.press("Enter")
    expect(page.locator(".label-toggle.ticked")).to_have_count(2)
    expect(page.locator(".label-toggle:visible")).to_have_count(20)  # the box is empty again
    page.keyboard.press("Enter")  # saves the ticked labels
    expect(text).to_have_text("message 2")
    expect(page.get_by_test_id("labeling-progress")).to_have_attribute("data-waiting", "0")

    # In the list's order, joined as multi-label training reads them.
    assert Record.objects.get(text="message 1").label == "lost_or_stolen_card|top_up_failed"
