"""The dataset page's charts on a small dataset, in real Chromium: record counts are whole
numbers, so the count axes have integer ticks only (issue 9, item 19), and the text-length bins
are named by their whole-character ranges."""

import pytest
from playwright.sync_api import expect

from tests.datasets_app.factories import imported_dataset

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery staple"
SMALL_CSV = "text,label\nhello there,greeting\nhi,greeting\nbye now,farewell\n"


def ticks(page, canvas_id: str, axis: str) -> list:
    return page.evaluate(
        f"Chart.getChart(document.getElementById('{canvas_id}')).scales.{axis}.ticks"
        ".map(t => t.value)"
    )


def test_small_dataset_charts_have_whole_number_count_ticks(
    page, live_server, make_user, redis_url
):
    user = make_user("analyst", username="ana")
    dataset = imported_dataset(user, SMALL_CSV, {"text_columns": ["text"], "label_column": "label"})
    page.goto(f"{live_server.url}/login/?next=/datasets/{dataset.pk}/")
    page.get_by_label("Username").fill("ana")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#length-chart")).to_be_visible()
    page.wait_for_function("Chart.getChart(document.getElementById('length-chart')) !== undefined")

    for canvas_id in ("label-chart", "length-chart"):
        values = ticks(page, canvas_id, "y")
        assert values, canvas_id
        assert all(float(value).is_integer() for value in values), (canvas_id, values)
    names = page.evaluate("Chart.getChart(document.getElementById('length-chart')).data.labels")
    assert names[:3] == ["0", "1", "2"]  # one character per bin on texts this short
    assert names[-1] == "11 or more"
