"""Reading uploaded text files: detection, preview and streaming parse. No Django, no database.

Everything a user sends is treated as hostile: binary files, undecodable bytes, ragged rows,
duplicate headers, NUL bytes and giant lines each end in one plain sentence (``ImportProblem``)
instead of a traceback. Parsing streams in chunks through pandas' C parser, so memory stays
bounded whatever the size of the file.
"""

from __future__ import annotations

import bisect
import codecs
import csv
import gzip
import io
import json
import re
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from zlib import error as zlib_error

import charset_normalizer
import pandas as pd

from datasets_app.search_syntax import CJK_RANGES

# The csv module refuses fields over 128 KB by default; a row may be as long as a line may be
# (Limits.max_line_bytes, checked before any parsing), and quoted values can span lines.
csv.field_size_limit(2**31 - 1)
SAMPLE_BYTES = 256 * 1024
# Detection reads on past SAMPLE_BYTES (never further than one line may be long) until the sample
# holds this many line breaks: the header, a preview's rows and the line that may be cut short.
SAMPLE_LINES = 22
# How much of a (long-row) sample the text checks that cost a regular-expression pass look at.
PLAUSIBILITY_CHARS = 1024 * 1024
# How far past an all-ASCII sample detection looks for lines that show the encoding.
EVIDENCE_SCAN_BYTES = 64 * 1024**2
# The encodings the README lists, in the codecs that read a superset of each (GBK within
# GB18030, Big5 within Big5-HKSCS, Shift-JIS within cp932). Detection chooses among these only:
# charset-normalizer alone also offers code pages nobody writes tables in (cp775, iso8859_16),
# which decode nearly any bytes into plausible-looking garbage.
LISTED_ENCODINGS = ("utf_8", "gb18030", "big5hkscs", "cp932", "cp1252")
# A UTF-8 file with at most this many undecodable bytes in the sample is a damaged UTF-8 file
# (when no listed encoding reads it as plausible text), not a file in another encoding.
DAMAGED_UTF8_MAX_BYTES = 3
# The longest single line a header can plausibly be (200 columns of 120-character names is 24 KB).
HEADER_MAX_BYTES = 64 * 1024
WRONG_ENCODING_FLAG = "wrong_encoding"
MAX_LABEL_CHARS = 500  # Record.label
MAX_ID_CHARS = 255  # Record.external_id
# Problems of one kind kept per chunk: one more than an import lists, so it knows to say
# "(and more)".
MAX_LENGTH_PROBLEMS = 21
PREVIEW_ROWS = 20
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "valid": "validation",
    "validation": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
    "": "",
}
# Names charset-normalizer (or users) give, mapped to the codec that decodes a superset of them.
ENCODING_ALIASES = {
    "ascii": "utf-8",
    "utf_8": "utf-8",
    "gbk": "gb18030",
    "gb2312": "gb18030",
    "gb18030": "gb18030",
    "shift_jis": "cp932",
    "cp932": "cp932",
    "big5": "big5hkscs",
    "latin_1": "cp1252",
    "iso8859_1": "cp1252",
    "windows_1252": "cp1252",
    "cp1252": "cp1252",
}
# Quoting the user can choose, by name, and the quote character each one reads with.
QUOTING = {"double": '"', "single": "'", "none": ""}
QUOTING_NAMES = {char: name for name, char in QUOTING.items()}
# Codecs Python counts as text encodings that no file is written in: they turn host names,
# escapes or nothing into text, and reading a table with them fails or garbles it.
NOT_FILE_ENCODINGS = {"idna", "punycode", "unicode-escape", "raw-unicode-escape", "undefined"}
HEADER_NAME_MAX_CHARS = 120
BINARY_SIGNATURES = [
    (b"PK\x03\x04", "a ZIP archive or an Excel workbook (.xlsx). Save it as CSV and upload that"),
    (b"\xd0\xcf\x11\xe0", "an old Excel or Word file (.xls/.doc). Save it as CSV and upload that"),
    (b"%PDF", "a PDF document, not a table of text"),
    (b"\x89PNG", "a PNG image, not a table of text"),
    (b"\xff\xd8\xff", "a JPEG image, not a table of text"),
    (b"GIF8", "a GIF image, not a table of text"),
    (b"\x7fELF", "a program, not a table of text"),
    (b"SQLite format 3", "an SQLite database, not a table of text"),
    (b"PAR1", "a Parquet file; export it as CSV or JSON Lines"),
]


class ImportProblem(Exception):
    """A user-fixable problem with the file or the mapping, in one plain sentence."""

    def __init__(self, message: str, *, line: int | None = None, column: str | None = None):
        super().__init__(message)
        self.message, self.line, self.column = message, line, column

    def as_dict(self) -> dict:
        return {"line": self.line, "column": self.column, "message": self.message}


