"""The records page's search syntax, read the way PostgreSQL's ``websearch_to_tsquery`` reads it,
and written as SQLite FTS5 queries, so search means the same on both databases.

    refund card        both words, anywhere in the text, in any order
    "top up"           the words in this order
    card OR cheque     either (OR binds the AND-groups around it: ``a b OR c`` is (a b) or c)
    refund -card       leave out texts with "card"

Pure: no Django imports. FTS5 has no NOT on its own (only ``a NOT b``), so a group made only of
left-out words is returned apart, for the caller to express as "not among these matches".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Term:
    text: str
    negated: bool = False


@dataclass(frozen=True)
class Fts5Query:
    """Records match ``match`` (one FTS5 expression; "" when every group only leaves words
    out) or do NOT match one of ``exclude_only`` (one expression per such group)."""

    match: str = ""
    exclude_only: list[str] = field(default_factory=list)


# Scripts written without spaces between words (Chinese, Japanese, Korean in part): a word index
# holds whole runs of them, so a search for part of a run would find nothing. The ranges are
# for a regex character class (csv_io uses them too).
CJK_RANGES = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_UNSPACED_SCRIPTS = re.compile(f"[{CJK_RANGES}]")


def has_unspaced_script(query: str) -> bool:
    """Whether ``query`` has Chinese, Japanese or Korean characters (search those as typed)."""
    return bool(_UNSPACED_SCRIPTS.search(query))


def _has_word(text: str) -> bool:
    # Terms of punctuation alone have no words to look up; PostgreSQL drops them too.
    return any(character.isalnum() for character in text)


def websearch_groups(query: str) -> list[list[Term]]:
    """The query as OR-ed groups of AND-ed terms, as ``websearch_to_tsquery`` splits it: quoted
    text is one phrase (an unclosed quote runs to the end), ``-`` before a word or phrase leaves
    it out, and ``or`` (any case) between two terms means OR; elsewhere it is a word."""
    groups: list[list[Term]] = [[]]
    minuses = 0  # "-" signs since the last term: each one turns the next term around
    previous_was_term = False
    position, length = 0, len(query)
    while position < length:
        character = query[position]
        if character.isspace():
            position += 1
            continue
        if character == "-":
            minuses += 1
            position += 1
            continue
        if character == '"':
            end = query.find('"', position + 1)
            end = length if end == -1 else end
            text, position = query[position + 1 : end], end + 1
        else:
            end = position
            while end < length and not query[end].isspace() and query[end] != '"':
                end += 1
            text, position = query[position:end], end
            if text.lower() == "or" and previous_was_term and not minuses:
                groups.append([])
                previous_was_term = False
                continue
            if not _has_word(text):
                continue  # punctuation is skipped as a space is: a "-" before it still counts
        if _has_word(text):
            groups[-1].append(Term(text=text, negated=minuses % 2 == 1))
            previous_was_term = True
        minuses = 0
    return [group for group in groups if group]


def _quoted(text: str) -> str:
    """An FTS5 string: every term quoted, so no character of it is read as FTS5 syntax."""
    return '"' + text.replace('"', '""') + '"'


def _any_of(terms: list[Term]) -> str:
    return " OR ".join(_quoted(term.text) for term in terms)


def websearch_to_fts5(query: str) -> Fts5Query | None:
    """The FTS5 form of a websearch query, or None when it has no words to look for."""
    groups = websearch_groups(query)
    if not groups:
        return None
    matches, exclude_only = [], []
    for group in groups:
        wanted = [term for term in group if not term.negated]
        unwanted = [term for term in group if term.negated]
        if not wanted:
            exclude_only.append(_any_of(unwanted))
            continue
        expression = " AND ".join(_quoted(term.text) for term in wanted)
        if unwanted:
            expression = f"({expression}) NOT ({_any_of(unwanted)})"
        matches.append(f"({expression})")
    return Fts5Query(match=" OR ".join(matches), exclude_only=exclude_only)
