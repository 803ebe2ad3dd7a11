from django.db import migrations

# Full-text search on PostgreSQL: an expression GIN index matching the query that
# SearchVector("text", config="simple") compiles to. SQLite searches with LIKE instead.
CREATE = (
    "CREATE INDEX IF NOT EXISTS record_text_search ON datasets_app_record "
    "USING gin (to_tsvector('simple'::regconfig, COALESCE(text, '')))"
)
DROP = "DROP INDEX IF EXISTS record_text_search"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("datasets_app", "0001_initial")]

    operations = [migrations.RunPython(create, drop)]
