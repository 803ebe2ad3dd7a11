"""The model pages in words (UX pass): endpoint history and runtimes as names, times as people
read them, empty states that say what to do next, the version's snapshot preselected."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from django.utils import formats, timezone

from models_app import runtime
from models_app.deploy import deployment_deploy, deployment_stop, model_alias_set
from tests.models_app.batch_helpers import toy_snapshot, toy_version
from tests.models_app.serving_helpers import make_version

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    runtime.model_cache.clear()
    yield
    runtime.model_cache.clear()


def test_endpoint_history_says_what_happened_on_which_runtime(client_as, analyst, tmp_path_factory):
    version = make_version(tmp_path_factory)
    deployment = deployment_deploy(user=analyst, version=version, slug="reviews", runtime="pytorch")
    deployment_stop(user=analyst, deployment=deployment)

    html = client_as("analyst").get(reverse("models:deployment_list")).content.decode()

    history = html[html.index('data-testid="endpoint-history"') :]
    assert "Stopped v1 on PyTorch" in history
    assert "Deployed v1 on PyTorch" in history
    assert "(pytorch)" not in history
    assert ">deploy " not in history


def test_alias_times_read_as_how_long_ago_with_the_date_on_hover(
    client_as, analyst, tmp_path_factory
):
    version = toy_version(tmp_path_factory)
    alias = model_alias_set(
        user=analyst, registered_model=version.registered_model, name="production", version=version
    )
    url = reverse("models:model_aliases", args=[version.registered_model_id])

    html = client_as("analyst").get(url).content.decode()

    full = formats.date_format(timezone.localtime(alias.updated_at), "DATETIME_FORMAT")
    cells = re.findall(rf'<td title="{re.escape(full)}">([^<]+)</td>', html)
    assert len(cells) == 2  # the alias row and its history row
    assert all(cell == "now" or cell.endswith("ago") for cell in cells), cells
    title = html[html.index('<h1 class="page-title">') : html.index("</h1>")]
    assert f'href="{reverse("models:model_list")}"' in title
    assert title.endswith(f"{version.registered_model.name} / Aliases")


def test_batch_card_preselects_the_version_snapshot_and_says_how_to_start(
    client_as, analyst, tmp_path_factory
):
    version = toy_version(tmp_path_factory)
    version.snapshot = toy_snapshot(rows=8, user=analyst)
    version.save()
    other = toy_snapshot(rows=4, user=analyst)

    url = reverse("models:version_batch_predictions", args=[version.pk])
    html = client_as("analyst").get(url).content.decode()

    assert f'<option value="{version.snapshot_id}" selected>' in html
    assert f'<option value="{other.pk}">' in html
    assert '<option value="">Choose a snapshot</option>' in html
    empty = re.search(r'data-testid="batch-empty">(.*?)</p>', html, re.S).group(1)
    assert "press <em>Start batch prediction</em>" in empty
    assert (
        "Start batch prediction"
        not in (
            client_as("viewer").get(url).content.decode().split('data-testid="batch-empty">')[1]
        )
    )


def test_version_page_names_the_default_runtime_and_says_how_to_export(client_as, tmp_path_factory):
    version = toy_version(tmp_path_factory)

    html = client_as("analyst").get(reverse("models:version_detail", args=[version.pk]))

    page = html.content.decode()
    assert '<strong data-testid="default-runtime">PyTorch</strong>' in page
    assert "Export ONNX int8 for the fastest CPU serving" in page
    viewer = client_as("viewer").get(reverse("models:version_detail", args=[version.pk]))
    assert "Export ONNX int8 for the fastest" not in viewer.content.decode()


def test_the_empty_deployments_page_tells_each_role_what_it_can_do(client_as):
    analyst = client_as("analyst").get(reverse("models:deployment_list")).content.decode()
    viewer = client_as("viewer").get(reverse("models:deployment_list")).content.decode()

    assert "press Deploy" in analyst
    assert "press Deploy" not in viewer
    assert "An analyst deploys one from its version page" in viewer


def test_the_playground_without_a_live_endpoint_says_to_start_one(
    client_as, analyst, tmp_path_factory
):
    version = make_version(tmp_path_factory)
    deployment = deployment_deploy(user=analyst, version=version, slug="reviews", runtime="pytorch")
    deployment_stop(user=analyst, deployment=deployment)

    html = client_as("analyst").get(reverse("models:endpoint_playground")).content.decode()

    assert 'data-testid="playground-form"' not in html
    assert "start a stopped one above" in html


def test_after_a_start_the_batch_form_preselects_the_version_snapshot_again(
    client_as, analyst, tmp_path_factory, redis_url
):
    from models_app.models import BatchPrediction
    from tests.conftest import broker_for_this_process

    version = toy_version(tmp_path_factory)
    version.snapshot = toy_snapshot(rows=8, user=analyst)
    version.save()
    other = toy_snapshot(rows=4, user=analyst)

    with broker_for_this_process(redis_url):
        response = client_as("analyst").post(
            reverse("models:version_batch_prediction_start", args=[version.pk]),
            {"source": "snapshot", "snapshot": other.pk, "output_format": "csv"},
        )

    assert BatchPrediction.objects.get().snapshot == other
    assert f'<option value="{version.snapshot_id}" selected>' in response.content.decode()


def test_a_refused_endpoint_action_is_shown_in_that_endpoint_card(
    client_as, analyst, tmp_path_factory
):
    version = make_version(tmp_path_factory)
    deployment_deploy(user=analyst, version=version, slug="first", runtime="pytorch")
    deployment_deploy(user=analyst, version=version, slug="second", runtime="pytorch")
    client = client_as("analyst")

    response = client.post(
        reverse("models:deployment_action", args=["second", "promote"]),
        {"version": version.pk, "runtime": "onnx-int8"},
        follow=True,
    )

    html = response.content.decode()
    second = html[html.index('data-slug="second"') :]
    first = html[html.index('data-slug="first"') : html.index('data-slug="second"')]
    sentence = f"{version} has no finished ONNX int8 export. Export it first, or pick PyTorch."
    assert f'data-testid="endpoint-error">{sentence}</div>' in second
    assert "endpoint-error" not in first
    assert 'role="status"' not in html  # not repeated at the top of the page
    # The next poll of the list has no message left, so polling pauses while it shows.
    assert 'data-pause-while="select:focus, details[open], [data-testid=endpoint-error]"' in html
