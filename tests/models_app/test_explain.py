"""Word explanations on a toy classifier whose rule is known: "good"/"great" make it positive."""

from __future__ import annotations

import copy
import math

import pytest

from models_app.runtime.explain import (
    ExplainError,
    explain,
    explain_prediction,
    torch_logits_function,
)
from tests.models_app.toy_classifier import LABELS, save_toy_classifier


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = save_toy_classifier(tmp_path_factory.mktemp("toy_classifier"))
    model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model.eval()
    return model, tokenizer


@pytest.mark.parametrize("method", ["integrated_gradients", "occlusion"])
def test_the_word_that_decides_the_label_scores_highest(toy, method):
    model, tokenizer = toy
    text = "the movie was  good and the story"

    result = explain(text, model=model, tokenizer=tokenizer, method=method)

    assert LABELS[result.target] == "positive"
    assert result.target_score > 0.9
    best = max(result.words, key=lambda word: word.score)
    assert best.word == "good"
    assert best.score > 0
    others = [word.score for word in result.words if word.word != "good"]
    assert best.score > 3 * max(abs(score) for score in others)


@pytest.mark.parametrize("method", ["integrated_gradients", "occlusion"])
def test_words_keep_their_character_offsets_and_pieces_merge(toy, method):
    model, tokenizer = toy
    text = "It  was GOODNESS, the film"

    result = explain(text, model=model, tokenizer=tokenizer, method=method)

    assert [word.word for word in result.words] == ["It", "was", "GOODNESS", ",", "the", "film"]
    for word in result.words:
        assert text[word.start : word.end] == word.word


def test_integrated_gradients_add_up_to_the_change_from_the_baseline(toy):
    # Completeness: sum of attributions = f(text) - f(baseline), up to the integral's error.
    # An untrained network is smooth along the path (the toy one learned a near step), so a
    # modest number of steps gets within a percent: this checks the baseline, target and sums.
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    _, tokenizer = toy
    torch.manual_seed(5)
    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
            num_labels=3, initializer_range=0.3,
        )
    ).eval()  # fmt: skip

    result = explain(
        "a good film and a great plot", model=model, tokenizer=tokenizer, n_steps=64, target=2
    )

    total = sum(word.score for word in result.words)
    assert result.explained_output == "log_probability"
    assert abs(result.explained_change) > 0.5
    assert total == pytest.approx(result.explained_change, rel=0.02)
    assert result.convergence_delta == pytest.approx(total - result.explained_change, abs=1e-5)
    log_change = math.log(result.target_score) - math.log(result.baseline_score)
    assert result.explained_change == pytest.approx(log_change, rel=1e-4)


def test_a_chosen_class_is_explained_with_opposite_signs(toy):
    model, tokenizer = toy
    text = "the plot was good"

    positive = explain(text, model=model, tokenizer=tokenizer, method="occlusion", target=1)
    negative = explain(text, model=model, tokenizer=tokenizer, method="occlusion", target=0)

    good_positive = next(word.score for word in positive.words if word.word == "good")
    good_negative = next(word.score for word in negative.words if word.word == "good")
    assert good_positive > 0
    assert good_negative == pytest.approx(-good_positive, abs=1e-6)


def test_occlusion_works_from_a_logits_function_alone(toy):
    model, tokenizer = toy
    logits = torch_logits_function(model)

    result = explain("great movie", tokenizer=tokenizer, logits_function=logits, method="occlusion")

    assert max(result.words, key=lambda word: word.score).word == "great"


def test_long_text_is_marked_truncated_and_scores_only_what_the_model_read(toy):
    model, tokenizer = toy
    text = " ".join(["the movie"] * 20) + " good"

    result = explain(text, model=model, tokenizer=tokenizer, max_length=16, method="occlusion")

    assert result.truncated is True
    assert len(result.words) == 14  # 16 tokens less [CLS] and [SEP]
    assert "good" not in [word.word for word in result.words]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": "   "}, "no text to explain"),
        ({"method": "lime"}, "must be one of integrated_gradients, occlusion"),
        ({"target": 5}, "between 0 and 1"),
    ],
)
def test_bad_requests_get_plain_messages(toy, kwargs, message):
    model, tokenizer = toy
    arguments = {"text": "good movie", "model": model, "tokenizer": tokenizer, **kwargs}
    text = arguments.pop("text")

    with pytest.raises(ExplainError, match=message):
        explain(text, **arguments)


@pytest.fixture(scope="module")
def toy_predictor(toy, tmp_path_factory):
    from models_app.runtime import load_predictor

    model, tokenizer = toy
    folder = tmp_path_factory.mktemp("toy_version")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return load_predictor(folder, runtime="pytorch", threads=1)


@pytest.mark.parametrize("method", ["integrated_gradients", "occlusion"])
def test_a_runtime_predictor_explains_with_its_own_engine_and_tokenizer(toy_predictor, method):
    result = explain_prediction(toy_predictor, "the story was great", method=method)

    assert toy_predictor.label_names[result.target] == "positive"
    assert max(result.words, key=lambda word: word.score).word == "great"
    assert result.explained_output == (
        "log_probability" if method == "integrated_gradients" else "probability"
    )


def test_integrated_gradients_need_a_torch_engine_beside_an_onnx_predictor(toy_predictor):
    class OnnxLike:
        def run(self, input_ids, attention_mask):
            return toy_predictor.engine.run(input_ids, attention_mask)

    onnx_predictor = copy.copy(toy_predictor)
    onnx_predictor.engine = OnnxLike()

    with pytest.raises(ExplainError, match="use occlusion instead"):
        explain_prediction(onnx_predictor, "great story")
    result = explain_prediction(onnx_predictor, "great story", torch_engine=toy_predictor.engine)
    assert result.words[0].word == "great"
    assert explain_prediction(onnx_predictor, "great story", method="occlusion").words[0].score > 0


def test_occlusion_of_a_text_longer_than_one_batch_scores_every_word(toy_predictor):
    text = " ".join(["the film"] * 30) + " good"

    result = explain_prediction(toy_predictor, text, method="occlusion")

    assert len(result.words) == 61
    assert max(result.words, key=lambda word: word.score).word == "good"
