"""Several annotators per record (overlap), majority and review, assignment, uncertainty order."""

from __future__ import annotations

import threading
import time

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from datasets_app.models import (
    Annotation,
    Dataset,
    LabelChange,
    LabelClaim,
    Record,
    RecordSuggestion,
    ReviewItem,
)
from datasets_app.selectors import (
    dataset_list_for_user,
    datasets_needing_labels,
    record_distribution,
)
from datasets_app.services.labeling import (
    dataset_assign,
    dataset_unassign,
    label_schema_set,
    labeling_next,
    labeling_settings_set,
    majority_label,
    record_label_set,
    review_item_add,
    review_item_adjudicate,
    review_item_dismiss,
)
from tests.datasets_app.factories import imported_dataset

pytestmark = pytest.mark.usefixtures("redis_url")

MAPPING = {"text_columns": ["text"], "label_column": "label"}


def make_dataset(analyst, count: int, *, overlap: int = 1) -> Dataset:
    rows = "\n".join(f"text {i}," for i in range(count))
    dataset = imported_dataset(analyst, f"text,label\n{rows}\n", MAPPING, report=False)
    label_schema_set(dataset=dataset, user=analyst, labels=["a", "b", "c"])
    return labeling_settings_set(dataset=dataset, user=analyst, overlap=overlap)


def recount(dataset) -> dict[str, int]:
    active = Record.objects.filter(import_run_id=dataset.active_import_id, is_excluded=False)
    return record_distribution(active)[1]


def label(dataset, user, record, value):
    return record_label_set(
        dataset=dataset, user=user, record_id=record.pk, label=value, expected_label=record.label
    )


# --- majority ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("labels", "winner"),
    [
        (["a"], "a"),
        (["a", "a"], "a"),
        (["a", "b"], None),  # a tie
        (["a", "b", "a"], "a"),
        (["a", "b", "c"], None),  # no strict majority
        (["a", "a", "b", "b"], None),
        (["b", "b", "b", "a", "c"], "b"),
        ([], None),
    ],
)
def test_majority_is_strict(labels, winner):
    assert majority_label(labels) == winner


# --- settings ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overlap", "message"),
    [
        (0, "The overlap must be from 1 to 10 annotators per record; 0 was given."),
        (11, "The overlap must be from 1 to 10 annotators per record; 11 was given."),
        ("two", 'The overlap must be a whole number from 1 to 10; "two" is not.'),
    ],
)
def test_bad_overlaps_are_refused(analyst, overlap, message):
    dataset = make_dataset(analyst, 2)
    with pytest.raises(ValidationError) as refused:
        labeling_settings_set(dataset=dataset, user=analyst, overlap=overlap)
    assert refused.value.messages == [message]
    dataset.refresh_from_db()
    assert dataset.label_overlap == 1


def test_bad_order_is_refused_and_annotators_cannot_change_settings(analyst, make_user):
    dataset = make_dataset(analyst, 2)
    with pytest.raises(ValidationError, match='"random" is not a queue order'):
        labeling_settings_set(dataset=dataset, user=analyst, order="random")
    with pytest.raises(PermissionDenied):
        labeling_settings_set(dataset=dataset, user=make_user("annotator"), overlap=2)


# --- overlap in the queue ------------------------------------------------------------------------
def test_overlap_two_hands_a_record_to_two_people_then_majority_or_review(analyst, make_user):
    dataset = make_dataset(analyst, 3, overlap=2)
    alice, bob, carol = (make_user("annotator") for _ in range(3))
    first = labeling_next(dataset=dataset, user=alice).record
    assert labeling_next(dataset=dataset, user=bob).record == first  # two people needed
    assert labeling_next(dataset=dataset, user=carol).record != first  # but not three
    label(dataset, alice, first, "a")
    first.refresh_from_db()
    assert (first.label, first.annotation_count) == ("", 1)  # waiting for the second
    # Alice is never given the record again: she annotated it.
    assert labeling_next(dataset=dataset, user=alice, after=first.pk).record != first
    label(dataset, bob, first, "a")
    first.refresh_from_db()
    assert (first.label, first.annotation_count) == ("a", 2)
    # A tie goes to review and keeps no label.
    second = Record.objects.get(import_run_id=dataset.active_import_id, text="text 1")
    label(dataset, alice, second, "a")
    label(dataset, bob, second, "b")
    second.refresh_from_db()
    assert second.label == ""
    item = ReviewItem.objects.get(record=second)
    assert (item.reason, item.status) == ("disagreement", "open")
    assert item.detail == {"labels": {"a": 1, "b": 1}}
    dataset.refresh_from_db()
    assert dataset.label_counts == recount(dataset) == {"a": 1, "": 2}
    # Annotations keep who, what and how.
    assert set(Annotation.objects.filter(record=second).values_list("user", "label")) == {
        (alice.pk, "a"),
        (bob.pk, "b"),
    }


