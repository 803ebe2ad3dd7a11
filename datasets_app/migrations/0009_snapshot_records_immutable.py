"""Snapshot records can never be changed, only deleted with their snapshot: the database
refuses any UPDATE of them, whatever code (or person at a SQL prompt) tries it."""

from django.db import migrations

MESSAGE = "Snapshot records are immutable: take a new snapshot instead of changing one."

POSTGRES_UP = f"""
CREATE FUNCTION lepton_snapshot_record_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER snapshot_record_immutable BEFORE UPDATE ON datasets_app_snapshotrecord
    FOR EACH STATEMENT EXECUTE FUNCTION lepton_snapshot_record_immutable();
"""
POSTGRES_DOWN = """
DROP TRIGGER IF EXISTS snapshot_record_immutable ON datasets_app_snapshotrecord;
DROP FUNCTION IF EXISTS lepton_snapshot_record_immutable();
"""
SQLITE_UP = f"""
CREATE TRIGGER snapshot_record_immutable BEFORE UPDATE ON datasets_app_snapshotrecord
BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END;
"""
SQLITE_DOWN = "DROP TRIGGER IF EXISTS snapshot_record_immutable;"


def forwards(apps, schema_editor):
    sql = POSTGRES_UP if schema_editor.connection.vendor == "postgresql" else SQLITE_UP
    schema_editor.execute(sql)


def backwards(apps, schema_editor):
    postgres = schema_editor.connection.vendor == "postgresql"
    schema_editor.execute(POSTGRES_DOWN if postgres else SQLITE_DOWN)


class Migration(migrations.Migration):
    dependencies = [("datasets_app", "0008_record_noteworthy_index")]

    operations = [migrations.RunPython(forwards, backwards)]
