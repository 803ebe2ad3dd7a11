# Merges the agreement count job (0026_agreement_count_job) with the labeling queue's
# PostgreSQL functions (0026_labeling_queue_functions), written at the same time.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("datasets_app", "0026_agreement_count_job"),
        ("datasets_app", "0026_labeling_queue_functions"),
    ]

    operations = []