def test_overlap_three_two_to_one_resolves_to_the_majority(analyst, make_user):
    dataset = make_dataset(analyst, 1, overlap=3)
    people = [make_user("annotator") for _ in range(3)]
    record = Record.objects.get(import_run_id=dataset.active_import_id)
    for person, value in zip(people, ["b", "a", "b"], strict=True):
        label(dataset, person, record, value)
    record.refresh_from_db()
    assert record.label == "b"
    assert not ReviewItem.objects.exists()
    assert LabelChange.objects.get(record=record).new_label == "b"


def test_adjudication_sets_the_label_logged_and_closes_the_items(analyst, make_user):
    dataset = make_dataset(analyst, 1, overlap=2)
    alice, bob = make_user("annotator"), make_user("annotator")
    record = Record.objects.get(import_run_id=dataset.active_import_id)
    label(dataset, alice, record, "a")
    label(dataset, bob, record, "b")
    flagged = review_item_add(
        dataset=dataset, record_id=record.pk, reason="likely_mislabeled", suggested_label="c"
    )
    item = ReviewItem.objects.get(record=record, reason="disagreement")
    with pytest.raises(PermissionDenied):
        review_item_adjudicate(dataset=dataset, user=alice, item_id=item.pk, label="a")
    with pytest.raises(ValidationError, match='"z" is not one of this dataset'):
        review_item_adjudicate(dataset=dataset, user=analyst, item_id=item.pk, label="z")
    done = review_item_adjudicate(dataset=dataset, user=analyst, item_id=item.pk, label="b")
    assert (done.status, done.resolved_label, done.resolved_by) == ("resolved", "b", analyst)
    flagged.refresh_from_db()
    assert flagged.status == "resolved"  # every open item of the record
    record.refresh_from_db()
    assert record.label == "b"
    change = LabelChange.objects.get(record=record)
    assert (change.old_label, change.new_label, change.user) == ("", "b", analyst)
    dataset.refresh_from_db()
    assert dataset.label_counts == recount(dataset) == {"b": 1}
    with pytest.raises(ValidationError, match="This review item was resolved already"):
        review_item_adjudicate(dataset=dataset, user=analyst, item_id=item.pk, label="a")


def test_review_items_from_a_model_are_one_per_record_and_reason(analyst):
    dataset = make_dataset(analyst, 2)
    record = Record.objects.filter(import_run_id=dataset.active_import_id).first()
    first = review_item_add(
        dataset=dataset,
        record_id=record.pk,
        reason="likely_mislabeled",
        suggested_label="a",
        detail={"probability": 0.9},
    )
    again = review_item_add(
        dataset=dataset, record_id=record.pk, reason="likely_mislabeled", suggested_label="b"
    )
    assert again.pk == first.pk
    assert (again.suggested_label, again.detail) == ("b", {"probability": 0.9})
    with pytest.raises(ValidationError, match='"bored" is not a review reason'):
        review_item_add(dataset=dataset, record_id=record.pk, reason="bored")
    other = make_dataset(analyst, 1)
    with pytest.raises(ValidationError, match="not in this dataset"):
        review_item_add(dataset=other, record_id=record.pk, reason="likely_mislabeled")
    review_item_dismiss(dataset=dataset, user=analyst, item_id=first.pk)
    record.refresh_from_db()
    assert record.label == ""  # dismissing changes no label


def test_a_retried_submission_with_the_same_key_is_applied_once(analyst, make_user):
    dataset = make_dataset(analyst, 2, overlap=2)
    alice = make_user("annotator")
    record = Record.objects.filter(import_run_id=dataset.active_import_id).first()
    for _ in range(2):
        saved = record_label_set(
            dataset=dataset,
            user=alice,
            record_id=record.pk,
            label="a",
            client_key="k-1",
            time_spent_ms=1234,
            suggestion_label="a",
            suggestion_probability=0.8,
            suggestion_accepted=True,
        )
    annotation = Annotation.objects.get(record=record)
    assert saved.annotation == annotation
    assert (annotation.time_spent_ms, annotation.suggestion_accepted) == (1234, True)
    record.refresh_from_db()
    assert record.annotation_count == 1


