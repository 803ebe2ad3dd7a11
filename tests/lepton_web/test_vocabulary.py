"""lepton_web/vocabulary.py: the words pages show for stored codes (issue 9, item 19)."""

import pytest
from django.template import Context, Template

from lepton_web import vocabulary


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (1.0, "1"),
        (3, "3"),
        (12000, "12,000"),
        (5e-05, "5e-5"),
        (0.001, "1e-3"),
        (0.06, "0.06"),
        (0.12345, "0.1235"),
        (None, ""),
    ],
)
def test_numbers_read_as_people_write_them(value, shown):
    assert vocabulary.number(value) == shown


@pytest.mark.parametrize(
    ("code", "word"),
    [
        ("single_label", "Single-label classification"),
        ("full", "Full fine-tuning"),
        ("lora", "LoRA"),
        ("learning_rate", "Learning rate"),
        ("macro_f1", "macro-F1"),
        ("val_macro_f1", "validation macro-F1"),
        ("test_accuracy", "test accuracy"),
        ("something_new", "something new"),
    ],
)
def test_codes_read_as_words(code, word):
    assert vocabulary.word(code) == word


def test_parameter_values_say_what_an_empty_value_means():
    assert vocabulary.parameter_value("learning_rate", None) == "the method's default"
    assert vocabulary.parameter_value("eval_every_steps", None) == "once per epoch"
    assert vocabulary.parameter_value("epochs", 1.0) == "1"
    assert vocabulary.parameter_value("optimizer", "adamw") == "AdamW"
    assert vocabulary.parameter_value("class_weighting", False) == "no"
    assert vocabulary.parameter_value("early_stopping_metric", "macro_f1") == "macro-F1"


def test_counts_agree_with_their_number():
    assert vocabulary.count(1, "epoch") == "1 epoch"
    assert vocabulary.count(1.0, "epoch") == "1 epoch"
    assert vocabulary.count(2, "epoch") == "2 epochs"
    assert vocabulary.count(1.5, "epoch") == "1.5 epochs"
    assert vocabulary.count(3, "class", "classes") == "3 classes"


def test_template_filters_use_the_vocabulary():
    template = Template(
        "{% load vocabulary %}{{ task|word }} · {{ name|metric }} · {{ epochs|number }} · "
        '{{ n|counted:"class,classes" }} · {{ value|parameter_value:"dropout" }}'
    )

    shown = template.render(
        Context({"task": "multi_label", "name": "val_loss", "epochs": 2.0, "n": 1, "value": None})
    )

    assert (
        shown == "Multi-label classification · validation loss · 2 · 1 class · the model&#x27;s own"
    )


@pytest.mark.parametrize(
    ("code", "word"),
    [("pytorch", "PyTorch"), ("onnx-int8", "ONNX int8"), ("onnx-fp32", "ONNX fp32")],
)
def test_serving_runtimes_read_as_their_names(code, word):
    assert vocabulary.word(code) == word


@pytest.mark.parametrize(
    ("action", "shown"),
    [
        ("deploy", "Deployed"),
        ("promote", "Promoted"),
        ("rollback", "Rolled back"),
        ("stop", "Stopped"),
        ("start", "Started"),
        ("alias", "Followed its alias"),
        ("some_future_action", "Some future action"),
    ],
)
def test_endpoint_history_actions_read_as_sentences(action, shown):
    assert vocabulary.deployment_action(action) == shown


@pytest.mark.parametrize(
    ("milliseconds", "shown"),
    [
        (None, "—"),
        (0, "0.0 s"),
        (2345, "2.3 s"),
        (12_600, "13 s"),
        (60_000, "1 min"),
        (65_400, "1 min 5 s"),
    ],
)
def test_time_spent_reads_in_seconds_and_minutes(milliseconds, shown):
    assert vocabulary.duration_ms(milliseconds) == shown


def test_history_and_duration_filters_use_the_vocabulary():
    template = Template(
        "{% load vocabulary %}{{ action|deployment_action }} on {{ runtime|word }}, {{ ms|duration_ms }}"
    )

    shown = template.render(Context({"action": "rollback", "runtime": "onnx-int8", "ms": 1500}))

    assert shown == "Rolled back on ONNX int8, 1.5 s"


def test_the_default_schedule_is_named_in_words_everywhere():
    # The run form, the run page and Compare all read the scheduler through the vocabulary.
    assert vocabulary.parameter_value("scheduler", "wsd") == "warmup-stable-decay"
