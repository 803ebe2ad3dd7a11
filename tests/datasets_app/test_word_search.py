"""Word search means the same on SQLite (FTS5) as on PostgreSQL (full-text, ``english``): quoted
phrases, several words AND-ed, -word, OR, English word forms; a search with no words to look up
matches substrings and says so; the page names the search in use (issue 9, item 16).

Every test runs on the database the suite runs on (PostgreSQL with DATABASE_URL, else SQLite)."""

from __future__ import annotations

import pytest
from django.db import connection
from pytest_django.asserts import assertContains

from datasets_app.search_syntax import Fts5Query, Term, websearch_groups, websearch_to_fts5
from datasets_app.selectors import SQLITE_SEARCH_TABLE, record_page
from datasets_app.services import dataset_clean_apply, dataset_clean_undo, dataset_delete
from tests.datasets_app.factories import import_now, imported_dataset, run_queued_search_index

TEXT_LABEL = {"text_columns": ["text"], "label_column": "label"}
TEXTS = [
    "the speed of the river",  # 1
    "a river runs past at speed",  # 2
    "speed limits on the road",  # 3
    "my nickname is Bob",  # 4
    "we paddled a canoe",  # 5
    "a boat on the lake",  # 6
    "river boat trips",  # 7
    "speedy delivery",  # 8
]
ENGINE = "PostgreSQL full-text search" if connection.vendor == "postgresql" else "SQLite FTS5"


# --- the syntax, read as websearch_to_tsquery reads it -----------------------------------------
@pytest.mark.parametrize(
    ("query", "groups"),
    [
        ("speed river", [[Term("speed"), Term("river")]]),
        ('"speed of the" river', [[Term("speed of the"), Term("river")]]),
        ("river -speed", [[Term("river"), Term("speed", negated=True)]]),
        ('-"big cat" dog', [[Term("big cat", negated=True), Term("dog")]]),
        ("cat - dog", [[Term("cat"), Term("dog", negated=True)]]),
        ("a b OR c", [[Term("a"), Term("b")], [Term("c")]]),
        ("cat or dog", [[Term("cat")], [Term("dog")]]),
        ("or cat", [[Term("or"), Term("cat")]]),  # OR needs a term before it
        ("cat OR OR dog", [[Term("cat")], [Term("OR"), Term("dog")]]),
        ("cat OR", [[Term("cat")]]),
        ('"unclosed phrase', [[Term("unclosed phrase")]]),
        ("foo-bar", [[Term("foo-bar")]]),
        # Each "-" turns the next term around ("--cat" is cat); punctuation between keeps it,
        # an empty phrase takes it, and a "-" with no term after it is dropped.
        ("--cat", [[Term("cat")]]),
        ("- -cat dog", [[Term("cat"), Term("dog")]]),
        ("---cat", [[Term("cat", negated=True)]]),
        ("-!!! cat", [[Term("cat", negated=True)]]),
        ('-"" cat', [[Term("cat")]]),
        ("cat -", [[Term("cat")]]),
        ("-", []),
        ("cat - or dog", [[Term("cat"), Term("or", negated=True), Term("dog")]]),
        ("!!! ?", []),
        ("", []),
    ],
)
def test_websearch_groups_read_the_query_as_postgresql_does(query, groups):
    assert websearch_groups(query) == groups


def test_fts5_query_quotes_every_term_and_sets_groups_of_only_left_out_words_apart():
    assert websearch_to_fts5('speed "of the" -river OR boat') == Fts5Query(
        match='(("speed" AND "of the") NOT ("river")) OR ("boat")'
    )
    assert websearch_to_fts5('say "hi"" there" NEAR(x)') == Fts5Query(
        match='("say" AND "hi" AND " there" AND "NEAR(x)")'
    )
    assert websearch_to_fts5("-speed OR canoe") == Fts5Query(
        match='("canoe")', exclude_only=['"speed"']
    )
    assert websearch_to_fts5("...") is None


# --- searching records --------------------------------------------------------------------------
@pytest.fixture
def indexed(analyst, redis_url):
    csv_text = "text,label\n" + "".join(f"{text},x\n" for text in TEXTS)
    dataset = imported_dataset(analyst, csv_text, TEXT_LABEL, report=False)
    run_queued_search_index(dataset)
    return dataset


def found(dataset, search: str) -> list[int]:
    dataset.refresh_from_db()
    return [record.source_row for record in record_page(dataset=dataset, search=search).records]