@dataclass
class Detection:
    format: str  # "delimited" | "jsonl"
    encoding: str
    compression: str | None  # "gzip" | None
    delimiter: str
    quotechar: str
    has_header: bool
    columns: list[str]
    estimated_rows: int
    preview: list[list[str]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Detection:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class ColumnMapping:
    text_columns: list[str]
    text_separator: str = "\n"
    label_column: str | None = None
    split_column: str | None = None
    id_column: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ColumnMapping:
        return cls(
            text_columns=list(data.get("text_columns") or []),
            text_separator=data.get("text_separator", "\n"),
            label_column=data.get("label_column") or None,
            split_column=data.get("split_column") or None,
            id_column=data.get("id_column") or None,
        )

    def validate(self, columns: list[str]) -> None:
        if not self.text_columns:
            raise ImportProblem("Choose at least one text column.")
        known = set(columns)
        listed = ", ".join(columns)
        for role, name in [
            *[("text", c) for c in self.text_columns],
            ("label", self.label_column),
            ("split", self.split_column),
            ("id", self.id_column),
        ]:
            if name and name not in known:
                raise ImportProblem(
                    f"The {role} column '{name}' is not in the file. Its columns are: {listed}.",
                    column=name,
                )
        roles: dict[str, str] = {}
        for role, name in [
            *[("text", c) for c in self.text_columns],
            ("label", self.label_column),
            ("split", self.split_column),
            ("id", self.id_column),
        ]:
            if not name:
                continue
            if name in roles and not (role == roles[name] == "text"):
                raise ImportProblem(
                    f"The column '{name}' is mapped as {roles[name]} and as {role}; a column "
                    "has one role. Choose another column for one of them.",
                    column=name,
                )
            roles[name] = role


@dataclass
class Limits:
    max_file_bytes: int = 2 * 1024**3
    max_columns: int = 200
    max_text_chars: int = 20_000
    max_line_bytes: int = 10 * 1024**2
    # What a compressed upload may inflate to: a small .gz can hold terabytes (a "zip bomb").
    max_uncompressed_bytes: int = 8 * 1024**3


# --- overrides --------------------------------------------------------------------------------
def override_errors(
    *, encoding: str | None = None, delimiter: str | None = None, quoting: str | None = None
) -> dict[str, str]:
    """Why the encoding, delimiter or quoting a user chose cannot read a file, by field.

    Empty when all of them can. The page form and the API both go through this, so a choice
    that would crash the parser becomes a message next to its field.
    """
    errors: dict[str, str] = {}
    if encoding:
        message = _encoding_error(encoding)
        if message:
            errors["encoding"] = message
    quotechar = QUOTING.get(quoting) if quoting else None
    if quoting and quotechar is None:
        errors["quoting"] = (
            f"'{quoting}' is not a way of quoting this reader knows. Choose double, single or none."
        )
    if delimiter:
        if len(delimiter) != 1:
            errors["delimiter"] = (
                "The delimiter must be one character, such as , ; | or a tab; "
                f"'{delimiter}' has {len(delimiter)}."
            )
        elif len(f"a{delimiter}b".splitlines()) > 1:
            errors["delimiter"] = (
                "A line break cannot be the delimiter: it ends each row. Choose , ; | or a tab."
            )
        elif delimiter == '"' or delimiter == quotechar:
            errors["delimiter"] = (
                f"The quote character {delimiter} cannot also be the delimiter: quotes enclose "
                "values that contain the delimiter. Choose , ; | or a tab."
            )
        elif delimiter == "\x00" or delimiter.isalnum():
            errors["delimiter"] = (
                f"{delimiter!r} cannot be the delimiter: it is part of ordinary values. "
                "Choose , ; | or a tab."
            )
    return errors


def _encoding_error(encoding: str) -> str | None:
    try:
        info = codecs.lookup(encoding)
    except (LookupError, ValueError, TypeError):
        return f"'{encoding}' is not a text encoding Python knows."
    if not getattr(info, "_is_text_encoding", True) or info.name in NOT_FILE_ENCODINGS:
        return (
            f"'{encoding}' is not an encoding text files are written in. "
            "Choose one such as utf-8, cp1252 or latin-1."
        )
    try:
        "text,label\n".encode(info.name).decode(info.name)
    except (UnicodeError, LookupError, ValueError, TypeError):
        return (
            f"'{encoding}' is not an encoding text files are written in. "
            "Choose one such as utf-8, cp1252 or latin-1."
        )
    return None


# --- opening ---------------------------------------------------------------------------------
def _is_gzip(head: bytes) -> bool:
    return head[:2] == b"\x1f\x8b"


def open_bytes(path: Path) -> io.BufferedIOBase:
    with path.open("rb") as probe:
        head = probe.read(2)
    return gzip.open(path, "rb") if _is_gzip(head) else path.open("rb")


def read_sample(path: Path, *, max_line_bytes: int | None = None) -> tuple[bytes, str | None, bool]:
    """(sample, compression, whether the sample is the whole file).

    At least SAMPLE_BYTES; then on until SAMPLE_LINES line breaks are in it, so that a file whose
    first rows are long (a legal 300 KB text) is still seen in whole rows. Never more than
    SAMPLE_BYTES past the longest line a file may hold, so a file without line breaks costs
    a bounded read.
    """
    max_line_bytes = Limits().max_line_bytes if max_line_bytes is None else max_line_bytes
    with path.open("rb") as probe:
        compression = "gzip" if _is_gzip(probe.read(2)) else None
    try:
        with open_bytes(path) as stream:
            sample = stream.read(SAMPLE_BYTES)
            complete = len(sample) < SAMPLE_BYTES
            cap = SAMPLE_BYTES + max_line_bytes
            while not complete and len(sample) < cap and _line_breaks(sample) < SAMPLE_LINES:
                wanted = min(len(sample), cap - len(sample))
                block = stream.read(wanted)
                sample += block
                complete = len(block) < wanted
            return sample, compression, complete
    except (OSError, EOFError) as exc:
        raise ImportProblem(f"The file is a damaged gzip archive: {exc}.") from None


def _encoding_evidence(path: Path, sample: bytes) -> tuple[bytes, list[tuple[int, int]]]:
    """Lines with non-ASCII bytes after an all-ASCII ``sample``, for detecting the encoding.

    A file whose first rows are plain ASCII says nothing about its encoding; its first accented
    or Chinese row may come megabytes later. Reads on at most EVIDENCE_SCAN_BYTES and keeps at
    most SAMPLE_BYTES of such lines. Returns (the lines joined, each ending in a line break;
    (offset in the joined bytes, file line number) of each line).
    """
    start = max(sample.rfind(b"\n"), sample.rfind(b"\r")) + 1  # whole lines only
    line = _line_breaks(sample[:start]) + 1
    found: list[bytes] = []
    starts: list[tuple[int, int]] = []
    size = 0
    try:
        with open_bytes(path) as stream:
            stream.read(start)
            carry, scanned = b"", 0
            while scanned < EVIDENCE_SCAN_BYTES and size < SAMPLE_BYTES:
                block = stream.read(1024 * 1024)
                if not block:
                    if carry and not carry.isascii():
                        starts.append((size, line))
                        found.append(carry + b"\n")
                    break
                scanned += len(block)
                data = carry + block
                end = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
                whole, carry = data[:end], data[end:]
                if whole.isascii():
                    line += _line_breaks(whole)
                    continue
                for piece in whole.splitlines(keepends=True):
                    if not piece.isascii() and size < SAMPLE_BYTES:
                        starts.append((size, line))
                        found.append(piece)
                        size += len(piece)
                    line += piece.count(b"\n") or 1
    except (OSError, EOFError, zlib_error):
        pass  # a damaged archive is reported by the import
    return b"".join(found), starts


def _line_breaks(data: bytes) -> int:
    return data.count(b"\n") or data.count(b"\r")


# --- detection -------------------------------------------------------------------------------
def detect_encoding(sample: bytes, *, complete: bool, line_of=None) -> str:
    """The encoding of ``sample``: one the README lists, tried on the whole sample.

    UTF-8 first (a valid UTF-8 sample of any length is almost never another encoding); then
    charset-normalizer ranks the listed multi-byte and Windows encodings, and the first one
    that decodes every byte of the sample into plausible text wins. A sample that is UTF-8 but
    for a few bytes is a damaged UTF-8 file: refused, naming the line, rather than read as
    another encoding that would garble every accented letter. ``line_of`` gives the file line
    of a byte offset in ``sample`` (default: count line breaks before it).
    """
    line_of = line_of or (lambda offset: sample[:offset].count(b"\n") + 1)
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        sample.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        # A sample cut in the middle of a multi-byte character is still UTF-8.
        if not complete and exc.start >= len(sample) - 3 and exc.reason == "unexpected end of data":
            return "utf-8"
        utf8_error = exc
        _raise_if_mostly_utf8(sample, exc, line_of)
    # Judge whole lines only: the last line of a partial sample may end inside a character.
    whole = sample if complete else sample[: max(sample.rfind(b"\n"), sample.rfind(b"\r")) + 1]
    whole = whole or sample
    candidates = list(LISTED_ENCODINGS)
    if whole.count(b"\x00") * 10 > len(whole):  # UTF-16 without a byte-order mark
        candidates += ["utf_16_le", "utf_16_be"]
        if len(whole) % 2:
            whole = whole[:-1]
    # charset-normalizer's ranking (least mess, then most like a language), the README's
    # order among equals: a few symbols in a GBK file fit Big5 just as well.
    listed_order = {name: index for index, name in enumerate(candidates)}
    # Ranking needs no more than a megabyte, cut at a line break (the candidates below still
    # decode every byte).
    cut = max(whole.rfind(b"\n", 0, PLAUSIBILITY_CHARS), whole.rfind(b"\r", 0, PLAUSIBILITY_CHARS))
    ranking_bytes = whole[: cut + 1] if cut > 0 and len(whole) > PLAUSIBILITY_CHARS else whole
    ranked = [
        name
        for *_, name in sorted(
            (
                round(match.chaos, 3),
                -round(match.coherence, 3),
                listed_order.get(name, len(candidates)),
                name,
            )
            for match in charset_normalizer.from_bytes(ranking_bytes, cp_isolation=candidates)
            for name in [codecs.lookup(match.encoding).name.replace("-", "_")]
        )
    ]
    best: tuple[int, str] | None = None
    for name in dict.fromkeys([*ranked, *candidates]):  # charset-normalizer's order first
        if name == "utf_8":
            continue
        try:
            text = whole.decode(name)
        except UnicodeDecodeError:
            continue
        # Every byte must decode; plausibility is judged on the first PLAUSIBILITY_CHARS (a
        # sample of a few very long rows can be megabytes).
        bad_lines = len(implausible_lines(text[:PLAUSIBILITY_CHARS]))
        if best is None or bad_lines < best[0]:
            best = (bad_lines, name)
        if bad_lines == 0:
            break
    utf8_bad = len(re.findall("\ufffd+", whole.decode("utf-8", errors="replace")))
    if (best is None or best[0] > 0) and utf8_bad <= DAMAGED_UTF8_MAX_BYTES:
        _raise_damaged_utf8(sample, utf8_error, line_of)
    if best is None:
        raise ImportProblem(
            "Could not tell which text encoding this file uses; it may not be text at all. "
            "Save it as CSV UTF-8 and upload it again, or choose the encoding yourself."
        )
    return ENCODING_ALIASES.get(best[1], best[1])


def _detect_file_encoding(path: Path, sample: bytes, *, complete: bool) -> str:
    """detect_encoding on the sample, plus later lines with non-ASCII bytes when the sample is
    plain ASCII (UTF-16 without a byte-order mark is left to the sample: its lines do not split
    at a single 0x0A byte)."""
    if complete or not sample.isascii() or b"\x00" in sample:
        return detect_encoding(sample, complete=complete)
    extra, starts = _encoding_evidence(path, sample)
    if not extra:
        return detect_encoding(sample, complete=complete)
    head = sample[: max(sample.rfind(b"\n"), sample.rfind(b"\r")) + 1]
    offsets = [len(head) + offset for offset, _ in starts]

    def line_of(offset: int) -> int:
        if offset < len(head):
            return head[:offset].count(b"\n") + 1
        index = bisect.bisect_right(offsets, offset) - 1
        return starts[index][1] + extra[starts[index][0] : offset - len(head)].count(b"\n")

    return detect_encoding(head + extra, complete=True, line_of=line_of)


_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xf4][\x80-\xbf]+")


