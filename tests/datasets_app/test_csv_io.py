"""Detection and streaming parse on small inline files (csv_io has no Django and no database)."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from datasets_app.csv_io import (
    ColumnMapping,
    Detection,
    ImportProblem,
    Limits,
    detect,
    iter_records,
    override_errors,
    suggest_mapping,
)

WESTERN = [
    ("Le café était très bon, mais la crème brûlée coûtait 12 €.", "avis"),
    ("Die Größe der Bestellung war falsch – bitte prüfen Sie das.", "reklamation"),
    ("El niño pidió una piña colada sin alcohol, ¿es posible?", "pregunta"),
    ("Naïve façade of the “smart” bank card™ — really?", "review"),
    ("Schöne Grüße aus München, Ihr Kundenservice.", "gruss"),
    ("Ça coûte combien, un virement vers l'Øresund?", "frais"),
]
SIMPLIFIED_CHINESE = [
    ("我想查询一下我的银行卡余额，为什么转账一直没有到账？", "转账"),
    ("今天的天气非常好，我们一起去公园散步吧。", "闲聊"),
    ("请问信用卡的还款日期是每个月的几号？", "信用卡"),
    ("我的手机丢了，需要冻结账户吗？", "挂失"),
    ("这家餐厅的服务态度很差，菜也不好吃。", "投诉"),
]
TRADITIONAL_CHINESE = [
    ("我想查詢一下我的銀行卡餘額，為什麼轉帳一直沒有到帳？", "轉帳"),
    ("今天的天氣非常好，我們一起去公園散步吧。", "閒聊"),
    ("請問信用卡的還款日期是每個月的幾號？", "信用卡"),
    ("我的手機丟了，需要凍結帳戶嗎？", "掛失"),
    ("這家餐廳的服務態度很差，菜也不好吃。", "投訴"),
]
JAPANESE = [
    ("銀行口座の残高を確認したいのですが、どうすればいいですか？", "残高"),
    ("今日はとても良い天気ですね。公園に散歩に行きましょう。", "雑談"),
    ("クレジットカードの支払い日は毎月何日ですか？", "カード"),
    ("携帯電話をなくしました。口座を凍結する必要がありますか？", "紛失"),
    ("このレストランのサービスはひどかったです。", "苦情"),
]


def csv_text(rows, *, header=("text", "label"), delimiter=",", newline="\n") -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=newline)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def read_all(
    path: Path, detection: Detection, mapping: ColumnMapping, limits: Limits | None = None
) -> pd.DataFrame:
    chunks = list(iter_records(path, detection, mapping, limits=limits, chunk_rows=3))
    assert [p.as_dict() for chunk in chunks for p in chunk.problems] == []
    return pd.concat([chunk.frame for chunk in chunks], ignore_index=True)


def pairs(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return list(zip(frame["text"], frame["label"], strict=True))


TEXT_AND_LABEL = ColumnMapping(text_columns=["text"], label_column="label")


# --- encodings ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("codec", "rows", "detected"),
    [
        pytest.param("utf-8", WESTERN, "utf-8", id="utf-8"),
        pytest.param("utf-8-sig", WESTERN, "utf-8-sig", id="utf-8-with-bom"),
        pytest.param("utf-16", WESTERN + JAPANESE, "utf-16", id="utf-16-with-bom"),
        pytest.param("gbk", SIMPLIFIED_CHINESE, "gb18030", id="gbk"),
        pytest.param("gb18030", SIMPLIFIED_CHINESE, "gb18030", id="gb18030"),
        pytest.param("big5", TRADITIONAL_CHINESE, "big5hkscs", id="big5"),
        pytest.param("shift_jis", JAPANESE, "cp932", id="shift-jis"),
        pytest.param("cp1252", WESTERN, "cp1252", id="cp1252"),
    ],
)
def test_detect_finds_encoding_and_import_decodes_texts_exactly(tmp_path, codec, rows, detected):
    path = write(tmp_path, "messages.csv", csv_text(rows).encode(codec))

    detection = detect(path, filename="messages.csv")

    assert detection.encoding == detected
    assert detection.format == "delimited"
    assert detection.delimiter == ","
    assert detection.columns == ["text", "label"]
    assert detection.preview == [list(row) for row in rows]
    assert pairs(read_all(path, detection, TEXT_AND_LABEL)) == rows


def test_detect_utf8_bom_does_not_leak_into_first_column_name(tmp_path):
    path = write(tmp_path, "bom.csv", codecs.BOM_UTF8 + b"text,label\nhello,greeting\n")

    detection = detect(path, filename="bom.csv")

    assert detection.columns == ["text", "label"]
    assert pairs(read_all(path, detection, TEXT_AND_LABEL)) == [("hello", "greeting")]


def test_detect_accepts_utf8_sample_cut_inside_a_character(tmp_path):
    # The 256 KB sample ends in the middle of a three-byte character: still UTF-8.
    row = "银行卡余额,balance\n".encode()
    body = b"text,label\n" + row * (256 * 1024 // len(row) + 10)
    path = write(tmp_path, "long.csv", body)

    detection = detect(path, filename="long.csv")

    assert detection.encoding == "utf-8"
    assert detection.columns == ["text", "label"]


def test_detect_rejects_unknown_encoding_override(tmp_path):
    path = write(tmp_path, "a.csv", b"text,label\nhello,greeting\n")

    with pytest.raises(ImportProblem) as caught:
        detect(path, filename="a.csv", encoding="klingon-8")

    assert caught.value.message == "'klingon-8' is not a text encoding Python knows."


# --- delimiters, quoting, headers --------------------------------------------------------------
@pytest.mark.parametrize(
    ("delimiter", "filename"),
    [
        pytest.param(",", "a.csv", id="comma"),
        pytest.param(";", "a.csv", id="semicolon"),
        pytest.param("\t", "a.txt", id="tab"),
        pytest.param("\t", "a.tsv", id="tab-by-extension"),
        pytest.param("|", "a.csv", id="pipe"),
    ],
)
def test_detect_finds_delimiter(tmp_path, delimiter, filename):
    rows = [
        ("Where is my card, and when does it arrive?", "card_arrival"),
        ("I paid twice; please refund one payment.", "double_charge"),
        ("Change my PIN", "change_pin"),
        ("Top up by bank transfer", "top_up"),
    ]
    path = write(tmp_path, filename, csv_text(rows, delimiter=delimiter).encode())

    detection = detect(path, filename=filename)

    assert detection.delimiter == delimiter
    assert detection.columns == ["text", "label"]
    assert pairs(read_all(path, detection, TEXT_AND_LABEL)) == rows


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param(
            [
                ('"Refund"\tplease, now', "refund"),
                ('"Card"\tblocked again', "card"),
                ("Where is my money?", "transfer"),
            ],
            id="quoted-word-then-tab-picks-tab",
        ),
        pytest.param([("Options 'a';'b'; ok", "choice")], id="single-quotes-pick-semicolon"),
        pytest.param(
            [("Hello", "greeting"), ('"Refund"\tplease', "refund")], id="csv-error-escapes"
        ),
    ],
)
def test_detect_keeps_comma_when_texts_hold_quotes_beside_other_delimiters(tmp_path, rows):
    path = write(tmp_path, "a.csv", csv_text(rows).encode())

    detection = detect(path, filename="a.csv")

    assert detection.delimiter == ","
    assert detection.columns == ["text", "label"]
    assert detection.preview == [list(row) for row in rows]


@pytest.mark.parametrize("line_break", ["\u2028", "\x0c"], ids=["line-separator", "form-feed"])
def test_detect_keeps_comma_when_text_holds_unicode_line_break_and_tabs(tmp_path, line_break):
    rows = [(f"Line one{line_break}line two\twith\ttabs\there", "x")]
    path = write(tmp_path, "a.csv", csv_text(rows).encode())

    detection = detect(path, filename="a.csv")

    assert detection.delimiter == ","
    assert detection.preview == [list(row) for row in rows]


def test_delimiter_override_wins_over_sniffing(tmp_path):
    path = write(tmp_path, "a.csv", b"text;label;x,y\na;b;1,2\nc;d;3,4\n")

    detection = detect(path, filename="a.csv", delimiter=",")

    assert detection.delimiter == ","
    assert detection.columns == ["text;label;x", "y"]
    assert detection.preview == [["a;b;1", "2"], ["c;d;3", "4"]]


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_quoted_line_breaks_stay_inside_one_text(tmp_path, newline):
    rows = [
        ("First line\nsecond line", "multi"),
        ("Windows\r\nline break", "crlf"),
        ('She said "hello, there"\n\nthen left', "quotes"),
        ("Plain", "plain"),
    ]
    path = write(tmp_path, "a.csv", csv_text(rows, newline=newline).encode())

    detection = detect(path, filename="a.csv")

    assert detection.preview == [list(row) for row in rows]
    frame = read_all(path, detection, TEXT_AND_LABEL)
    assert pairs(frame) == rows
    assert frame["source_row"].tolist() == [1, 2, 3, 4]


def test_carriage_return_line_ends_are_read(tmp_path):
    path = write(
        tmp_path, "a.csv", b"text,label\rMy card is bent,card\rWhere is my refund?,refund\r"
    )

    detection = detect(path, filename="a.csv")

    assert detection.columns == ["text", "label"]
    assert detection.preview == [["My card is bent", "card"], ["Where is my refund?", "refund"]]
    assert pairs(read_all(path, detection, TEXT_AND_LABEL)) == [
        ("My card is bent", "card"),
        ("Where is my refund?", "refund"),
    ]


def test_header_names_lose_stray_whitespace_and_blank_names_are_numbered(tmp_path):
    path = write(tmp_path, "a.csv", b"  Text  , label\t,,\xef\xbb\xbfid \nhello,greeting,x,7\n")

    detection = detect(path, filename="a.csv")

    assert detection.columns == ["Text", "label", "column_3", "id"]
    frame = read_all(
        path, detection, ColumnMapping(text_columns=["Text"], label_column="label", id_column="id")
    )
    assert frame[["text", "label", "external_id"]].values.tolist() == [["hello", "greeting", "7"]]


def test_without_header_columns_are_numbered_and_first_line_is_a_row(tmp_path):
    path = write(tmp_path, "a.csv", b"hello,greeting\nbye,farewell\n")

    detection = detect(path, filename="a.csv", has_header=False)

    assert detection.columns == ["column_1", "column_2"]
    assert detection.estimated_rows == 2
    mapping = ColumnMapping(text_columns=["column_1"], label_column="column_2")
    assert pairs(read_all(path, detection, mapping)) == [
        ("hello", "greeting"),
        ("bye", "farewell"),
    ]


def test_gzip_input_is_detected_and_read(tmp_path):
    data = gzip.compress(csv_text(WESTERN).encode("utf-8"), mtime=0)
    path = write(tmp_path, "messages.csv.gz", data)

    detection = detect(path, filename="messages.csv.gz")

    assert detection.compression == "gzip"
    assert detection.encoding == "utf-8"
    assert detection.columns == ["text", "label"]
    assert pairs(read_all(path, detection, TEXT_AND_LABEL)) == WESTERN


# --- JSON Lines --------------------------------------------------------------------------------
@pytest.mark.parametrize("filename", ["a.jsonl", "a.ndjson", "a.txt", "a.jsonl.gz"])
def test_json_lines_detected_with_union_of_fields(tmp_path, filename):
    lines = [
        {"text": "Mon colis est arrivé 📦", "label": "delivery", "id": 1},
        {"text": "我的卡丢了", "label": "lost_card", "id": 2, "lang": "zh"},
        {"text": "Where is my refund?", "label": None, "id": 3},
    ]
    data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
    if filename.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    path = write(tmp_path, filename, data)

    detection = detect(path, filename=filename)

    assert detection.format == "jsonl"
    assert detection.delimiter == ""
    assert detection.columns == ["text", "label", "id", "lang"]
    assert detection.preview == [
        ["Mon colis est arrivé 📦", "delivery", "1", ""],
        ["我的卡丢了", "lost_card", "2", "zh"],
        ["Where is my refund?", "", "3", ""],
    ]
    mapping = ColumnMapping(text_columns=["text"], label_column="label", id_column="id")
    frame = read_all(path, detection, mapping)
    assert frame[["text", "label", "external_id"]].values.tolist() == [
        ["Mon colis est arrivé 📦", "delivery", "1"],
        ["我的卡丢了", "lost_card", "2"],
        ["Where is my refund?", "", "3"],
    ]


def test_csv_extension_wins_over_brace_in_first_cell(tmp_path):
    path = write(tmp_path, "a.csv", b'{"not json",label\nx,y\n')

    detection = detect(path, filename="a.csv")

    assert detection.format == "delimited"
    assert detection.columns == ['{"not json"', "label"]


# --- mapping -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        pytest.param(
            ["ID", "Review", "Sentiment", "Fold"],
            ColumnMapping(
                text_columns=["Review"],
                label_column="Sentiment",
                split_column="Fold",
                id_column="ID",
            ),
            id="common-names-any-case",
        ),
        pytest.param(
            ["uuid", "sentence", "intent", "subset"],
            ColumnMapping(
                text_columns=["sentence"],
                label_column="intent",
                split_column="subset",
                id_column="uuid",
            ),
            id="other-names",
        ),
        pytest.param(
            ["body", "text", "labels"],
            ColumnMapping(text_columns=["text"], label_column="labels"),
            id="text-preferred-over-body",
        ),
        pytest.param(
            ["utterance_raw", "notes"],
            ColumnMapping(text_columns=["utterance_raw"]),
            id="falls-back-to-first-column",
        ),
    ],
)
def test_suggest_mapping_guesses_common_names(columns, expected):
    assert suggest_mapping(columns) == expected


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        pytest.param(
            ColumnMapping(text_columns=[]), "Choose at least one text column.", id="no-text"
        ),
        pytest.param(
            ColumnMapping(text_columns=["text", "body"]),
            "The text column 'body' is not in the file. Its columns are: text, label, split.",
            id="text",
        ),
        pytest.param(
            ColumnMapping(text_columns=["text"], label_column="category"),
            "The label column 'category' is not in the file. Its columns are: text, label, split.",
            id="label",
        ),
        pytest.param(
            ColumnMapping(text_columns=["text"], split_column="fold"),
            "The split column 'fold' is not in the file. Its columns are: text, label, split.",
            id="split",
        ),
        pytest.param(
            ColumnMapping(text_columns=["text"], id_column="uid"),
            "The id column 'uid' is not in the file. Its columns are: text, label, split.",
            id="id",
        ),
    ],
)
def test_mapping_validate_names_the_missing_column(mapping, message):
    with pytest.raises(ImportProblem) as caught:
        mapping.validate(["text", "label", "split"])

    assert caught.value.message == message


@pytest.mark.parametrize(
    ("columns", "text", "label"),
    [(["category", "notes"], "notes", "category"), (["label"], "label", None)],
)
def test_the_suggested_mapping_gives_each_column_one_role(columns, text, label):
    suggested = suggest_mapping(columns)

    assert (suggested.text_columns, suggested.label_column) == ([text], label)
    suggested.validate(columns)


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        (
            ColumnMapping(text_columns=["text"], label_column="text"),
            "The column 'text' is mapped as text and as label",
        ),
        (
            ColumnMapping(text_columns=["text"], label_column="label", split_column="label"),
            "The column 'label' is mapped as label and as split",
        ),
        (
            ColumnMapping(text_columns=["text", "label"], id_column="label"),
            "The column 'label' is mapped as text and as id",
        ),
    ],
)
def test_a_column_mapped_to_two_roles_is_refused(mapping, message):
    """Before, text = label imported every text as its own label (one class per record)."""
    with pytest.raises(ImportProblem) as caught:
        mapping.validate(["text", "label", "split"])

    assert caught.value.message.startswith(message)


def test_mapping_round_trips_through_dict_with_defaults():
    assert ColumnMapping.from_dict({"text_columns": ["a"], "label_column": ""}) == ColumnMapping(
        text_columns=["a"], text_separator="\n"
    )
    mapping = ColumnMapping(text_columns=["a", "b"], text_separator=" | ", label_column="c")
    assert ColumnMapping.from_dict(mapping.as_dict()) == mapping


# --- records -----------------------------------------------------------------------------------
def test_text_joins_several_columns_with_separator(tmp_path):
    rows = [("Card not working", "It says declined at every shop.", "card"), ("Hi", "", "x")]
    path = write(tmp_path, "a.csv", csv_text(rows, header=("title", "body", "label")).encode())
    detection = detect(path, filename="a.csv")

    frame = read_all(
        path,
        detection,
        ColumnMapping(text_columns=["title", "body"], text_separator=" — ", label_column="label"),
    )

    assert frame["text"].tolist() == ["Card not working — It says declined at every shop.", "Hi — "]
    assert frame["metadata"].tolist() == ["{}", "{}"]


def test_unmapped_columns_are_kept_as_metadata(tmp_path):
    rows = [("Où est ma carte ?", "card", "web", "fr"), ("Refund please", "refund", "", "en")]
    path = write(
        tmp_path, "a.csv", csv_text(rows, header=("text", "label", "source", "lang")).encode()
    )
    detection = detect(path, filename="a.csv")

    frame = read_all(path, detection, TEXT_AND_LABEL)

    assert [json.loads(value) for value in frame["metadata"]] == [
        {"source": "web", "lang": "fr"},
        {"source": "", "lang": "en"},
    ]
    assert frame["metadata"][0] == '{"source": "web", "lang": "fr"}'


def test_texts_over_limit_are_cut_and_flagged_truncated(tmp_path):
    rows = [("x" * 11, "long"), ("y" * 10, "exact"), ("短い文章です。これは長い文章です。", "cjk")]
    path = write(tmp_path, "a.csv", csv_text(rows).encode())
    detection = detect(path, filename="a.csv")

    frame = read_all(path, detection, TEXT_AND_LABEL, limits=Limits(max_text_chars=10))

    assert frame["text"].tolist() == ["x" * 10, "y" * 10, "短い文章です。これは"]
    assert frame["flags"].tolist() == [",truncated,", "", ",truncated,"]


def test_empty_and_blank_texts_are_flagged_empty(tmp_path):
    path = write(tmp_path, "a.csv", b'text,label\n,a\n"   ",b\n"\t\n",c\nfine,d\n')
    detection = detect(path, filename="a.csv")

    frame = read_all(path, detection, TEXT_AND_LABEL)

    assert frame["text"].tolist() == ["", "   ", "\t\n", "fine"]
    assert frame["flags"].tolist() == [",empty,", ",empty,", ",empty,", ""]


def test_labels_and_ids_are_stripped_but_texts_are_not(tmp_path):
    path = write(tmp_path, "a.csv", b"text,label,id\n  padded text  , spaced label , 42 \n")
    detection = detect(path, filename="a.csv")

    frame = read_all(
        path,
        detection,
        ColumnMapping(text_columns=["text"], label_column="label", id_column="id"),
    )

    assert frame[["text", "label", "external_id"]].values.tolist() == [
        ["  padded text  ", "spaced label", "42"]
    ]


def test_split_aliases_are_normalised(tmp_path):
    given = ["train", "Training", " dev ", "VAL", "valid", "validation", "test", "Testing", ""]
    rows = [(f"text {n}", split) for n, split in enumerate(given)]
    path = write(tmp_path, "a.csv", csv_text(rows, header=("text", "split")).encode())
    detection = detect(path, filename="a.csv")

    frame = read_all(path, detection, ColumnMapping(text_columns=["text"], split_column="split"))

    assert frame["split"].tolist() == [
        "train",
        "train",
        "validation",
        "validation",
        "validation",
        "validation",
        "test",
        "test",
        "",
    ]


def test_unknown_split_is_a_problem_naming_the_line(tmp_path):
    path = write(tmp_path, "a.csv", b"text,split\na,train\nb,holdout\n")
    detection = detect(path, filename="a.csv")

    chunks = list(
        iter_records(path, detection, ColumnMapping(text_columns=["text"], split_column="split"))
    )

    assert [p.as_dict() for chunk in chunks for p in chunk.problems] == [
        {
            "line": 3,
            "column": "split",
            "message": "Line 3 has split 'holdout'. Use train, validation or test, or leave it empty.",
        }
    ]


def test_source_rows_continue_across_chunks(tmp_path):
    rows = [(f"message {n}", "x") for n in range(1, 8)]
    path = write(tmp_path, "a.csv", csv_text(rows).encode())
    detection = detect(path, filename="a.csv")

    chunks = list(iter_records(path, detection, TEXT_AND_LABEL, chunk_rows=3))

    assert [len(chunk.frame) for chunk in chunks] == [3, 3, 1]
    assert pd.concat([c.frame for c in chunks])["source_row"].tolist() == [1, 2, 3, 4, 5, 6, 7]


# --- overrides ---------------------------------------------------------------------------------
NOT_A_FILE_ENCODING = (
    "is not an encoding text files are written in. Choose one such as utf-8, cp1252 or latin-1."
)


@pytest.mark.parametrize(
    ("overrides", "errors"),
    [
        pytest.param({"encoding": "hex"}, {"encoding": f"'hex' {NOT_A_FILE_ENCODING}"}, id="hex"),
        pytest.param(
            {"encoding": "rot13"}, {"encoding": f"'rot13' {NOT_A_FILE_ENCODING}"}, id="rot13"
        ),
        pytest.param(
            {"encoding": "base64"}, {"encoding": f"'base64' {NOT_A_FILE_ENCODING}"}, id="base64"
        ),
        pytest.param(
            {"encoding": "idna"}, {"encoding": f"'idna' {NOT_A_FILE_ENCODING}"}, id="idna"
        ),
        pytest.param(
            {"encoding": "unicode_escape"},
            {"encoding": f"'unicode_escape' {NOT_A_FILE_ENCODING}"},
            id="unicode-escape",
        ),
        pytest.param(
            {"encoding": "klingon-8"},
            {"encoding": "'klingon-8' is not a text encoding Python knows."},
            id="unknown",
        ),
        pytest.param(
            {"delimiter": "\n"},
            {
                "delimiter": "A line break cannot be the delimiter: it ends each row. "
                "Choose , ; | or a tab."
            },
            id="newline",
        ),
        pytest.param(
            {"delimiter": "\r"},
            {
                "delimiter": "A line break cannot be the delimiter: it ends each row. "
                "Choose , ; | or a tab."
            },
            id="carriage-return",
        ),
        pytest.param(
            {"delimiter": '"'},
            {
                "delimiter": 'The quote character " cannot also be the delimiter: quotes enclose '
                "values that contain the delimiter. Choose , ; | or a tab."
            },
            id="double-quote",
        ),
        pytest.param(
            {"delimiter": "'", "quoting": "single"},
            {
                "delimiter": "The quote character ' cannot also be the delimiter: quotes enclose "
                "values that contain the delimiter. Choose , ; | or a tab."
            },
            id="the-chosen-quote",
        ),
        pytest.param(
            {"delimiter": ";;"},
            {
                "delimiter": "The delimiter must be one character, such as , ; | or a tab; "
                "';;' has 2."
            },
            id="two-characters",
        ),
        pytest.param(
            {"quoting": "backticks"},
            {
                "quoting": "'backticks' is not a way of quoting this reader knows. Choose "
                "double, single or none."
            },
            id="quoting",
        ),
    ],
)
def test_override_errors_name_the_field_and_detect_refuses_them(tmp_path, overrides, errors):
    path = write(tmp_path, "a.csv", b"text,label\nhello,greeting\n")

    assert override_errors(**overrides) == errors
    with pytest.raises(ImportProblem) as caught:
        detect(path, filename="a.csv", **overrides)
    assert caught.value.message == next(iter(errors.values()))


@pytest.mark.parametrize(
    "overrides",
    [
        {"encoding": "latin-1", "delimiter": ";", "quoting": "single"},
        {"encoding": "utf-16-le", "delimiter": "\t", "quoting": "none"},
        {"encoding": "cp1250", "delimiter": " ", "quoting": "double"},
        {},
    ],
)
def test_override_errors_accept_real_encodings_and_delimiters(overrides):
    assert override_errors(**overrides) == {}


# --- header detection --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "has_header", "columns"),
    [
        pytest.param(
            b"text,label\nhello there,greeting\nbye now,farewell\n",
            True,
            ["text", "label"],
            id="names",
        ),
        pytest.param(
            b"1,hello there,greeting\n2,bye now,farewell\n",
            False,
            ["column_1", "column_2", "column_3"],
            id="number-in-first-row",
        ),
        pytest.param(
            b"hello there,greeting\nhi,greeting\nbye now,farewell\n",
            False,
            ["column_1", "column_2"],
            id="first-row-value-repeats-in-its-column",
        ),
        pytest.param(
            b'"A first message\nover two lines",complaint\nsecond,praise\n',
            False,
            ["column_1", "column_2"],
            id="line-break-in-first-row",
        ),
        pytest.param(
            b"text,label\nhello,greeting\ntext,label\nbye,farewell\n",
            True,
            ["text", "label"],
            id="header-repeated-further-down",
        ),
    ],
)
def test_detect_finds_whether_the_first_row_is_a_header(tmp_path, data, has_header, columns):
    path = write(tmp_path, "a.csv", data)

    detection = detect(path, filename="a.csv")

    assert detection.has_header is has_header
    assert detection.columns == columns


def test_header_detected_missing_keeps_the_first_row_as_a_record(tmp_path):
    path = write(tmp_path, "a.csv", b"hello there,greeting\nhi,greeting\nbye now,farewell\n")
    detection = detect(path, filename="a.csv")

    frame = read_all(path, detection, ColumnMapping(["column_1"], label_column="column_2"))

    assert detection.estimated_rows == 3
    assert pairs(frame) == [
        ("hello there", "greeting"),
        ("hi", "greeting"),
        ("bye now", "farewell"),
    ]


def test_header_override_wins_over_detection(tmp_path):
    path = write(tmp_path, "a.csv", b"1,hello there,greeting\n2,bye now,farewell\n")

    detection = detect(path, filename="a.csv", has_header=True)

    assert detection.has_header is True
    assert detection.columns == ["1", "hello there", "greeting"]
    assert detection.preview == [["2", "bye now", "farewell"]]


# --- quoting detection -------------------------------------------------------------------------
def test_detect_finds_single_quotes_and_reads_with_them(tmp_path):
    path = write(
        tmp_path,
        "a.csv",
        b"'text','label'\n'Hello, world','greeting'\n'It''s late, sorry','apology'\n'Bye','farewell'\n",
    )

    detection = detect(path, filename="a.csv")

    assert (detection.delimiter, detection.quotechar) == (",", "'")
    assert detection.columns == ["text", "label"]
    assert pairs(read_all(path, detection, TEXT_AND_LABEL)) == [
        ("Hello, world", "greeting"),
        ("It's late, sorry", "apology"),
        ("Bye", "farewell"),
    ]


def test_detect_finds_no_quoting_when_quotes_are_part_of_values(tmp_path):
    data = b'text\tlabel\n"Refund" please\trefund\n"Card" blocked again\tcard\nHello\tgreeting\n'
    path = write(tmp_path, "a.tsv", data)

    detection = detect(path, filename="a.tsv")

    assert (detection.delimiter, detection.quotechar) == ("\t", "")
    assert pairs(read_all(path, detection, TEXT_AND_LABEL)) == [
        ('"Refund" please', "refund"),
        ('"Card" blocked again', "card"),
        ("Hello", "greeting"),
    ]


def test_detect_keeps_double_quotes_for_standard_csv(tmp_path):
    rows = [("Hello, world", "greeting"), ('She said "hi"', "quote"), ("Plain", "plain")]
    path = write(tmp_path, "a.csv", csv_text(rows).encode())

    detection = detect(path, filename="a.csv")

    assert detection.quotechar == '"'
    assert pairs(read_all(path, detection, TEXT_AND_LABEL)) == rows


def test_quoting_override_none_keeps_quotes_as_text(tmp_path):
    path = write(tmp_path, "a.csv", b'text,label\n"quoted",x\nplain,y\n')

    detection = detect(path, filename="a.csv", quoting="none")

    assert detection.quotechar == ""
    assert pairs(read_all(path, detection, TEXT_AND_LABEL)) == [('"quoted"', "x"), ("plain", "y")]


# --- row estimates -----------------------------------------------------------------------------
def test_estimate_counts_records_not_lines_of_quoted_texts(tmp_path):
    rows = [("one", "a"), ("first line\nsecond line\nthird line", "b"), ("three", "c")]
    path = write(tmp_path, "a.csv", csv_text(rows).encode())

    detection = detect(path, filename="a.csv")

    assert detection.estimated_rows == 3


def multiline_rows(count: int) -> list[tuple[str, str]]:
    return [
        (f"Message {n}\nsecond line of it\nand a third", f"label_{n % 7}") for n in range(count)
    ]


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_estimate_of_a_file_larger_than_the_sample_scales_records_per_byte(tmp_path, compressed):
    rows = multiline_rows(20_000)  # about 1 MB, four times the sample
    data = csv_text(rows).encode()
    name = "big.csv.gz" if compressed else "big.csv"
    path = write(tmp_path, name, gzip.compress(data, mtime=0) if compressed else data)

    detection = detect(path, filename=name)

    # Physical lines would say about 60,000.
    assert 19_000 <= detection.estimated_rows <= 21_000


def test_estimate_of_a_gzip_file_without_a_usable_size_trailer_uses_the_ratio(tmp_path):
    data = csv_text(multiline_rows(20_000)).encode()
    # A second, empty gzip member: the last 4 bytes now say 0 bytes.
    path = write(tmp_path, "big.csv.gz", gzip.compress(data, mtime=0) + gzip.compress(b"", mtime=0))

    detection = detect(path, filename="big.csv.gz")

    assert 15_000 <= detection.estimated_rows <= 25_000


def test_json_lines_estimate_scales_lines_for_a_gzip_file(tmp_path):
    lines = "".join(
        json.dumps({"text": f"message number {n}", "label": n % 5}) + "\n" for n in range(30_000)
    )
    path = write(tmp_path, "a.jsonl.gz", gzip.compress(lines.encode(), mtime=0))

    detection = detect(path, filename="a.jsonl.gz")

    assert 29_000 <= detection.estimated_rows <= 31_000


# --- JSON Lines values -------------------------------------------------------------------------
def test_json_lines_integers_stay_integers_when_a_value_is_missing(tmp_path):
    lines = [
        {"text": "a", "label": 1, "id": 10},
        {"text": "b", "label": None, "id": None},
        {"text": "c", "label": 2, "id": 12, "score": 0.5},
        {"text": "d", "id": 13, "flag": True},
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    path = write(tmp_path, "a.jsonl", data)
    detection = detect(path, filename="a.jsonl")

    frame = read_all(
        path, detection, ColumnMapping(text_columns=["text"], label_column="label", id_column="id")
    )

    assert frame[["label", "external_id"]].values.tolist() == [
        ["1", "10"],
        ["", ""],
        ["2", "12"],
        ["", "13"],
    ]
    assert [json.loads(m) for m in frame["metadata"]] == [
        {"score": None, "flag": None},
        {"score": None, "flag": None},
        {"score": 0.5, "flag": None},
        {"score": None, "flag": True},
    ]
    assert detection.preview[1] == ["b", "", "", "", ""]
    assert detection.preview[3] == ["d", "", "13", "", "true"]


def test_json_lines_nested_values_are_json_text_not_python_repr(tmp_path):
    line = {
        "text": {"title": "Carte bloquée", "body": ["a", 1]},
        "label": ["card", "urgent"],
        "meta": {"source": "web", "tags": ["é"]},
    }
    path = write(tmp_path, "a.jsonl", (json.dumps(line) + "\n").encode())
    detection = detect(path, filename="a.jsonl")

    frame = read_all(path, detection, TEXT_AND_LABEL)

    assert frame["text"].tolist() == ['{"title": "Carte bloquée", "body": ["a", 1]}']
    # A list of labels is several labels, stored as multi-label training reads them.
    assert frame["label"].tolist() == ["card|urgent"]
    assert json.loads(frame["metadata"][0]) == {"meta": {"source": "web", "tags": ["é"]}}
    assert detection.preview == [
        [
            '{"title": "Carte bloquée", "body": ["a", 1]}',
            '["card", "urgent"]',
            '{"source": "web", "tags": ["é"]}',
        ]
    ]


def test_json_lines_label_lists_become_several_labels(tmp_path):
    """Before, ["x", "y"] was kept as the JSON text '["x", "y"]': one label of that name, which
    multi-label training could not split."""
    lines = [
        {"text": "a", "label": ["x", "y"]},
        {"text": "b", "label": [" y ", 3]},
        {"text": "c", "label": []},
        {"text": "d", "label": [{"deep": 1}]},
        {"text": "e", "label": "plain"},
    ]
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    path = write(tmp_path, "a.jsonl", content)

    frame = read_all(path, detect(path, filename="a.jsonl"), TEXT_AND_LABEL)

    assert frame["label"].tolist() == ["x|y", "y|3", "", '[{"deep": 1}]', "plain"]


# --- line numbers of row problems --------------------------------------------------------------
def test_long_label_and_id_problems_name_the_file_line_after_quoted_line_breaks(tmp_path):
    rows = [
        ("first\nspans\nthree lines", "ok", "1"),
        ("fine", "x" * 501, "2"),
        ("also fine", "ok", "9" * 256),
    ]
    path = write(tmp_path, "a.csv", csv_text(rows, header=("text", "label", "id")).encode())
    detection = detect(path, filename="a.csv")

    chunks = list(
        iter_records(
            path,
            detection,
            ColumnMapping(text_columns=["text"], label_column="label", id_column="id"),
            chunk_rows=2,
        )
    )

    assert [p.as_dict() for chunk in chunks for p in chunk.problems] == [
        {
            "line": 5,
            "column": "label",
            "message": "Line 5 has a label of 501 characters; labels can be at most 500. "
            "Shorten it or map another column.",
        },
        {
            "line": 6,
            "column": "id",
            "message": "Line 6 has a id of 256 characters; ids can be at most 255. "
            "Shorten it or map another column.",
        },
    ]


def test_unknown_split_in_json_lines_names_the_line(tmp_path):
    data = b'{"text": "a", "split": "train"}\n\n{"text": "b", "split": "holdout"}\n'
    path = write(tmp_path, "a.jsonl", data)
    detection = detect(path, filename="a.jsonl")

    chunks = list(
        iter_records(path, detection, ColumnMapping(text_columns=["text"], split_column="split"))
    )

    assert [p.as_dict() for chunk in chunks for p in chunk.problems] == [
        {
            "line": 3,
            "column": "split",
            "message": "Line 3 has split 'holdout'. Use train, validation or test, or leave it empty.",
        }
    ]


# --- line length -------------------------------------------------------------------------------
def test_detection_refuses_a_line_longer_than_the_limit_inside_the_sample(tmp_path):
    data = b"text,label\nshort,a\n" + b"x" * 150_000 + b",b\nshort,c\n"
    path = write(tmp_path, "a.csv", data)

    with pytest.raises(ImportProblem) as caught:
        detect(path, filename="a.csv", limits=Limits(max_line_bytes=100 * 1024))

    assert caught.value.as_dict() == {
        "line": 3,
        "column": None,
        "message": "Line 3 is longer than 100 KB, the most one line may hold, so this is not a "
        "table with one record per line. Check the delimiter and the line endings.",
    }


@pytest.mark.parametrize("name", ["a.csv", "a.csv.gz", "a.jsonl"])
def test_import_stops_at_a_line_longer_than_the_limit_after_the_sample(tmp_path, name):
    if name.endswith(".jsonl"):
        good = [json.dumps({"text": f"message {n}", "label": "a"}) for n in range(10_000)]
        huge = json.dumps({"text": "x" * 300_000, "label": "b"})
        data = ("\n".join([*good, huge, good[0]]) + "\n").encode()
    else:
        good = [f"message {n},a" for n in range(20_000)]
        data = ("\n".join(["text,label", *good, "x" * 300_000 + ",b", "last,c"]) + "\n").encode()
    if name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    path = write(tmp_path, name, data)
    limits = Limits(max_line_bytes=200 * 1024)
    detection = detect(path, filename=name, limits=limits)
    huge_line = 10_001 if name.endswith(".jsonl") else 20_002

    with pytest.raises(ImportProblem) as caught:
        for _chunk in iter_records(path, detection, TEXT_AND_LABEL, limits=limits):
            pass

    assert caught.value.as_dict() == {
        "line": huge_line,
        "column": None,
        "message": f"Line {huge_line:,} is longer than 200 KB, the most one line may hold, so "
        "this is not a table with one record per line. Check the delimiter and the line endings.",
    }


# --- Latin-1 -----------------------------------------------------------------------------------
LATIN_1 = [
    ("Le café était très bon, merci.", "avis"),
    ("Die Größe war falsch, bitte prüfen.", "reklamation"),
    ("El niño pidió una piña colada.", "pregunta"),
    ("Ça coûte combien vers l'Øresund?", "frais"),
]


@pytest.mark.parametrize(("encoding", "detected"), [(None, "cp1252"), ("latin-1", "latin-1")])
def test_latin1_file_is_read_exactly(tmp_path, encoding, detected):
    path = write(tmp_path, "a.csv", csv_text(LATIN_1).encode("latin-1"))

    detection = detect(path, filename="a.csv", encoding=encoding)

    assert detection.encoding == detected
    assert detection.preview == [list(row) for row in LATIN_1]
    assert pairs(read_all(path, detection, TEXT_AND_LABEL)) == LATIN_1


# --- compressed files that inflate without end ---------------------------------------------------
@pytest.mark.parametrize("name", ["bomb.csv.gz", "bomb.jsonl.gz"])
def test_a_gzip_file_inflating_past_the_limit_stops_with_a_message(tmp_path, name):
    row = '{"text": "same row again", "label": "a"}\n' if "jsonl" in name else "same row again,a\n"
    head = "" if "jsonl" in name else "text,label\n"
    inflated = (head + row * 200_000).encode()  # about 3.5 MB from a few KB
    path = write(tmp_path, name, gzip.compress(inflated, mtime=0))
    assert path.stat().st_size < 50_000
    detection = detect(path, filename=name)
    limits = Limits(max_uncompressed_bytes=1024**2)

    with pytest.raises(ImportProblem) as stopped:
        for _ in iter_records(path, detection, TEXT_AND_LABEL, limits=limits):
            pass

    assert str(stopped.value) == (
        "Decompressed, the file is larger than 1 MB, the most an import reads from a compressed "
        "file. Split it into smaller files."
    )
    # The same file under a limit it fits is read whole.
    rows = sum(len(chunk.frame) for chunk in iter_records(path, detection, TEXT_AND_LABEL))
    assert rows == 200_000


def test_the_uncompressed_limit_does_not_apply_to_plain_files(tmp_path):
    path = write(tmp_path, "plain.csv", ("text,label\n" + "same row again,a\n" * 100_000).encode())
    detection = detect(path, filename="plain.csv")
    limits = Limits(max_uncompressed_bytes=1024)

    assert (
        sum(len(c.frame) for c in iter_records(path, detection, TEXT_AND_LABEL, limits=limits))
        == 100_000
    )


# --- whole rows, bounded -------------------------------------------------------------------------
def test_a_50_mb_single_line_is_refused_as_too_long_after_reading_only_to_the_line_limit(tmp_path):
    path = write(tmp_path, "one_line.csv", b"text,label," * (50 * 1024**2 // 11))

    with pytest.raises(ImportProblem) as caught:
        detect(path, filename="one_line.csv")

    assert caught.value.as_dict() == {
        "line": 1,
        "column": None,
        "message": "Line 1 is longer than 10 MB, the most one line may hold, so this is not a "
        "table with one record per line. Check the delimiter and the line endings.",
    }


def test_detection_reads_on_until_it_has_whole_rows_for_the_preview(tmp_path):
    rows = [(f"{number} " + "long text " * 20_000, str(number)) for number in range(25)]
    path = write(tmp_path, "long_rows.csv", csv_text(rows).encode())

    detection = detect(path, filename="long_rows.csv")

    assert detection.columns == ["text", "label"]
    assert [label for _, label in detection.preview] == [str(n) for n in range(20)]
    assert detection.estimated_rows == 25


# --- rows with fewer fields than the header ------------------------------------------------------
def test_rows_with_fewer_fields_than_the_header_are_problems_naming_their_lines(tmp_path):
    data = (
        b"text,label\nfirst row,positive\nthis text was broken\nby a stray newline,negative\n"
        b'"quoted\nline break",ok\nempty label,\n"",\nlast,positive\n'
    )
    path = write(tmp_path, "short.csv", data)
    detection = detect(path, filename="short.csv")

    chunks = list(iter_records(path, detection, TEXT_AND_LABEL, chunk_rows=2))

    assert [p.as_dict() for chunk in chunks for p in chunk.problems] == [
        {
            "line": 3,
            "column": None,
            "message": "Line 3 has 1 field but the header has 2. A line break inside a value "
            "needs the value in double quotes; otherwise add the missing fields (they may be "
            "empty).",
        }
    ]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_encoding_is_detected_from_rows_past_a_plain_ascii_sample(tmp_path, newline):
    # The first 256 KB are plain ASCII and tell nothing; the accented rows come later. Once
    # detected as UTF-8 from the first bytes alone, and the import then failed on the first é.
    rows = [(f"plain message number {n}", "a") for n in range(12_000)] + WESTERN
    path = write(tmp_path, "late.csv", csv_text(rows, newline=newline).encode("cp1252"))
    assert path.stat().st_size > 256 * 1024

    detection = detect(path, filename="late.csv")

    assert detection.encoding == "cp1252"
    chunks = list(iter_records(path, detection, TEXT_AND_LABEL))
    assert [p.as_dict() for chunk in chunks for p in chunk.problems] == []
    assert pairs(chunks[-1].frame)[-len(WESTERN) :] == WESTERN


def test_damaged_utf8_past_a_plain_ascii_sample_names_its_line(tmp_path):
    rows = [(f"plain message number {n}", "a") for n in range(12_000)]
    data = csv_text(rows).encode() + b"caf\xc3\x28 ok,b\n"
    path = write(tmp_path, "late.csv", data)

    with pytest.raises(ImportProblem) as caught:
        detect(path, filename="late.csv")

    assert caught.value.line == 12_002
    assert caught.value.message.startswith("Line 12002 has a byte that is not valid UTF-8 (0xc3)")
