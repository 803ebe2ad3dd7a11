from django.db import migrations

# Hi/lo ids for records: the identity sequence steps by RECORD_ID_BLOCK (65,536), so each
# nextval owns a whole block of ids that an import fills in file order (see RecordWriter).
# A bigint leaves room for 140 trillion blocks. SQLite has no sequences; inserts there are
# one statement per chunk and keep file order by themselves.


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "ALTER TABLE datasets_app_record ALTER COLUMN id SET INCREMENT BY 65536"
        )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE datasets_app_record ALTER COLUMN id SET INCREMENT BY 1")


class Migration(migrations.Migration):
    dependencies = [("datasets_app", "0005_record_search_side_table")]

    operations = [migrations.RunPython(forwards, backwards)]
