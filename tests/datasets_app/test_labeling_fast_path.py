"""The labeling queue's hot path as hand-written PostgreSQL (the next record in file order, a
label at overlap 1) against the ORM path it replaces: the same actions leave the same state.
On SQLite both runs take the ORM path."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext

from datasets_app.models import Annotation, Dataset, LabelChange, LabelClaim, Record, ReviewItem
from datasets_app.services import labeling
from datasets_app.services.labeling import (
    LabelConflict,
    label_schema_set,
    labeling_next,
    labeling_settings_set,
    record_label_set,
)
from tests.datasets_app.factories import imported_dataset

pytestmark = pytest.mark.usefixtures("redis_url")

CSV = "text,label\nfirst,pos\nsecond,\nthird,neg\nfourth,\nfifth,\nsixth,\nseventh,\n"
MAPPING = {"text_columns": ["text"], "label_column": "label"}


def text(record_id: int) -> str:
    return Record.objects.get(pk=record_id).text


def session(dataset: Dataset, a, b) -> list:
    """Two annotators' actions, with what each returned; the results name records by text."""
    seen: list = []
    first_a = labeling_next(dataset=dataset, user=a).record
    first_b = labeling_next(dataset=dataset, user=b).record
    seen += [first_a.text, first_b.text]
    saved = record_label_set(
        dataset=dataset,
        user=a,
        record_id=first_a.pk,
        label="pos",
        expected_label="",
        client_key="key-a-000001",
        suggestion_label="pos",
        suggestion_probability=0.9,
        suggestion_accepted=True,
        time_spent_ms=1200,
    )
    seen.append((saved.label, saved.original_label, saved.annotation_count))
    seen.append((saved.annotation.label, saved.annotation.client_key))
    again = record_label_set(  # the page sent it again: applied once
        dataset=dataset,
        user=a,
        record_id=first_a.pk,
        label="pos",
        expected_label="",
        client_key="key-a-000001",
    )
    seen.append((again.label, again.annotation.pk == saved.annotation.pk))
    second_a = labeling_next(dataset=dataset, user=a, after=first_a.pk).record
    seen.append(second_a.text)
    record_label_set(dataset=dataset, user=b, record_id=first_b.pk, label="neg", expected_label="")
    changed = record_label_set(
        dataset=dataset, user=a, record_id=first_a.pk, label="neg", expected_label="pos"
    )
    seen.append((changed.label, changed.annotation_count, changed.annotation.suggestion_label))
    same = record_label_set(
        dataset=dataset, user=a, record_id=first_a.pk, label="neg", expected_label="neg"
    )
    seen.append((same.label, same.annotation.label))
    with pytest.raises(LabelConflict) as conflict:
        record_label_set(
            dataset=dataset, user=b, record_id=first_a.pk, label="pos", expected_label=""
        )
    seen.append(conflict.value.messages[0].replace(a.get_username(), "A"))
    filed = Record.objects.get(import_run_id=dataset.active_import_id, text="first")
    relabeled = record_label_set(
        dataset=dataset, user=b, record_id=filed.pk, label="neg", expected_label="pos"
    )
    seen.append((relabeled.label, relabeled.original_label, relabeled.annotation_count))
    # Held by a (second_a) and not handed to b; a's earlier hold let go.
    seen.append(labeling_next(dataset=dataset, user=b, after=first_b.pk).record.text)
    seen.append(labeling_next(dataset=dataset, user=a, keep=[second_a.pk]).record.text)
    return seen


