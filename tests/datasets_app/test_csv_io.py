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


def test_unknown_split_is_a_problem_naming_the_row(tmp_path):
    path = write(tmp_path, "a.csv", b"text,split\na,train\nb,holdout\n")
    detection = detect(path, filename="a.csv")

    chunks = list(
        iter_records(path, detection, ColumnMapping(text_columns=["text"], split_column="split"))
    )

    assert [p.as_dict() for chunk in chunks for p in chunk.problems] == [
        {
            "line": None,
            "column": "split",
            "message": "Row 2 has split 'holdout'. Use train, validation or test, or leave it empty.",
        }
    ]


def test_source_rows_continue_across_chunks(tmp_path):
    rows = [(f"message {n}", "x") for n in range(1, 8)]
    path = write(tmp_path, "a.csv", csv_text(rows).encode())
    detection = detect(path, filename="a.csv")

    chunks = list(iter_records(path, detection, TEXT_AND_LABEL, chunk_rows=3))

    assert [len(chunk.frame) for chunk in chunks] == [3, 3, 1]
    assert pd.concat([c.frame for c in chunks])["source_row"].tolist() == [1, 2, 3, 4, 5, 6, 7]
