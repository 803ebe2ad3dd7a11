"""Labeling records one at a time: schema, queue, claims, conflicts, counts, pages and API."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from datasets_app.models import BulkLabel, LabelChange, LabelClaim, Record
from datasets_app.selectors import record_distribution
from datasets_app.services.labeling import (
    LabelConflict,
    LabelsInUse,
    label_choices,
    label_schema_set,
    labeling_next,
    labeling_progress,
    record_label_set,
)
from tests.conftest import _redis_url, broker_for_this_process
from tests.datasets_app.factories import dataset_row_held, imported_dataset

pytestmark = pytest.mark.usefixtures("redis_url")

# Six records: two labeled in the file, four without a label.
CSV = "text,label\nfirst,pos\nsecond,\nthird,neg\nfourth,\nfifth,\nsixth,\n"
MAPPING = {"text_columns": ["text"], "label_column": "label"}


@pytest.fixture
def dataset(analyst):
    return imported_dataset(analyst, CSV, MAPPING, report=False)


def texts_of(records) -> list[str]:
    return [record.text for record in records]


def recount(dataset) -> dict[str, int]:
    active = Record.objects.filter(import_run_id=dataset.active_import_id, is_excluded=False)
    return record_distribution(active)[1]


# --- schema ------------------------------------------------------------------------------------
def test_labels_default_to_those_imported_by_name(dataset):
    assert dataset.label_schema == []
    assert dataset.label_choices == ["neg", "pos"]


def test_schema_is_cleaned_and_kept_in_order(dataset, analyst):
    dataset = label_schema_set(dataset=dataset, user=analyst, labels=[" pos ", "", "neg", "mixed"])
    dataset.refresh_from_db()
    assert dataset.label_schema == ["pos", "neg", "mixed"]
    assert dataset.label_choices == ["pos", "neg", "mixed"]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([], "Give at least one label, one per line."),
        (["", "  "], "Give at least one label, one per line."),
        (["a", "b", "a"], 'The label "a" is listed twice.'),
        (["x" * 501], f'The label "{"x" * 40}…" is longer than 500 characters.'),
        ([f"l{i}" for i in range(201)], "201 labels were given; a schema holds at most 200."),
    ],
)
def test_bad_schemas_are_refused_and_nothing_changes(dataset, analyst, labels, message):
    with pytest.raises(ValidationError) as caught:
        label_schema_set(dataset=dataset, user=analyst, labels=labels)
    assert caught.value.messages == [message]
    dataset.refresh_from_db()
    assert dataset.label_schema == []


def test_only_builders_set_the_schema(dataset, make_user):
    with pytest.raises(PermissionDenied):
        label_schema_set(dataset=dataset, user=make_user("annotator"), labels=["a"])


def test_schema_refuses_template_debris_and_nothing_changes(dataset, analyst):
    # Issue 9, item 1: the halves of a template tag the page failed to render.
    with pytest.raises(ValidationError) as caught:
        label_schema_set(dataset=dataset, user=analyst, labels=['{{ item.labels|join:"', '" }}'])
    assert caught.value.messages == [
        'The label "{{ item.labels|join:"" looks like a piece of a page template, not a label. '
        "Write the labels themselves, one per line."
    ]
    dataset.refresh_from_db()
    assert dataset.label_schema == []


def test_schema_leaving_out_labels_records_have_needs_confirming(dataset, analyst):
    with pytest.raises(LabelsInUse) as caught:
        label_schema_set(dataset=dataset, user=analyst, labels=["pos", "mixed"])
    assert caught.value.labels == {"neg": 1}
    assert caught.value.messages == [
        'The new list leaves out labels that records have: "neg" (1 record). Records keep '
        "their labels either way, but these would no longer be offered. Add them back to the "
        "list, or confirm that you mean to leave them off."
    ]
    dataset.refresh_from_db()
    assert dataset.label_schema == []

    label_schema_set(
        dataset=dataset, user=analyst, labels=["pos", "mixed"], drop_labels_in_use=True
    )
    dataset.refresh_from_db()
    assert dataset.label_schema == ["pos", "mixed"]
    assert Record.objects.get(text="third").label == "neg"


def test_label_list_page_shows_the_typed_list_again_with_the_reason(client, dataset, analyst):
    client.force_login(analyst)
    url = reverse("datasets:label_schema_edit", args=[dataset.pk])
    refused = client.post(url, {"labels": "pos\nmixed"})
    assert refused.status_code == 400
    page = refused.content.decode()
    assert "leaves out labels that records have: &quot;neg&quot; (1 record)" in page
    assert ">pos\nmixed</textarea>" in page
    assert 'name="drop_labels_in_use"' in page
    dataset.refresh_from_db()
    assert dataset.label_schema == []

    saved = client.post(url, {"labels": "pos\nmixed", "drop_labels_in_use": "on"})
    assert saved.status_code == 302
    dataset.refresh_from_db()
    assert dataset.label_schema == ["pos", "mixed"]


def test_label_list_editor_shows_the_labels_one_per_line(client, dataset, analyst):
    client.force_login(analyst)
    page = client.get(reverse("datasets:labeling_queue", args=[dataset.pk])).content.decode()
    assert 'data-testid="label-list">neg\npos</textarea>' in page


# --- the queue ---------------------------------------------------------------------------------
def test_queue_walks_unlabeled_records_in_order_and_wraps_to_skipped(dataset, make_user):
    annotator = make_user("annotator")
    item = labeling_next(dataset=dataset, user=annotator)
    assert item.record.text == "second"
    assert item.remaining == 4
    assert item.labels == ["neg", "pos"]
    skipped = labeling_next(dataset=dataset, user=annotator, after=item.record.pk)
    assert skipped.record.text == "fourth"
    last = Record.objects.get(import_run_id=dataset.active_import_id, text="sixth")
    wrapped = labeling_next(dataset=dataset, user=annotator, after=last.pk)
    assert wrapped.record.text == "second"  # back to the first one skipped


def test_two_annotators_are_never_given_the_same_record(dataset, make_user):
    alice, bob = make_user("annotator"), make_user("annotator")
    first = labeling_next(dataset=dataset, user=alice)
    second = labeling_next(dataset=dataset, user=bob)
    assert first.record.text == "second"
    assert second.record.text == "fourth"
    # Each person holds one record at a time: moving on lets go of the last one.
    moved = labeling_next(dataset=dataset, user=alice, after=first.record.pk)
    assert moved.record.text == "fifth"
    assert set(LabelClaim.objects.values_list("record__text", flat=True)) == {"fourth", "fifth"}
    carol = make_user("annotator")
    assert labeling_next(dataset=dataset, user=carol).record.text == "second"


def test_an_expired_hold_is_free_for_anyone(dataset, make_user):
    alice, bob = make_user("annotator"), make_user("annotator")
    first = labeling_next(dataset=dataset, user=alice)
    LabelClaim.objects.filter(record=first.record).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert labeling_next(dataset=dataset, user=bob).record == first.record
    assert LabelClaim.objects.get(record=first.record).user == bob


def test_queue_ends_when_everything_is_labeled(dataset, analyst):
    for text in ("second", "fourth", "fifth", "sixth"):
        record = Record.objects.get(import_run_id=dataset.active_import_id, text=text)
        record_label_set(dataset=dataset, user=analyst, record_id=record.pk, label="pos")
    item = labeling_next(dataset=dataset, user=analyst)
    assert item.record is None
    assert item.remaining == 0
    assert item.previous_id is not None


def test_queue_skips_excluded_records(dataset, analyst):
    Record.objects.filter(import_run_id=dataset.active_import_id, text="second").update(
        is_excluded=True, exclusion_reason="test"
    )
    assert labeling_next(dataset=dataset, user=analyst).record.text == "fourth"


def test_viewers_cannot_take_records(dataset, make_user):
    with pytest.raises(PermissionDenied):
        labeling_next(dataset=dataset, user=make_user("viewer"))


def test_a_record_of_another_import_is_refused(dataset, analyst):
    other = imported_dataset(analyst, CSV, MAPPING, report=False)
    foreign = Record.objects.filter(import_run_id=other.active_import_id).first()
    with pytest.raises(ValidationError, match="not in this dataset any more"):
        labeling_next(dataset=dataset, user=analyst, record_id=foreign.pk)
    with pytest.raises(ValidationError, match="not in this dataset any more"):
        record_label_set(dataset=dataset, user=analyst, record_id=foreign.pk, label="pos")
    assert foreign.label == Record.objects.get(pk=foreign.pk).label


# --- saving labels -----------------------------------------------------------------------------
def test_a_label_updates_record_counts_log_and_hold(dataset, make_user):
    annotator = make_user("annotator")
    record = labeling_next(dataset=dataset, user=annotator).record
    saved = record_label_set(
        dataset=dataset, user=annotator, record_id=record.pk, label="neg", expected_label=""
    )
    assert saved.label == "neg"
    assert saved.original_label is None  # it had no label: nothing to keep, not "edited"
    dataset.refresh_from_db()
    assert dataset.label_counts == {"": 3, "neg": 2, "pos": 1}
    assert dataset.label_counts == recount(dataset)
    change = LabelChange.objects.get(record=record)
    assert (change.old_label, change.new_label, change.user) == ("", "neg", annotator)
    assert not LabelClaim.objects.filter(record=record).exists()
    progress = labeling_progress(dataset=dataset, user=annotator)
    assert progress == {"total": 6, "labeled": 3, "unlabeled": 3, "percent": 50, "mine_today": 1}


def test_relabeling_keeps_the_first_original(dataset, analyst):
    record = Record.objects.get(import_run_id=dataset.active_import_id, text="first")
    record_label_set(dataset=dataset, user=analyst, record_id=record.pk, label="neg")
    record_label_set(dataset=dataset, user=analyst, record_id=record.pk, label="pos")
    record.refresh_from_db()
    assert (record.label, record.original_label) == ("pos", "pos")
    dataset.refresh_from_db()
    assert dataset.label_counts == recount(dataset) == {"": 4, "neg": 1, "pos": 1}
    assert LabelChange.objects.filter(record=record).count() == 2


def test_a_label_given_meanwhile_is_never_overwritten_silently(dataset, make_user):
    alice, bob = make_user("annotator", username="alice"), make_user("annotator")
    record = Record.objects.get(import_run_id=dataset.active_import_id, text="second")
    # Both are looking at the record while it has no label; Alice saves first.
    record_label_set(
        dataset=dataset, user=alice, record_id=record.pk, label="pos", expected_label=""
    )
    with pytest.raises(LabelConflict) as caught:
        record_label_set(
            dataset=dataset, user=bob, record_id=record.pk, label="neg", expected_label=""
        )
    assert caught.value.messages == [
        'While you were reading, alice changed this record\'s label to "pos". It is shown as '
        "it is now; choose again to change it."
    ]
    record.refresh_from_db()
    assert record.label == "pos"
    dataset.refresh_from_db()
    assert dataset.label_counts == recount(dataset)


def test_unknown_and_empty_labels_are_refused(dataset, analyst):
    record = Record.objects.get(import_run_id=dataset.active_import_id, text="second")
    with pytest.raises(ValidationError) as caught:
        record_label_set(dataset=dataset, user=analyst, record_id=record.pk, label="meh")
    assert caught.value.messages == [
        '"meh" is not one of this dataset\'s labels ("neg", "pos"). An analyst can add it to '
        "the label list."
    ]
    with pytest.raises(ValidationError, match=r"Choose a label\."):
        record_label_set(dataset=dataset, user=analyst, record_id=record.pk, label="  ")
    assert not LabelChange.objects.exists()


def test_labels_added_to_the_schema_can_be_given(dataset, analyst):
    label_schema_set(dataset=dataset, user=analyst, labels=["pos", "neg", "mixed"])
    record = Record.objects.get(import_run_id=dataset.active_import_id, text="second")
    record_label_set(dataset=dataset, user=analyst, record_id=record.pk, label="mixed")
    dataset.refresh_from_db()
    assert dataset.label_counts["mixed"] == 1


def test_snapshots_keep_the_labels_they_froze(dataset, analyst):
    from datasets_app.services import snapshot_create

    snapshot = snapshot_create(dataset=dataset, user=analyst)
    record = Record.objects.get(import_run_id=dataset.active_import_id, text="second")
    record_label_set(dataset=dataset, user=analyst, record_id=record.pk, label="pos")
    assert snapshot.records.get(record_id=record.pk).label == ""


def test_reimport_keeps_console_labels_of_unchanged_rows(dataset, analyst):
    from tests.datasets_app.factories import import_now

    second = labeling_next(dataset=dataset, user=analyst).record
    record_label_set(dataset=dataset, user=analyst, record_id=second.pk, label="pos")
    first = Record.objects.get(import_run_id=dataset.active_import_id, text="first")
    record_label_set(dataset=dataset, user=analyst, record_id=first.pk, label="neg")
    labeling_next(dataset=dataset, user=analyst)  # holds "fourth"
    job = import_now(dataset, analyst, MAPPING)
    assert job.status == "succeeded"
    assert job.message.endswith("Kept 2 labels given in the console.")
    dataset.refresh_from_db()
    assert dataset.active_import_id == job.pk
    now = {
        r.text: (r.label, r.original_label)
        for r in Record.objects.filter(import_run_id=dataset.active_import_id)
    }
    assert now["second"] == ("pos", None)
    assert now["first"] == ("neg", "pos")  # the file still says pos: kept as the original
    assert now["third"] == ("neg", None)
    assert dataset.label_counts == recount(dataset) == {"": 3, "neg": 2, "pos": 1}
    # The history followed the records; nothing points at the replaced ones.
    assert set(LabelChange.objects.values_list("record__text", "record__import_run_id")) == {
        ("second", job.pk),
        ("first", job.pk),
    }
    assert not LabelClaim.objects.exists()


def test_reimport_with_other_texts_keeps_what_the_file_says(dataset, analyst):
    from tests.datasets_app.factories import import_now

    second = labeling_next(dataset=dataset, user=analyst).record
    record_label_set(dataset=dataset, user=analyst, record_id=second.pk, label="pos")
    job = import_now(dataset, analyst, {"text_columns": ["text", "label"], "text_separator": " / "})
    assert job.status == "succeeded", job.problems
    assert "Kept" not in job.message
    assert not LabelChange.objects.exists()
    dataset.refresh_from_db()
    assert dataset.label_counts == {"": 6}


@pytest.mark.django_db(transaction=True)
def test_concurrent_annotators_get_distinct_records_and_exact_counts(
    on_postgres, redis_url, make_user
):
    analyst = make_user("analyst")
    rows = "\n".join(f"text {i}," for i in range(40))
    dataset = imported_dataset(analyst, f"text,label\n{rows}\n", MAPPING, report=False)
    label_schema_set(dataset=dataset, user=analyst, labels=["a", "b"])
    people = [make_user("annotator") for _ in range(4)]
    given: dict[int, list[int]] = {person.pk: [] for person in people}
    barrier = threading.Barrier(len(people))
    failures: list[BaseException] = []

    def work(person):
        try:
            barrier.wait()
            for step in range(8):
                item = labeling_next(dataset=dataset, user=person)
                given[person.pk].append(item.record.pk)
                record_label_set(
                    dataset=dataset,
                    user=person,
                    record_id=item.record.pk,
                    label="ab"[step % 2],
                    expected_label="",
                )
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
    labeled = [record for records in given.values() for record in records]
    assert len(labeled) == len(set(labeled)) == 32  # nobody was given a record twice
    dataset.refresh_from_db()
    assert dataset.label_counts == recount(dataset) == {"a": 16, "b": 16, "": 8}
    assert LabelChange.objects.filter(dataset=dataset).count() == 32


# --- pages -------------------------------------------------------------------------------------
def test_labeling_page_labels_with_a_post_and_shows_the_next(client, dataset, make_user):
    client.force_login(make_user("annotator"))
    overview = client.get(reverse("datasets:labeling"))
    assert overview.status_code == 200
    assert reverse("datasets:labeling_queue", args=[dataset.pk]) in overview.content.decode()
    page = client.get(reverse("datasets:labeling_queue", args=[dataset.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert "second" in html
    assert "<kbd>1</kbd> neg" in html
    assert "<kbd>2</kbd> pos" in html
    assert "label-schema-form" not in html  # annotators do not edit the label list
    record = Record.objects.get(import_run_id=dataset.active_import_id, text="second")
    saved = client.post(
        reverse("datasets:labeling_save", args=[dataset.pk, record.pk]),
        {"label": "neg", "expected_label": ""},
    )
    assert saved.status_code == 302
    assert saved["Location"].endswith(f"?after={record.pk}")
    following = client.get(saved["Location"]).content.decode()
    assert "fourth" in following
    assert "3</strong> of 6 records labeled" in following


def test_labeling_page_shows_a_conflict_next_to_the_labels(client, dataset, make_user):
    alice = make_user("annotator", username="alice")
    record = Record.objects.get(import_run_id=dataset.active_import_id, text="second")
    record_label_set(dataset=dataset, user=alice, record_id=record.pk, label="pos")
    client.force_login(make_user("annotator"))
    answer = client.post(
        reverse("datasets:labeling_save", args=[dataset.pk, record.pk]),
        {"label": "neg", "expected_label": ""},
    )
    assert answer.status_code == 409
    html = answer.content.decode()
    assert "While you were reading, alice changed this record" in html
    assert 'data-testid="current-label">pos<' in html
    record.refresh_from_db()
    assert record.label == "pos"


def test_analysts_edit_the_label_list_on_the_page(client, dataset, analyst):
    client.force_login(analyst)
    page = client.get(reverse("datasets:labeling_queue", args=[dataset.pk])).content.decode()
    assert "label-schema-form" in page
    answer = client.post(
        reverse("datasets:label_schema_edit", args=[dataset.pk]), {"labels": "pos\nneg\nmixed\n"}
    )
    assert answer.status_code == 302
    dataset.refresh_from_db()
    assert dataset.label_schema == ["pos", "neg", "mixed"]
    assert dataset.label_multiple is False
    client.post(
        reverse("datasets:label_schema_edit", args=[dataset.pk]),
        {"labels": "pos\nneg", "multiple": "on"},
    )
    dataset.refresh_from_db()
    assert dataset.label_multiple is True
    refused = client.post(
        reverse("datasets:label_schema_edit", args=[dataset.pk]), {"labels": "a\na"}, follow=True
    )
    assert "The label &quot;a&quot; is listed twice." in refused.content.decode()


def test_pages_refuse_viewers(client, dataset, make_user):
    client.force_login(make_user("viewer"))
    assert client.get(reverse("datasets:labeling_queue", args=[dataset.pk])).status_code == 403
    record = Record.objects.filter(import_run_id=dataset.active_import_id).first()
    answer = client.post(
        reverse("datasets:labeling_save", args=[dataset.pk, record.pk]), {"label": "pos"}
    )
    assert answer.status_code == 403
    client.force_login(make_user("annotator"))
    answer = client.post(reverse("datasets:label_schema_edit", args=[dataset.pk]), {"labels": "x"})
    assert answer.status_code == 403


def test_empty_states(client, analyst):
    dataset = imported_dataset(analyst, "text\nalpha\nbeta\n", {"text_columns": ["text"]})
    client.force_login(analyst)
    page = client.get(reverse("datasets:labeling_queue", args=[dataset.pk])).content.decode()
    assert "No labels to choose from yet" in page
    label_schema_set(dataset=dataset, user=analyst, labels=["x"])
    for record in Record.objects.filter(import_run_id=dataset.active_import_id):
        record_label_set(dataset=dataset, user=analyst, record_id=record.pk, label="x")
    done = client.get(reverse("datasets:labeling_queue", args=[dataset.pk])).content.decode()
    assert "Every record has a label" in done


# --- API ---------------------------------------------------------------------------------------
def test_api_queue_label_and_conflict(api_client_as, dataset):
    api = api_client_as("annotator")
    base = f"/api/v1/datasets/{dataset.pk}"
    nxt = api.get(f"{base}/labeling/next/")
    assert nxt.status_code == 200
    body = nxt.json()
    assert body["record"]["text"] == "second"
    assert (body["remaining"], body["labels"]) == (4, ["neg", "pos"])
    record_id = body["record"]["id"]
    saved = api.post(
        f"{base}/records/{record_id}/label/", {"label": "pos", "expected_label": ""}, format="json"
    )
    assert saved.status_code == 200
    assert saved.json()["label"] == "pos"
    conflict = api.post(
        f"{base}/records/{record_id}/label/", {"label": "neg", "expected_label": ""}, format="json"
    )
    assert conflict.status_code == 409
    assert "changed this record's label" in conflict.json()["detail"]
    unknown = api.post(f"{base}/records/{record_id}/label/", {"label": "meh"}, format="json")
    assert unknown.status_code == 400
    assert unknown.json()["detail"].startswith('"meh" is not one of this dataset')
    bad = api.get(f"{base}/labeling/next/?after=abc")
    assert bad.status_code == 400
    assert bad.json()["errors"]["after"] == ["'after' must be a record id (a whole number)."]


def test_api_label_schema_and_roles(api_client_as, dataset):
    base = f"/api/v1/datasets/{dataset.pk}/label-schema/"
    viewer = api_client_as("viewer")
    assert viewer.get(base).json() == {
        "labels": ["neg", "pos"],
        "multiple": False,
        "from_schema": False,
    }
    assert viewer.put(base, {"labels": ["a"]}, format="json").status_code == 403
    assert viewer.get(f"/api/v1/datasets/{dataset.pk}/labeling/next/").status_code == 403
    analyst = api_client_as("analyst")
    in_use = analyst.put(base, {"labels": ["b", "a"]}, format="json")
    assert in_use.status_code == 400
    assert in_use.json()["detail"].startswith(
        'The new list leaves out labels that records have: "neg" (1 record), "pos" (1 record).'
    )
    answer = analyst.put(base, {"labels": ["b", "a"], "drop_labels_in_use": True}, format="json")
    assert answer.status_code == 200
    assert answer.json() == {"labels": ["b", "a"], "multiple": False, "from_schema": True}
    refused = analyst.put(base, {"labels": []}, format="json")
    assert refused.status_code == 400
    assert refused.json()["detail"] == "Give at least one label, one per line."


def test_api_schema_describes_labeling(api_client_as):
    schema = api_client_as("analyst").get(
        "/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"}
    )
    paths = json.loads(schema.content)["paths"]
    assert "/api/v1/datasets/{dataset_id}/labeling/next/" in paths
    assert (
        "409"
        in paths["/api/v1/datasets/{dataset_id}/records/{record_id}/label/"]["post"]["responses"]
    )
    assert "put" in paths["/api/v1/datasets/{dataset_id}/label-schema/"]


def test_undoing_a_fix_keeps_labels_given_in_the_queue_after_it(analyst):
    from datasets_app.services import dataset_clean_apply, dataset_clean_undo

    conflicts = "text,label\nsame words,a\nsame words,a\nsame words,b\nother words,b\n"
    dataset = imported_dataset(analyst, conflicts, MAPPING)
    dataset_clean_apply(dataset=dataset, user=analyst, kind="resolve_conflicts_majority")
    relabeled = Record.objects.get(import_run_id=dataset.active_import_id, source_row=3)
    assert relabeled.label == "a"  # the majority label, set by the fix
    label_schema_set(dataset=dataset, user=analyst, labels=["a", "b", "c"])
    record_label_set(dataset=dataset, user=analyst, record_id=relabeled.pk, label="c")
    dataset.refresh_from_db()

    dataset_clean_undo(dataset=dataset, user=analyst)

    relabeled.refresh_from_db()
    assert relabeled.label == "c"  # the person's label, newer than the fix, stays
    others = Record.objects.filter(import_run_id=dataset.active_import_id).order_by("source_row")
    assert [r.label for r in others] == ["a", "a", "c", "b"]
    dataset.refresh_from_db()
    assert dataset.label_counts == recount(dataset)


def test_reimport_keeps_console_labels_of_texts_cleaning_repaired(analyst):
    from datasets_app.services import dataset_clean_apply
    from tests.datasets_app.factories import import_now

    garbled = "text,label\nCafÃ© au lait,\nplain words,\n"
    dataset = imported_dataset(analyst, garbled, MAPPING)
    dataset_clean_apply(dataset=dataset, user=analyst, kind="repair_mojibake")
    repaired = Record.objects.get(import_run_id=dataset.active_import_id, source_row=1)
    assert repaired.text == "Café au lait"
    label_schema_set(dataset=dataset, user=analyst, labels=["drink", "other"])
    record_label_set(dataset=dataset, user=analyst, record_id=repaired.pk, label="drink")

    job = import_now(dataset, analyst, MAPPING)

    assert job.message.endswith("Kept 1 labels given in the console.")
    again = Record.objects.get(import_run_id=job.pk, source_row=1)
    assert (again.text, again.label) == ("CafÃ© au lait", "drink")


def test_labeling_goes_on_while_a_new_import_of_the_dataset_runs(dataset, make_user):
    from datasets_app.models import Dataset
    from datasets_app.selectors import datasets_needing_labels
    from datasets_app.services import dataset_import_start

    annotator = make_user("annotator")
    with broker_for_this_process(_redis_url()):
        dataset_import_start(dataset=dataset, user=dataset.created_by, mapping=MAPPING)
    dataset.refresh_from_db()
    assert dataset.status == Dataset.Status.IMPORTING
    assert [row["dataset"] for row in datasets_needing_labels(user=annotator)] == [dataset]
    item = labeling_next(dataset=dataset, user=annotator)
    assert item.record.text == "second"
    record_label_set(dataset=dataset, user=annotator, record_id=item.record.pk, label="pos")


def test_offered_labels_keep_those_given_and_follow_a_new_import(dataset, analyst):
    from tests.datasets_app.factories import import_now

    first = Record.objects.get(import_run_id=dataset.active_import_id, text="first")
    record_label_set(dataset=dataset, user=analyst, record_id=first.pk, label="neg")
    dataset.refresh_from_db()
    assert "pos" in label_choices(dataset)  # its only record was relabeled: still offered
    assert dataset.label_schema == []  # nothing was frozen
    relabeled = "text,mood\nfirst,sad\nsecond,happy\nthird,\nfourth,\nfifth,\nsixth,\n"
    from django.core.files.uploadedfile import SimpleUploadedFile

    dataset.source_file.save("again.csv", SimpleUploadedFile("again.csv", relabeled.encode()))
    from datasets_app.services import dataset_detect

    dataset_detect(dataset=dataset)
    import_now(dataset, analyst, {"text_columns": ["text"], "label_column": "mood"})
    dataset.refresh_from_db()
    # The file's new labels are offered; "first" kept its console label over the file's.
    assert {"happy", "neg"} <= set(label_choices(dataset))
    assert Record.objects.get(import_run_id=dataset.active_import_id, text="first").label == "neg"


def test_a_fix_leaves_records_labeled_while_it_was_computed(analyst, monkeypatch):
    from datasets_app.services import cleaning as cleaning_services
    from datasets_app.services import dataset_clean_apply

    conflicts = "text,label\nsame words,a\nsame words,a\nsame words,b\nother words,b\n"
    dataset = imported_dataset(analyst, conflicts, MAPPING)
    label_schema_set(dataset=dataset, user=analyst, labels=["a", "b", "c"])
    minority = Record.objects.get(import_run_id=dataset.active_import_id, source_row=3)
    read = cleaning_services.records_frame

    def read_then_someone_labels(target):
        frame = read(target)  # the fix has its view of the records ...
        record_label_set(dataset=target, user=analyst, record_id=minority.pk, label="c")
        return frame  # ... and a person labels one of them before it writes

    monkeypatch.setattr(cleaning_services, "records_frame", read_then_someone_labels)
    with pytest.raises(ValidationError, match="Nothing to fix"):
        dataset_clean_apply(dataset=dataset, user=analyst, kind="resolve_conflicts_majority")
    minority.refresh_from_db()
    assert minority.label == "c"


def test_undo_is_refused_while_a_fix_is_queued(analyst):
    from datasets_app.services import dataset_clean_apply, dataset_clean_undo
    from datasets_app.services.cleaning import dataset_clean_start

    dataset = imported_dataset(analyst, "text,label\nx,a\nx,a\ny,b\n", MAPPING)
    dataset_clean_apply(dataset=dataset, user=analyst, kind="drop_exact_duplicates")
    with broker_for_this_process(_redis_url()):
        dataset_clean_start(dataset=dataset, user=analyst, kind="drop_empty")
    with pytest.raises(ValidationError) as refused:
        dataset_clean_undo(dataset=dataset, user=analyst)
    assert refused.value.messages == [
        "A cleaning fix is being applied to this dataset. Wait for it to finish, then try again."
    ]
    assert (
        Record.objects.filter(import_run_id=dataset.active_import_id, is_excluded=True).count() == 1
    )


def test_the_unlabeled_link_lists_as_many_records_as_it_counts(client, analyst):
    dataset = imported_dataset(analyst, "text,label\nx,\ny,\nz,a\n", MAPPING, report=False)
    Record.objects.filter(import_run_id=dataset.active_import_id, text="x").update(
        is_excluded=True, exclusion_reason="test"
    )
    from datasets_app.services.imports import dataset_refresh_counts

    dataset_refresh_counts(dataset)
    client.force_login(analyst)
    overview = client.get(reverse("datasets:labeling")).content.decode()
    link = f"/datasets/{dataset.pk}/records/?label=&amp;flag=included"
    assert f'<a href="{link}">1</a>' in overview
    listed = client.get(f"/datasets/{dataset.pk}/records/", {"label": "", "flag": "included"})
    assert listed.context["page"].records[0].text == "y"
    assert len(listed.context["page"].records) == 1


# --- several labels per record -------------------------------------------------------------------
def test_several_labels_are_stored_once_each_in_the_lists_order(dataset, analyst):
    label_schema_set(
        dataset=dataset, user=analyst, labels=["pos", "neg", "sarcastic"], multiple=True
    )
    record = Record.objects.get(import_run_id=dataset.active_import_id, text="second")

    saved = record_label_set(
        dataset=dataset, user=analyst, record_id=record.pk, label="sarcastic | pos|pos"
    )

    assert saved.label == "pos|sarcastic"
    dataset.refresh_from_db()
    assert dataset.label_counts == recount(dataset)
    assert dataset.label_counts["pos|sarcastic"] == 1
    with pytest.raises(ValidationError) as refused:
        record_label_set(dataset=dataset, user=analyst, record_id=record.pk, label="pos|meh")
    assert refused.value.messages[0].startswith('"meh" is not one of this dataset')
    with pytest.raises(ValidationError, match=r"Choose a label\."):
        record_label_set(dataset=dataset, user=analyst, record_id=record.pk, label=" | ")


def test_a_list_allowing_several_labels_refuses_a_label_with_the_separator(dataset, analyst):
    with pytest.raises(ValidationError) as refused:
        label_schema_set(dataset=dataset, user=analyst, labels=["a|b", "c"], multiple=True)
    assert refused.value.messages == [
        'The label "a|b" contains "|", which joins the labels of a record that has several. '
        "Rename it, or allow one label per record."
    ]
    # One label per record: "|" is just a character of a label.
    label_schema_set(dataset=dataset, user=analyst, labels=["a|b", "c"], drop_labels_in_use=True)
    record = Record.objects.get(import_run_id=dataset.active_import_id, text="second")
    assert (
        record_label_set(dataset=dataset, user=analyst, record_id=record.pk, label="a|b").label
        == "a|b"
    )


def test_imported_multi_labels_offer_their_parts(analyst):
    dataset = imported_dataset(analyst, "text,label\nx,a|b\ny,c\nz,\n", MAPPING, report=False)
    assert label_choices(dataset) == ["a|b", "c"]
    dataset.label_multiple = True  # as the label list's checkbox sets it
    dataset.save()
    assert label_choices(dataset) == ["a", "b", "c"]


def test_page_ticks_several_labels_and_saves_them(client, dataset, analyst):
    label_schema_set(
        dataset=dataset, user=analyst, labels=["pos", "neg", "sarcastic"], multiple=True
    )
    client.force_login(analyst)
    page = client.get(reverse("datasets:labeling_queue", args=[dataset.pk])).content.decode()
    assert 'type="checkbox" name="label" value="sarcastic"' in page
    assert "Save labels" in page
    record = Record.objects.get(import_run_id=dataset.active_import_id, text="second")

    answer = client.post(
        reverse("datasets:labeling_save", args=[dataset.pk, record.pk]),
        {"label": ["sarcastic", "neg"], "expected_label": ""},
    )

    assert answer.status_code == 302
    record.refresh_from_db()
    assert record.label == "neg|sarcastic"
    again = client.get(
        f"{reverse('datasets:labeling_queue', args=[dataset.pk])}?record={record.pk}"
    )
    html = again.content.decode()
    assert 'value="neg" checked' in html
    assert 'value="sarcastic" checked' in html
    assert 'value="pos" checked' not in html


def test_api_schema_switches_to_several_labels(api_client_as, dataset):
    api = api_client_as("analyst")
    base = f"/api/v1/datasets/{dataset.pk}"
    answer = api.put(
        f"{base}/label-schema/", {"labels": ["pos", "neg"], "multiple": True}, format="json"
    )
    assert answer.json() == {"labels": ["pos", "neg"], "multiple": True, "from_schema": True}
    record = Record.objects.get(import_run_id=dataset.active_import_id, text="second")
    saved = api.post(f"{base}/records/{record.pk}/label/", {"label": "neg|pos"}, format="json")
    assert saved.json()["label"] == "pos|neg"
    kept = api.put(f"{base}/label-schema/", {"labels": ["pos", "neg", "x"]}, format="json")
    assert kept.json()["multiple"] is True  # left out: unchanged


@pytest.mark.django_db(transaction=True)
def test_labeling_says_busy_instead_of_hanging_while_a_fix_is_saved(
    on_postgres, redis_url, make_user, client
):
    import time

    from datasets_app.services.jobs import BUSY

    analyst = make_user("analyst")
    dataset = imported_dataset(analyst, CSV, MAPPING, report=False)
    with dataset_row_held(dataset):
        started = time.monotonic()
        with pytest.raises(ValidationError) as busy:
            labeling_next(dataset=dataset, user=analyst)
        assert busy.value.messages == [BUSY]
        assert time.monotonic() - started < 10
        record = Record.objects.get(import_run_id=dataset.active_import_id, text="second")
        with pytest.raises(ValidationError, match="being saved right now"):
            record_label_set(dataset=dataset, user=analyst, record_id=record.pk, label="pos")
        # The page: one wait, the sentence, and back to the same record.
        client.force_login(analyst)
        saved = client.post(
            reverse("datasets:labeling_save", args=[dataset.pk, record.pk]),
            {"label": "pos", "expected_label": ""},
        )
        assert saved.status_code == 302
        assert saved["Location"].endswith(f"/label/?record={record.pk}")
        assert [str(m) for m in saved.wsgi_request._messages] == [BUSY]
    record.refresh_from_db()
    assert record.label == ""
    assert labeling_next(dataset=dataset, user=analyst).record.text == "second"


def test_several_labels_longer_together_than_a_label_may_be_are_refused(dataset, analyst):
    label_schema_set(
        dataset=dataset,
        user=analyst,
        labels=["x" * 300, "y" * 300],
        multiple=True,
        drop_labels_in_use=True,
    )
    record = Record.objects.get(import_run_id=dataset.active_import_id, text="second")
    with pytest.raises(ValidationError) as refused:
        record_label_set(
            dataset=dataset, user=analyst, record_id=record.pk, label="x" * 300 + "|" + "y" * 300
        )
    assert refused.value.messages == [
        "Together these labels are 601 characters long; a record's labels can be at most 500. "
        "Choose fewer of them."
    ]
    record.refresh_from_db()
    assert record.label == ""


def test_ids_in_query_strings_that_are_not_plain_digits_are_not_errors(
    client, api_client_as, dataset, analyst
):
    client.force_login(analyst)
    page = client.get(reverse("datasets:labeling_queue", args=[dataset.pk]), {"after": "²"})
    assert page.status_code == 200  # ignored: the queue starts from the beginning
    api = api_client_as("annotator")
    answer = api.get(f"/api/v1/datasets/{dataset.pk}/labeling/next/", {"record": "²"})
    assert answer.status_code == 400
    assert answer.json()["errors"]["record"] == ["'record' must be a record id (a whole number)."]


# --- labeling every record a filter matches ---------------------------------------------------
BULK_CSV = (
    "text,label\nrefund please,\nmy refund is late,other\nwhere is my card,\ncard lost,card\n"
    "refund for card,card\n"
)


def test_bulk_label_gives_every_matching_record_the_label(analyst):
    from datasets_app.services.labeling import records_label_bulk

    dataset = imported_dataset(analyst, BULK_CSV, MAPPING, report=False)
    label_schema_set(dataset=dataset, user=analyst, labels=["refund", "card", "other"])

    bulk = records_label_bulk(
        dataset=dataset, user=analyst, label="refund", filters={"search": "refund"}
    )

    assert bulk.changed_count == 3
    assert (bulk.label, bulk.filters, bulk.created_by) == ("refund", {"search": "refund"}, analyst)
    now = {
        r.text: (r.label, r.original_label)
        for r in Record.objects.filter(import_run_id=dataset.active_import_id)
    }
    assert now == {
        "refund please": ("refund", None),
        "my refund is late": ("refund", "other"),
        "where is my card": ("", None),
        "card lost": ("card", None),
        "refund for card": ("refund", "card"),
    }
    dataset.refresh_from_db()
    assert dataset.label_counts == recount(dataset) == {"refund": 3, "": 1, "card": 1}
    assert (
        LabelChange.objects.filter(dataset=dataset, new_label="refund", bulk_label=bulk).count()
        == 3
    )
    # Only unlabeled records: "" is a filter of its own.
    only_unlabeled = records_label_bulk(
        dataset=dataset, user=analyst, label="card", filters={"label": ""}
    )
    assert only_unlabeled.changed_count == 1
    assert (
        records_label_bulk(dataset=dataset, user=analyst, label="card", filters={"label": "card"})
        is None
    )


def test_bulk_label_refuses_no_filter_too_many_records_and_annotators(
    analyst, make_user, monkeypatch
):
    from datasets_app.services import labeling
    from datasets_app.services.labeling import records_label_bulk

    dataset = imported_dataset(analyst, BULK_CSV, MAPPING, report=False)
    label_schema_set(dataset=dataset, user=analyst, labels=["refund", "card", "other"])
    with pytest.raises(ValidationError) as refused:
        records_label_bulk(
            dataset=dataset, user=analyst, label="card", filters={"label": "__any__", "flag": ""}
        )
    assert refused.value.messages[0].startswith("Choose a filter first")
    monkeypatch.setattr(labeling, "BULK_LIMIT", 2)
    with pytest.raises(ValidationError) as refused:
        records_label_bulk(dataset=dataset, user=analyst, label="other", filters={"search": "r"})
    assert refused.value.messages == [
        "More than 2 records match these filters; label at most 2 at once. Narrow the filters "
        "and try again."
    ]
    with pytest.raises(PermissionDenied):
        records_label_bulk(
            dataset=dataset, user=make_user("annotator"), label="card", filters={"label": ""}
        )
    assert not LabelChange.objects.exists()


def test_bulk_label_from_the_records_page_and_the_api(client, api_client_as, analyst):
    dataset = imported_dataset(analyst, BULK_CSV, MAPPING, report=False)
    label_schema_set(dataset=dataset, user=analyst, labels=["refund", "card", "other"])
    client.force_login(analyst)
    page = client.get(f"/datasets/{dataset.pk}/records/", {"search": "refund"}).content.decode()
    assert 'data-testid="bulk-label"' in page
    assert '<input type="hidden" name="search" value="refund">' in page
    unfiltered = client.get(f"/datasets/{dataset.pk}/records/").content.decode()
    assert 'data-testid="bulk-label"' not in unfiltered

    url = reverse("datasets:records_label_bulk", args=[dataset.pk])
    confirm = client.post(url, {"search": "refund", "new_label": "refund"})
    assert confirm.status_code == 200
    assert not LabelChange.objects.exists()  # asked first
    answer = client.post(
        url, {"search": "refund", "new_label": "refund", "expected_count": "3"}, follow=True
    )
    assert "Labeled 3 records “refund”." in answer.content.decode()
    assert answer.redirect_chain[-1][0].endswith("/records/?search=refund")

    api = api_client_as("analyst")
    url = f"/api/v1/datasets/{dataset.pk}/records/label/"
    done = api.post(url, {"label": "card", "filters": {"label": ""}}, format="json")
    bulk = BulkLabel.objects.get(label="card")
    assert done.json() == {"changed": 1, "bulk_label_id": bulk.pk}
    refused = api.post(url, {"label": "card", "filters": {}}, format="json")
    assert refused.status_code == 400
    assert (
        api_client_as("annotator")
        .post(url, {"label": "card", "filters": {"label": ""}}, format="json")
        .status_code
        == 403
    )


def test_bulk_label_refusals_come_back_as_sentences_on_the_page_and_the_api(
    client, api_client_as, analyst
):
    dataset = imported_dataset(analyst, BULK_CSV, MAPPING, report=False)
    label_schema_set(dataset=dataset, user=analyst, labels=["refund", "card", "other"])
    client.force_login(analyst)

    no_filter = client.post(
        reverse("datasets:records_label_bulk", args=[dataset.pk]),
        {"new_label": "refund"},
        follow=True,
    )
    assert "Choose a filter first" in no_filter.content.decode()
    unknown = api_client_as("analyst").post(
        f"/api/v1/datasets/{dataset.pk}/records/label/",
        {"label": "meh", "filters": {"search": "refund"}},
        format="json",
    )
    assert unknown.status_code == 400
    assert unknown.json()["detail"].startswith('"meh" is not one of this dataset')
    assert not LabelChange.objects.exists()


# --- bulk labels: asked first, undoable (issue 9, item 14) -----------------------------------
def _bulk_dataset(analyst):
    dataset = imported_dataset(analyst, BULK_CSV, MAPPING, report=False)
    return label_schema_set(dataset=dataset, user=analyst, labels=["refund", "card", "other"])


def _labels(dataset) -> dict[str, tuple[str, str | None]]:
    return {
        r.text: (r.label, r.original_label)
        for r in Record.objects.filter(import_run_id=dataset.active_import_id)
    }


def test_bulk_label_undo_gives_the_records_their_earlier_labels_back(analyst):
    from datasets_app.services.labeling import records_label_bulk, records_label_bulk_undo

    dataset = _bulk_dataset(analyst)
    before = _labels(dataset)
    dataset.refresh_from_db()
    counts_before = dataset.label_counts
    bulk = records_label_bulk(
        dataset=dataset, user=analyst, label="refund", filters={"search": "refund"}
    )

    undone = records_label_bulk_undo(dataset=dataset, user=analyst, bulk_label_id=bulk.pk)

    assert (undone.restored_count, undone.undone_by) == (3, analyst)
    assert undone.undone_at is not None
    assert _labels(dataset) == before
    dataset.refresh_from_db()
    assert dataset.label_counts == counts_before == recount(dataset)
    # The history stays: who labeled them at once, and that it was undone.
    assert LabelChange.objects.filter(bulk_label=bulk).count() == 3
    with pytest.raises(ValidationError) as again:
        records_label_bulk_undo(dataset=dataset, user=analyst, bulk_label_id=bulk.pk)
    assert again.value.messages == ["This bulk label was undone already."]


def test_bulk_label_undo_keeps_labels_given_since(analyst, make_user):
    from datasets_app.services.labeling import records_label_bulk, records_label_bulk_undo

    dataset = _bulk_dataset(analyst)
    bulk = records_label_bulk(
        dataset=dataset, user=analyst, label="refund", filters={"search": "refund"}
    )
    late = Record.objects.get(import_run_id=dataset.active_import_id, text="my refund is late")
    record_label_set(dataset=dataset, user=make_user("annotator"), record_id=late.pk, label="card")
    # A later bulk label that was undone does not count as a newer label.
    later = records_label_bulk(
        dataset=dataset, user=analyst, label="other", filters={"search": "please"}
    )
    records_label_bulk_undo(dataset=dataset, user=analyst, bulk_label_id=later.pk)

    undone = records_label_bulk_undo(dataset=dataset, user=analyst, bulk_label_id=bulk.pk)

    assert undone.restored_count == 2
    now = _labels(dataset)
    assert now["my refund is late"] == ("card", "other")
    assert now["refund please"] == ("", None)
    assert now["refund for card"] == ("card", None)
    dataset.refresh_from_db()
    assert dataset.label_counts == recount(dataset)


def test_bulk_label_undo_refuses_another_datasets_bulk_label_and_annotators(analyst, make_user):
    from datasets_app.services.labeling import records_label_bulk, records_label_bulk_undo

    dataset = _bulk_dataset(analyst)
    other = _bulk_dataset(analyst)
    bulk = records_label_bulk(dataset=dataset, user=analyst, label="card", filters={"label": ""})
    with pytest.raises(PermissionDenied):
        records_label_bulk_undo(dataset=dataset, user=make_user("annotator"), bulk_label_id=bulk.pk)
    with pytest.raises(ValidationError) as refused:
        records_label_bulk_undo(dataset=other, user=analyst, bulk_label_id=bulk.pk)
    assert refused.value.messages == ["This dataset has no such bulk label."]
    bulk.refresh_from_db()
    assert bulk.undone_at is None
    assert _labels(dataset)["refund please"] == ("card", None)


def test_bulk_label_changes_nothing_when_the_confirmed_count_is_out_of_date(analyst):
    from datasets_app.services.labeling import records_label_bulk, records_label_bulk_preview

    dataset = _bulk_dataset(analyst)
    preview = records_label_bulk_preview(
        dataset=dataset, user=analyst, label="refund", filters={"search": "refund"}
    )
    assert (preview.matching, preview.changing) == (3, 3)
    assert preview.by_label == {"card": 1, "": 1, "other": 1}
    with pytest.raises(ValidationError) as refused:
        records_label_bulk(
            dataset=dataset,
            user=analyst,
            label="refund",
            filters={"search": "refund"},
            expected_count=2,
        )
    assert refused.value.messages == [
        "3 records would get this label now, not the 2 you confirmed (the records changed "
        "meanwhile). Nothing was changed; check the list and confirm again."
    ]
    assert not LabelChange.objects.exists()
    assert not BulkLabel.objects.exists()


def test_records_page_asks_to_confirm_with_the_count_and_offers_undo(client, analyst):
    dataset = _bulk_dataset(analyst)
    client.force_login(analyst)
    records = reverse("datasets:dataset_records", args=[dataset.pk])
    page = client.get(records, {"search": "card"}).content.decode()
    # No label is preselected: pressing the button by accident labels nothing.
    assert '<option value="" selected disabled>Choose a label…</option>' in page
    assert 'aria-label="Label for every matching record" required' in page

    url = reverse("datasets:records_label_bulk", args=[dataset.pk])
    confirm = client.post(url, {"search": "card", "new_label": "other"}).content.decode()
    assert 'data-testid="bulk-label-count">3</strong>' in confirm
    assert 'data-testid="bulk-label-matching">3</strong>' in confirm
    assert '<input type="hidden" name="expected_count" value="3">' in confirm
    assert '<input type="hidden" name="search" value="card">' in confirm
    assert not LabelChange.objects.exists()

    done = client.post(
        url, {"search": "card", "new_label": "other", "expected_count": "3"}, follow=True
    ).content.decode()
    assert "Labeled 3 records “other”." in done
    bulk = BulkLabel.objects.get()
    undo_url = reverse("datasets:records_label_bulk_undo", args=[dataset.pk, bulk.pk])
    assert f'action="{undo_url}"' in done

    undone = client.post(undo_url, follow=True)
    assert (
        "Undid the bulk label “other”: 3 records got their earlier label back."
        in undone.content.decode()
    )
    assert undone.redirect_chain[-1][0].endswith("/records/?search=card")
    assert _labels(dataset)["card lost"] == ("card", None)
    assert f'action="{undo_url}"' not in undone.content.decode()


def test_bulk_label_undo_over_the_api(api_client_as, analyst):
    dataset = _bulk_dataset(analyst)
    api = api_client_as("analyst")
    done = api.post(
        f"/api/v1/datasets/{dataset.pk}/records/label/",
        {"label": "other", "filters": {"search": "card"}, "expected_count": 3},
        format="json",
    ).json()
    undo = f"/api/v1/datasets/{dataset.pk}/bulk-labels/{done['bulk_label_id']}/undo/"
    assert api_client_as("annotator").post(undo).status_code == 403
    answer = api.post(undo)
    assert answer.status_code == 200
    assert answer.json() == {"restored": 3, "kept": 0}
    again = api.post(undo)
    assert again.status_code == 400
    assert again.json()["detail"] == "This bulk label was undone already."


# --- relabeling from the records page comes back to it (issue 9, item 15) --------------------
def test_relabel_from_the_records_page_returns_to_the_filtered_list(client, analyst):
    from urllib.parse import quote

    dataset = _bulk_dataset(analyst)
    client.force_login(analyst)
    records = reverse("datasets:dataset_records", args=[dataset.pk])
    card = Record.objects.get(import_run_id=dataset.active_import_id, text="card lost")
    page = client.get(records, {"search": "card", "split": "__any__"}).content.decode()
    here = f"{records}?search=card&split=__any__"
    link = f"?record={card.pk}&amp;next={quote(here, safe='')}"
    assert link in page

    queue = client.get(
        reverse("datasets:labeling_queue", args=[dataset.pk]), {"record": card.pk, "next": here}
    ).content.decode()
    assert f'<input type="hidden" name="next" value="{here.replace("&", "&amp;")}">' in queue
    assert 'data-testid="back-to-records"' in queue

    saved = client.post(
        reverse("datasets:labeling_save", args=[dataset.pk, card.pk]),
        {"label": "other", "expected_label": "card", "next": here},
    )
    assert saved.status_code == 302
    assert saved["Location"] == here
    assert Record.objects.get(pk=card.pk).label == "other"


@pytest.mark.parametrize(
    "unsafe",
    ["https://evil.example/", "//evil.example/records/", "/\\evil.example/", "javascript:alert(1)"],
)
def test_relabel_ignores_a_next_that_leaves_the_site(client, analyst, unsafe):
    dataset = _bulk_dataset(analyst)
    client.force_login(analyst)
    card = Record.objects.get(import_run_id=dataset.active_import_id, text="card lost")
    queue = client.get(
        reverse("datasets:labeling_queue", args=[dataset.pk]), {"record": card.pk, "next": unsafe}
    ).content.decode()
    assert 'name="next"' not in queue
    saved = client.post(
        reverse("datasets:labeling_save", args=[dataset.pk, card.pk]),
        {"label": "other", "expected_label": "card", "next": unsafe},
    )
    assert saved["Location"] == (
        reverse("datasets:labeling_queue", args=[dataset.pk]) + f"?after={card.pk}"
    )


# --- bulk labels: bad input on the page and the API (review) ----------------------------------
@pytest.mark.parametrize("expected", ["", "3abc", "-3", "²", "1" * 12])
def test_bulk_label_page_refuses_a_malformed_confirmed_count(client, analyst, expected):
    dataset = _bulk_dataset(analyst)
    client.force_login(analyst)
    answer = client.post(
        reverse("datasets:records_label_bulk", args=[dataset.pk]),
        {"search": "card", "new_label": "other", "expected_count": expected},
        follow=True,
    )
    assert answer.redirect_chain[-1][0].endswith("/records/?search=card")
    assert "Confirm the number of records to label again." in answer.content.decode()
    assert not LabelChange.objects.exists()
    assert not BulkLabel.objects.exists()


def test_bulk_label_undo_of_an_unknown_or_another_datasets_id_is_refused_on_page_and_api(
    client, api_client_as, analyst
):
    from datasets_app.services.labeling import records_label_bulk

    dataset = _bulk_dataset(analyst)
    other = _bulk_dataset(analyst)
    foreign = records_label_bulk(
        dataset=other, user=analyst, label="other", filters={"search": "card"}
    )
    client.force_login(analyst)
    api = api_client_as("analyst")
    for bulk_label_id in (foreign.pk, foreign.pk + 1000):
        page = client.post(
            reverse("datasets:records_label_bulk_undo", args=[dataset.pk, bulk_label_id]),
            follow=True,
        )
        assert page.redirect_chain[-1][0] == reverse("datasets:dataset_records", args=[dataset.pk])
        assert "This dataset has no such bulk label." in page.content.decode()
        answer = api.post(f"/api/v1/datasets/{dataset.pk}/bulk-labels/{bulk_label_id}/undo/")
        assert answer.status_code == 400
        assert answer.json()["detail"] == "This dataset has no such bulk label."
    foreign.refresh_from_db()
    assert foreign.undone_at is None
    assert _labels(other)["card lost"] == ("other", "card")
