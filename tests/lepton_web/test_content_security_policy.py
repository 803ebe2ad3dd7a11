"""The Content-Security-Policy header on pages and API answers, and templates that need no
inline script (the browser tests check the pages themselves in Chromium)."""

import re
from pathlib import Path

import pytest

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.I)
INLINE_HANDLER = re.compile(r"\son[a-z]+\s*=", re.I)
EVAL_FILTER = re.compile(r"hx-trigger=\"[^\"]*\[")  # htmx evaluates [...] filters with eval
JS_VALUES = re.compile(r"hx-vals=['\"]\s*js:|hx-on", re.I)


def policy(response) -> dict[str, str]:
    header = response.headers["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in header.split(";"))


@pytest.mark.parametrize("address", ["/login/", "/api/v1/", "/healthz"])
def test_every_answer_carries_the_policy(client, db, address):
    directives = policy(client.get(address))

    assert directives["script-src"] == "'self'"
    assert directives["default-src"] == "'self'"
    assert directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["form-action"] == "'self'"


def test_signed_in_pages_carry_it_too(client, make_user):
    client.force_login(make_user("analyst"))

    assert policy(client.get("/datasets/"))["script-src"] == "'self'"


def test_no_template_needs_inline_script_or_eval():
    found = []
    for path in sorted(TEMPLATES.rglob("*.html")):
        text = path.read_text(encoding="utf-8")
        for name, pattern in (
            ("inline script", INLINE_SCRIPT),
            ("inline handler", INLINE_HANDLER),
            ("htmx filter (eval)", EVAL_FILTER),
            ("htmx js values (eval)", JS_VALUES),
        ):
            found += [
                f"{path.relative_to(TEMPLATES)}: {name}: {m.group(0)}"
                for m in pattern.finditer(text)
            ]
    assert found == []
