"""Data-quality checks and fixes for text-classification datasets.

Pure pandas/numpy: no Django, no I/O. Every function takes a frame with the columns `id` (int),
`text` (str), `label` (str, '' when missing) and optionally `split` ('', 'train', 'validation',
'test'). They run on up to a million records, so work is done with pandas string methods,
groupby and hashing; Python-level loops only touch the few rows a regular expression has
already picked out (possible mojibake, possible markup) or the handful of report examples.

Fixes never delete anything: they return a frame of proposed changes (`id` plus `new_text`,
`new_label` and/or `exclude`, and a `reason`) that the service applies, keeping the originals
so a fix can be undone.
"""

from __future__ import annotations

import functools
import html
import math
import re
import sys
import unicodedata
from collections.abc import Callable
from typing import Any, Literal

import ftfy
import numpy as np
import pandas as pd
from ftfy.badness import BADNESS_RE, MOJIBAKE_CATEGORIES

SPLITS: tuple[str, str, str] = ("train", "validation", "test")

# Fix kinds named in findings; each is the name of the function below without `fix_`.
FIX_DROP_DUPLICATES = "drop_duplicates"
FIX_DROP_EMPTY = "drop_empty"
FIX_RESOLVE_CONFLICTS = "resolve_conflicts"
FIX_REPAIR_MOJIBAKE = "repair_mojibake"
FIX_STRIP_MARKUP = "strip_markup"
FIX_EXCLUDE_LENGTH_OUTLIERS = "exclude_length_outliers"
FIX_EXCLUDE_SMALL_CLASSES = "exclude_small_classes"
FIX_EXCLUDE_MOSTLY_NOISE = "exclude_mostly_noise"

# Thresholds shared by the report and its fixes, so a fix excludes exactly what was reported.
MIN_CLASS_SIZE = 10
LENGTH_OUTLIER_Z = 4.0
NOISE_FRACTION = 0.5

# Finding kinds the report writes onto its records as flag tokens (Record.flags, comma-wrapped,
# in this order after the import's tokens). 'empty' is not among them: the import sets it, with
# 'truncated' and 'wrong_encoding', and a report keeps those as they are.
IMPORT_FLAGS: tuple[str, ...] = ("empty", "truncated", "wrong_encoding")
REPORT_FLAGS: tuple[str, ...] = (
    "exact_duplicate",
    "near_duplicate",
    "label_conflict",
    "length_outlier",
    "small_class",
    "mostly_noise",
    "mojibake",
    "markup",
    "split_leakage",
)
_REPORT_TOKEN_RE = rf",(?:{'|'.join(REPORT_FLAGS)})(?=,)"

# Long texts are cut in report examples: the report is stored as JSON and shown in a page.
EXAMPLE_TEXT_MAX_CHARS = 300

# pandas' hash is SipHash-2-4 over the UTF-8 bytes plus a fixed mixing step; with a fixed key
# it gives the same value in every process and run (unlike Python's salted hash()). A test
# pins one value so a pandas upgrade that changed the algorithm would be noticed.
_HASH_KEY = "lepton-console-1"  # exactly 16 characters, as SipHash needs a 128-bit key

_LETTER = r"[^\W\d_]"

# --- markup -----------------------------------------------------------------------------------
_HTML_ELEMENTS = (
    "a|abbr|address|area|article|aside|audio|b|base|bdi|bdo|big|blockquote|body|br|button|"
    "canvas|caption|center|cite|code|col|colgroup|data|datalist|dd|del|details|dfn|dialog|div|"
    "dl|dt|em|embed|fieldset|figcaption|figure|font|footer|form|h[1-6]|head|header|hr|html|i|"
    "iframe|img|input|ins|kbd|label|legend|li|link|main|map|mark|meta|meter|nav|noscript|"
    "object|ol|optgroup|option|output|p|param|picture|pre|progress|q|rp|rt|ruby|s|samp|script|"
    "section|select|small|source|span|strike|strong|style|sub|summary|sup|svg|table|tbody|td|"
    "template|textarea|tfoot|th|thead|time|title|tr|track|tt|u|ul|var|video|wbr"
)
# A bare `<name ...>` is only called a tag when the name is an HTML element or it carries
# `attr=value` pairs: "if x<y and y>z" must not count as markup.
_TAG_PATTERN = (
    r"(?s:<!--.*?-->)"
    r"|<!\[CDATA\[.*?\]\]>"
    r"|<![A-Za-z][^<>]*>"
    r"|<\?[A-Za-z][^<>]*\?>"
    r"|</[A-Za-z][\w:.-]*\s*>"
    rf"|<(?i:{_HTML_ELEMENTS})(?:\s[^<>]*)?/?>"
    r"|<[A-Za-z][\w:.-]*(?:\s+[\w:.-]+\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s<>]+))+\s*/?>"
    r"|<[A-Za-z][\w:.-]*\s*/>"
)
_ENTITY_PATTERN = r"&(?:[A-Za-z][A-Za-z0-9]{1,31}|#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6});"
_TAG_RE = re.compile(_TAG_PATTERN)
_MARKUP_RE = re.compile(f"{_TAG_PATTERN}|{_ENTITY_PATTERN}")
# Script and style bodies are code, not text, so stripping removes them with their tags.
_SCRIPT_STYLE_RE = re.compile(r"(?is)<(script|style)\b[^<>]*>.*?</\1\s*>")
_URL_PATTERN = r"(?:https?://|ftp://|www\.)[^\s<>\"']+"
_NOISE_SPAN_RE = re.compile(f"{_URL_PATTERN}|{_TAG_PATTERN}|{_ENTITY_PATTERN}")

# --- mojibake: the '+ñ' pattern -----------------------------------------------------------------
# Financial PhraseBank (and other corpora that went through old Windows tools) hold names such as
# 'Sepp+ñl+ñ' for 'Seppälä'. The UTF-8 bytes were decoded as code page 850 and then written out
# as cp1252/Latin-1 with Windows "best fit", which turns box-drawing characters into ASCII:
#   'ä' = C3 A4 -> cp850 '├' 'ñ' -> best fit '+' 'ñ'      'Å' = C3 85 -> '+à'
#   '©' = C2 A9 -> cp850 '┬' '®' -> best fit '-' '®'      'ü' = C3 BC -> '├' '╝' -> '++'
# ftfy cannot undo it: best fit threw the lead byte away, and 'ñ', 'à' are ordinary Latin-1
# letters. Knowing the pattern, the lead byte is C3 after '+' (Latin-1 letters U+00C0-U+00FF).
_PLUS_TABLE: dict[str, str] = {}
for _byte in range(0x80, 0xC0):
    _shown = bytes([_byte]).decode("cp850")
    _original = bytes([0xC3, _byte]).decode("utf-8")
    # Box drawing and shades were turned into '+', '-' or '|' by best fit, so those bytes are
    # lost; the multiplication and division signs are left out because only letters occur
    # inside the mangled names.
    _is_box = unicodedata.name(_shown).startswith(("BOX DRAWINGS", "LIGHT", "MEDIUM", "DARK"))
    if not _is_box and _original.isalpha():
        _PLUS_TABLE[_shown] = _original
