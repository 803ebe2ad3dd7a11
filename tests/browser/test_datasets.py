"""Datasets in real headless Chromium, with a real worker importing on Redis: upload with the
progress bar, map columns, watch the import finish live, see the report, browse records; and a
file with a ragged row ending in a plain sentence with its line number."""

import re
import time

import pytest
from django.db import connection
from playwright.sync_api import expect

from datasets_app.models import Dataset
from datasets_app.selectors import search_index_ready

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery staple"
INTENTS = {
    "card_arrival": "When will my new card arrive",
    "lost_pin": "I forgot the PIN of my card",
    "top_up": "My top up did not go through",
    "refund": "How do I get a refund for order",
}


def support_csv() -> tuple[str, int]:
    """220 distinct messages in four intents plus 6 exact copies: a duplicate finding."""
    lines = [
        f"{phrase} number {n},{intent}" for n in range(55) for intent, phrase in INTENTS.items()
    ]
    lines += lines[:6]
    return "text,label\n" + "\n".join(lines) + "\n", len(lines)


def log_in_and_open_datasets(page, live_server, make_user) -> None:
    make_user("analyst", username="ana")
    page.goto(f"{live_server.url}/")
    page.get_by_label("Username").fill("ana")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_test_id("current-user")).to_have_text("ana")
    page.get_by_role("link", name="Datasets", exact=True).click()
    expect(page).to_have_url(f"{live_server.url}/datasets/")
    page.wait_for_load_state("load")  # upload.js has attached its listeners


def upload_with_the_drop_zone(page, path) -> None:
    """Choose the file and press Upload: upload.js sends it by XHR (JSON 201), then navigates."""
    page.set_input_files("#id_file", str(path))
    expect(page.get_by_test_id("dropzone")).to_contain_text(path.name)
    with page.expect_response(
        lambda r: r.url.endswith("/datasets/upload/") and r.request.method == "POST"
    ) as answer:
        page.get_by_role("button", name="Upload", exact=True).click()
    assert answer.value.status == 201  # the XHR path; the plain form would get a 302
    expect(page).to_have_url(re.compile(r"/datasets/\d+/$"))


def test_upload_map_import_watch_report_and_browse(
    page, live_server, redis_worker, make_user, tmp_path
):
    redis_worker()
    csv_text, rows = support_csv()
    path = tmp_path / "support.csv"
    path.write_text(csv_text)
    log_in_and_open_datasets(page, live_server, make_user)

    upload_with_the_drop_zone(page, path)

    expect(page.get_by_test_id("dataset-status")).to_have_text("Uploaded")
    preview = page.get_by_test_id("preview")
    expect(preview).to_contain_text("When will my new card arrive number 0")
    expect(preview.locator("th")).to_have_text(["text", "label"])
    form = page.get_by_test_id("mapping-form")
    form.locator('input[name="text_columns"][value="text"]').check()
    form.locator('input[name="text_columns"][value="label"]').uncheck()
    form.get_by_label("Label column").select_option("label")
    form.get_by_role("button", name="Start import").click()

    # From here on the page changes by itself: htmx polls the job, and HX-Refresh reloads it
    # when the job ends.
    job = page.get_by_test_id("job-progress").first
    expect(job).to_have_attribute("data-status", "succeeded", timeout=60_000)
    expect(job).to_contain_text("Succeeded")
    expect(job).to_contain_text(f"Imported {rows} records")
    expect(page.get_by_test_id("dataset-status")).to_have_text("Ready")
    expect(page.get_by_test_id("record-count")).to_have_text(str(rows))
    expect(page.get_by_test_id("label-chart")).to_be_visible()
    assert page.evaluate(
        "() => Chart.getChart(document.getElementById('label-chart')).data.labels.length"
    ) == len(INTENTS)
    duplicates = page.locator('.finding[data-kind="exact_duplicate"]')
    expect(duplicates).to_contain_text(
        "6 records repeat an earlier record with the same text and label.", timeout=60_000
    )
    expect(duplicates.get_by_role("button", name="Exclude copies, keep the first")).to_be_visible()

    page.get_by_role("link", name="Browse records").click()
    table = page.get_by_test_id("records")
    expect(table.locator("tbody tr")).to_have_count(50)
    expect(table.locator("tbody tr").first).to_contain_text("When will my new card arrive number 0")
    page.get_by_role("link", name="Next page").click()
    expect(table.locator("tbody tr").first).to_contain_text("number 12")
    assert Dataset.objects.get().record_count == rows

    # The worker builds the word index after the import; then search matches words.
    if connection.vendor == "postgresql":
        deadline = time.monotonic() + 60
        while not search_index_ready(Dataset.objects.get()):
            assert time.monotonic() < deadline, "the search index job did not finish"
            time.sleep(0.5)
    filters = page.get_by_test_id("record-filters")
    # Word search finds both words anywhere; without the index (SQLite) the text as typed.
    words = "refund 42" if connection.vendor == "postgresql" else "refund for order number 42"
    filters.get_by_placeholder("Search texts").fill(words)
    filters.get_by_role("button", name="Filter").click()
    expect(table.locator("tbody tr")).to_have_count(1)
    expect(table.locator("tbody tr").first).to_contain_text(
        "How do I get a refund for order number 42"
    )
    if connection.vendor == "postgresql":
        expect(page.get_by_test_id("search-mode")).to_contain_text("Word search")


