"""Registry: aliases with history, endpoints following an alias, archiving, model cards, the
best version."""

import pytest
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage

from models_app.deploy import (
    deployment_deploy,
    model_alias_set,
    model_version_archive,
)
from models_app.models import Deployment, ModelAlias, ModelAliasEvent, ModelVersion
from models_app.services import best_version_ids, model_card_write
from tests.models_app.serving_helpers import make_version
from tests.training_app.snapshot_helpers import make_snapshot, toy_rows

pytestmark = pytest.mark.django_db


@pytest.fixture
def versions(tmp_path_factory):
    return [make_version(tmp_path_factory, seed=i) for i in range(3)]


def test_alias_moves_and_keeps_its_history(versions, analyst):
    first, second, _ = versions
    model = first.registered_model

    model_alias_set(user=analyst, registered_model=model, name="production", version=first)
    model_alias_set(user=analyst, registered_model=model, name="production", version=second)

    alias = ModelAlias.objects.get()
    assert (alias.name, alias.version_id) == ("production", second.pk)
    history = list(
        ModelAliasEvent.objects.order_by("id").values_list(
            "name", "from_version", "to_version", "user"
        )
    )
    assert history == [
        ("production", None, first.pk, analyst.pk),
        ("production", first.pk, second.pk, analyst.pk),
    ]


def test_alias_name_must_be_a_slug(versions, analyst):
    with pytest.raises(ValidationError, match="lower-case letters"):
        model_alias_set(
            user=analyst,
            registered_model=versions[0].registered_model,
            name="Prod uction",
            version=versions[0],
        )
    assert not ModelAlias.objects.exists()


def test_endpoint_following_an_alias_redeploys_when_it_moves(versions, analyst):
    first, second, _ = versions
    model = first.registered_model
    model_alias_set(user=analyst, registered_model=model, name="production", version=first)
    deployment_deploy(
        user=analyst, version=first, slug="live", runtime="pytorch", follow_alias="production"
    )
    deployment_deploy(user=analyst, version=first, slug="pinned", runtime="pytorch")

    model_alias_set(user=analyst, registered_model=model, name="production", version=second)

    assert Deployment.objects.get(slug="live").version_id == second.pk
    assert Deployment.objects.get(slug="pinned").version_id == first.pk
    event = Deployment.objects.get(slug="live").events.first()
    assert (event.action, event.from_version_id, event.to_version_id) == (
        "alias",
        first.pk,
        second.pk,
    )


@pytest.mark.parametrize("status", ["pending", "failed"])
def test_an_alias_cannot_move_to_a_version_that_is_not_ready(versions, analyst, status):
    """Endpoints following the alias would otherwise move onto a version without files."""
    first, second, _ = versions
    model = first.registered_model
    model_alias_set(user=analyst, registered_model=model, name="production", version=first)
    deployment_deploy(
        user=analyst, version=first, slug="live", runtime="pytorch", follow_alias="production"
    )
    ModelVersion.objects.filter(pk=second.pk).update(status=status)
    second.refresh_from_db()

    with pytest.raises(ValidationError, match="not ready"):
        model_alias_set(user=analyst, registered_model=model, name="production", version=second)

    assert ModelAlias.objects.get(name="production").version_id == first.pk
    assert Deployment.objects.get(slug="live").version_id == first.pk


def test_a_deployed_or_aliased_version_cannot_be_archived(versions, analyst):
    first, second, third = versions
    deployment_deploy(user=analyst, version=first, slug="live", runtime="pytorch")
    model_alias_set(
        user=analyst, registered_model=second.registered_model, name="staging", version=second
    )

    with pytest.raises(ValidationError, match="deployed at live"):
        model_version_archive(user=analyst, version=first)
    with pytest.raises(ValidationError, match="Alias staging points at"):
        model_version_archive(user=analyst, version=second)
    model_version_archive(user=analyst, version=third)

    assert list(ModelVersion.objects.filter(is_archived=True)) == [third]


def test_an_archived_version_cannot_be_deployed(versions, analyst):
    model_version_archive(user=analyst, version=versions[0])

    with pytest.raises(ValidationError, match="archived"):
        deployment_deploy(user=analyst, version=versions[0], slug="live", runtime="pytorch")


def test_best_version_is_ranked_by_the_validation_metric(versions):
    for version, f1 in zip(versions, (0.7, 0.9, 0.8), strict=True):
        version.validation_metrics = {"macro_f1": f1, "loss": 0.5}
        version.save()

    assert best_version_ids(ModelVersion.objects.all()) == {versions[1].pk}

    versions[1].is_archived = True
    versions[1].save()
    assert best_version_ids(ModelVersion.objects.all()) == {versions[2].pk}


def test_lower_mse_is_better_for_regression(tmp_path_factory):
    low = make_version(tmp_path_factory, model_name="scores", task="regression")
    high = make_version(tmp_path_factory, model_name="scores", task="regression")
    ModelVersion.objects.filter(pk=low.pk).update(validation_metrics={"mse": 0.2})
    ModelVersion.objects.filter(pk=high.pk).update(validation_metrics={"mse": 0.9})

    assert best_version_ids(ModelVersion.objects.all()) == {low.pk}


def test_model_card_is_written_into_the_version_folder(tmp_path_factory):
    version = make_version(tmp_path_factory)
    version.snapshot = make_snapshot(toy_rows(6), name="movie reviews")
    version.validation_metrics = {"macro_f1": 0.875}
    version.test_metrics = {"accuracy": 0.9}
    version.method = "lora"
    version.save()

    model_card_write(version)

    with default_storage.open(f"{version.artifact_uri}/README.md") as handle:
        card = handle.read().decode()
    assert card.startswith("# reviews v1\n")
    assert "## Intended use" in card
    assert "`negative`, `positive`" in card
    assert "| macro_f1 | 0.8750 |" in card
    assert "| accuracy | 0.9000 |" in card
    assert "dataset **movie reviews**" in card
    assert "- Method: lora" in card
    assert "## Limitations" in card
    version.refresh_from_db()
    assert "README.md" in [item["path"] for item in version.artifact_files]


def test_the_alias_api_lists_aliases_and_their_history_for_readers_only(
    versions, analyst, api_client_as
):
    first, second, _ = versions
    model = first.registered_model
    model_alias_set(user=analyst, registered_model=model, name="production", version=first)
    model_alias_set(user=analyst, registered_model=model, name="production", version=second)

    response = api_client_as("viewer").get("/api/v1/model-aliases/")
    refused = api_client_as("annotator").get("/api/v1/model-aliases/")

    assert response.status_code == 200
    body = response.json()
    assert [(a["model"], a["name"], a["version"]) for a in body["aliases"]] == [
        ("reviews", "production", second.version)
    ]
    moves = [(e["from_version"], e["to_version"], e["user"]) for e in body["history"]]
    assert moves == [
        (first.version, second.version, analyst.username),
        (None, first.version, analyst.username),
    ]
    assert refused.status_code == 403