del _byte, _shown, _original, _is_box
_PLUS_CHARS = "".join(sorted(_PLUS_TABLE))

# Tried in this order at each position, before the generic '+x' rule. The first four were worked
# out from the real rows of Financial PhraseBank, where they are the only forms these bytes take.
_APOSTROPHE = "\u2019"
_MANGLED_RULES: tuple[tuple[str, str], ...] = (
    # The euro sign (E2 82 AC) read as cp1252 is 'â', U+201A, '¬'; then 'â' -> '+ó', U+201A was
    # written as a broken entity 'x201a' and '¬' (C2 AC) -> '-¼'.
    (r"\+ó\s*x201a\s*-¼", "€"),
    # The apostrophe U+2019 (E2 80 99) read as cp1252 is 'â€™' ('€™' later spelled 'EUR TM' or
    # dropped); 'â' -> '+ó'.
    (r"\+ó(?:EUR ?TM)?\s(?=s\b)", _APOSTROPHE),
    # A word-final 'â' is the same apostrophe with its other bytes lost ('year+ó ??').
    (r"(?<=[^\W\d_])\+ó(?=\s|$)", _APOSTROPHE),
    # The PhraseBank writes the apostrophe of "'s" as '-¦ s' ("the Group -¦ s sales"); which
    # byte became '¦' cannot be recovered, so this one is inferred from context.
    (r"-¦\s(?=s\b)", _APOSTROPHE),
    # Lead byte C2 (symbols U+00A0-U+00BF) shows as '-'. Only the symbols seen in real data are
    # repaired: a generic '-x' rule would break Hungarian suffixes such as '15-án'.
    (r"-®", "©"),
    (r"-«", "®"),
    (r"-á(?=\d)", "\u00a0"),  # no-break space inside phone numbers: '334-á323'
    (r"(?<=[\s\d])-Á(?=[^\W\d_])", "µ"),  # micro sign in units: '1200 -Ál'
    # 'ü' (C3 BC) shows as '++' because '╝' also became '+'. ô ù û ÿ would too, but ü is by far
    # the likeliest in the names this corpus mangles ('G++nter', 'Gohrsm++hle'); 'C++ ' never
    # matches because a letter must follow.
    (rf"(?<={_LETTER})\+\+(?={_LETTER})", "ü"),
)
# The generic rule needs a letter (or the next '+x' of the same word, as in '+ä+ñnekoski') on one
# side of '+x', so that '+£5m' or '+½' stay as they are.
_PLUS_GENERIC = rf"(?<={_LETTER})\+[{_PLUS_CHARS}]|\+[{_PLUS_CHARS}](?={_LETTER}|\+[{_PLUS_CHARS}])"
_MANGLED_RE = re.compile(
    "|".join(f"(?P<r{index}>{pattern})" for index, (pattern, _) in enumerate(_MANGLED_RULES))
    + f"|(?P<plus>{_PLUS_GENERIC})"
)
# The same alternatives without groups, for str.contains (which warns about capture groups).
_MANGLED_ANY_RE = re.compile("|".join([*(pattern for pattern, _ in _MANGLED_RULES), _PLUS_GENERIC]))


# Every alternative of ftfy's BADNESS_RE needs either one of a few characters (C1 controls,
# 'Œ', 'œ', 'Ã', 'Â') or two adjacent characters from its mojibake categories; texts with
# neither cannot be "bad", so ftfy.fix_encoding would return them unchanged.
_FTFY_CHARACTERS = "".join(MOJIBAKE_CATEGORIES.values()) + "".join(
    sorted({character for character in BADNESS_RE.pattern if ord(character) > 0x7F})
)
FTFY_SUSPECT_RE = re.compile(
    f"[{MOJIBAKE_CATEGORIES['c1']}\u0152\u0153\u00c3\u00c2]|[{_FTFY_CHARACTERS}][{_FTFY_CHARACTERS}]"
)


def _replace_mangled(match: re.Match[str]) -> str:
    group = match.lastgroup
    if group == "plus":
        return _PLUS_TABLE[match.group()[1]]
    return _MANGLED_RULES[int(str(group)[1:])][1]


def repair_mojibake_text(text: str) -> str:
    """Undo the cp850 '+ñ' mangling, then let ftfy fix ordinary mojibake such as 'CafÃ©'."""
    # fix_encoding, not fix_text: fix_text would also straighten quotes and unescape HTML,
    # which are not encoding repairs and would hide real changes inside this one.
    return ftfy.fix_encoding(_MANGLED_RE.sub(_replace_mangled, text))


def strip_markup_text(text: str) -> str:
    """Remove tags (and script/style bodies), unescape entities and collapse whitespace."""
    without_tags = _TAG_RE.sub(" ", _SCRIPT_STYLE_RE.sub(" ", text))
    # Unescape after removing tags, so '&lt;b&gt;' stays visible text instead of vanishing.
    return " ".join(html.unescape(without_tags).split())


