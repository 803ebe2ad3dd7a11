"""Labeling settings and the review queue (UX pass): a refused setting is named next to its
field with the value kept and nothing saved; empty review lists say how records get there;
times read in seconds and as how long ago."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from datasets_app.models import Dataset, Record
from datasets_app.services.labeling import record_label_set
from tests.datasets_app.test_labeling_overlap import make_dataset

pytestmark = pytest.mark.usefixtures("redis_url")


def test_a_refused_overlap_is_named_next_to_its_field_and_nothing_is_saved(client, analyst):
    dataset = make_dataset(analyst, 2)
    client.force_login(analyst)
    url = reverse("datasets:labeling_settings", args=[dataset.pk])

    page = client.post(url, {"overlap": "99", "order": "entropy"})

    assert page.status_code == 400
    html = page.content.decode()
    overlap_field = html[html.index('<label for="overlap">') : html.index('<label for="order">')]
    assert 'value="99"' in overlap_field
    assert 'aria-invalid="true"' in overlap_field
    assert (
        '<div class="field-error" id="overlap-error" data-testid="overlap-error">The overlap must'
        " be from 1 to 10 annotators per record; 99 was given.</div>"
    ) in overlap_field
    assert 'data-testid="order-error"' not in html
    assert re.search(r'<option value="entropy" selected>', html)  # the choice is kept
    dataset.refresh_from_db()
    assert (dataset.label_overlap, dataset.labeling_order) == (1, "file")


def test_a_refused_order_is_named_next_to_its_field_and_the_overlap_is_not_saved(client, analyst):
    dataset = make_dataset(analyst, 2)
    client.force_login(analyst)
    url = reverse("datasets:labeling_settings", args=[dataset.pk])

    page = client.post(url, {"overlap": "3", "order": "random"})

    assert page.status_code == 400
    html = page.content.decode()
    order_field = html[
        html.index('<label for="order">') : html.index('data-testid="save-settings"')
    ]
    assert 'data-testid="order-error">&quot;random&quot; is not a queue order' in order_field
    assert 'data-testid="overlap-error"' not in html
    dataset.refresh_from_db()
    assert (dataset.label_overlap, dataset.labeling_order) == (1, "file")


def test_an_empty_overlap_is_refused_in_a_sentence(client, analyst):
    dataset = make_dataset(analyst, 2, overlap=2)
    client.force_login(analyst)

    page = client.post(reverse("datasets:labeling_settings", args=[dataset.pk]), {"overlap": ""})

    assert page.status_code == 400
    assert "The overlap must be a whole number from 1 to 10" in page.content.decode()
    assert Dataset.objects.get(pk=dataset.pk).label_overlap == 2


def test_an_empty_review_queue_says_how_records_get_there(client, analyst):
    dataset = make_dataset(analyst, 2)
    client.force_login(analyst)
    url = reverse("datasets:review_queue", args=[dataset.pk])

    html = client.get(url).content.decode()

    empty = html[html.index('data-testid="review-empty"') :]
    assert "Nothing to review" in empty
    assert f'href="{reverse("datasets:labeling_settings", args=[dataset.pk])}"' in empty
    assert f'href="{reverse("models:dataset_mislabeled", args=[dataset.pk])}"' in empty
    assert "No open review items" not in html  # the stored status is not shown
    resolved = client.get(url, {"status": "resolved"}).content.decode()
    assert "No decisions yet" in resolved
    dismissed = client.get(url, {"status": "dismissed"}).content.decode()
    assert "Nothing dismissed" in dismissed


def test_an_overlap_of_two_drops_the_settings_hint_from_the_empty_queue(client, analyst):
    dataset = make_dataset(analyst, 2, overlap=2)
    client.force_login(analyst)

    html = client.get(reverse("datasets:review_queue", args=[dataset.pk])).content.decode()

    empty = html[html.index('data-testid="review-empty"') :]
    assert "one annotation per record" not in empty


def test_review_items_show_time_spent_in_seconds(client, analyst, make_user):
    dataset = make_dataset(analyst, 1, overlap=2)
    record = Record.objects.get(import_run_id=dataset.active_import_id)
    for name, value in (("alice-t", "a"), ("bob-t", "b")):
        record_label_set(
            dataset=dataset,
            user=make_user("annotator", username=name),
            record_id=record.pk,
            label=value,
            time_spent_ms=2345,
        )
    client.force_login(analyst)

    html = client.get(reverse("datasets:review_queue", args=[dataset.pk])).content.decode()

    table = html[html.index('data-testid="annotations"') : html.index("</table>")]
    assert table.count("<td>2.3 s</td>") == 2
    assert " ms<" not in table
    assert re.findall(r'<td title="[^"]+">(now|[^<]*ago)</td>', table)


def test_the_review_tabs_count_their_items_and_say_when_only_some_are_shown(
    client, analyst, make_user
):
    from datasets_app.models import ReviewItem

    dataset = make_dataset(analyst, 3, overlap=2)
    records = list(Record.objects.filter(import_run_id=dataset.active_import_id))
    alice, bob = make_user("annotator"), make_user("annotator")
    for record in records:
        for person, value in ((alice, "a"), (bob, "b")):
            record_label_set(dataset=dataset, user=person, record_id=record.pk, label=value)
    ReviewItem.objects.filter(record_id=records[0].pk).update(status="dismissed")
    client.force_login(analyst)
    url = reverse("datasets:review_queue", args=[dataset.pk])

    html = client.get(url).content.decode()

    tabs = html[html.index('data-testid="review-statuses"') :]
    tabs = tabs[: tabs.index("</p>")]
    assert "<strong>Open (2)</strong>" in tabs
    assert ">Resolved (0)</a>" in tabs
    assert ">Dismissed (1)</a>" in tabs
    assert 'data-testid="review-more"' not in html
    with pytest.MonkeyPatch.context() as patch:
        from datasets_app import views_review
        from datasets_app.selectors import review_items_for_page

        patch.setattr(
            views_review,
            "review_items_for_page",
            lambda **kwargs: review_items_for_page(**kwargs, limit=1),
        )
        limited = client.get(url).content.decode()
    assert "The first 1 of 2 are shown; each one decided brings up the next." in limited


def _tie(dataset, make_user):
    """One record on which two annotators disagree: an open review item."""
    record = Record.objects.filter(import_run_id=dataset.active_import_id).first()
    for name, value in (("alice-r", "a"), ("bob-r", "b")):
        record_label_set(
            dataset=dataset,
            user=make_user("annotator", username=name),
            record_id=record.pk,
            label=value,
        )
    return record


def test_an_empty_open_queue_says_what_was_decided_and_where_to_go_next(client, analyst, make_user):
    from datasets_app.models import ReviewItem

    dataset = make_dataset(analyst, 1, overlap=2)
    _tie(dataset, make_user)
    ReviewItem.objects.filter(dataset=dataset).update(status="dismissed")
    client.force_login(analyst)
    url = reverse("datasets:review_queue", args=[dataset.pk])

    html = client.get(url).content.decode()
    resolved = client.get(url, {"status": "resolved"}).content.decode()

    empty = html[html.index('data-testid="review-empty"') :]
    assert "All 1 item so far was decided or dismissed" in empty
    assert 'href="?status=dismissed"' in empty
    nexts = empty[empty.index('data-testid="review-empty-next"') :]
    assert f'href="{reverse("datasets:dataset_agreement", args=[dataset.pk])}"' in nexts
    assert f'href="{reverse("datasets:labeling_queue", args=[dataset.pk])}"' in nexts
    assert "waits for a decision" not in resolved  # none open


def test_a_resolved_tab_without_decisions_points_at_the_open_items(client, analyst, make_user):
    dataset = make_dataset(analyst, 1, overlap=2)
    _tie(dataset, make_user)
    client.force_login(analyst)

    html = client.get(
        reverse("datasets:review_queue", args=[dataset.pk]), {"status": "resolved"}
    ).content.decode()

    assert "No decisions yet" in html
    assert '<a href="?status=open">1 open item</a> waits for a decision.' in html


def test_an_item_whose_record_left_the_import_offers_only_dismiss(client, analyst, make_user):
    from django.utils import timezone

    from datasets_app.models import DatasetJob

    dataset = make_dataset(analyst, 1, overlap=2)
    _tie(dataset, make_user)
    newer = DatasetJob.objects.create(
        dataset=dataset, kind="import", status="succeeded", finished_at=timezone.now()
    )
    Dataset.objects.filter(pk=dataset.pk).update(active_import=newer)
    client.force_login(analyst)

    html = client.get(reverse("datasets:review_queue", args=[dataset.pk])).content.decode()

    item = html[html.index('data-testid="review-item"') :]
    assert "not in the dataset's current import any more" in item
    assert "dismiss the item" in item
    assert 'data-testid="decide"' not in item
    assert 'data-testid="dismiss"' in item
