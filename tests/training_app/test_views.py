"""The training pages and the model registry pages: run list and comparison, the new-run form and
its estimate, the run page, cancel, the Models page, a model version page and its evaluations,
for each role."""

from __future__ import annotations

import io
import json
import re
import zipfile

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone
from django.utils.html import escape
from pytest_django.asserts import assertContains, assertNotContains, assertRedirects

from datasets_app.models import Dataset
from lepton_web.celery import queue_name
from models_app.models import BaseModel
from tests.conftest import broker_for_this_process
from tests.training_app.conftest import make_snapshot
from training_app.engine.device import _cpu_has_amx
from training_app.models import Evaluation, TrainingEvent, TrainingMetric, TrainingRun

DOWN_BROKER_URL = "redis://127.0.0.1:1/0"
NEW_RUN_BUTTON = 'href="/training/new/">New run</a>'
CANCEL_BUTTON = '<button class="btn" type="submit">Cancel run</button>'


def run_state() -> list[tuple]:
    return list(TrainingRun.objects.order_by("id").values_list("id", "status", "progress"))


def field_errors(response, field: str) -> list[str]:
    content = response.content.decode()
    return re.findall(rf'<span class="field-error" data-error-for="{field}">(.*?)</span>', content)


def json_script(response, element_id: str):
    match = re.search(
        rf'<script id="{element_id}" type="application/json">(.*?)</script>',
        response.content.decode(),
        re.S,
    )
    assert match, f"no json_script #{element_id}"
    return json.loads(match.group(1))


