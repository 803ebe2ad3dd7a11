"""Search pages and API: the form's errors in sentences, the page (trials, best, pruned,
importance empty state, live polling), roles, and the API endpoints."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.conftest import broker_for_this_process
from training_app.models import HyperparameterSearch, TrainingMetric, TrainingRun
from training_app.search import space_clean

SPACE = {"methods": ["full"], "epochs": [1, 2], "batch_size": [8], "learning_rate": [1e-4, 1e-3]}


def _form(snapshot, base_model, **overrides) -> dict:
    values = {
        "snapshot": snapshot.pk,
        "base_model": base_model.pk,
        "task": "single_label",
        "max_trials": "3",
        "parallel_trials": "1",
        "methods": ["full", "lora"],
        "batch_sizes": "8",
        "lora_ranks": "2, 4",
        "epochs_low": "1",
        "epochs_high": "2",
        "max_length": "16",
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


@pytest.fixture
def finished_search(analyst, snapshot, tiny_base_model):
    space, _ = space_clean(SPACE)
    search = HyperparameterSearch.objects.create(
        name="Reviews search",
        snapshot=snapshot,
        base_model=tiny_base_model,
        task="single_label",
        space=space,
        metric="macro_f1",
        max_trials=3,
        created_by=analyst,
        status="succeeded",
        message="Best: trial 2, validation macro_f1 0.9000; registered Reviews-classifier v1.",
    )
    for number, (status, pruned, score) in enumerate(
        [("succeeded", False, 0.7), ("succeeded", False, 0.9), ("cancelled", True, 0.2)]
    ):
        run = TrainingRun.objects.create(
            name=f"trial {number + 1}",
            snapshot=snapshot,
            base_model=tiny_base_model,
            task="single_label",
            method="full",
            status=status,
            search=search,
            trial_number=number,
            trial_pruned=pruned,
            trial_params={
                "method": "full",
                "learning_rate": 1e-4 * (number + 1),
                "epochs": 1 + number % 2,
                "batch_size": 8,
                "weight_decay": 0.01 * number,
                "warmup_ratio": 0.05 * number,
            },
            best_metrics={"macro_f1": score},
        )
        TrainingMetric.objects.create(run=run, step=5, epoch=1, name="val_macro_f1", value=score)
    search.best_trial = search.trials.get(trial_number=1)
    search.save()
    return search


# --- the form ------------------------------------------------------------------------------------
def test_the_search_button_is_next_to_new_run(client_as, finished_search):
    page = client_as("analyst").get(reverse("training:run_list")).content.decode()
    assert 'data-testid="search-button"' in page
    page = client_as("viewer").get(reverse("training:run_list")).content.decode()
    assert 'data-testid="search-button"' not in page


def test_a_search_without_budget_is_refused_on_the_form(client_as, snapshot, tiny_base_model):
    response = client_as("analyst").post(
        reverse("training:search_create"), _form(snapshot, tiny_base_model, max_trials=None)
    )
    assert response.status_code == 400
    assert "Set a budget: a number of trials, a number of minutes, or both." in (
        response.content.decode()
    )
    assert not HyperparameterSearch.objects.exists()


def test_an_empty_space_and_bad_lists_are_refused_on_the_form(client_as, snapshot, tiny_base_model):
    response = client_as("analyst").post(
        reverse("training:search_create"),
        _form(snapshot, tiny_base_model, methods=[], batch_sizes="eight"),
    )
    page = response.content.decode()
    assert response.status_code == 400
    assert "Write whole numbers separated by commas, for example 8, 16, 32." in page
    assert not HyperparameterSearch.objects.exists()

    response = client_as("analyst").post(
        reverse("training:search_create"), _form(snapshot, tiny_base_model, methods=[])
    )
    assert "Choose at least one method to search: full fine-tuning, LoRA or both." in (
        response.content.decode()
    )


def test_a_valid_form_starts_the_search_and_opens_its_page(
    client_as, snapshot, tiny_base_model, redis_url
):
    with broker_for_this_process(redis_url):
        response = client_as("analyst").post(
            reverse("training:search_create"), _form(snapshot, tiny_base_model)
        )
    search = HyperparameterSearch.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("training:search_detail", args=[search.pk])
    assert search.space["lora_r"] == [2, 4]
    assert search.fixed_params == {"max_length": 16}
    assert search.trials.count() == 1


@pytest.mark.parametrize("role", ["viewer", "annotator"])
def test_only_builders_open_the_search_form(client_as, role):
    assert client_as(role).get(reverse("training:search_create")).status_code == 403


# --- the page ------------------------------------------------------------------------------------
def test_the_search_page_shows_trials_best_and_pruned(client_as, finished_search):
    response = client_as("viewer").get(reverse("training:search_detail", args=[finished_search.pk]))
    page = response.content.decode()
    assert response.status_code == 200
    assert page.count("<tr data-trial=") == 3
    assert '<tr data-trial="2" class="is-best" data-testid="best-trial">' in page
    assert ">Pruned</span>" in page
    assert "registered Reviews-classifier v1" in page
    assert 'data-testid="search-model-version"' not in page  # rows only: no version was made
    assert 'hx-trigger="every 3s"' not in page  # finished: no polling
    assert 'data-testid="cancel-search"' not in page
    # The space's numbers read as elsewhere in the console (5e-5, not 5e-05).
    assert "lr 1e-4–1e-3 (full)" in page
    assert "weight decay 0–0.1" in page


def test_importance_is_an_empty_state_below_two_finished_trials(client_as, finished_search):
    TrainingRun.objects.filter(search=finished_search, trial_number=0).update(status="failed")
    page = (
        client_as("viewer")
        .get(reverse("training:search_live", args=[finished_search.pk]))
        .content.decode()
    )
    assert 'data-testid="importance-empty"' in page


def test_a_running_search_polls_its_live_part(client_as, finished_search):
    HyperparameterSearch.objects.filter(pk=finished_search.pk).update(status="running")
    page = (
        client_as("analyst")
        .get(reverse("training:search_detail", args=[finished_search.pk]))
        .content.decode()
    )
    assert 'hx-trigger="every 3s"' in page
    assert 'data-testid="cancel-search"' in page
    live = (
        client_as("analyst")
        .get(reverse("training:search_live", args=[finished_search.pk]))
        .content.decode()
    )
    assert 'data-testid="cancel-search"' in live


def test_a_registering_search_says_so_and_keeps_polling(client_as, finished_search):
    HyperparameterSearch.objects.filter(pk=finished_search.pk).update(
        status="registering",
        message="Best: trial 2, validation macro_f1 0.9000. Registering its model.",
    )
    page = (
        client_as("analyst")
        .get(reverse("training:search_detail", args=[finished_search.pk]))
        .content.decode()
    )
    assert 'data-testid="search-status">Registering</span>' in page
    assert "Registering its model." in page
    assert 'hx-trigger="every 3s"' in page  # until the version exists
    assert 'data-testid="cancel-search"' not in page  # the trials are done
    # The button lives in the polled part, so a page opened while the search ran loses it too.
    live = (
        client_as("analyst")
        .get(reverse("training:search_live", args=[finished_search.pk]))
        .content.decode()
    )
    assert 'data-testid="search-status">Registering</span>' in live
    assert 'data-testid="cancel-search"' not in live


def test_annotators_cannot_see_searches(client_as, finished_search):
    client = client_as("annotator")
    assert client.get(reverse("training:search_list")).status_code == 403
    assert (
        client.get(reverse("training:search_detail", args=[finished_search.pk])).status_code == 403
    )


# --- the API -------------------------------------------------------------------------------------
def test_the_api_lists_and_gets_searches_with_trials(api_client_as, finished_search):
    api = api_client_as("viewer")
    listed = api.get("/api/v1/searches/").json()
    assert [item["id"] for item in listed] == [finished_search.pk]
    detail = api.get(f"/api/v1/searches/{finished_search.pk}/").json()
    assert [t["state"] for t in detail["trials"]] == ["succeeded", "succeeded", "pruned"]
    assert [t["score"] for t in detail["trials"]] == [0.7, 0.9, 0.2]
    assert detail["best_trial"] == finished_search.best_trial_id


def test_the_api_says_registering_until_the_version_exists(api_client_as, finished_search):
    HyperparameterSearch.objects.filter(pk=finished_search.pk).update(status="registering")
    api = api_client_as("viewer")

    detail = api.get(f"/api/v1/searches/{finished_search.pk}/").json()

    assert (detail["status"], detail["model_version"]) == ("registering", None)
    assert api.get("/api/v1/searches/").json()[0]["status"] == "registering"


def test_the_api_refuses_a_bad_budget_with_a_sentence(api_client_as, snapshot, tiny_base_model):
    response = api_client_as("analyst").post(
        "/api/v1/searches/",
        {"snapshot": snapshot.pk, "base_model": tiny_base_model.pk, "max_trials": 0},
        format="json",
    )
    assert response.status_code == 400
    assert "The trial budget must be between 1 and 500; it is 0." in str(response.json())


def test_the_api_starts_and_cancels_a_search(api_client_as, snapshot, tiny_base_model, redis_url):
    api = api_client_as("analyst")
    with broker_for_this_process(redis_url):
        response = api.post(
            "/api/v1/searches/",
            {
                "snapshot": snapshot.pk,
                "base_model": tiny_base_model.pk,
                "max_trials": 4,
                "parallel_trials": 2,
                "space": SPACE,
                "params": {"max_length": 16},
            },
            format="json",
        )
    assert response.status_code == 201, response.json()
    search_id = response.json()["id"]
    assert len(response.json()["trials"]) == 2
    assert api_client_as("viewer").post(f"/api/v1/searches/{search_id}/cancel/").status_code == 403
    cancelled = api.post(f"/api/v1/searches/{search_id}/cancel/")
    assert cancelled.json()["status"] == "cancelled"
    again = api.post(f"/api/v1/searches/{search_id}/cancel/")
    assert again.status_code == 400
    assert "This search has already finished." in str(again.json())


def test_the_search_endpoints_are_in_the_openapi_schema(api_client_as):
    schema = api_client_as("viewer").get("/api/schema/").content.decode()
    assert "/api/v1/searches/{search_id}/cancel/" in schema


def test_a_pruned_trial_reads_pruned_on_the_run_pages(client_as, finished_search):
    pruned = finished_search.trials.get(trial_number=2)
    client = client_as("viewer")
    page = client.get(reverse("training:run_detail", args=[pruned.pk])).content.decode()
    assert 'data-testid="run-status">Pruned</span>' in page
    assert f"trial 3 of search #{finished_search.pk}" in page
    listing = client.get(reverse("training:run_list")).content.decode()
    assert '<span class="badge badge-pruned">Pruned</span>' in listing
    assert "badge-cancelled" not in listing


def test_the_search_page_links_the_registered_version(client_as, finished_search):
    from models_app.models import ModelVersion, RegisteredModel

    best = finished_search.best_trial
    version = ModelVersion.objects.create(
        registered_model=RegisteredModel.objects.create(name="Reviews-classifier"),
        version=1,
        training_run=best,
        snapshot=best.snapshot,
        base_model=best.base_model,
        task="single_label",
        method="full",
        artifact_uri=f"artifacts/runs/{best.pk}",
        status=ModelVersion.Status.READY,
    )
    page = (
        client_as("viewer")
        .get(reverse("training:search_detail", args=[finished_search.pk]))
        .content.decode()
    )
    assert reverse("models:version_detail", args=[version.pk]) in page