def state(dataset: Dataset, a, b, c=None) -> dict:
    who = {a.pk: "a", b.pk: "b", getattr(c, "pk", None): "c"}
    dataset.refresh_from_db()
    records = Record.objects.filter(import_run_id=dataset.active_import_id).order_by("source_row")
    return {
        "records": [
            (r.text, r.label, r.original_label, r.annotation_count, r.is_excluded) for r in records
        ],
        "annotations": sorted(
            (
                text(n.record_id),
                who[n.user_id],
                n.label,
                n.suggestion_label,
                n.suggestion_probability,
                n.suggestion_accepted,
                n.client_key,
                n.time_spent_ms,
                n.undone_at is None,
            )
            for n in Annotation.objects.filter(dataset=dataset)
        ),
        "changes": [
            (text(c.record_id), c.old_label, c.new_label, who[c.user_id])
            for c in LabelChange.objects.filter(dataset=dataset).order_by("id")
        ],
        "claims": sorted(
            (text(c.record_id), who[c.user_id]) for c in LabelClaim.objects.filter(dataset=dataset)
        ),
        "counts": dataset.label_counts,
        "review": sorted(
            (text(i.record_id), i.reason, i.status, i.detail, i.suggested_label)
            for i in ReviewItem.objects.filter(dataset=dataset)
        ),
    }


def test_sql_and_orm_paths_leave_the_same_state(analyst, make_user, monkeypatch):
    results = {}
    for path in ("sql", "orm"):
        if path == "orm":
            monkeypatch.setattr(labeling, "_fast_sql", lambda: False)
        dataset = imported_dataset(analyst, CSV, MAPPING, report=False, name=path)
        a, b = make_user("annotator"), make_user("annotator")
        seen = session(dataset, a, b)
        results[path] = (seen, state(dataset, a, b))
    assert results["sql"] == results["orm"]
    seen, final = results["sql"]
    assert seen[:2] == ["second", "fourth"]
    assert final["counts"] == {"": 3, "neg": 4}
    assert ("first", "neg", "pos", 1, False) in final["records"]
    assert final["claims"] == [("fifth", "a"), ("seventh", "a"), ("sixth", "b")]


def session_at_overlap_two(dataset: Dataset, a, b, c) -> list:
    seen: list = []
    first = labeling_next(dataset=dataset, user=a).record
    seen.append(labeling_next(dataset=dataset, user=b).record.text)  # two people per record
    for person, name in ((a, "a"), (b, "b")):
        saved = record_label_set(
            dataset=dataset,
            user=person,
            record_id=first.pk,
            label="pos",
            expected_label="",
            client_key=f"key-{name}-first",
        )
        seen.append((saved.label, saved.annotation_count, saved.annotation.label))
    again = record_label_set(  # a's label sent again: applied once
        dataset=dataset, user=a, record_id=first.pk, label="pos", client_key="key-a-first"
    )
    seen.append((again.label, again.annotation_count))
    split = labeling_next(dataset=dataset, user=a, after=first.pk).record
    seen.append((split.text, labeling_next(dataset=dataset, user=b, after=first.pk).record.text))
    for person, label in ((a, "pos"), (b, "neg")):  # a tie: to review, no label
        saved = record_label_set(
            dataset=dataset, user=person, record_id=split.pk, label=label, expected_label=""
        )
        seen.append((saved.label, saved.annotation_count))
    changed = record_label_set(  # a changes their mind: a majority
        dataset=dataset, user=a, record_id=split.pk, label="neg", expected_label=""
    )
    seen.append((changed.label, changed.original_label, changed.annotation_count))
    third = record_label_set(  # a third opinion on a resolved record: the majority holds
        dataset=dataset, user=c, record_id=first.pk, label="neg", expected_label="pos"
    )
    seen.append((third.label, third.annotation_count))
    with pytest.raises(LabelConflict):
        record_label_set(
            dataset=dataset, user=c, record_id=split.pk, label="pos", expected_label=""
        )
    seen.append(labeling_next(dataset=dataset, user=c).record.text)
    return seen


