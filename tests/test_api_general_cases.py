"""The whole loop through the REST API, as a client we have never seen would drive it, with data
unlike the shared datasets: upload -> import -> label schema -> split -> snapshot -> train ->
register -> deploy -> predict -> batch prediction.

Jobs are published to the Redis test broker and run here, as a worker would (the services'
``*_execute`` functions); training is real, on a 2-layer BERT built from a config."""

from __future__ import annotations

import csv
import io
import json
import random

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from datasets_app.models import DatasetJob
from datasets_app.services import dataset_job_execute
from models_app import runtime
from models_app.batch_prediction import batch_prediction_execute
from models_app.models import BaseModel
from tests.conftest import broker_for_this_process
from tests.schema_check import assert_conforms, load_schema
from tests.training_app.tiny_model import save_tiny_bert
from training_app.services import training_run_execute

API = "/api/v1"
pytestmark = pytest.mark.django_db(transaction=True)
FAST = {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "max_length": 32}


@pytest.fixture(autouse=True)
def _broker(redis_url):
    runtime.model_cache.clear()
    with broker_for_this_process(redis_url):
        yield
    runtime.model_cache.clear()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-general"))


@pytest.fixture
def base_model(db, tiny_dir):
    return BaseModel.objects.create(
        name="tiny-bert", source="local", location=str(tiny_dir), is_default=True
    )


@pytest.fixture
def api(analyst) -> APIClient:
    client = APIClient()
    client.force_authenticate(analyst)
    return client


# --- helpers ---------------------------------------------------------------------------------
def ok(response, code=200):
    assert response.status_code == code, (response.status_code, response.content[:2000])
    return response.json() if response.content else None


def drain(dataset_id: int) -> None:
    """Run every queued job of the dataset here, oldest first, until none is left."""
    for _ in range(20):
        queued = list(
            DatasetJob.objects.filter(dataset_id=dataset_id, status="queued")
            .order_by("id")
            .values_list("id", flat=True)
        )
        if not queued:
            return
        for job_id in queued:
            dataset_job_execute(job_id=job_id)


def upload(api, data: bytes, *, name="data.csv", mapping=None, title="Probe") -> dict:
    fields = {"file": SimpleUploadedFile(name, data, content_type="text/csv"), "name": title}
    if mapping is not None:
        fields["mapping"] = json.dumps(mapping)
    return ok(api.post(f"{API}/datasets/", fields, format="multipart"), 201)


def csv_bytes(rows: list[tuple], header=("text", "label"), *, delimiter=",", encoding="utf-8"):
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode(encoding)


def import_dataset(api, data: bytes, mapping: dict, **kwargs) -> dict:
    dataset = upload(api, data, mapping=mapping, **kwargs)
    assert "import_errors" not in dataset, dataset
    drain(dataset["id"])
    dataset = ok(api.get(f"{API}/datasets/{dataset['id']}/"))
    assert dataset["status"] == "ready", dataset
    return dataset


def split_and_snapshot(api, dataset_id: int) -> dict:
    ok(api.post(f"{API}/datasets/{dataset_id}/split/", {}, format="json"), 202)
    drain(dataset_id)
    dataset = ok(api.get(f"{API}/datasets/{dataset_id}/"))
    assert dataset["latest_jobs"]["split"]["status"] == "succeeded", dataset["latest_jobs"]
    return ok(api.post(f"{API}/datasets/{dataset_id}/snapshots/", {}, format="json"), 201)


def train(api, snapshot_id: int, task: str, params=None) -> dict:
    run = ok(
        api.post(
            f"{API}/runs/",
            {"snapshot": snapshot_id, "task": task, "params": {**FAST, **(params or {})}},
            format="json",
        ),
        201,
    )
    training_run_execute(run_id=run["id"])
    run = ok(api.get(f"{API}/runs/{run['id']}/"))
    assert run["status"] == "succeeded", (run["error_message"], run["events"])
    assert run["model_version"], run
    return run


