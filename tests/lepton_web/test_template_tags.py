"""No template tag is left unparsed on any page (issue 9, item 1, the whole class).

Django's template lexer reads a tag only when it sits on one line: ``{{ labels|join:"`` and
``" }}`` on two lines are plain text, and the page shows (and a form posts back) the raw pieces.
Two checks: every template under templates/ is lexed, and no text between its tags holds a
``{{``, ``{%`` or ``{#``; and every page, fetched as each role with realistic rows behind it
(an imported dataset with its report, splits and a snapshot, runs, a model version), has none
in its output.
"""

from __future__ import annotations

import re

import pytest
from django.template.base import Lexer, TokenType

from tests.datasets_app.factories import imported_dataset, run_queued_search_index
from tests.paths import ROOT

# Fixtures of the training tests, used here as they are (pytest finds them by name).
from tests.training_app.conftest import (  # noqa: F401
    finished_run,
    make_run,
    model_version,
    running_run,
    snapshot,
    tiny_base_model,
    tiny_bert_dir,
)

TEMPLATE_DIR = ROOT / "templates"
TEMPLATES = sorted(TEMPLATE_DIR.rglob("*.html"))
UNPARSED = re.compile(r"\{\{|\{%|\{#")
ROLES = ["admin", "analyst", "annotator", "viewer"]


def unparsed_pieces(text: str) -> list[str]:
    """Each stretch of ``text`` around an opening it holds, for the failure message."""
    return [text[max(0, m.start() - 40) : m.end() + 40] for m in UNPARSED.finditer(text)]


@pytest.mark.parametrize(
    "path", TEMPLATES, ids=[str(path.relative_to(TEMPLATE_DIR)) for path in TEMPLATES]
)
def test_every_template_tag_sits_on_one_line(path):
    leftovers = [
        (token.lineno, piece)
        for token in Lexer(path.read_text(encoding="utf-8")).tokenize()
        if token.token_type == TokenType.TEXT
        for piece in unparsed_pieces(token.contents)
    ]

    assert leftovers == [], f"{path.name}: a tag broken over lines or left open"


def test_the_lexer_check_catches_a_tag_broken_over_two_lines():
    broken = '<textarea>{{ item.labels|join:"\n" }}</textarea>'

    tokens = Lexer(broken).tokenize()

    assert [token.token_type for token in tokens] == [TokenType.TEXT]
    assert unparsed_pieces(tokens[0].contents)


# --- every page, as each role -------------------------------------------------------------------
SUPPORT_CSV = "text,label\n" + "".join(
    f"{phrase} number {n},{intent}\n"
    for n in range(30)
    for intent, phrase in (
        ("card_arrival", "When will my new card arrive"),
        ("refund", "How do I get a refund for my order"),
        ("top_up", "My top up did not go through"),
    )
)


@pytest.fixture
def pages(analyst, redis_url, finished_run, running_run, model_version) -> list[str]:  # noqa: F811
    """The console's pages, each with rows behind it."""
    from datasets_app import services

    # One record without a label, so the labeling queue shows a record to label.
    csv_text = SUPPORT_CSV + "a text nobody labeled yet,\n"
    mapping = {"text_columns": ["text"], "label_column": "label"}
    dataset = imported_dataset(analyst, csv_text, mapping, name="Support")
    run_queued_search_index(dataset)
    services.dataset_split(dataset=dataset, user=analyst, ratios=(0.6, 0.2, 0.2))
    taken = services.snapshot_create(dataset=dataset, user=analyst, note="first")
    d = dataset.pk
    return [
        "/",
        "/dashboard/health/",
        "/datasets/",
        f"/datasets/{d}/",
        f"/datasets/{d}/records/",
        f"/datasets/{d}/records/?search=refund+-card&label=refund",
        f"/datasets/{d}/records/?flag=exact_duplicate",
        f"/datasets/{d}/label/",
        "/datasets/labeling/",
        "/training/",
        "/training/new/",
        f"/training/new/?snapshot={taken.pk}",
        f"/training/{finished_run.pk}/",
        f"/training/{running_run.pk}/",
        f"/training/{running_run.pk}/events/",
        f"/training/compare/?runs={finished_run.pk}&runs={running_run.pk}",
        f"/training/model-versions/{model_version.pk}/evaluations/",
        "/models/",
        f"/models/versions/{model_version.pk}/",
        "/models/deployments/",
        "/api/docs/",
        "/no-such-page/",
    ]


@pytest.mark.parametrize("role", ROLES)
def test_no_page_shows_an_unparsed_tag(client, make_user, pages, role):
    client.force_login(make_user(role))
    problems = {}
    for url in pages:
        response = client.get(url)
        assert response.status_code in (200, 403, 404), (url, response.status_code)
        if response.get("Content-Type", "").startswith("text/html"):
            pieces = unparsed_pieces(response.content.decode())
            if pieces:
                problems[url] = pieces

    assert problems == {}


def test_login_page_shows_no_unparsed_tag(client, db):
    response = client.get("/login/")

    assert response.status_code == 200
    assert unparsed_pieces(response.content.decode()) == []
