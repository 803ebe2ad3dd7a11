"""The Django side of explanations and the playground: which model, which engine, limits.

Explanations run in models_app/runtime/explain.py (plain Python). Integrated gradients put
captum hooks on the model's embedding layer while they run, which would change the outputs of
any prediction running on the same model object at that moment, so they get a PyTorch engine of
their own per version (loaded once per process, used by one explanation at a time). Occlusion
only runs forward passes, so it uses the serving engine, ONNX Runtime included.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError

from models_app import runtime
from models_app.models import Deployment, ModelVersion
from models_app.runtime.cache import ModelCache
from models_app.runtime.explain import DEFAULT_METHOD, METHODS, ExplainError, explain_prediction

# Explanations cost a second or more each on a CPU: a few texts per request at most.
EXPLAIN_MAX_TEXTS = 8
PLAYGROUND_MAX_CHARS = 5_000

# Separate from the serving cache so playground and explanation models never evict endpoints.
explain_cache = ModelCache(max_models=4)


class ExplainBusy(ValidationError):
    """Every explanation slot of this process is taken (EXPLAIN_CONCURRENCY); try again soon.
    The API answers 429 with Retry-After; the playground shows the sentence."""

    retry_after = 5

    def __init__(self) -> None:
        super().__init__(
            "The server is explaining as many texts as it can at once right now. Try again in "
            "a few seconds, or ask without the explanation."
        )


_slots: dict[int, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


def _explain_slots() -> threading.BoundedSemaphore:
    size = max(1, int(settings.EXPLAIN_CONCURRENCY))
    with _slots_lock:
        if size not in _slots:
            _slots[size] = threading.BoundedSemaphore(size)
        return _slots[size]


@dataclass
class _Explainer:
    engine: object  # runtime TorchEngine, private to explanations
    lock: threading.Lock


def _threads() -> int:
    return settings.SERVE_THREADS or runtime.engines.thread_count(
        processes=settings.SERVE_PROCESSES
    )


def _version_copy(version: ModelVersion):
    """The version's folder, held while a model loads from it (see serving)."""
    from models_app.serving import model_version_serving_copy

    return model_version_serving_copy(version)


def _explainer(version: ModelVersion, info) -> _Explainer:
    from models_app.runtime.engines import TorchEngine
    from models_app.serving import serve_cache

    def load() -> _Explainer:
        # The folder the endpoint's model was loaded from, held while the weights load.
        lease = serve_cache().lease_existing(info.folder)
        try:
            engine = TorchEngine(info, threads=_threads(), device="cpu")
        finally:
            if lease is not None:
                lease.release()
        return _Explainer(engine, threading.Lock())

    return explain_cache.get_or_load(("explain", version.pk, version.artifact_uri), load)


def check_method(method: str | None) -> str:
    method = method or DEFAULT_METHOD
    if method not in METHODS:
        raise ValidationError(
            {"explain_method": f"The explanation method must be one of {', '.join(METHODS)}."}
        )
    return method


def explain_request_check(*, texts: list, method: str | None) -> str:
    """Check an explain request before predicting; returns the method to use."""
    method = check_method(method)
    if len(texts) > EXPLAIN_MAX_TEXTS:
        raise ValidationError(
            {
                "texts": f"Explain at most {EXPLAIN_MAX_TEXTS} texts per request; this one has "
                f"{len(texts)}. Send the others without explain, or in further requests."
            }
        )
    return method


def explain_texts(
    *, version: ModelVersion, predictor, texts: list[str], method: str = DEFAULT_METHOD
) -> list[dict]:
    """One explanation per text (words with scores and character offsets), in order.

    ``predictor`` is the loaded runtime Predictor that made the predictions: occlusion runs on
    it; integrated gradients on this process's private PyTorch copy of the version."""
    method = explain_request_check(texts=texts, method=method)
    slots = _explain_slots()
    if not slots.acquire(timeout=max(0.0, float(settings.EXPLAIN_WAIT_SECONDS))):
        raise ExplainBusy()
    try:
        return _explain_each(version, predictor, texts, method)
    finally:
        slots.release()


def _explain_each(version: ModelVersion, predictor, texts: list[str], method: str) -> list[dict]:
    explanations = []
    for index, text in enumerate(texts):
        try:
            if method == "occlusion":
                result = explain_prediction(predictor, text, method=method)
            else:
                explainer = _explainer(version, predictor.info)
                with explainer.lock:
                    result = explain_prediction(
                        predictor, text, method=method, torch_engine=explainer.engine
                    )
        except ExplainError as error:
            # Named like the predict limits (texts[3]): which of several texts is refused.
            message = f"Text {index}: {error}" if len(texts) > 1 else str(error)
            raise ValidationError({f"texts[{index}]": message}) from error
        explanations.append(result.to_dict())
    return explanations