# --- assignment ----------------------------------------------------------------------------------
def test_annotators_see_only_datasets_assigned_to_them(analyst, make_user, client):
    open_one = make_dataset(analyst, 1)
    assigned = make_dataset(analyst, 1)
    alice, bob = make_user("annotator"), make_user("annotator")
    with pytest.raises(PermissionDenied):
        dataset_assign(dataset=assigned, user=alice, annotator=bob)
    with pytest.raises(ValidationError, match="is not an annotator"):
        dataset_assign(dataset=assigned, user=analyst, annotator=make_user("viewer"))
    dataset_assign(dataset=assigned, user=analyst, annotator=alice)
    assert set(dataset_list_for_user(user=alice)) == {open_one, assigned}
    assert set(dataset_list_for_user(user=bob)) == {open_one}
    assert set(dataset_list_for_user(user=analyst)) >= {open_one, assigned}
    listed = {row["dataset"] for row in datasets_needing_labels(user=bob)}  # the Labeling page
    assert listed == {open_one}
    assert {row["dataset"] for row in datasets_needing_labels(user=alice)} == {open_one, assigned}
    with pytest.raises(PermissionDenied, match="not assigned to you"):
        labeling_next(dataset=assigned, user=bob)
    record = Record.objects.get(import_run_id=assigned.active_import_id)
    with pytest.raises(PermissionDenied, match="not assigned to you"):
        record_label_set(dataset=assigned, user=bob, record_id=record.pk, label="a")
    assert labeling_next(dataset=assigned, user=alice).record == record
    # Pages and API: a plain 404 for the unassigned, not a crash.
    client.force_login(bob)
    assert client.get(reverse("datasets:labeling_queue", args=[assigned.pk])).status_code == 404
    assert client.get(f"/api/v1/datasets/{assigned.pk}/labeling/next/").status_code == 404
    client.force_login(alice)
    assert client.get(reverse("datasets:labeling_queue", args=[assigned.pk])).status_code == 200
    dataset_unassign(dataset=assigned, user=analyst, annotator=alice)
    assert not LabelClaim.objects.filter(user=alice).exists()  # her hold let go


# --- uncertainty order ---------------------------------------------------------------------------
def test_uncertainty_orders_hand_out_the_least_certain_first(analyst):
    dataset = make_dataset(analyst, 5)
    records = list(Record.objects.filter(import_run_id=dataset.active_import_id).order_by("id"))
    # probability (top-1), margin, entropy per record; the last has no suggestion.
    figures = [(0.9, 0.8, 0.3), (0.4, 0.05, 1.0), (0.6, 0.3, 0.9), (0.5, 0.2, 1.05)]
    RecordSuggestion.objects.bulk_create(
        RecordSuggestion(
            dataset=dataset,
            record=record,
            label="a",
            probability=p,
            margin=m,
            entropy=e,
            source="m v1",
        )
        for record, (p, m, e) in zip(records, figures, strict=False)
    )

    def walk(order):
        labeling_settings_set(dataset=dataset, user=analyst, order=order)
        seen, after = [], None
        for _ in range(5):
            item = labeling_next(dataset=dataset, user=analyst, after=after)
            seen.append(records.index(item.record))
            after = item.record.pk
        return seen

    assert walk("least_confidence") == [1, 3, 2, 0, 4]
    assert walk("margin") == [1, 3, 2, 0, 4]
    assert walk("entropy") == [3, 1, 2, 0, 4]
    assert walk("file") == [0, 1, 2, 3, 4]


