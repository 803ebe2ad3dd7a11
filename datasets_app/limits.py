"""Import limits, configurable in settings (DATASET_MAX_* variables), shown on the upload page."""

from django.conf import settings

from datasets_app.csv_io import Limits


def import_limits() -> Limits:
    return Limits(
        max_file_bytes=settings.DATASET_MAX_FILE_BYTES,
        max_columns=settings.DATASET_MAX_COLUMNS,
        max_text_chars=settings.DATASET_MAX_TEXT_CHARS,
        max_uncompressed_bytes=settings.DATASET_MAX_UNCOMPRESSED_BYTES,
    )


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return (
                f"{value:.0f} {unit}"
                if unit == "bytes"
                else f"{value:.1f} {unit}".replace(".0 ", " ")
            )
        value /= 1024
    return f"{value:.1f} GB"
