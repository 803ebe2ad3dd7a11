"""The OpenAPI schema builds without warnings (an enum name collision or an unresolvable
serializer field would otherwise go unnoticed until a client generator trips on it)."""

from django.core.management import call_command


def test_schema_validates_without_warnings(tmp_path):
    target = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    text = target.read_text()
    assert "SearchStatusEnum" in text
    assert "StatusAc2Enum" not in text
