class IdConverter:
    """A primary key in URLs: at most 18 digits, so it always fits a BIGINT (no 500 on huge ids)."""

    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)
