"""The word-search index of records: built by a job after each import.

Computing and indexing the words of every text used to be an expression index on the records
table, paid inside every import: about half of the time of importing a million rows. It is now
a side table (``RecordSearch``) filled after the import commits, in chunks with progress, so
records are visible, browsable and filterable as soon as they are written, and search matches
substrings until the index is ready (``record_page`` says which it used).

On SQLite (the embedded default) the same job fills an FTS5 table instead (migration 0015),
queried with the same websearch syntax (``search_syntax.websearch_to_fts5``); only the
statements differ.
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed

from django.conf import settings
from django.db import connection, transaction

from datasets_app.models import Dataset, DatasetJob, Record, RecordSearch
from datasets_app.selectors import SEARCH_CONFIG, SQLITE_SEARCH_TABLE, search_index_supported
from lepton_web.jobs import Job, job_create_and_enqueue

logger = logging.getLogger(__name__)

CHUNK_IDS = 100_000
# SQLite has one writer at a time: smaller ranges keep each hold of the write lock short (about
# 0.5 s for 25,000 texts; 100,000 held it 2 s), so labels saved meanwhile wait less.
SQLITE_CHUNK_IDS = 25_000
_INDEX_SQL = (
    "INSERT INTO datasets_app_recordsearch (record_id, import_run_id, vector) "
    "SELECT id, import_run_id, to_tsvector(%s::regconfig, text) FROM datasets_app_record "
    "WHERE import_run_id = %s AND id BETWEEN %s AND %s "
    "ON CONFLICT (record_id) DO UPDATE SET vector = EXCLUDED.vector"
)
_SQLITE_INDEX_SQL = (
    f"INSERT OR REPLACE INTO {SQLITE_SEARCH_TABLE} (rowid, text) "  # noqa: S608
    "SELECT id, text FROM datasets_app_record "
    "WHERE import_run_id = %s AND id BETWEEN %s AND %s"
)


def dataset_search_index_start(*, dataset: Dataset, user) -> Job | None:
    """Queue the index job for the dataset's current records (where the database has one)."""
    if not search_index_supported():
        return None
    return job_create_and_enqueue(
        model=DatasetJob, dataset=dataset, kind=DatasetJob.Kind.SEARCH_INDEX, created_by=user
    )


def dataset_search_index_execute(*, job_id: int) -> DatasetJob | None:
    """Index the words of the dataset's current records, a range of ids at a time.

    Each range is one statement that upserts, so a restart after a lost worker simply runs
    again. Ranges run on ``DATASET_IMPORT_WRITERS`` connections side by side (the work is in
    the database server: 21 s for a million texts on one connection, 12 s on two). Each range
    holds the dataset row FOR SHARE, so a cleaning fix that edits texts (FOR NO KEY UPDATE)
    waits for it and then refreshes the entries it changed (``search_entries_refresh``), while
    ranges and an import's key checks (FOR KEY SHARE) do not wait on each other.
    """
    job = DatasetJob.objects.select_related("dataset").filter(pk=job_id).first()
    if job is None or not job.claim():
        return None
    run_id = job.dataset.active_import_id
    bounds = Record.objects.filter(import_run_id=run_id).order_by("id")
    first = bounds.values_list("id", flat=True).first()
    last = bounds.reverse().values_list("id", flat=True).first()
    if run_id is None or first is None:
        job.succeed(message="No records to index.")
        return job
    chunk = CHUNK_IDS if connection.vendor == "postgresql" else min(CHUNK_IDS, SQLITE_CHUNK_IDS)
    ranges = [(low, min(low + chunk - 1, last)) for low in range(first, last + 1, chunk)]
    stop = threading.Event()

    def index(low: int, high: int, *, own_connection: bool) -> bool:
        """One range; False when the records were replaced (then nothing more is done)."""
        try:
            if stop.is_set():
                return True
            if connection.vendor == "sqlite":
                # One writer at a time on SQLite: the transaction itself keeps a new import
                # from replacing the records meanwhile.
                with transaction.atomic(), connection.cursor() as cursor:
                    current = Dataset.objects.filter(pk=job.dataset_id).values_list(
                        "active_import_id", flat=True
                    )
                    if current.first() != run_id:
                        stop.set()
                        return False
                    cursor.execute(_SQLITE_INDEX_SQL, [run_id, low, high])
                return True
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(  # FOR SHARE: Django's select_for_update has no shared mode
                    "SELECT active_import_id FROM datasets_app_dataset WHERE id = %s FOR SHARE",
                    [job.dataset_id],
                )
                current = cursor.fetchone()
                if current is None or current[0] != run_id:
                    stop.set()
                    return False
                cursor.execute(_INDEX_SQL, [SEARCH_CONFIG, run_id, low, high])
            return True
        finally:
            if own_connection:
                connection.close()

    # Inside a transaction (tests) other connections could not see the records: run inline.
    parallel = (
        max(1, settings.DATASET_IMPORT_WRITERS)
        if connection.vendor == "postgresql" and not connection.in_atomic_block
        else 1
    )
    done = 0
    replaced = False
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="search-index") as pool:
        if parallel > 1:
            results = (
                future.result()
                for future in as_completed(
                    [pool.submit(index, low, high, own_connection=True) for low, high in ranges]
                )
            )
        else:
            results = (index(low, high, own_connection=False) for low, high in ranges)
        for finished in results:
            if not finished:
                replaced = True
                continue
            done += 1
            share = min(99, int(100 * done / len(ranges)))
            if not stop.is_set() and not job.report(
                progress=share, message=f"Indexing the words of the texts: {share}%."
            ):
                stop.set()  # cancelled: ranges not started are skipped
        if stop.is_set() and not replaced:
            return job
    if not replaced and connection.vendor == "postgresql":
        # Fresh statistics, or the planner guesses how many texts a word matches: without
        # them a page of search results for a common word took 1 s on a million records
        # instead of 7 ms. ANALYZE samples (about 30,000 rows), so it stays well under a second.
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {RecordSearch._meta.db_table}, {Record._meta.db_table}")
    ready = not replaced and Dataset.objects.filter(
        pk=job.dataset_id, active_import_id=run_id
    ).update(search_import_id=run_id)
    job.succeed(
        message="Full-text search is ready."
        if ready
        else "These records were replaced by a newer import; skipped."
    )
    return job


def search_entries_refresh(record_ids: list[int]) -> None:
    """Re-index the texts of these records (after a cleaning fix or its undo edited them)."""
    if not search_index_supported() or not record_ids:
        return
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {SQLITE_SEARCH_TABLE} SET text = "  # noqa: S608
                f"(SELECT text FROM datasets_app_record WHERE id = {SQLITE_SEARCH_TABLE}.rowid) "
                "WHERE rowid IN (SELECT value FROM json_each(%s))",
                [json.dumps(list(record_ids))],
            )
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE datasets_app_recordsearch AS s "
            "SET vector = to_tsvector(%s::regconfig, r.text) "
            "FROM datasets_app_record AS r "
            "WHERE r.id = s.record_id AND s.record_id = ANY(%s)",
            [SEARCH_CONFIG, list(record_ids)],
        )


def search_entries_delete(records) -> None:
    """Delete the search entries of these records (a queryset), set-based."""
    if not search_index_supported():
        return
    if connection.vendor == "sqlite":
        ids_sql, params = records.values("id").query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {SQLITE_SEARCH_TABLE} WHERE rowid IN ({ids_sql})",  # noqa: S608
                params,
            )
        return
    RecordSearch.objects.filter(record_id__in=records.values("id")).delete()
