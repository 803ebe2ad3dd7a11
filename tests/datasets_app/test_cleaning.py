"""Tests for datasets_app.cleaning: small inline frames, plus checks against the demo datasets."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from ftfy.badness import BADNESS_RE, MOJIBAKE_CATEGORIES
from hypothesis import given, settings
from hypothesis import strategies as st

from datasets_app.cleaning import (
    FTFY_SUSPECT_RE,
    REPORT_FLAGS,
    SPLITS,
    assign_splits,
    fix_drop_duplicates,
    fix_drop_empty,
    fix_exclude_length_outliers,
    fix_exclude_mostly_noise,
    fix_exclude_small_classes,
    fix_repair_mojibake,
    fix_resolve_conflicts,
    fix_strip_markup,
    normalize_texts,
    quality_report,
    record_flags,
    repair_mojibake_text,
    spreadsheet_safe,
    strip_markup_text,
    text_hashes,
)
from tests.paths import SHARED_DATA

DATA_DIR = SHARED_DATA
PHRASEBANK = DATA_DIR / "financial_phrasebank" / "train.csv"
SST2 = DATA_DIR / "sst2" / "train.csv"


def make_frame(*rows: tuple[Any, ...]) -> pd.DataFrame:
    """Rows of (id, text, label) or (id, text, label, split)."""
    columns = ["id", "text", "label", "split"][: len(rows[0])]
    return pd.DataFrame(list(rows), columns=columns)


def find(report: dict[str, Any], kind: str) -> dict[str, Any] | None:
    matches = [finding for finding in report["findings"] if finding["kind"] == kind]
    return matches[0] if matches else None


def kinds(report: dict[str, Any]) -> list[str]:
    return [finding["kind"] for finding in report["findings"]]


def load_demo(path: Path) -> pd.DataFrame:
    if not path.exists():
        pytest.skip(f"{path} is not present on this machine.")
    frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    frame.insert(0, "id", np.arange(1, len(frame) + 1))
    return frame


# --- normalize_texts / text_hashes --------------------------------------------------------------
def test_normalize_texts_folds_width_case_punctuation_and_spacing():
    texts = pd.Series(
        [
            "Hello,   World!!",
            "\uff26\uff35\uff2c\uff2c\u3000width",
            "Straße",
            "«Ça va?» — oui…",
            "don't",
            "😀 great",
            "हिन्दी।",
            "...",
            None,
        ]
    )

    assert normalize_texts(texts).tolist() == [
        "hello world",
        "full width",
        "strasse",
        "ça va oui",
        "don t",
        "😀 great",
        "हिन्दी",
        "",
        "",
    ]


def test_normalize_texts_strips_punctuation_outside_the_basic_plane():
    # U+10100 AEGEAN WORD SEPARATOR LINE is punctuation (Po) above U+FFFF.
    assert normalize_texts(pd.Series(["a\U00010100b"])).tolist() == ["a b"]


def test_text_hashes_match_for_near_duplicates_and_differ_otherwise():
    hashes = text_hashes(
        pd.Series(["Hello, World!", "hello   world", "Hello there"], index=[7, 8, 9])
    )

    assert hashes.dtype == np.int64
    assert hashes.index.tolist() == [7, 8, 9]
    assert hashes[7] == hashes[8]
    assert hashes[7] != hashes[9]


def test_text_hashes_are_pinned_so_stored_keys_stay_valid():
    # The value must never change between processes, runs or upgrades: stored group keys
    # depend on it. If a pandas upgrade changes it, stored keys need recomputing.
    assert text_hashes(pd.Series(["Hello, World!"])).tolist() == [-1633311127471753997]


# --- quality_report: one test per finding kind ---------------------------------------------------
def test_report_finds_empty_and_whitespace_texts():
    report = quality_report(make_frame((1, "fine text", "a"), (2, "", "a"), (3, " \t ", "b")))

    assert find(report, "empty") == {
        "kind": "empty",
        "title": "2 records have no text, or only spaces.",
        "count": 2,
        "record_ids": [2, 3],
        "examples": [
            {"id": 2, "text": "", "label": "a", "detail": "The text is empty."},
            {"id": 3, "text": " \t ", "label": "b", "detail": "The text is only whitespace."},
        ],
        "fix": "drop_empty",
    }


def test_report_counts_exact_duplicates_with_the_same_label_after_the_first():
    frame = make_frame(
        (1, "Good film", "pos"),
        (2, "Good film", "pos"),
        (3, "Good film", "neg"),  # another label: a conflict, not a copy
        (4, "Good film", "pos"),
        (5, "", ""),
        (6, "", ""),  # empty texts are reported as empty only
    )

    finding = find(quality_report(frame), "exact_duplicate")

    assert finding["title"] == "2 records repeat an earlier record with the same text and label."
    assert finding["count"] == 2
    assert finding["record_ids"] == [2, 4]
    assert [example["detail"] for example in finding["examples"]] == [
        "Same text and label as record 1.",
        "Same text and label as record 1.",
    ]
    assert finding["fix"] == "drop_duplicates"


def test_report_counts_near_duplicates_that_are_not_exact_copies():
    frame = make_frame(
        (1, "Good film.", "pos"),
        (2, "good  FILM", "pos"),  # near duplicate of 1
        (3, "Good film.", "pos"),  # exact copy of 1: reported under exact_duplicate
        (4, "GOOD FILM!", "neg"),  # other label: a conflict
        (5, "...", "pos"),  # only punctuation: no normalised text to compare
        (6, "!!!", "pos"),
    )

    report = quality_report(frame)

    assert find(report, "exact_duplicate")["record_ids"] == [3]
    near = find(report, "near_duplicate")
    assert near["title"] == (
        "1 record differs from an earlier record with the same label only in case, spacing or "
        "punctuation."
    )
    assert near["record_ids"] == [2]
    assert near["examples"] == [
        {
            "id": 2,
            "text": "good  FILM",
            "label": "pos",
            "detail": "Same as record 1 apart from case, spacing or punctuation.",
        }
    ]
    assert near["fix"] == "drop_duplicates"


def test_report_lists_every_member_of_a_label_conflict():
    frame = make_frame(
        (1, "Great acting", "pos"),
        (2, "great acting!", "neg"),
        (3, "Great acting", ""),  # unlabelled members belong to the group too
        (4, "Dull plot", "neg"),
        (5, "dull plot", "neg"),  # same label: no conflict
        (6, "Fine", "pos"),
        (7, "fine", ""),  # an empty label does not conflict
        (8, "GREAT ACTING", "pos"),
    )

    finding = find(quality_report(frame), "label_conflict")

    assert finding["title"] == "1 text appears with more than one label (4 records)."
    assert finding["count"] == 4
    assert finding["record_ids"] == [1, 2, 3, 8]
    assert finding["examples"][0]["detail"] == "This text is labelled 'pos' 2 times, 'neg' 1 time."
    assert finding["fix"] == "resolve_conflicts"


def test_report_finds_very_long_and_very_short_texts():
    typical_rows = [(index, "w" * (20 + index), "a") for index in range(1, 21)]
    frame = make_frame(*typical_rows, (21, "x" * 2000, "a"), (22, "x", "a"))

    finding = find(quality_report(frame), "length_outlier")

    assert finding["title"] == (
        "2 texts are far from the typical length of 30 characters: 1 very long, 1 very short."
    )
    assert finding["record_ids"] == [21, 22]
    assert [example["id"] for example in finding["examples"]] == [21, 22]
    assert finding["examples"][0]["detail"] == (
        "2,000 characters; typical is 30 (robust z-score +15.7)."
    )
    assert finding["examples"][1]["detail"] == "1 character; typical is 30 (robust z-score -12.8)."
    assert finding["examples"][0]["text"] == "x" * 299 + "…"  # long texts are cut in examples
    assert finding["fix"] == "exclude_length_outliers"


def test_report_length_threshold_is_configurable():
    frame = make_frame(*[(index, "w" * (20 + index), "a") for index in range(1, 21)])

    assert find(quality_report(frame), "length_outlier") is None
    finding = find(quality_report(frame, length_outlier_z=1.0), "length_outlier")
    assert finding["record_ids"] == [1, 2, 3, 19, 20]


def test_report_finds_labels_with_too_few_records():
    frame = make_frame(
        *[(index, f"text {index}", "common") for index in range(1, 11)],
        (11, "text 11", "rare"),
        (12, "text 12", "few"),
        (13, "text 13", "few"),
        (14, "text 14", ""),  # unlabelled records are not a class
    )

    finding = find(quality_report(frame, min_class_size=10), "small_class")

    assert finding["title"] == "2 labels have fewer than 10 records: 'few' (2), 'rare' (1)."
    assert finding["record_ids"] == [11, 12, 13]
    assert [(example["id"], example["detail"]) for example in finding["examples"]] == [
        (11, "Label 'rare' has only 1 record."),
        (12, "Label 'few' has only 2 records."),
    ]
    assert finding["fix"] == "exclude_small_classes"


def test_report_finds_texts_that_are_mostly_urls_digits_or_markup():
    frame = make_frame(
        (1, "see https://example.com/a/very/long/path ok", "x"),
        (2, "12345 678", "x"),
        (3, "<div><span>hi</span></div>", "x"),
        (4, "The price rose 5 % in 2009 .", "x"),
        (5, "Call 555-1234", "x"),
    )

    finding = find(quality_report(frame), "mostly_noise")

    assert finding["title"] == "4 texts are mostly URLs, numbers or markup rather than words."
    assert finding["record_ids"] == [1, 2, 3, 5]
    assert [example["detail"] for example in finding["examples"]] == [
        "88% of its non-space characters are URLs, digits or markup.",  # 36 of 41
        "100% of its non-space characters are URLs, digits or markup.",
        "92% of its non-space characters are URLs, digits or markup.",
        "58% of its non-space characters are URLs, digits or markup.",  # 7 digits of 12
    ]


def test_report_finds_mojibake_that_the_repair_changes():
    frame = make_frame(
        (1, "Café society", "x"),
        (2, "CafÃ© society", "x"),
        (3, "Clothing retail chain Sepp+ñl+ñ 's sales", "x"),
        (4, "Walter G++nter", "x"),
        (5, "C++ code costs +£5m", "x"),
        (6, "naïve résumé", "x"),
    )

    finding = find(quality_report(frame), "mojibake")

    assert finding["count"] == 3
    assert finding["record_ids"] == [2, 3, 4]
    assert [example["detail"] for example in finding["examples"]] == [
        "Repaired, it reads “Café society”.",
        "Repaired, it reads “Clothing retail chain Seppälä 's sales”.",
        "Repaired, it reads “Walter Günter”.",
    ]
    assert finding["fix"] == "repair_mojibake"


def test_report_finds_markup_but_not_comparisons_or_fake_entities():
    frame = make_frame(
        (1, "<p>Hello &amp; <b>world</b></p>", "x"),
        (2, "if x<y and y>z", "x"),
        (3, "Fish &amp; chips", "x"),
        (4, "&foo; is not an entity", "x"),
        (5, "Tom &lt;3 Jerry", "x"),
    )

    finding = find(quality_report(frame), "markup")

    assert finding["title"] == "3 texts contain HTML tags or entities."
    assert finding["record_ids"] == [1, 3, 5]
    assert finding["examples"][0]["detail"] == "Without markup it reads “Hello & world”."
    assert finding["fix"] == "strip_markup"


def test_report_finds_texts_shared_across_splits_outside_the_first_split():
    frame = make_frame(
        (1, "Same text", "a", "test"),
        (2, "same text!", "a", "train"),
        (3, "Same text", "a", "validation"),
        (4, "Other", "a", "train"),
        (5, "Other", "a", "train"),  # same split: a duplicate, not a leak
        (6, "Unsplit", "a", ""),  # records without a split are not compared
        (7, "unsplit", "a", "test"),
    )

    finding = find(quality_report(frame), "split_leakage")

    assert finding["count"] == 2
    assert finding["record_ids"] == [1, 3]
    assert [example["detail"] for example in finding["examples"]] == [
        "In test, but the same text is in train (record 2).",
        "In validation, but the same text is in train (record 2).",
    ]
    assert finding["fix"] is None


def test_report_has_no_split_leakage_without_splits():
    frame = make_frame((1, "Same", "a", ""), (2, "same", "a", ""))

    assert find(quality_report(frame), "split_leakage") is None
    assert find(quality_report(frame.drop(columns="split")), "split_leakage") is None


def test_report_on_clean_data_has_statistics_and_no_findings():
    frame = make_frame(
        (1, "a good film", "pos", "train"),
        (2, "a bad film", "neg", "train"),
        (3, "fine acting", "pos", "test"),
        (4, "", "", ""),
    )

    report = quality_report(frame, min_class_size=1)

    assert report["stats"] == {
        "total": 4,
        "label_counts": {"pos": 2, "neg": 1, "": 1},
        "length_histogram": {
            "edges": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
            "counts": [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2],
        },
        "split_counts": {"train": 2, "test": 1, "": 1},
    }
    assert kinds(report) == ["empty"]
    assert quality_report(frame.iloc[:3], min_class_size=1)["findings"] == []


def test_report_histogram_clips_at_the_99th_percentile():
    frame = make_frame(
        *[(index, "w" * index, "a") for index in range(1, 201)], (201, "w" * 10_000, "a")
    )

    histogram = quality_report(frame)["stats"]["length_histogram"]

    assert histogram["edges"] == list(range(0, 210, 10))
    assert len(histogram["counts"]) == 20
    assert sum(histogram["counts"]) == 201
    assert histogram["counts"][-1] == 12  # 190..200 and the 10,000-character text


def test_report_examples_are_limited_but_record_ids_are_complete():
    frame = make_frame(*[(index, "", "a") for index in range(1, 9)])

    finding = find(quality_report(frame, example_limit=3), "empty")

    assert finding["record_ids"] == list(range(1, 9))
    assert [example["id"] for example in finding["examples"]] == [1, 2, 3]


def test_report_of_an_empty_frame_has_zero_totals():
    frame = pd.DataFrame({"id": [], "text": [], "label": [], "split": []}).astype(
        {"id": "int64", "text": str, "label": str, "split": str}
    )

    assert quality_report(frame) == {
        "stats": {
            "total": 0,
            "label_counts": {},
            "length_histogram": {"edges": [], "counts": []},
            "split_counts": {},
        },
        "findings": [],
    }


# --- fixes ---------------------------------------------------------------------------------------
DUPLICATES = make_frame(
    (1, "Good film.", "pos"),
    (2, "good  FILM", "pos"),
    (3, "Good film.", "pos"),
    (4, "GOOD FILM!", "neg"),
    (5, "", "pos"),
)


def test_fix_drop_duplicates_excludes_exact_copies():
    changes = fix_drop_duplicates(DUPLICATES, "exact_duplicate")

    assert changes.to_dict("records") == [
        {"id": 3, "exclude": True, "reason": "Copy of record 1 (same text and label)."}
    ]


def test_fix_drop_duplicates_excludes_near_copies():
    changes = fix_drop_duplicates(DUPLICATES, "near_duplicate")

    assert changes.to_dict("records") == [
        {
            "id": 2,
            "exclude": True,
            "reason": "Near-duplicate of record 1 (differs only in case, spacing or punctuation).",
        }
    ]


def test_fix_drop_duplicates_rejects_other_kinds():
    with pytest.raises(ValueError, match="kind must be 'exact_duplicate' or 'near_duplicate'"):
        fix_drop_duplicates(DUPLICATES, "label_conflict")  # type: ignore[arg-type]


def test_fix_drop_empty_excludes_blank_texts():
    frame = make_frame((1, "text", "a"), (2, "", "a"), (3, "\n", "a"))

    changes = fix_drop_empty(frame)

    assert changes.to_dict("records") == [
        {"id": 2, "exclude": True, "reason": "The text is empty."},
        {"id": 3, "exclude": True, "reason": "The text is empty."},
    ]
    assert changes["exclude"].dtype == bool


CONFLICTS = make_frame(
    (1, "Great acting", "pos"),
    (2, "great acting!", "neg"),
    (3, "Great acting", ""),
    (4, "GREAT ACTING", "pos"),
    (5, "Odd film", "pos"),
    (6, "odd film", "neg"),
    (7, "Calm", "pos"),
)


def test_fix_resolve_conflicts_relabels_to_the_majority_and_excludes_ties():
    changes = fix_resolve_conflicts(CONFLICTS, "majority")

    assert list(changes.columns) == ["id", "new_label", "exclude", "reason"]
    assert changes.to_dict("records") == [
        {
            "id": 2,
            "new_label": "pos",
            "exclude": False,
            "reason": "Most records with this text are labelled 'pos'.",
        },
        {
            "id": 3,
            "new_label": "pos",
            "exclude": False,
            "reason": "Most records with this text are labelled 'pos'.",
        },
        {
            "id": 5,
            "new_label": None,
            "exclude": True,
            "reason": "The same text appears with different labels, equally often.",
        },
        {
            "id": 6,
            "new_label": None,
            "exclude": True,
            "reason": "The same text appears with different labels, equally often.",
        },
    ]


def test_fix_resolve_conflicts_drop_excludes_every_member():
    changes = fix_resolve_conflicts(CONFLICTS, "drop")

    assert list(changes.columns) == ["id", "exclude", "reason"]
    assert changes["id"].tolist() == [1, 2, 3, 4, 5, 6]
    assert changes["exclude"].tolist() == [True] * 6


def test_fix_resolve_conflicts_rejects_unknown_strategies():
    with pytest.raises(ValueError, match="strategy must be 'majority' or 'drop', not 'vote'"):
        fix_resolve_conflicts(CONFLICTS, "vote")  # type: ignore[arg-type]


def test_fix_repair_mojibake_returns_repaired_texts():
    frame = make_frame(
        (1, "Café", "x"),
        (2, "CafÃ© society", "x"),
        (3, "Bank of +àland", "x"),
    )

    assert fix_repair_mojibake(frame).to_dict("records") == [
        {
            "id": 2,
            "new_text": "Café society",
            "reason": "Repaired characters garbled by an encoding mix-up.",
        },
        {
            "id": 3,
            "new_text": "Bank of Åland",
            "reason": "Repaired characters garbled by an encoding mix-up.",
        },
    ]


def test_fix_strip_markup_removes_tags_and_unescapes_entities():
    frame = make_frame(
        (1, "<p>Hello &amp; <b>world</b></p>", "x"),
        (2, "plain text", "x"),
        (3, "<script>alert(1)</script>Tom &lt;3\n\n Jerry", "x"),
    )

    assert fix_strip_markup(frame).to_dict("records") == [
        {"id": 1, "new_text": "Hello & world", "reason": "Removed HTML tags and entities."},
        {"id": 3, "new_text": "Tom <3 Jerry", "reason": "Removed HTML tags and entities."},
    ]


def test_fixes_change_exactly_the_records_of_their_finding():
    frame = make_frame(
        (1, "Good film.", "pos"),
        (2, "good film", "pos"),
        (3, "Good film.", "pos"),
        (4, "good film", "neg"),
        (5, "", ""),
        (6, "CafÃ©", "pos"),
        (7, "<b>bold</b>", "neg"),
    )
    report = quality_report(frame)

    assert fix_drop_empty(frame)["id"].tolist() == find(report, "empty")["record_ids"]
    for kind in ("exact_duplicate", "near_duplicate"):
        assert fix_drop_duplicates(frame, kind)["id"].tolist() == find(report, kind)["record_ids"]
    assert (
        fix_resolve_conflicts(frame, "drop")["id"].tolist()
        == find(report, "label_conflict")["record_ids"]
    )
    assert fix_repair_mojibake(frame)["id"].tolist() == find(report, "mojibake")["record_ids"]
    assert fix_strip_markup(frame)["id"].tolist() == find(report, "markup")["record_ids"]


def test_fixes_return_typed_empty_frames_when_nothing_changes():
    frame = make_frame((1, "fine", "a"))

    for changes in (
        fix_drop_empty(frame),
        fix_drop_duplicates(frame, "near_duplicate"),
        fix_resolve_conflicts(frame, "majority"),
        fix_repair_mojibake(frame),
        fix_strip_markup(frame),
        fix_exclude_length_outliers(frame),
        fix_exclude_small_classes(frame, min_class_size=1),
        fix_exclude_mostly_noise(frame),
    ):
        assert changes.empty
        assert changes["id"].dtype == np.int64
    assert fix_drop_empty(frame)["exclude"].dtype == bool


def outlier_frame() -> pd.DataFrame:
    """Twenty ordinary texts of 19-28 characters, one very long, one very short, one empty."""
    ordinary = [
        (n, f"an ordinary review {'x' * (n % 10)}", "pos" if n % 2 else "neg") for n in range(20)
    ]
    return make_frame(*ordinary, (20, "long " * 200, "pos"), (21, "ok", "neg"), (22, "", "neg"))


def test_fix_exclude_length_outliers_excludes_the_reported_long_and_short_texts():
    frame = outlier_frame()

    changes = fix_exclude_length_outliers(frame)

    assert changes.to_dict("records") == [
        {"id": 20, "exclude": True, "reason": "Very long: 1,000 characters, typical is 23."},
        {"id": 21, "exclude": True, "reason": "Very short: 2 characters, typical is 23."},
    ]
    assert changes["id"].tolist() == find(quality_report(frame), "length_outlier")["record_ids"]


def test_fix_exclude_small_classes_excludes_every_record_of_a_small_label():
    frame = make_frame(
        *((n, f"text {n}", "big") for n in range(4)),
        (4, "rare one", "rare"),
        (5, "rare two", "rare"),
        (6, "no label", ""),
    )

    changes = fix_exclude_small_classes(frame, min_class_size=3)

    assert changes.to_dict("records") == [
        {"id": 4, "exclude": True, "reason": "Label 'rare' has only 2 records (fewer than 3)."},
        {"id": 5, "exclude": True, "reason": "Label 'rare' has only 2 records (fewer than 3)."},
    ]
    report = quality_report(frame, min_class_size=3)
    assert changes["id"].tolist() == find(report, "small_class")["record_ids"]


def test_fix_exclude_mostly_noise_excludes_texts_of_urls_digits_and_markup():
    frame = make_frame(
        (1, "see https://example.com/offers/2024 now", "spam"),
        (2, "12345 678", "spam"),
        (3, "I paid 20 euros for 2 tickets", "ham"),
        (4, "<p><br/></p> ok", "ham"),
    )

    changes = fix_exclude_mostly_noise(frame)

    assert changes.to_dict("records") == [
        {
            "id": 1,
            "exclude": True,
            "reason": "84% of its non-space characters are URLs, digits or markup.",
        },
        {
            "id": 2,
            "exclude": True,
            "reason": "100% of its non-space characters are URLs, digits or markup.",
        },
        {
            "id": 4,
            "exclude": True,
            "reason": "86% of its non-space characters are URLs, digits or markup.",
        },
    ]
    assert changes["id"].tolist() == find(quality_report(frame), "mostly_noise")["record_ids"]


# --- record flags -------------------------------------------------------------------------------
def test_record_flags_replace_the_reports_tokens_and_keep_the_imports():
    current = pd.Series(
        ["", ",truncated,", ",empty,", ",truncated,small_class,markup,", ",mojibake,"],
        index=[10, 11, 12, 13, 14],
    )
    findings = [
        {"kind": "empty", "record_ids": [12]},
        {"kind": "markup", "record_ids": [10, 11]},
        {"kind": "exact_duplicate", "record_ids": [11]},
    ]

    flags = record_flags(current, findings)

    assert flags.to_dict() == {
        10: ",markup,",
        11: ",truncated,exact_duplicate,markup,",
        12: ",empty,",  # the import's token; the report does not write 'empty'
        13: ",truncated,",
        14: "",
    }


def test_record_flags_of_a_report_mark_exactly_each_findings_records():
    frame = make_frame(
        (1, "Good film.", "pos", "train"),
        (2, "Good film.", "pos", "train"),
        (3, "good film", "pos", "test"),
        (4, "CafÃ© is nice", "neg", "train"),
    )
    report = quality_report(frame, min_class_size=2)
    current = pd.Series([""] * 4, index=[1, 2, 3, 4])

    flags = record_flags(current, report["findings"])

    assert flags.to_dict() == {
        1: "",
        2: ",exact_duplicate,",
        3: ",near_duplicate,split_leakage,",
        4: ",small_class,mojibake,",
    }
    assert all(kind in REPORT_FLAGS for kind in ("exact_duplicate", "near_duplicate"))


# --- the mojibake repair, on real Financial PhraseBank words -------------------------------------
@pytest.mark.parametrize(
    ("mangled", "repaired"),
    [
        ("Sepp+ñl+ñ", "Seppälä"),
        ("Bank of +àland", "Bank of Åland"),
        ("+ä+ñnekoski", "Äänekoski"),
        ("TYRV+ä+äN", "TYRVÄÄN"),
        ("Dahlstr+Âm", "Dahlström"),
        ("T+®l+®com", "Télécom"),
        ("Tel+¬maco Borba", "Telêmaco Borba"),
        ("Brand+úo", "Brandão"),
        ("Paran+í", "Paraná"),
        ("+£lemiste", "Ülemiste"),
        ("Sk+Ñne", "Skåne"),
        ("Walter G++nter", "Walter Günter"),
        ("Gohrsm++hle mills", "Gohrsmühle mills"),
        ("Myllykoski+ó s creditor", "Myllykoski\u2019s creditor"),
        ("the company+óEUR TM s capital", "the company\u2019s capital"),
        ("the Group -¦ s sales", "the Group \u2019s sales"),
        ("a net loss of +ó  x201a -¼ 59.3 million", "a net loss of € 59.3 million"),
        ("Efore Plc -® 1998-2006", "Efore Plc © 1998-2006"),
        ("InTouch -« HMI", "InTouch ® HMI"),
        ("+1 334-á323-á6201", "+1 334\u00a0323\u00a06201"),
        ("1200 -Ál volume", "1200 µl volume"),
        ("CafÃ©", "Café"),
    ],
)
def test_repair_mojibake_text_undoes_real_mangling(mangled: str, repaired: str):
    assert repair_mojibake_text(mangled) == repaired


@pytest.mark.parametrize(
    "text",
    ["C++ code", "profit up +£5m", "1+½ cups", "március 15-án", "naïve café", "a+b", "+ñ"],
)
def test_repair_mojibake_text_leaves_ordinary_text_alone(text: str):
    assert repair_mojibake_text(text) == text


def _ftfy_alphabet() -> list[str]:
    classes = [re.compile(f"[{members}]") for members in MOJIBAKE_CATEGORIES.values()]
    literals = {character for character in BADNESS_RE.pattern if ord(character) > 0x7F}
    special = [
        chr(code)
        for code in range(0x80, 0x10000)
        if chr(code) in literals or any(pattern.fullmatch(chr(code)) for pattern in classes)
    ]
    return [*special, *"aZz .,?!1-\n"]


FTFY_ALPHABET = _ftfy_alphabet()


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(FTFY_ALPHABET), max_size=8))
def test_ftfy_prefilter_never_skips_text_ftfy_considers_bad(text: str):
    # The report skips ftfy on texts FTFY_SUSPECT_RE rejects; that is only safe if every text
    # ftfy's own badness regex flags also passes the prefilter.
    if BADNESS_RE.search(text):
        assert FTFY_SUSPECT_RE.search(text)


def test_strip_markup_text_keeps_escaped_tags_as_text():
    assert strip_markup_text("&lt;b&gt; is bold <!-- note -->") == "<b> is bold"


# --- assign_splits -------------------------------------------------------------------------------
def labelled_frame() -> pd.DataFrame:
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 17 + [""] * 13
    return pd.DataFrame(
        {"id": np.arange(1, 111), "text": [f"text {i}" for i in range(110)], "label": labels}
    )


def test_assign_splits_honours_ratios_within_one_per_class():
    frame = labelled_frame()

    splits = assign_splits(frame, ratios=(0.7, 0.2, 0.1))

    counts = pd.crosstab(frame["label"], splits)
    for label, size in frame["label"].value_counts().items():
        for split, ratio in zip(SPLITS, (0.7, 0.2, 0.1), strict=True):
            assert abs(counts.loc[label, split] - ratio * size) <= 1, (label, split)


def test_assign_splits_default_ratios_give_exact_counts():
    frame = labelled_frame()

    counts = pd.crosstab(frame["label"], assign_splits(frame))

    assert counts.loc["a"].to_dict() == {"test": 5, "train": 40, "validation": 5}
    assert counts.loc["b"].to_dict() == {"test": 3, "train": 24, "validation": 3}
    # 17 * 0.8 = 13.6 and 17 * 0.1 = 1.7: the two largest remainders round up.
    assert counts.loc["c"].to_dict() == {"test": 2, "train": 13, "validation": 2}
    # Unlabelled records are split too, as a class of their own.
    assert counts.loc[""].to_dict() == {"test": 1, "train": 11, "validation": 1}


def test_assign_splits_is_deterministic_for_a_seed_and_ignores_row_order():
    frame = labelled_frame()

    first = assign_splits(frame, seed=5)
    shuffled = frame.sample(frac=1, random_state=3)

    assert first.equals(assign_splits(frame, seed=5))
    assert assign_splits(shuffled, seed=5).sort_index().equals(first)
    assert not first.equals(assign_splits(frame, seed=6))


def test_assign_splits_returns_a_series_aligned_with_the_frame():
    frame = labelled_frame().set_index(pd.Index(np.arange(1000, 1110)))

    splits = assign_splits(frame)

    assert splits.index.equals(frame.index)
    assert splits.name == "split"
    assert set(splits) == set(SPLITS)


def test_assign_splits_keeps_near_duplicates_in_one_split():
    texts = [f"Review number {i // 3}" + "!" * (i % 3) for i in range(90)]
    frame = pd.DataFrame({"id": np.arange(90), "text": texts, "label": ["a", "b"] * 45})
    keys = text_hashes(frame["text"])

    splits = assign_splits(frame, group_key=keys)

    assert splits.groupby(keys).nunique().max() == 1
    assert set(splits) == set(SPLITS)


def test_assign_splits_gives_a_three_member_class_one_record_per_split():
    frame = make_frame((1, "x", "rare"), (2, "y", "rare"), (3, "z", "rare"))

    assert sorted(assign_splits(frame)) == ["test", "train", "validation"]


@pytest.mark.parametrize("seed", range(10))
def test_assign_splits_moves_whole_groups_so_no_used_split_stays_empty(seed: int):
    # One group of 4 and two of 1: cutting at 80/10/10 can leave validation or test empty;
    # a small group then moves there, whole.
    frame = make_frame(*[(index, f"text {index}", "a") for index in range(1, 7)])
    keys = pd.Series([1, 1, 1, 1, 2, 3])

    splits = assign_splits(frame, seed=seed, group_key=keys)

    assert sorted(splits) == ["test", "train", "train", "train", "train", "validation"]


def test_assign_splits_leaves_out_splits_whose_ratio_is_zero():
    frame = labelled_frame()

    splits = assign_splits(frame, ratios=(0.9, 0.0, 0.1))

    assert set(splits) == {"train", "test"}


@pytest.mark.parametrize(
    ("ratios", "message"),
    [
        ((0.8, 0.1, 0.2), "Split ratios must add up to 1; (0.8, 0.1, 0.2) adds up to 1.1."),
        ((0.8, 0.2), "Give three split ratios, for train, validation and test; got 2."),
        ((1.1, -0.1, 0.0), "Split ratios must be numbers of 0 or more; got (1.1, -0.1, 0.0)."),
    ],
)
def test_assign_splits_rejects_bad_ratios_with_a_sentence(ratios: tuple, message: str):
    with pytest.raises(ValueError, match=re.escape(message)):
        assign_splits(labelled_frame(), ratios=ratios)


def test_assign_splits_rejects_a_group_key_of_the_wrong_length():
    with pytest.raises(ValueError, match=r"group_key has 3 values but the frame has 110 records\."):
        assign_splits(labelled_frame(), group_key=pd.Series([1, 2, 3]))


RATIO_CHOICES = [(0.8, 0.1, 0.1), (0.5, 0.25, 0.25), (1.0, 0.0, 0.0), (0.6, 0.0, 0.4)]


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", ""]), st.integers(min_value=0, max_value=25)),
        min_size=1,
        max_size=120,
    ),
    ratios=st.sampled_from(RATIO_CHOICES),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_assign_splits_never_splits_a_group(rows: list[tuple[str, int]], ratios, seed: int):
    frame = pd.DataFrame(
        {
            "id": np.arange(len(rows)),
            "text": [f"text {key}" for _, key in rows],
            "label": [label for label, _ in rows],
        }
    )
    keys = pd.Series([key for _, key in rows])

    splits = assign_splits(frame, ratios=ratios, seed=seed, group_key=keys)

    assert splits.groupby(keys.to_numpy()).nunique().max() == 1
    assert set(splits) <= {split for split, ratio in zip(SPLITS, ratios, strict=True) if ratio > 0}


# --- spreadsheet_safe ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=SUM(A1:A9)", "'=SUM(A1:A9)"),
        ("+41 22 000", "'+41 22 000"),
        ("-2+3", "'-2+3"),
        ("@cmd", "'@cmd"),
        ("\tindented", "'\tindented"),
        ("\rreturn", "'\rreturn"),
        ("plain text", "plain text"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_spreadsheet_safe_escapes_formula_starts(value: str, expected: str):
    assert spreadsheet_safe(value) == expected


# --- the demo datasets ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def phrasebank() -> pd.DataFrame:
    return load_demo(PHRASEBANK)


def test_phrasebank_mojibake_counts_every_mangled_row(phrasebank: pd.DataFrame):
    finding = find(quality_report(phrasebank), "mojibake")

    # The README says 95 training rows hold mangled names: that is the number of rows with any
    # non-ASCII character, and in this file every one of them is mangled ('+ñ', '+à', '-®',
    # '-¦ s', ...). Two more rows are mangled in pure ASCII, where 'ü' became '++' ('G++nter',
    # 'Gohrsm++hle'), which a non-ASCII count misses: 97 in all.
    non_ascii = ~phrasebank["text"].str.isascii()
    double_plus = phrasebank["text"].str.contains(r"[^\W\d_]\+\+[^\W\d_]")
    assert non_ascii.sum() == 95
    assert double_plus.sum() == 2
    expected_ids = phrasebank.loc[non_ascii | double_plus, "id"].tolist()
    assert finding["count"] == 97
    assert finding["record_ids"] == expected_ids


def test_phrasebank_repair_leaves_no_mojibake_behind(phrasebank: pd.DataFrame):
    changes = fix_repair_mojibake(phrasebank)
    repaired = phrasebank.set_index("id")
    repaired.loc[changes["id"], "text"] = changes["new_text"].to_numpy()

    assert find(quality_report(repaired.reset_index()), "mojibake") is None
    new_texts = " ".join(changes["new_text"])
    for name in ("Seppälä", "Åland", "Wärtsilä", "Lemminkäinen", "Günter", "Söderström"):
        assert name in new_texts
    # One row ('Varpaisj+â rvi', Varpaisjärvi) was mangled twice over; the pattern repair gives
    # 'VarpaisjÃ rvi' and ftfy reads 'Ã' before a space as 'à'. The lost byte cannot be
    # recovered.
    assert "Varpaisjà rvi" in new_texts
    assert not any(re.search(r"\+[^\x00-\x7f]", text) for text in changes["new_text"])
    assert all(unicodedata.is_normalized("NFC", text) for text in changes["new_text"])


@pytest.fixture(scope="module")
def sst2_report() -> dict[str, Any]:
    frame = load_demo(SST2)
    return {"frame": frame, "report": quality_report(frame)}


def test_sst2_exact_duplicates_match_the_readme(sst2_report: dict[str, Any]):
    assert find(sst2_report["report"], "exact_duplicate")["count"] == 366


def test_sst2_label_conflicts_include_the_five_texts_with_both_labels(
    sst2_report: dict[str, Any],
):
    frame, finding = sst2_report["frame"], find(sst2_report["report"], "label_conflict")
    members = frame[frame["id"].isin(finding["record_ids"])]

    # The README's five are the texts that occur verbatim with both labels.
    verbatim = members.groupby("text")["label"].nunique()
    assert sorted(verbatim[verbatim > 1].index) == [
        "excruciatingly",
        "laughably",
        "sillier",
        "sleeper",
        "the only reason",
    ]
    assert len(members[members["text"].isin(verbatim[verbatim > 1].index)]) == 10
    # Comparing normalised text finds more: SST-2's phrases come from parse trees, and the same
    # words with and without trailing punctuation often carry opposite labels ('amazingly dopey .'
    # is positive, 'amazingly dopey' negative). Those 146 further texts are real conflicts too.
    assert finding["title"] == "151 texts appear with more than one label (308 records)."
