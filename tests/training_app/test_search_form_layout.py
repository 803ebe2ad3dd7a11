"""The new-search form (UX polish): numbers as a person types them, the run form's two-column
layout, ranges on one line each, and the hint to create a snapshot first when there is none."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from training_app.search_forms import plain_number


@pytest.mark.parametrize(
    ("value", "text"),
    [(1e-5, "0.00001"), (2e-4, "0.0002"), (0.0, "0"), (0.2, "0.2"), (2, "2"), (1e-7, "0.0000001")],
)
def test_plain_number_writes_numbers_as_typed(value, text):
    assert plain_number(value) == text


def test_the_search_form_shows_its_defaults_as_typed(client_as, snapshot, tiny_base_model):
    html = client_as("analyst").get(reverse("training:search_create")).content.decode()

    assert 'name="learning_rate_low" value="0.00005"' in html
    assert 'name="weight_decay_low" value="0"' in html
    assert 'name="warmup_ratio_high" value="0.2"' in html
    assert 'name="epochs_low" value="2"' in html
    assert not re.search(r'value="[^"]*e-\d+"', html)  # no scientific notation
    assert not re.search(r'value="\d+\.0"', html)  # no "0.0"


def test_the_search_form_has_the_run_forms_layout(client_as, snapshot, tiny_base_model):
    client = client_as("analyst")
    search = client.get(reverse("training:search_create")).content.decode()
    run = client.get(reverse("training:run_create")).content.decode()

    for html in (search, run):
        assert '<div class="run-form-layout">' in html
        assert '<aside class="card estimate-card"' in html
    # one labelled row per range: "from" and "to" side by side
    row = re.search(r'data-testid="range-learning_rate_low">(.*?)</div>', search, re.S).group(1)
    assert 'name="learning_rate_low"' in row
    assert 'name="learning_rate_high"' in row
    assert 'aria-label="Learning rate (full fine-tuning), to"' in row


def test_without_a_snapshot_the_search_form_says_to_create_one_first(client_as, tiny_base_model):
    client = client_as("analyst")
    run = client.get(reverse("training:run_create")).content.decode()
    search = client.get(reverse("training:search_create")).content.decode()

    assert "There are no snapshots yet." in run
    hint = re.search(r'<p class="flash flash-warning" data-testid="no-snapshots">(.*?)</p>', search)
    assert hint is not None
    assert "create a snapshot" in hint.group(1)
    assert f'<a href="{reverse("datasets:dataset_list")}">Datasets</a>' in hint.group(1)


def test_a_refused_range_is_named_on_its_row_with_the_value_kept(
    client_as, snapshot, tiny_base_model
):
    page = client_as("analyst").post(
        reverse("training:search_create"),
        {
            "snapshot": snapshot.pk,
            "base_model": tiny_base_model.pk,
            "task": "single_label",
            "max_trials": "3",
            "parallel_trials": "1",
            "methods": ["full"],
            "batch_sizes": "8",
            "weight_decay_low": "lots",
        },
    )

    assert page.status_code == 400
    html = page.content.decode()
    assert 'name="weight_decay_low" value="lots"' in html
    assert 'data-error-for="weight_decay_low"' in html