def test_import_of_a_ragged_file_shows_the_problem_with_its_line_number(
    page, live_server, redis_worker, make_user, tmp_path
):
    redis_worker()
    path = tmp_path / "ragged.csv"
    path.write_text("text,label\nfine,a\nalso fine,b\nnot, fine,a\nfine again,b\n")
    log_in_and_open_datasets(page, live_server, make_user)

    upload_with_the_drop_zone(page, path)

    page.get_by_test_id("mapping-form").get_by_role("button", name="Start import").click()

    problems = page.get_by_test_id("problems")
    expect(problems).to_have_text(
        "Line 4 has 3 fields but the header has 2. "
        "A delimiter inside a value needs the value in double quotes.",
        timeout=60_000,
    )
    expect(page.get_by_test_id("dataset-status")).to_have_text("Import failed", timeout=60_000)
    expect(page.get_by_test_id("status-message")).to_contain_text(
        "Nothing was imported: 1 problem found."
    )
    expect(page.get_by_test_id("mapping-form").get_by_role("button")).to_have_text("Retry import")


def test_dropping_a_file_shows_the_upload_progress_then_opens_the_dataset(
    page, live_server, make_user
):
    log_in_and_open_datasets(page, live_server, make_user)
    held = []
    page.route("**/datasets/upload/", lambda route: held.append(route))

    # A file dropped on the zone (built in the page: a real drag from the desktop cannot be
    # scripted), sent by upload.js with its progress bar.
    page.evaluate(
        """() => {
        const transfer = new DataTransfer();
        transfer.items.add(new File(["text,label\\n" + "dropped row,a\\n".repeat(20000)],
                                    "dropped.csv", {type: "text/csv"}));
        const zone = document.getElementById("dropzone");
        for (const type of ["dragenter", "dragover", "drop"]) {
            zone.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true,
                                                    cancelable: true}));
        }
    }"""
    )
    bar = page.locator(".upload-progress")
    expect(bar).to_be_visible()
    deadline = time.monotonic() + 20
    while not held:
        assert time.monotonic() < deadline, "the dropped file was never sent"
        page.wait_for_timeout(50)
    assert held[0].request.method == "POST"
    assert b"dropped row,a" in held[0].request.post_data_buffer
    held[0].continue_()
    expect(page).to_have_url(re.compile(r"/datasets/\d+/$"))
    expect(page.get_by_test_id("preview")).to_contain_text("dropped row")
    assert Dataset.objects.get().source_filename == "dropped.csv"


def test_assigning_splits_shows_live_progress_then_the_counts(
    page, live_server, redis_worker, make_user, tmp_path
):
    from datasets_app.models import DatasetJob
    from tests.datasets_app.factories import imported_dataset

    redis_worker()
    log_in_and_open_datasets(page, live_server, make_user)
    ana = Dataset._meta.get_field("created_by").related_model.objects.get(username="ana")
    lines = [
        f"{phrase} number {n},{intent}" for n in range(500) for intent, phrase in INTENTS.items()
    ]
    dataset = imported_dataset(
        ana,
        "text,label\n" + "\n".join(lines) + "\n",
        {"text_columns": ["text"], "label_column": "label"},
    )
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/")
    card = page.locator("#splits")
    expect(card.get_by_test_id("split-counts")).to_contain_text("unassigned: 2,000")

    card.get_by_role("button", name="Assign splits").click()

    # The page returns at once with the job; htmx polls it and reloads the page when it ends.
    expect(page).to_have_url(re.compile(rf"/datasets/{dataset.pk}/#splits$"))
    job = card.get_by_test_id("split-job").get_by_test_id("job-progress")
    expect(job).to_be_visible()
    expect(job).to_have_attribute("data-status", "succeeded", timeout=60_000)
    expect(job).to_contain_text("Assigned 1,600 train, 200 validation, 200 test.")
    counts = page.locator("#splits").get_by_test_id("split-counts")
    for badge in ("train: 1,600", "validation: 200", "test: 200"):
        expect(counts).to_contain_text(badge, timeout=10_000)
    expect(counts).not_to_contain_text("unassigned")
    expect(card.get_by_role("button", name="Assign splits")).to_be_enabled()
    assert DatasetJob.objects.get(kind="split").progress == 100
