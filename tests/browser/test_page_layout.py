"""Page layout in real headless Chromium (UX pass): a long file name wraps inside its card
instead of widening the page, and a refused labeling setting shows next to its field with the
typed value kept, under the sidebar entry of its section."""

import itertools

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from datasets_app.models import Dataset
from models_app.models import BatchPrediction
from tests.browser.test_deployments import log_in
from tests.datasets_app.factories import imported_dataset
from tests.models_app.batch_helpers import toy_version

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("redis_url")]


@pytest.mark.django_db(transaction=True)
def test_a_long_file_name_wraps_inside_the_batch_card(
    page, live_server, make_user, tmp_path_factory
):
    make_user("analyst", username="ana")
    version = toy_version(tmp_path_factory)
    name = "customer_feedback_export_" + "x" * 180 + ".csv"
    BatchPrediction.objects.create(
        model_version=version,
        source="upload",
        input_filename=name,
        status="failed",
        error_message="Row 3 has no text column `body`. Choose the text column.",
    )
    log_in(page, live_server, "ana")

    page.goto(live_server.url + reverse("models:version_detail", args=[version.pk]))

    batch = page.get_by_test_id("batch-prediction")
    expect(batch).to_contain_text(name)
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], widths
    card = page.get_by_test_id("batch-predictions").bounding_box()
    title = batch.locator(".job-title").bounding_box()
    assert title["x"] + title["width"] <= card["x"] + card["width"]
    expect(page.locator("nav a.active")).to_have_text("Models")


@pytest.mark.django_db(transaction=True)
def test_a_refused_overlap_shows_next_to_its_field(page, live_server, make_user):
    analyst = make_user("analyst", username="ana")
    dataset = imported_dataset(
        analyst,
        "text,label\nhello,\nthere,\n",
        {"text_columns": ["text"], "label_column": "label"},
        report=False,
    )
    log_in(page, live_server, "ana")
    page.goto(live_server.url + reverse("datasets:labeling_settings", args=[dataset.pk]))
    expect(page.locator("nav a.active")).to_have_text("Labeling")

    page.get_by_label("Annotations per record").fill("99")
    page.get_by_label("Order of the queue").select_option("entropy")
    page.get_by_test_id("save-settings").click()

    error = page.get_by_test_id("overlap-error")
    expect(error).to_have_text(
        "The overlap must be from 1 to 10 annotators per record; 99 was given."
    )
    field = page.get_by_label("Annotations per record")
    expect(field).to_have_value("99")
    expect(page.get_by_label("Order of the queue")).to_have_value("entropy")
    field_box, error_box = field.bounding_box(), error.bounding_box()
    assert 0 <= error_box["y"] - (field_box["y"] + field_box["height"]) < 40  # right below it
    assert abs(error_box["x"] - field_box["x"]) < 5
    assert page.locator(".flash-error").count() == 0
    dataset.refresh_from_db()
    assert (dataset.label_overlap, dataset.labeling_order) == (1, "file")

    field.fill("2")
    page.get_by_test_id("save-settings").click()
    expect(page.get_by_role("status").first).to_contain_text("Labeling settings saved.")
    assert Dataset.objects.get(pk=dataset.pk).label_overlap == 2


@pytest.mark.django_db(transaction=True)
def test_cards_keep_their_spacing_in_wrapped_blocks_and_the_review_queue(
    page, live_server, make_user
):
    from datasets_app.models import Record
    from datasets_app.services.labeling import (
        label_schema_set,
        labeling_settings_set,
        record_label_set,
    )

    analyst = make_user("analyst", username="ana")
    dataset = imported_dataset(
        analyst,
        "text,label\nrefund please,\nmy card is lost,\n",
        {"text_columns": ["text"], "label_column": "label"},
        report=False,
    )
    label_schema_set(dataset=dataset, user=analyst, labels=["billing", "cards"])
    labeling_settings_set(dataset=dataset, user=analyst, overlap=2)
    records = list(Record.objects.filter(dataset=dataset))
    for name, label in (("alice", "billing"), ("bob", "cards")):
        person = make_user("annotator", username=name)
        for record in records:
            record_label_set(dataset=dataset, user=person, record_id=record.pk, label=label)
    log_in(page, live_server, "ana")

    def gaps(selector: str) -> list[float]:
        boxes = [item.bounding_box() for item in page.locator(selector).all()]
        return [b["y"] - (a["y"] + a["height"]) for a, b in itertools.pairwise(boxes)]

    page.goto(live_server.url + reverse("datasets:review_queue", args=[dataset.pk]))
    expect(page.get_by_test_id("review-item")).to_have_count(2)
    assert all(gap >= 10 for gap in gaps("[data-testid=review-item]")), gaps(
        "[data-testid=review-item]"
    )
    page.goto(live_server.url + reverse("datasets:dataset_agreement", args=[dataset.pk]))
    expect(page.get_by_test_id("pairs")).to_be_visible()
    assert all(gap >= 16 for gap in gaps("main.content section.card")), gaps(
        "main.content section.card"
    )


@pytest.mark.django_db(transaction=True)
def test_an_endpoint_with_traffic_draws_its_latency_chart(
    page, live_server, make_user, tmp_path_factory
):
    from models_app import runtime
    from models_app.deploy import deployment_deploy
    from models_app.serving import deployment_get_live, deployment_predict
    from tests.models_app.serving_helpers import make_version

    runtime.model_cache.clear()
    analyst = make_user("analyst", username="ana")
    version = make_version(tmp_path_factory)
    deployment_deploy(user=analyst, version=version, slug="reviews", runtime="pytorch")
    for _ in range(3):
        deployment_predict(deployment=deployment_get_live("reviews"), texts=["good"])
    log_in(page, live_server, "ana")

    page.goto(live_server.url + reverse("models:deployment_list"))

    chart = page.get_by_test_id("latency-chart")
    expect(chart).to_be_visible()
    page.wait_for_function(
        "() => window.Chart && window.Chart.getChart(document.querySelector('.latency-chart'))"
    )
    drawn = page.evaluate(
        "() => window.Chart.getChart(document.querySelector('.latency-chart')).data.datasets"
        ".find((d) => d.label === 'requests').data.reduce((a, b) => a + b, 0)"
    )
    assert drawn == 3
    assert "<script" not in page.locator("main").inner_text()
    runtime.model_cache.clear()


@pytest.mark.django_db(transaction=True)
def test_a_refused_promote_stays_in_its_endpoint_card(
    page, live_server, make_user, tmp_path_factory
):
    from models_app import runtime
    from models_app.deploy import deployment_deploy
    from tests.models_app.serving_helpers import make_version

    runtime.model_cache.clear()
    analyst = make_user("analyst", username="ana")
    version = make_version(tmp_path_factory)
    deployment_deploy(user=analyst, version=version, slug="reviews", runtime="pytorch")
    log_in(page, live_server, "ana")
    page.goto(live_server.url + reverse("models:deployment_list"))

    card = page.get_by_test_id("endpoint")
    card.get_by_label("Runtime").select_option("onnx-int8")
    card.get_by_role("button", name="Promote").click()

    error = page.locator("[data-testid=endpoint] [data-testid=endpoint-error]")
    expect(error).to_contain_text("has no finished ONNX int8 export")
    page.wait_for_timeout(6_000)  # past the list's 5 s refresh: the sentence stays
    expect(error).to_be_visible()
    expect(page.locator(".messages [role=status]")).to_have_count(0)
    expect(page.locator(".messages")).to_be_hidden()  # no empty band above the page
    runtime.model_cache.clear()
