"""Writes on datasets. Split by concern: upload and import, cleaning, splits and snapshots."""

from datasets_app.services.cleaning import (
    dataset_clean_apply,
    dataset_clean_execute,
    dataset_clean_start,
    dataset_clean_undo,
    dataset_report_execute,
    dataset_report_start,
)
from datasets_app.services.imports import (
    dataset_delete,
    dataset_detect,
    dataset_import_cancel,
    dataset_import_execute,
    dataset_import_start,
    dataset_job_execute,
    dataset_upload,
    demo_dataset_load,
)
from datasets_app.services.snapshots import (
    dataset_split,
    dataset_split_execute,
    dataset_split_start,
    snapshot_create,
)

__all__ = [
    "dataset_clean_apply",
    "dataset_clean_execute",
    "dataset_clean_start",
    "dataset_clean_undo",
    "dataset_delete",
    "dataset_detect",
    "dataset_import_cancel",
    "dataset_import_execute",
    "dataset_import_start",
    "dataset_job_execute",
    "dataset_report_execute",
    "dataset_report_start",
    "dataset_split",
    "dataset_split_execute",
    "dataset_split_start",
    "dataset_upload",
    "demo_dataset_load",
    "snapshot_create",
]