def _raise_if_mostly_utf8(sample: bytes, error: UnicodeDecodeError, line_of) -> None:
    """A UTF-8 file with a few stray bytes is a damaged UTF-8 file, not a cp1252 one.

    Guessing another encoding would import every accented letter as mojibake, so name the line.
    """
    decoded = sample.decode("utf-8", errors="replace")
    bad = decoded.count("\ufffd")
    # Non-ASCII characters other than U+FFFD, counted at C speed (samples can be megabytes).
    good = len(decoded) - len(decoded.encode("ascii", "ignore")) - bad
    if good >= 3 and bad * 20 <= good and _UTF8_MULTIBYTE.search(sample):
        _raise_damaged_utf8(sample, error, line_of)


def _raise_damaged_utf8(sample: bytes, error: UnicodeDecodeError, line_of) -> None:
    line = line_of(error.start)
    raise ImportProblem(
        f"Line {line} has a byte that is not valid UTF-8 (0x{sample[error.start]:02x}), "
        "while the rest of the file is UTF-8. Fix or remove that line, or choose the "
        "encoding yourself if the file is not UTF-8.",
        line=line,
    )


# Text that no one writes, and that a wrong decoding produces: control characters, private-use
# code points, U+FFFD; a capital accented letter straight after a small letter ('cafÃ(');
# UTF-8 read as a Windows code page ('Ã©', 'â€™'); a Latin-1 symbol that never touches letters
# touching one (a GBK 'á' read as cp1252 is 'Espa¨¢ol', a Big5 '£' is '¢G', a GBK '…' is
# 'when¡\xad'); one Chinese,
# Japanese or Korean character inside a Latin word ('Syrj<CJK>nen': a Latin-1 letter and the
# next byte read as one double-byte character); half-width katakana touching Latin letters
# (cp932 single bytes).
_CJK = CJK_RANGES
_HALF_WIDTH_KANA = "\uff61-\uff9f"
_LATIN_LETTER = "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u00ff"
_LONE_SYMBOLS = "\u00a2\u00a4-\u00a6\u00a8\u00af\u00b8\u00bc-\u00be"
_IMPLAUSIBLE = re.compile(
    "[\x01-\x08\x0b\x0e-\x1f\x7f-\x9f\ufffd\ue000-\uf8ff]"
    "|[a-z\u00df-\u00f6\u00f8-\u00ff][\u00c0-\u00d6\u00d8-\u00de\u0152\u0160\u0178\u017d]"
    "|[\u00c2\u00c3][\u00a0-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc"
    "\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]"
    "|\u00e2\u20ac"
    f"|[{_LATIN_LETTER}][{_LONE_SYMBOLS}]|[{_LONE_SYMBOLS}][{_LATIN_LETTER}]"
    # '¡' and '¿' open a clause, never end a word; a soft hyphen only sits inside one.
    "|[A-Za-z0-9][\u00a1\u00bf]"
    f"|(?<![{_LATIN_LETTER}])\u00ad|\u00ad(?![{_LATIN_LETTER}])"
    f"|[A-Za-z][{_CJK}][A-Za-z]"
    f"|[A-Za-z][{_HALF_WIDTH_KANA}]|[{_HALF_WIDTH_KANA}][A-Za-z]"
)
# A lone CJK character touching a Latin letter or digit ('charged <CJK>1': a Shift-JIS '£'
# read as GB18030) is implausible only in a line with no two CJK characters together: real
# Chinese or Japanese text next to Latin words has runs of them ('价格是5元').
_LONE_CJK = re.compile(f"(?<=[A-Za-z0-9])[{_CJK}](?![{_CJK}])|(?<![{_CJK}])[{_CJK}](?=[A-Za-z0-9])")
_CJK_PAIR = re.compile(f"[{_CJK}][{_CJK}]")


def _implausible(text: str) -> bool:
    if _IMPLAUSIBLE.search(text):
        return True
    return bool(_LONE_CJK.search(text)) and not _CJK_PAIR.search(text)


def implausible_lines(text: str) -> list[int]:
    """Line numbers (1-based) of ``text`` that hold text a wrong decoding produces."""
    if not _IMPLAUSIBLE.search(text) and not _LONE_CJK.search(text):
        return []
    return [number for number, line in enumerate(text.split("\n"), start=1) if _implausible(line)]


def implausible_texts(texts: list[str]) -> list[bool]:
    """For each text, whether it holds text a wrong decoding produces (see ``_IMPLAUSIBLE``).

    One regular-expression pass over all texts joined, at C speed; only when it finds
    something are the texts looked at one by one.
    """
    joined = "\x00".join(texts)
    if not _IMPLAUSIBLE.search(joined) and not _LONE_CJK.search(joined):
        return [False] * len(texts)
    return [_implausible(text) for text in texts]


_MARKUP_START = re.compile(r"\s*<(!doctype\s+html|html|head|body|\?xml|!--|svg|rss)\b", re.I)


def _markup_kind(text: str) -> str | None:
    """What a file that starts like a web page or an XML document is, or None."""
    match = _MARKUP_START.match(text.lstrip("\ufeff")[:1024])
    if not match:
        return None
    if match.group(1).lower() in ("?xml", "svg", "rss"):
        return (
            "an XML document, not delimited text or JSON Lines. Export the table as CSV and "
            "upload that"
        )
    return (
        "an HTML page (a web page or a download that returned one), not delimited text or JSON "
        "Lines. Save the table itself as CSV and upload that"
    )


