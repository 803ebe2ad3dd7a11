"""An endpoint or a version deleted between the page (or API call) finding it and the change
(another tab, another user): the change is a 404 that says so, never a DoesNotExist 500."""

import pytest
from django.http import Http404

from models_app import deploy
from models_app.models import Deployment, ModelVersion
from tests.models_app.serving_helpers import make_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def version(tmp_path_factory):
    return make_version(tmp_path_factory)


@pytest.mark.parametrize(
    "change",
    [
        lambda user, d, v: deploy.deployment_promote(user=user, deployment=d, version=v),
        lambda user, d, v: deploy.deployment_rollback(user=user, deployment=d),
        lambda user, d, v: deploy.deployment_stop(user=user, deployment=d),
        lambda user, d, v: deploy.deployment_start(user=user, deployment=d),
    ],
    ids=["promote", "rollback", "stop", "start"],
)
def test_a_change_to_an_endpoint_deleted_meanwhile_is_a_404_that_says_so(analyst, version, change):
    deployment = deploy.deployment_deploy(
        user=analyst, version=version, slug="reviews", runtime="pytorch"
    )
    Deployment.objects.filter(pk=deployment.pk).delete()  # by someone else, meanwhile

    with pytest.raises(Http404, match=r"The endpoint reviews was deleted meanwhile\."):
        change(analyst, deployment, version)


@pytest.mark.parametrize(
    "change",
    [
        lambda user, v: deploy.model_version_archive(user=user, version=v),
        lambda user, v: deploy.model_version_delete(user=user, version=v),
    ],
    ids=["archive", "delete"],
)
def test_archiving_or_deleting_a_version_deleted_meanwhile_is_a_404_that_says_so(
    analyst, version, change
):
    ModelVersion.objects.filter(pk=version.pk).delete()

    with pytest.raises(Http404, match=r"reviews v1 was deleted meanwhile\."):
        change(analyst, version)


def test_the_deployments_page_says_an_endpoint_was_deleted_meanwhile(
    client_as, version, analyst, monkeypatch
):
    from models_app import views

    deploy.deployment_deploy(user=analyst, version=version, slug="reviews", runtime="pytorch")
    found = views.deployment_get_for_user

    def found_then_deleted(**kwargs):
        deployment = found(**kwargs)
        Deployment.objects.filter(pk=deployment.pk).delete()
        return deployment

    monkeypatch.setattr(views, "deployment_get_for_user", found_then_deleted)

    client = client_as("analyst")
    response = client.post("/models/deployments/reviews/stop/")

    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert "The endpoint reviews was deleted meanwhile." in page