# --- normalisation and hashing ------------------------------------------------------------------
@functools.cache
def _punctuation_patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(whitespace or BMP punctuation runs, punctuation above U+FFFF), built once per process."""
    # Python's re has no \p{P}; classes built from the Unicode database strip punctuation in
    # every script while keeping letters, digits, combining marks and symbols (emoji carry
    # sentiment, so '😀' and '😡' must not collapse into the same text). The BMP class is kept
    # apart because re stores a BMP-only class as a bitmap but scans a list of ranges once
    # any code point above U+FFFF is in it, which made normalisation 2.5 times slower.
    runs: list[list[int]] = []
    for code in range(sys.maxunicode + 1):
        if unicodedata.category(chr(code)).startswith("P"):
            if runs and runs[-1][1] == code - 1:
                runs[-1][1] = code
            else:
                runs.append([code, code])
    # No run crosses U+FFFF, which is a noncharacter.
    basic = "".join(f"\\U{start:08x}-\\U{end:08x}" for start, end in runs if end <= 0xFFFF)
    astral = "".join(f"\\U{start:08x}-\\U{end:08x}" for start, end in runs if start > 0xFFFF)
    return re.compile(f"[\\s{basic}]+"), re.compile(f"[{astral}]")


def normalize_texts(texts: pd.Series) -> pd.Series:
    """NFKC, casefold, punctuation to spaces, whitespace collapsed, stripped."""
    basic, astral = _punctuation_patterns()
    folded = texts.fillna("").astype(str).str.normalize("NFKC").str.casefold()
    # Punctuation above U+FFFF (historic scripts) is rare: only rows with such characters pay.
    has_astral = ~folded.str.isascii()
    has_astral[has_astral] = folded[has_astral].str.contains("[\U00010000-\U0010ffff]")
    if has_astral.any():
        folded = folded.where(~has_astral, folded[has_astral].str.replace(astral, " ", regex=True))
    # Punctuation becomes a space rather than nothing so 'hello,world' matches 'hello, world';
    # one pass replaces each run of spaces and punctuation by a single space.
    return folded.str.replace(basic, " ", regex=True).str.strip()


def _hash_strings(values: pd.Series) -> pd.Series:
    hashed = pd.util.hash_pandas_object(
        values.astype(str), index=False, encoding="utf8", hash_key=_HASH_KEY, categorize=False
    )
    return pd.Series(hashed.to_numpy().view(np.int64), index=values.index, name=values.name)


def text_hashes(texts: pd.Series) -> pd.Series:
    """Stable int64 hash of each normalised text; near-duplicates share a hash."""
    return _hash_strings(normalize_texts(texts))


# --- shared analysis ----------------------------------------------------------------------------
class _Records:
    """Columns derived once from a frame, by position, shared by the report and the fixes."""

    def __init__(self, frame: pd.DataFrame) -> None:
        missing = [column for column in ("id", "text", "label") if column not in frame.columns]
        if missing:
            raise ValueError(f"The frame needs the columns id, text and label; {missing} missing.")
        size = len(frame)
        index = pd.RangeIndex(size)
        self.size = size
        self.ids = frame["id"].to_numpy(dtype=np.int64)
        self.text = pd.Series(frame["text"].fillna("").astype(str).to_numpy(), index=index)
        self.label = pd.Series(frame["label"].fillna("").astype(str).to_numpy(), index=index)
        self.has_split_column = "split" in frame.columns
        if self.has_split_column:
            self.split = pd.Series(frame["split"].fillna("").astype(str).to_numpy(), index=index)
        else:
            self.split = pd.Series([""] * size, index=index, dtype=str)
        self.lengths = self.text.str.len().to_numpy(dtype=np.int64)
        self.is_empty = (self.text.str.strip().str.len() == 0).to_numpy()

    @functools.cached_property
    def normalized(self) -> pd.Series:
        return normalize_texts(self.text)

    @functools.cached_property
    def has_key(self) -> np.ndarray:
        # Texts that are only punctuation ('(' or '...') normalise to '' and would otherwise all
        # count as one near-duplicate group.
        return (self.normalized != "").to_numpy()

    @functools.cached_property
    def key_codes(self) -> np.ndarray:
        codes, _ = pd.factorize(self.normalized)
        return codes

    @functools.cached_property
    def exact_codes(self) -> np.ndarray:
        pairs = pd.DataFrame({"text": self.text, "label": self.label})
        return pairs.groupby(["text", "label"], sort=False).ngroup().to_numpy()

    @functools.cached_property
    def near_codes(self) -> np.ndarray:
        pairs = pd.DataFrame({"key": self.key_codes, "label": self.label})
        return pairs.groupby(["key", "label"], sort=False).ngroup().to_numpy()

    @functools.cached_property
    def exact_duplicate(self) -> np.ndarray:
        # Same text and same label: a copy that adds nothing. Copies with another label are
        # label conflicts, which need a decision, not a silent drop.
        return pd.Series(self.exact_codes).duplicated().to_numpy() & ~self.is_empty

    @functools.cached_property
    def near_duplicate(self) -> np.ndarray:
        copies = pd.Series(self.near_codes).duplicated().to_numpy() & self.has_key & ~self.is_empty
        return copies & ~self.exact_duplicate

    def first_position(self, group_codes: np.ndarray) -> np.ndarray:
        """Position of the first record of each record's group (codes from factorize)."""
        positions = pd.Series(np.arange(self.size))
        return positions.groupby(group_codes).transform("first").to_numpy()

    @functools.cached_property
    def conflicting_groups(self) -> np.ndarray:
        labelled = self.has_key & (self.label != "").to_numpy()
        label_counts = (
            pd.Series(self.label.to_numpy()[labelled]).groupby(self.key_codes[labelled]).nunique()
        )
        return label_counts.index[label_counts > 1].to_numpy()

    @functools.cached_property
    def label_conflict(self) -> np.ndarray:
        return self.has_key & np.isin(self.key_codes, self.conflicting_groups)

    @functools.cached_property
    def mojibake_repairs(self) -> pd.Series:
        """Repaired text for every record whose text the repair changes, by position."""
        # Every rule but '++' needs a non-ASCII character, and ftfy leaves ASCII text alone, so
        # two fast tests pick the few rows worth a regular expression and a per-row ftfy call.
        text = self.text
        non_ascii = text[~text.str.isascii()]
        maybe_mangled = (
            non_ascii.str.contains("+", regex=False) | non_ascii.str.contains("-[®«áÁ¦]")
        ).to_numpy(dtype=bool)
        # ftfy's own is_bad() check costs ~18 µs a row; FTFY_SUSPECT_RE is a cheaper necessary
        # condition for it (tested), so ftfy runs only on rows that could possibly change.
        maybe_bad = non_ascii.str.contains(FTFY_SUSPECT_RE).to_numpy(dtype=bool)
        candidates = pd.concat(
            [
                non_ascii[maybe_mangled | maybe_bad],
                text[text.str.contains("++", regex=False) & text.str.isascii()],
            ]
        )
        has_pattern = candidates.str.contains(_MANGLED_ANY_RE).to_numpy(dtype=bool)
        original = candidates[has_pattern | ~candidates.str.isascii().to_numpy(dtype=bool)]
        repaired = original.map(repair_mojibake_text)
        return repaired[repaired != original].sort_index()

    @functools.cached_property
    def markup_strips(self) -> pd.Series:
        """Text without markup for every record that has tags or entities, by position."""
        # '<' or '&' is a cheap filter; the precise regex and html.unescape run on the rest.
        candidates = self.text[self.text.str.contains("[<&]", regex=True)]
        candidates = candidates[candidates.str.contains(_MARKUP_RE)]
        has_tag = candidates.str.contains(_TAG_RE)
        # '&foo;' is not an entity: keep entity-only rows only when unescaping changes them.
        has_entity = np.fromiter(
            (html.unescape(text) != text for text in candidates), dtype=bool, count=len(candidates)
        )
        marked = candidates[has_tag.to_numpy(dtype=bool) | has_entity]
        return marked.map(strip_markup_text)


# --- report -------------------------------------------------------------------------------------
def _plural(count: int, singular: str, plural: str | None = None) -> str:
    word = singular if count == 1 else (plural or singular + "s")
    return f"{count:,} {word}"


