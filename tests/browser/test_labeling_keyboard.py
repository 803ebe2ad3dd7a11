"""The labeling queue at the keyboard, in real headless Chromium (issue 12): ten records labeled
with keys only, one model suggestion accepted with Enter, one label undone with U and given
again, the keys overlay, the speed line; and a lost connection, during which labels wait in the
page and arrive once when it is back."""

import time

import pytest
from playwright.sync_api import expect

from datasets_app.models import Annotation, LabelChange, Record, RecordSuggestion
from datasets_app.services.labeling import label_schema_set, record_label_set
from tests.datasets_app.factories import imported_dataset

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("redis_url")]

PASSWORD = "correct horse battery staple"
TEXTS = [f"record {number:02d}" for number in range(1, 13)]


def press(page, key: str) -> None:
    """Press ``key`` once labeling.js listens on the page shown now."""
    expect(page.get_by_test_id("label-form")).to_have_attribute("data-keys", "ready")
    page.keyboard.press(key)


def log_in_to_the_queue(page, live_server, make_user):
    analyst = make_user("analyst")
    rows = "".join(f"{text},{'mail' if n % 2 else 'chat'}\n" for n, text in enumerate(TEXTS))
    dataset = imported_dataset(
        analyst, "text,channel\n" + rows, {"text_columns": ["text"]}, report=False
    )
    label_schema_set(dataset=dataset, user=analyst, labels=["spam", "ham", "eggs"])
    make_user("annotator", username="ann")
    page.goto(f"{live_server.url}/")
    page.get_by_label("Username").fill("ann")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    return dataset


