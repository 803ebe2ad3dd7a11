"""Label counts off the dataset row (services/label_counts.py): annotators add their labels to
shards of the counts and never write the dataset row, whoever sets the counts (a split, fix,
import or recount) folds the shards in under the dataset lock, and a label in flight is waited
out, so the counts stay exact."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from datasets_app.models import Dataset, LabelCountShard, Record
from datasets_app.selectors import dataset_list_for_user, record_distribution
from datasets_app.services.imports import dataset_refresh_counts
from datasets_app.services.jobs import dataset_lock
from datasets_app.services.labeling import (
    label_schema_set,
    labeling_next,
    record_label_set,
)
from tests.datasets_app.factories import imported_dataset

pytestmark = pytest.mark.usefixtures("redis_url")

MAPPING = {"text_columns": ["text"], "label_column": "label"}


def make_dataset(analyst, count: int) -> Dataset:
    rows = "\n".join(f"text {i}," for i in range(count))
    dataset = imported_dataset(analyst, f"text,label\n{rows}\n", MAPPING, report=False)
    label_schema_set(dataset=dataset, user=analyst, labels=["a", "b", "c"])
    dataset.refresh_from_db()
    return dataset


def recount(dataset) -> dict[str, int]:
    active = Record.objects.filter(import_run_id=dataset.active_import_id, is_excluded=False)
    return record_distribution(active)[1]


def row_version(dataset) -> str:
    """The dataset row's xmin: it changes with every UPDATE of the row, not with its locks."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT xmin::text FROM datasets_app_dataset WHERE id = %s", [dataset.pk])
        return cursor.fetchone()[0]


def label_some(dataset, person, labels: list[str]) -> None:
    after = None
    for value in labels:
        item = labeling_next(dataset=dataset, user=person, after=after)
        record_label_set(
            dataset=dataset, user=person, record_id=item.record.pk, label=value, expected_label=""
        )
        after = item.record.pk


def test_annotators_add_to_their_shards_and_never_write_the_dataset_row(
    on_postgres, analyst, make_user
):
    dataset = make_dataset(analyst, 8)
    alice, bob = make_user("annotator"), make_user("annotator")
    before = row_version(dataset)
    label_some(dataset, alice, ["a", "a", "b"])
    label_some(dataset, bob, ["c", "a"])
    assert row_version(dataset) == before
    shards = {
        shard.shard: shard.counts
        for shard in LabelCountShard.objects.filter(
            dataset=dataset, import_run_id=dataset.active_import_id
        )
    }
    assert shards[alice.pk % LabelCountShard.SHARDS] == {"": -3, "a": 2, "b": 1}
    assert shards[bob.pk % LabelCountShard.SHARDS] == {"": -2, "a": 1, "c": 1}
    dataset.refresh_from_db()
    assert dataset.label_counts == recount(dataset) == {"": 3, "a": 3, "b": 1, "c": 1}
    assert dataset.labeling_totals == {"total": 8, "labeled": 5, "unlabeled": 3, "percent": 62}
    # The queue's own read of the dataset carries the same counts, without a query of its own.
    item = labeling_next(dataset=dataset, user=alice)
    assert item.remaining == 3


def test_a_recount_folds_the_shards_into_the_dataset_row(analyst, make_user):
    dataset = make_dataset(analyst, 5)
    label_some(dataset, make_user("annotator"), ["a", "b"])
    with transaction.atomic():
        locked = dataset_lock(dataset, wait=None)
        dataset_refresh_counts(locked)
    assert not LabelCountShard.objects.filter(dataset=dataset).exists()
    dataset.refresh_from_db()
    assert dataset.label_counts_base == dataset.label_counts == {"": 3, "a": 1, "b": 1}


@pytest.mark.django_db(transaction=True)
def test_a_recount_waits_for_a_label_in_flight(on_postgres, redis_url, make_user):
    """A label holds the dataset row FOR SHARE until it commits, so a split, fix or recount
    (which sets the counts and drops the shards) cannot count around it: neither lost nor
    counted twice."""
    analyst = make_user("analyst")
    dataset = make_dataset(analyst, 4)
    person = make_user("annotator")
    first = labeling_next(dataset=dataset, user=person).record
    labeled, release = threading.Event(), threading.Event()
    recounted = threading.Event()
    failures: list[BaseException] = []

    def annotator():
        try:
            with transaction.atomic():
                record_label_set(
                    dataset=dataset, user=person, record_id=first.pk, label="b", expected_label=""
                )
                labeled.set()
                release.wait(10)
        except BaseException as exc:  # reported below
            failures.append(exc)
        finally:
            connection.close()

    def recounter():
        try:
            labeled.wait(10)
            with transaction.atomic():
                dataset_refresh_counts(dataset_lock(dataset, wait=None))
            recounted.set()
        except BaseException as exc:  # reported below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=annotator), threading.Thread(target=recounter)]
    for thread in threads:
        thread.start()
    assert labeled.wait(10)
    time.sleep(0.5)
    assert not recounted.is_set()  # waiting for the label's commit
    release.set()
    for thread in threads:
        thread.join(20)
    assert failures == []
    assert recounted.is_set()
    dataset.refresh_from_db()
    assert dataset.label_counts == recount(dataset) == {"": 3, "b": 1}
    assert not LabelCountShard.objects.filter(dataset=dataset).exists()


def test_counts_add_up_in_sql(on_postgres):
    with connection.cursor() as cursor:
        cursor.execute(
            'SELECT lepton_counts_add(\'{"a": 1, "b": -1}\'::jsonb, \'{"b": 2, "c": -1}\')'
        )
        value = cursor.fetchone()[0]
    import json

    assert json.loads(value) == {"a": 1, "b": 1, "c": -1}


def test_an_unsaved_dataset_answers_with_its_own_counts():
    assert Dataset(label_counts_base={"a": 2, "": 0, "b": 5}).label_counts == {"b": 5, "a": 2}


def test_a_list_of_datasets_reads_their_counts_with_their_rows(analyst, make_user):
    datasets = [make_dataset(analyst, 3) for _ in range(3)]
    label_some(datasets[0], make_user("annotator"), ["a", "b"])
    listed = list(dataset_list_for_user(user=analyst))
    with CaptureQueriesContext(connection) as queries:
        counts = {dataset.pk: dataset.label_counts for dataset in listed}
    assert queries.captured_queries == []  # no query per dataset
    assert counts[datasets[0].pk] == {"": 1, "a": 1, "b": 1}
    assert counts[datasets[1].pk] == counts[datasets[2].pk] == {"": 3}
