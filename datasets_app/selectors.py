"""Reads of datasets: access-checked lookups, keyset-paged records, streamed exports."""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass

from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery
from django.db.models.expressions import RawSQL
from django.http import Http404

from datasets_app.cleaning import spreadsheet_safe
from datasets_app.models import (
    Dataset,
    DatasetAssignment,
    DatasetJob,
    Record,
    RecordSearch,
    Snapshot,
    SnapshotRecord,
)
from datasets_app.search_syntax import has_unspaced_script, websearch_to_fts5
from lepton_web.access import access_check

PAGE_SIZE = 50
# English word forms ("nicknames" finds "nickname"), as SQLite's FTS5 porter tokenizer does.
# Texts in other languages still match word for word; a search of only English stop words
# ("the") has no words to look up and matches the text as typed instead.
SEARCH_CONFIG = "english"
# The SQLite word index (migration 0015): an FTS5 table whose rowid is the record id.
SQLITE_SEARCH_TABLE = "datasets_app_recordfts"
# Record filters: excluded and edited come from cleaning; the rest are Record.flags tokens, set
# at import (empty, truncated, wrong_encoding) or by the latest quality report (cleaning.REPORT_FLAGS).
FLAG_FILTERS = {
    "included": "Not excluded",
    "excluded": "Excluded by cleaning",
    "edited": "Edited (text or label changed)",
    "empty": "Empty text",
    "truncated": "Cut at the length limit",
    "wrong_encoding": "Garbled by the file's encoding",
    "exact_duplicate": "Exact duplicates",
    "near_duplicate": "Near-duplicates",
    "label_conflict": "Conflicting labels",
    "length_outlier": "Unusually long or short",
    "small_class": "Labels with few records",
    "mostly_noise": "Mostly URLs, numbers or markup",
    "mojibake": "Mojibake (garbled characters)",
    "markup": "HTML markup",
    "split_leakage": "Split leakage",
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


def _assignment_limited(user) -> bool:
    """Whether ``user`` sees only the datasets assigned to them: annotators who cannot change
    datasets (analysts and admins see every dataset)."""
    from lepton_web.access import ANNOTATOR, can, user_roles

    return ANNOTATOR in user_roles(user) and not can(user, "dataset", "change")


def datasets_visible_q(user) -> Q:
    """Datasets ``user`` may see: for an annotator, those assigned to them and those without
    any assigned annotator (open to all, as before assignments); for others, all."""
    if not _assignment_limited(user):
        return Q()
    assigned = DatasetAssignment.objects.filter(dataset=OuterRef("pk"))
    return Q(Exists(assigned.filter(user=user))) | ~Q(Exists(assigned))


def dataset_visible_to(*, dataset: Dataset, user) -> bool:
    if not _assignment_limited(user):
        return True
    assigned = DatasetAssignment.objects.filter(dataset=dataset)
    return not assigned.exists() or assigned.filter(user=user).exists()


def dataset_list_for_user(*, user) -> QuerySet[Dataset]:
    from datasets_app.services.label_counts import with_label_counts

    access_check(user, "dataset", "view")
    return with_label_counts(
        Dataset.objects.filter(datasets_visible_q(user))
        .select_related("created_by")
        .order_by("-created_at", "-id")
    )


def dataset_get_for_user(*, user, dataset_id: int, action: str = "view") -> Dataset:
    access_check(user, "dataset", action)
    dataset = Dataset.objects.filter(pk=dataset_id).first()
    if dataset is None:
        raise Http404("This dataset does not exist or was deleted.")
    if not dataset_visible_to(dataset=dataset, user=user):
        raise Http404("This dataset is not assigned to you. Ask an analyst to assign you to it.")
    return dataset


def dataset_annotators(*, dataset: Dataset) -> list:
    """The annotators assigned to the dataset, by name."""
    return [
        assignment.user
        for assignment in DatasetAssignment.objects.filter(dataset=dataset)
        .select_related("user")
        .order_by("user__username")
    ]


def records_unlabeled(dataset: Dataset) -> QuerySet[Record]:
    """Records of the active import without a label, not excluded (to pre-label or queue)."""
    return Record.objects.filter(
        import_run_id=dataset.active_import_id, label="", is_excluded=False
    )


def review_items_for_page(*, dataset: Dataset, user, status: str = "open", limit: int = 50):
    """Review items with their record and the record's annotations side by side."""
    from datasets_app.models import Annotation, ReviewItem

    access_check(user, "dataset", "change")
    items = list(
        ReviewItem.objects.filter(dataset=dataset, status=status)
        .order_by("id")
        .select_related("resolved_by")[:limit]
    )
    records = Record.objects.in_bulk([item.record_id for item in items])
    annotations: dict[int, list] = {}
    for annotation in (
        Annotation.objects.filter(record_id__in=records, undone_at__isnull=True)
        .select_related("user")
        .order_by("created_at", "id")
    ):
        annotations.setdefault(annotation.record_id, []).append(annotation)
    for item in items:
        item.record_obj = records.get(item.record_id)
        item.annotations = annotations.get(item.record_id, [])
    return items


def review_item_counts(*, dataset: Dataset) -> dict[str, int]:
    """How many review items of the dataset are open, resolved and dismissed."""
    from datasets_app.models import ReviewItem

    counts = dict.fromkeys(ReviewItem.Status.values, 0)
    rows = ReviewItem.objects.filter(dataset=dataset).values("status").annotate(n=Count("id"))
    counts.update({row["status"]: row["n"] for row in rows})
    return counts


def snapshot_get_for_user(*, user, snapshot_id: int) -> Snapshot:
    access_check(user, "dataset", "view")
    snapshot = Snapshot.objects.select_related("dataset").filter(pk=snapshot_id).first()
    # A snapshot of a dataset the annotator is not assigned to is as hidden as the dataset.
    if snapshot is None or not dataset_visible_to(dataset=snapshot.dataset, user=user):
        raise Http404("This snapshot does not exist.")
    return snapshot


def dataset_latest_jobs(dataset: Dataset) -> dict[str, DatasetJob | None]:
    """The latest job of each kind, by the kind's value ("import", "split", "clean", ...)."""
    return {
        kind.value: dataset.jobs.filter(kind=kind).order_by("-created_at", "-id").first()
        for kind in DatasetJob.Kind
    }


def search_index_supported() -> bool:
    """Whether this database has the word-search index: PostgreSQL full-text search, or an
    FTS5 table on SQLite (when its SQLite has FTS5, as nearly every build does)."""
    if connection.vendor == "postgresql":
        return True
    return connection.vendor == "sqlite" and _sqlite_has_search_table(
        connection.settings_dict["NAME"]
    )


@functools.cache
def _sqlite_has_search_table(database_name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = %s", [SQLITE_SEARCH_TABLE]
        )
        return cursor.fetchone() is not None


def search_engine_name() -> str:
    """The word search in use, as the records page names it."""
    if connection.vendor == "postgresql":
        return "PostgreSQL full-text search"
    return "SQLite FTS5"


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
    # index is being built, on a database without one, or for a search with no words to look
    # up); "" without a search. ``search_note`` says it in a sentence.
    search_mode: str = ""
    search_note: str = ""


@dataclass(frozen=True)
class SearchUse:
    """How a search was matched: ``mode`` as in RecordPage, and the sentence saying so."""

    mode: str = ""
    note: str = ""


SUBSTRING = "it matched the text exactly as typed (anywhere in a text, ignoring case)"


def _word_search(dataset: Dataset, search: str) -> Q | None:
    """The records whose words match ``search`` (websearch syntax), or None when it has no
    words the index holds (only punctuation, or only stop words such as "the")."""
    if connection.vendor == "postgresql":
        from django.contrib.postgres.search import SearchQuery

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT numnode(websearch_to_tsquery(%s::regconfig, %s))", [SEARCH_CONFIG, search]
            )
            if not cursor.fetchone()[0]:
                return None
        matching = RecordSearch.objects.filter(
            import_run_id=dataset.active_import_id,
            vector=SearchQuery(search, config=SEARCH_CONFIG, search_type="websearch"),
        )
        return Q(id__in=matching.values("record_id"))
    fts = websearch_to_fts5(search)
    if fts is None:
        return None
    # The query goes in as a bound parameter; only the table name is part of the SQL.
    table = SQLITE_SEARCH_TABLE
    matching = f"SELECT rowid FROM {table} WHERE {table} MATCH %s"  # noqa: S608

    def ids(expression: str) -> RawSQL:
        return RawSQL(matching, [expression])  # noqa: S611

    condition = Q(id__in=ids(fts.match)) if fts.match else Q(pk__in=[])
    for unwanted in fts.exclude_only:
        condition |= ~Q(id__in=ids(unwanted))
    return condition


