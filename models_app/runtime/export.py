"""ONNX exports of a version folder (fp32, graph-optimised; int8, dynamically quantized) and
the parity check of an export against the PyTorch model.

Recipes measured on this kind of machine (see shared STACK.md): ONNX Runtime's BERT fuser only
fuses attention when the model is exported with ``attn_implementation="eager"``; quantizing a
fused graph needs symbolic shape inference first. int8 weights are always per channel (one
scale per output column): per-tensor weights on a VNNI CPU kept only 97.7-98.7% of a TREC
model's labels. ``reduce_range`` (7-bit weights) is only for CPUs without VNNI, where 8-bit
products can saturate the AVX2 int8 instructions.

int8 quantizes the dense MatMuls and the fused Attention nodes (their QKV projection), which is
where the speed is; the error is concentrated in a few nodes (on a TREC MiniLM: the feed-forward
MatMuls of the first layers, whose GELU activations have outliers that per-tensor dynamic
activation scales lose). With texts of the version's validation split the export measures each
node's sensitivity (logit drift when only that node is quantized) and keeps the most sensitive
ones fp32 until the graph agrees with fp32 on those texts (see `choose_fp32_nodes`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from models_app.runtime.artifact import ArtifactError, read_model_info

# model_type -> ORT transformer-optimizer model type, for the architectures it can fuse.
OPTIMIZER_MODEL_TYPES = {
    "bert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "camembert": "bert",
    "distilbert": "bert",
    "electra": "bert",
    "mpnet": "bert",
}
OPSET = 17
# int8: the op types quantized; the calibration texts used at most; the label agreement with
# fp32 on them that the chosen graph must reach (half a point above the 99% parity bar, as a
# margin for texts it has not seen); the largest share of those nodes kept fp32.
INT8_OP_TYPES = ("MatMul", "Attention")
CALIBRATION_MAX_TEXTS = 300
CALIBRATION_AGREEMENT_TARGET = 0.995
MAX_FP32_SHARE = 0.25


def cpu_has_vnni() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags or "amx_int8" in flags


def export_onnx(
    folder: str | Path,
    out_path: str | Path,
    *,
    kind: str,
    progress: Callable[[int, str], None] | None = None,
    calibration_texts: Sequence[str] = (),
) -> dict:
    """Write `kind` ("onnx-fp32" or "onnx-int8") of the version in `folder` to `out_path`.

    `calibration_texts` (the validation split) choose which int8 nodes stay fp32; without them
    every MatMul and Attention node is quantized.
    Returns what was done: {"optimized": bool, "quantization": {...}, "size_bytes": int}."""
    if kind not in ("onnx-fp32", "onnx-int8"):
        raise ArtifactError(f"Unknown export kind {kind!r}.")
    report = progress or (lambda percent, message: None)
    info = read_model_info(folder)
    if info.unmerged_adapter:
        raise ArtifactError(
            "This version keeps a prefix-tuning adapter that cannot be merged into the weights, "
            "so it cannot be exported to ONNX; serve it with PyTorch."
        )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    details: dict = {}
    with tempfile.TemporaryDirectory() as temp:
        raw = Path(temp) / "raw.onnx"
        report(10, "Exporting the PyTorch graph to ONNX.")
        _torch_export(info.folder, raw)
        report(45, "Optimising the graph (ONNX Runtime transformer optimizer).")
        fused = Path(temp) / "fused.onnx"
        details["optimized"] = _optimize(raw, fused, info.folder)
        current = fused if details["optimized"] else raw
        if kind == "onnx-int8":
            quantized = Path(temp) / "int8.onnx"
            details["quantization"] = _quantize(
                current,
                quantized,
                Path(temp),
                folder=info.folder,
                texts=list(calibration_texts)[:CALIBRATION_MAX_TEXTS],
                report=report,
            )
            current = quantized
        temp_out = out_path.with_suffix(".partial")
        shutil.copyfile(current, temp_out)
        os.replace(temp_out, out_path)
    details["size_bytes"] = out_path.stat().st_size
    return details


def _torch_export(folder: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(folder), local_files_only=True, attn_implementation="eager"
        )
    except Exception as error:
        raise ArtifactError(f"The model weights cannot be loaded: {_first_line(error)}") from error
    model.eval()

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    input_ids = torch.ones((2, 8), dtype=torch.long)
    attention_mask = torch.ones((2, 8), dtype=torch.long)
    with torch.inference_mode():
        torch.onnx.export(
            Logits(model),
            (input_ids, attention_mask),
            str(target),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "logits": {0: "batch"},
            },
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def _optimize(source: Path, target: Path, folder: Path) -> bool:
    import json

    config = json.loads((folder / "config.json").read_text())
    optimizer_type = OPTIMIZER_MODEL_TYPES.get(config.get("model_type", ""))
    if optimizer_type is None:
        return False
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        optimized = optimize_model(
            str(source),
            model_type=optimizer_type,
            num_heads=int(config.get("num_attention_heads") or config.get("n_heads") or 0),
            hidden_size=int(config.get("hidden_size") or config.get("dim") or 0),
            opt_level=1,
        )
        optimized.save_model_to_file(str(target))
    except Exception:  # an architecture the fuser does not know: keep the plain graph
        return False
    return True


def _quantize(
    source: Path,
    target: Path,
    temp: Path,
    *,
    folder: Path,
    texts: list[str],
    report: Callable[[int, str], None],
) -> dict:
    import onnx

    shaped = temp / "shaped.onnx"
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        model = SymbolicShapeInference.infer_shapes(onnx.load(str(source)), auto_merge=True)
    except Exception:
        model = onnx.load(str(source))
    # The quantizer turns Gemm (the pooler, the classifier) into MatMul + Add before it
    # quantizes; doing it here first makes those MatMuls candidates that can stay fp32.
    from onnxruntime.quantization.onnx_model import ONNXModel

    wrapped = ONNXModel(model)
    wrapped.replace_gemm_with_matmul()
    model = wrapped.model
    candidates = _name_nodes(model)
    onnx.save(model, str(shaped))
    vnni = cpu_has_vnni()
    settings = {
        "per_channel": True,
        "reduce_range": not vnni,
        "weight_type": "QInt8",
        "op_types": list(INT8_OP_TYPES),
        "fp32_nodes": [],
    }
    if not (texts and candidates):
        report(78, "Quantizing the weights to int8.")
        _quantize_dynamic(shaped, target, settings)
    else:
        drift = _Drift(folder, shaped, texts)
        tried: dict[tuple[str, ...], tuple[Path, dict]] = {}

        def agreement_without(excluded: list[str]) -> float:
            key = tuple(excluded)
            if key not in tried:
                path = temp / f"without-{len(tried)}.onnx"
                _quantize_dynamic(shaped, path, settings, nodes_to_exclude=list(excluded))
                tried[key] = (path, drift.measure(path))
            return tried[key][1]["agreement"]

        report(68, "Quantizing the weights to int8.")
        if agreement_without([]) < CALIBRATION_AGREEMENT_TARGET:
            sensitivity = {}
            for index, node in enumerate(candidates):
                report(
                    70 + (6 * index) // len(candidates),
                    f"Measuring which nodes int8 hurts ({index + 1} of {len(candidates)}).",
                )
                probe = temp / "probe.onnx"
                _quantize_dynamic(shaped, probe, settings, nodes_to_quantize=[node])
                sensitivity[node] = drift.measure(probe)["mse"]
            report(76, "Choosing which nodes stay fp32.")
            settings["fp32_nodes"] = choose_fp32_nodes(
                sensitivity,
                agreement_without,
                target=CALIBRATION_AGREEMENT_TARGET,
                max_share=MAX_FP32_SHARE,
            )
            ranked = sorted(sensitivity.items(), key=lambda item: -item[1])
            settings["most_sensitive"] = [
                {"node": node, "logit_mse": round(value, 8)} for node, value in ranked[:8]
            ]
        path, final = tried[tuple(settings["fp32_nodes"])]
        shutil.copyfile(path, target)
        settings["calibration_texts"] = len(texts)
        settings["calibration_agreement_with_fp32"] = final["agreement"]
        settings["calibration_logit_mse"] = round(final["mse"], 8)
    settings["quantized_nodes"] = len(candidates) - len(settings["fp32_nodes"])
    return {**settings, "cpu_has_vnni": vnni}


def choose_fp32_nodes(
    sensitivity: dict[str, float],
    agreement_without: Callable[[list[str]], float],
    *,
    target: float,
    max_share: float,
) -> list[str]:
    """The nodes to keep fp32: the most sensitive first (largest logit drift when quantized
    alone), one more at a time, until `agreement_without(excluded)` (label agreement of the
    int8 graph with those nodes fp32, against fp32, on the calibration texts) reaches `target`,
    and at most `max_share` of the nodes (past that int8 buys little speed). Nodes whose
    drift is zero are never kept fp32: they cannot be what moves a label."""
    ranked = [node for node, value in sorted(sensitivity.items(), key=lambda item: -item[1])]
    ranked = [node for node in ranked if sensitivity[node] > 0]
    limit = min(len(ranked), int(max_share * len(sensitivity)))
    excluded: list[str] = []
    while agreement_without(excluded) < target and len(excluded) < limit:
        excluded.append(ranked[len(excluded)])
    return excluded


def _name_nodes(model) -> list[str]:
    """Names of the nodes int8 may quantize (unnamed ones are named, so that they can be
    excluded by name), in graph order."""
    names = []
    for index, node in enumerate(model.graph.node):
        if node.op_type not in INT8_OP_TYPES:
            continue
        if not node.name:
            node.name = f"{node.op_type}_lepton_{index}"
        names.append(node.name)
    return names


def _quantize_dynamic(source: Path, target: Path, settings: dict, **nodes) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantizer_log = logging.getLogger()  # the quantizer logs every tensor at INFO on the root
    level = quantizer_log.level
    quantizer_log.setLevel(max(level, logging.WARNING))
    try:
        quantize_dynamic(
            str(source),
            str(target),
            op_types_to_quantize=settings["op_types"],
            per_channel=settings["per_channel"],
            reduce_range=settings["reduce_range"],
            weight_type=QuantType.QInt8,
            **nodes,
        )
    finally:
        quantizer_log.setLevel(level)


class _Drift:
    """Logits of a candidate graph against the fp32 graph on the calibration texts."""

    def __init__(self, folder: Path, fp32: Path, texts: list[str]) -> None:
        from models_app.runtime.predictor import load_predictor

        self._predictor = load_predictor(folder, runtime="onnx-fp32", onnx_file=fp32, device="cpu")
        self._ids = self._predictor.encode(texts)
        self._expected = self._predictor.logits_from_ids(self._ids)

    def measure(self, path: Path) -> dict:
        from models_app.runtime.engines import OnnxEngine

        predictor = self._predictor
        original = predictor.engine
        predictor.engine = OnnxEngine(path, threads=None, device="cpu")
        try:
            actual = predictor.logits_from_ids(self._ids)
        finally:
            predictor.engine = original
        expected = self._expected
        same = _same_answers(predictor.task, expected, actual, tolerance=0.01)
        return {"agreement": float(same.mean()), "mse": float(((expected - actual) ** 2).mean())}


def parity_check(
    reference,
    candidate,
    texts: Sequence[str],
    *,
    regression_tolerance: float = 0.01,
) -> dict:
    """Compare two predictors (PyTorch reference, ONNX candidate) on `texts`: label agreement
    (share of texts with the same label, label set, or a value within tolerance) and the
    largest absolute logit difference."""
    if not texts:
        return {"agreement": None, "max_abs_logit_delta": None, "examples": 0}
    ids = reference.encode(texts)
    expected = reference.logits_from_ids(ids)
    actual = candidate.logits_from_ids(ids)
    same = _same_answers(reference.task, expected, actual, tolerance=regression_tolerance)
    return {
        "agreement": float(same.mean()),
        "max_abs_logit_delta": float(np.abs(expected - actual).max()),
        "examples": len(texts),
    }


def _same_answers(
    task: str, expected: np.ndarray, actual: np.ndarray, *, tolerance: float
) -> np.ndarray:
    """Per text: the same label (single label), label set (multi label), or a value within
    `tolerance` of the reference's spread (regression)."""
    if task == "single_label":
        return expected.argmax(axis=1) == actual.argmax(axis=1)
    if task == "multi_label":
        return ((expected >= 0) == (actual >= 0)).all(axis=1)
    spread = max(1.0, float(np.abs(expected).max()))
    return np.abs(expected - actual).reshape(-1) <= tolerance * spread


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