def _quote(text: str, limit: int = 120) -> str:
    return "“" + (text if len(text) <= limit else text[: limit - 1] + "…") + "”"


def _finding(
    records: _Records,
    *,
    kind: str,
    title: str,
    positions: np.ndarray,
    detail: Callable[[int], str],
    fix: str | None,
    example_limit: int,
    example_positions: np.ndarray | None = None,
) -> dict[str, Any]:
    chosen = positions if example_positions is None else example_positions
    examples = []
    for position in chosen[:example_limit].tolist():
        text = records.text.iat[position]
        if len(text) > EXAMPLE_TEXT_MAX_CHARS:
            text = text[: EXAMPLE_TEXT_MAX_CHARS - 1] + "…"
        examples.append(
            {
                "id": int(records.ids[position]),
                "text": text,
                "label": records.label.iat[position],
                "detail": detail(position),
            }
        )
    return {
        "kind": kind,
        "title": title,
        "count": len(positions),
        "record_ids": records.ids[positions].tolist(),
        "examples": examples,
        "fix": fix,
    }


def _empty_finding(records: _Records, example_limit: int) -> dict[str, Any]:
    positions = np.flatnonzero(records.is_empty)
    return _finding(
        records,
        kind="empty",
        title=f"{_plural(len(positions), 'record')} {'has' if len(positions) == 1 else 'have'} "
        "no text, or only spaces.",
        positions=positions,
        detail=lambda p: (
            "The text is empty." if records.lengths[p] == 0 else "The text is only whitespace."
        ),
        fix=FIX_DROP_EMPTY,
        example_limit=example_limit,
    )


def _exact_duplicate_finding(records: _Records, example_limit: int) -> dict[str, Any]:
    positions = np.flatnonzero(records.exact_duplicate)
    first = records.first_position(records.exact_codes) if len(positions) else None
    return _finding(
        records,
        kind="exact_duplicate",
        title=f"{_plural(len(positions), 'record')} {'repeats' if len(positions) == 1 else 'repeat'} "
        "an earlier record with the same text and label.",
        positions=positions,
        detail=lambda p: f"Same text and label as record {records.ids[first[p]]}.",
        fix=FIX_DROP_DUPLICATES,
        example_limit=example_limit,
    )


def _near_duplicate_finding(records: _Records, example_limit: int) -> dict[str, Any]:
    positions = np.flatnonzero(records.near_duplicate)
    first = records.first_position(records.near_codes) if len(positions) else None
    return _finding(
        records,
        kind="near_duplicate",
        title=f"{_plural(len(positions), 'record')} {'differs' if len(positions) == 1 else 'differ'} "
        "from an earlier record with the same label only in case, spacing or punctuation.",
        positions=positions,
        detail=lambda p: (
            f"Same as record {records.ids[first[p]]} apart from case, spacing or punctuation."
        ),
        fix=FIX_DROP_DUPLICATES,
        example_limit=example_limit,
    )


def _label_conflict_finding(records: _Records, example_limit: int) -> dict[str, Any]:
    positions = np.flatnonzero(records.label_conflict)
    group_count = len(records.conflicting_groups)
    # Examples keep each group's members together so the page shows the clash side by side.
    order = (
        np.lexsort((positions, records.first_position(records.key_codes)[positions]))
        if len(positions)
        else positions
    )
    example_positions = positions[order]

    def detail(position: int) -> str:
        members = records.label_conflict & (records.key_codes == records.key_codes[position])
        counts = records.label.to_numpy()[members]
        counts = pd.Series(counts[counts != ""]).value_counts()
        parts = ", ".join(f"'{label}' {_plural(count, 'time')}" for label, count in counts.items())
        return f"This text is labelled {parts}."

    return _finding(
        records,
        kind="label_conflict",
        title=f"{_plural(group_count, 'text')} {'appears' if group_count == 1 else 'appear'} with "
        f"more than one label ({_plural(len(positions), 'record')}).",
        positions=positions,
        detail=detail,
        fix=FIX_RESOLVE_CONFLICTS,
        example_limit=example_limit,
        example_positions=example_positions,
    )


def _robust_z(values: np.ndarray) -> np.ndarray:
    median = np.median(values)
    deviations = np.abs(values - median)
    mad = np.median(deviations)
    if mad > 0:
        # 0.6745 makes the MAD comparable to a standard deviation for normal data (Iglewicz and
        # Hoaglin's modified z-score).
        return 0.6745 * (values - median) / mad
    # Over half the values equal the median: fall back to the mean absolute deviation, scaled
    # the same way (1.2533 = sqrt(pi / 2)), as IBM SPSS does.
    mean_deviation = deviations.mean()
    if mean_deviation > 0:
        return (values - median) / (1.2533 * mean_deviation)
    return np.zeros_like(values)


def _length_outliers(records: _Records, threshold: float) -> tuple[np.ndarray, np.ndarray, int]:
    """(positions, robust z-scores) of texts far from the typical length, and that length."""
    non_empty = np.flatnonzero(~records.is_empty)
    # Lengths are skewed (a few very long texts); their logarithm is close to symmetric.
    log_lengths = np.log(records.lengths[non_empty].astype(np.float64))
    z_scores = _robust_z(log_lengths) if len(non_empty) else log_lengths
    outlier = np.abs(z_scores) > threshold
    typical = round(math.exp(np.median(log_lengths))) if len(non_empty) else 0
    return non_empty[outlier], z_scores[outlier], typical


def _length_outlier_finding(
    records: _Records, threshold: float, example_limit: int
) -> dict[str, Any]:
    positions, outlier_z, typical = _length_outliers(records, threshold)
    z_of = dict(zip(positions.tolist(), outlier_z.tolist(), strict=True))
    long_count = int((outlier_z > 0).sum())
    short_count = len(positions) - long_count
    # Alternate the most extreme long and short texts so both kinds appear among the examples.
    long_first = positions[outlier_z > 0][np.argsort(-outlier_z[outlier_z > 0], kind="stable")]
    short_first = positions[outlier_z < 0][np.argsort(outlier_z[outlier_z < 0], kind="stable")]
    long_first, short_first = long_first[:example_limit], short_first[:example_limit]
    paired = min(len(long_first), len(short_first))
    interleaved = np.concatenate(
        (
            np.column_stack((long_first[:paired], short_first[:paired])).ravel(),
            long_first[paired:],
            short_first[paired:],
        )
    ).astype(np.int64)
    return _finding(
        records,
        kind="length_outlier",
        title=f"{_plural(len(positions), 'text')} {'is' if len(positions) == 1 else 'are'} far "
        f"from the typical length of {typical:,} characters: {long_count:,} very long, "
        f"{short_count:,} very short.",
        positions=positions,
        detail=lambda p: (
            f"{_plural(int(records.lengths[p]), 'character')}; typical is "
            f"{typical:,} (robust z-score {z_of[p]:+.1f})."
        ),
        fix=FIX_EXCLUDE_LENGTH_OUTLIERS,
        example_limit=example_limit,
        example_positions=interleaved,
    )