def deployment_explain(*, deployment: Deployment, texts: list[str], method: str) -> list[dict]:
    """Explanations on the endpoint's current model (the one that just predicted)."""
    from models_app.serving import EndpointUnavailable, served_model

    # An ONNX endpoint's folder keeps the PyTorch weights too: integrated gradients load them.
    predictor = served_model(deployment).predictor
    try:
        return explain_texts(
            version=deployment.version, predictor=predictor, texts=texts, method=method
        )
    except (runtime.ArtifactError, OSError) as error:
        raise EndpointUnavailable(
            f"The endpoint {deployment.slug} cannot explain with {deployment.version}: {error}"
        ) from error


# --------------------------------------------------------------------------- version playground


def _playground_predictor(version: ModelVersion):
    def load():
        with _version_copy(version) as folder:
            return runtime.load_predictor(
                folder,
                runtime="pytorch",
                task=version.task or None,
                threads=_threads(),
                device="cpu",
            )

    return explain_cache.get_or_load(("playground", version.pk, version.artifact_uri), load)


@dataclass
class PlaygroundResult:
    text: str
    result: dict  # {label, scores} / {labels, scores} / {value}
    bars: list[dict]  # [{"label", "score"}] highest first, for the chart
    explanation: dict | None
    source: str  # "version 3 (PyTorch)" or "endpoint reviews (ONNX int8, version 3)"


def playground_check_text(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise ValidationError({"text": "Type or paste a text to try the model on."})
    if len(text) > PLAYGROUND_MAX_CHARS:
        raise ValidationError(
            {
                "text": f"The playground takes up to {PLAYGROUND_MAX_CHARS:,} characters; this "
                f"text has {len(text):,}."
            }
        )
    return text


def _bars(result: dict) -> list[dict]:
    scores = result.get("scores") or {}
    return [
        {"label": label, "score": float(score)}
        for label, score in sorted(scores.items(), key=lambda item: -item[1])
    ]


def model_version_try(
    *, version: ModelVersion, text: str, explain: bool = False, method: str = DEFAULT_METHOD
) -> PlaygroundResult:
    """The version page's playground: predict one text (and explain it on demand)."""
    text = playground_check_text(text)
    if version.status != ModelVersion.Status.READY:
        raise ValidationError({"text": f"{version} is not ready, so it cannot predict yet."})
    try:
        predictor = _playground_predictor(version)
    except (runtime.ArtifactError, OSError) as error:
        raise ValidationError(
            {"text": f"The files of {version} cannot be loaded: {error}"}
        ) from error
    result = predictor.predict([text])[0]
    explanation = None
    if explain:
        explanation = explain_texts(
            version=version, predictor=predictor, texts=[text], method=method
        )[0]
    return PlaygroundResult(
        text=text,
        result=result,
        bars=_bars(result),
        explanation=explanation,
        source=f"{version} (PyTorch)",
    )


def deployment_try(
    *, deployment: Deployment, text: str, explain: bool = False, method: str = DEFAULT_METHOD
) -> PlaygroundResult:
    """The endpoint's playground: the same path as the predict API (counted like it)."""
    from models_app.serving import deployment_get_live, deployment_predict

    text = playground_check_text(text)
    live = deployment_get_live(deployment.slug)
    prediction = deployment_predict(deployment=live, texts=[text])
    result = prediction.results[0]
    explanation = None
    if explain:
        explanation = deployment_explain(deployment=live, texts=[text], method=method)[0]
    return PlaygroundResult(
        text=text,
        result=result,
        bars=_bars(result),
        explanation=explanation,
        source=f"endpoint {live.slug} ({live.get_runtime_display()}, {prediction.version})",
    )


def highlighted_segments(text: str, explanation: dict | None) -> list[dict]:
    """The text cut into plain and scored pieces for the template: [{"text", "score",
    "strength", "sign"}], strength 0-100 relative to the strongest word, in text order."""
    if not explanation:
        return [{"text": text, "score": None, "strength": 0, "sign": ""}]
    words = explanation["words"]
    strongest = max((abs(word["score"]) for word in words), default=0.0) or 1.0
    segments = []
    position = 0
    for word in words:
        if word["start"] > position:
            segments.append(
                {"text": text[position : word["start"]], "score": None, "strength": 0, "sign": ""}
            )
        score = word["score"]
        segments.append(
            {
                "text": text[word["start"] : word["end"]],
                "score": score,
                "strength": round(100 * abs(score) / strongest),
                "sign": "positive" if score > 0 else "negative" if score < 0 else "",
            }
        )
        position = word["end"]
    if position < len(text):
        segments.append({"text": text[position:], "score": None, "strength": 0, "sign": ""})
    return segments


def explain_options(request, texts: list) -> tuple[bool, str]:
    """``explain`` (JSON body or ``?explain=true``) and ``explain_method`` of a predict call,
    checked before predicting (ValidationError -> 400 by field)."""
    data = request.data if isinstance(request.data, dict) else {}
    value = data.get("explain", request.query_params.get("explain", False))
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        value = value.lower() in ("true", "1")
    if not isinstance(value, bool):
        raise ValidationError({"explain": "explain must be true or false."})
    method = data.get("explain_method", request.query_params.get("explain_method"))
    if not value:
        return False, DEFAULT_METHOD
    if method is not None and not isinstance(method, str):
        raise ValidationError({"explain_method": "explain_method must be a string."})
    return True, explain_request_check(texts=texts, method=method)
