"""Undo over the REST API (issue 12, "At the keyboard"): POST …/labeling/undo/ undoes the
caller's last label with the labeling page's service; only one's own last label, in a dataset one
may label; refusals are sentences with 400/404/409 and change nothing."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from datasets_app.models import Annotation, LabelChange, LabelClaim, Record
from datasets_app.services.labeling import dataset_assign, record_label_set
from datasets_app.services.labeling_keyboard import UNDO_MINUTES, labeling_submit
from datasets_app.services.labeling_undo import NothingToUndo, UndoRefused, labeling_undo_last
from tests.datasets_app.factories import imported_dataset

pytestmark = pytest.mark.usefixtures("redis_url")

# One labeled in the file, three without a label.
CSV = "text,label\nfirst,pos\nsecond,\nthird,\nfourth,neg\n"
MAPPING = {"text_columns": ["text"], "label_column": "label"}


@pytest.fixture
def dataset(analyst):
    return imported_dataset(analyst, CSV, MAPPING, report=False)


def rec(text: str) -> Record:
    return Record.objects.get(text=text)


def api_as(user) -> APIClient:
    api = APIClient()
    api.force_authenticate(user)
    return api


def give(dataset, user, text: str, label: str) -> Record:
    return labeling_submit(
        dataset=dataset,
        user=user,
        record_id=rec(text).pk,
        label=label,
        client_key=uuid.uuid4().hex,
    )


def url(dataset) -> str:
    return f"/api/v1/datasets/{dataset.pk}/labeling/undo/"


def test_undo_walks_back_ones_own_labels_last_first(make_user, dataset):
    ann = make_user("annotator")
    give(dataset, ann, "second", "neg")
    give(dataset, ann, "third", "pos")
    api = api_as(ann)
    answer = api.post(url(dataset), {}, format="json")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["undone_label"] == "pos"
    assert (body["record"]["id"], body["record"]["text"], body["record"]["label"]) == (
        rec("third").pk,
        "third",
        "",
    )
    assert rec("third").label == ""
    assert rec("second").label == "neg"  # only the last one
    assert Annotation.objects.get(record=rec("third"), user=ann).undone_at is not None
    assert LabelClaim.objects.filter(record=rec("third"), user=ann).exists()  # held for them
    dataset.refresh_from_db()
    assert dataset.label_counts == {"": 1, "neg": 2, "pos": 1}
    # Again: the label before it, named by its record this time.
    again = api.post(url(dataset), {"record_id": rec("second").pk}, format="json")
    assert again.status_code == 200, again.content
    assert again.json()["undone_label"] == "neg"
    assert rec("second").label == ""
    assert list(
        LabelChange.objects.filter(record=rec("second"))
        .order_by("id")
        .values_list("old_label", "new_label")
    ) == [("", "neg"), ("neg", "")]
    # Then nothing is left.
    empty = api.post(url(dataset), {}, format="json")
    assert empty.status_code == 409
    assert empty.json()["detail"] == (
        "You have no label in this dataset to undo: you have not labeled a record here, or your "
        "labels were undone already."
    )


def test_undo_of_a_relabel_gives_the_record_its_earlier_label(make_user, dataset):
    ann = make_user("annotator")
    give(dataset, ann, "first", "neg")  # the file said "pos"
    answer = api_as(ann).post(url(dataset), {"record_id": rec("first").pk}, format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json()["record"]["label"] == "pos"
    assert rec("first").label == "pos"


def test_nothing_to_undo_for_someone_who_has_not_labeled(make_user, dataset):
    ann = make_user("annotator")
    answer = api_as(ann).post(url(dataset), {}, format="json")
    assert answer.status_code == 409
    assert answer.json()["detail"].startswith("You have no label in this dataset to undo")


def test_someone_elses_label_cannot_be_undone(make_user, dataset):
    ann, bo = make_user("annotator"), make_user("annotator", username="bo")
    give(dataset, ann, "second", "neg")
    second = rec("second")
    # Bo names Ann's record: refused, Ann's label stays.
    answer = api_as(bo).post(url(dataset), {"record_id": second.pk}, format="json")
    assert answer.status_code == 409
    assert answer.json()["detail"] == (
        f"You have no label on record {second.pk} to undo: it was undone already, or the record "
        "was labeled by someone else."
    )
    assert answer.json()["errors"] == {"record_id": [answer.json()["detail"]]}
    # Without a record Bo has nothing of his own to undo: Ann's is never taken as his.
    assert api_as(bo).post(url(dataset), {}, format="json").status_code == 409
    assert rec("second").label == "neg"
    assert Annotation.objects.get(record=second, user=ann).undone_at is None


def test_undo_is_refused_once_someone_else_changed_the_label(make_user, dataset):
    ann, bo = make_user("annotator"), make_user("annotator", username="bo")
    give(dataset, ann, "second", "neg")
    record_label_set(dataset=dataset, user=bo, record_id=rec("second").pk, label="pos")
    answer = api_as(ann).post(url(dataset), {}, format="json")
    assert answer.status_code == 409
    assert answer.json()["detail"] == (
        'bo changed this record\'s label to "pos" after you labeled it, so your label can no '
        "longer be undone. Open the record to change it."
    )
    assert rec("second").label == "pos"
    assert Annotation.objects.get(record=rec("second"), user=ann).undone_at is None


def test_only_the_last_label_can_be_named(make_user, dataset):
    ann = make_user("annotator")
    give(dataset, ann, "second", "neg")
    give(dataset, ann, "third", "pos")
    second, third = rec("second"), rec("third")
    answer = api_as(ann).post(url(dataset), {"record_id": second.pk}, format="json")
    assert answer.status_code == 409
    assert answer.json()["detail"] == (
        f"Only your last label can be undone, and your last label in this dataset is on record "
        f"{third.pk}, not {second.pk}. Undo that one first."
    )
    assert (rec("second").label, rec("third").label) == ("neg", "pos")
    # A retried request for a label already undone does not undo the one before it.
    assert api_as(ann).post(url(dataset), {"record_id": third.pk}, format="json").status_code == 200
    retried = api_as(ann).post(url(dataset), {"record_id": third.pk}, format="json")
    assert retried.status_code == 409
    assert rec("second").label == "neg"


def test_a_label_older_than_the_undo_window_is_refused(make_user, dataset):
    ann = make_user("annotator")
    give(dataset, ann, "second", "neg")
    Annotation.objects.filter(user=ann).update(
        updated_at=timezone.now() - timedelta(minutes=UNDO_MINUTES + 1)
    )
    answer = api_as(ann).post(url(dataset), {}, format="json")
    assert answer.status_code == 409
    assert f"more than {UNDO_MINUTES} minutes ago" in answer.json()["detail"]
    assert rec("second").label == "neg"


def test_bad_and_unknown_record_ids(make_user, dataset):
    ann = make_user("annotator")
    give(dataset, ann, "second", "neg")
    api = api_as(ann)
    for bad in ("abc", 0, -3, True, 1.5):
        answer = api.post(url(dataset), {"record_id": bad}, format="json")
        assert answer.status_code == 400, (bad, answer.content)
        assert answer.json()["errors"]["record_id"], bad
    other = imported_dataset(
        make_user("analyst"), "text,label\nelsewhere,\n", MAPPING, report=False
    )
    foreign = Record.objects.get(dataset=other).pk
    missing = api.post(url(dataset), {"record_id": foreign}, format="json")
    assert missing.status_code == 404
    assert missing.json()["detail"] == (
        f"Record {foreign} is not in this dataset (it was imported again or deleted), so there "
        "is no label of yours on it to undo."
    )
    not_json = api.generic("POST", url(dataset), "[1]", content_type="application/json")
    assert not_json.status_code == 400
    assert rec("second").label == "neg"


def test_unassigned_annotators_and_viewers_are_refused(make_user, analyst, dataset):
    alice, bob = make_user("annotator", username="alice"), make_user("annotator", username="bob")
    give(dataset, bob, "second", "neg")  # before the dataset was assigned to anyone
    dataset_assign(dataset=dataset, user=analyst, annotator=alice)
    answer = api_as(bob).post(url(dataset), {}, format="json")
    assert answer.status_code == 404
    assert answer.json()["detail"] == (
        "This dataset is not assigned to you. Ask an analyst to assign you to it."
    )
    assert rec("second").label == "neg"
    assert Annotation.objects.get(user=bob).undone_at is None
    assert api_as(make_user("viewer")).post(url(dataset), {}, format="json").status_code == 403
    unknown = api_as(alice).post("/api/v1/datasets/999999/labeling/undo/", {}, format="json")
    assert unknown.status_code == 404
    # The assigned annotator undoes her own.
    give(dataset, alice, "third", "pos")
    assert api_as(alice).post(url(dataset), {}, format="json").status_code == 200
    assert rec("third").label == ""


def test_the_service_raises_distinct_refusals(make_user, dataset):
    ann = make_user("annotator")
    with pytest.raises(NothingToUndo):
        labeling_undo_last(dataset=dataset, user=ann)
    give(dataset, ann, "second", "neg")
    give(dataset, ann, "third", "neg")
    with pytest.raises(UndoRefused):
        labeling_undo_last(dataset=dataset, user=ann, record_id=rec("second").pk)
    result = labeling_undo_last(dataset=dataset, user=ann)
    assert (result.record.pk, result.undone_label) == (rec("third").pk, "neg")


def test_the_schema_describes_undo(api_client_as):
    schema = api_client_as("analyst").get(
        "/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"}
    )
    document = json.loads(schema.content)
    operation = document["paths"]["/api/v1/datasets/{dataset_id}/labeling/undo/"]["post"]
    assert operation["operationId"] == "v1_datasets_labeling_undo"
    assert {"200", "400", "404", "409"} <= set(operation["responses"])
    body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    fields = document["components"]["schemas"][body.rsplit("/", 1)[1]]["properties"]
    assert fields["record_id"]["type"] == "integer"
    result = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert set(document["components"]["schemas"][result.rsplit("/", 1)[1]]["properties"]) == {
        "record",
        "undone_label",
    }
