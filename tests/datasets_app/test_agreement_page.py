"""The agreement page and API of a dataset: annotations given through the labeling service,
figures checked against values computed by hand for this small set."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import krippendorff
import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from datasets_app.models import AgreementCounts, Annotation, DatasetJob, Record
from datasets_app.services import agreement as agreement_service
from datasets_app.services.agreement import dataset_agreement_count_start, dataset_agreement_get
from datasets_app.services.labeling import (
    label_schema_set,
    labeling_settings_set,
    record_label_set,
)
from datasets_app.services.labeling_keyboard import record_label_undo
from datasets_app.tasks import agreement_recount_task, dataset_job_execute_task
from tests.conftest import broker_for_this_process
from tests.datasets_app.factories import imported_dataset

pytestmark = pytest.mark.usefixtures("redis_url")

CSV = "text,label\none,\ntwo,\nthree,\nfour,\nfive,\nsix,\n"
MAPPING = {"text_columns": ["text"], "label_column": "label"}
# Per record (file row): ann's label, bob's label, cy's label ("" = none).
LABELS = {
    1: ("pos", "pos", ""),
    2: ("pos", "neg", "neg"),
    3: ("neg", "neg", ""),
    4: ("neg", "pos", ""),
    5: ("pos", "", ""),
    6: ("", "", ""),
}


@pytest.fixture
def dataset(analyst):
    dataset = imported_dataset(analyst, CSV, MAPPING, report=False)
    dataset = label_schema_set(dataset=dataset, user=analyst, labels=["neg", "pos"])
    return labeling_settings_set(dataset=dataset, user=analyst, overlap=2)


@pytest.fixture
def annotated(dataset, make_user):
    """ann, bob and cy label as in LABELS; ann takes 2, 4, 6... seconds, and had suggestions
    on records 1 and 2 (accepted on 1, changed on 2)."""
    people = {name: make_user("annotator", username=name) for name in ("ann", "bob", "cy")}
    rows = dict(Record.objects.filter(dataset=dataset).values_list("source_row", "id"))
    for row, labels in LABELS.items():
        for name, label in zip(("ann", "bob", "cy"), labels, strict=True):
            if not label:
                continue
            extra = {}
            if name == "ann":
                extra["time_spent_ms"] = 2000 * row
                if row in (1, 2):  # suggested pos on 1 (she took it), neg on 2 (she chose pos)
                    shown = "pos" if row == 1 else "neg"
                    extra |= {"suggestion_label": shown, "suggestion_accepted": label == shown}
            record_label_set(
                dataset=dataset, user=people[name], record_id=rows[row], label=label, **extra
            )
    return dataset


def test_figures_of_three_annotators_match_the_hand_computed_values(analyst, annotated):
    figures = dataset_agreement_get(user=analyst, dataset=annotated)

    assert figures["overlap"] == 2
    assert figures["annotations"] == 10
    assert figures["records_annotated"] == 5
    assert figures["records_overlapping"] == 4
    pairs = {(p["first"], p["second"]): p for p in figures["pairs"]}
    # ann/bob on records 1-4: pos/pos, pos/neg, neg/neg, neg/pos: 2 of 4 equal, chance 0.5.
    assert pairs[("ann", "bob")]["records"] == 4
    assert pairs[("ann", "bob")]["agreement"] == 0.5
    assert pairs[("ann", "bob")]["kappa"] == pytest.approx(0.0)
    assert pairs[("ann", "cy")]["records"] == 1
    # Record 2 (pos, neg, neg) resolves to neg, records 1 and 3 to their shared label; record 4
    # is a tie (unresolved), record 5 has one annotation.
    annotators = {a["username"]: a for a in figures["annotators"]}
    assert annotators["ann"]["labels"] == 5
    assert annotators["ann"]["resolved_records"] == 3
    assert annotators["ann"]["agreement_with_resolved"] == pytest.approx(2 / 3)
    assert annotators["bob"]["agreement_with_resolved"] == 1.0
    assert annotators["cy"]["agreement_with_resolved"] == 1.0
    # ann: 2, 4, 6, 8, 10 s: median 6 s, 5 labels in 30 s = 600 per hour.
    assert annotators["ann"]["median_seconds"] == 6.0
    assert annotators["ann"]["per_hour"] == pytest.approx(600.0)
    assert annotators["bob"]["median_seconds"] is None
    assert annotators["ann"]["suggestions"] == {"shown": 2, "accepted": 1, "rate": 0.5}
    assert figures["suggestions"] == {"shown": 2, "accepted": 1, "rate": 0.5}
    # Ordered pairs: rec 1 (pos,pos) x2; rec 2 (pos,neg,neg): pos-neg x2, neg-pos x2, neg-neg x2;
    # rec 3 neg-neg x2; rec 4 neg-pos, pos-neg.
    assert figures["confusion"]["labels"] == ["neg", "pos"]
    assert figures["confusion"]["matrix"] == [[4, 3], [3, 2]]
    codes = {"": np.nan, "neg": 0, "pos": 1}
    reliability = np.array([[codes[labels[i]] for labels in LABELS.values()] for i in range(3)])
    assert figures["alpha"] == pytest.approx(
        krippendorff.alpha(reliability_data=reliability, level_of_measurement="nominal")
    )


def _by_name(figures: dict) -> tuple[dict, dict]:
    pairs = {(p["first"], p["second"]): p for p in figures["pairs"]}
    return pairs, {a["username"]: a for a in figures["annotators"]}


def test_kept_counts_serve_the_page_until_an_annotation_changes(analyst, annotated, make_user):
    rows = dict(Record.objects.filter(dataset=annotated).values_list("source_row", "id"))
    bob = get_user_model().objects.get(username="bob")
    first = dataset_agreement_get(user=analyst, dataset=annotated)

    again = dataset_agreement_get(user=analyst, dataset=annotated)

    assert again["computed_at"] == first["computed_at"]  # read from the kept tables
    assert again == first
    assert AgreementCounts.objects.filter(dataset=annotated).count() == 1

    # A new annotator's label: counted again.
    dan = make_user("annotator", username="dan")
    record_label_set(dataset=annotated, user=dan, record_id=rows[5], label="neg")
    added = dataset_agreement_get(user=analyst, dataset=annotated)
    assert added["computed_at"] > first["computed_at"]
    assert added["annotations"] == 11
    assert _by_name(added)[0][("ann", "dan")]["records"] == 1

    # bob changes his label on record 1 (same count, same newest id): ann and bob now agree
    # on 1 of 4.
    record_label_set(dataset=annotated, user=bob, record_id=rows[1], label="neg")
    changed = dataset_agreement_get(user=analyst, dataset=annotated)
    assert changed["annotations"] == 11
    assert _by_name(changed)[0][("ann", "bob")]["agreement"] == 0.25

    # bob undoes it: his annotation of record 1 no longer counts.
    record_label_undo(dataset=annotated, user=bob, record_id=rows[1])
    undone = dataset_agreement_get(user=analyst, dataset=annotated)
    assert undone["annotations"] == 10
    assert _by_name(undone)[0][("ann", "bob")]["records"] == 3


def test_kept_counts_follow_labels_changed_outside_the_queue_and_deleted_people(analyst, annotated):
    rows = dict(Record.objects.filter(dataset=annotated).values_list("source_row", "id"))
    before = _by_name(dataset_agreement_get(user=analyst, dataset=annotated))[1]
    assert before["ann"]["agreement_with_resolved"] == pytest.approx(2 / 3)

    # A reviewer or a bulk edit sets record 1's resolved label (no annotation changes).
    Record.objects.filter(pk=rows[1]).update(label="neg")
    edited = _by_name(dataset_agreement_get(user=analyst, dataset=annotated))[1]
    assert edited["ann"]["agreement_with_resolved"] == pytest.approx(1 / 3)

    # Two records swap their labels: the same labels, on other records.
    Record.objects.filter(pk=rows[1]).update(label="pos")
    dataset_agreement_get(user=analyst, dataset=annotated)
    Record.objects.filter(pk=rows[1]).update(label="neg")
    Record.objects.filter(pk=rows[3]).update(label="pos")
    swapped = _by_name(dataset_agreement_get(user=analyst, dataset=annotated))[1]
    assert swapped["ann"]["agreement_with_resolved"] == pytest.approx(0.0)

    # A deleted person's annotations lose their author and leave the figures.
    get_user_model().objects.filter(username="cy").delete()
    figures = dataset_agreement_get(user=analyst, dataset=annotated)
    pairs, annotators = _by_name(figures)
    assert sorted(annotators) == ["ann", "bob"]
    assert list(pairs) == [("ann", "bob")]
    assert figures["annotations"] == 9


def test_a_deleted_persons_annotations_leave_alpha_and_the_overlap_as_if_never_given(
    analyst, annotated
):
    """Record 2 had ann, bob and cy; with cy deleted it has two authored annotations, and
    alpha and the overlapping records are those of ann and bob alone (the record's kept
    annotation count still says 3: it counts cy's annotation, now without an author)."""
    get_user_model().objects.filter(username="cy").delete()

    figures = dataset_agreement_get(user=analyst, dataset=annotated)

    assert figures["records_overlapping"] == 4
    codes = {"": np.nan, "neg": 0, "pos": 1}
    reliability = np.array([[codes[labels[i]] for labels in LABELS.values()] for i in range(2)])
    assert figures["alpha"] == pytest.approx(
        krippendorff.alpha(reliability_data=reliability, level_of_measurement="nominal")
    )


def test_a_label_committed_after_the_stamp_was_read_is_counted_once_it_settles(
    analyst, annotated, make_user
):
    # Everything labeled five minutes ago; counted now (the stamp's latest change is settled).
    Annotation.objects.filter(dataset=annotated).update(
        updated_at=F("updated_at") - timedelta(minutes=5)
    )
    assert dataset_agreement_get(user=analyst, dataset=annotated)["annotations"] == 10
    kept = AgreementCounts.objects.get(dataset=annotated)
    # dan's label was saved a moment before that latest change but committed only after the
    # stamp was read: the latest change does not move.
    record = Record.objects.get(dataset=annotated, source_row=6)
    dan = make_user("annotator", username="dan")
    late = Annotation.objects.create(dataset=annotated, record=record, user=dan, label="neg")
    Annotation.objects.filter(pk=late.pk).update(
        updated_at=kept.latest_change - timedelta(milliseconds=1)
    )

    # The stamp was read long after its latest change: nothing can be on its way, kept.
    assert dataset_agreement_get(user=analyst, dataset=annotated)["annotations"] == 10

    # Read a second after it: a write may have been on its way; once SETTLE has passed since
    # the reading, counted again, dan's label included.
    AgreementCounts.objects.filter(dataset=annotated).update(
        stamp_read_at=kept.latest_change + timedelta(seconds=1)
    )
    assert dataset_agreement_get(user=analyst, dataset=annotated)["annotations"] == 11
    assert AgreementCounts.objects.get(dataset=annotated).stamp_read_at > timezone.now() - (
        timedelta(minutes=1)
    )


def test_a_large_changed_dataset_shows_the_kept_figures_while_a_worker_counts_again(
    analyst, annotated, make_user, settings, django_capture_on_commit_callbacks, client_as
):
    rows = dict(Record.objects.filter(dataset=annotated).values_list("source_row", "id"))
    first = dataset_agreement_get(user=analyst, dataset=annotated)  # small yet: counted now
    settings.AGREEMENT_SYNC_ANNOTATIONS = 5  # these 10 annotations count as a large dataset
    assert first["stale"] is False
    assert first["recount_started_at"] is None
    dan = make_user("annotator", username="dan")
    record_label_set(dataset=annotated, user=dan, record_id=rows[5], label="neg")

    with django_capture_on_commit_callbacks() as enqueued:
        shown = dataset_agreement_get(user=analyst, dataset=annotated)
    with django_capture_on_commit_callbacks() as enqueued_again:
        again = dataset_agreement_get(user=analyst, dataset=annotated)
    page = client_as("analyst").get(f"/datasets/{annotated.pk}/agreement/").content.decode()

    assert shown["stale"] is True
    assert shown["annotations"] == 10  # the kept figures, from before dan's label
    assert shown["computed_at"] == first["computed_at"]
    assert shown["recount_started_at"] is not None
    assert 0 <= shown["recount_percent"] <= 95
    assert len(enqueued) == 1  # the recount task, once
    assert again["stale"] is True
    assert enqueued_again == []
    assert 'data-testid="agreement-recount"' in page
    assert 'hx-trigger="every 3s"' in page

    agreement_recount_task(annotated.pk)  # what the worker runs
    fresh = dataset_agreement_get(user=analyst, dataset=annotated)
    page = client_as("analyst").get(f"/datasets/{annotated.pk}/agreement/").content.decode()

    assert fresh["stale"] is False
    assert fresh["annotations"] == 11
    assert fresh["recount_started_at"] is None
    assert 'data-testid="agreement-recount"' not in page
    assert "hx-trigger" not in page.split('id="agreement"')[1].split(">")[0]


def test_a_recount_lost_with_its_worker_is_queued_again(
    analyst, annotated, make_user, settings, django_capture_on_commit_callbacks
):
    rows = dict(Record.objects.filter(dataset=annotated).values_list("source_row", "id"))
    dataset_agreement_get(user=analyst, dataset=annotated)
    settings.AGREEMENT_SYNC_ANNOTATIONS = 5
    dan = make_user("annotator", username="dan")
    record_label_set(dataset=annotated, user=dan, record_id=rows[5], label="neg")
    AgreementCounts.objects.filter(dataset=annotated).update(
        recount_started_at=timezone.now() - timedelta(minutes=11)
    )

    with django_capture_on_commit_callbacks() as enqueued:
        shown = dataset_agreement_get(user=analyst, dataset=annotated)

    assert shown["stale"] is True
    assert len(enqueued) == 1
    assert timezone.now() - shown["recount_started_at"] < timedelta(minutes=1)


def test_a_recount_that_cannot_be_queued_gives_its_claim_back(
    analyst, annotated, make_user, settings, django_capture_on_commit_callbacks
):
    """Broker down: the page still shows the kept figures (no 500), and the claim is given
    back so that the next refresh tries again instead of waiting RECOUNT_LOST."""
    rows = dict(Record.objects.filter(dataset=annotated).values_list("source_row", "id"))
    dataset_agreement_get(user=analyst, dataset=annotated)
    settings.AGREEMENT_SYNC_ANNOTATIONS = 5
    dan = make_user("annotator", username="dan")
    record_label_set(dataset=annotated, user=dan, record_id=rows[5], label="neg")

    with (
        broker_for_this_process("redis://127.0.0.1:1/0"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        shown = dataset_agreement_get(user=analyst, dataset=annotated)

    assert shown["stale"] is True
    assert shown["annotations"] == 10
    assert AgreementCounts.objects.get(dataset=annotated).recount_started_at is None
    with django_capture_on_commit_callbacks() as enqueued:
        dataset_agreement_get(user=analyst, dataset=annotated)
    assert len(enqueued) == 1  # claimed and queued again at once


def test_annotators_and_viewers_may_not_read_the_figures(make_user, annotated):
    for role in ("annotator", "viewer"):
        with pytest.raises(PermissionDenied):
            dataset_agreement_get(user=make_user(role), dataset=annotated)


def test_the_page_shows_kappa_per_pair_the_heat_map_and_speed(client_as, annotated):
    page = client_as("analyst").get(f"/datasets/{annotated.pk}/agreement/")

    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-testid="pairs"' in html
    assert "ann · bob" in html
    assert 'data-testid="confusion"' in html
    assert "rgba(37, 99, 235, 0.57)" in html  # neg row: 4 of 7 pairs
    assert 'data-testid="annotators"' in html
    assert 'data-testid="computed-at"' in html
    assert "agreement-empty" not in html


def test_the_page_without_overlap_says_how_to_set_it(client_as, analyst):
    dataset = imported_dataset(analyst, CSV, MAPPING, report=False)

    page = client_as("analyst").get(f"/datasets/{dataset.pk}/agreement/")

    html = page.content.decode()
    assert page.status_code == 200
    assert 'data-testid="agreement-empty"' in html
    assert "overlap k = 1" in html
    assert "Set the overlap to 2 or more" in html
    assert f'href="/datasets/{dataset.pk}/labeling/settings/"' in html
    assert "Nobody has labeled a record of this dataset in the queue yet." in html


def test_the_page_refuses_annotators(client_as, annotated):
    page = client_as("annotator").get(f"/datasets/{annotated.pk}/agreement/")

    assert page.status_code == 403


def test_the_api_returns_the_page_figures(api_client_as, analyst, annotated):
    response = api_client_as("analyst").get(f"/api/v1/datasets/{annotated.pk}/agreement/")

    assert response.status_code == 200
    body = response.json()
    expected = dataset_agreement_get(user=analyst, dataset=annotated)
    assert body["alpha"] == pytest.approx(expected["alpha"])
    assert body["pairs"][0] == {
        "first": "ann",
        "second": "bob",
        "records": 4,
        "agreement": 0.5,
        "kappa": pytest.approx(0.0),
    }
    assert body["confusion"]["matrix"] == [[4, 3], [3, 2]]
    assert [a["username"] for a in body["annotators"]] == ["ann", "bob", "cy"]
    assert body["suggestions"]["rate"] == 0.5
    assert body["compute_seconds"] == pytest.approx(expected["compute_seconds"])
    assert body["computed_at"].startswith(expected["computed_at"].strftime("%Y-%m-%dT%H:%M:%S"))


def test_the_api_refuses_annotators_and_unknown_datasets(api_client_as, annotated):
    assert (
        api_client_as("annotator").get(f"/api/v1/datasets/{annotated.pk}/agreement/").status_code
        == 403
    )
    assert api_client_as("analyst").get("/api/v1/datasets/999999/agreement/").status_code == 404


def test_the_dataset_page_links_analysts_to_agreement_and_likely_mislabeled(client_as, annotated):
    analyst_page = client_as("analyst").get(f"/datasets/{annotated.pk}/").content.decode()
    viewer_page = client_as("viewer").get(f"/datasets/{annotated.pk}/").content.decode()

    assert f'href="/datasets/{annotated.pk}/agreement/"' in analyst_page
    assert f'href="/models/datasets/{annotated.pk}/mislabeled/"' in analyst_page
    assert 'data-testid="agreement-link"' not in viewer_page


@pytest.mark.parametrize(
    ("seed", "names"),
    [(4, ("ann", "bob", "cy")), (9, ("ann", "bob", "cy", "dan", "eve"))],
)
def test_the_counted_figures_equal_the_maintained_implementations_on_random_annotations(
    analyst, make_user, seed, names
):
    import random

    from sklearn.metrics import cohen_kappa_score

    from datasets_app.models import Annotation

    rows = "\n".join(f"text {i}," for i in range(40))
    dataset = imported_dataset(analyst, f"text,label\n{rows}\n", MAPPING, report=False)
    people = [make_user("annotator", username=name) for name in names]
    records = list(Record.objects.filter(dataset=dataset).order_by("id"))
    rng = random.Random(seed)  # noqa: S311 test data
    table = {person.username: [] for person in people}
    for record in records:
        truth = rng.choice("abc")
        for person in people:
            label = None
            if rng.random() < 0.8:
                label = truth if rng.random() < 0.7 else rng.choice("abc")
                Annotation.objects.create(dataset=dataset, record=record, user=person, label=label)
            table[person.username].append(label)
    undone = Annotation.objects.filter(user=people[2]).first()
    undone.undone_at = undone.created_at
    undone.save()
    table[names[2]][[r.pk for r in records].index(undone.record_id)] = None
    for record in records:  # kept by the labeling service; these annotations bypassed it
        record.annotation_count = Annotation.objects.filter(
            record=record, undone_at__isnull=True
        ).count()
        record.save(update_fields=["annotation_count"])

    figures = dataset_agreement_get(user=analyst, dataset=dataset)

    codes = {None: np.nan, "a": 0, "b": 1, "c": 2}
    reliability = np.array([[codes[v] for v in table[name]] for name in names])
    assert figures["alpha"] == pytest.approx(
        krippendorff.alpha(reliability_data=reliability, level_of_measurement="nominal")
    )
    for pair in figures["pairs"]:
        both = [
            (a, b)
            for a, b in zip(table[pair["first"]], table[pair["second"]], strict=True)
            if a is not None and b is not None
        ]
        assert pair["records"] == len(both)
        assert pair["kappa"] == pytest.approx(cohen_kappa_score(*zip(*both, strict=True)))
    assert figures["annotations"] == sum(v is not None for vs in table.values() for v in vs)
    # Every record with 2+ labels, every ordered pair of its labels in the confusion.
    given = [
        [label for label in column if label is not None]
        for column in zip(*(table[name] for name in names), strict=True)
    ]
    assert figures["records_overlapping"] == sum(len(labels) >= 2 for labels in given)
    assert len(figures["pairs"]) == len(names) * (len(names) - 1) // 2
    ordered = Counter(
        (first, second)
        for labels in given
        for i, first in enumerate(labels)
        for j, second in enumerate(labels)
        if i != j
    )
    order = figures["confusion"]["labels"]
    assert figures["confusion"]["matrix"] == [[ordered[(r, c)] for c in order] for r in order]


# The first count of a large dataset runs as a background job: the page answers at once with
# its progress, and the figures appear once the job (run here, as a worker would, through the
# Redis test broker) has counted them.
def _count_jobs(dataset):
    return DatasetJob.objects.filter(dataset=dataset, kind=DatasetJob.Kind.AGREEMENT)


def test_the_count_reports_each_step_of_the_background_count(analyst, annotated):
    steps: list[str] = []

    counts = agreement_service._count(annotated, report=steps.append)

    assert steps == ["sums", "pairs", "records"]
    assert list(agreement_service.COUNT_STEPS) == ["stamp", *steps]
    assert counts["records_annotated"] == 5
    assert counts == agreement_service._count(annotated)


def test_a_large_datasets_first_page_answers_at_once_and_a_job_counts_it(
    analyst, annotated, settings, client_as
):
    settings.AGREEMENT_SYNC_ANNOTATIONS = 5  # these 10 annotations count as a large dataset
    client = client_as("analyst")

    page = client.get(f"/datasets/{annotated.pk}/agreement/").content.decode()
    again = client.get(f"/datasets/{annotated.pk}/agreement/").content.decode()

    job = _count_jobs(annotated).get()  # one job for both pages
    assert job.status == "queued"
    assert not AgreementCounts.objects.filter(dataset=annotated).exists()
    assert 'data-testid="agreement-counting"' in page
    assert "Counting agreement…" in page
    assert 'data-testid="job-progress"' in page
    assert f'/jobs/datasets_app.datasetjob/{job.pk}/progress/?reload=1"' in page
    assert 'hx-trigger="every 2s"' in page
    assert 'data-testid="pairs"' not in page
    assert 'data-testid="agreement-counting"' in again

    dataset_job_execute_task(job.pk)  # what the worker runs

    job.refresh_from_db()
    assert job.status == "succeeded"
    assert job.progress == 100
    assert job.message == "Counted."
    progress = client.get(f"/jobs/datasets_app.datasetjob/{job.pk}/progress/?reload=1")
    assert progress["HX-Refresh"] == "true"  # the page reloads with the figures
    figures = dataset_agreement_get(user=analyst, dataset=annotated)
    assert figures["counting"] is False
    assert figures["stale"] is False
    assert figures["annotations"] == 10
    assert figures["records_overlapping"] == 4
    assert figures["confusion"]["matrix"] == [[4, 3], [3, 2]]
    page = client.get(f"/datasets/{annotated.pk}/agreement/").content.decode()
    assert 'data-testid="pairs"' in page
    assert "ann · bob" in page
    assert 'data-testid="agreement-counting"' not in page
    assert _count_jobs(annotated).count() == 1  # the kept tables serve the page now


def test_the_api_answers_202_with_the_progress_while_counting(annotated, settings, api_client_as):
    settings.AGREEMENT_SYNC_ANNOTATIONS = 5
    client = api_client_as("analyst")

    counting = client.get(f"/api/v1/datasets/{annotated.pk}/agreement/")
    job = _count_jobs(annotated).get()
    dataset_job_execute_task(job.pk)
    counted = client.get(f"/api/v1/datasets/{annotated.pk}/agreement/")

    assert counting.status_code == 202
    assert counting.json() == {
        "counting": True,
        "overlap": 2,
        "job_id": job.pk,
        "status": "queued",
        "progress": 0,
        "error": None,
    }
    assert counted.status_code == 200
    assert counted.json()["annotations"] == 10


def test_a_failed_count_says_why_and_count_again_starts_a_new_one(annotated, settings, client_as):
    settings.AGREEMENT_SYNC_ANNOTATIONS = 5
    client = client_as("analyst")
    client.get(f"/datasets/{annotated.pk}/agreement/")
    job = _count_jobs(annotated).get()
    job.fail(error="The worker running this agreement count stopped responding 2 times.")

    page = client.get(f"/datasets/{annotated.pk}/agreement/").content.decode()

    assert _count_jobs(annotated).count() == 1  # not started again by itself
    assert 'data-testid="agreement-count-error"' in page
    assert "stopped responding 2 times" in page
    assert 'data-testid="agreement-count-again"' in page

    response = client.post(f"/datasets/{annotated.pk}/agreement/count/")

    assert response.status_code == 302
    assert response["Location"] == f"/datasets/{annotated.pk}/agreement/"
    fresh = _count_jobs(annotated).order_by("-id").first()
    assert fresh.pk != job.pk
    assert fresh.status == "queued"
    page = client.get(response["Location"]).content.decode()
    assert 'data-testid="job-progress"' in page
    assert 'data-testid="agreement-count-error"' not in page


def test_with_the_task_queue_down_the_page_says_so_and_keeps_no_job(annotated, settings, client_as):
    settings.AGREEMENT_SYNC_ANNOTATIONS = 5

    with broker_for_this_process("redis://127.0.0.1:1/0"):
        response = client_as("analyst").get(f"/datasets/{annotated.pk}/agreement/")

    page = response.content.decode()
    assert response.status_code == 200
    assert "The agreement figures could not be counted: The task queue" in page
    assert 'data-testid="agreement-count-again"' in page
    assert not _count_jobs(annotated).exists()


def test_one_count_at_a_time_per_dataset(analyst, annotated, settings):
    settings.AGREEMENT_SYNC_ANNOTATIONS = 5
    first = dataset_agreement_count_start(user=analyst, dataset=annotated)

    assert dataset_agreement_count_start(user=analyst, dataset=annotated, again=True) == first
    with pytest.raises(IntegrityError), transaction.atomic():
        DatasetJob.objects.create(dataset=annotated, kind=DatasetJob.Kind.AGREEMENT)


def test_a_small_dataset_is_still_counted_in_the_request(analyst, annotated):
    figures = dataset_agreement_get(user=analyst, dataset=annotated)

    assert figures["counting"] is False
    assert figures["annotations"] == 10
    assert not _count_jobs(annotated).exists()


def test_the_page_with_overlap_but_no_shared_record_says_to_assign_annotators(client_as, dataset):
    html = client_as("analyst").get(f"/datasets/{dataset.pk}/agreement/").content.decode()

    empty = html[html.index('data-testid="agreement-empty"') :]
    assert "The overlap is 2" in empty
    assert "assign two or more annotators" in empty
    assert f'href="/datasets/{dataset.pk}/labeling/settings/"' in empty


def test_the_page_of_a_dataset_not_imported_yet_says_to_import_it(client_as, analyst):
    from tests.datasets_app.factories import upload

    dataset = upload(analyst, CSV)

    response = client_as("analyst").get(f"/datasets/{dataset.pk}/agreement/")

    html = response.content.decode()
    assert response.status_code == 200
    empty = html[html.index('data-testid="agreement-empty"') :]
    assert "This dataset has no imported records yet" in empty
    assert f'href="/datasets/{dataset.pk}/"' in empty