def _binary_kind(sample: bytes) -> str | None:
    for signature, kind in BINARY_SIGNATURES:
        if sample.startswith(signature):
            return kind
    return None


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _sniff_delimiter(lines: list[str], quotechar: str = '"') -> str:
    """The delimiter that splits the first lines into the most consistent number of fields.

    csv.Sniffer is fooled by quotes next to ';' or '|' inside texts; counting fields per line
    with a real CSV parser for each candidate is not.
    """
    sample = lines[:50]
    best, best_score = ",", (-1.0, 0)
    for candidate in (",", ";", "\t", "|"):
        if candidate == quotechar:
            continue
        try:
            counts = [len(row) for row in csv.reader(sample, **_csv_quoting(candidate, quotechar))]
        except csv.Error:
            continue
        if not counts:
            continue
        mode = max(set(counts), key=counts.count)
        if mode < 2:
            continue
        consistency = counts.count(mode) / len(counts)
        header_agrees = 1.0 if counts[0] == mode else 0.0
        score = (consistency + header_agrees, mode)
        if score > best_score:
            best, best_score = candidate, score
    return best


def _csv_quoting(delimiter: str, quotechar: str) -> dict:
    """Keyword arguments for csv.reader that read with ``quotechar`` ("" means no quoting)."""
    if quotechar:
        return {"delimiter": delimiter, "quotechar": quotechar}
    return {"delimiter": delimiter, "quoting": csv.QUOTE_NONE}


def _detect_quotechar(text: str, delimiter: str) -> str:
    """Double quotes, single quotes or none: which one encloses whole values in ``text``.

    A value that starts with a quote and whose closing quote ends the value counts for that
    quote; one whose closing quote is followed by more text (``"Refund" please``) counts
    against quoting. Without evidence the CSV standard, double quotes, wins.
    """
    counts = {quote: _quote_counts(text, delimiter, quote) for quote in ('"', "'")}
    closed_double, stray_double = counts['"']
    closed_single, stray_single = counts["'"]
    if closed_double and closed_double >= stray_double:
        return '"'
    if closed_single >= 2 and closed_single > stray_single and delimiter != "'":
        return "'"
    if stray_double >= 2 and stray_double > closed_double:
        return ""
    return '"'


def _quote_counts(text: str, delimiter: str, quote: str) -> tuple[int, int]:
    d, q = re.escape(delimiter), re.escape(quote)
    start = rf"(?:\A|(?<=[\r\n])|{d})[ ]*{q}"
    closed = re.findall(rf"{start}(?:[^{q}]|{q}{q})*{q}[ ]*(?={d}|[\r\n]|\Z)", text)
    stray = re.findall(rf"{start}[^{q}\r\n]+{q}(?=[ ]*[^{d}{q}\r\n ])", text)
    return len(closed), len(stray)


_NUMBER = re.compile(r"[+-]?(?:\d[\d ,.']*|[.,]\d+)(?:[eE][+-]?\d+)?%?")


def _looks_like_header(frame: pd.DataFrame) -> bool:
    """Whether the first parsed row names the columns rather than holding values.

    csv.Sniffer().has_header decides by columns whose values all have one type or one length;
    texts and labels vary in length, so it says "no" for most text datasets. These rules look
    for evidence that the first row is data instead: a number, a value too long or spanning
    lines to be a name, or a value that comes back in its column further down (labels repeat,
    header names do not). Without such evidence the first row is a header, as in most exports.
    """
    if frame.shape[0] < 2:
        return True
    first = [_cell(v).strip() for v in frame.iloc[0].tolist()]
    rest = frame.iloc[1:]
    # A copy of the header further down (files joined together) is not data repeating.
    different = rest[[[_cell(v).strip() for v in row] != first for row in rest.values.tolist()]]
    for position, name in enumerate(first):
        if not name:
            continue
        if _NUMBER.fullmatch(name):
            return False
        if len(name) > HEADER_NAME_MAX_CHARS or "\n" in name or "\r" in name:
            return False
        if name in {_cell(v).strip() for v in different.iloc[:, position].tolist()}:
            return False
    return True


def _cell(value) -> str:
    return value if isinstance(value, str) else ""


def _clean_header(names: list[str]) -> list[str]:
    cleaned = []
    for index, name in enumerate(names, start=1):
        # Stray whitespace and BOMs around header names are the classic spreadsheet export bug.
        value = str(name).replace("\ufeff", "").strip()
        cleaned.append(value or f"column_{index}")
    seen: dict[str, int] = {}
    for index, name in enumerate(cleaned, start=1):
        if name in seen:
            raise ImportProblem(
                f"Columns {seen[name]} and {index} are both named '{name}'. "
                "Rename one of them and upload the file again.",
                line=1,
                column=name,
            )
        seen[name] = index
    return cleaned


def _human_size(size: int) -> str:
    if size >= 1024**2:
        return f"{size / 1024**2:.1f} MB".replace(".0 ", " ")
    if size >= 1024:
        return f"{size / 1024:.1f} KB".replace(".0 ", " ")
    return f"{size} bytes"


def _line_too_long(limit: int, line: int | None = None) -> ImportProblem:
    where = f"Line {line:,}" if line else "A line"
    return ImportProblem(
        f"{where} is longer than {_human_size(limit)}, the most one line may hold, so this is "
        "not a table with one record per line. Check the delimiter and the line endings.",
        line=line,
    )


def _too_large_uncompressed(limit: int) -> ImportProblem:
    return ImportProblem(
        f"Decompressed, the file is larger than {_human_size(limit)}, the most an import reads "
        "from a compressed file. Split it into smaller files."
    )


def _decompressed_size(path: Path, size: int, sample_len: int) -> int:
    """The size of a gzip file once decompressed, for estimates.

    The last 4 bytes hold it (modulo 4 GB) for a single-member archive; when they cannot be
    right, scale the sample by the compression ratio seen while reading it.
    """
    with path.open("rb") as raw:
        raw.seek(max(0, size - 4))
        trailer = raw.read(4)
        stored = int.from_bytes(trailer, "little") if len(trailer) == 4 else 0
        if sample_len <= stored <= size * 1100:  # deflate shrinks 1032:1 at most
            return stored
        raw.seek(0)
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip header and trailer
        produced = consumed = 0
        try:
            while produced < sample_len:
                block = raw.read(1024)
                if not block:
                    break
                produced += len(inflater.decompress(block))
                consumed += len(block)
        except zlib_error:
            pass
    return int(size * (produced or sample_len) / max(1, consumed))


def _estimate_rows(
    records: int, *, parsed_bytes: int, total_bytes: int, complete: bool, header: bool
) -> int:
    """Rows in the file: exact for a file read whole, else records per byte of the sample.

    Records, not lines: a value with line breaks inside quotes is one row.
    """
    rows = records - (1 if header else 0)
    if complete:
        return max(0, rows)
    estimated = round(records * total_bytes / max(1, parsed_bytes)) - (1 if header else 0)
    return max(rows, estimated)


def _count_records(text: str, delimiter: str, quotechar: str) -> int:
    """Non-blank records in ``text``, whose last record is complete."""
    count = 0
    reader = csv.reader(io.StringIO(text, newline=""), **_csv_quoting(delimiter, quotechar))
    try:
        for row in reader:
            if row and not (len(row) == 1 and not row[0].strip()):
                count += 1
    except csv.Error:
        # An unclosed quote or an over-long value: the lines read so far still count.
        count = max(count, 1)
    return count