def _small_classes(records: _Records, min_class_size: int) -> tuple[pd.Series, np.ndarray]:
    """(record count of each label below min_class_size, positions of their records)."""
    counts = records.label[records.label != ""].value_counts()
    small = counts[counts < min_class_size]
    return small, np.flatnonzero(records.label.isin(small.index).to_numpy())


def _small_class_finding(
    records: _Records, min_class_size: int, example_limit: int
) -> dict[str, Any]:
    small, positions = _small_classes(records, min_class_size)
    names = ", ".join(f"'{label}' ({count})" for label, count in small.head(5).items())
    more = f" and {len(small) - 5} more" if len(small) > 5 else ""
    # One example per small label, smallest first, is more telling than five of the same one.
    first_of_label = pd.Series(positions).groupby(records.label.to_numpy()[positions]).first()
    example_positions = first_of_label.reindex(small.sort_values(kind="stable").index).to_numpy()
    return _finding(
        records,
        kind="small_class",
        title=f"{_plural(len(small), 'label')} {'has' if len(small) == 1 else 'have'} fewer than "
        f"{min_class_size} records: {names}{more}.",
        positions=positions,
        detail=lambda p: (
            f"Label '{records.label.iat[p]}' has only "
            f"{_plural(int(small[records.label.iat[p]]), 'record')}."
        ),
        fix=FIX_EXCLUDE_SMALL_CLASSES,
        example_limit=example_limit,
        example_positions=example_positions,
    )


def _noise_fractions(records: _Records) -> np.ndarray:
    """Share of each text's non-space characters that are digits, URLs, tags or entities."""
    fractions = np.zeros(records.size)
    # Only texts with a digit or the start of a URL or markup can have any noise at all; the
    # counting below is the slow part, so it runs on those alone.
    has_noise = records.text.str.contains(r"[\d<&]|://|www\.").to_numpy(dtype=bool)
    subset = records.text[has_noise]
    non_space = subset.str.len() - subset.str.count(r"\s")
    # Removing URLs and markup first keeps their digits from being counted twice.
    remainder = subset.str.replace(_NOISE_SPAN_RE, " ", regex=True)
    remaining = remainder.str.len() - remainder.str.count(r"\s") - remainder.str.count(r"\d")
    noise = (non_space - remaining).to_numpy(dtype=np.float64)
    non_space_values = non_space.to_numpy(dtype=np.float64)
    fractions[has_noise] = np.divide(
        noise, non_space_values, out=np.zeros_like(noise), where=non_space_values > 0
    )
    return fractions


def _mostly_noise(records: _Records) -> tuple[np.ndarray, np.ndarray]:
    """(positions of texts mostly URLs, digits or markup, every text's noise fraction)."""
    fractions = _noise_fractions(records)
    return np.flatnonzero((fractions > NOISE_FRACTION) & ~records.is_empty), fractions


def _mostly_noise_finding(records: _Records, example_limit: int) -> dict[str, Any]:
    positions, fractions = _mostly_noise(records)
    return _finding(
        records,
        kind="mostly_noise",
        title=f"{_plural(len(positions), 'text')} {'is' if len(positions) == 1 else 'are'} mostly "
        "URLs, numbers or markup rather than words.",
        positions=positions,
        detail=lambda p: (
            f"{fractions[p]:.0%} of its non-space characters are URLs, digits or markup."
        ),
        fix=FIX_EXCLUDE_MOSTLY_NOISE,
        example_limit=example_limit,
    )


def _mojibake_finding(records: _Records, example_limit: int) -> dict[str, Any]:
    repairs = records.mojibake_repairs
    positions = repairs.index.to_numpy(dtype=np.int64)
    return _finding(
        records,
        kind="mojibake",
        title=f"{_plural(len(positions), 'text')} {'has' if len(positions) == 1 else 'have'} "
        "characters garbled by an encoding mix-up (such as 'CafÃ©' or 'Sepp+ñl+ñ').",
        positions=positions,
        detail=lambda p: f"Repaired, it reads {_quote(repairs[p])}.",
        fix=FIX_REPAIR_MOJIBAKE,
        example_limit=example_limit,
    )


def _markup_finding(records: _Records, example_limit: int) -> dict[str, Any]:
    strips = records.markup_strips
    positions = strips.index.to_numpy(dtype=np.int64)
    return _finding(
        records,
        kind="markup",
        title=f"{_plural(len(positions), 'text')} {'contains' if len(positions) == 1 else 'contain'} "
        "HTML tags or entities.",
        positions=positions,
        detail=lambda p: f"Without markup it reads {_quote(strips[p])}.",
        fix=FIX_STRIP_MARKUP,
        example_limit=example_limit,
    )


def _split_leakage_finding(records: _Records, example_limit: int) -> dict[str, Any] | None:
    # No one-click fix: the remedy is a new split (keeping near-duplicates together), which the
    # page's split form makes; a fix could not be undone, as cleaning changes keep no splits.
    rank = records.split.map({name: order for order, name in enumerate(SPLITS)})
    in_split = rank.notna().to_numpy() & records.has_key & ~records.is_empty
    if not in_split.any():
        return None
    ranks = rank.to_numpy(dtype=np.float64)
    codes = records.key_codes
    per_group = pd.Series(ranks[in_split]).groupby(codes[in_split]).agg(["min", "nunique"])
    leaking = per_group[per_group["nunique"] > 1]
    group_min = leaking["min"].reindex(codes).to_numpy()
    positions = np.flatnonzero(in_split & (ranks > group_min))

    def detail(position: int) -> str:
        first_rank = group_min[position]
        earlier = np.flatnonzero(in_split & (codes == codes[position]) & (ranks == first_rank))[0]
        return (
            f"In {records.split.iat[position]}, but the same text is in {SPLITS[int(first_rank)]} "
            f"(record {records.ids[earlier]})."
        )

    return _finding(
        records,
        kind="split_leakage",
        title=f"{_plural(len(positions), 'record')} in a later split "
        f"{'shares' if len(positions) == 1 else 'share'} its text with an earlier split, so "
        "models would be evaluated on text they have seen; re-split keeping near-duplicates "
        "together.",
        positions=positions,
        detail=detail,
        fix=None,
        example_limit=example_limit,
    )


def _split_counts(records: _Records) -> dict[str, int]:
    if not records.has_split_column:
        return {}
    counts = records.split.value_counts()
    # Pipeline order first (train, validation, test), then anything else such as ''.
    order = [name for name in SPLITS if name in counts.index]
    order += [name for name in counts.index if name not in SPLITS]
    return {str(name): int(counts[name]) for name in order}