def deploy_and_predict(api, version_id: int, slug: str, texts: list[str]) -> dict:
    ok(
        api.post(
            f"{API}/deployments/",
            {"slug": slug, "version": version_id, "runtime": "pytorch"},
            format="json",
        ),
        201,
    )
    return ok(api.post(f"{API}/deployments/{slug}/predict/", {"texts": texts}, format="json"))


def batch(api, version_id: int, **fields) -> tuple[dict, bytes]:
    fmt = "multipart" if "file" in fields else "json"
    started = ok(
        api.post(f"{API}/model-versions/{version_id}/batch-predictions/", fields, format=fmt), 202
    )
    batch_prediction_execute(batch_id=started["id"])
    done = ok(api.get(f"{API}/batch-predictions/{started['id']}/"))
    assert done["status"] == "succeeded", done
    download = api.get(done["download_url"])
    assert download.status_code == 200
    return done, b"".join(download.streaming_content)


# --- (a) many classes, some with one or two examples ----------------------------------------
def many_class_rows(seed=3) -> list[tuple[str, str]]:
    rng = random.Random(seed)  # noqa: S311 - test data
    words = ["good", "great", "fine", "bad", "awful", "poor", "movie", "number", "the", "a"]
    rows = []
    for index in range(30):
        label = f"intent_{index:02d}"
        count = 1 if index < 3 else 2 if index < 6 else 10
        for _ in range(count):
            rows.append((" ".join(rng.choice(words) for _ in range(5)) + f" {index}", label))
    rng.shuffle(rows)
    return rows


def test_many_classes_with_singletons_run_the_whole_loop(api, base_model):
    rows = many_class_rows()
    dataset = import_dataset(
        api, csv_bytes(rows), {"text_columns": ["text"], "label_column": "label"}
    )
    assert len(dataset["label_counts"]) == 30
    snapshot = split_and_snapshot(api, dataset["id"])
    # Three classes have one example: the split keeps them in train, and a run says which
    # classes are too small, by field, instead of failing later.
    refused = api.post(
        f"{API}/runs/", {"snapshot": snapshot["id"], "task": "single_label"}, format="json"
    )
    assert refused.status_code == 400
    message = refused.json()["errors"]["snapshot"][0]
    assert message.startswith(
        "Classes 'intent_00', 'intent_01', 'intent_02' have fewer than 2 training examples each."
    )
    # The quality report's one-click fix leaves them out; the next snapshot trains.
    ok(api.post(f"{API}/datasets/{dataset['id']}/clean/", {"kind": "exclude_small_classes"}), 202)
    drain(dataset["id"])
    snapshot = ok(api.post(f"{API}/datasets/{dataset['id']}/snapshots/", {}, format="json"), 201)
    kept = set(snapshot["label_counts"])
    run = train(api, snapshot["id"], "single_label")
    body = deploy_and_predict(api, run["model_version"], "many", ["good movie 3", "awful 29"])
    labels = set(run["label_names"])
    assert labels == kept
    for prediction in body["predictions"]:
        assert set(prediction["scores"]) == labels
        assert prediction["label"] in labels
        assert abs(sum(prediction["scores"].values()) - 1) < 1e-3
    done, content = batch(api, run["model_version"], snapshot=snapshot["id"])
    assert done["rows_total"] == snapshot["record_count"]
    table = list(csv.DictReader(io.StringIO(content.decode("utf-8"))))
    assert len(table) == snapshot["record_count"]
    assert {f"score:{label}" for label in labels} <= set(table[0])


# --- (b) binary with heavy imbalance ----------------------------------------------------------
def test_binary_with_heavy_imbalance(api, base_model):
    rng = random.Random(7)  # noqa: S311 - test data
    rows = [(f"good movie {i} " + rng.choice(["fine", "great"]), "ok") for i in range(190)]
    rows += [(f"awful poor {i}", "fraud") for i in range(8)]
    rng.shuffle(rows)
    dataset = import_dataset(
        api, csv_bytes(rows), {"text_columns": ["text"], "label_column": "label"}
    )
    snapshot = split_and_snapshot(api, dataset["id"])
    assert snapshot["label_counts"] == {"ok": 190, "fraud": 8}
    run = train(api, snapshot["id"], "single_label")
    assert run["label_names"] == ["fraud", "ok"]
    body = deploy_and_predict(api, run["model_version"], "fraud", ["awful poor 3"])
    assert set(body["predictions"][0]["scores"]) == {"fraud", "ok"}
    done, _ = batch(api, run["model_version"], snapshot=snapshot["id"], split="test")
    assert set(done["summary"]) >= {"accuracy", "macro_f1"}, done["summary"]


