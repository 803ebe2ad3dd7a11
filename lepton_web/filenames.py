def safe_filename(stem: str, *, max_length: int | None = None) -> str:
    """Letters (any script), digits, '-', '_' and '.' kept; anything else becomes '_'."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
    return safe[:max_length] if max_length else safe
