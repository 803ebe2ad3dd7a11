"""UX polish: the keyboard labeling page's title bar ends on the page it is (the console's
breadcrumb), its speed line starts as a sentence and Undo sits with Skip; the dataset page links
the review queue, with its open items, once there is something to review or overlap above 1."""

from __future__ import annotations

import pytest
from django.urls import reverse

from datasets_app.models import Record, ReviewItem
from tests.datasets_app.test_labeling_overlap import make_dataset

pytestmark = pytest.mark.usefixtures("redis_url")


def _page_title(html: str) -> str:
    start = html.index('<h1 class="page-title"')
    return html[start : html.index("</h1>", start)]


def test_the_labeling_page_title_is_a_breadcrumb_ending_on_the_page(client, analyst):
    dataset = make_dataset(analyst, 3)
    client.force_login(analyst)

    html = client.get(reverse("datasets:labeling_queue", args=[dataset.pk])).content.decode()

    title = _page_title(html)
    assert f'class="muted">{dataset.name}</a> / Label records' in title
    assert title.rstrip().endswith("Label records")


def test_the_speed_line_is_a_sentence_and_undo_sits_with_skip(client, analyst):
    dataset = make_dataset(analyst, 3)
    client.force_login(analyst)

    html = client.get(reverse("datasets:labeling_queue", args=[dataset.pk])).content.decode()

    assert '<span data-testid="speed">no labels yet in this sitting</span>' in html
    assert "– records/min" not in html
    start = html.index('data-testid="record-actions"')
    actions = html[start : html.index("</div>", start)]
    assert 'data-testid="undo"' in actions
    assert "data-key-skip" in actions


def _buttons(html: str) -> str:
    start = html.index('<div class="row" style="margin:0">')
    return html[start : html.index("</div>", start)]


def test_the_dataset_page_links_the_review_queue_with_its_open_items(client, analyst):
    dataset = make_dataset(analyst, 3)
    client.force_login(analyst)
    url = reverse("datasets:dataset_detail", args=[dataset.pk])

    assert 'data-testid="review-queue-link"' not in client.get(url).content.decode()

    records = list(Record.objects.filter(import_run_id=dataset.active_import_id)[:3])
    for record, status in zip(records, ["open", "open", "resolved"], strict=True):
        ReviewItem.objects.create(
            dataset=dataset, record=record, reason="disagreement", status=status
        )
    buttons = _buttons(client.get(url).content.decode())
    queue = reverse("datasets:review_queue", args=[dataset.pk])
    assert (
        f'<a class="btn" href="{queue}" data-testid="review-queue-link">Review queue (2 open)</a>'
    ) in buttons


def test_the_review_queue_is_linked_when_overlap_is_above_one(client, analyst, make_user):
    dataset = make_dataset(analyst, 3, overlap=2)
    client.force_login(analyst)

    html = client.get(reverse("datasets:dataset_detail", args=[dataset.pk])).content.decode()
    assert "Review queue (0 open)" in _buttons(html)

    client.force_login(make_user("annotator"))
    page = client.get(reverse("datasets:dataset_detail", args=[dataset.pk]))
    assert page.status_code == 200
    assert 'data-testid="review-queue-link"' not in page.content.decode()  # for analysts only