def test_sql_and_orm_paths_agree_at_overlap_two(analyst, make_user, monkeypatch):
    results = {}
    for path in ("sql", "orm"):
        if path == "orm":
            monkeypatch.setattr(labeling, "_fast_sql", lambda: False)
        dataset = imported_dataset(analyst, CSV, MAPPING, report=False, name=path)
        labeling_settings_set(dataset=dataset, user=analyst, overlap=2)
        a, b, c = (make_user("annotator") for _ in range(3))
        seen = session_at_overlap_two(dataset, a, b, c)
        results[path] = (seen, state(dataset, a, b, c))
    assert results["sql"] == results["orm"]
    seen, final = results["sql"]
    assert ("second", "pos", None, 3, False) in final["records"]
    assert ("fourth", "neg", None, 2, False) in final["records"]
    assert [(text, reason) for text, reason, *_ in final["review"]] == [("fourth", "disagreement")]
    assert final["counts"] == {"": 3, "pos": 2, "neg": 2}


def tie_session(dataset: Dataset, a, b) -> list:
    """At overlap 2 on a labeled record: a tie, the tie moving to another pair of labels (the
    one open review item's counts follow), then a majority; what each label returned."""
    record = Record.objects.get(dataset=dataset, text="third")
    seen: list = []
    for person, label, expected in ((a, "pos", "neg"), (b, "neg", "neg"), (b, "meh", "")):
        saved = record_label_set(
            dataset=dataset, user=person, record_id=record.pk, label=label, expected_label=expected
        )
        seen.append((saved.label, saved.original_label, saved.annotation_count))
    saved = record_label_set(dataset=dataset, user=a, record_id=record.pk, label="meh")
    seen.append((saved.label, saved.original_label, saved.annotation_count, saved.annotation.label))
    return seen


def test_ties_above_overlap_one_update_one_review_item_on_both_paths(
    analyst, make_user, monkeypatch
):
    results = {}
    for path in ("sql", "orm"):
        if path == "orm":
            monkeypatch.setattr(labeling, "_fast_sql", lambda: False)
        dataset = imported_dataset(analyst, CSV, MAPPING, report=False, name=path)
        label_schema_set(dataset=dataset, user=analyst, labels=["pos", "neg", "meh"])
        labeling_settings_set(dataset=dataset, user=analyst, overlap=2)
        a, b = make_user("annotator"), make_user("annotator")
        results[path] = (tie_session(dataset, a, b), state(dataset, a, b))
    assert results["sql"] == results["orm"]
    seen, final = results["sql"]
    # One label keeps the file's; the tie unlabels the record (to review); the tie moves; the
    # majority labels it, the file's label kept as the original.
    assert seen == [("neg", None, 1), ("", "neg", 2), ("", "neg", 2), ("meh", "neg", 2, "meh")]
    assert final["review"] == [
        ("third", "disagreement", "open", {"labels": {"meh": 1, "pos": 1}}, "")
    ]
    assert final["counts"] == {"": 5, "pos": 1, "meh": 1}
    assert [change[1:3] for change in final["changes"]] == [("neg", ""), ("", "meh")]


def test_a_tie_above_overlap_one_is_one_round_trip_on_postgresql(on_postgres, analyst, make_user):
    dataset = imported_dataset(analyst, CSV, MAPPING, report=False)
    label_schema_set(dataset=dataset, user=analyst, labels=["pos", "neg"])
    labeling_settings_set(dataset=dataset, user=analyst, overlap=2)
    a, b = make_user("annotator"), make_user("annotator")
    record = labeling_next(dataset=dataset, user=a).record
    record_label_set(dataset=dataset, user=a, record_id=record.pk, label="pos", expected_label="")
    labeling_next(dataset=dataset, user=b)  # b's roles read (once a request)
    with CaptureQueriesContext(connection) as queries:
        saved = record_label_set(
            dataset=dataset, user=b, record_id=record.pk, label="neg", expected_label=""
        )
    # The annotation, the resolution and the review item: one call of the function.
    assert len(queries.captured_queries) == 1
    assert "EXECUTE lepton_label_set_" in queries.captured_queries[0]["sql"]
    assert (saved.label, saved.annotation_count, saved.annotation.label) == ("", 2, "neg")
    item = ReviewItem.objects.get(record_id=record.pk)
    assert (item.reason, item.status, item.detail) == (
        "disagreement",
        "open",
        {"labels": {"pos": 1, "neg": 1}},
    )