def detect(
    path: Path,
    *,
    filename: str = "",
    limits: Limits | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    quoting: str | None = None,
    has_header: bool | None = None,
) -> Detection:
    """Look at the start of the file and work out how to read it. Overrides win.

    ``quoting`` is a key of ``QUOTING`` ("double", "single", "none"); None detects it.
    """
    limits = limits or Limits()
    errors = override_errors(encoding=encoding, delimiter=delimiter, quoting=quoting)
    if errors:
        field_name, message = next(iter(errors.items()))
        raise ImportProblem(message, column=field_name)
    size = path.stat().st_size
    if size == 0:
        raise ImportProblem("The file is empty.")
    sample, compression, complete = read_sample(path, max_line_bytes=limits.max_line_bytes)
    if not sample.strip():
        raise ImportProblem("The file is empty.")
    kind = _binary_kind(sample)
    if kind:
        raise ImportProblem(f"This file is {kind}.")
    if not complete and _line_breaks(sample) == 0:
        # Read up to the line limit without finding a line break.
        raise _line_too_long(limits.max_line_bytes, 1)
    if not encoding:
        encoding = _detect_file_encoding(path, sample, complete=complete)
    try:
        text = sample.decode(encoding, errors="strict" if complete else "ignore")
    except UnicodeDecodeError as exc:
        line = sample[: exc.start].count(b"\n") + 1
        raise ImportProblem(
            f"Line {line} has bytes that are not valid {encoding} (byte 0x{sample[exc.start]:02x}). "
            "Choose the file's real encoding (for Excel exports often cp1252) and retry.",
            line=line,
        ) from None
    except UnicodeError as exc:
        raise ImportProblem(
            f"The file cannot be read as {encoding} ({exc}). Choose the file's real encoding."
        ) from None
    text = text.lstrip("\ufeff")
    nul = text.find("\x00")
    if nul >= 0:
        raise ImportProblem(
            f"Line {_line_of(text, nul)} contains a NUL byte (0x00), which text files never hold. "
            "The file may be binary or UTF-16 without a byte-order mark; save it as CSV UTF-8.",
            line=_line_of(text, nul),
        )
    markup = _markup_kind(text)
    if markup:
        raise ImportProblem(f"This file is {markup}.", line=1)
    if not re.search(r"[\r\n]", text.rstrip()) and len(sample) > HEADER_MAX_BYTES:
        raise ImportProblem(
            f"The file is one line of {_human_size(len(sample))} with no line break, so it holds "
            "no rows: this is not a table with one record per line. Check the delimiter and the "
            "line endings.",
            line=1,
        )
    # Lines in the sample are checked here, the rest of the file while it is read
    # (_LineLengthGuard).
    if limits.max_line_bytes < len(sample):
        for number, line in enumerate(re.split(r"\r\n|\r|\n", text), start=1):
            if len(line) * 4 > limits.max_line_bytes and (
                len(line.encode(encoding, "ignore")) > limits.max_line_bytes
            ):
                raise _line_too_long(limits.max_line_bytes, number)
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ImportProblem("The file is empty.")
    if not complete and len(lines) > 1:
        lines = lines[:-1]  # the last line of a partial sample may be cut short
    # The part of the sample that ends on a line break, so its last record is whole.
    whole = text if complete else text[: max(text.rfind("\n"), text.rfind("\r")) + 1] or text
    parsed_bytes = len(whole.encode(encoding, "ignore"))
    total_bytes = (
        size if complete or compression is None else _decompressed_size(path, size, len(sample))
    )

    lowered = filename.lower().removesuffix(".gz")
    looks_json = lines[0].lstrip().startswith("{")
    if lowered.endswith((".jsonl", ".ndjson")) or (
        looks_json and not lowered.endswith((".csv", ".tsv"))
    ):
        estimated = _estimate_rows(
            len(lines),
            parsed_bytes=parsed_bytes,
            total_bytes=total_bytes,
            complete=complete,
            header=False,
        )
        return _detect_jsonl(lines, encoding, compression, estimated, limits)

    given_quote = QUOTING[quoting] if quoting else None
    delimiter = delimiter or (
        "\t" if lowered.endswith(".tsv") else _sniff_delimiter(lines, given_quote or '"')
    )
    quotechar = (
        given_quote
        if given_quote is not None
        else _detect_quotechar(whole[:PLAUSIBILITY_CHARS], delimiter)
    )
    frame = _read_preview(whole, delimiter=delimiter, quotechar=quotechar)
    if has_header is None:
        has_header = _looks_like_header(frame)
    if frame.empty and not has_header:
        raise ImportProblem("The file has no rows.")
    if has_header:
        header = [str(v) for v in frame.iloc[0].tolist()] if not frame.empty else []
        columns = _clean_header(header)
        rows = frame.iloc[1:]
    else:
        columns = [f"column_{i}" for i in range(1, frame.shape[1] + 1)]
        rows = frame
    if len(columns) > limits.max_columns:
        raise ImportProblem(
            f"The file has {len(columns)} columns; the limit is {limits.max_columns}. "
            "Check the delimiter, or remove columns you do not need.",
            line=1,
        )
    if rows.empty and len(lines) > 1:
        raise _no_row_fits(whole, delimiter, quotechar, len(columns), has_header)
    if rows.empty:
        raise ImportProblem("The file has a header but no rows under it.", line=2)
    estimated = _estimate_rows(
        _count_records(whole, delimiter, quotechar),
        parsed_bytes=parsed_bytes,
        total_bytes=total_bytes,
        complete=complete,
        header=has_header,
    )
    preview = rows.head(PREVIEW_ROWS).fillna("").astype(str).values.tolist()
    return Detection(
        format="delimited",
        encoding=encoding,
        compression=compression,
        delimiter=delimiter,
        quotechar=quotechar,
        has_header=has_header,
        columns=columns,
        estimated_rows=estimated,
        preview=preview,
    )


def _no_row_fits(
    text: str, delimiter: str, quotechar: str, columns: int, has_header: bool
) -> ImportProblem:
    """Detection found no row with the header's number of fields: list the lines (up to
    MAX_LENGTH_PROBLEMS - 1) and how many fields each has."""
    reader = csv.reader(io.StringIO(text, newline=""), **_csv_quoting(delimiter, quotechar))
    bad: list[tuple[int, int]] = []  # (line, fields)
    more = False
    start = 1
    try:
        for number, row in enumerate(reader):
            line, start = start, reader.line_num + 1
            if (number == 0 and has_header) or not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != columns:
                if len(bad) == MAX_LENGTH_PROBLEMS - 1:
                    more = True
                    break
                bad.append((line, len(row)))
    except csv.Error:
        pass
    by_count: dict[int, list[int]] = {}
    for line, fields in bad:
        by_count.setdefault(fields, []).append(line)
    parts = [
        f"{_line_list(numbers)} {'has' if len(numbers) == 1 else 'have'} {fields} "
        f"field{'s' if fields != 1 else ''}"
        for fields, numbers in by_count.items()
    ]
    listed = "; ".join(parts) + (" (and more)" if more else "")
    quotes = "single quotes" if quotechar == "'" else "double quotes"
    contain = "it or a line break" if any(fields < columns for _, fields in bad) else "it"
    return ImportProblem(
        f"None of the first rows has the {columns} fields the header has: {listed}. Check the "
        f"delimiter, or put values that contain {contain} in {quotes}.",
        line=bad[0][0] if bad else 2,
    )