RECORD_SPLIT_FILTERS = ("train", "validation", "test", "", "__any__")


def record_filter_errors(*, split: str | None, flag: str | None) -> dict[str, list[str]]:
    """Errors by parameter for a split or flag filter that names nothing (an unknown flag
    would otherwise list every record, an unknown split none), for the API."""
    errors: dict[str, list[str]] = {}
    if split is not None and split not in RECORD_SPLIT_FILTERS:
        errors["split"] = [
            f"Unknown split {split[:40]!r}. Choose train, validation or test (empty: records "
            "without a split)."
        ]
    if flag and flag not in FLAG_FILTERS:
        errors["flag"] = [f"Unknown flag {flag[:40]!r}. Choose one of: {', '.join(FLAG_FILTERS)}."]
    return errors


def records_filtered(
    *,
    dataset: Dataset,
    label: str | None = None,
    split: str | None = None,
    flag: str | None = None,
    search: str = "",
):
    """The current records matching the records page's filters, and how search matched
    (a SearchUse). Shared by the page and bulk labeling."""
    records = Record.objects.filter(import_run_id=dataset.active_import_id)
    if flag == "included":  # what counts, snapshots and training see
        records = records.filter(is_excluded=False)
    elif flag == "excluded":
        records = records.filter(is_excluded=True)
    elif flag == "edited":
        records = records.exclude(original_text__isnull=True, original_label__isnull=True)
    elif flag in FLAG_FILTERS:
        # Tokens are comma-wrapped, so ",markup," never matches inside another token.
        # flags <> '' lets the planner use the partial index of noteworthy records.
        records = records.exclude(flags="").filter(flags__contains=f",{flag},")
    if label is not None and label != "__any__":
        records = records.filter(label=label)
    if split is not None and split != "__any__":
        records = records.filter(split=split)
    if not search:
        return records, SearchUse()
    if not search_index_supported():
        return records.filter(text__icontains=search), SearchUse(
            "substring",
            f"This database has no word search (its SQLite lacks FTS5), so {SUBSTRING}.",
        )
    if not search_index_ready(dataset):
        return records.filter(text__icontains=search), SearchUse(
            "substring",
            f"The word index of this dataset is still being built, so {SUBSTRING}. Word search, "
            "with phrases in quotes, OR and -word, is used once the index is ready.",
        )
    if has_unspaced_script(search):
        return records.filter(text__icontains=search), SearchUse(
            "substring",
            "Chinese, Japanese and Korean are written without spaces between words, which word "
            f"search needs, so {SUBSTRING}.",
        )
    condition = _word_search(dataset, search)
    if condition is None:
        return records.filter(text__icontains=search), SearchUse(
            "substring",
            "This search has no words to look up (only punctuation, or only common words such "
            f'as "the", which word search leaves out), so {SUBSTRING}.',
        )
    return records.filter(condition), SearchUse(
        "full_text",
        f"Word search ({search_engine_name()}): words match in their other English forms "
        '("refunds" finds "refund"), "quoted phrases" match in order, OR finds either side, '
        "and -word leaves texts with that word out.",
    )


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
    records, search_use = records_filtered(
        dataset=dataset, label=label, split=split, flag=flag, search=search
    )
    if after:
        records = records.filter(id__gt=after)
    rows = list(records.order_by("id")[: page_size + 1])
    next_after = rows[page_size - 1].id if len(rows) > page_size else None
    return RecordPage(
        records=rows[:page_size],
        next_after=next_after,
        has_previous=bool(after),
        search_mode=search_use.mode,
        search_note=search_use.note,
    )