def _stats(records: _Records) -> dict[str, Any]:
    lengths = records.lengths
    if records.size:
        # Whole-character bins of equal width, at most 20, up to the 99th percentile. Bins are
        # [start, end); the last also holds every longer text, clipped, instead of stretching
        # the axis for the longest 1%.
        upper = math.ceil(np.percentile(lengths, 99))
        width = math.ceil((upper + 1) / 20)
        edges = np.arange(0, width * math.ceil((upper + 1) / width) + 1, width)
        counts, _ = np.histogram(np.minimum(lengths, upper), bins=edges)
        histogram = {"edges": [int(edge) for edge in edges], "counts": counts.tolist()}
    else:
        histogram = {"edges": [], "counts": []}
    return {
        "total": records.size,
        "label_counts": {str(k): int(v) for k, v in records.label.value_counts().items()},
        "length_histogram": histogram,
        "split_counts": _split_counts(records),
    }


def quality_report(
    frame: pd.DataFrame,
    *,
    min_class_size: int = MIN_CLASS_SIZE,
    length_outlier_z: float = LENGTH_OUTLIER_Z,
    example_limit: int = 5,
) -> dict[str, Any]:
    """Statistics and the problems found, as JSON-ready values; only kinds with a count > 0.

    exact_duplicate is the same text *and* label (a copy with another label is a
    label_conflict); near_duplicate is the same normalised text and label without being an exact
    copy. Both, and label_conflict and split_leakage, ignore empty texts and texts that are only
    punctuation; "first" means first in frame order. label_counts and split_counts count ''
    (unlabelled, unsplit) too. Examples cut texts at EXAMPLE_TEXT_MAX_CHARS characters.
    """
    records = _Records(frame)
    findings = [
        _empty_finding(records, example_limit),
        _exact_duplicate_finding(records, example_limit),
        _near_duplicate_finding(records, example_limit),
        _label_conflict_finding(records, example_limit),
        _length_outlier_finding(records, length_outlier_z, example_limit),
        _small_class_finding(records, min_class_size, example_limit),
        _mostly_noise_finding(records, example_limit),
        _mojibake_finding(records, example_limit),
        _markup_finding(records, example_limit),
        _split_leakage_finding(records, example_limit),
    ]
    return {
        "stats": _stats(records),
        "findings": [finding for finding in findings if finding and finding["count"] > 0],
    }


# --- fixes --------------------------------------------------------------------------------------
def _changes(ids: np.ndarray, **columns: Any) -> pd.DataFrame:
    changes = pd.DataFrame({"id": np.asarray(ids, dtype=np.int64), **columns})
    # Fixed dtypes even when nothing changes, so callers can rely on them.
    for column, dtype in (("new_text", str), ("exclude", bool), ("reason", str)):
        if column in changes.columns:
            changes[column] = changes[column].astype(dtype)
    if "new_label" in changes.columns:
        # None, not NaN, where a record is excluded instead of relabelled.
        changes["new_label"] = pd.Series(
            [label if isinstance(label, str) else None for label in changes["new_label"]],
            dtype=object,
        )
    return changes.reset_index(drop=True)


def fix_drop_duplicates(
    frame: pd.DataFrame, kind: Literal["exact_duplicate", "near_duplicate"]
) -> pd.DataFrame:
    """Exclude every copy after the first: exactly the records of that finding."""
    records = _Records(frame)
    if kind == "exact_duplicate":
        positions = np.flatnonzero(records.exact_duplicate)
        codes = records.exact_codes
        template = "Copy of record {} (same text and label)."
    elif kind == "near_duplicate":
        positions = np.flatnonzero(records.near_duplicate)
        codes = records.near_codes
        template = "Near-duplicate of record {} (differs only in case, spacing or punctuation)."
    else:
        raise ValueError(f"kind must be 'exact_duplicate' or 'near_duplicate', not {kind!r}.")
    first_ids = records.ids[records.first_position(codes)[positions]] if len(positions) else []
    return _changes(
        records.ids[positions],
        exclude=np.ones(len(positions), dtype=bool),
        reason=[template.format(first_id) for first_id in first_ids],
    )


def fix_drop_empty(frame: pd.DataFrame) -> pd.DataFrame:
    """Exclude records whose text is empty or only whitespace."""
    records = _Records(frame)
    positions = np.flatnonzero(records.is_empty)
    return _changes(
        records.ids[positions],
        exclude=np.ones(len(positions), dtype=bool),
        reason=["The text is empty."] * len(positions),
    )


def fix_resolve_conflicts(
    frame: pd.DataFrame, strategy: Literal["majority", "drop"]
) -> pd.DataFrame:
    """Settle texts labelled differently: relabel to the majority label, or exclude them.

    'majority' returns `id, new_label, exclude, reason`: members whose label differs get the
    group's most common non-empty label; a tie excludes the whole group (new_label None).
    'drop' returns `id, exclude, reason` for every member of a conflicting group.
    """
    if strategy not in ("majority", "drop"):
        raise ValueError(f"strategy must be 'majority' or 'drop', not {strategy!r}.")
    records = _Records(frame)
    positions = np.flatnonzero(records.label_conflict)
    if strategy == "drop":
        return _changes(
            records.ids[positions],
            exclude=np.ones(len(positions), dtype=bool),
            reason=["The same text appears with different labels."] * len(positions),
        )

    members = pd.DataFrame(
        {
            "position": positions,
            "group": records.key_codes[positions],
            "label": records.label.to_numpy()[positions],
        }
    )
    votes = members[members["label"] != ""].groupby(["group", "label"]).size()
    votes = (
        votes.rename("votes").reset_index().sort_values(["group", "votes"], ascending=[True, False])
    )
    top = votes.groupby("group").head(2)
    top_two = top.groupby("group")["votes"].agg(["first", "last", "size"])
    # Groups have at least two labels by definition, so a tie means the top two votes match.
    tied = top_two.index[top_two["first"] == top_two["last"]]
    winners = votes.drop_duplicates("group").set_index("group")["label"]
    members["winner"] = members["group"].map(winners)
    members["tied"] = members["group"].isin(tied)

    excluded = members[members["tied"]]
    relabelled = members[~members["tied"] & (members["label"] != members["winner"])]
    changes = pd.concat(
        [
            pd.DataFrame(
                {
                    "position": excluded["position"],
                    "new_label": None,
                    "exclude": True,
                    "reason": "The same text appears with different labels, equally often.",
                }
            ),
            pd.DataFrame(
                {
                    "position": relabelled["position"],
                    "new_label": relabelled["winner"].astype(object),
                    "exclude": False,
                    "reason": [
                        f"Most records with this text are labelled '{winner}'."
                        for winner in relabelled["winner"]
                    ],
                }
            ),
        ],
        ignore_index=True,
    ).sort_values("position", kind="stable")
    return _changes(
        records.ids[changes["position"].to_numpy(dtype=np.int64)],
        new_label=changes["new_label"].astype(object).to_numpy(),
        exclude=changes["exclude"].to_numpy(dtype=bool),
        reason=changes["reason"].astype(object).to_numpy(),
    )


