"""The serving runtime on its own (no Django): load, tokenize, batch, predict, cache, batch
concurrent requests."""

import threading

import numpy as np
import pytest

from models_app import runtime
from models_app.runtime.batching import length_batches, pad
from tests.models_app.tiny_classifier import save_tiny_classifier


@pytest.fixture(scope="module")
def single_label_folder(tmp_path_factory):
    return save_tiny_classifier(tmp_path_factory.mktemp("single"), labels=("neg", "pos", "mid"))


def test_length_batches_sort_longest_first_and_keep_to_the_token_budget():
    lengths = [3, 50, 10, 50, 4]

    batches = length_batches(lengths, batch_size=4, token_budget=100)

    assert [list(b) for b in batches] == [[1, 3], [2, 4, 0]]


def test_pad_masks_the_padding():
    input_ids, attention_mask = pad([[5, 6, 7], [8]], pad_id=0)

    assert input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_single_label_predictions_name_a_label_and_score_every_class(single_label_folder):
    predictor = runtime.load_predictor(single_label_folder, runtime="pytorch")

    results = predictor.predict(["this is a good movie", "bad"])

    assert len(results) == 2
    for result in results:
        assert set(result) == {"label", "scores"}
        assert list(result["scores"]) == ["neg", "pos", "mid"]
        assert result["label"] == max(result["scores"], key=result["scores"].get)
        assert sum(result["scores"].values()) == pytest.approx(1.0, abs=1e-4)


def test_batched_logits_equal_one_at_a_time(single_label_folder):
    predictor = runtime.load_predictor(single_label_folder, runtime="pytorch")
    texts = ["good", "this is a bad bad movie", "the number 12345 is fine", "awful"]

    together = predictor.logits(texts)
    alone = np.concatenate([predictor.logits([text]) for text in texts])

    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_long_texts_are_truncated_to_the_model_max_length(single_label_folder):
    predictor = runtime.load_predictor(single_label_folder, runtime="pytorch")

    (ids,) = predictor.encode(["good " * 500])

    assert len(ids) == 32  # lepton_max_length of the tiny model


def test_multi_label_returns_labels_over_the_threshold(tmp_path):
    folder = save_tiny_classifier(tmp_path, task="multi_label", labels=("a", "b", "c"))
    predictor = runtime.load_predictor(folder)

    (result,) = predictor.predict(["good movie"])

    assert set(result) == {"labels", "scores"}
    assert result["labels"] == [n for n, s in result["scores"].items() if s >= 0.5]


def test_regression_returns_a_value(tmp_path):
    folder = save_tiny_classifier(tmp_path, task="regression")
    predictor = runtime.load_predictor(folder)

    (result,) = predictor.predict(["good movie"])

    assert set(result) == {"value"}
    assert isinstance(result["value"], float)


def test_missing_folder_is_an_artifact_error_with_a_plain_reason(tmp_path):
    with pytest.raises(runtime.ArtifactError, match="model files are missing"):
        runtime.load_predictor(tmp_path / "gone")


def test_missing_onnx_file_is_an_artifact_error(single_label_folder):
    with pytest.raises(runtime.ArtifactError, match="ONNX file is missing"):
        runtime.load_predictor(single_label_folder, runtime="onnx-int8")


def test_cache_loads_once_per_key_even_when_threads_race():
    cache = runtime.ModelCache(max_models=2)
    loads = []
    start = threading.Barrier(8)

    def loader():
        loads.append(1)
        return object()

    def ask():
        start.wait()
        cache.get_or_load(("endpoint", 1), loader)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(loads) == 1


def test_cache_evicts_the_least_recently_used_and_closes_it():
    cache = runtime.ModelCache(max_models=2)
    closed = []

    class Model:
        def __init__(self, name):
            self.name = name

        def close(self):
            closed.append(self.name)

    for name in ("a", "b", "c"):
        cache.get_or_load(name, lambda name=name: Model(name))

    assert cache.keys() == ["b", "c"]
    assert closed == ["a"]


def test_microbatcher_gives_each_concurrent_caller_its_own_rows(single_label_folder):
    predictor = runtime.load_predictor(single_label_folder)
    batcher = runtime.MicroBatcher(predictor, window_seconds=0.01)
    texts = [f"good movie number {i}" for i in range(40)]
    expected = predictor.predict(texts)
    answers = [None] * len(texts)

    def call(i):
        answers[i] = batcher.submit([texts[i]])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.close()

    for i, answer in enumerate(answers):
        assert answer[0]["label"] == expected[i]["label"]
        assert answer[0]["scores"] == pytest.approx(expected[i]["scores"], abs=1e-4)


def test_microbatcher_still_answers_after_it_was_closed(single_label_folder):
    predictor = runtime.load_predictor(single_label_folder)
    batcher = runtime.MicroBatcher(predictor)
    batcher.close()

    (result,) = batcher.submit(["good"])

    assert result["label"] in ("neg", "pos", "mid")


class _RecordingPredictor:
    """Echoes each text back, recording which thread ran each call and its size."""

    def __init__(self, delay: float = 0.0):
        self.calls = []
        self.delay = delay

    def predict(self, texts):
        self.calls.append((threading.get_ident(), len(texts)))
        if self.delay:
            threading.Event().wait(self.delay)
        return [{"label": text} for text in texts]


def test_a_lone_request_runs_in_the_callers_own_thread():
    predictor = _RecordingPredictor()
    batcher = runtime.MicroBatcher(predictor)

    answer = batcher.submit(["a", "b"])

    assert answer == [{"label": "a"}, {"label": "b"}]
    assert predictor.calls == [(threading.get_ident(), 2)]


