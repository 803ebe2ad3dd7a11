"""Snapshots without train records are no training source (issue 9, item 13): the run form does
not list them, and the estimate, the training service and the API refuse them by field."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from pytest_django.asserts import assertContains, assertNotContains
from rest_framework.test import APIClient

from tests.training_app.conftest import make_snapshot
from tests.training_app.test_views import form_data
from training_app import services
from training_app.models import TrainingRun

NO_TRAIN_SPLIT = (
    "This snapshot has no train split, so there is nothing to train on. Assign splits on the "
    "dataset and take a new snapshot."
)


@pytest.fixture
def api(analyst) -> APIClient:
    client = APIClient()
    client.force_authenticate(analyst)
    return client


@pytest.fixture
def no_train(analyst):
    return make_snapshot(user=analyst, name="Evaluation only", train=0)


def test_run_form_offers_only_snapshots_with_train_records(client_as, analyst, no_train):
    trainable = make_snapshot(user=analyst, name="Trainable")

    response = client_as("analyst").get("/training/new/")

    # The only trainable snapshot is preselected (issue 9 item 19).
    assertContains(
        response, f'<option value="{trainable.pk}" selected>Trainable v1 (90 records)</option>'
    )
    assertNotContains(response, "Evaluation only")


def test_estimate_fragment_refuses_a_snapshot_without_train_records(
    client_as, no_train, tiny_base_model
):
    response = client_as("analyst").post(
        "/training/estimate/", form_data(no_train, tiny_base_model)
    )

    assertContains(
        response,
        "<li>Snapshot: Choose one of the listed snapshots: a snapshot without train records "
        "cannot be trained on.</li>",
        html=True,
    )
    assertNotContains(response, "training record")


def test_estimate_service_refuses_a_snapshot_without_train_records(no_train, tiny_base_model):
    with pytest.raises(ValidationError) as raised:
        services.training_run_estimate(
            snapshot=no_train,
            base_model=tiny_base_model,
            task="single_label",
            method="full",
            params={},
        )

    assert raised.value.message_dict == {"snapshot": [NO_TRAIN_SPLIT]}


@pytest.mark.parametrize("endpoint", ["/api/v1/runs/estimate/", "/api/v1/runs/"])
def test_api_refuses_to_train_or_estimate_on_a_snapshot_without_train_records(
    api, no_train, tiny_base_model, endpoint
):
    response = api.post(
        endpoint,
        {"snapshot": no_train.pk, "base_model": tiny_base_model.pk, "task": "single_label"},
        format="json",
    )

    assert response.status_code == 400
    assert response.json() == {"detail": NO_TRAIN_SPLIT, "errors": {"snapshot": [NO_TRAIN_SPLIT]}}
    assert not TrainingRun.objects.exists()