def fix_repair_mojibake(frame: pd.DataFrame) -> pd.DataFrame:
    """New text for every record the mojibake repair changes."""
    records = _Records(frame)
    repairs = records.mojibake_repairs
    return _changes(
        records.ids[repairs.index.to_numpy(dtype=np.int64)],
        new_text=repairs.to_numpy(dtype=object),
        reason=["Repaired characters garbled by an encoding mix-up."] * len(repairs),
    )


def fix_strip_markup(frame: pd.DataFrame) -> pd.DataFrame:
    """New text without tags or entities for every record that has markup."""
    records = _Records(frame)
    strips = records.markup_strips
    return _changes(
        records.ids[strips.index.to_numpy(dtype=np.int64)],
        new_text=strips.to_numpy(dtype=object),
        reason=["Removed HTML tags and entities."] * len(strips),
    )


def fix_exclude_length_outliers(
    frame: pd.DataFrame, threshold: float = LENGTH_OUTLIER_Z
) -> pd.DataFrame:
    """Exclude the texts the report calls length outliers (robust z-score above threshold)."""
    records = _Records(frame)
    positions, z_scores, typical = _length_outliers(records, threshold)
    return _changes(
        records.ids[positions],
        exclude=np.ones(len(positions), dtype=bool),
        reason=[
            f"{'Very long' if z > 0 else 'Very short'}: {_plural(int(length), 'character')}, "
            f"typical is {typical:,}."
            for length, z in zip(records.lengths[positions], z_scores, strict=True)
        ],
    )


def fix_exclude_small_classes(
    frame: pd.DataFrame, min_class_size: int = MIN_CLASS_SIZE
) -> pd.DataFrame:
    """Exclude every record of a label with fewer than min_class_size records."""
    records = _Records(frame)
    small, positions = _small_classes(records, min_class_size)
    labels = records.label.to_numpy()[positions]
    return _changes(
        records.ids[positions],
        exclude=np.ones(len(positions), dtype=bool),
        reason=[
            f"Label '{label}' has only {_plural(int(small[label]), 'record')} "
            f"(fewer than {min_class_size})."
            for label in labels
        ],
    )


def fix_exclude_mostly_noise(frame: pd.DataFrame) -> pd.DataFrame:
    """Exclude texts whose non-space characters are mostly URLs, digits or markup."""
    records = _Records(frame)
    positions, fractions = _mostly_noise(records)
    return _changes(
        records.ids[positions],
        exclude=np.ones(len(positions), dtype=bool),
        reason=[
            f"{fraction:.0%} of its non-space characters are URLs, digits or markup."
            for fraction in fractions[positions]
        ],
    )


# --- record flags -------------------------------------------------------------------------------
def record_flags(current: pd.Series, findings: list[dict[str, Any]]) -> pd.Series:
    """Record.flags after a report: every REPORT_FLAGS token replaced by the findings' own.

    current holds the flags by record id of every record that has flags or is in a finding
    (records excluded since the last report too: they get no report tokens); findings are
    quality_report()'s, with their record_ids. Other tokens (the import's 'empty',
    'truncated') are kept, before the report's. Returns comma-wrapped strings such as
    ',truncated,small_class,', or '' for none, on the same index.
    """
    values = current.fillna("").astype(str)
    kept = values.to_numpy(dtype=object).copy()
    has_report_token = values.str.contains(_REPORT_TOKEN_RE, regex=True).to_numpy(dtype=bool)
    if has_report_token.any():
        kept[has_report_token] = (
            values[has_report_token].str.replace(_REPORT_TOKEN_RE, "", regex=True).to_numpy()
        )
    flags = np.where(kept == "", ",", kept).astype(object)
    ids = current.index.to_numpy(dtype=np.int64)
    record_ids = {finding["kind"]: finding.get("record_ids", []) for finding in findings}
    for token in REPORT_FLAGS:
        if record_ids.get(token):
            marked = np.isin(ids, np.asarray(record_ids[token], dtype=np.int64))
            flags[marked] = flags[marked] + f"{token},"
    flags[flags == ","] = ""
    return pd.Series(flags, index=current.index, dtype=object, name="flags")


# --- splits -------------------------------------------------------------------------------------
def _checked_ratios(ratios: tuple[float, float, float]) -> np.ndarray:
    values = tuple(float(value) for value in ratios)
    if len(values) != 3:
        raise ValueError(
            f"Give three split ratios, for train, validation and test; got {len(values)}."
        )
    if not all(math.isfinite(value) and value >= 0 for value in values):
        raise ValueError(f"Split ratios must be numbers of 0 or more; got {values}.")
    total = math.fsum(values)
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ValueError(f"Split ratios must add up to 1; {tuple(ratios)} adds up to {total:g}.")
    # Dividing by the sum removes the rounding slack the tolerance allows.
    return np.asarray(values, dtype=np.float64) / total