def test_an_action_is_two_round_trips_on_postgresql(on_postgres, analyst, make_user):
    dataset = imported_dataset(analyst, CSV, MAPPING, report=False)
    # With a label list (without one, the labels offered are read from the label log too).
    label_schema_set(dataset=dataset, user=analyst, labels=["pos", "neg"])
    annotator = make_user("annotator")
    item = labeling_next(dataset=dataset, user=annotator)
    with CaptureQueriesContext(connection) as queries:
        record_label_set(
            dataset=dataset,
            user=annotator,
            record_id=item.record.pk,
            label="pos",
            expected_label="",
        )
        following = labeling_next(dataset=dataset, user=annotator, after=item.record.pk)
    # Each one call of a PostgreSQL function, the dataset read included.
    assert len(queries.captured_queries) == 2
    assert "EXECUTE lepton_label_set_" in queries.captured_queries[0]["sql"]
    assert "EXECUTE lepton_labeling_next_" in queries.captured_queries[1]["sql"]
    assert following.record.text == "fourth"
    assert following.previous_id == item.record.pk


def test_prepared_calls_survive_the_server_forgetting_them(
    transactional_db, on_postgres, analyst, make_user, settings
):
    """The two calls are prepared statements of the connection; a server that forgot them
    (DISCARD ALL behind a pooler; a migration that changed a function's result) costs one
    failed call inside a transaction and none outside one. With the setting off they are
    plain statements."""
    dataset = imported_dataset(analyst, CSV, MAPPING, report=False)
    label_schema_set(dataset=dataset, user=analyst, labels=["pos", "neg"])
    annotator = make_user("annotator")
    item = labeling_next(dataset=dataset, user=annotator)
    record_label_set(dataset=dataset, user=annotator, record_id=item.record.pk, label="pos")
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    # Outside a transaction: prepared again and run in the same call.
    following = labeling_next(dataset=dataset, user=annotator, after=item.record.pk)
    assert following.record.text == "fourth"
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    with pytest.raises(DatabaseError), transaction.atomic():
        labeling_next(dataset=dataset, user=annotator, after=item.record.pk)
    again = labeling_next(dataset=dataset, user=annotator, after=item.record.pk)
    assert again.record.pk == following.record.pk
    saved = record_label_set(
        dataset=dataset, user=annotator, record_id=following.record.pk, label="neg"
    )
    assert (saved.label, Record.objects.get(pk=following.record.pk).label) == ("neg", "neg")
    settings.LABELING_PREPARED_STATEMENTS = False
    with CaptureQueriesContext(connection) as queries:
        last = labeling_next(dataset=dataset, user=annotator, after=following.record.pk)
    assert last.record.text == "fifth"
    assert [query["sql"][:9] for query in queries.captured_queries] == ["SELECT x."]
    assert "lepton_labeling_next(" in queries.captured_queries[0]["sql"]


# Suggestions (probability, margin, entropy) on the first six records of UNCERTAIN_CSV; the
# seventh has none. Two records tie on each score, so the record id breaks the tie.
UNCERTAIN_CSV = "text,label\nr1,\nr2,\nr3,\nr4,\nr5,\nr6,\nr7,\n"
FIGURES = [(0.9, 0.8, 0.3), (0.4, 0.05, 1.0), (0.6, 0.3, 0.9), (0.4, 0.05, 1.0), (0.7, 0.5, 0.6)]
FIGURES.append((0.55, 0.25, 0.95))