# --- (c) multi-label --------------------------------------------------------------------------
def test_multi_label(api, base_model):
    rows = []
    for i in range(60):
        tags = [
            t for t, on in (("good", i % 2), ("movie", i % 3 == 0), ("number", i % 5 == 0)) if on
        ]
        tags = tags or ["number"]
        # Separators with spaces around them, as people type them.
        rows.append((" ".join(tags) + f" {i}", " | ".join(tags) if i % 4 == 1 else "|".join(tags)))
    dataset = import_dataset(
        api, csv_bytes(rows), {"text_columns": ["text"], "label_column": "label"}
    )
    schema = ok(api.get(f"{API}/datasets/{dataset['id']}/label-schema/"))
    ok(
        api.put(
            f"{API}/datasets/{dataset['id']}/label-schema/",
            {"labels": ["good", "movie", "number"], "multiple": True, "drop_labels_in_use": True},
            format="json",
        )
    )
    snapshot = split_and_snapshot(api, dataset["id"])
    run = train(api, snapshot["id"], "multi_label")
    assert sorted(run["label_names"]) == ["good", "movie", "number"], (schema, run["label_names"])
    body = deploy_and_predict(api, run["model_version"], "tags", ["good movie", ""])
    for prediction in body["predictions"]:
        assert set(prediction["scores"]) == {"good", "movie", "number"}
        assert isinstance(prediction["labels"], list)
    batch(api, run["model_version"], snapshot=snapshot["id"], output_format="jsonl")


# --- (d) regression ---------------------------------------------------------------------------
def test_regression_on_a_number_column(api, base_model):
    rows = [(f"good {i}" if i % 2 else f"bad {i}", f"{(i % 2) * 4 + 0.5:.1f}") for i in range(60)]
    rows += [("awful", "-1e0"), ("great", " 3 ")]
    dataset = import_dataset(
        api,
        csv_bytes(rows, header=("text", "score")),
        {"text_columns": ["text"], "label_column": "score"},
    )
    snapshot = split_and_snapshot(api, dataset["id"])
    run = train(api, snapshot["id"], "regression")
    body = deploy_and_predict(api, run["model_version"], "score", ["good", "bad"])
    for prediction in body["predictions"]:
        assert isinstance(prediction["value"], float)
    done, content = batch(api, run["model_version"], snapshot=snapshot["id"])
    assert done["rows_total"] == len(rows)
    table = list(csv.DictReader(io.StringIO(content.decode("utf-8"))))
    assert len(table) == len(rows)
    assert all(isinstance(float(row["prediction"]), float) for row in table)


# --- (e) hard text and file formats -----------------------------------------------------------
HARD_TEXTS = [
    "Ça marche très bien 👍🏽 good",
    "שלום עולם, זה טוב great",  # Hebrew (RTL)
    "مرحبا بالعالم awful",  # Arabic (RTL)
    "多语言文本 bad",
    'line one\nline two, with a comma and "quotes"',
    '=HYPERLINK("http://x") poor',
    "  leading and trailing spaces  ",
    "\u200bzero\u200dwidth\ufeff good",
    "good " * 6000,  # 30,000 characters: longer than DATASET_MAX_TEXT_CHARS
]


def hard_rows() -> list[tuple[str, str]]:
    rows = []
    for i in range(80):
        text = HARD_TEXTS[i % len(HARD_TEXTS)] + f" {i}"
        label = ("1", "2", "3")[i % 3]  # a label column of numbers, for classification
        rows.append((text, label))
    rows += [rows[0], rows[1], rows[0]]  # duplicate rows
    rows += [("", "2"), ("   ", "1")]  # empty texts
    return rows


