"""Users' API tokens stored as digests (lepton_web.accounts.token_key_digest): every existing
key is replaced by its digest, so the tokens people hold keep working and a copy of the
database holds none of them. One way: a digest cannot be turned back into its key."""

import hashlib

from django.db import migrations


def forwards(apps, schema_editor):
    token_model = apps.get_model("authtoken", "Token")
    for key in list(token_model.objects.values_list("key", flat=True)):
        digest = hashlib.sha256(key.encode()).hexdigest()[:40]
        token_model.objects.filter(key=key).update(key=digest)


class Migration(migrations.Migration):
    dependencies = [
        ("lepton_web", "0002_roles"),
        ("authtoken", "0004_alter_tokenproxy_options"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop, elidable=False)]