@pytest.mark.django_db(transaction=True)
def test_ten_records_by_keyboard_with_an_undo_and_an_accepted_suggestion(
    page, live_server, make_user
):
    dataset = log_in_to_the_queue(page, live_server, make_user)
    RecordSuggestion.objects.create(
        dataset=dataset,
        record=Record.objects.get(text="record 03"),
        label="eggs",
        probability=0.83,
        source="tiny v1",
    )
    before_opening = time.monotonic()
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/label/")
    opened = time.monotonic()
    text = page.get_by_test_id("label-text")
    progress = page.get_by_test_id("labeling-progress")
    suggestion = page.get_by_test_id("suggestion")
    expect(text).to_have_text("record 01")

    # The keys, listed by ?, closed by Esc.
    help_overlay = page.get_by_test_id("help-overlay")
    expect(help_overlay).to_be_hidden()
    press(page, "?")
    expect(help_overlay).to_be_visible()
    expect(help_overlay).to_contain_text("Undo your last label")
    press(page, "1")  # ignored while the keys are shown
    press(page, "Escape")
    expect(help_overlay).to_be_hidden()
    expect(text).to_have_text("record 01")

    # Before any label the speed line is a sentence, not a dash.
    expect(page.get_by_test_id("speed")).to_have_text("no labels yet in this sitting")
    # Undo sits next to Skip, in one group at the right of the pager.
    actions = page.get_by_test_id("record-actions")
    undo_box = actions.get_by_test_id("undo").bounding_box()
    skip_box = actions.get_by_role("link", name="Skip").bounding_box()
    assert 0 <= skip_box["x"] - (undo_box["x"] + undo_box["width"]) <= 16
    assert abs(skip_box["y"] - undo_box["y"]) <= 2
    press(page, "Enter")  # no suggestion here: nothing is given
    expect(page.get_by_test_id("label-status")).to_have_text(
        "This record has no model suggestion to accept: press a label's key."
    )
    press(page, "1")  # spam
    expect(text).to_have_text("record 02")
    expect(page.get_by_test_id("speed")).to_have_text(
        "1 labeled in this sitting; the speed shows from the third label"
    )
    expect(suggestion).to_be_hidden()
    columns = page.get_by_test_id("record-metadata")
    expect(columns).to_contain_text("channel")
    expect(columns).to_contain_text("mail")  # record 02's column, shown without a reload
    press(page, "2")  # ham
    expect(text).to_have_text("record 03")
    expect(columns).to_contain_text("chat")
    expect(suggestion).to_be_visible()
    expect(suggestion).to_contain_text("eggs")
    expect(suggestion).to_contain_text("83%")
    expect(page.locator("button.suggested")).to_have_text("3 eggs")
    press(page, "Enter")  # accept the suggestion
    expect(text).to_have_text("record 04")
    expect(suggestion).to_be_hidden()
    press(page, "1")
    expect(text).to_have_text("record 05")
    press(page, "1")  # a mistake...
    expect(text).to_have_text("record 06")
    expect(progress).to_have_attribute("data-waiting", "0")  # ...already saved on the server
    assert Record.objects.get(text="record 05").label == "spam"
    press(page, "u")  # undone there: back without a label
    expect(text).to_have_text("record 05")
    expect(page.get_by_test_id("label-status")).to_contain_text("has its earlier label back")
    expect(page.get_by_test_id("record-label-state")).to_have_text("No label yet")
    assert Record.objects.get(text="record 05").label == ""
    press(page, "2")  # ham, this time
    expect(text).to_have_text("record 06")  # the record fetched ahead is still there
    for number, key in zip(range(6, 11), "32123", strict=True):
        expect(text).to_have_text(f"record {number:02d}")
        last_press = time.monotonic()
        press(page, key)
    expect(text).to_have_text("record 11")
    expect(progress).to_have_attribute("data-waiting", "0")
    expect(progress).to_contain_text("10 of 12 records labeled")
    expect(progress).to_contain_text("you labeled 10 today")
    speed = page.get_by_test_id("speed")
    expect(speed).to_contain_text("records/min in this sitting (10 labeled)")
    rate = float(speed.inner_text().split(" ")[0])
    # Ten labels over the time since the page was opened, as this test measured it from outside.
    # (shown to one decimal, hence the 0.05)
    assert 10 / ((time.monotonic() - before_opening) / 60) - 0.05 <= rate
    assert rate <= 10 / ((last_press - opened) / 60) + 0.05

    labels = dict(Record.objects.filter(dataset=dataset).values_list("text", "label"))
    assert labels == {
        "record 01": "spam",
        "record 02": "ham",
        "record 03": "eggs",
        "record 04": "spam",
        "record 05": "ham",
        "record 06": "eggs",
        "record 07": "ham",
        "record 08": "spam",
        "record 09": "ham",
        "record 10": "eggs",
        "record 11": "",
        "record 12": "",
    }
    annotations = {a.record.text: a for a in Annotation.objects.select_related("record")}
    assert len(annotations) == 10
    assert annotations["record 03"].suggestion_accepted is True
    assert annotations["record 03"].suggestion_label == "eggs"
    assert annotations["record 01"].suggestion_accepted is None
    assert all(a.undone_at is None and a.client_key for a in annotations.values())
    assert all(a.time_spent_ms is not None for a in annotations.values())
    undone = Record.objects.get(text="record 05")
    assert list(
        LabelChange.objects.filter(record=undone)
        .order_by("id")
        .values_list("old_label", "new_label")
    ) == [("", "spam"), ("spam", ""), ("", "ham")]