def test_requests_arriving_while_the_model_is_busy_are_batched_together():
    predictor = _RecordingPredictor(delay=0.05)
    batcher = runtime.MicroBatcher(predictor, window_seconds=0.01)
    answers = {}

    def call(i):
        answers[i] = batcher.submit([f"t{i}", f"u{i}"])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert answers == {i: [{"label": f"t{i}"}, {"label": f"u{i}"}] for i in range(12)}
    assert len(predictor.calls) < 12  # some calls carried several requests
    assert sum(size for _, size in predictor.calls) == 24


def test_one_failing_request_does_not_fail_its_batch_neighbours():
    class Picky(_RecordingPredictor):
        def predict(self, texts):
            if "bad" in texts:
                raise ValueError("bad text")
            return super().predict(texts)

    batcher = runtime.MicroBatcher(Picky(delay=0.02), window_seconds=0.01)
    outcomes = {}

    def call(text):
        try:
            outcomes[text] = batcher.submit([text])
        except ValueError as error:
            outcomes[text] = str(error)

    threads = [threading.Thread(target=call, args=(t,)) for t in ("a", "bad", "c", "d")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes == {
        "a": [{"label": "a"}],
        "bad": "bad text",
        "c": [{"label": "c"}],
        "d": [{"label": "d"}],
    }


def test_ttl_cache_memoises_until_it_expires_or_is_cleared():
    memo = runtime.TtlCache(ttl_seconds=60)
    calls = []

    def compute():
        calls.append(1)
        return len(calls)

    assert memo.get_or_compute("a", compute) == 1
    assert memo.get_or_compute("a", compute) == 1
    memo.clear()
    assert memo.get_or_compute("a", compute) == 2
    memo.ttl_seconds = 0
    assert memo.get_or_compute("b", compute) == 3
    assert memo.get_or_compute("b", compute) == 4


def test_ttl_cache_does_not_keep_a_value_read_while_it_was_cleared():
    memo = runtime.TtlCache(ttl_seconds=60)

    def stale_read():
        memo.clear()  # a change lands while the old value is being read
        return "old"

    assert memo.get_or_compute("a", stale_read) == "old"
    assert memo.get_or_compute("a", lambda: "new") == "new"


@pytest.mark.parametrize(
    ("requested", "cuda_available", "expected"),
    [
        ("auto", True, "cuda"),
        ("auto", False, "cpu"),
        ("cpu", True, "cpu"),
        ("cuda:1", True, "cuda:1"),
        ("cuda", False, "cpu"),
    ],
)
def test_device_choice_uses_cuda_when_present(requested, cuda_available, expected):
    from models_app.runtime.engines import choose_device

    assert choose_device(requested, cuda_available=cuda_available) == expected


def test_device_choice_asks_torch_by_default(monkeypatch):
    import torch

    from models_app.runtime.engines import choose_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_device("auto") == "cpu"


@pytest.mark.parametrize(
    ("available", "device", "expected"),
    [
        (
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
            "cuda",
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
        ),
        (["CUDAExecutionProvider", "CPUExecutionProvider"], "cpu", ["CPUExecutionProvider"]),
        (["CPUExecutionProvider"], "cuda", ["CPUExecutionProvider"]),
    ],
)
def test_onnx_runtime_takes_the_cuda_provider_only_on_a_gpu(available, device, expected):
    from models_app.runtime.engines import onnx_providers

    assert onnx_providers(available, device) == expected


def test_torch_engine_on_cpu_has_no_autocast(single_label_folder):
    predictor = runtime.load_predictor(single_label_folder, runtime="pytorch", device="cpu")

    assert predictor.engine.device == "cpu"
    assert predictor.engine.autocast_dtype is None


def test_onnx_on_the_cpu_runs_batches_side_by_side_with_the_same_answers(
    single_label_folder, tmp_path
):
    from models_app.runtime.export import export_onnx

    path = tmp_path / "model-fp32.onnx"
    export_onnx(single_label_folder, path, kind="onnx-fp32")
    texts = [f"this is good number {i}" + " really" * (i % 7) for i in range(40)]
    one = runtime.load_predictor(
        single_label_folder, runtime="onnx-fp32", onnx_file=path, threads=1, device="cpu"
    )
    two = runtime.load_predictor(
        single_label_folder, runtime="onnx-fp32", onnx_file=path, threads=2, device="cpu"
    )
    assert (one.engine.workers, two.engine.workers) == (1, 2)
    # Each session runs a batch on one thread; the engine runs up to `workers` at once.
    assert two.engine.session.get_session_options().intra_op_num_threads == 1
    seen, running, most = set(), [0], [0]
    lock = threading.Lock()
    inner = two.engine.run

    def watched(input_ids, attention_mask):
        with lock:
            seen.add(threading.get_ident())
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            threading.Event().wait(0.02)  # long enough for the other worker to start one
            return inner(input_ids, attention_mask)
        finally:
            with lock:
                running[0] -= 1

    two.engine.run = watched

    np.testing.assert_allclose(two.logits(texts), one.logits(texts), atol=1e-5)
    assert len(seen) == 2
    assert most[0] == 2
    # A request too small for two full batches is still split in two, one per thread.
    seen.clear()
    two.logits(texts[:6])
    assert len(seen) == 2
    assert two.predict(texts[:1])[0]["label"] == one.predict(texts[:1])[0]["label"]
