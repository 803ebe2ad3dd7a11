"""Training in real headless Chromium: an analyst starts a run of a tiny BERT on a snapshot, a
real Celery worker trains it on the CPU, and the run page follows it live to the test report."""

import re

import pytest
from playwright.sync_api import expect

from tests.training_app.conftest import make_snapshot, register_tiny_base_model, save_tiny_bert

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery staple"


def log_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_test_id("current-user")).to_have_text(username)


def test_start_a_run_watch_it_train_live_and_read_the_test_report(
    page, live_server, redis_worker, make_user, tmp_path
):
    redis_worker(OMP_NUM_THREADS="1")  # tiny models train fastest on one thread
    analyst = make_user("analyst", username="ana")
    base_model = register_tiny_base_model(save_tiny_bert(tmp_path / "tiny-bert"))
    snapshot = make_snapshot(user=analyst, name="Reviews", train=120, validation=30, test=30)
    log_in(page, live_server, "ana")

    page.goto(f"{live_server.url}/training/")
    page.get_by_role("link", name="New run").click()
    expect(page).to_have_url(f"{live_server.url}/training/new/")
    page.get_by_label("Snapshot", exact=True).select_option(str(snapshot.pk))
    page.get_by_label("Base model", exact=True).select_option(str(base_model.pk))
    page.get_by_label("Epochs", exact=True).fill("2")
    page.get_by_label("Batch size", exact=True).fill("8")
    page.get_by_label("Max length", exact=True).fill("32")
    estimate = page.get_by_test_id("estimate")
    expect(estimate).to_contain_text(
        re.compile(r"\d+(\.\d)?–\d+(\.\d)? (s|min|h), about \d+\.\d GB memory\.")
    )
    expect(estimate).to_contain_text("120 training records.")

    page.get_by_role("button", name="Start run").click()

    expect(page).to_have_url(re.compile(r"/training/\d+/$"))
    expect(page.get_by_role("status").first).to_contain_text("is queued")
    progress = page.get_by_test_id("job-progress").get_by_role("progressbar")
    expect(progress).to_have_attribute("aria-valuenow", re.compile(r"^[1-9]\d*$"), timeout=120_000)
    # When the run ends, the progress component reloads the page, which shows the report.
    expect(page.get_by_test_id("run-status")).to_have_text("Succeeded", timeout=120_000)
    expect(page.get_by_test_id("test-report")).to_be_visible()
    matrix = page.get_by_test_id("confusion-matrix")
    expect(matrix).to_be_visible()
    expect(matrix.locator("th.heatmap-col")).to_have_text(["negative", "neutral", "positive"])
    expect(matrix.locator("th.heatmap-row")).to_have_text(["negative", "neutral", "positive"])
    expect(page.get_by_test_id("per-class")).to_contain_text("neutral")
    expect(page.get_by_test_id("worst-examples")).to_be_visible()
    expect(page.get_by_test_id("events")).to_contain_text("evaluated")
    assert page.evaluate("Chart.getChart('loss-chart').data.datasets[0].data.length") > 0
    assert page.evaluate("Chart.getChart('validation-chart').data.datasets.length") >= 2
    expect(page.get_by_test_id("download")).to_have_text("Download (Hugging Face folder, zip)")

    page.get_by_test_id("model-version-link").click()
    expect(page.get_by_test_id("version-files")).to_contain_text("config.json")
    expect(page.get_by_test_id("evaluate-form")).to_be_visible()


def test_run_page_charts_poll_the_live_state_while_the_run_is_active(
    page, live_server, transactional_db, make_user, tmp_path
):
    """Without a worker: metrics written to the database show up in the charts within a poll."""
    from training_app.models import TrainingMetric, TrainingRun

    analyst = make_user("analyst", username="ana")
    base_model = register_tiny_base_model(save_tiny_bert(tmp_path / "tiny-bert"))
    snapshot = make_snapshot(user=analyst)
    run = TrainingRun.objects.create(
        name="Polled",
        snapshot=snapshot,
        base_model=base_model,
        task="single_label",
        method="full",
        status="running",
        progress=10,
        created_by=analyst,
    )
    log_in(page, live_server, "ana")
    page.goto(f"{live_server.url}/training/{run.pk}/")
    assert page.evaluate("Chart.getChart('loss-chart').data.datasets[0].data.length") == 0

    TrainingMetric.objects.create(run=run, step=1, name="train_loss", value=1.2)
    TrainingMetric.objects.create(run=run, step=2, name="val_macro_f1", value=0.4)
    TrainingRun.objects.filter(pk=run.pk).update(examples_per_second=321.5)

    page.wait_for_function(
        "() => Chart.getChart('loss-chart').data.datasets[0].data.length === 1", timeout=10_000
    )
    page.wait_for_function(
        "() => Chart.getChart('validation-chart').data.datasets.length === 1", timeout=10_000
    )
    expect(page.locator("#run-throughput")).to_have_text("321.5")


