"""Word search with English word forms on PostgreSQL, and word search on SQLite too.

PostgreSQL: the side table's vectors are recomputed with the ``english`` configuration (so
"nicknames" finds "nickname"), which the query side now uses. The GIN index is dropped first and
built again after (one bulk build instead of a million index updates).

SQLite (the embedded default): an FTS5 table whose rowid is the record id, filled by the same
search-index job as PostgreSQL's side table; the porter tokenizer gives the same English word
forms. Datasets already imported are indexed here. Without FTS5 in the SQLite library (rare),
nothing is created and search stays substring matching, as the records page then says.
"""

from django.db import migrations

PG_RECOMPUTE = [
    "DROP INDEX IF EXISTS recordsearch_vector",
    "UPDATE datasets_app_recordsearch AS s SET vector = to_tsvector('{config}'::regconfig, r.text)"
    " FROM datasets_app_record AS r WHERE r.id = s.record_id",
    "CREATE INDEX recordsearch_vector ON datasets_app_recordsearch USING gin (vector)",
]
SQLITE_CREATE = [
    "CREATE VIRTUAL TABLE IF NOT EXISTS datasets_app_recordfts USING fts5(text, tokenize='porter unicode61')",
    "INSERT INTO datasets_app_recordfts (rowid, text)"
    " SELECT r.id, r.text FROM datasets_app_record r"
    " JOIN datasets_app_dataset d ON d.active_import_id = r.import_run_id",
    "UPDATE datasets_app_dataset SET search_import_id = active_import_id",
]
SQLITE_DROP = [
    "DROP TABLE IF EXISTS datasets_app_recordfts",
    "UPDATE datasets_app_dataset SET search_import_id = NULL",
]


def _sqlite_has_fts5() -> bool:
    import sqlite3

    try:
        sqlite3.connect(":memory:").execute("CREATE VIRTUAL TABLE probe USING fts5(text)")
    except sqlite3.OperationalError:
        return False
    return True


def forwards(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        for sql in PG_RECOMPUTE:
            schema_editor.execute(sql.format(config="english"))
    elif vendor == "sqlite" and _sqlite_has_fts5():
        for sql in SQLITE_CREATE:
            schema_editor.execute(sql)


def backwards(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        for sql in PG_RECOMPUTE:
            schema_editor.execute(sql.format(config="simple"))
    elif vendor == "sqlite":
        for sql in SQLITE_DROP:
            schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [("datasets_app", "0014_bulk_label_undo")]

    operations = [migrations.RunPython(forwards, backwards)]
