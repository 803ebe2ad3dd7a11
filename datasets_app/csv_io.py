"""Reading uploaded text files: detection, preview and streaming parse. No Django, no database.

Everything a user sends is treated as hostile: binary files, undecodable bytes, ragged rows,
duplicate headers, NUL bytes and giant lines each end in one plain sentence (``ImportProblem``)
instead of a traceback. Parsing streams in chunks through pandas' C parser, so memory stays
bounded whatever the size of the file.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from zlib import error as zlib_error

import charset_normalizer
import pandas as pd

SAMPLE_BYTES = 256 * 1024
MAX_LABEL_CHARS = 500  # Record.label
MAX_ID_CHARS = 255  # Record.external_id
MAX_LENGTH_PROBLEMS = 20
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
SINGLE_BYTE_LATIN = {
    "cp1250",
    "cp1252",
    "cp1254",
    "cp1257",
    "latin_1",
    "iso8859_1",
    "iso8859_2",
    "iso8859_9",
    "iso8859_15",
    "mac_roman",
    "mac_latin2",
    "cp850",
    "cp437",
}
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


@dataclass
class Limits:
    max_file_bytes: int = 2 * 1024**3
    max_columns: int = 200
    max_text_chars: int = 20_000
    max_line_bytes: int = 10 * 1024**2


# --- opening ---------------------------------------------------------------------------------
def _is_gzip(head: bytes) -> bool:
    return head[:2] == b"\x1f\x8b"


def open_bytes(path: Path) -> io.BufferedIOBase:
    with path.open("rb") as probe:
        head = probe.read(2)
    return gzip.open(path, "rb") if _is_gzip(head) else path.open("rb")


def read_sample(path: Path) -> tuple[bytes, str | None]:
    with path.open("rb") as probe:
        compression = "gzip" if _is_gzip(probe.read(2)) else None
    try:
        with open_bytes(path) as stream:
            return stream.read(SAMPLE_BYTES), compression
    except (OSError, EOFError) as exc:
        raise ImportProblem(f"The file is a damaged gzip archive: {exc}.") from None


# --- detection -------------------------------------------------------------------------------
def detect_encoding(sample: bytes, *, complete: bool) -> str:
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
        _raise_if_mostly_utf8(sample, exc)
    best = charset_normalizer.from_bytes(sample).best()
    if best is None:
        raise ImportProblem(
            "Could not tell which text encoding this file uses; it may not be text at all. "
            "Save it as CSV UTF-8 and upload it again, or choose the encoding yourself."
        )
    name = codecs.lookup(best.encoding).name.replace("-", "_")
    if name in SINGLE_BYTE_LATIN:
        # Short Western texts fit several Latin code pages equally well; Excel on Windows
        # writes cp1252, by far the most common, so it wins whenever it decodes cleanly.
        try:
            sample.decode("cp1252")
            return "cp1252"
        except UnicodeDecodeError:
            pass
    return ENCODING_ALIASES.get(name, best.encoding)


_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xf4][\x80-\xbf]+")


def _raise_if_mostly_utf8(sample: bytes, error: UnicodeDecodeError) -> None:
    """A UTF-8 file with a few stray bytes is a damaged UTF-8 file, not a cp1252 one.

    Guessing another encoding would import every accented letter as mojibake, so name the line.
    """
    decoded = sample.decode("utf-8", errors="replace")
    bad = decoded.count("\ufffd")
    good = sum(1 for ch in decoded if ord(ch) > 127 and ch != "\ufffd")
    if good >= 3 and bad * 20 <= good and _UTF8_MULTIBYTE.search(sample):
        line = sample[: error.start].count(b"\n") + 1
        raise ImportProblem(
            f"Line {line} has a byte that is not valid UTF-8 (0x{sample[error.start]:02x}), "
            "while the rest of the file is UTF-8. Fix or remove that line, or choose the "
            "encoding yourself if the file is not UTF-8.",
            line=line,
        )


def _binary_kind(sample: bytes) -> str | None:
    for signature, kind in BINARY_SIGNATURES:
        if sample.startswith(signature):
            return kind
    return None


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _sniff_delimiter(lines: list[str]) -> str:
    """The delimiter that splits the first lines into the most consistent number of fields.

    csv.Sniffer is fooled by quotes next to ';' or '|' inside texts; counting fields per line
    with a real CSV parser for each candidate is not.
    """
    sample = lines[:50]
    best, best_score = ",", (-1.0, 0)
    for candidate in (",", ";", "\t", "|"):
        try:
            counts = [len(row) for row in csv.reader(sample, delimiter=candidate)]
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


def detect(
    path: Path,
    *,
    filename: str = "",
    limits: Limits | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    has_header: bool | None = None,
) -> Detection:
    """Look at the start of the file and work out how to read it. Overrides win."""
    limits = limits or Limits()
    size = path.stat().st_size
    if size == 0:
        raise ImportProblem("The file is empty.")
    sample, compression = read_sample(path)
    complete = len(sample) < SAMPLE_BYTES
    if not sample.strip():
        raise ImportProblem("The file is empty.")
    kind = _binary_kind(sample)
    if kind:
        raise ImportProblem(f"This file is {kind}.")
    if encoding:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ImportProblem(f"'{encoding}' is not a text encoding Python knows.") from None
    else:
        encoding = detect_encoding(sample, complete=complete)
    try:
        text = sample.decode(encoding, errors="strict" if complete else "ignore")
    except UnicodeDecodeError as exc:
        line = sample[: exc.start].count(b"\n") + 1
        raise ImportProblem(
            f"Line {line} has bytes that are not valid {encoding} (byte 0x{sample[exc.start]:02x}). "
            "Choose the file's real encoding (for Excel exports often cp1252) and retry.",
            line=line,
        ) from None
    text = text.lstrip("\ufeff")
    nul = text.find("\x00")
    if nul >= 0:
        raise ImportProblem(
            f"Line {_line_of(text, nul)} contains a NUL byte (0x00), which text files never hold. "
            "The file may be binary or UTF-16 without a byte-order mark; save it as CSV UTF-8.",
            line=_line_of(text, nul),
        )
    line_break = re.search(r"[\r\n]", text)
    first_break = line_break.start() if line_break else -1
    if first_break < 0 and not complete:
        raise ImportProblem(
            f"The first {SAMPLE_BYTES // 1024} KB of the file hold no line break, so this is not "
            "a table with one record per line. Check the delimiter and the line endings.",
            line=1,
        )
    if first_break > limits.max_line_bytes:
        raise ImportProblem(
            f"The first line is longer than {limits.max_line_bytes // 1024**2} MB, so this is not "
            "a table with one record per line. Check the delimiter and line endings.",
            line=1,
        )
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ImportProblem("The file is empty.")
    if not complete and len(lines) > 1:
        lines = lines[:-1]  # the last line of a partial sample may be cut short

    lowered = filename.lower().removesuffix(".gz")
    looks_json = lines[0].lstrip().startswith("{")
    if lowered.endswith((".jsonl", ".ndjson")) or (
        looks_json and not lowered.endswith((".csv", ".tsv"))
    ):
        return _detect_jsonl(lines, encoding, compression, size, complete, len(sample), limits)

    delimiter = delimiter or ("\t" if lowered.endswith(".tsv") else _sniff_delimiter(lines))
    frame = _read_preview(text, delimiter=delimiter, complete=complete)
    if has_header is None:
        has_header = True
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
        raise ImportProblem(
            f"None of the first rows has the {len(columns)} fields the header has (line 2 has "
            f"{len(next(csv.reader([lines[1]], delimiter=delimiter)))}). Check the delimiter, or "
            "put values that contain it in double quotes.",
            line=2,
        )
    if rows.empty:
        raise ImportProblem("The file has a header but no rows under it.", line=2)
    data_bytes = len(sample) - (
        len(text.split("\n", 1)[0].encode(encoding, "ignore")) if has_header else 0
    )
    if complete and compression is None:
        estimated = len(lines) - (1 if has_header else 0)
    else:
        # Scale the sample's line count by the file size (gzip files: compressed size x ~3).
        rows_in_sample = max(1, len(lines) - (1 if has_header else 0))
        total_bytes = size * 3 if compression else size
        estimated = int(rows_in_sample * total_bytes / max(1, data_bytes))
    preview = rows.head(PREVIEW_ROWS).fillna("").astype(str).values.tolist()
    return Detection(
        format="delimited",
        encoding=encoding,
        compression=compression,
        delimiter=delimiter,
        quotechar='"',
        has_header=has_header,
        columns=columns,
        estimated_rows=estimated,
        preview=preview,
    )


def _read_preview(text: str, *, delimiter: str, complete: bool) -> pd.DataFrame:
    if not complete:
        text = text[: max(text.rfind("\n"), text.rfind("\r")) + 1] or text
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
                quotechar='"',
            )
    except pd.errors.EmptyDataError:
        raise ImportProblem("The file is empty.") from None
    except (pd.errors.ParserError, csv.Error) as exc:
        raise ImportProblem(_parser_message(str(exc))) from None


def _detect_jsonl(lines, encoding, compression, size, complete, sample_len, limits) -> Detection:
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
    preview = [
        ["" if r.get(c) is None else str(r.get(c)) for c in columns] for r in records[:PREVIEW_ROWS]
    ]
    estimated = (
        len(lines)
        if complete and compression is None
        else int(len(lines) * size / max(1, sample_len))
    )
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
    return ColumnMapping(
        text_columns=[text or columns[0]],
        label_column=pick("label", "labels", "category", "class", "intent", "sentiment", "target"),
        split_column=pick("split", "subset", "fold"),
        id_column=pick("id", "uid", "uuid", "record_id"),
    )


# --- streaming parse ----------------------------------------------------------------------------
@dataclass
class ParsedChunk:
    frame: pd.DataFrame  # source_row, text, label, split, external_id, metadata, flags
    problems: list[ImportProblem]


_BAD_LINE = re.compile(r"Skipping line (\d+): expected (\d+) fields?, saw (\d+)")


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
    reader = _open_reader(path, detection, chunk_rows)
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
        problems = []
        if ragged:
            lines = _physical_lines(path, detection, [record for record, _, _ in ragged])
            for record, expected, saw in ragged:
                line = lines.get(record, record)
                problems.append(
                    ImportProblem(
                        f"Line {line} has {saw} fields but the header has {expected}. "
                        "A delimiter inside a value needs the value in double quotes.",
                        line=line,
                    )
                )
        frame = _to_records(raw, detection, mapping, limits, row_offset, problems)
        row_offset += len(raw)
        yield ParsedChunk(frame=frame, problems=problems)


def _physical_lines(path: Path, detection: Detection, records: list[int]) -> dict[int, int]:
    """Map pandas' record numbers (header = 1) to the file's line numbers.

    They differ after values with quoted line breaks. Only called when rows are bad, so one
    pass with the csv module up to the last bad record is affordable.
    """
    wanted, found = set(records), {}
    last = max(wanted)
    with (
        open_bytes(path) as raw,
        io.TextIOWrapper(raw, encoding=detection.encoding, errors="replace", newline="") as text,
    ):
        reader = csv.reader(
            text, delimiter=detection.delimiter, quotechar=detection.quotechar or '"'
        )
        previous_line = 0
        try:
            for number, _row in enumerate(reader, start=1):
                if number in wanted:
                    found[number] = previous_line + 1
                if number >= last:
                    break
                previous_line = reader.line_num
        except csv.Error:
            pass  # keep pandas' numbers for anything past a line the csv module cannot read
    return found


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


def _jsonl_chunks(path: Path, detection: Detection, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """JSON Lines one line at a time, so a bad line is named by its number."""
    with (
        open_bytes(path) as raw,
        io.TextIOWrapper(raw, encoding=detection.encoding, newline=None) as text,
    ):
        rows: list[dict] = []
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
            if len(rows) == chunk_rows:
                yield pd.DataFrame.from_records(rows, columns=detection.columns)
                rows = []
        if rows:
            yield pd.DataFrame.from_records(rows, columns=detection.columns)


def _open_reader(path: Path, detection: Detection, chunk_rows: int):
    compression = detection.compression
    if detection.format == "jsonl":
        return _jsonl_chunks(path, detection, chunk_rows)
    return pd.read_csv(
        path,
        sep=detection.delimiter,
        quotechar=detection.quotechar or '"',
        header=None,
        skiprows=1 if detection.has_header else 0,
        names=detection.columns,
        dtype=str,
        keep_default_na=False,
        na_filter=False,
        encoding=detection.encoding,
        encoding_errors="strict",
        compression=compression,
        on_bad_lines="warn",
        engine="c",
        chunksize=chunk_rows,
        skip_blank_lines=True,
    )


def _holds_text(series: pd.Series) -> bool:
    return series.dtype == object or str(series.dtype).startswith(("str", "string"))


def _as_text(series: pd.Series) -> pd.Series:
    if _holds_text(series):
        return series.fillna("").astype(str)
    return series.astype(str).where(series.notna(), "")


def _without_nul(series: pd.Series) -> pd.Series:
    """Drop NUL characters, which PostgreSQL text cannot hold (looked for in one pass first:
    files almost never have them)."""
    if _holds_text(series):
        values = series.tolist()
        if "\x00" in "".join(v for v in values if isinstance(v, str)):
            return series.map(lambda v: v.replace("\x00", "") if isinstance(v, str) else v)
    return series


def _to_records(
    raw: pd.DataFrame,
    detection: Detection,
    mapping: ColumnMapping,
    limits: Limits,
    row_offset: int,
    problems: list[ImportProblem],
) -> pd.DataFrame:
    raw = raw.reset_index(drop=True)
    for column in detection.columns:
        if column not in raw.columns:
            raw[column] = ""
        else:
            raw[column] = _without_nul(raw[column])
    text_parts = [_as_text(raw[c]) for c in mapping.text_columns]
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
            "label": _as_text(raw[mapping.label_column]).str.strip()
            if mapping.label_column
            else "",
            "split": "",
            "external_id": _as_text(raw[mapping.id_column]).str.strip()
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
            problems.append(
                ImportProblem(
                    f"Row {row_offset + index + 1} has a {noun} of {lengths[index]:,} characters; "
                    f"{noun}s can be at most {limit}. Shorten it or map another column.",
                    column=mapping.label_column if noun == "label" else mapping.id_column,
                )
            )
    if mapping.split_column:
        given = _as_text(raw[mapping.split_column]).str.strip().str.lower()
        normalised = given.map(SPLIT_ALIASES)
        unknown = normalised.isna()
        for index in unknown[unknown].index[:20]:
            problems.append(
                ImportProblem(
                    f"Row {row_offset + index + 1} has split '{given[index]}'. Use train, "
                    "validation or test, or leave it empty.",
                    line=None,
                    column=mapping.split_column,
                )
            )
        out["split"] = normalised.fillna("")
    mapped = set(mapping.text_columns) | {
        mapping.label_column,
        mapping.split_column,
        mapping.id_column,
    }
    extra = [c for c in detection.columns if c not in mapped]
    # JSON Lines rows may lack a field (NaN): store null, which JSON columns accept.
    if extra:
        values = raw[extra].astype(object)
        values = values.where(values.notna(), None)
        out["metadata"] = [
            json.dumps(row, ensure_ascii=False, default=str) for row in values.to_dict("records")
        ]
    else:
        out["metadata"] = "{}"
    empty = text.str.strip() == ""
    out["flags"] = ""
    out.loc[too_long, "flags"] = ",truncated,"
    out.loc[empty, "flags"] = ",empty,"
    return out