# --- export ---------------------------------------------------------------------------------------
EXPORT_FIELDS = ["source_row", "text", "label", "split"]


@dataclass(frozen=True)
class ExportColumns:
    """What an export carries besides EXPORT_FIELDS: the mapped id column ("id") and the file's
    other columns (each record's metadata), keyed as in the file and in the file's order."""

    has_id: bool = False
    metadata_keys: tuple[str, ...] = ()

    def csv_header(self) -> list[str]:
        """EXPORT_FIELDS, ``id`` when mapped, then one column per metadata key. A key that
        would repeat a column name gets a "metadata." prefix."""
        header = [*EXPORT_FIELDS, *(["id"] if self.has_id else [])]
        for key in self.metadata_keys:
            name = key
            while name in header:
                name = f"metadata.{name}"
            header.append(name)
        return header


def export_columns(import_run_id: int | None, *, dataset: Dataset) -> ExportColumns:
    """The id and metadata columns of an import's records (nothing once they are deleted).

    Every record of one import has the same metadata keys (the file's unmapped columns), so
    the first record gives them; the file's column order comes from the detection, since
    PostgreSQL's jsonb does not keep key order.
    """
    if import_run_id is None:
        return ExportColumns()
    job = DatasetJob.objects.filter(pk=import_run_id).only("mapping").first()
    first = (
        Record.objects.filter(import_run_id=import_run_id)
        .order_by("id")
        .values_list("metadata", flat=True)
        .first()
    )
    if job is None or first is None:
        return ExportColumns()
    order = {name: index for index, name in enumerate(dataset.detection.get("columns", []))}
    keys = sorted(first or {}, key=lambda key: (order.get(key, len(order)), key))
    return ExportColumns(has_id=bool(job.mapping.get("id_column")), metadata_keys=tuple(keys))