def form_data(snapshot_row, base_model_row, **overrides) -> dict:
    data = {
        "snapshot": snapshot_row.pk,
        "base_model": base_model_row.pk,
        "task": "single_label",
        "method": "full",
        "name": "",
        "learning_rate": "",
        "epochs": "2",
        "batch_size": "8",
        "max_length": "32",
        "warmup_ratio": "0.06",
        "weight_decay": "0.01",
        "dropout": "",
        "optimizer": "adamw",
        "scheduler": "linear",
        "gradient_accumulation": "1",
        "early_stopping_metric": "",
        "early_stopping_patience": "3",
        "eval_every_steps": "",
        "seed": "42",
        "device": "cpu",
        "precision": "auto",
        "lora_r": "8",
        "lora_alpha": "16",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


# --- roles ------------------------------------------------------------------------------------------
@pytest.fixture
def page_urls(running_run, finished_run, model_version) -> dict[str, str]:
    return {
        "list": "/training/",
        "compare": f"/training/compare/?runs={running_run.pk},{finished_run.pk}",
        "new": "/training/new/",
        "run": f"/training/{running_run.pk}/",
        "events": f"/training/{running_run.pk}/events/",
        "models": "/models/",
        "version": f"/models/versions/{model_version.pk}/",
        "evaluations": f"/training/model-versions/{model_version.pk}/evaluations/",
    }


@pytest.mark.parametrize(
    "page", ["list", "compare", "new", "run", "events", "models", "version", "evaluations"]
)
def test_annotator_is_refused_every_training_and_model_page(client_as, page_urls, page):
    response = client_as("annotator").get(page_urls[page])

    assert response.status_code == 403


@pytest.mark.parametrize(
    "page", ["list", "compare", "run", "events", "models", "version", "evaluations"]
)
def test_viewer_sees_the_read_only_pages(client_as, page_urls, page):
    response = client_as("viewer").get(page_urls[page])

    assert response.status_code == 200


def test_viewer_cannot_open_the_new_run_form(client_as, snapshot):
    response = client_as("viewer").get("/training/new/")

    assert response.status_code == 403


def test_viewer_sees_no_new_run_or_cancel_button(client_as, running_run):
    client = client_as("viewer")

    listing = client.get("/training/")
    run_page = client.get(f"/training/{running_run.pk}/")

    assertNotContains(listing, NEW_RUN_BUTTON)
    assertNotContains(run_page, CANCEL_BUTTON)
    assertNotContains(run_page, f'action="/training/{running_run.pk}/cancel/"')


# --- run list -------------------------------------------------------------------------------------
def test_empty_list_says_to_snapshot_a_dataset_then_start_a_run(client_as):
    response = client_as("analyst").get("/training/")

    assert response.status_code == 200
    assertContains(response, "No training runs yet")
    assertContains(response, "take a snapshot")
    assertContains(response, '<a class="btn" href="/datasets/">Go to Datasets</a>', html=True)
    assertContains(response, NEW_RUN_BUTTON)


def test_list_shows_each_run_with_dataset_version_method_status_progress_and_metric(
    client_as, running_run, finished_run
):
    response = client_as("analyst").get("/training/")

    content = response.content.decode()
    assertContains(response, NEW_RUN_BUTTON)
    assert content.count('<tr data-run-id="') == 2
    assertContains(response, f'href="/training/{finished_run.pk}/"')
    assertContains(response, "Reviews</a> v1", count=2)
    assertContains(response, '<span class="badge badge-running">Running</span>', html=True)
    assertContains(response, '<span class="badge badge-succeeded">Succeeded</span>', html=True)
    assertContains(response, 'aria-valuenow="40"')
    assertContains(response, '0.750 <span class="small muted">test macro-F1</span>')
    assertContains(response, f'<input type="checkbox" name="runs" value="{running_run.pk}"')
    assertContains(response, "Compare selected")


def test_list_shows_the_best_validation_value_before_the_test_evaluation(client_as, make_run):
    make_run(status="running", best_metrics={"macro_f1": 0.61})

    response = client_as("viewer").get("/training/")

    assertContains(response, '0.610 <span class="small muted">best macro-F1</span>')


def test_list_filters_by_status(client_as, running_run, finished_run):
    response = client_as("analyst").get("/training/?status=succeeded")

    assertContains(response, f'<tr data-run-id="{finished_run.pk}">')
    assertNotContains(response, f'<tr data-run-id="{running_run.pk}">')
    assertContains(response, "Clear filters")


def test_list_filters_by_dataset(client_as, analyst, make_run, running_run, tiny_base_model):
    other = make_snapshot(user=analyst, name="Tickets")
    other_run = make_run(snapshot=other)

    response = client_as("analyst").get(f"/training/?dataset={other.dataset_id}")

    assertContains(response, f'<tr data-run-id="{other_run.pk}">')
    assertNotContains(response, f'<tr data-run-id="{running_run.pk}">')
    assertContains(response, f'<option value="{other.dataset_id}" selected>Tickets</option>')


def test_list_with_no_match_keeps_the_table_and_offers_all_runs(client_as, running_run):
    response = client_as("analyst").get("/training/?status=failed")

    assertContains(response, "No runs match these filters.")


# --- compare --------------------------------------------------------------------------------------
def test_compare_shows_hyperparameters_side_by_side_with_differences_highlighted(
    client_as, running_run, finished_run
):
    response = client_as("viewer").get(
        f"/training/compare/?runs={running_run.pk},{finished_run.pk}"
    )

    assert response.status_code == 200
    content = response.content.decode()
    assert (
        '<tr class="differs" data-param="epochs"><th scope="row">Epochs</th><td>3</td><td>2</td></tr>'
        in content
    )
    assert (
        '<tr class="" data-param="seed"><th scope="row">Seed</th><td>42</td><td>42</td></tr>'
        in content
    )
    # Runs from before values were recorded show the method's default learning rate.
    assert (
        '<tr class="" data-param="learning_rate"><th scope="row">Learning rate</th>'
        "<td>5e-5</td><td>5e-5</td></tr>" in content
    )
    assertContains(
        response,
        '<th scope="row">macro-F1</th><td><span class="muted">—</span></td><td>0.7500</td>',
    )
    curves = json_script(response, "compare-data")
    assert curves["metrics"] == ["val_macro_f1"]
    assert [run["id"] for run in curves["runs"]] == [running_run.pk, finished_run.pk]
    assert curves["runs"][0]["series"] == {"val_macro_f1": [{"step": 7, "value": 0.5}]}
    assert curves["runs"][1]["series"] == {}
    assertContains(response, '<canvas id="compare-chart"')
    assertContains(response, "vendor/chartjs/chart.umd.min.js")


def test_compare_shows_the_values_the_engine_used_and_only_parameters_of_each_method(
    client_as, make_run
):
    """Issue 9 item 12: resolved values instead of "default", words instead of codes, and no
    LoRA rank or alpha for full fine-tuning."""
    full = make_run(
        method="full",
        params={"learning_rate": None, "epochs": 1.0, "lora_r": 8, "lora_alpha": 16},
        resolved_params={"learning_rate": 5e-5, "epochs": 1.0, "device": "cpu", "lora_r": 8},
    )
    lora = make_run(
        method="lora",
        params={"learning_rate": None, "epochs": 1.0, "lora_r": 8, "lora_alpha": 16},
        resolved_params={"learning_rate": 1e-3, "epochs": 1.0, "device": "cpu", "lora_r": 8},
    )
    other_full = make_run(
        method="full",
        params={"learning_rate": 2e-5, "epochs": 1, "lora_r": 8, "lora_alpha": 16},
    )
    client = client_as("viewer")

    mixed = client.get(f"/training/compare/?runs={full.pk},{lora.pk}").content.decode()
    both_full = client.get(f"/training/compare/?runs={full.pk},{other_full.pk}").content.decode()

    assert (
        '<tr class="differs" data-param="learning_rate"><th scope="row">Learning rate</th>'
        "<td>5e-5</td><td>1e-3</td></tr>" in mixed
    )
    assert (
        '<tr class="differs" data-param="method"><th scope="row">Method</th>'
        "<td>Full fine-tuning</td><td>LoRA</td></tr>" in mixed
    )
    assert (
        '<tr class="" data-param="epochs"><th scope="row">Epochs</th><td>1</td><td>1</td></tr>'
        in mixed
    )
    assert (
        '<tr class="differs" data-param="lora_r"><th scope="row">LoRA rank</th>'
        "<td>not used by Full fine-tuning</td><td>8</td></tr>" in mixed
    )
    assert "<td>Single-label classification</td>" in mixed
    assert "single_label" not in mixed.split('id="compare-data"')[0]
    assert "<td>default</td>" not in mixed
    assert 'data-param="lora_r"' not in both_full
    assert 'data-param="lora_alpha"' not in both_full
    assert "<td>5e-5</td><td>2e-5</td>" in both_full


def test_compare_overlays_training_loss_and_validation_curves_of_every_run(
    client_as, running_run, make_run
):
    other = make_run(status="running")
    TrainingMetric.objects.create(run=other, step=3, name="train_loss", value=0.7)
    TrainingMetric.objects.create(run=other, step=3, name="val_macro_f1", value=0.6)

    response = client_as("viewer").get(f"/training/compare/?runs={running_run.pk},{other.pk}")

    curves = json_script(response, "compare-data")
    assert curves["has_loss"] is True
    assert [[p["value"] for p in run["train_loss"]] for run in curves["runs"]] == [
        [1.1, 1.0, 0.9],
        [0.7],
    ]
    assert [run["series"]["val_macro_f1"][0]["value"] for run in curves["runs"]] == [0.5, 0.6]
    assert curves["metric_labels"] == {"val_macro_f1": "validation macro-F1"}
    assertContains(response, '<canvas id="compare-loss-chart"')
    assertContains(response, '<option value="val_macro_f1">validation macro-F1</option>')


def test_run_page_lists_resolved_hyperparameters_in_words(client_as, make_run):
    run = make_run(
        method="full",
        params={"learning_rate": None, "epochs": 1.0, "dropout": None, "lora_r": 8},
        resolved_params={"learning_rate": 5e-5, "epochs": 1.0, "dropout": 0.1, "lora_r": 8},
    )

    response = client_as("viewer").get(f"/training/{run.pk}/")

    assertContains(
        response,
        '<tr data-param="learning_rate"><th scope="row">Learning rate</th><td>5e-5</td></tr>',
        html=True,
    )
    assertContains(
        response, '<tr data-param="epochs"><th scope="row">Epochs</th><td>1</td></tr>', html=True
    )
    assertContains(
        response,
        '<tr data-param="dropout"><th scope="row">Dropout</th><td>0.1</td></tr>',
        html=True,
    )
    assertNotContains(response, 'data-param="lora_r"')


def test_compare_accepts_repeated_runs_parameters(client_as, running_run, finished_run):
    response = client_as("viewer").get(
        f"/training/compare/?runs={running_run.pk}&runs={finished_run.pk}"
    )

    assert response.status_code == 200
    assert len(json_script(response, "compare-data")["runs"]) == 2


def test_compare_with_fewer_than_two_runs_goes_back_with_a_sentence(client_as, running_run):
    client = client_as("analyst")

    response = client.get(f"/training/compare/?runs={running_run.pk},999999,abc")

    assertRedirects(response, "/training/", fetch_redirect_response=False)
    assertContains(client.get("/training/"), "Tick at least two runs, then press Compare selected.")


# --- new run form ------------------------------------------------------------------------------------
def test_form_lists_snapshots_newest_first_and_preselects_the_default_base_model(
    client_as, analyst, snapshot, tiny_base_model
):
    newer = make_snapshot(user=analyst, dataset=snapshot.dataset, train=30)
    BaseModel.objects.create(name="other-model", source="local", location="/nowhere")

    response = client_as("analyst").get("/training/new/")

    content = response.content.decode()
    assert response.status_code == 200
    first, second = (
        content.index(f'<option value="{newer.pk}">Reviews v2 (60 records)</option>'),
        content.index(f'<option value="{snapshot.pk}">Reviews v1 (90 records)</option>'),
    )
    assert first < second
    assertContains(response, f'<option value="{tiny_base_model.pk}" selected>tiny-bert</option>')


def test_form_preselects_the_only_snapshot(client_as, snapshot, tiny_base_model):
    response = client_as("analyst").get("/training/new/")

    assertContains(
        response, f'<option value="{snapshot.pk}" selected>Reviews v1 (90 records)</option>'
    )


def test_form_leaves_the_choice_open_when_there_are_several_snapshots(
    client_as, analyst, snapshot, tiny_base_model
):
    make_snapshot(user=analyst, dataset=snapshot.dataset, train=30)

    response = client_as("analyst").get("/training/new/")

    assertContains(response, '<option value="" selected>Choose a snapshot</option>')


def test_form_shows_the_engine_defaults_and_an_advanced_section(
    client_as, snapshot, tiny_base_model
):
    response = client_as("analyst").get("/training/new/")

    assertContains(
        response,
        'placeholder="auto (1e-4 full, 1e-3 LoRA, 1e-3 AdaLoRA, 3e-3 IA3, 1e-2 prefix)"',
    )
    # Settings chosen from the data are blank, with a placeholder that says so.
    assertContains(
        response,
        '<input type="number" name="epochs" step="any" placeholder="auto (from the data)" '
        'id="id_epochs">',
    )
    assertContains(response, 'name="batch_size" placeholder="auto (from the data)"')
    assertContains(response, 'name="max_length" placeholder="auto (from the data)"')
    assertContains(response, 'name="refit_on_all_data"')
    assertContains(response, '<details class="advanced"  data-testid="advanced">')
    for name in (
        "warmup_ratio",
        "weight_decay",
        "dropout",
        "optimizer",
        "scheduler",
        "gradient_accumulation",
        "class_weighting",
        "early_stopping_metric",
        "early_stopping_patience",
        "eval_every_steps",
        "seed",
        "device",
        "precision",
    ):
        assertContains(response, f'name="{name}"')
    assertContains(response, 'name="weight_decay" value="0.01"')
    assertContains(
        response,
        '<option value="" selected>automatic (macro-F1 for single-label, macro-F1 for multi-label, '
        "MSE for regression)</option>",
    )
    assertContains(response, 'hx-post="/training/estimate/"')


def test_snapshot_in_the_address_is_preselected(client_as, snapshot, tiny_base_model):
    response = client_as("analyst").get(f"/training/new/?snapshot={snapshot.pk}")

    assertContains(
        response, f'<option value="{snapshot.pk}" selected>Reviews v1 (90 records)</option>'
    )


def test_form_without_snapshots_says_how_to_make_one(client_as, tiny_base_model):
    response = client_as("analyst").get("/training/new/")

    assertContains(response, "There are no snapshots yet.")


def test_dataset_page_links_each_snapshot_to_the_new_run_form(client_as, analyst):
    dataset = Dataset.objects.create(
        name="Ready set", status="ready", source_filename="a.csv", created_by=analyst
    )
    snapshot = make_snapshot(user=analyst, dataset=dataset)

    analyst_page = client_as("analyst").get(f"/datasets/{dataset.pk}/")
    viewer_page = client_as("viewer").get(f"/datasets/{dataset.pk}/")

    link = f'href="/training/new/?snapshot={snapshot.pk}" data-testid="train-on-snapshot">Train on this snapshot</a>'
    assertContains(analyst_page, link)
    assertNotContains(viewer_page, "Train on this snapshot")


@pytest.mark.parametrize(
    ("posted", "large_set", "expected"),
    [("", 10_000, False), ("", 1, True), ("true", 10_000, True), ("false", 1, False)],
)
def test_train_on_all_data_is_auto_from_the_set_size_unless_the_user_chooses(
    client_as, snapshot, tiny_base_model, monkeypatch, posted, large_set, expected
):
    from training_app.engine import config as engine_config

    monkeypatch.setattr(engine_config, "LARGE_SET", large_set)
    client = client_as("analyst")
    page = client.get("/training/new/")
    assertContains(page, '<option value="" selected>auto (on from 10,000 training examples)')

    client.post("/training/new/", form_data(snapshot, tiny_base_model, refit_on_all_data=posted))

    run = TrainingRun.objects.get()
    assert run.params["refit_on_all_data"] is expected
    explanation = run.events.get(kind="defaults_chosen").message
    if posted:
        assert f"refit on all data {'on' if expected else 'off'}" in explanation
    else:
        assert ("trained again on train + validation" in explanation) is expected


def test_train_on_all_data_refuses_a_value_it_does_not_offer(client_as, snapshot, tiny_base_model):
    response = client_as("analyst").post(
        "/training/new/", form_data(snapshot, tiny_base_model, refit_on_all_data="maybe")
    )

    assert response.status_code == 400  # the form again, with the error beside the field
    assert field_errors(response, "refit_on_all_data") == [
        "Select a valid choice. maybe is not one of the available choices."
    ]
    assert not TrainingRun.objects.exists()


def test_starting_a_run_redirects_to_its_page_with_a_message(client_as, snapshot, tiny_base_model):
    client = client_as("analyst")

    response = client.post("/training/new/", form_data(snapshot, tiny_base_model, name="First try"))

    run = TrainingRun.objects.get()
    assertRedirects(response, f"/training/{run.pk}/", fetch_redirect_response=False)
    assert (run.name, run.status, run.task, run.method, run.snapshot_id) == (
        "First try",
        "queued",
        "single_label",
        "full",
        snapshot.pk,
    )
    assert run.params["epochs"] == 2
    assert run.params["batch_size"] == 8
    assert run.params["max_length"] == 32
    assert run.params["learning_rate"] == 1e-4  # left blank: chosen from the data
    assert run.params["refit_on_all_data"] is False
    assert run.params["early_stopping_metric"] == "macro_f1"
    assert run.params["device"] == "cpu"
    assert run.label_names == ["negative", "neutral", "positive"]
    page = client.get(response["Location"])
    assertContains(page, "Run “First try” is queued.")


def test_blank_early_stopping_metric_uses_mse_for_regression(client_as, analyst, tiny_base_model):
    snapshot = make_snapshot(
        user=analyst, relabel={"positive": "1.5", "negative": "-1", "neutral": "0"}
    )

    response = client_as("analyst").post(
        "/training/new/", form_data(snapshot, tiny_base_model, task="regression")
    )

    run = TrainingRun.objects.get()
    assertRedirects(response, f"/training/{run.pk}/")
    assert run.params["early_stopping_metric"] == "mse"


def test_bad_hyperparameters_come_back_next_to_their_fields_and_nothing_is_created(
    client_as, snapshot, tiny_base_model
):
    response = client_as("analyst").post(
        "/training/new/",
        form_data(snapshot, tiny_base_model, epochs="0", batch_size="0", warmup_ratio="2"),
    )

    assert response.status_code == 400
    assert TrainingRun.objects.count() == 0
    assert field_errors(response, "epochs") == [
        "Epochs must be between 0 (exclusive) and 100; got 0."
    ]
    assert field_errors(response, "batch_size") == ["Batch size must be between 1 and 4096; got 0."]
    assert field_errors(response, "warmup_ratio") == [
        "Warmup ratio must be between 0 and 1; got 2."
    ]
    # The user's values stay; the Advanced section opens because it holds an error.
    assertContains(response, 'name="epochs" value="0"', status_code=400)
    assertContains(response, 'name="warmup_ratio" value="2"', status_code=400)
    assertContains(
        response, '<details class="advanced" open data-testid="advanced">', status_code=400
    )
    assertContains(response, f'<option value="{snapshot.pk}" selected>', status_code=400)


def test_bad_weight_averaging_comes_back_next_to_its_field_and_nothing_is_created(
    client_as, snapshot, tiny_base_model
):
    response = client_as("analyst").post(
        "/training/new/", form_data(snapshot, tiny_base_model, weight_averaging="1.5")
    )
    adalora = client_as("analyst").post(
        "/training/new/",
        form_data(snapshot, tiny_base_model, method="adalora", weight_averaging="0.1"),
    )

    assert response.status_code == 400
    assert field_errors(response, "weight_averaging") == [
        "Weight averaging must be between 0 and 1; got 1.5."
    ]
    assert adalora.status_code == 400
    assertContains(
        adalora,
        "Weight averaging does not apply to AdaLoRA (its ranks change during the run); set it "
        "to 0.",
        status_code=400,
    )
    assert TrainingRun.objects.count() == 0


def test_a_wrong_early_stopping_metric_is_explained_next_to_its_field(
    client_as, snapshot, tiny_base_model
):
    response = client_as("analyst").post(
        "/training/new/", form_data(snapshot, tiny_base_model, early_stopping_metric="mse")
    )

    assert TrainingRun.objects.count() == 0
    assert field_errors(response, "early_stopping_metric") == [
        escape(
            "Early stopping metric 'mse' does not apply to single-label tasks; choose one of "
            "macro_f1, accuracy, loss."
        )
    ]


def test_text_that_is_not_a_number_is_refused_by_the_form(client_as, snapshot, tiny_base_model):
    response = client_as("analyst").post(
        "/training/new/", form_data(snapshot, tiny_base_model, epochs="three")
    )

    assert response.status_code == 400
    assert TrainingRun.objects.count() == 0
    assert field_errors(response, "epochs") == ["Enter a number."]
    assertContains(response, 'name="epochs" value="three"', status_code=400)


def test_a_snapshot_without_labels_is_explained_next_to_the_snapshot(
    client_as, analyst, tiny_base_model
):
    unlabeled = make_snapshot(user=analyst, name="Unlabeled", labels=False)

    response = client_as("analyst").post("/training/new/", form_data(unlabeled, tiny_base_model))

    assert response.status_code == 400
    assert TrainingRun.objects.count() == 0
    assert field_errors(response, "snapshot") == [
        "This snapshot has no labels. Label the records first."
    ]


def test_a_snapshot_without_a_test_split_is_explained_next_to_the_snapshot(
    client_as, analyst, tiny_base_model
):
    no_test = make_snapshot(user=analyst, name="No test", test=0)

    response = client_as("analyst").post("/training/new/", form_data(no_test, tiny_base_model))

    assert TrainingRun.objects.count() == 0
    assert field_errors(response, "snapshot") == [
        "This snapshot has no test split. Assign train/validation/test splits and take a new snapshot."
    ]


def test_regression_on_text_labels_is_explained_next_to_the_task(
    client_as, snapshot, tiny_base_model
):
    response = client_as("analyst").post(
        "/training/new/", form_data(snapshot, tiny_base_model, task="regression")
    )

    assert TrainingRun.objects.count() == 0
    errors = field_errors(response, "task")
    assert len(errors) == 3
    assert errors[0].startswith(escape("Regression needs numeric labels, but the train split has "))


def test_a_base_model_folder_without_config_is_explained_next_to_the_base_model(
    client_as, snapshot, tmp_path
):
    broken = BaseModel.objects.create(name="broken", source="local", location=str(tmp_path))

    response = client_as("analyst").post("/training/new/", form_data(snapshot, broken))

    assert TrainingRun.objects.count() == 0
    assert field_errors(response, "base_model") == [
        f"The base model folder {tmp_path} has no config.json, so it is not a Hugging Face "
        "model folder. Check the path or register the model again."
    ]


def test_broker_down_keeps_the_form_says_why_and_creates_nothing(
    client_as, snapshot, tiny_base_model
):
    with broker_for_this_process(DOWN_BROKER_URL):
        response = client_as("analyst").post(
            "/training/new/", form_data(snapshot, tiny_base_model, epochs="5")
        )

    assert response.status_code == 503
    assert TrainingRun.objects.count() == 0
    assertContains(
        response,
        '<div class="flash flash-error" role="status">The task queue (Celery broker) cannot be '
        "reached, so the job was not started. Check that the broker is running, then try "
        "again.</div>",
        status_code=503,
    )
    assertContains(response, 'name="epochs" value="5"', status_code=503)


def test_viewer_cannot_start_a_run(client_as, snapshot, tiny_base_model):
    response = client_as("viewer").post("/training/new/", form_data(snapshot, tiny_base_model))

    assert response.status_code == 403
    assert TrainingRun.objects.count() == 0


# --- estimate ----------------------------------------------------------------------------------------
def test_estimate_fragment_gives_minutes_and_memory(client_as, snapshot, tiny_base_model):
    response = client_as("analyst").post(
        "/training/estimate/", form_data(snapshot, tiny_base_model), HTTP_HX_REQUEST="true"
    )

    assert response.status_code == 200
    assert [t.name for t in response.templates] == ["training_app/_estimate.html"]
    assert re.search(
        r"\d+(\.\d)?–\d+(\.\d)? (s|min|h), about \d+\.\d GB memory\.", response.content.decode()
    )
    assertContains(response, "60 training records.")
    assert TrainingRun.objects.count() == 0


def test_estimate_fragment_explains_the_settings_chosen_for_the_snapshot(
    client_as, snapshot, tiny_base_model
):
    data = {**form_data(snapshot, tiny_base_model), "epochs": "", "warmup_ratio": ""}

    response = client_as("analyst").post("/training/estimate/", data, HTTP_HX_REQUEST="true")

    assertContains(
        response,
        '<p class="small" data-testid="estimate-defaults">Chosen for 60 examples in 3 classes: '
        "3 epochs (about 180 examples seen; capped at 3), validation every 6 steps, lr 1e-4 for "
        "the encoder, 10x for the new head, layer decay 0.9, warmup 10%, weights averaged over "
        "about the last 10% of steps; yours: scheduler "
        "linear, batch size 8, max length 32.</p>",
        html=True,
    )


def test_estimate_fragment_lists_the_problems_in_sentences(client_as, snapshot, tiny_base_model):
    response = client_as("analyst").post(
        "/training/estimate/",
        form_data(snapshot, tiny_base_model, epochs="0", seed="x"),
        HTTP_HX_REQUEST="true",
    )

    assert response.status_code == 200
    assertContains(response, "<li>Seed: Enter a whole number.</li>", html=True)
    assertNotContains(response, "About")


def test_estimate_fragment_passes_on_the_engines_sentences(client_as, snapshot, tiny_base_model):
    response = client_as("analyst").post(
        "/training/estimate/", form_data(snapshot, tiny_base_model, epochs="0")
    )

    assertContains(
        response, "<li>Epochs must be between 0 (exclusive) and 100; got 0.</li>", html=True
    )


def test_estimate_asks_for_a_snapshot_first(client_as, snapshot, tiny_base_model):
    response = client_as("analyst").post(
        "/training/estimate/", form_data(snapshot, tiny_base_model, snapshot="")
    )

    assertContains(response, "<li>Choose a snapshot to see an estimate.</li>", html=True)


def test_viewer_gets_no_estimate(client_as, snapshot, tiny_base_model):
    response = client_as("viewer").post("/training/estimate/", form_data(snapshot, tiny_base_model))

    assert response.status_code == 403


# --- run page ----------------------------------------------------------------------------------------
def test_running_run_page_shows_progress_charts_throughput_events_and_cancel(
    client_as, running_run
):
    response = client_as("analyst").get(f"/training/{running_run.pk}/")

    assert response.status_code == 200
    assertContains(
        response,
        '<span class="badge badge-running" id="run-status" data-testid="run-status">Running</span>',
        html=True,
    )
    assertContains(response, CANCEL_BUTTON)
    assertContains(
        response,
        f'id="run-live" data-live-url="/training/{running_run.pk}/live/" data-active="true"',
    )
    assertContains(
        response,
        '<span class="stat-value" id="run-throughput" data-testid="run-throughput">123.4</span>',
        html=True,
    )
    assertContains(
        response,
        '<span class="stat-value" id="run-time-left" data-testid="run-time-left">17 s</span>',
        html=True,
    )
    assertContains(
        response,
        '<span class="stat-value" id="run-steps" data-testid="run-steps">8 / 20</span>',
        html=True,
    )
    assertContains(response, '<canvas id="loss-chart" data-testid="loss-chart"></canvas>')
    assertContains(
        response, '<canvas id="validation-chart" data-testid="validation-chart"></canvas>'
    )
    series = json_script(response, "run-metrics-data")
    assert [p["value"] for p in series["train_loss"]] == [1.1, 1.0, 0.9]
    assertContains(
        response, '<span class="badge">evaluated</span> Step 7: macro_f1 0.5000', html=False
    )
    assertNotContains(response, 'data-testid="test-report"')
    assertContains(response, "Reviews</a> · snapshot v1 (90 records)")


def test_live_state_carries_badge_progress_tiles_events_and_series_from_one_read(
    client_as, running_run
):
    response = client_as("viewer").get(f"/training/{running_run.pk}/live/")

    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    state = response.json()
    assert state["status"] == "running"
    assert state["status_display"] == "Running"
    assert state["is_active"] is True
    assert state["progress"] == 40
    assert state["message"] == "Step 8 of 20, loss 0.9000."
    assert state["tiles"] == {"steps": "8 / 20", "time_left": "17 s", "throughput": "123.4"}
    assert [(e["kind"], e["message"]) for e in state["events"]] == [
        ("started", "Started."),
        ("evaluated", "Step 7: macro_f1 0.5000"),
    ]
    assert [p["value"] for p in state["series"]["train_loss"]] == [1.1, 1.0, 0.9]


def test_live_state_follows_the_row_as_the_run_advances(client_as, running_run):
    client = client_as("viewer")
    TrainingRun.objects.filter(pk=running_run.pk).update(
        steps_done=24, total_steps=135, seconds_left=173, progress=17
    )

    state = client.get(f"/training/{running_run.pk}/live/").json()

    assert state["tiles"]["steps"] == "24 / 135"
    assert state["tiles"]["time_left"] == "3 min"
    assert state["progress"] == 17


def test_running_run_without_events_does_not_say_it_waits_for_a_worker(client_as, make_run):
    run = make_run(status="running", progress=0)

    page = client_as("viewer").get(f"/training/{run.pk}/")
    state = client_as("viewer").get(f"/training/{run.pk}/live/").json()

    assertNotContains(page, "picks it up")
    assertContains(page, "A worker has the run and is loading the model and data")
    assert state["events"] == []
    assert state["events_empty_text"].startswith("A worker has the run")


def test_page_and_live_state_show_the_same_line_under_the_progress_bar(client_as, make_run):
    run = make_run(
        status="running", progress=40, steps_done=8, total_steps=20, seconds_left=17, attempts=2
    )
    client = client_as("viewer")

    page = client.get(f"/training/{run.pk}/")
    state = client.get(f"/training/{run.pk}/live/").json()

    assert (state["message"], state["progress_text"]) == ("", "40% · about 17 s left · attempt 2")
    assertContains(page, '<span id="run-message"></span>', html=False)
    assertContains(
        page,
        '<span class="muted small" id="run-progress-text">40% · about 17 s left · attempt 2</span>',
        html=False,
    )
    assertNotContains(page, "Waiting for a worker")


def test_queued_run_says_it_waits_for_a_worker(client_as, make_run):
    run = make_run(status="queued")

    state = client_as("viewer").get(f"/training/{run.pk}/live/").json()

    assert state["events_empty_text"] == (
        "Nothing yet: the run starts when a worker on the gpu queue picks it up."
    )
    assert state["tiles"] == {"steps": "0", "time_left": "—", "throughput": "—"}


def test_live_state_of_an_unknown_run_is_a_404(client_as):
    response = client_as("viewer").get("/training/999999/live/")

    assert response.status_code == 404


def test_events_fragment_stops_polling_once_the_run_finished(client_as, finished_run):
    response = client_as("viewer").get(f"/training/{finished_run.pk}/events/")

    assert [t.name for t in response.templates] == ["training_app/_run_events.html"]
    assertNotContains(response, "hx-trigger")
    assertContains(response, "Registered Reviews v1.")


def test_finished_run_page_shows_test_report_confusion_matrix_worst_mistakes_and_download(
    client_as, finished_run, model_version
):
    response = client_as("viewer").get(f"/training/{finished_run.pk}/")

    content = response.content.decode()
    assertNotContains(response, CANCEL_BUTTON)
    assertContains(response, 'data-active="false"')
    assertContains(response, 'data-testid="test-report"')
    assertContains(
        response,
        '<span class="stat-value">0.7500</span><span class="stat-title">macro-F1</span>',
        html=True,
    )
    assertContains(
        response,
        "<tr><td>neutral</td><td>0.667</td><td>0.400</td><td>0.500</td><td>5</td></tr>",
        html=True,
    )
    assert content.count('<th class="heatmap-col" scope="col">') == 3
    assert content.count('<th scope="row" class="heatmap-row">') == 3
    assertContains(
        response,
        '<td class="heatmap-cell diagonal dark" style="background-color: rgba(79, 70, 229, 0.800)" title="4 of 5 (0.80)">4</td>',
    )
    assertContains(
        response,
        '<td class="heatmap-cell" style="background-color: rgba(79, 70, 229, 0.400)" title="2 of 5 (0.40)">2</td>',
    )
    assertContains(
        response,
        '<tr><td class="text-cell">the plot was okay</td><td>neutral</td><td>negative</td><td>2.346</td></tr>',
        html=True,
    )
    assertContains(
        response,
        f'href="/models/versions/{model_version.pk}/" data-testid="model-version-link">Reviews v1</a>',
    )
    assertContains(
        response,
        f'href="/models/versions/{model_version.pk}/download/" data-testid="download">Download (Hugging Face folder, zip)</a>',
    )


def test_multi_label_report_lists_per_class_rows_without_a_confusion_matrix(client_as, make_run):
    run = make_run(
        status="succeeded",
        task="multi_label",
        test_metrics={"micro_f1": 0.9},
        test_report={
            "micro_f1": 0.9,
            "labels": ["a", "b"],
            "per_class": {"a": {"precision": 1, "recall": 1, "f1": 1, "support": 2}},
        },
        worst_examples=[{"text": "t", "label": ["a", "b"], "predicted": [], "loss": 0.5}],
    )

    response = client_as("viewer").get(f"/training/{run.pk}/")

    assertContains(response, 'data-testid="per-class"')
    assertNotContains(response, 'data-testid="confusion-matrix"')
    assertContains(response, "<td>a, b</td><td>(none)</td>", html=True)


def test_unknown_run_is_a_404(client_as, db):
    response = client_as("analyst").get("/training/999999/")

    assert response.status_code == 404


# --- cancel ------------------------------------------------------------------------------------------
def test_cancel_stops_an_active_run_and_says_so(client_as, running_run):
    client = client_as("analyst")

    response = client.post(f"/training/{running_run.pk}/cancel/")

    assertRedirects(response, f"/training/{running_run.pk}/", fetch_redirect_response=False)
    running_run.refresh_from_db()
    assert running_run.status == "cancelled"
    assert TrainingEvent.objects.filter(run=running_run, kind="cancel_requested").count() == 1
    page = client.get(response["Location"])
    assertContains(page, "The run is cancelled. A running worker stops at its next step.")
    assertNotContains(page, CANCEL_BUTTON)


def test_cancel_of_a_finished_run_changes_nothing_and_says_why(client_as, finished_run):
    client = client_as("analyst")

    response = client.post(f"/training/{finished_run.pk}/cancel/", follow=True)

    finished_run.refresh_from_db()
    assert finished_run.status == "succeeded"
    assertContains(
        response,
        '<div class="flash flash-error" role="status">This run has already finished.</div>',
    )


def test_viewer_cannot_cancel(client_as, running_run):
    before = run_state()

    response = client_as("viewer").post(f"/training/{running_run.pk}/cancel/")

    assert response.status_code == 403
    assert run_state() == before


def test_cancel_needs_post(client_as, running_run):
    response = client_as("analyst").get(f"/training/{running_run.pk}/cancel/")

    assert response.status_code == 405
    running_run.refresh_from_db()
    assert running_run.status == "running"


# --- resume ------------------------------------------------------------------------------------------
def test_resume_of_a_failed_run_without_a_checkpoint_queues_it_from_the_beginning(
    client_as, make_run, queue_redis
):
    run = make_run(status="failed", attempts=3, error_message="Lost.", finished_at=timezone.now())
    client = client_as("analyst")
    page = client.get(f"/training/{run.pk}/")
    assertContains(page, 'data-testid="resume">Resume</button>')
    assertContains(
        page, "No checkpoint was kept, so Resume starts this run again from the beginning."
    )

    with broker_for_this_process(queue_redis[0]):
        response = client.post(f"/training/{run.pk}/resume/", follow=True)

    run.refresh_from_db()
    assert (run.status, run.attempts, run.error_message) == ("queued", 0, "")
    assert queue_redis[1].llen(queue_name("gpu")) == 1
    assertContains(
        response,
        '<div class="flash flash-success" role="status">The run is queued again. No checkpoint '
        "was kept, so the run starts from the beginning.</div>",
    )


def test_resume_of_a_running_run_changes_nothing_and_says_why(client_as, running_run):
    before = run_state()

    response = client_as("analyst").post(f"/training/{running_run.pk}/resume/", follow=True)

    assert run_state() == before
    assertContains(
        response,
        '<div class="flash flash-error" role="status">Only a failed or cancelled run can be '
        "resumed.</div>",
    )


def test_resume_with_the_broker_down_keeps_the_run_failed_and_says_why(client_as, make_run):
    run = make_run(status="failed", checkpoint_step=4, finished_at=timezone.now())

    with broker_for_this_process(DOWN_BROKER_URL):
        response = client_as("analyst").post(f"/training/{run.pk}/resume/", follow=True)

    run.refresh_from_db()
    assert (run.status, run.checkpoint_step) == ("failed", 4)
    assertContains(
        response,
        '<div class="flash flash-error" role="status">The task queue (Celery broker) cannot be '
        "reached, so the job was not started. Check that the broker is running, then try "
        "again.</div>",
    )


def test_viewer_cannot_resume_and_sees_no_resume_button(client_as, make_run):
    run = make_run(status="failed", finished_at=timezone.now())
    before = run_state()
    client = client_as("viewer")

    assertNotContains(client.get(f"/training/{run.pk}/"), 'data-testid="resume"')
    response = client.post(f"/training/{run.pk}/resume/")

    assert response.status_code == 403
    assert run_state() == before


def test_resume_needs_post(client_as, make_run):
    run = make_run(status="failed", finished_at=timezone.now())

    response = client_as("analyst").get(f"/training/{run.pk}/resume/")

    assert response.status_code == 405
    assert TrainingRun.objects.get(pk=run.pk).status == "failed"


# --- models page and model version page -------------------------------------------------------------
def test_models_page_without_versions_says_how_they_appear(client_as, tiny_base_model):
    response = client_as("viewer").get("/models/")

    assertContains(response, "<strong>tiny-bert</strong>")
    assertContains(response, "No model versions yet")
    assertContains(response, 'Start one from <a href="/training/">Training</a>.')


def test_models_page_lists_registered_models_and_their_versions(client_as, model_version):
    response = client_as("viewer").get("/models/")

    assertNotContains(response, "No model versions yet")
    assertContains(response, "<h2>Reviews</h2>")
    assertContains(
        response, f'<a href="/models/versions/{model_version.pk}/"><strong>v1</strong></a>'
    )
    assertContains(
        response,
        f'<a href="/training/{model_version.training_run_id}/">run #{model_version.training_run_id}</a>',
    )
    assertContains(response, "loss 0.550 · accuracy 0.800 · macro-F1 0.750")
    assertContains(
        response,
        f'<a class="btn" href="/models/versions/{model_version.pk}/download/">Download</a>',
    )


def test_version_page_shows_hyperparameters_metrics_files_and_loads_evaluations(
    client_as, model_version
):
    response = client_as("viewer").get(f"/models/versions/{model_version.pk}/")

    assert response.status_code == 200
    assertContains(
        response, '<tr data-param="epochs"><th scope="row">Epochs</th><td>2</td></tr>', html=True
    )
    assertContains(
        response,
        '<tr data-param="learning_rate"><th scope="row">Learning rate</th>'
        "<td>the method's default</td></tr>",
        html=True,
    )
    assertContains(response, '<tr><th scope="row">macro-F1</th><td>0.7500</td></tr>', html=True)
    assertNotContains(response, "macro_f1")
    assertNotContains(response, "single_label")
    assertContains(response, "<td><code>config.json</code></td><td>512\xa0bytes</td>", html=True)
    assertContains(response, "Download (Hugging Face folder, zip)")
    assertContains(
        response,
        f'hx-get="/training/model-versions/{model_version.pk}/evaluations/" hx-trigger="load"',
    )


def test_version_download_is_a_zip_of_the_folder(client_as, model_version):
    default_storage.save(f"{model_version.artifact_uri}/config.json", ContentFile(b"{}"))

    response = client_as("viewer").get(f"/models/versions/{model_version.pk}/download/")

    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="Reviews-v1.zip"'
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert archive.namelist() == ["Reviews-v1/config.json"]
    assert archive.read("Reviews-v1/config.json") == b"{}"


def test_evaluations_panel_offers_the_form_to_analysts_only(client_as, model_version):
    analyst_panel = client_as("analyst").get(
        f"/training/model-versions/{model_version.pk}/evaluations/"
    )
    viewer_panel = client_as("viewer").get(
        f"/training/model-versions/{model_version.pk}/evaluations/"
    )

    assertContains(analyst_panel, 'data-testid="evaluate-form"')
    assertContains(analyst_panel, f'<option value="{model_version.snapshot_id}" selected>')
    assertContains(analyst_panel, "No evaluations yet.")
    assertNotContains(viewer_panel, 'data-testid="evaluate-form"')


def test_evaluating_on_a_snapshot_queues_an_evaluation_shown_with_its_progress(
    client_as, model_version
):
    response = client_as("analyst").post(
        f"/training/model-versions/{model_version.pk}/evaluations/",
        {"snapshot": model_version.snapshot_id, "split": "validation"},
        HTTP_HX_REQUEST="true",
    )

    evaluation = Evaluation.objects.get()
    assert (evaluation.model_version_id, evaluation.split, evaluation.status) == (
        model_version.pk,
        "validation",
        "queued",
    )
    assert response.status_code == 200
    assertContains(response, "Evaluation of Reviews v1 on validation is queued.")
    assertContains(
        response,
        f'hx-get="/jobs/training_app.evaluation/{evaluation.pk}/progress/?reload=1"',
    )


def test_evaluating_without_htmx_redirects_back_with_a_message(client_as, model_version):
    client = client_as("analyst")

    response = client.post(
        f"/training/model-versions/{model_version.pk}/evaluations/",
        {"snapshot": model_version.snapshot_id, "split": "test"},
    )

    assertRedirects(
        response, f"/models/versions/{model_version.pk}/", fetch_redirect_response=False
    )
    assert Evaluation.objects.count() == 1
    page = client.get(response["Location"])
    assertContains(page, "Evaluation of Reviews v1 on test is queued.")


def test_evaluating_on_an_empty_split_shows_why_and_creates_nothing(
    client_as, analyst, model_version
):
    no_test = make_snapshot(user=analyst, name="No test", test=0)

    response = client_as("analyst").post(
        f"/training/model-versions/{model_version.pk}/evaluations/",
        {"snapshot": no_test.pk, "split": "test"},
        HTTP_HX_REQUEST="true",
    )

    assert Evaluation.objects.count() == 0
    assert field_errors(response, "split") == ["Snapshot v1 has no test records."]


def test_viewer_cannot_start_an_evaluation(client_as, model_version):
    response = client_as("viewer").post(
        f"/training/model-versions/{model_version.pk}/evaluations/",
        {"snapshot": model_version.snapshot_id, "split": "test"},
    )

    assert response.status_code == 403
    assert Evaluation.objects.count() == 0


# --- with the real engine (tiny BERT on the CPU, no worker) ----------------------------------------


@pytest.fixture
def trained_run(analyst, snapshot, tiny_base_model, monkeypatch) -> TrainingRun:
    """A run trained for real by the service, as a worker would (one thread, one epoch)."""
    from training_app import services

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = services.training_run_start(
        user=analyst,
        snapshot=snapshot,
        base_model=tiny_base_model,
        task="single_label",
        params={"epochs": 1, "batch_size": 8, "max_length": 32, "device": "cpu"},
    )
    services.training_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error_message
    return run


def test_run_trained_by_the_engine_shows_its_real_report(client_as, trained_run):
    response = client_as("viewer").get(f"/training/{trained_run.pk}/")

    content = response.content.decode()
    assertContains(
        response,
        '<span class="badge badge-succeeded" id="run-status" data-testid="run-status">Succeeded</span>',
        html=True,
    )
    assert content.count('<th scope="row" class="heatmap-row">') == 3
    assert content.count('<td class="heatmap-cell') == 9
    assertContains(response, 'data-testid="worst-examples"')
    assertContains(response, "Download (Hugging Face folder, zip)")
    series = json_script(response, "run-metrics-data")
    assert series["train_loss"]
    assert series["val_macro_f1"]


def test_a_trained_run_registers_a_model_named_apart_from_its_snapshot(client_as, trained_run):
    """Issue 9 item 19: the version is "Reviews-single-label v1", not "Reviews v1" like the
    snapshot; the engine's resolved values and a plural-aware start event are recorded."""
    version = trained_run.model_version

    assert version.registered_model.name == "Reviews-single-label"
    assert str(version) == "Reviews-single-label v1"
    assert trained_run.resolved_params["device"] == "cpu"
    assert trained_run.resolved_params["learning_rate"] == 1e-4  # chosen from the data
    # "auto" precision: bf16 training on a CPU with AMX tiles, fp32 on others.
    assert trained_run.resolved_params["precision"] == ("bf16" if _cpu_has_amx() else "fp32")
    started = trained_run.events.get(kind="started").message
    assert " for 1 epoch (" in started
    assert "; yours: epochs 1, batch size 8, max length 32." in started


def test_finished_evaluation_shows_its_metrics_in_the_panel(client_as, trained_run):
    from training_app import services

    client = client_as("analyst")
    version = trained_run.model_version
    client.post(
        f"/training/model-versions/{version.pk}/evaluations/",
        {"snapshot": trained_run.snapshot_id, "split": "test"},
        HTTP_HX_REQUEST="true",
    )
    evaluation = Evaluation.objects.get()

    services.evaluation_execute(evaluation_id=evaluation.pk)

    evaluation.refresh_from_db()
    assert evaluation.status == "succeeded"
    panel = client.get(f"/training/model-versions/{version.pk}/evaluations/")
    assertContains(panel, '<span class="stat-title">macro-F1</span>')


def test_the_api_gives_a_runs_resolved_hyperparameters(api_client_as, make_run):
    run = make_run(
        params={"learning_rate": None, "epochs": 1.0},
        resolved_params={"learning_rate": 5e-5, "epochs": 1.0, "device": "cpu"},
    )

    body = api_client_as("viewer").get(f"/api/v1/runs/{run.pk}/").json()

    assert body["params"] == {"learning_rate": None, "epochs": 1.0}
    assert body["resolved_params"] == {"learning_rate": 5e-5, "epochs": 1.0, "device": "cpu"}