@pytest.mark.parametrize(
    ("search", "rows"),
    [
        ("speed river", [1, 2]),  # every word, anywhere, in any order
        ('"river runs"', [2]),  # a phrase: these words in this order
        ('"runs river"', []),
        ("river -speed", [7]),  # -word leaves texts with it out
        ("canoe OR lake", [5, 6]),
        ("river speed OR canoe", [1, 2, 5]),  # OR between AND-groups
        ("-speed", [4, 5, 6, 7, 8]),  # only left out: every other text
        ("-speed OR canoe", [4, 5, 6, 7, 8]),
        ("nicknames", [4]),  # English word forms
        ("limit", [3]),
        ("spee", []),  # words, not substrings of words
        ('"speed limits" road', [3]),
    ],
)
def test_search_syntax_finds_the_same_records_on_either_database(indexed, search, rows):
    page = record_page(dataset=indexed, search=search)

    assert [record.source_row for record in page.records] == rows
    assert page.search_mode == "full_text"
    assert page.search_note.startswith(f"Word search ({ENGINE}): ")


def test_search_of_punctuation_alone_matches_substrings_and_says_why(indexed):
    page = record_page(dataset=indexed, search="!!!")

    assert (page.records, page.search_mode) == ([], "substring")
    assert page.search_note.startswith("This search has no words to look up")


@pytest.mark.skipif(
    "connection.vendor != 'postgresql'", reason="FTS5's porter tokenizer keeps stop words"
)
def test_search_of_stop_words_alone_matches_substrings_on_postgresql(indexed):
    page = record_page(dataset=indexed, search="the")

    # "the" is no word to the english configuration: matched as typed instead of nothing.
    assert [record.source_row for record in page.records] == [1, 3, 6]
    assert page.search_mode == "substring"
    assert 'only common words such as "the"' in page.search_note


def test_records_page_names_the_search_in_use(analyst_client, indexed):
    response = analyst_client.get(f"/datasets/{indexed.pk}/records/", {"search": "speed river"})

    assertContains(
        response, f'<p class="small muted" data-testid="search-mode">Word search ({ENGINE}):'
    )
    assertContains(response, "the speed of the river")
    assert response.context["page"].search_mode == "full_text"


def test_api_gives_the_search_note_with_the_mode(indexed, client, analyst):
    client.force_login(analyst)

    body = client.get(f"/api/v1/datasets/{indexed.pk}/records/", {"search": '"river runs"'}).json()

    assert [record["source_row"] for record in body["results"]] == [2]
    assert body["search_mode"] == "full_text"
    assert body["search_note"].startswith(f"Word search ({ENGINE}): ")


# --- the index follows the records -------------------------------------------------------------
def index_rows() -> int:
    """Entries in the word index, whichever database holds it."""
    table = (
        "datasets_app_recordsearch" if connection.vendor == "postgresql" else SQLITE_SEARCH_TABLE
    )
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 - a constant name
        return cursor.fetchone()[0]


def test_word_index_follows_texts_edited_by_a_fix_and_by_its_undo(analyst, redis_url):
    csv_text = "text,label\nun cafÃ© noir,a\nthe café downstairs,a\nnothing here,b\n"
    dataset = imported_dataset(analyst, csv_text, TEXT_LABEL, report=False)
    run_queued_search_index(dataset)
    assert found(dataset, "café") == [2]

    dataset_clean_apply(dataset=dataset, user=analyst, kind="repair_mojibake")
    assert found(dataset, "café") == [1, 2]
    assert found(dataset, "noir") == [1]

    dataset_clean_undo(dataset=dataset, user=analyst)
    assert found(dataset, "café") == [2]


def test_word_index_entries_go_with_the_records_they_index(analyst, redis_url):
    dataset = imported_dataset(analyst, "text,label\nfirst words,a\nsecond,b\n", TEXT_LABEL)
    run_queued_search_index(dataset)
    assert index_rows() == 2

    import_now(dataset, analyst, TEXT_LABEL)  # a reimport replaces the records and entries
    assert index_rows() == 0
    assert found(dataset, "words") == [1]  # substring until the new index is built
    run_queued_search_index(dataset)
    assert index_rows() == 2
    assert record_page(dataset=dataset, search="words").search_mode == "full_text"

    dataset_delete(dataset=dataset, user=analyst)
    assert index_rows() == 0


def test_search_in_chinese_japanese_or_korean_matches_as_typed(analyst, redis_url):
    csv_text = "text,label\n我想申请退款,a\n退款多久到账,a\nrefund please,b\n"
    dataset = imported_dataset(analyst, csv_text, TEXT_LABEL, report=False)
    run_queued_search_index(dataset)

    page = record_page(dataset=dataset, search="退款")

    # No spaces between words: a word index would hold each whole run and find nothing.
    assert [record.source_row for record in page.records] == [1, 2]
    assert page.search_mode == "substring"
    assert page.search_note.startswith("Chinese, Japanese and Korean are written without spaces")


def test_index_job_in_many_small_ranges_indexes_every_record(analyst, redis_url, monkeypatch):
    from datasets_app.services import search

    monkeypatch.setattr(search, "CHUNK_IDS", 3)
    csv_text = "text,label\n" + "".join(f"message {n} about refunds,x\n" for n in range(10))
    dataset = imported_dataset(analyst, csv_text, TEXT_LABEL, report=False)

    run_queued_search_index(dataset)

    assert index_rows() == 10
    assert found(dataset, "refund") == list(range(1, 11))