# --- concurrency ---------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("overlap", [1, 2])
def test_eight_concurrent_annotators_at_overlap(on_postgres, redis_url, make_user, overlap):
    analyst = make_user("analyst")
    count = 24
    dataset = make_dataset(analyst, count, overlap=overlap)
    people = [make_user("annotator") for _ in range(8)]
    given: dict[int, list[int]] = {person.pk: [] for person in people}
    too_many: list[tuple[int, int]] = []
    barrier = threading.Barrier(len(people))
    failures: list[BaseException] = []

    def work(person):
        try:
            barrier.wait()
            after, waits = None, 0
            while True:
                item = labeling_next(dataset=dataset, user=person, after=after)
                if item.record is None:
                    # A record being claimed or saved right now is skipped (SKIP LOCKED): the
                    # queue is over only once none is left that this person may still take.
                    left = (
                        Record.objects.filter(
                            import_run_id=dataset.active_import_id, annotation_count__lt=overlap
                        )
                        .exclude(pk__in=given[person.pk])
                        .exists()
                    )
                    if not left or waits > 200:
                        break
                    waits += 1
                    time.sleep(0.02)
                    continue
                record = item.record
                given[person.pk].append(record.pk)
                # Nobody else may hold or have annotated it beyond what it needs. People, not
                # rows: the two reads are separate statements, so a holder who saves in between
                # shows up in both (hold, then annotation) and must count once.
                holders = set(
                    LabelClaim.objects.filter(record=record, expires_at__gt=timezone.now())
                    .exclude(user=person)
                    .values_list("user_id", flat=True)
                )
                annotators = set(
                    Annotation.objects.filter(record=record)
                    .exclude(user=person)
                    .values_list("user_id", flat=True)
                )
                others = len(holders | annotators)
                if others + 1 > overlap:
                    too_many.append((record.pk, others + 1))
                record_label_set(
                    dataset=dataset,
                    user=person,
                    record_id=record.pk,
                    label="ab"[record.pk % 2],
                    expected_label="",
                )
                after = record.pk
        except BaseException as exc:  # reported below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(person,)) for person in people]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert too_many == []
    for records in given.values():
        assert len(records) == len(set(records))  # nobody was given a record twice
    handed = [record for records in given.values() for record in records]
    assert len(handed) == count * overlap  # every record to exactly as many as it needs
    assert Annotation.objects.filter(dataset=dataset).count() == count * overlap  # none lost
    assert set(
        Record.objects.filter(import_run_id=dataset.active_import_id).values_list(
            "annotation_count", flat=True
        )
    ) == {overlap}
    dataset.refresh_from_db()
    evens = sum(1 for pk in set(handed) if pk % 2 == 0)
    assert dataset.label_counts == recount(dataset) == {"a": evens, "b": count - evens}
    assert LabelChange.objects.filter(dataset=dataset).count() == count
    assert not ReviewItem.objects.exists()


# --- pages and API -------------------------------------------------------------------------------
def test_settings_page_sets_overlap_and_order_and_assigns(client, analyst, make_user):
    dataset = make_dataset(analyst, 2)
    alice = make_user("annotator", username="alice-annotates")
    url = reverse("datasets:labeling_settings", args=[dataset.pk])
    client.force_login(make_user("annotator"))
    assert client.get(url).status_code == 403
    client.force_login(analyst)
    page = client.get(url)
    assert page.status_code == 200
    assert "alice-annotates" in page.content.decode()  # offered to assign
    refused = client.post(url, {"overlap": "0", "order": "file"}, follow=True)
    assert "The overlap must be from 1 to 10 annotators per record; 0 was given." in (
        refused.content.decode()
    )
    client.post(url, {"overlap": "3", "order": "entropy"})
    dataset.refresh_from_db()
    assert (dataset.label_overlap, dataset.labeling_order) == (3, "entropy")
    assign = reverse("datasets:labeling_assign", args=[dataset.pk])
    client.post(assign, {"user": alice.pk})
    assert list(dataset.assignments.values_list("user", flat=True)) == [alice.pk]
    missing = client.post(assign, {"user": "nobody"}, follow=True)
    assert "Choose an annotator to assign." in missing.content.decode()
    client.post(assign, {"remove": alice.pk})
    assert not dataset.assignments.exists()


def test_review_page_shows_annotations_side_by_side_and_decides(client, analyst, make_user):
    dataset = make_dataset(analyst, 1, overlap=2)
    alice = make_user("annotator", username="alice-r")
    bob = make_user("annotator", username="bob-r")
    record = Record.objects.get(import_run_id=dataset.active_import_id)
    label(dataset, alice, record, "a")
    label(dataset, bob, record, "c")
    item = ReviewItem.objects.get(record=record)
    client.force_login(analyst)
    page = client.get(reverse("datasets:review_queue", args=[dataset.pk]))
    html = page.content.decode()
    assert "alice-r" in html
    assert "bob-r" in html
    assert "Annotators disagree" in html
    decide = reverse("datasets:review_decide", args=[dataset.pk, item.pk])
    bad = client.post(decide, {"label": "nope"}, follow=True)
    assert "is not one of this dataset" in bad.content.decode()
    client.post(decide, {"label": "c"})
    record.refresh_from_db()
    assert record.label == "c"
    assert (
        "Nothing to review"
        in client.get(reverse("datasets:review_queue", args=[dataset.pk])).content.decode()
    )


