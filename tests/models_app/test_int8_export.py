"""int8 exports keep their most sensitive nodes fp32, chosen on the calibration texts, and the
export job still records its parity against PyTorch."""

import onnx
import pytest

from models_app.exports import model_export_execute
from models_app.models import ModelExport
from models_app.runtime import export as export_module
from models_app.runtime.export import choose_fp32_nodes, export_onnx
from tests.models_app.serving_helpers import make_version
from tests.models_app.tiny_classifier import save_tiny_classifier
from tests.training_app.snapshot_helpers import make_snapshot, toy_rows

TEXTS = [f"this is {word} number {i}" for i in range(8) for word in ("good", "bad")]
QUANTIZED_OPS = {"MatMulInteger", "DynamicQuantizeMatMul", "QAttention"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_classifier(tmp_path_factory.mktemp("int8") / "tiny", seed=3)


def _graph_ops(path) -> dict[str, str]:
    return {node.name: node.op_type for node in onnx.load(str(path)).graph.node}


def test_choose_fp32_nodes_takes_the_most_sensitive_first_until_the_target():
    sensitivity = {"a": 0.001, "b": 0.5, "c": 0.02, "d": 0.0, "e": 0.3, "f": 0.0001}
    calls = []

    def agreement_without(excluded):
        calls.append(list(excluded))
        return 0.99 if len(excluded) < 2 else 1.0  # keeping two fp32 reaches the target

    chosen = choose_fp32_nodes(sensitivity, agreement_without, target=0.995, max_share=0.5)

    assert chosen == ["b", "e"]
    assert calls == [[], ["b"], ["b", "e"]]


def test_choose_fp32_nodes_stops_at_the_share_cap_and_never_keeps_a_harmless_node():
    sensitivity = {"a": 0.3, "b": 0.2, "c": 0.0, "d": 0.0}

    def never(excluded):
        return 0.5

    assert choose_fp32_nodes(sensitivity, never, target=0.995, max_share=0.25) == ["a"]
    # Cap of three, but only two nodes move the logits at all.
    assert choose_fp32_nodes(sensitivity, never, target=0.995, max_share=0.75) == ["a", "b"]
    assert choose_fp32_nodes(sensitivity, lambda excluded: 1.0, target=0.995, max_share=1) == []


def test_unreachable_target_keeps_the_most_sensitive_nodes_fp32_in_the_graph(
    folder, tmp_path, monkeypatch
):
    monkeypatch.setattr(export_module, "CALIBRATION_AGREEMENT_TARGET", 1.1)
    out = tmp_path / "model-int8.onnx"
    details = export_onnx(folder, out, kind="onnx-int8", calibration_texts=TEXTS)

    quantization = details["quantization"]
    fp32 = quantization["fp32_nodes"]
    ranked = [item["node"] for item in quantization["most_sensitive"]]
    total = quantization["quantized_nodes"] + len(fp32)
    assert len(fp32) == int(export_module.MAX_FP32_SHARE * total) >= 1
    assert fp32 == ranked[: len(fp32)]  # the most sensitive ones
    ops = _graph_ops(out)
    for name in fp32:
        assert ops[name] in export_module.INT8_OP_TYPES  # still the fp32 op
    quantized_nodes = [name for name, op in ops.items() if op in QUANTIZED_OPS]
    assert len(quantized_nodes) == quantization["quantized_nodes"], ops
    assert quantization["calibration_texts"] == len(TEXTS)
    assert 0.0 <= quantization["calibration_agreement_with_fp32"] <= 1.0


def test_reachable_target_quantizes_every_node_without_probing(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "CALIBRATION_AGREEMENT_TARGET", 0.0)
    out = tmp_path / "model-int8.onnx"
    details = export_onnx(folder, out, kind="onnx-int8", calibration_texts=TEXTS)

    quantization = details["quantization"]
    assert quantization["fp32_nodes"] == []
    assert "most_sensitive" not in quantization  # no per-node probes were needed
    ops = _graph_ops(out)
    assert not [op for op in ops.values() if op in export_module.INT8_OP_TYPES]
    assert (
        len([op for op in ops.values() if op in QUANTIZED_OPS]) == quantization["quantized_nodes"]
    )


def test_without_calibration_texts_every_node_is_quantized(folder, tmp_path):
    out = tmp_path / "model-int8.onnx"
    quantization = export_onnx(folder, out, kind="onnx-int8")["quantization"]

    assert quantization["fp32_nodes"] == []
    assert "calibration_agreement_with_fp32" not in quantization
    assert "Attention" in quantization["op_types"]
    assert "MatMul" in quantization["op_types"]


@pytest.mark.django_db
def test_export_job_calibrates_on_the_validation_split_and_records_parity(
    tmp_path_factory, monkeypatch
):
    monkeypatch.setattr(export_module, "CALIBRATION_AGREEMENT_TARGET", 1.1)
    version = make_version(tmp_path_factory, seed=5)
    version.snapshot = make_snapshot(toy_rows(12))
    version.save()
    export = ModelExport.objects.create(model_version=version, kind="onnx-int8")

    export = model_export_execute(export_id=export.pk)

    assert export.status == "succeeded", export.error_message
    export.refresh_from_db()
    quantization = export.details["quantization"]
    assert quantization["calibration_texts"] == export.parity_examples == 4
    assert quantization["fp32_nodes"], quantization  # the unreachable target kept some fp32
    assert export.agreement is not None
    assert export.max_abs_logit_delta is not None
    assert "label agreement with PyTorch" in export.message


def test_onnx_on_a_cpu_batches_under_the_small_token_budget(folder, tmp_path):
    from models_app import runtime
    from models_app.runtime.batching import DEFAULT_TOKEN_BUDGET, ONNX_CPU_TOKEN_BUDGET

    out = tmp_path / "model-fp32.onnx"
    export_onnx(folder, out, kind="onnx-fp32")
    onnx_predictor = runtime.load_predictor(
        folder, runtime="onnx-fp32", onnx_file=out, device="cpu"
    )
    torch_predictor = runtime.load_predictor(folder, runtime="pytorch", device="cpu")
    assert onnx_predictor.token_budget == ONNX_CPU_TOKEN_BUDGET < DEFAULT_TOKEN_BUDGET
    assert torch_predictor.token_budget == DEFAULT_TOKEN_BUDGET
    explicit = runtime.load_predictor(
        folder, runtime="onnx-fp32", onnx_file=out, device="cpu", token_budget=64
    )
    assert explicit.token_budget == 64
    # The same logits whatever the batching.
    texts = [f"this is {'good ' * (i % 5)}number {i}" for i in range(40)]
    assert abs(onnx_predictor.logits(texts) - explicit.logits(texts)).max() < 1e-4


def test_onnx_threads_spin_only_while_a_run_lasts(folder, tmp_path):
    from models_app.runtime.engines import OnnxEngine

    out = tmp_path / "model-fp32.onnx"
    export_onnx(folder, out, kind="onnx-fp32")
    engine = OnnxEngine(out, threads=2, device="cpu")
    options = engine.session.get_session_options()

    # On the CPU the two threads run two batches at once, each on one thread.
    assert (engine.workers, options.intra_op_num_threads) == (2, 1)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