@pytest.mark.django_db(transaction=True)
def test_labels_given_while_offline_arrive_once(page, live_server, make_user):
    dataset = log_in_to_the_queue(page, live_server, make_user)
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/label/")
    text = page.get_by_test_id("label-text")
    progress = page.get_by_test_id("labeling-progress")
    banner = page.get_by_test_id("connection-banner")
    expect(text).to_have_text("record 01")
    press(page, "1")
    expect(text).to_have_text("record 02")
    expect(progress).to_have_attribute("data-waiting", "0")
    expect(page.get_by_test_id("label-record")).to_have_attribute("data-ahead", "2")

    page.context.set_offline(True)
    press(page, "2")  # record 02: the page had records 03 and 04 fetched ahead
    expect(text).to_have_text("record 03")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Connection lost")
    expect(banner).to_contain_text("1 label is waiting here")
    press(page, "3")
    expect(text).to_have_text("record 04")
    press(page, "1")  # nothing fetched ahead now, so the page waits for the connection
    expect(text).to_have_text("Loading the next record…")
    expect(banner).to_contain_text("3 labels are waiting")
    expect(progress).to_have_attribute("data-waiting", "3")
    assert Record.objects.get(text="record 02").label == ""
    # Kept in localStorage too: a reload or a closed tab does not lose them.
    stored = page.evaluate(
        "JSON.parse(Object.entries(localStorage)"
        ".find(([name]) => name.startsWith('lepton-labeling-outbox-'))[1])"
    )
    assert [item["label"] for item in stored] == ["ham", "eggs", "spam"]
    assert len({item["key"] for item in stored}) == 3

    page.context.set_offline(False)
    expect(progress).to_have_attribute("data-waiting", "0")
    expect(banner).to_be_hidden()
    expect(text).to_have_text("record 05")
    expect(progress).to_contain_text("4 of 12 records labeled")
    for wanted, label in (("record 02", "ham"), ("record 03", "eggs"), ("record 04", "spam")):
        record = Record.objects.get(text=wanted)
        assert record.label == label
        assert Annotation.objects.filter(record=record).count() == 1
        assert LabelChange.objects.filter(record=record).count() == 1

    # A record fetched ahead is labeled by someone else before this annotator gets to it (say
    # the hold ran out): their label is kept, and the record comes back with the reason.
    expect(page.get_by_test_id("label-record")).to_have_attribute("data-ahead", "2")
    taken = Record.objects.get(text="record 06")
    record_label_set(
        dataset=dataset,
        user=make_user("annotator", username="bo"),
        record_id=taken.pk,
        label="eggs",
    )
    press(page, "1")  # record 05
    expect(text).to_have_text("record 06")
    press(page, "2")
    expect(page.get_by_test_id("label-error")).to_contain_text(
        'While you were reading, bo changed this record\'s label to "eggs".'
    )
    expect(text).to_have_text("record 06")
    expect(page.get_by_test_id("current-label")).to_have_text("eggs")
    press(page, "s")  # fine as it is
    expect(text).to_have_text("record 07")
    expect(page.get_by_test_id("label-error")).to_be_hidden()
    assert Record.objects.get(pk=taken.pk).label == "eggs"
    assert not Annotation.objects.filter(record=taken, user__username="ann").exists()


@pytest.mark.django_db(transaction=True)
def test_a_label_given_after_the_session_ended_waits_for_the_next_login(
    page, live_server, make_user
):
    dataset = log_in_to_the_queue(page, live_server, make_user)
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/label/")
    text = page.get_by_test_id("label-text")
    progress = page.get_by_test_id("labeling-progress")
    expect(text).to_have_text("record 01")
    expect(page.get_by_test_id("label-record")).to_have_attribute("data-ahead", "2")

    page.context.clear_cookies()  # the session ended (expired, or logged out elsewhere)
    press(page, "1")
    expect(text).to_have_text("record 02")
    expect(page.get_by_test_id("label-status")).to_contain_text("you were logged out")
    expect(progress).to_have_attribute("data-waiting", "1")
    assert Record.objects.get(text="record 01").label == ""

    other = page.context.new_page()  # logging in again in another tab
    other.goto(f"{live_server.url}/")
    other.get_by_label("Username").fill("ann")
    other.get_by_label("Password").fill(PASSWORD)
    other.get_by_role("button", name="Log in").click()
    expect(other.get_by_role("link", name="Labeling", exact=True)).to_be_visible()
    other.close()

    expect(progress).to_have_attribute("data-waiting", "0", timeout=20_000)
    expect(page.get_by_test_id("connection-banner")).to_be_hidden()
    record = Record.objects.get(text="record 01")
    assert record.label == "spam"
    assert Annotation.objects.filter(record=record).count() == 1
