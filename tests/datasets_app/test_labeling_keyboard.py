"""The labeling page's server side (issue 12, "At the keyboard"): a label sent again with the same
key is applied once, a suggestion shown is recorded as accepted or changed, one's own labels can
be undone (not others', not after someone changed the record, not too late), and the page's
JSON endpoints answer bad input in plain sentences."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from datasets_app.models import Annotation, LabelChange, LabelClaim, Record, RecordSuggestion
from datasets_app.services.labeling import labeling_next, record_label_set
from datasets_app.services.labeling_keyboard import (
    UNDO_MINUTES,
    labeling_submit,
    record_label_undo,
    record_suggestions_shown,
)
from tests.datasets_app.factories import imported_dataset

pytestmark = pytest.mark.usefixtures("redis_url")

# Two labeled in the file, three without a label.
CSV = "text,label\nfirst,pos\nsecond,\nthird,neg\nfourth,\nfifth,\n"
MAPPING = {"text_columns": ["text"], "label_column": "label"}


@pytest.fixture
def dataset(analyst):
    return imported_dataset(analyst, CSV, MAPPING, report=False)


def rec(text: str) -> Record:
    return Record.objects.get(text=text)


def key() -> str:
    return uuid.uuid4().hex


def submit(client, dataset, **body):
    return client.post(
        reverse("datasets:labeling_submit_json", args=[dataset.pk]),
        data=json.dumps(body),
        content_type="application/json",
    )


def undo(client, dataset, record_id):
    return client.post(
        reverse("datasets:labeling_undo_json", args=[dataset.pk]),
        data=json.dumps({"record_id": record_id}),
        content_type="application/json",
    )


# --- idempotent submissions --------------------------------------------------------------------
def test_a_retried_label_is_applied_once(client, make_user, dataset):
    ann = make_user("annotator")
    client.force_login(ann)
    second = rec("second")
    body = {"record_id": second.pk, "label": "pos", "expected_label": "", "key": key()}
    first_answer = submit(client, dataset, **body)
    assert first_answer.status_code == 200, first_answer.content
    assert first_answer.json()["progress"]["labeled"] == 3
    # The answer was lost; the page sends the same label again, with the same key. Without the
    # key it would be refused (the record has a label now) or logged twice.
    again = submit(client, dataset, **body)
    assert again.status_code == 200, again.content
    assert Annotation.objects.filter(record=second).count() == 1
    assert LabelChange.objects.filter(record=second).count() == 1
    dataset.refresh_from_db()
    assert dataset.label_counts == {"pos": 2, "": 2, "neg": 1}
    assert again.json()["progress"]["mine_today"] == 1


def test_a_retried_label_after_undo_is_not_applied_again(client, make_user, dataset):
    ann = make_user("annotator")
    client.force_login(ann)
    second = rec("second")
    body = {"record_id": second.pk, "label": "pos", "expected_label": "", "key": key()}
    assert submit(client, dataset, **body).status_code == 200
    assert undo(client, dataset, second.pk).status_code == 200
    assert submit(client, dataset, **body).status_code == 200  # a late retry of the undone one
    assert rec("second").label == ""
    assert Annotation.objects.get(record=second).undone_at is not None


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_with_one_key_apply_once(make_user, analyst):
    dataset = imported_dataset(analyst, CSV, MAPPING, report=False)
    ann = make_user("annotator")
    record_id = rec("fourth").pk
    same = key()
    barrier = threading.Barrier(4)
    errors: list[Exception] = []

    def send():
        try:
            barrier.wait()
            labeling_submit(
                dataset=dataset,
                user=ann,
                record_id=record_id,
                label="neg",
                expected_label="",
                client_key=same,
            )
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert Annotation.objects.filter(record_id=record_id).count() == 1
    assert LabelChange.objects.filter(record_id=record_id).count() == 1
    dataset.refresh_from_db()
    assert dataset.label_counts["neg"] == 2


def test_a_label_without_a_usable_key_is_refused(client, make_user, dataset):
    client.force_login(make_user("annotator"))
    second = rec("second")
    for bad in ("", "short", "x" * 65, "no spaces allowed"):
        answer = submit(client, dataset, record_id=second.pk, label="pos", key=bad)
        assert answer.status_code == 400
        assert "request key" in answer.json()["error"], bad
    assert rec("second").label == ""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"record_id": "7", "label": "pos"}, "record_id must be a record id"),
        ({"record_id": True, "label": "pos"}, "record_id must be a record id"),
        ({"label": "pos"}, "record_id must be a record id"),
        ({"record_id": 1, "label": 5}, "label must be text"),
        ({"record_id": 1, "label": "pos", "suggestion_probability": "high"}, "between 0 and 1"),
    ],
)
def test_bad_submissions_get_a_sentence(client, make_user, dataset, body, message):
    client.force_login(make_user("annotator"))
    answer = submit(client, dataset, key=key(), **body)
    assert answer.status_code == 400
    assert message in answer.json()["error"]


def test_not_json_is_refused(client, make_user, dataset):
    client.force_login(make_user("annotator"))
    url = reverse("datasets:labeling_submit_json", args=[dataset.pk])
    answer = client.post(url, data="label=pos", content_type="application/json")
    assert answer.status_code == 400
    assert answer.json()["error"] == "The request was not valid JSON."


def test_unknown_label_and_conflict_come_back_with_the_record(client, make_user, dataset):
    ann = make_user("annotator")
    client.force_login(ann)
    second = rec("second")
    answer = submit(client, dataset, record_id=second.pk, label="maybe", key=key())
    assert answer.status_code == 400
    assert '"maybe" is not one of this dataset\'s labels' in answer.json()["error"]
    record_label_set(
        dataset=dataset,
        user=make_user("annotator", username="bo"),
        record_id=second.pk,
        label="neg",
    )
    answer = submit(client, dataset, record_id=second.pk, label="pos", expected_label="", key=key())
    assert answer.status_code == 409
    assert answer.json()["error"].startswith("While you were reading, bo changed")
    assert answer.json()["record"]["id"] == second.pk
    assert answer.json()["record"]["label"] == "neg"
    assert rec("second").label == "neg"


# --- suggestions -------------------------------------------------------------------------------
def suggest(dataset, text: str, label: str, probability: float, source: str = "v1"):
    return RecordSuggestion.objects.create(
        dataset=dataset, record=rec(text), label=label, probability=probability, source=source
    )


def test_suggestion_accepted_changed_or_not_shown_is_recorded(client, make_user, dataset):
    client.force_login(make_user("annotator"))
    suggest(dataset, "second", "pos", 0.91)
    suggest(dataset, "fourth", "pos", 0.55)
    for text, label, shown in (
        ("second", "pos", "pos"),
        ("fourth", "neg", "pos"),
        ("fifth", "neg", ""),
    ):
        answer = submit(
            client,
            dataset,
            record_id=rec(text).pk,
            label=label,
            expected_label="",
            key=key(),
            suggestion_label=shown,
            suggestion_probability=0.9 if shown else None,
            time_spent_ms=1200,
        )
        assert answer.status_code == 200, answer.content
    accepted = {a.record.text: a for a in Annotation.objects.select_related("record")}
    assert accepted["second"].suggestion_accepted is True
    assert accepted["second"].suggestion_label == "pos"
    assert accepted["fourth"].suggestion_accepted is False  # changed
    assert accepted["fourth"].suggestion_shown
    assert accepted["fifth"].suggestion_accepted is None  # none shown
    assert not accepted["fifth"].suggestion_shown
    assert accepted["fifth"].time_spent_ms == 1200


def test_the_page_form_records_the_suggestion_too(client, make_user, dataset):
    """Relabeling from the records page posts the form (no in-page queue)."""
    client.force_login(make_user("annotator"))
    suggest(dataset, "fourth", "neg", 0.7)
    fourth = rec("fourth")
    page = client.get(
        reverse("datasets:labeling_queue", args=[dataset.pk]),
        {"record": fourth.pk, "next": f"/datasets/{dataset.pk}/records/"},
    )
    assert "queue_config" not in page.context
    assert 'name="suggestion_label" value="neg"' in page.content.decode()
    answer = client.post(
        reverse("datasets:labeling_save", args=[dataset.pk, fourth.pk]),
        {
            "label": "neg",
            "expected_label": "",
            "suggestion_label": "neg",
            "suggestion_probability": "0.700000",
        },
    )
    assert answer.status_code == 302
    annotation = Annotation.objects.get(record=fourth)
    assert annotation.suggestion_accepted is True
    assert annotation.suggestion_probability == pytest.approx(0.7)
    assert annotation.client_key == ""


def test_the_newest_suggestion_with_an_offered_label_is_shown(dataset):
    old = suggest(dataset, "second", "neg", 0.6, source="v1")
    suggest(dataset, "second", "spam", 0.99, source="v2")  # not one of the labels: never shown
    shown = record_suggestions_shown(
        dataset=dataset, record_ids=[rec("second").pk, rec("fifth").pk]
    )
    assert shown == {rec("second").pk: {"label": "neg", "probability": 0.6, "source": "v1"}}
    newer = suggest(dataset, "second", "pos", 0.7, source="v3")
    shown = record_suggestions_shown(dataset=dataset, record_ids=[rec("second").pk])
    assert shown[rec("second").pk]["label"] == "pos", (old, newer)


def test_the_queue_page_shows_the_suggestion(client, make_user, dataset):
    client.force_login(make_user("annotator"))
    suggest(dataset, "second", "neg", 0.87)
    page = client.get(reverse("datasets:labeling_queue", args=[dataset.pk]))
    body = page.content.decode()
    assert 'data-testid="suggestion"' in body
    assert "87%" in body
    config = page.context["queue_config"]
    assert config["record"]["suggestion"] == {"label": "neg", "probability": 0.87}


# --- undo --------------------------------------------------------------------------------------
def test_undo_restores_the_label_and_the_place_in_the_queue(client, make_user, dataset):
    ann = make_user("annotator")
    client.force_login(ann)
    second = rec("second")
    assert (
        submit(
            client, dataset, record_id=second.pk, label="neg", expected_label="", key=key()
        ).status_code
        == 200
    )
    answer = undo(client, dataset, second.pk)
    assert answer.status_code == 200, answer.content
    assert answer.json()["record"] == {
        "id": second.pk,
        "text": "second",
        "label": "",
        "meta": "Row 2",
        "metadata": {},
        "suggestion": None,
    }
    second.refresh_from_db()
    assert second.label == ""
    assert second.original_label is None
    annotation = Annotation.objects.get(record=second)
    assert annotation.undone_at is not None
    second.refresh_from_db()
    assert second.annotation_count == 0
    assert list(
        LabelChange.objects.filter(record=second)
        .order_by("id")
        .values_list("old_label", "new_label")
    ) == [("", "neg"), ("neg", "")]  # logged
    dataset.refresh_from_db()
    assert dataset.label_counts == {"": 3, "neg": 1, "pos": 1}
    # Held for the annotator to label again; nobody else is handed it meanwhile.
    assert LabelClaim.objects.filter(record=second, user=ann).exists()
    other = labeling_next(dataset=dataset, user=make_user("annotator", username="cy"))
    assert other.record.text == "fourth"
    # Labeled again: counted once.
    assert (
        submit(
            client, dataset, record_id=second.pk, label="pos", expected_label="", key=key()
        ).status_code
        == 200
    )
    assert rec("second").label == "pos"
    assert Annotation.objects.get(record=second).undone_at is None


def test_undo_of_a_relabel_gives_back_the_files_label(make_user, dataset):
    ann = make_user("annotator")
    first = rec("first")
    labeling_submit(dataset=dataset, user=ann, record_id=first.pk, label="neg", client_key=key())
    assert rec("first").original_label == "pos"
    record = record_label_undo(dataset=dataset, user=ann, record_id=first.pk)
    assert record.label == "pos"
    assert record.original_label is None


def test_only_ones_own_label_can_be_undone(make_user, dataset):
    ann, bo = make_user("annotator"), make_user("annotator", username="bo")
    second = rec("second")
    labeling_submit(dataset=dataset, user=ann, record_id=second.pk, label="neg", client_key=key())
    with pytest.raises(ValidationError, match="You have no label on this record to undo"):
        record_label_undo(dataset=dataset, user=bo, record_id=second.pk)
    assert rec("second").label == "neg"
    record_label_undo(dataset=dataset, user=ann, record_id=second.pk)
    with pytest.raises(ValidationError, match="undone already"):
        record_label_undo(dataset=dataset, user=ann, record_id=second.pk)


def test_undo_is_refused_once_someone_else_changed_the_label(client, make_user, dataset):
    ann, bo = make_user("annotator"), make_user("annotator", username="bo")
    second = rec("second")
    labeling_submit(dataset=dataset, user=ann, record_id=second.pk, label="neg", client_key=key())
    record_label_set(dataset=dataset, user=bo, record_id=second.pk, label="pos")
    client.force_login(ann)
    answer = undo(client, dataset, second.pk)
    assert answer.status_code == 400
    assert answer.json()["error"] == (
        'bo changed this record\'s label to "pos" after you labeled it, so your label can no '
        "longer be undone. Open the record to change it."
    )
    assert rec("second").label == "pos"
    assert Annotation.objects.get(record=second, user=ann).undone_at is None


def test_undo_with_overlap_two_takes_the_vote_back(make_user, analyst, dataset):
    from datasets_app.models import ReviewItem
    from datasets_app.services.labeling import labeling_settings_set, review_item_adjudicate

    labeling_settings_set(dataset=dataset, user=analyst, overlap=2)
    ann, bo = make_user("annotator"), make_user("annotator", username="bo")
    second = rec("second")
    labeling_submit(dataset=dataset, user=ann, record_id=second.pk, label="neg", client_key=key())
    assert rec("second").label == ""  # one vote of two
    labeling_submit(dataset=dataset, user=bo, record_id=second.pk, label="neg", client_key=key())
    assert rec("second").label == "neg"  # resolved by bo's vote, with ann's
    record = record_label_undo(dataset=dataset, user=ann, record_id=second.pk)
    assert record.label == ""  # one vote left: back in the queue for a second one
    assert record.annotation_count == 1
    dataset.refresh_from_db()
    assert dataset.label_counts["neg"] == 1
    # Votes tied, an analyst decided: the annotator's vote can no longer be taken back.
    labeling_submit(dataset=dataset, user=ann, record_id=second.pk, label="pos", client_key=key())
    assert rec("second").label == ""  # pos against neg: to review
    item = ReviewItem.objects.get(record=second, status="open")
    review_item_adjudicate(dataset=dataset, user=analyst, item_id=item.pk, label="pos")
    with pytest.raises(ValidationError) as refused:
        record_label_undo(dataset=dataset, user=bo, record_id=second.pk)
    assert refused.value.messages == [
        f'{analyst.get_username()} changed this record\'s label to "pos" after you labeled it, '
        "so your label can no longer be undone. Open the record to change it."
    ]
    assert rec("second").label == "pos"


def test_undo_is_refused_once_unassigned(make_user, analyst, dataset):
    from django.core.exceptions import PermissionDenied

    from datasets_app.services.labeling import dataset_assign

    ann = make_user("annotator")
    second = rec("second")
    labeling_submit(dataset=dataset, user=ann, record_id=second.pk, label="neg", client_key=key())
    dataset_assign(dataset=dataset, user=analyst, annotator=make_user("annotator", username="di"))
    with pytest.raises(PermissionDenied, match="not assigned to you"):
        record_label_undo(dataset=dataset, user=ann, record_id=second.pk)
    assert rec("second").label == "neg"


def test_undo_is_refused_when_too_late(make_user, dataset):
    ann = make_user("annotator")
    second = rec("second")
    labeling_submit(dataset=dataset, user=ann, record_id=second.pk, label="neg", client_key=key())
    Annotation.objects.filter(record=second).update(
        updated_at=timezone.now() - timedelta(minutes=UNDO_MINUTES + 1)
    )
    with pytest.raises(ValidationError, match="can no longer be undone here"):
        record_label_undo(dataset=dataset, user=ann, record_id=second.pk)
    assert rec("second").label == "neg"


def test_undo_of_an_unknown_record_says_so(client, make_user, dataset):
    client.force_login(make_user("annotator"))
    answer = undo(client, dataset, 10**12)
    assert answer.status_code == 400
    assert "not in this dataset any more" in answer.json()["error"]
    answer = client.post(
        reverse("datasets:labeling_undo_json", args=[dataset.pk]),
        data=json.dumps({"record_id": "x"}),
        content_type="application/json",
    )
    assert answer.json()["error"] == "record_id must be a record id (a whole number)."


# --- fetching ahead ----------------------------------------------------------------------------
def test_fetching_ahead_keeps_the_record_shown_held(client, make_user, dataset):
    ann = make_user("annotator")
    client.force_login(ann)
    shown = labeling_next(dataset=dataset, user=ann).record
    assert shown.text == "second"
    url = reverse("datasets:labeling_next_json", args=[dataset.pk])
    ahead = client.get(url, {"after": shown.pk, "keep": str(shown.pk)}).json()
    assert ahead["record"]["text"] == "fourth"
    assert ahead["progress"]["unlabeled"] == 3
    # Both are held for the annotator: someone else is given neither.
    other = labeling_next(dataset=dataset, user=make_user("annotator", username="cy"))
    assert other.record.text == "fifth"
    # Each fetch holds the kept records longer; a page left alone lets them go.
    LabelClaim.objects.filter(user=ann).update(expires_at=timezone.now() + timedelta(seconds=5))
    client.get(url, {"after": ahead["record"]["id"], "keep": f"{shown.pk},{ahead['record']['id']}"})
    held = LabelClaim.objects.filter(user=ann, record__text__in=["second", "fourth"])
    assert held.count() == 2
    assert all(claim.expires_at > timezone.now() + timedelta(minutes=5) for claim in held)
    bad = client.get(url, {"keep": "1,x"})
    assert bad.status_code == 400
    assert bad.json()["error"] == "keep must be record ids separated by commas."


# --- the API -----------------------------------------------------------------------------------
def test_api_label_with_a_key_and_a_suggestion(api_client_as, dataset):
    api = api_client_as("annotator")
    second = rec("second")
    url = f"/api/v1/datasets/{dataset.pk}/records/{second.pk}/label/"
    body = {
        "label": "neg",
        "expected_label": "",
        "key": key(),
        "suggestion_label": "pos",
        "suggestion_probability": 0.6,
        "time_spent_ms": 900,
    }
    assert api.post(url, body, format="json").status_code == 200
    again = api.post(url, body, format="json")  # a retry: applied once, not a 409
    assert again.status_code == 200, again.content
    annotation = Annotation.objects.get(record=second)
    assert annotation.suggestion_accepted is False
    assert annotation.suggestion_probability == 0.6
    assert LabelChange.objects.filter(record=second).count() == 1
    bad = api.post(url, {**body, "key": "no good"}, format="json")
    assert bad.status_code == 400
    assert "request key must be 8 to 64" in str(bad.json())
    # Without a key the API works as before: a second label is a conflict.
    plain = api.post(url, {"label": "pos", "expected_label": ""}, format="json")
    assert plain.status_code == 409