def test_run_page_tiles_badge_and_events_follow_the_run_row(
    page, live_server, transactional_db, make_user, tmp_path
):
    """Issue 9 item 10: the tiles, the progress bar, the badge and the events box change
    together as the run's row changes, and a running run never says it waits for a worker."""
    from training_app.models import TrainingEvent, TrainingRun

    analyst = make_user("analyst", username="ana")
    base_model = register_tiny_base_model(save_tiny_bert(tmp_path / "tiny-bert"))
    snapshot = make_snapshot(user=analyst)
    run = TrainingRun.objects.create(
        name="Live",
        snapshot=snapshot,
        base_model=base_model,
        task="single_label",
        method="full",
        status="queued",
        created_by=analyst,
    )
    log_in(page, live_server, "ana")
    page.goto(f"{live_server.url}/training/{run.pk}/")
    expect(page.get_by_test_id("run-status")).to_have_text("Queued")
    expect(page.get_by_test_id("events-empty")).to_contain_text("picks it up")

    TrainingRun.objects.filter(pk=run.pk).update(
        status="running", progress=0, steps_done=0, total_steps=135
    )
    expect(page.get_by_test_id("run-status")).to_have_text("Running")
    expect(page.get_by_test_id("events-empty")).not_to_contain_text("picks it up")
    expect(page.get_by_test_id("events-empty")).to_contain_text("A worker has the run")

    TrainingRun.objects.filter(pk=run.pk).update(
        steps_done=24,
        progress=17,
        seconds_left=173,
        examples_per_second=45.25,
        message="Step 24 of 135, loss 0.9000.",
    )
    TrainingEvent.objects.create(run=run, kind="started", message="Training on 120 examples.")
    expect(page.get_by_test_id("run-steps")).to_have_text("24 / 135")
    expect(page.get_by_test_id("run-time-left")).to_have_text("3 min")
    expect(page.get_by_test_id("run-throughput")).to_have_text("45.2")
    expect(page.get_by_test_id("job-progress").get_by_role("progressbar")).to_have_attribute(
        "aria-valuenow", "17"
    )
    expect(page.get_by_test_id("job-progress")).to_contain_text("Step 24 of 135")
    expect(page.locator("#run-progress-text")).to_have_text("17% · about 3 min left")
    expect(page.get_by_test_id("events")).to_contain_text("Training on 120 examples.")
    expect(page.get_by_test_id("events-empty")).to_be_hidden()

    TrainingRun.objects.filter(pk=run.pk).update(steps_done=100, seconds_left=40)
    expect(page.get_by_test_id("run-steps")).to_have_text("100 / 135")
    expect(page.get_by_test_id("run-time-left")).to_have_text("40 s")