def uncertain_session(dataset: Dataset, a, b) -> list:
    """Two annotators walking an uncertainty order with ``after``, one of them undoing a label
    (the record needs their annotation again) and a third label offered to a record that has
    enough; what each call returned, records by text."""
    from datasets_app.services.labeling_keyboard import record_label_undo

    seen: list = []
    items = {
        "a": labeling_next(dataset=dataset, user=a),
        "b": labeling_next(dataset=dataset, user=b),
    }
    people = {"a": a, "b": b}
    labels = iter(["pos", "neg", "pos", "pos", "neg", "neg", "pos", "neg", "pos", "neg"])
    for step in range(8):
        name = "ab"[step % 2]
        item = items[name]
        if item.record is None:
            seen.append((name, None))
            continue
        saved = record_label_set(
            dataset=dataset,
            user=people[name],
            record_id=item.record.pk,
            label=next(labels),
            expected_label=item.record.label,
        )
        seen.append((name, saved.text, saved.label, saved.annotation_count))
        if step == 2:  # a takes it back: the record needs a's annotation again
            undone = record_label_undo(dataset=dataset, user=a, record_id=item.record.pk)
            seen.append(("undo", undone.text, undone.label, undone.annotation_count))
        items[name] = labeling_next(dataset=dataset, user=people[name], after=item.record.pk)
        record = items[name].record
        seen.append((name, record.text if record else None, items[name].remaining))
    return seen


@pytest.mark.parametrize("order", ["least_confidence", "margin", "entropy"])
@pytest.mark.parametrize("overlap", [1, 2])
def test_sql_and_orm_paths_agree_in_uncertainty_orders(
    analyst, make_user, monkeypatch, order, overlap
):
    from datasets_app.models import RecordSuggestion

    results = {}
    for path in ("sql", "orm"):
        if path == "orm":
            monkeypatch.setattr(labeling, "_fast_sql", lambda: False)
        dataset = imported_dataset(analyst, UNCERTAIN_CSV, MAPPING, report=False, name=path)
        label_schema_set(dataset=dataset, user=analyst, labels=["pos", "neg"])
        records = Record.objects.filter(import_run_id=dataset.active_import_id).order_by("id")
        RecordSuggestion.objects.bulk_create(
            RecordSuggestion(
                dataset=dataset,
                record=record,
                label="pos",
                probability=p,
                margin=m,
                entropy=e,
                source="model v1",
            )
            for record, (p, m, e) in zip(records, FIGURES, strict=False)
        )
        labeling_settings_set(dataset=dataset, user=analyst, overlap=overlap, order=order)
        a, b = make_user("annotator"), make_user("annotator")
        seen = uncertain_session(dataset, a, b)
        results[path] = (seen, state(dataset, a, b))
    assert results["sql"] == results["orm"]
    seen, _ = results["sql"]
    # The most uncertain first (tied with r4: by id); at overlap 2 one label resolves nothing.
    assert seen[0] == ("a", "r2", "pos" if overlap == 1 else "", 1)


def test_the_next_record_in_an_uncertainty_order_is_one_round_trip(on_postgres, analyst, make_user):
    from datasets_app.models import RecordSuggestion

    dataset = imported_dataset(analyst, UNCERTAIN_CSV, MAPPING, report=False)
    records = Record.objects.filter(import_run_id=dataset.active_import_id).order_by("id")
    RecordSuggestion.objects.bulk_create(
        RecordSuggestion(
            dataset=dataset,
            record=record,
            label="pos",
            probability=p,
            margin=m,
            entropy=e,
            source="model v1",
        )
        for record, (p, m, e) in zip(records, FIGURES, strict=False)
    )
    label_schema_set(dataset=dataset, user=analyst, labels=["pos", "neg"])
    labeling_settings_set(dataset=dataset, user=analyst, order="least_confidence")
    annotator = make_user("annotator")
    first = labeling_next(dataset=dataset, user=annotator).record  # from the top: the walk
    assert first.text == "r2"
    with CaptureQueriesContext(connection) as queries:
        following = labeling_next(dataset=dataset, user=annotator, after=first.pk)
    assert len(queries.captured_queries) == 1
    assert following.record.text == "r4"  # the tie on 0.4, by id
    assert list(LabelClaim.objects.filter(dataset=dataset).values_list("record_id", flat=True)) == [
        following.record.pk
    ]