def test_hard_texts_with_numeric_labels_run_the_whole_loop(api, base_model):
    rows = hard_rows()
    dataset = import_dataset(
        api, csv_bytes(rows), {"text_columns": ["text"], "label_column": "label"}
    )
    assert dataset["record_count"] == len(rows)
    snapshot = split_and_snapshot(api, dataset["id"])
    run = train(api, snapshot["id"], "single_label")
    assert run["label_names"] == ["1", "2", "3"]
    texts = [*HARD_TEXTS[:6], "", " "]
    body = deploy_and_predict(api, run["model_version"], "hard", texts)
    assert len(body["predictions"]) == len(texts)
    for prediction in body["predictions"]:
        assert set(prediction["scores"]) == {"1", "2", "3"}
    upload_rows = [(t, str(i % 3 + 1)) for i, t in enumerate(HARD_TEXTS)]
    for encoding, delimiter in (("utf-16", ";"), ("cp1252", ","), ("utf-8-sig", "\t")):
        safe = [(t.encode(encoding, "replace").decode(encoding), lab) for t, lab in upload_rows]
        data = csv_bytes(safe, delimiter=delimiter, encoding=encoding)
        done, content = batch(
            api, run["model_version"], file=SimpleUploadedFile("in.csv", data), text_column="text"
        )
        assert done["rows_total"] == len(upload_rows), (encoding, done)
        table = list(csv.DictReader(io.StringIO(content.decode("utf-8"))))
        assert [row["prediction"] in {"1", "2", "3"} for row in table] == [True] * len(safe)
        assert [row["text"] for row in table[:4]] == [t for t, _ in safe[:4]], encoding


@pytest.mark.parametrize(
    ("encoding", "delimiter"),
    [("utf-8", ";"), ("latin-1", ","), ("utf-16", ","), ("utf-16", "\t"), ("utf-8-sig", "|")],
)
def test_encodings_and_delimiters_import_the_same_records(api, encoding, delimiter):
    rows = [("Crème brûlée à la carte", "dessert"), ("Größe; Maß, Fuß", "german"), ("ok", "x")]
    rows = rows * 3
    dataset = import_dataset(
        api,
        csv_bytes(rows, delimiter=delimiter, encoding=encoding),
        {"text_columns": ["text"], "label_column": "label"},
    )
    assert dataset["record_count"] == len(rows)
    records = ok(api.get(f"{API}/datasets/{dataset['id']}/records/?page_size=500"))["results"]
    assert [r["text"] for r in records] == [t for t, _ in rows]


def test_whitespace_variant_labels_are_one_label(api):
    rows = [("a", "positive"), ("b", " positive"), ("c", "positive "), ("d", "negative")] * 3
    dataset = import_dataset(
        api, csv_bytes(rows), {"text_columns": ["text"], "label_column": "label"}
    )
    assert dataset["label_counts"] == {"positive": 9, "negative": 3}


def test_header_only_and_empty_files_are_refused_in_words(api):
    cases = {
        b"text,label\n": "The file has a header but no rows under it.",
        b"\xef\xbb\xbf": "The file is empty.",
        "text;label\r\n".encode("utf-16"): "The file has a header but no rows under it.",
    }
    for data, message in cases.items():
        response = api.post(
            f"{API}/datasets/",
            {
                "file": SimpleUploadedFile("h.csv", data),
                "mapping": json.dumps({"text_columns": ["text"], "label_column": "label"}),
            },
            format="multipart",
        )
        # Stored (the file is kept, as every upload), and failed with the reason in words.
        assert response.status_code == 201, response.content
        dataset = ok(api.get(f"{API}/datasets/{response.json()['id']}/"))
        assert (dataset["status"], dataset["status_message"]) == ("failed", message)
    empty = api.post(f"{API}/datasets/", {"file": SimpleUploadedFile("e.csv", b"")})
    assert empty.status_code == 400
    assert empty.json()["errors"] == {"file": ["The submitted file is empty."]}


