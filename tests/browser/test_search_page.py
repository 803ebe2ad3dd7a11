"""The search page in real headless Chromium: the Search button and the form's plain errors,
then a running search whose trials table, chart and best trial follow the rows live, and which
reads Registering until its best version exists, then Succeeded with a link to it."""

import pytest
from playwright.sync_api import expect

from tests.browser.test_training import log_in
from tests.training_app.conftest import make_snapshot, register_tiny_base_model, save_tiny_bert

pytestmark = pytest.mark.browser


def _trial(search, number, score, *, status="succeeded", pruned=False):
    from training_app.models import TrainingRun

    return TrainingRun.objects.create(
        name=f"trial {number + 1}",
        snapshot=search.snapshot,
        base_model=search.base_model,
        task="single_label",
        method="full",
        status=status,
        search=search,
        trial_number=number,
        trial_pruned=pruned,
        trial_params={
            "method": "full",
            "learning_rate": 5e-5 * (number + 1),
            "epochs": 2 + number % 3,
            "batch_size": 8,
            "weight_decay": 0.01 * number,
            "warmup_ratio": 0.05 * number,
        },
        best_metrics={"macro_f1": score} if score is not None else {},
    )


def test_search_form_errors_then_a_live_search_page(
    page, live_server, transactional_db, make_user, tmp_path
):
    from training_app.models import HyperparameterSearch
    from training_app.search import space_clean

    analyst = make_user("analyst", username="ana")
    base_model = register_tiny_base_model(save_tiny_bert(tmp_path / "tiny-bert"))
    snapshot = make_snapshot(user=analyst)
    log_in(page, live_server, "ana")

    # The Search button, and a refused form in sentences (no budget, no method).
    page.goto(f"{live_server.url}/training/")
    page.get_by_test_id("search-button").first.click()
    # Laid out as the run form: the form card left, a side card right, at the same place.
    search_card = page.locator(".run-form-layout > section.card").bounding_box()
    aside = page.get_by_test_id("search-how").bounding_box()
    assert aside["x"] >= search_card["x"] + search_card["width"]
    assert abs(aside["y"] - search_card["y"]) <= 1
    # Each range on one line, its defaults written as typed.
    low = page.get_by_label("Learning rate (full fine-tuning), from")
    high = page.get_by_label("Learning rate (full fine-tuning), to")
    expect(low).to_have_value("0.00005")
    expect(page.get_by_label("Weight decay, from")).to_have_value("0")
    assert abs(low.bounding_box()["y"] - high.bounding_box()["y"]) <= 1
    search_url = page.url
    page.goto(f"{live_server.url}/training/new/")
    run_card = page.locator(".run-form-layout > section.card").bounding_box()
    assert (run_card["x"], run_card["width"]) == (search_card["x"], search_card["width"])
    page.goto(search_url)
    page.get_by_label("Snapshot").select_option(str(snapshot.pk))
    page.get_by_role("checkbox", name="Full fine-tuning").uncheck()
    page.get_by_role("checkbox", name="LoRA").uncheck()
    page.get_by_test_id("start-search").click()
    expect(
        page.get_by_text("Set a budget: a number of trials, a number of minutes")
    ).to_be_visible()
    page.get_by_label("Trials", exact=True).fill("5")
    page.get_by_test_id("start-search").click()
    expect(
        page.get_by_text("Choose at least one method to search: full fine-tuning, LoRA or both.")
    ).to_be_visible()
    assert not HyperparameterSearch.objects.exists()

    # A running search (rows written directly: no worker here).
    space, _ = space_clean({"methods": ["full"]})
    search = HyperparameterSearch.objects.create(
        name="Reviews search",
        snapshot=snapshot,
        base_model=base_model,
        task="single_label",
        space=space,
        metric="macro_f1",
        max_trials=5,
        created_by=analyst,
        message="2 of 5 trials finished, 1 queued or running.",
    )
    _trial(search, 0, 0.61)
    _trial(search, 1, 0.2, status="cancelled", pruned=True)
    _trial(search, 2, None, status="running")
    page.goto(f"{live_server.url}/training/searches/{search.pk}/")
    expect(page.get_by_test_id("search-status")).to_have_text("Running")
    expect(page.locator("tr[data-trial]")).to_have_count(3)
    expect(page.locator('tr[data-trial="2"]')).to_contain_text("Pruned")
    expect(page.get_by_test_id("best-trial")).to_have_attribute("data-trial", "1")
    expect(page.get_by_test_id("importance-empty")).to_be_visible()
    assert page.evaluate("Chart.getChart('search-chart').data.datasets[0].data.length") == 2

    # Trial 3 finishes better and trial 4 starts: the poll brings both, the chart and the best.
    from training_app.models import TrainingRun

    TrainingRun.objects.filter(search=search, trial_number=2).update(
        status="succeeded", best_metrics={"macro_f1": 0.83}
    )
    _trial(search, 3, None, status="queued")
    expect(page.locator("tr[data-trial]")).to_have_count(4, timeout=10_000)
    expect(page.get_by_test_id("best-trial")).to_have_attribute("data-trial", "3")
    page.wait_for_function(
        "() => Chart.getChart('search-chart').data.datasets[0].data.length === 3", timeout=10_000
    )
    expect(page.get_by_test_id("importance").locator("tr[data-param]").first).to_be_visible()

    # The budget is spent: the search says Registering (still polling) until the best trial's
    # version exists, and Succeeded with a link to it only then.
    from models_app.models import ModelVersion, RegisteredModel

    best = TrainingRun.objects.get(search=search, trial_number=2)
    TrainingRun.objects.filter(search=search, trial_number=3).update(
        status="succeeded", best_metrics={"macro_f1": 0.5}
    )
    HyperparameterSearch.objects.filter(pk=search.pk).update(
        status="registering",
        best_trial=best,
        message="Best: trial 3, validation macro_f1 0.8300. Registering its model.",
    )
    expect(page.get_by_test_id("search-status")).to_have_text("Registering", timeout=10_000)
    expect(page.get_by_test_id("search-message")).to_have_text(
        "Best: trial 3, validation macro_f1 0.8300. Registering its model."
    )
    assert page.get_by_test_id("search-live").get_attribute("hx-trigger") == "every 3s"
    version = ModelVersion.objects.create(
        registered_model=RegisteredModel.objects.create(name="Reviews-classifier"),
        version=1,
        training_run=best,
        snapshot=snapshot,
        base_model=base_model,
        task="single_label",
        method="full",
        artifact_uri=f"artifacts/runs/{best.pk}",
        status=ModelVersion.Status.READY,
    )
    HyperparameterSearch.objects.filter(pk=search.pk).update(
        status="succeeded",
        message=f"Best: trial 3, validation macro_f1 0.8300; registered {version}.",
    )
    expect(page.get_by_test_id("search-status")).to_have_text("Succeeded", timeout=10_000)
    expect(page.get_by_test_id("search-model-version")).to_have_text(f"Open {version}")
    assert page.get_by_test_id("search-live").get_attribute("hx-trigger") is None  # done