def _line_list(numbers: list[int]) -> str:
    """'line 4', 'lines 2 to 5 and 9': runs of consecutive numbers shown as ranges."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    shown = [f"{run[0]}" if len(run) == 1 else f"{run[0]} to {run[-1]}" for run in runs]
    text = shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]
    return f"line {text}" if len(numbers) == 1 else f"lines {text}"


def _read_preview(text: str, *, delimiter: str, quotechar: str) -> pd.DataFrame:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pd.read_csv(
                io.StringIO(text, newline=""),  # "" keeps \r-only line ends as line ends
                sep=delimiter,
                header=None,
                dtype=str,
                keep_default_na=False,
                nrows=PREVIEW_ROWS + 1,
                on_bad_lines="skip",
                engine="python",
                quotechar=quotechar or '"',
                quoting=csv.QUOTE_MINIMAL if quotechar else csv.QUOTE_NONE,
            )
    except pd.errors.EmptyDataError:
        raise ImportProblem("The file is empty.") from None
    except (pd.errors.ParserError, csv.Error) as exc:
        raise ImportProblem(_parser_message(str(exc))) from None


def _json_text(value) -> str:
    """A JSON value as the text a user expects: strings as they are, the rest as JSON.

    Integers stay "1" (never "1.0"), objects and arrays become JSON, not Python's repr.
    """
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _json_label(value) -> str:
    """A JSON Lines label: a list of labels (["card", "urgent"]) becomes "card|urgent", as
    multi-label training and the labeling queue store several labels; anything else as
    ``_json_text``."""
    if isinstance(value, list) and all(
        isinstance(item, (str, int, float)) and not isinstance(item, bool) for item in value
    ):
        parts = [_json_text(item).strip() for item in value]
        return "|".join(part for part in parts if part)
    return _json_text(value)


def _detect_jsonl(lines, encoding, compression, estimated, limits) -> Detection:
    records, columns = [], []
    for number, line in enumerate(lines[: PREVIEW_ROWS + 1], start=1):
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ImportProblem(
                f"Line {number} is not valid JSON ({exc.msg}); JSON Lines files hold one object per line.",
                line=number,
            ) from None
        if not isinstance(value, dict):
            raise ImportProblem(
                f"Line {number} is not a JSON object; JSON Lines files hold one object per line.",
                line=number,
            )
        for key in value:
            if key not in columns:
                columns.append(key)
        records.append(value)
    if len(columns) > limits.max_columns:
        raise ImportProblem(
            f"The file has {len(columns)} fields; the limit is {limits.max_columns}."
        )
    preview = [[_json_text(r.get(c)) for c in columns] for r in records[:PREVIEW_ROWS]]
    return Detection(
        format="jsonl",
        encoding=encoding,
        compression=compression,
        delimiter="",
        quotechar="",
        has_header=True,
        columns=columns,
        estimated_rows=estimated,
        preview=preview,
    )


def suggest_mapping(columns: list[str]) -> ColumnMapping:
    """A first guess the user can change: common names for text, label, split and id."""
    lowered = {c.lower(): c for c in columns}

    def pick(*names: str) -> str | None:
        return next((lowered[n] for n in names if n in lowered), None)

    text = pick("text", "sentence", "content", "body", "review", "message", "question", "utterance")
    label = pick("label", "labels", "category", "class", "intent", "sentiment", "target")
    split = pick("split", "subset", "fold")
    id_column = pick("id", "uid", "uuid", "record_id")
    if text is None:  # the first column no other role took (a column has one role)
        others = {label, split, id_column}
        text = next((c for c in columns if c not in others), columns[0])
    return ColumnMapping(
        text_columns=[text],
        label_column=label if label != text else None,
        split_column=split if split != text else None,
        id_column=id_column if id_column != text else None,
    )


# --- streaming parse ----------------------------------------------------------------------------
@dataclass
class ParsedChunk:
    frame: pd.DataFrame  # source_row, text, label, split, external_id, metadata, flags
    problems: list[ImportProblem]
    wrong_encoding_rows: int = 0  # rows flagged WRONG_ENCODING_FLAG


_BAD_LINE = re.compile(r"Skipping line (\d+): expected (\d+) fields?, saw (\d+)")
SOURCE_LINES = "source_lines"  # frame.attrs key: the file line of each JSON Lines row


def iter_records(
    path: Path,
    detection: Detection,
    mapping: ColumnMapping,
    *,
    limits: Limits | None = None,
    chunk_rows: int = 25_000,
) -> Iterator[ParsedChunk]:
    """Yield the file as record frames of ``chunk_rows`` rows, with the problems found in each."""
    limits = limits or Limits()
    mapping.validate(detection.columns)
    row_offset = 0
    reader = _open_reader(path, detection, chunk_rows, limits)
    lines = _LineFinder(path, detection)
    try:
        while True:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", pd.errors.ParserWarning)
                try:
                    raw = next(reader)
                except StopIteration:
                    return
                except UnicodeDecodeError as exc:
                    raise ImportProblem(
                        f"Part of the file is not valid {detection.encoding} (byte "
                        f"0x{exc.object[exc.start]:02x} somewhere in rows {row_offset + 1:,} to "
                        f"{row_offset + chunk_rows:,}). Choose the file's real encoding."
                    ) from None
                except pd.errors.ParserError as exc:
                    raise ImportProblem(_parser_message(str(exc))) from None
                except (EOFError, gzip.BadGzipFile, zlib_error) as exc:
                    raise ImportProblem(
                        f"The compressed file is cut short or damaged ({exc}). Compress it again "
                        "and upload it."
                    ) from None
                except (ValueError, TypeError) as exc:  # JSON Lines
                    raise ImportProblem(
                        f"A line after row {row_offset} is not valid JSON: {exc}. "
                        "JSON Lines files hold one object per line."
                    ) from None
            ragged = [
                tuple(int(g) for g in match.groups())
                for warning in caught
                for match in _BAD_LINE.finditer(str(warning.message))
            ]
            row_problems: list[tuple[int, str, str | None]] = []
            frame = _to_records(raw, detection, mapping, limits, row_offset, row_problems)
            problems = []
            # pandas pads a row with fewer fields than the header with empty values, so a row
            # whose last field is empty may be short: the csv module counts its fields.
            short_candidates = _short_row_candidates(raw, detection, row_offset)
            if ragged or row_problems or short_candidates:
                record_lines, row_lines, short_rows = lines.find(
                    records={record for record, _, _ in ragged},
                    rows={row for row, _, _ in row_problems},
                    known=raw.attrs.get(SOURCE_LINES),
                    row_offset=row_offset,
                    short_candidates=short_candidates,
                )
                quotes = "single quotes" if detection.quotechar == "'" else "double quotes"
                for record, expected, saw in ragged:
                    line = record_lines.get(record, record)
                    problems.append(
                        ImportProblem(
                            f"Line {line} has {saw} fields but the header has {expected}. "
                            f"A delimiter inside a value needs the value in {quotes}.",
                            line=line,
                        )
                    )
                expected = len(detection.columns)
                for line, saw in short_rows:
                    problems.append(
                        ImportProblem(
                            f"Line {line} has {saw} field{'s' if saw != 1 else ''} but the header "
                            f"has {expected}. A line break inside a value needs the value in "
                            f"{quotes}; otherwise add the missing fields (they may be empty).",
                            line=line,
                        )
                    )
                for row, rest, column in row_problems:
                    line = row_lines.get(row)
                    where = f"Line {line}" if line else f"Row {row}"
                    problems.append(ImportProblem(f"{where} {rest}", line=line, column=column))
                problems.sort(key=lambda problem: problem.line or 0)
            row_offset += len(raw)
            wrong = 0
            if checks_decoding(detection.encoding):
                wrong = int(frame["flags"].str.contains(WRONG_ENCODING_FLAG, regex=False).sum())
            yield ParsedChunk(frame=frame, problems=problems, wrong_encoding_rows=wrong)
    finally:
        lines.close()
        close = getattr(reader, "close", None)
        if close:
            close()


def _short_row_candidates(raw: pd.DataFrame, detection: Detection, row_offset: int) -> set[int]:
    """Rows (source_row numbers) of a delimited chunk whose last field is empty: the only ones
    that can have had fewer fields than the header."""
    if detection.format != "delimited" or len(detection.columns) < 2:
        return set()
    last = raw.iloc[:, len(detection.columns) - 1].to_numpy(dtype=object)
    empty = (last == "").nonzero()[0]
    return {row_offset + int(index) + 1 for index in empty}


class _LineFinder:
    """The file line where a record starts, found by one forward pass over the file.

    pandas numbers records (header = 1), and rows are counted after the header; both differ
    from line numbers after values with quoted line breaks. Only asked when a chunk has
    problems, and each question lies past the previous ones, so the file is read at most once
    more, and only as far as the last problem.
    """

    def __init__(self, path: Path, detection: Detection):
        self._path, self._detection = path, detection
        self._files: list = []
        self._reader = None
        self._record = 0  # records read, header included
        self._row = 0  # data rows read: what pandas keeps (not blank, not too many fields)
        self._line = 0  # the line the last record read ended on
        self._broken = False

    def find(
        self,
        *,
        records: set[int],
        rows: set[int],
        known: list[int] | None,
        row_offset: int,
        short_candidates: set[int] | frozenset[int] = frozenset(),
    ) -> tuple[dict[int, int], dict[int, int], list[tuple[int, int]]]:
        """Lines of pandas ``records`` and of data ``rows`` (source_row numbers), and (line,
        fields) of the ``short_candidates`` rows that have fewer fields than the header."""
        if known is not None:  # JSON Lines: the reader kept each row's line
            return {}, {row: known[row - row_offset - 1] for row in rows}, []
        found_records: dict[int, int] = {}
        found_rows: dict[int, int] = {}
        short: list[tuple[int, int]] = []
        if self._broken:
            return found_records, found_rows, short
        last_row = max(max(rows, default=0), max(short_candidates, default=0))
        last_record = max(records, default=0)
        columns = len(self._detection.columns)
        try:
            reader = self._open()
            while self._record < last_record or self._row < last_row:
                row = next(reader, None)
                if row is None:
                    break
                self._record += 1
                start, self._line = self._line + 1, reader.line_num
                if self._record in records:
                    found_records[self._record] = start
                header = self._detection.has_header and self._record == 1
                blank = not row or (len(row) == 1 and not row[0].strip())
                if not header and not blank and len(row) <= columns:
                    self._row += 1
                    if self._row in rows:
                        found_rows[self._row] = start
                    if len(row) < columns and self._row in short_candidates:
                        short.append((start, len(row)))
        except (csv.Error, UnicodeError, OSError, EOFError, zlib_error):
            # Keep pandas' numbers (or none) past a line the csv module cannot read.
            self._broken = True
        return found_records, found_rows, short

    def _open(self):
        if self._reader is None:
            raw = open_bytes(self._path)
            text = io.TextIOWrapper(
                raw, encoding=self._detection.encoding, errors="replace", newline=""
            )
            self._files = [text, raw]
            quoting = _csv_quoting(self._detection.delimiter, self._detection.quotechar)
            self._reader = csv.reader(text, **quoting)
        return self._reader

    def close(self) -> None:
        for file in self._files:
            file.close()
        self._files = []


class _LineLengthGuard(io.RawIOBase):
    """Passes bytes through and stops a line longer than ``max_line_bytes``.

    Without it the parser would hold a whole giant line (a file with no line breaks, or the
    wrong ones) in memory before finding anything wrong. A 0x0A byte inside a UTF-16
    character can only make lines look shorter, never longer.
    """

    def __init__(self, raw, *, max_line_bytes: int, max_total_bytes: int | None = None):
        super().__init__()
        self._raw, self._limit = raw, max_line_bytes
        self._total_limit, self._total = max_total_bytes, 0
        self._run = 0  # bytes since the last line break
        self._line = 1  # the line the next byte belongs to

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._raw.read(len(buffer))
        self._total += len(data)
        if self._total_limit is not None and self._total > self._total_limit:
            raise _too_large_uncompressed(self._total_limit)
        self._check(data)
        buffer[: len(data)] = data
        return len(data)

    def _check(self, data: bytes) -> None:
        if not data:
            return
        last = max(data.rfind(b"\n"), data.rfind(b"\r"))
        if last < 0:
            self._run += len(data)
            if self._run > self._limit:
                raise _line_too_long(self._limit, self._line)
            return
        first = min(i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0)
        if self._run + first > self._limit:
            raise _line_too_long(self._limit, self._line)
        if len(data) > self._limit:  # a whole long line may sit inside this block
            for match in re.finditer(rb"[^\r\n]+", data[first:last]):
                if match.end() - match.start() > self._limit:
                    before = data[: first + match.start()]
                    raise _line_too_long(
                        self._limit, self._line + (before.count(b"\n") or before.count(b"\r"))
                    )
        self._line += data.count(b"\n") or data.count(b"\r")
        self._run = len(data) - last - 1
        if self._run > self._limit:
            raise _line_too_long(self._limit, self._line)

    def close(self) -> None:
        self._raw.close()
        super().close()


def _guarded_bytes(path: Path, limits: Limits) -> io.BufferedReader:
    raw = open_bytes(path)
    compressed = isinstance(raw, gzip.GzipFile)
    guard = _LineLengthGuard(
        raw,
        max_line_bytes=limits.max_line_bytes,
        max_total_bytes=limits.max_uncompressed_bytes if compressed else None,
    )
    return io.BufferedReader(guard, buffer_size=256 * 1024)


def _parser_message(text: str) -> str:
    if "EOF inside" in text or "unexpected end of data" in text:
        line = re.search(r"(?:line|row) (\d+)", text)
        where = f" starting on line {line.group(1)}" if line else ""
        return (
            f"A quoted value{where} is never closed, so the rest of the file would be one value. "
            "Check for a stray double quote."
        )
    if "Buffer overflow" in text or "out of memory" in text.lower():
        return "A line of the file is too long to read. Check the delimiter and the line endings."
    return f"The file could not be read as delimited text: {text}"


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _jsonl_frame(rows: list[dict], lines: list[int], columns: list[str]) -> pd.DataFrame:
    # Column by column as objects: a DataFrame built from records makes an integer field
    # with a missing value float (1 -> 1.0) and would lose which values were integers.
    frame = pd.DataFrame(
        {column: pd.Series([row.get(column) for row in rows], dtype=object) for column in columns}
    )
    frame.attrs[SOURCE_LINES] = lines
    return frame


def _jsonl_chunks(
    path: Path, detection: Detection, chunk_rows: int, limits: Limits
) -> Iterator[pd.DataFrame]:
    """JSON Lines one line at a time, so a bad line is named by its number."""
    with (
        _guarded_bytes(path, limits) as raw,
        io.TextIOWrapper(raw, encoding=detection.encoding, newline=None) as text,
    ):
        rows: list[dict] = []
        lines: list[int] = []
        for number, line in enumerate(text, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ImportProblem(
                    f"Line {number} is not valid JSON ({exc.msg}); JSON Lines files hold one "
                    "object per line.",
                    line=number,
                ) from None
            if not isinstance(value, dict):
                raise ImportProblem(
                    f"Line {number} is not a JSON object; JSON Lines files hold one object per line.",
                    line=number,
                )
            if _SURROGATE_ESCAPE.search(line):
                try:  # a \ud83d escape without its partner decodes to no character at all
                    json.dumps(value, ensure_ascii=False).encode("utf-8")
                except UnicodeEncodeError:
                    raise ImportProblem(
                        f"Line {number} has a \\u escape of half a character (a lone UTF-16 "
                        "surrogate such as \\ud83d), which is not text. Write the character "
                        "itself, or both halves of its escape.",
                        line=number,
                    ) from None
            rows.append(value)
            lines.append(number)
            if len(rows) == chunk_rows:
                yield _jsonl_frame(rows, lines, detection.columns)
                rows, lines = [], []
        if rows:
            yield _jsonl_frame(rows, lines, detection.columns)


def _delimited_chunks(
    path: Path, detection: Detection, chunk_rows: int, limits: Limits
) -> Iterator[pd.DataFrame]:
    with (
        _guarded_bytes(path, limits) as raw,
        pd.read_csv(
            raw,
            sep=detection.delimiter,
            quotechar=detection.quotechar or '"',
            quoting=csv.QUOTE_MINIMAL if detection.quotechar else csv.QUOTE_NONE,
            header=None,
            skiprows=1 if detection.has_header else 0,
            names=detection.columns,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            encoding=detection.encoding,
            encoding_errors="strict",
            compression=None,  # open_bytes has already decompressed it
            on_bad_lines="warn",
            engine="c",
            chunksize=chunk_rows,
            skip_blank_lines=True,
        ) as reader,
    ):
        yield from reader


def _open_reader(path: Path, detection: Detection, chunk_rows: int, limits: Limits):
    if detection.format == "jsonl":
        return _jsonl_chunks(path, detection, chunk_rows, limits)
    return _delimited_chunks(path, detection, chunk_rows, limits)


def _holds_text(series: pd.Series) -> bool:
    return series.dtype == object or str(series.dtype).startswith(("str", "string"))


def _as_text(series: pd.Series, *, json_values: bool = False) -> pd.Series:
    if json_values:  # JSON Lines: numbers, booleans, objects and arrays become JSON text
        return series.map(_json_text).astype(object)
    if _holds_text(series):
        return series.fillna("").astype(str)
    return series.astype(str).where(series.notna(), "")


def _without_nul(series: pd.Series) -> pd.Series:
    """Drop NUL characters, which PostgreSQL text cannot hold (looked for in one pass first:
    files almost never have them)."""
    if _holds_text(series):
        values = series.tolist()
        try:
            joined = "".join(values)  # all text: the usual case, at C speed
        except TypeError:  # missing values among them
            joined = "".join(v for v in values if isinstance(v, str))
        if "\x00" in joined:
            return series.map(lambda v: v.replace("\x00", "") if isinstance(v, str) else v)
    return series


def _stripped(series: pd.Series) -> pd.Series:
    """``series.str.strip()`` for a column of text (from ``_as_text``), without pandas'
    per-value wrapper: about three times faster on a million values."""
    return pd.Series([value.strip() for value in series.tolist()], index=series.index, dtype=object)


def _to_records(
    raw: pd.DataFrame,
    detection: Detection,
    mapping: ColumnMapping,
    limits: Limits,
    row_offset: int,
    row_problems: list[tuple[int, str, str | None]],
) -> pd.DataFrame:
    """Records of one chunk; problems of single rows go to ``row_problems`` as
    (source_row, the message after "Row N"/"Line N", column), for the caller to place."""
    raw = raw.reset_index(drop=True)
    json_values = detection.format == "jsonl"
    for column in detection.columns:
        if column not in raw.columns:
            raw[column] = ""
        else:
            raw[column] = _without_nul(raw[column])
    text_parts = [_as_text(raw[c], json_values=json_values) for c in mapping.text_columns]
    text = text_parts[0]
    for part in text_parts[1:]:
        text = text.str.cat(part, sep=mapping.text_separator)
    too_long = text.str.len() > limits.max_text_chars
    if too_long.any():
        text = text.where(~too_long, text.str.slice(0, limits.max_text_chars))
    out = pd.DataFrame(
        {
            "source_row": range(row_offset + 1, row_offset + len(raw) + 1),
            "text": text,
            "label": _stripped(
                raw[mapping.label_column].map(_json_label).astype(object)
                if json_values
                else _as_text(raw[mapping.label_column])
            )
            if mapping.label_column
            else "",
            "split": "",
            "external_id": _stripped(_as_text(raw[mapping.id_column], json_values=json_values))
            if mapping.id_column
            else "",
        }
    )
    for column, limit, noun in (
        ("label", MAX_LABEL_CHARS, "label"),
        ("external_id", MAX_ID_CHARS, "id"),
    ):
        lengths = out[column].str.len() if not isinstance(out[column], str) else None
        if lengths is None:
            continue
        for index in lengths[lengths > limit].index[:MAX_LENGTH_PROBLEMS]:
            row_problems.append(
                (
                    row_offset + index + 1,
                    f"has a {noun} of {lengths[index]:,} characters; "
                    f"{noun}s can be at most {limit}. Shorten it or map another column.",
                    mapping.label_column if noun == "label" else mapping.id_column,
                )
            )
    if mapping.split_column:
        given = _as_text(raw[mapping.split_column], json_values=json_values).str.strip().str.lower()
        normalised = given.map(SPLIT_ALIASES)
        unknown = normalised.isna()
        for index in unknown[unknown].index[:MAX_LENGTH_PROBLEMS]:
            row_problems.append(
                (
                    row_offset + index + 1,
                    f"has split '{given[index]}'. Use train, validation or test, or leave it empty.",
                    mapping.split_column,
                )
            )
        out["split"] = normalised.fillna("")
    mapped = set(mapping.text_columns) | {
        mapping.label_column,
        mapping.split_column,
        mapping.id_column,
    }
    extra = [c for c in detection.columns if c not in mapped]
    # JSON Lines rows may lack a field (NaN): store null, which JSON columns accept. Their
    # values stay JSON (numbers, objects, arrays) in metadata; CSV values are text.
    if extra:
        values = raw[extra].astype(object)
        values = values.where(values.notna(), None)
        out["metadata"] = [
            json.dumps(row, ensure_ascii=False, default=str) for row in values.to_dict("records")
        ]
    else:
        out["metadata"] = "{}"
    texts = text.tolist()
    empty = pd.Series([not value or value.isspace() for value in texts], index=text.index)
    out["flags"] = ""
    out.loc[too_long, "flags"] = ",truncated,"
    out.loc[empty, "flags"] = ",empty,"
    if checks_decoding(detection.encoding):
        # Rows that decode to text nobody writes: the encoding is wrong for them (or the file
        # mixes encodings). Kept, but flagged so the records page can list them.
        wrong = implausible_texts(texts)
        if any(wrong):
            flags = out["flags"].tolist()
            out["flags"] = [
                (flag or ",") + f"{WRONG_ENCODING_FLAG}," if is_wrong else flag
                for flag, is_wrong in zip(flags, wrong, strict=True)
            ]
    return out


def checks_decoding(encoding: str) -> bool:
    """Whether rows read with ``encoding`` are checked for implausible text: any encoding but
    UTF-8 and UTF-16, whose valid byte sequences are never another encoding's text."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        return True
    return not name.startswith("utf")