def test_finished_run_page_reads_in_words_with_whole_words_and_two_axis_validation_chart(
    page, live_server, transactional_db, make_user, tmp_path
):
    """Issue 9 item 19: confusion-matrix headers break only between words, the validation
    chart draws lines with points on a loss axis and a score axis, and codes read as words."""
    from training_app.models import TrainingMetric, TrainingRun

    analyst = make_user("analyst", username="ana")
    base_model = register_tiny_base_model(save_tiny_bert(tmp_path / "tiny-bert"))
    snapshot = make_snapshot(user=analyst)
    labels = ["abbreviation", "card payment fee charged", "refund"]
    run = TrainingRun.objects.create(
        name="Words",
        snapshot=snapshot,
        base_model=base_model,
        task="single_label",
        method="full",
        status="succeeded",
        progress=100,
        params={"epochs": 1.0, "learning_rate": None, "lora_r": 8, "lora_alpha": 16},
        resolved_params={"epochs": 1.0, "learning_rate": 5e-5, "lora_r": 8, "lora_alpha": 16},
        test_metrics={"macro_f1": 0.5, "accuracy": 0.6},
        test_report={
            "labels": labels,
            "confusion_matrix": [[3, 1, 0], [1, 2, 1], [0, 0, 4]],
            "per_class": {},
        },
        label_names=labels,
        created_by=analyst,
    )
    for step, (loss, f1) in enumerate(((0.9, 0.4), (0.7, 0.55)), start=1):
        TrainingMetric.objects.create(run=run, step=step * 10, name="val_loss", value=loss)
        TrainingMetric.objects.create(run=run, step=step * 10, name="val_macro_f1", value=f1)
    log_in(page, live_server, "ana")
    page.goto(f"{live_server.url}/training/{run.pk}/")

    headers = page.get_by_test_id("confusion-matrix").locator("th.heatmap-col")
    expect(headers).to_have_text(labels)
    # A word broken across lines gives its text node more than one line box.
    lines_of_one_word = headers.nth(0).evaluate(
        "th => { const r = document.createRange(); r.selectNodeContents(th);"
        " return new Set(Array.from(r.getClientRects()).map(b => Math.round(b.top))).size; }"
    )
    assert lines_of_one_word == 1
    # Every word of a wrapped header stays whole: no word is split over two lines.
    words_whole = headers.nth(1).evaluate(
        """th => {
          const text = th.firstChild; const tops = [];
          for (let i = 0; i < text.length; i++) {
            const r = document.createRange(); r.setStart(text, i); r.setEnd(text, i + 1);
            const box = r.getBoundingClientRect(); tops.push(Math.round(box.top));
          }
          const words = text.textContent.split(' '); let i = 0;
          return words.every(w => { const s = new Set(tops.slice(i, i + w.length)); i += w.length + 1; return s.size === 1; });
        }"""
    )
    assert words_whole is True

    chart = page.evaluate(
        """() => { const c = Chart.getChart('validation-chart');
          return { axes: c.data.datasets.map(d => [d.label, d.yAxisID, d.showLine, d.pointRadius > 0]),
                   scales: Object.keys(c.options.scales).sort() }; }"""
    )
    assert sorted(chart["axes"]) == [
        ["loss", "loss", True, True],
        ["macro-F1", "score", True, True],
    ]
    assert chart["scales"] == ["loss", "score", "x"]

    params = page.get_by_test_id("run-params")
    expect(params.locator('tr[data-param="epochs"] td')).to_have_text("1")
    expect(params.locator('tr[data-param="learning_rate"] td')).to_have_text("5e-5")
    expect(params.locator('tr[data-param="lora_r"]')).to_have_count(0)
    expect(page.locator("dl.facts")).to_contain_text("Single-label classification")
    expect(page.locator("dl.facts")).to_contain_text("Full fine-tuning")


def test_new_run_form_preselects_the_only_snapshot_and_estimates_it(
    page, live_server, transactional_db, make_user, tmp_path
):
    analyst = make_user("analyst", username="ana")
    register_tiny_base_model(save_tiny_bert(tmp_path / "tiny-bert"))
    snapshot = make_snapshot(user=analyst, train=60)
    log_in(page, live_server, "ana")

    page.goto(f"{live_server.url}/training/new/")

    expect(page.get_by_label("Snapshot", exact=True)).to_have_value(str(snapshot.pk))
    expect(page.get_by_test_id("estimate")).to_contain_text("60 training records.")
    # The settings left empty are chosen for this snapshot, and the panel says how.
    defaults = page.get_by_test_id("estimate-defaults")
    expect(defaults).to_contain_text("Chosen for 60 examples in 3 classes: 3 epochs")
    expect(page.get_by_label("Epochs", exact=True)).to_have_attribute(
        "placeholder", "auto (from the data)"
    )
    page.get_by_label("Epochs", exact=True).fill("3")
    expect(defaults).to_contain_text("; yours: epochs 3.")
    expect(defaults).not_to_contain_text("3 epochs (about")
