"""The agreement page in real headless Chromium: an analyst opens it from the dataset page and
reads kappa per pair, the heat map and each annotator's figures; a large dataset's first page
shows the progress of its background count and fills in when it is done; later it shows the
kept figures while a worker counts again, then updates itself."""

import pytest
from playwright.sync_api import expect

from datasets_app.models import DatasetJob, Record
from datasets_app.services.labeling import (
    label_schema_set,
    labeling_settings_set,
    record_label_set,
)
from datasets_app.tasks import agreement_recount_task, dataset_job_execute_task
from tests.datasets_app.factories import imported_dataset

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("redis_url")]

PASSWORD = "correct horse battery staple"


@pytest.mark.django_db(transaction=True)
def test_analyst_reads_agreement_of_two_annotators(page, live_server, make_user):
    analyst = make_user("analyst", username="ana")
    dataset = imported_dataset(
        analyst,
        "text,label\nrefund please,\nmy card is lost,\nwhere is my card,\nfees?,\n",
        {"text_columns": ["text"], "label_column": "label"},
        report=False,
    )
    label_schema_set(dataset=dataset, user=analyst, labels=["billing", "cards"])
    labeling_settings_set(dataset=dataset, user=analyst, overlap=2)
    people = [make_user("annotator", username=name) for name in ("alice", "bob")]
    records = list(Record.objects.filter(dataset=dataset).order_by("source_row"))
    given = {
        "alice": ["billing", "cards", "cards", "billing"],
        "bob": ["billing", "cards", "billing", "billing"],
    }
    for person in people:
        for record, label in zip(records, given[person.username], strict=True):
            record_label_set(
                dataset=dataset, user=person, record_id=record.pk, label=label, time_spent_ms=3000
            )

    page.goto(f"{live_server.url}/")
    page.get_by_label("Username").fill("ana")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/")
    page.get_by_test_id("agreement-link").click()

    # 3 of 4 equal; alice 2/2, bob 3/1: chance 0.5*0.75 + 0.5*0.25 = 0.5, kappa 0.5.
    pairs = page.get_by_test_id("pairs")
    expect(pairs).to_contain_text("alice · bob")
    expect(pairs).to_contain_text("75%")
    expect(pairs).to_contain_text("0.500")
    expect(page.get_by_test_id("overlapping-count")).to_have_text("4")
    heat = page.get_by_test_id("confusion")
    expect(heat.locator("td.heat-cell")).to_have_count(4)
    expect(heat).to_contain_text("billing")
    annotators = page.get_by_test_id("annotators")
    expect(annotators).to_contain_text("alice")
    expect(annotators.locator("tr", has_text="bob")).to_contain_text("1,200")  # per hour


@pytest.mark.django_db(transaction=True)
def test_a_large_datasets_page_shows_its_first_count_then_the_kept_figures_and_updates_itself(
    page, live_server, make_user, settings
):
    settings.AGREEMENT_SYNC_ANNOTATIONS = 1  # 2 annotations already count as a large dataset
    analyst = make_user("analyst", username="ana")
    dataset = imported_dataset(
        analyst,
        "text,label\nrefund please,\nmy card is lost,\n",
        {"text_columns": ["text"], "label_column": "label"},
        report=False,
    )
    label_schema_set(dataset=dataset, user=analyst, labels=["billing", "cards"])
    labeling_settings_set(dataset=dataset, user=analyst, overlap=2)
    alice, bob = (make_user("annotator", username=name) for name in ("alice", "bob"))
    first, second = Record.objects.filter(dataset=dataset).order_by("source_row")
    for person in (alice, bob):
        record_label_set(dataset=dataset, user=person, record_id=first.pk, label="billing")
    page.goto(f"{live_server.url}/")
    page.get_by_label("Username").fill("ana")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/agreement/")
    # Nothing counted yet: the page answers at once and a background job counts.
    expect(page.get_by_test_id("agreement-counting")).to_contain_text("Counting agreement…")
    expect(page.get_by_test_id("job-progress")).to_be_visible()
    job = DatasetJob.objects.get(dataset=dataset, kind=DatasetJob.Kind.AGREEMENT)

    dataset_job_execute_task(job.pk)  # what the worker runs

    # The progress polls itself and the page reloads with the figures once the job is done.
    expect(page.get_by_test_id("annotation-count")).to_have_text("2", timeout=15_000)
    expect(page.get_by_test_id("agreement-counting")).to_have_count(0)
    for person in (alice, bob):
        record_label_set(dataset=dataset, user=person, record_id=second.pk, label="cards")

    # The tasks queued by the page go nowhere here: the page shows the kept figures, stale.
    page.reload()
    expect(page.get_by_test_id("agreement-recount")).to_be_visible()
    expect(page.get_by_test_id("annotation-count")).to_have_text("2")

    agreement_recount_task(dataset.pk)  # what the worker runs

    # The page polls itself and shows the fresh figures.
    expect(page.get_by_test_id("annotation-count")).to_have_text("4", timeout=15_000)
    expect(page.get_by_test_id("agreement-recount")).to_have_count(0)