def _largest_remainder(totals: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Split each total into whole parts proportional to its row of weights, summing exactly."""
    row_sums = weights.sum(axis=1, keepdims=True)
    shares = np.divide(weights, row_sums, out=np.zeros_like(weights), where=row_sums > 0)
    raw = totals[:, None] * shares
    # The small epsilon keeps 0.1 * 30 = 3.0000000000000004 from being floored to 2.
    parts = np.floor(raw + 1e-9).astype(np.int64)
    remainder = totals - parts.sum(axis=1)
    fraction_rank = np.argsort(np.argsort(-(raw - parts), axis=1, kind="stable"), axis=1)
    return parts + (fraction_rank < remainder[:, None])


def _split_targets(
    stratum_sizes: np.ndarray, group_counts: np.ndarray, ratios: np.ndarray
) -> np.ndarray:
    """Records per (stratum, split): largest remainder, then one per used split where possible."""
    targets = _largest_remainder(stratum_sizes, np.tile(ratios, (len(stratum_sizes), 1)))
    used = ratios > 0
    eligible = (stratum_sizes >= 3) & (group_counts >= used.sum())
    for split in np.flatnonzero(used):
        needs = eligible & (targets[:, split] == 0)
        if needs.any():
            donors = np.argmax(targets[needs], axis=1)
            targets[np.flatnonzero(needs), donors] -= 1
            targets[needs, split] = 1
    return targets


def _place_large_groups(
    group_split: np.ndarray,
    group_stratum: np.ndarray,
    group_sizes: np.ndarray,
    priority: np.ndarray,
    targets: np.ndarray,
    ratios: np.ndarray,
) -> np.ndarray:
    """Put groups of two or more records, largest first, where their stratum lacks most.

    Returns the records placed per (stratum, split). Cutting a shuffled list would let one big
    group land in a small split (four near-duplicates filling a one-record test share), so these
    go first, greedily; singletons then fill what is left exactly, vectorised. The loop runs once
    per multi-record group, not per record.
    """
    placed = np.zeros_like(targets)
    large = np.flatnonzero(group_sizes > 1)
    if not len(large):
        return placed
    large = large[np.lexsort((priority[large], -group_sizes[large]))]
    room = (targets - placed).astype(np.float64)
    room[:, ratios <= 0] = -np.inf  # a split with ratio 0 takes nothing
    room_rows = room.tolist()
    placed_rows = placed.tolist()
    for group, stratum, size in zip(
        large.tolist(), group_stratum[large].tolist(), group_sizes[large].tolist(), strict=True
    ):
        space = room_rows[stratum]
        split = max(range(3), key=space.__getitem__)  # ties: the earlier split
        group_split[group] = split
        space[split] -= size
        placed_rows[stratum][split] += size
    return np.array(placed_rows, dtype=np.int64)


def assign_splits(
    frame: pd.DataFrame,
    *,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 13,
    group_key: pd.Series | None = None,
) -> pd.Series:
    """'train' / 'validation' / 'test' per record, stratified by label, groups kept together.

    group_key (by position, e.g. text_hashes(frame["text"])) keeps near-duplicates in one split;
    a group follows its most common label. Unlabelled records form their own stratum. The result
    depends only on the records, their keys and the seed, not on row order.
    """
    ratio_values = _checked_ratios(ratios)
    size = len(frame)
    if size == 0:
        return pd.Series([], index=frame.index, dtype=str, name="split")
    if group_key is None:
        has_unique_ids = "id" in frame.columns and frame["id"].is_unique
        keys = frame["id"].to_numpy() if has_unique_ids else np.arange(size)
    else:
        if len(group_key) != size:
            raise ValueError(
                f"group_key has {len(group_key):,} values but the frame has {size:,} records."
            )
        keys = group_key.to_numpy()
    try:
        group_codes, _ = pd.factorize(keys, sort=True)  # sorted: independent of row order
    except TypeError:
        group_codes, _ = pd.factorize(keys)
    group_codes = group_codes.copy()
    missing = group_codes < 0
    # A record without a key is a group of its own.
    group_codes[missing] = group_codes.max(initial=-1) + 1 + np.arange(missing.sum())
    group_count = int(group_codes.max()) + 1

    label_codes, _ = pd.factorize(frame["label"].fillna("").astype(str).to_numpy(), sort=True)
    # A group's stratum is its most common label (ties: the first label in sorted order).
    votes = (
        pd.DataFrame({"group": group_codes, "label": label_codes})
        .value_counts()
        .rename("votes")
        .reset_index()
        .sort_values(["group", "votes", "label"], ascending=[True, False, True])
        .drop_duplicates("group")
    )
    group_stratum = votes.set_index("group")["label"].reindex(np.arange(group_count)).to_numpy()
    group_sizes = np.bincount(group_codes, minlength=group_count)
    priority = np.random.default_rng(seed).permutation(group_count)

    stratum_count = int(group_stratum.max()) + 1
    stratum_sizes = np.bincount(group_stratum, weights=group_sizes, minlength=stratum_count)
    stratum_sizes = stratum_sizes.astype(np.int64)
    groups_per_stratum = np.bincount(group_stratum, minlength=stratum_count)
    targets = _split_targets(stratum_sizes, groups_per_stratum, ratio_values)

    group_split = np.zeros(group_count, dtype=np.int64)
    placed = _place_large_groups(
        group_split, group_stratum, group_sizes, priority, targets, ratio_values
    )
    # Singletons, shuffled within each stratum, are cut at the counts still missing. Where a
    # large group overshot its split, the rest is shared out in proportion to what is missing.
    singles = np.flatnonzero(group_sizes == 1)
    if len(singles):
        singles = singles[np.lexsort((priority[singles], group_stratum[singles]))]
        strata = group_stratum[singles]
        single_counts = np.bincount(strata, minlength=stratum_count)
        missing_counts = np.clip(targets - placed, 0, None).astype(np.float64)
        shares = _largest_remainder(single_counts, missing_counts)
        stratum_start = np.concatenate(([0], np.cumsum(single_counts)[:-1]))
        offsets = np.arange(len(singles)) - stratum_start[strata]
        cut_train = shares[strata, 0]
        cut_validation = cut_train + shares[strata, 1]
        group_split[singles] = np.where(
            offsets < cut_train, 0, np.where(offsets < cut_validation, 1, 2)
        )

    _fill_empty_splits(
        group_split, group_stratum, group_sizes, priority, ratio_values, stratum_sizes
    )
    return pd.Series(
        np.array(SPLITS, dtype=object)[group_split[group_codes]],
        index=frame.index,
        dtype=str,
        name="split",
    )


def _fill_empty_splits(
    group_split: np.ndarray,
    group_stratum: np.ndarray,
    group_sizes: np.ndarray,
    priority: np.ndarray,
    ratios: np.ndarray,
    stratum_sizes: np.ndarray,
) -> None:
    """Move whole groups so every used split of a 3+ record stratum has a record, if possible."""
    used = np.flatnonzero(ratios > 0)
    counts = np.zeros((len(stratum_sizes), 3), dtype=np.int64)
    np.add.at(counts, (group_stratum, group_split), group_sizes)
    lacking = np.flatnonzero((stratum_sizes >= 3) & (counts[:, used] == 0).any(axis=1))
    # Only strata whose groups are too big for the cut reach this loop: a few, not per record.
    for stratum in lacking.tolist():
        members = np.flatnonzero(group_stratum == stratum)
        for split in used.tolist():
            if counts[stratum, split] > 0:
                continue
            per_split = np.bincount(group_split[members], minlength=3)
            donors = [s for s in used.tolist() if per_split[s] > 1]
            if not donors:
                break
            donor = max(donors, key=lambda s: counts[stratum, s])
            candidates = members[group_split[members] == donor]
            # The smallest group moves (the last shuffled one on ties), to disturb ratios least.
            moving = candidates[np.lexsort((-priority[candidates], group_sizes[candidates]))[0]]
            group_split[moving] = split
            counts[stratum, donor] -= group_sizes[moving]
            counts[stratum, split] += group_sizes[moving]


# --- export -------------------------------------------------------------------------------------
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: str) -> str:
    """Prefix a quote to cells a spreadsheet would run as a formula (OWASP CSV injection)."""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value