def test_api_settings_annotators_and_review(api_client_as, analyst, make_user):
    dataset = make_dataset(analyst, 1)
    api = api_client_as("analyst")
    base = f"/api/v1/datasets/{dataset.pk}"
    bad = api.put(f"{base}/labeling/settings/", {"overlap": 12}, format="json")
    assert bad.status_code == 400
    assert "The overlap must be from 1 to 10" in str(bad.json())
    not_object = api.put(f"{base}/labeling/settings/", 9229, format="json")
    assert not_object.status_code == 400
    assert "Send a JSON object" in str(not_object.json())
    ok = api.put(f"{base}/labeling/settings/", {"overlap": 2, "order": "margin"}, format="json")
    assert ok.json() == {"overlap": 2, "order": "margin"}
    alice, bob = make_user("annotator"), make_user("annotator")
    assert api.post(f"{base}/annotators/", {"id": alice.pk}, format="json").status_code == 201
    assert [row["id"] for row in api.get(f"{base}/annotators/").json()] == [alice.pk]
    assert api.post(f"{base}/annotators/", {"id": 999999}, format="json").status_code == 400
    annotator_api = api_client_as("annotator")
    assert annotator_api.get(f"{base}/annotators/").status_code == 403
    record = Record.objects.get(import_run_id=dataset.active_import_id)
    label(dataset, alice, record, "a")
    dataset_unassign(dataset=dataset, user=analyst, annotator=alice)
    label(dataset, bob, record, "b")
    items = api.get(f"{base}/review/").json()
    assert [(row["record_id"], row["reason"]) for row in items] == [(record.pk, "disagreement")]
    assert sorted(row["label"] for row in items[0]["annotations"]) == ["a", "b"]
    assert api.get(f"{base}/review/?status=maybe").status_code == 400
    decided = api.post(f"{base}/review/{items[0]['id']}/", {"label": "b"}, format="json")
    assert decided.json()["status"] == "resolved"
    again = api.post(f"{base}/review/{items[0]['id']}/", {"label": "a"}, format="json")
    assert again.status_code == 400
    assert api.delete(f"{base}/annotators/{alice.pk}/").status_code == 204


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["adjudicate", "undo"])
def test_review_and_undo_lock_the_dataset_before_the_record(
    on_postgres, redis_url, make_user, path
):
    """A split or import holds the dataset row and then locks records. Adjudicating a review
    item or undoing a label takes the dataset's share lock before the record's, as the label
    paths do, so the two wait for each other in turn instead of deadlocking (the old order:
    the record, then the dataset for the count change)."""
    from datasets_app.services import labeling
    from datasets_app.services.labeling_keyboard import record_label_undo

    analyst = make_user("analyst")
    dataset = make_dataset(analyst, 3, overlap=2 if path == "adjudicate" else 1)
    a, b = make_user("annotator"), make_user("annotator")
    record = labeling_next(dataset=dataset, user=a).record
    record_label_set(dataset=dataset, user=a, record_id=record.pk, label="a", expected_label="")
    if path == "adjudicate":
        record_label_set(dataset=dataset, user=b, record_id=record.pk, label="b", expected_label="")
        item = ReviewItem.objects.get(record_id=record.pk)
    writer_has_dataset = threading.Event()
    record_locked = threading.Event()
    failures: list[BaseException] = []
    original = labeling.label_counts_move

    def slow_counts_move(*args, **kwargs):
        # The record is locked here: a writer may take the dataset meanwhile (old order).
        record_locked.set()
        writer_has_dataset.wait(timeout=1.0)
        return original(*args, **kwargs)

    def writer():
        try:
            record_locked.wait(timeout=5)
            with transaction.atomic():
                Dataset.objects.select_for_update().get(pk=dataset.pk)
                writer_has_dataset.set()
                Record.objects.select_for_update().get(pk=record.pk)
        except BaseException as exc:  # reported below
            failures.append(exc)
        finally:
            connection.close()

    def reviewer():
        try:
            if path == "adjudicate":
                review_item_adjudicate(dataset=dataset, user=analyst, item_id=item.pk, label="b")
            else:
                record_label_undo(dataset=dataset, user=a, record_id=record.pk)
        except BaseException as exc:  # reported below
            failures.append(exc)
        finally:
            record_locked.set()
            connection.close()

    labeling.label_counts_move = slow_counts_move
    try:
        threads = [threading.Thread(target=writer), threading.Thread(target=reviewer)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        labeling.label_counts_move = original
    assert failures == []
    assert record_locked.is_set()
    assert writer_has_dataset.is_set()
    record.refresh_from_db()
    assert record.label == ("b" if path == "adjudicate" else "")
