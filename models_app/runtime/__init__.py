"""The serving runtime: load a model version's folder, tokenize, batch, run, post-process.

Plain Python with no Django, so it can be tested and benchmarked alone; the Django side only
authenticates, validates, looks up the endpoint and counts requests. torch and onnxruntime are
imported lazily inside the engines, so importing this package is cheap.

    from models_app import runtime

    predictor = runtime.load_predictor("/path/to/version-folder", runtime="onnx-int8")
    predictor.predict(["a great movie"])
    # [{"label": "positive", "scores": {"negative": 0.02, "positive": 0.98}}]

Results per task: single-label ``{"label", "scores"}`` (softmax over every class);
multi-label ``{"labels", "scores"}`` (the labels whose sigmoid score is at least the threshold,
every class scored); regression ``{"value"}``.

Parts: ``artifact`` (what a folder holds: task, labels, max length), ``tokenize`` (the fast
``tokenizers`` library, no padding), ``batching`` (length-sorted batches under a token budget,
padding), ``engines`` (TorchEngine, OnnxEngine, thread counts), ``predictor`` (the whole path),
``cache`` (one loaded model per process and key), ``filecache`` (local copies of remote
files shared by a machine's processes, bounded and swept), ``microbatch`` (concurrent requests into
batches), ``export`` (ONNX fp32/int8 and the parity check).
"""

from models_app.runtime.artifact import ArtifactError, ModelInfo, read_model_info
from models_app.runtime.cache import ModelCache, TtlCache, model_cache
from models_app.runtime.filecache import FileCache
from models_app.runtime.filecache import Lease as FileLease
from models_app.runtime.microbatch import MicroBatcher
from models_app.runtime.predictor import RUNTIMES, Predictor, load_predictor

__all__ = [
    "RUNTIMES",
    "ArtifactError",
    "FileCache",
    "FileLease",
    "MicroBatcher",
    "ModelCache",
    "ModelInfo",
    "Predictor",
    "TtlCache",
    "load_predictor",
    "model_cache",
    "read_model_info",
]
