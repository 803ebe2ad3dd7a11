"""The keyboard queue for records that may have several labels (issue 12): suggested sets shown
in the list's order when every label is a choice, a set compared with the suggestion as a set,
and the page's JSON endpoints (config, submit, undo) for such a dataset."""

from __future__ import annotations

import json
import uuid

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from datasets_app.models import Annotation, Record, RecordSuggestion
from datasets_app.services.labeling import label_schema_set
from datasets_app.services.labeling_multi import (
    label_set_canonical,
    labeling_submit_labels,
    suggestions_shown,
)
from tests.datasets_app.factories import imported_dataset

pytestmark = pytest.mark.usefixtures("redis_url")

CSV = "text\none\ntwo\nthree\n"
LABELS = ["urgent", "billing", "bug"]


@pytest.fixture
def dataset(analyst):
    dataset = imported_dataset(analyst, CSV, {"text_columns": ["text"]}, report=False)
    return label_schema_set(dataset=dataset, user=analyst, labels=LABELS, multiple=True)


def rec(text: str) -> Record:
    return Record.objects.get(text=text)


def suggest(dataset, text: str, label: str, source: str, probability: float = 0.7):
    return RecordSuggestion.objects.create(
        dataset=dataset, record=rec(text), label=label, probability=probability, source=source
    )


def test_a_set_is_written_once_each_in_the_lists_order():
    assert label_set_canonical("bug|urgent", LABELS) == "urgent|bug"
    assert label_set_canonical(" bug | urgent |bug|", LABELS) == "urgent|bug"
    assert label_set_canonical("zeta|bug|alpha", LABELS) == "bug|alpha|zeta"  # unknown last
    assert label_set_canonical("", LABELS) == ""


def test_a_suggested_set_is_shown_when_every_label_is_a_choice(dataset):
    suggest(dataset, "one", "bug|urgent", "model v1")
    suggest(dataset, "two", "billing", "model v1")
    older = suggest(dataset, "three", "bug", "model v1")
    suggest(dataset, "three", "bug|refund", "model v2")  # newer, but "refund" is not offered
    ids = [rec(text).pk for text in ("one", "two", "three")]
    shown = suggestions_shown(dataset=dataset, record_ids=ids)
    assert {pk: (s["label"], s["source"]) for pk, s in shown.items()} == {
        ids[0]: ("urgent|bug", "model v1"),
        ids[1]: ("billing", "model v1"),
        ids[2]: ("bug", older.source),
    }
    assert shown[ids[0]]["probability"] == pytest.approx(0.7)
    assert suggestions_shown(dataset=dataset, record_ids=[]) == {}


def test_one_label_per_record_keeps_the_single_label_rule(analyst):
    dataset = imported_dataset(analyst, CSV, {"text_columns": ["text"]}, report=False)
    dataset = label_schema_set(dataset=dataset, user=analyst, labels=LABELS)
    suggest(dataset, "one", "bug|urgent", "model v1")  # not one label of the list
    suggest(dataset, "two", "bug", "model v1")
    shown = suggestions_shown(dataset=dataset, record_ids=[rec("one").pk, rec("two").pk])
    assert {pk: s["label"] for pk, s in shown.items()} == {rec("two").pk: "bug"}


def test_a_set_equal_to_the_suggestion_in_another_order_accepts_it(dataset, make_user):
    ann = make_user("annotator")
    record = labeling_submit_labels(
        dataset=dataset,
        user=ann,
        record_id=rec("one").pk,
        label="bug|urgent",
        suggestion_label="urgent | bug",
        suggestion_probability=0.7,
        client_key=uuid.uuid4().hex,
    )
    assert record.label == "urgent|bug"
    annotation = Annotation.objects.get(record=rec("one"), user=ann)
    assert (annotation.label, annotation.suggestion_label) == ("urgent|bug", "urgent|bug")
    assert annotation.suggestion_accepted is True
    labeling_submit_labels(
        dataset=dataset,
        user=ann,
        record_id=rec("two").pk,
        label="urgent",
        suggestion_label="bug|urgent",
    )
    assert Annotation.objects.get(record=rec("two"), user=ann).suggestion_accepted is False
    with pytest.raises(ValidationError, match='"refund" is not one of this dataset'):
        labeling_submit_labels(
            dataset=dataset, user=ann, record_id=rec("three").pk, label="bug|refund"
        )
    with pytest.raises(ValidationError, match=r"Choose a label\."):
        labeling_submit_labels(dataset=dataset, user=ann, record_id=rec("three").pk, label=" | ")
    assert rec("three").label == ""


def test_the_page_runs_the_queue_for_several_labels(client, make_user, dataset):
    ann = make_user("annotator")
    client.force_login(ann)
    suggest(dataset, "one", "bug|urgent", "model v1", probability=0.6)
    page = client.get(reverse("datasets:labeling_queue", args=[dataset.pk]))
    config = json.loads(
        page.content.decode()
        .split('id="labeling-config" type="application/json">')[1]
        .split("</script>")[0]
    )
    assert config["multiple"] is True
    assert config["record"]["text"] == "one"
    assert config["record"]["suggestion"] == {"label": "urgent|bug", "probability": 0.6}
    assert "accepts these labels" in page.content.decode()
    # The page sends the set as one label; the server keeps it in the list's order.
    answer = client.post(
        reverse("datasets:labeling_submit_json", args=[dataset.pk]),
        data=json.dumps(
            {
                "record_id": rec("one").pk,
                "label": "bug|urgent",
                "expected_label": "",
                "key": uuid.uuid4().hex,
                "suggestion_label": "urgent|bug",
                "suggestion_probability": 0.6,
            }
        ),
        content_type="application/json",
    )
    assert answer.status_code == 200, answer.content
    assert rec("one").label == "urgent|bug"
    assert Annotation.objects.get(record=rec("one")).suggestion_accepted is True
    undone = client.post(
        reverse("datasets:labeling_undo_json", args=[dataset.pk]),
        data=json.dumps({"record_id": rec("one").pk}),
        content_type="application/json",
    )
    assert undone.status_code == 200, undone.content
    assert undone.json()["record"]["label"] == ""
    assert undone.json()["record"]["suggestion"] == {"label": "urgent|bug", "probability": 0.6}
    assert rec("one").label == ""
    refused = client.post(
        reverse("datasets:labeling_submit_json", args=[dataset.pk]),
        data=json.dumps(
            {"record_id": rec("two").pk, "label": "urgent|refund", "key": uuid.uuid4().hex}
        ),
        content_type="application/json",
    )
    assert refused.status_code == 400
    assert refused.json()["error"].startswith('"refund" is not one of this dataset')


def test_the_api_compares_a_set_with_the_suggestion_as_a_set(api_client_as, dataset):
    api = api_client_as("annotator")
    answer = api.post(
        f"/api/v1/datasets/{dataset.pk}/records/{rec('two').pk}/label/",
        {"label": "bug|billing", "suggestion_label": "billing|bug", "expected_label": ""},
        format="json",
    )
    assert answer.status_code == 200, answer.content
    assert answer.json()["label"] == "billing|bug"
    assert Annotation.objects.get(record=rec("two")).suggestion_accepted is True
