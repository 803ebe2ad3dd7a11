"""The model-in-the-loop page (UX pass): a disabled Retrain button says why, the pre-labels name
their runtime, and the button counts the records it will pre-label."""

from __future__ import annotations

import pytest
from django.urls import reverse

from models_app.models import BatchPrediction
from tests.models_app.tiny_classifier import save_tiny_classifier
from tests.training_app.retrain_helpers import labeled_dataset_with_version
from training_app.models import RetrainLoop

pytestmark = pytest.mark.usefixtures("redis_url")


@pytest.fixture
def dataset_and_version(make_user, tmp_path_factory):
    folder = save_tiny_classifier(tmp_path_factory.mktemp("tiny") / "model")
    return labeled_dataset_with_version(folder, user=make_user("analyst"))


def test_a_running_loop_says_why_retrain_is_disabled(client_as, dataset_and_version):
    dataset, version = dataset_and_version
    client = client_as("analyst")
    url = reverse("training:model_loop", args=[dataset.pk])

    idle = client.get(url).content.decode()
    assert 'data-testid="retrain-busy"' not in idle
    RetrainLoop.objects.create(dataset=dataset, from_version=version)
    busy = client.get(url).content.decode()

    button = busy[busy.index('data-testid="retrain-start"') :]
    assert button.split(">", 1)[0].rstrip().endswith("disabled")
    assert "being retrained now" in button[: button.index("</div>")]


def test_pre_labels_name_their_runtime_and_the_button_counts_records(
    client_as, dataset_and_version
):
    dataset, version = dataset_and_version
    BatchPrediction.objects.create(
        model_version=version, source="unlabeled", dataset=dataset, runtime="onnx-int8"
    )
    dataset.label_counts_base = {"": 1, "positive": 3}
    dataset.save(update_fields=["label_counts_base"])

    html = client_as("analyst").get(reverse("training:model_loop", args=[dataset.pk]))

    page = html.content.decode()
    assert f"{version} on ONNX int8" in page
    assert "Pre-label 1 unlabeled record<" in page
    title = page[page.index('<h1 class="page-title">') : page.index("</h1>")]
    assert title.endswith("/ Model in the loop")


def test_a_failed_loop_reads_as_failed_in_the_labeling_page_panel(client_as, dataset_and_version):
    from django.utils import timezone

    dataset, version = dataset_and_version
    RetrainLoop.objects.create(
        dataset=dataset,
        from_version=version,
        step="failed",
        error_message="The run failed: out of memory.",
        finished_at=timezone.now(),
    )

    row = client_as("analyst").get(reverse("training:retrain_loops_live")).content.decode()

    assert 'class="job job-failed"' in row  # a red bar, not the brand colour of a running job
    assert '<span class="error-text">The run failed: out of memory.</span>' in row
    assert '<span class="muted">100%</span>' in row