# --- the answers and the schema ---------------------------------------------------------------
def test_answers_match_the_openapi_schema(api, base_model):
    """Each answer of the loop, refusals included, has the shape /api/schema/ documents."""
    schema = load_schema(api)
    fails = []

    def check(r, method="get"):
        try:
            assert_conforms(schema, r, method=method)
        except AssertionError as e:
            fails.append(str(e)[:300])

    rows = [(f"good {i}", "a") for i in range(30)] + [(f"bad {i}", "b") for i in range(30)]
    dataset = import_dataset(
        api, csv_bytes(rows), {"text_columns": ["text"], "label_column": "label"}
    )
    d = dataset["id"]
    check(api.get(f"{API}/datasets/"))
    check(api.get(f"{API}/datasets/{d}/"))
    check(api.get(f"{API}/datasets/{d}/records/"))
    check(api.get(f"{API}/datasets/{d}/label-schema/"))
    check(
        api.put(f"{API}/datasets/{d}/label-schema/", {"labels": ["a", "b"]}, format="json"), "put"
    )
    check(api.post(f"{API}/datasets/{d}/split/", {}, format="json"), "post")
    drain(d)
    r = api.post(f"{API}/datasets/{d}/snapshots/", {}, format="json")
    check(r, "post")
    s = r.json()["id"]
    check(api.get(f"{API}/datasets/{d}/snapshots/"))
    check(api.get(f"{API}/snapshots/{s}/"))
    check(api.post(f"{API}/runs/estimate/", {"snapshot": s}, format="json"), "post")
    run = train(api, s, "single_label")
    check(api.get(f"{API}/runs/"))
    check(api.get(f"{API}/runs/{run['id']}/"))
    check(api.get(f"{API}/runs/{run['id']}/metrics/"))
    v = run["model_version"]
    check(api.get(f"{API}/model-versions/"))
    check(api.get(f"{API}/model-versions/{v}/"))
    check(
        api.post(f"{API}/model-versions/{v}/alias/", {"name": "production"}, format="json"), "post"
    )
    check(api.get(f"{API}/model-aliases/"))
    check(api.get(f"{API}/model-versions/{v}/exports/"))
    check(
        api.post(
            f"{API}/deployments/", {"slug": "x", "version": v, "runtime": "pytorch"}, format="json"
        ),
        "post",
    )
    check(api.get(f"{API}/deployments/"))
    check(api.get(f"{API}/deployments/x/"))
    check(api.post(f"{API}/deployments/x/predict/", {"texts": ["good"]}, format="json"), "post")
    check(api.post(f"{API}/deployments/x/predict/", {"texts": []}, format="json"), "post")
    check(api.post(f"{API}/deployments/x/stop/", {}, format="json"), "post")
    check(api.post(f"{API}/deployments/x/predict/", {"texts": ["good"]}, format="json"), "post")
    check(api.post(f"{API}/deployments/x/start/", {}, format="json"), "post")
    done, _ = batch(api, v, snapshot=s)
    check(api.get(f"{API}/batch-predictions/{done['id']}/"))
    check(api.get(f"{API}/model-versions/{v}/batch-predictions/"))
    check(
        api.post(f"{API}/prediction-tokens/", {"name": "t", "endpoints": ["x"]}, format="json"),
        "post",
    )
    check(api.get(f"{API}/prediction-tokens/"))
    check(api.get(f"{API}/base-models/"))
    check(api.get(f"{API}/me/"))
    check(api.get(f"{API}/health/"))
    check(api.get(f"{API}/"))
    check(api.get(f"{API}/datasets/{d}/agreement/"))
    check(api.get(f"{API}/datasets/{d}/labeling/next/"))
    check(api.get(f"{API}/datasets/{d}/pre-labels/"))
    check(api.get(f"{API}/datasets/{d}/retrain/"))
    check(api.get(f"{API}/searches/"))
    check(
        api.post(f"{API}/runs/", {"snapshot": s, "params": {"epochs": -1}}, format="json"), "post"
    )
    check(api.get(f"{API}/runs/", {"status": "done"}))
    check(api.get(f"{API}/datasets/{d}/records/", {"flag": "typo"}))
    check(api.get(f"{API}/datasets/999999/"))
    check(api.post(f"{API}/deployments/", {"slug": "Bad Slug"}, format="json"), "post")
    assert fails == []
