"""Factories for dataset rows, and ``imported_dataset``: a CSV uploaded and imported for real."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import factory
from django.core.files.uploadedfile import SimpleUploadedFile

from datasets_app import services
from datasets_app.models import Dataset, DatasetJob, Record
from tests.conftest import _redis_url, broker_for_this_process
from tests.factories import UserFactory

SMALL_CSV = b"text,label\nhello there,greeting\nbye now,farewell\n"


class DatasetFactory(factory.django.DjangoModelFactory):
    """An uploaded dataset whose stored file is a two-row CSV (not yet read or imported)."""

    class Meta:
        model = Dataset

    name = factory.Sequence(lambda n: f"Dataset {n}")
    source_file = factory.django.FileField(filename="data.csv", data=SMALL_CSV)
    source_filename = "data.csv"
    source_size_bytes = len(SMALL_CSV)
    source_sha256 = hashlib.sha256(SMALL_CSV).hexdigest()
    created_by = factory.SubFactory(UserFactory, role="analyst")


class DatasetJobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DatasetJob

    dataset = factory.SubFactory(DatasetFactory)
    kind = DatasetJob.Kind.IMPORT


class RecordFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Record

    dataset = factory.SubFactory(DatasetFactory)
    import_run = factory.SubFactory(DatasetJobFactory, dataset=factory.SelfAttribute("..dataset"))
    source_row = factory.Sequence(lambda n: n + 1)
    text = factory.Sequence(lambda n: f"text {n}")


def upload(user, csv_text: str, *, filename: str = "data.csv", name: str = "") -> Dataset:
    """Store ``csv_text`` as an uploaded file and detect its format (no import yet)."""
    file = SimpleUploadedFile(filename, csv_text.encode("utf-8"), content_type="text/csv")
    return services.dataset_upload(user=user, file=file, name=name)


def run_queued_reports(dataset: Dataset) -> None:
    """Run every queued quality report of ``dataset`` here, as a worker would."""
    queued = dataset.jobs.filter(kind=DatasetJob.Kind.REPORT, status="queued").order_by("id")
    for job_id in list(queued.values_list("id", flat=True)):
        services.dataset_report_execute(job_id=job_id)


def run_queued_search_index(dataset: Dataset) -> None:
    """Run every queued search-index job of ``dataset`` here, as a worker would."""
    queued = dataset.jobs.filter(kind=DatasetJob.Kind.SEARCH_INDEX, status="queued").order_by("id")
    for job_id in list(queued.values_list("id", flat=True)):
        services.dataset_job_execute(job_id=job_id)
    dataset.refresh_from_db()


def run_queued_jobs(dataset: Dataset, *kinds: str) -> list[DatasetJob]:
    """Run every queued job of ``dataset`` (of ``kinds``; default splits and cleaning fixes)
    here, as a worker would, oldest first; returns them as they ended."""
    kinds = kinds or (DatasetJob.Kind.SPLIT, DatasetJob.Kind.CLEAN)
    queued = dataset.jobs.filter(kind__in=kinds, status="queued").order_by("id")
    ran = []
    for job_id in list(queued.values_list("id", flat=True)):
        services.dataset_job_execute(job_id=job_id)
        ran.append(DatasetJob.objects.get(pk=job_id))
    dataset.refresh_from_db()
    return ran


def import_now(dataset: Dataset, user, mapping: dict | None = None) -> DatasetJob:
    """Start an import (published to the test broker) and run it synchronously."""
    with broker_for_this_process(_redis_url()):
        job = services.dataset_import_start(dataset=dataset, user=user, mapping=mapping)
        services.dataset_import_execute(job_id=job.pk)
    job.refresh_from_db()
    return job


def imported_dataset(
    user,
    csv_text: str,
    mapping: dict,
    *,
    filename: str = "data.csv",
    name: str = "",
    report: bool = True,
) -> Dataset:
    """Upload ``csv_text``, import it with ``mapping`` and (by default) run its quality report.

    Jobs are published to the Redis test broker (tests using this need the ``redis_url``
    fixture, which skips when Redis is down) and executed here, synchronously.
    """
    with broker_for_this_process(_redis_url()):
        dataset = upload(user, csv_text, filename=filename, name=name)
        job = import_now(dataset, user, mapping)
        assert job.status == "succeeded", (job.error_message, job.problems)
        if report:
            run_queued_reports(dataset)
    dataset.refresh_from_db()
    return dataset


@contextmanager
def dataset_row_held(dataset: Dataset) -> Iterator[None]:
    """Hold the dataset row lock a split or cleaning fix takes while it writes, from another
    connection (a thread), for the duration of the block. Needs a transactional test."""
    import threading

    from django.db import connection, transaction

    locked, release = threading.Event(), threading.Event()

    def a_fix_saving() -> None:
        try:
            with transaction.atomic():
                list(Dataset.objects.select_for_update(no_key=True).filter(pk=dataset.pk))
                locked.set()
                release.wait(30)
        finally:
            connection.close()

    holder = threading.Thread(target=a_fix_saving)
    holder.start()
    try:
        assert locked.wait(10), "the lock was not taken"
        yield
    finally:
        release.set()
        holder.join()