def _snapshot_import_run_id(snapshot: Snapshot) -> int | None:
    """The import a snapshot was taken from, while its records still exist (a later import
    of the dataset deletes them)."""
    first = SnapshotRecord.objects.filter(snapshot=snapshot).order_by("id").first()
    if first is None:
        return None
    return Record.objects.filter(pk=first.record_id).values_list("import_run_id", flat=True).first()


def _export_rows(
    *, dataset: Dataset | None, snapshot: Snapshot | None, columns: ExportColumns
) -> Iterator[tuple]:
    """Rows of EXPORT_FIELDS, then external_id and metadata when ``columns`` wants them."""
    extra = (["external_id"] if columns.has_id else []) + (
        ["metadata"] if columns.metadata_keys else []
    )
    if snapshot is not None:
        rows = SnapshotRecord.objects.filter(snapshot=snapshot).order_by("id")
        # Snapshot rows hold text, label and split; the id and metadata (never changed by
        # cleaning) are read from the record by primary key, in the same streamed query.
        source = Record.objects.filter(pk=OuterRef("record_id"))
        rows = rows.annotate(**{name: Subquery(source.values(name)[:1]) for name in extra})
    else:
        rows = Record.objects.filter(
            import_run_id=dataset.active_import_id, is_excluded=False
        ).order_by("id")
    yield from rows.values_list(*EXPORT_FIELDS, *extra).iterator(chunk_size=5000)


def _csv_cell(value) -> str:
    """A metadata value as a CSV cell: strings as they are, missing as empty, the rest (numbers,
    lists, objects from JSON Lines files) as JSON; formula-escaped like every text cell."""
    if value is None:
        return ""
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False)
    return spreadsheet_safe(value)


def export_stream(
    *, dataset: Dataset | None = None, snapshot: Snapshot | None = None, fmt: str
) -> Iterator[str]:
    """Yield an export chunk by chunk. CSV cells that a spreadsheet would run as a formula are
    escaped; JSON Lines (read by programs, not spreadsheets) keeps texts exactly.

    Besides source_row, text, label and split, a record carries the file's id column when one
    was mapped ("id") and the file's other columns ("metadata": an object in JSON Lines, one
    column per key in CSV). A snapshot export has them while the records of the import it was
    taken from exist; once a later import replaced them it has text, label and split only.
    """
    if snapshot is not None:
        columns = export_columns(_snapshot_import_run_id(snapshot), dataset=snapshot.dataset)
    else:
        columns = export_columns(dataset.active_import_id, dataset=dataset)
    rows = _export_rows(dataset=dataset, snapshot=snapshot, columns=columns)
    width = len(EXPORT_FIELDS)
    if fmt == "jsonl":
        batch: list[str] = []
        for row in rows:
            item = dict(zip(EXPORT_FIELDS, row[:width], strict=True))
            if columns.has_id:
                item["id"] = row[width] or ""
            if columns.metadata_keys:
                item["metadata"] = row[-1] or {}
            batch.append(json.dumps(item, ensure_ascii=False))
            if len(batch) >= 1000:
                yield "\n".join(batch) + "\n"
                batch = []
        if batch:
            yield "\n".join(batch) + "\n"
        return
    buffer = io.StringIO()
    # RFC 4180 line ends: with "\r\n" as terminator, a lone "\r" inside a text gets quoted.
    writer = csv.writer(buffer, lineterminator="\r\n")
    # Metadata column names come from the file's header: escaped like every cell.
    writer.writerow([spreadsheet_safe(name) for name in columns.csv_header()])
    keys = columns.metadata_keys
    for count, row in enumerate(rows, start=1):
        cells = [row[0], *(spreadsheet_safe(value) for value in row[1:width])]
        if columns.has_id:
            cells.append(spreadsheet_safe(row[width] or ""))
        if keys:
            metadata = row[-1] or {}
            cells.extend(_csv_cell(metadata.get(key)) for key in keys)
        writer.writerow(cells)
        if count % 1000 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def datasets_needing_labels(*, user) -> list[dict]:
    """Datasets with records (also while a new import of them runs) and how many of their
    current records still have no label."""
    from datasets_app.services.labeling import label_choices

    access_check(user, "labeling", "view")
    rows = []
    datasets = Dataset.objects.filter(datasets_visible_q(user), active_import__isnull=False)
    datasets = datasets.order_by("-created_at")
    for dataset in datasets:
        rows.append(
            {"dataset": dataset, **dataset.labeling_totals, "labels": label_choices(dataset)}
        )
    return rows


def bulk_labels_undoable(*, dataset: Dataset, limit: int = 5) -> QuerySet:
    """The dataset's latest bulk labels that were not undone, newest first (records page)."""
    from datasets_app.models import BulkLabel

    return (
        BulkLabel.objects.filter(dataset=dataset, undone_at__isnull=True)
        .select_related("created_by")
        .order_by("-created_at", "-id")[:limit]
    )
