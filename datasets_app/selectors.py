"""Reads of datasets: access-checked lookups, keyset-paged records, streamed exports."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass

from django.db import connection
from django.db.models import Count, QuerySet
from django.http import Http404

from datasets_app.cleaning import spreadsheet_safe
from datasets_app.models import (
    Dataset,
    DatasetJob,
    Record,
    RecordSearch,
    Snapshot,
    SnapshotRecord,
)
from lepton_web.access import access_check

PAGE_SIZE = 50
SEARCH_CONFIG = "simple"  # no stemming or stop words: texts come in any language
FLAG_FILTERS = {
    "excluded": "Excluded by cleaning",
    "edited": "Edited by cleaning",
    "empty": "Empty text",
    "truncated": "Cut at the length limit",
}


def record_distribution(rows: QuerySet) -> tuple[int, dict[str, int], dict[str, int]]:
    """(count, label counts most frequent first, split counts) of records or snapshot records."""
    labels = {
        row["label"]: row["n"]
        for row in rows.values("label").annotate(n=Count("id")).order_by("-n", "label")
    }
    splits = {
        row["split"]: row["n"]
        for row in rows.values("split").annotate(n=Count("id")).order_by("split")
    }
    return rows.count(), labels, splits


def dataset_list_for_user(*, user) -> QuerySet[Dataset]:
    access_check(user, "dataset", "view")
    return Dataset.objects.select_related("created_by").order_by("-created_at")


def dataset_get_for_user(*, user, dataset_id: int, action: str = "view") -> Dataset:
    access_check(user, "dataset", action)
    dataset = Dataset.objects.filter(pk=dataset_id).first()
    if dataset is None:
        raise Http404("This dataset does not exist or was deleted.")
    return dataset


def snapshot_get_for_user(*, user, snapshot_id: int) -> Snapshot:
    access_check(user, "dataset", "view")
    snapshot = Snapshot.objects.select_related("dataset").filter(pk=snapshot_id).first()
    if snapshot is None:
        raise Http404("This snapshot does not exist.")
    return snapshot


def dataset_latest_jobs(dataset: Dataset) -> dict[str, DatasetJob | None]:
    return {
        "import": dataset.jobs.filter(kind=DatasetJob.Kind.IMPORT).order_by("-created_at").first(),
        "report": dataset.jobs.filter(kind=DatasetJob.Kind.REPORT).order_by("-created_at").first(),
        "search_index": dataset.jobs.filter(kind=DatasetJob.Kind.SEARCH_INDEX)
        .order_by("-created_at")
        .first(),
    }


def search_index_supported() -> bool:
    """Whether this database has the word-search index (PostgreSQL; SQLite matches substrings)."""
    return connection.vendor == "postgresql"


def search_index_ready(dataset: Dataset) -> bool:
    """Whether searches of this dataset's current records can use the full-text index, which
    a job builds after each import (see services/search.py)."""
    return (
        search_index_supported()
        and dataset.active_import_id is not None
        and dataset.search_import_id == dataset.active_import_id
    )


@dataclass
class RecordPage:
    records: list[Record]
    next_after: int | None
    has_previous: bool
    # How a search matched: "full_text" (words, through the index) or "substring" (while the
    # index is being built, and on SQLite); "" without a search.
    search_mode: str = ""


def record_page(
    *,
    dataset: Dataset,
    after: int | None = None,
    label: str | None = None,
    split: str | None = None,
    flag: str | None = None,
    search: str = "",
    page_size: int = PAGE_SIZE,
) -> RecordPage:
    """One page of records in id order, continuing after record ``after`` (keyset, not OFFSET,
    so page 20,000 costs the same as page 1)."""
    records = Record.objects.filter(import_run_id=dataset.active_import_id)
    if flag == "excluded":
        records = records.filter(is_excluded=True)
    elif flag == "edited":
        records = records.exclude(original_text__isnull=True, original_label__isnull=True)
    elif flag in FLAG_FILTERS:
        records = records.filter(flags__contains=f",{flag},")
    if label is not None and label != "__any__":
        records = records.filter(label=label)
    if split is not None and split != "__any__":
        records = records.filter(split=split)
    search_mode = ""
    if search:
        if search_index_ready(dataset):
            from django.contrib.postgres.search import SearchQuery

            matching = RecordSearch.objects.filter(
                import_run_id=dataset.active_import_id,
                vector=SearchQuery(search, config=SEARCH_CONFIG, search_type="websearch"),
            )
            records = records.filter(id__in=matching.values("record_id"))
            search_mode = "full_text"
        else:
            records = records.filter(text__icontains=search)
            search_mode = "substring"
    if after:
        records = records.filter(id__gt=after)
    rows = list(records.order_by("id")[: page_size + 1])
    next_after = rows[page_size - 1].id if len(rows) > page_size else None
    return RecordPage(
        records=rows[:page_size],
        next_after=next_after,
        has_previous=bool(after),
        search_mode=search_mode,
    )


# --- export ---------------------------------------------------------------------------------------
EXPORT_FIELDS = ["source_row", "text", "label", "split"]


def _export_rows(*, dataset: Dataset | None, snapshot: Snapshot | None) -> Iterator[tuple]:
    if snapshot is not None:
        rows = SnapshotRecord.objects.filter(snapshot=snapshot).order_by("id")
    else:
        rows = Record.objects.filter(
            import_run_id=dataset.active_import_id, is_excluded=False
        ).order_by("id")
    yield from rows.values_list(*EXPORT_FIELDS).iterator(chunk_size=5000)


def export_stream(
    *, dataset: Dataset | None = None, snapshot: Snapshot | None = None, fmt: str
) -> Iterator[str]:
    """Yield an export chunk by chunk. CSV cells that a spreadsheet would run as a formula are
    escaped; JSON Lines (read by programs, not spreadsheets) keeps texts exactly."""
    if fmt == "jsonl":
        batch: list[str] = []
        for row in _export_rows(dataset=dataset, snapshot=snapshot):
            batch.append(json.dumps(dict(zip(EXPORT_FIELDS, row, strict=True)), ensure_ascii=False))
            if len(batch) >= 1000:
                yield "\n".join(batch) + "\n"
                batch = []
        if batch:
            yield "\n".join(batch) + "\n"
        return
    buffer = io.StringIO()
    # RFC 4180 line ends: with "\r\n" as terminator, a lone "\r" inside a text gets quoted.
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(EXPORT_FIELDS)
    for count, row in enumerate(_export_rows(dataset=dataset, snapshot=snapshot), start=1):
        writer.writerow([row[0], *(spreadsheet_safe(value) for value in row[1:])])
        if count % 1000 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def datasets_needing_labels(*, user) -> list[dict]:
    """Ready datasets with how many of their current records still have no label."""
    access_check(user, "labeling", "view")
    rows = []
    for dataset in Dataset.objects.filter(status=Dataset.Status.READY).order_by("-created_at"):
        unlabeled = (dataset.label_counts or {}).get("", 0)
        rows.append({"dataset": dataset, "unlabeled": unlabeled, "total": dataset.record_count})
    return rows
