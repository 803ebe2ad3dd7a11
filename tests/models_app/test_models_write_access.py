"""Every write address of the models app (pages under /models/ and the registry, deployment,
export, batch and scan API), walked from the URL resolver: the 403 an annotator or a viewer
gets says why in a sentence (their role, and the roles that may), predict included (it said
only "You may not call predict."). That they are refused at all is
tests/lepton_web/test_access_matrix.py's; the world is tests/lepton_web/access_world.py's."""

from __future__ import annotations

import pytest

from tests.lepton_web.test_access_matrix import ROUTES, UNSAFE_METHODS, address, clients_for
from tests.lepton_web.test_access_matrix import world as world

MODELS_API = (
    "api/v1/base-models",
    "api/v1/model-versions",
    "api/v1/registered-models",
    "api/v1/model-aliases",
    "api/v1/exports",
    "api/v1/batch-predictions",
    "api/v1/deployments",
    "api/v1/prediction-tokens",
)
# What a viewer may call among them: predict and the playgrounds (reads; a 400 for no text).
VIEWER_MAY = {"api_deployment_predict", "endpoint_playground", "version_playground"}


def _models_routes():
    for route, name in ROUTES:
        if route.startswith(("models/", *MODELS_API)) or "mislabeled" in route:
            yield route, name


def test_the_walk_finds_the_models_apps_write_addresses():
    names = {name for _, name in _models_routes()}
    for name in ("version_deploy", "deployment_action", "api_deployments", "api_export"):
        assert name in names


@pytest.mark.parametrize("principal", ["ann_in", "viewer"])
def test_annotators_and_viewers_are_told_why_a_models_app_write_is_refused(world, principal):
    client = clients_for(world)[principal]
    wrong = {}
    for route, name in _models_routes():
        if principal == "viewer" and name in VIEWER_MAY:
            continue
        path = address(route, world.ids)
        for method in UNSAFE_METHODS:
            response = getattr(client, method)(path)
            code = response.status_code
            if code == 405:
                continue  # the address takes no such method
            body = response.content.decode(errors="replace")
            if code != 403:
                wrong[f"{method.upper()} {name}"] = code
            elif "cannot" not in body or "Ask an admin" not in body:
                wrong[f"{method.upper()} {name}"] = f"403 without the reason: {body[:120]!r}"

    assert wrong == {}, f"{principal}: address -> what it answered instead of a 403 sentence"
