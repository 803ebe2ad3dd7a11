"""Who may do what: the access rules, and what every role meets at each page and API endpoint.

The expected tables below are written out by hand on purpose. They must never be derived from
``lepton_web.access.RULES``, or a wrong rule would be copied into its own expectation.
"""

import pytest
from django.contrib.auth.models import Group

from lepton_web.access import RULES, can
from lepton_web.models import WorkerCheck
from tests.conftest import broker_for_this_process

ROLE_KEYS = ("admin", "analyst", "annotator", "viewer", "none", "superuser")


def parse_grid(text: str) -> dict[str, dict[str, str]]:
    """``{row: {column: cell}}`` from a whitespace-aligned table whose first line is its header."""
    header, *rows = (line.split() for line in text.strip().splitlines())
    columns = header[1:]
    grid = {}
    for row in rows:
        assert len(row) == len(header), f"Malformed row in the expected table: {row}"
        grid[row[0]] = dict(zip(columns, row[1:], strict=True))
    return grid


# Y: the role may do it; -: it may not. "none" is an active user in no role group.
ACTION_GRID = parse_grid(
    """
    rule                   admin analyst annotator viewer none superuser
    dashboard.view         Y     Y       Y         Y      -    Y
    worker_check.view      Y     Y       Y         Y      -    Y
    worker_check.create    Y     Y       -         -      -    Y
    dataset.view           Y     Y       Y         Y      -    Y
    dataset.export         Y     Y       -         Y      -    Y
    dataset.create         Y     Y       -         -      -    Y
    dataset.change         Y     Y       -         -      -    Y
    dataset.delete         Y     Y       -         -      -    Y
    labeling.view          Y     Y       Y         Y      -    Y
    labeling.label         Y     Y       Y         -      -    Y
    base_model.view        Y     Y       -         Y      -    Y
    base_model.create      Y     Y       -         -      -    Y
    training_run.view      Y     Y       -         Y      -    Y
    training_run.create    Y     Y       -         -      -    Y
    training_run.cancel    Y     Y       -         -      -    Y
    model_version.view     Y     Y       -         Y      -    Y
    model_version.create   Y     Y       -         -      -    Y
    model_version.delete   Y     Y       -         -      -    Y
    deployment.view        Y     Y       -         Y      -    Y
    deployment.deploy      Y     Y       -         -      -    Y
    deployment.predict     Y     Y       -         Y      -    Y
    user.view              Y     -       -         -      -    Y
    user.manage            Y     -       -         -      -    Y
    """
)

PAGE_GRID = parse_grid(
    """
    path                   admin analyst annotator viewer none superuser
    /                      200   200     200       200    403  200
    /datasets/             200   200     200       200    403  200
    /datasets/labeling/    200   200     200       200    403  200
    /training/             200   200     403       200    403  200
    /models/               200   200     403       200    403  200
    /models/deployments/   200   200     403       200    403  200
    """
)

API_GET_GRID = parse_grid(
    """
    path                     admin analyst annotator viewer none superuser
    /api/v1/base-models/     200   200     403       200    403  200
    /api/v1/worker-checks/   200   200     200       200    403  200
    /api/v1/health/          200   200     200       200    403  200
    """
)

API_POST_WORKER_CHECK = {
    "admin": 201,
    "analyst": 201,
    "annotator": 403,
    "viewer": 403,
    "none": 403,
    "superuser": 201,
}

# What a denied user is told at each address: the refused action and the roles that may.
DENIAL_REASON = {
    "/": ("view the dashboard", "admin, analyst, annotator, viewer"),
    "/datasets/": ("view datasets", "admin, analyst, annotator, viewer"),
    "/datasets/labeling/": ("view the labeling queue", "admin, analyst, annotator, viewer"),
    "/training/": ("view training runs", "admin, analyst, viewer"),
    "/models/": ("view model versions", "admin, analyst, viewer"),
    "/models/deployments/": ("view deployments", "admin, analyst, viewer"),
    "/api/v1/base-models/": ("view base models", "admin, analyst, viewer"),
    "/api/v1/worker-checks/": ("view worker checks", "admin, analyst, annotator, viewer"),
    "/api/v1/health/": ("view the dashboard", "admin, analyst, annotator, viewer"),
}
POST_DENIAL = ("create worker checks", "admin, analyst")


def denial_sentence(role_key: str, reason: tuple[str, str]) -> str:
    what, allowed = reason
    who = "Your account has no role yet and" if role_key == "none" else f"Your role ({role_key})"
    return f"{who} cannot {what} here. Ask an admin for one of these roles: {allowed}."


def cases(grid: dict[str, dict[str, str]], status: str) -> list[tuple[str, str]]:
    return [
        (role, row) for row, cells in grid.items() for role, cell in cells.items() if cell == status
    ]


@pytest.fixture
def user_for(make_user):
    def make(role_key: str):
        if role_key == "superuser":
            return make_user(None, is_superuser=True)
        return make_user(None if role_key == "none" else role_key)

    return make


@pytest.fixture
def page_client(client, user_for):
    def login(role_key: str):
        client.force_login(user_for(role_key))
        return client

    return login


@pytest.fixture
def api_client_for(user_for):
    from rest_framework.test import APIClient

    def login(role_key: str):
        api = APIClient()
        api.force_authenticate(user_for(role_key))
        return api

    return login


# --- (a) the rule table --------------------------------------------------------------------------
def test_expected_table_lists_exactly_the_rules_in_access_rules():
    in_rules = {f"{resource}.{action}" for resource, actions in RULES.items() for action in actions}

    assert set(ACTION_GRID) == in_rules


@pytest.mark.parametrize("role_key", ROLE_KEYS)
def test_role_may_do_exactly_the_actions_in_the_table(user_for, role_key):
    user = user_for(role_key)
    expected = {rule: cells[role_key] == "Y" for rule, cells in ACTION_GRID.items()}

    actual = {rule: can(user, *rule.split(".")) for rule in ACTION_GRID}

    assert actual == expected


def test_user_in_two_roles_may_do_what_either_role_allows(make_user):
    user = make_user("annotator")
    user.groups.add(Group.objects.get(name="viewer"))

    assert (
        can(user, "labeling", "label"),
        can(user, "training_run", "view"),
        can(user, "dataset", "create"),
    ) == (True, True, False)


def test_inactive_admin_may_do_nothing(make_user):
    user = make_user("admin", is_active=False)

    assert [can(user, *rule.split(".")) for rule in ACTION_GRID] == [False] * len(ACTION_GRID)


def test_anonymous_user_may_do_nothing():
    from django.contrib.auth.models import AnonymousUser

    user = AnonymousUser()

    assert [can(user, *rule.split(".")) for rule in ACTION_GRID] == [False] * len(ACTION_GRID)


def test_can_refuses_an_action_that_has_no_rule(make_user):
    with pytest.raises(ValueError, match=r"^No access rule for dataset\.fly$"):
        can(make_user("admin"), "dataset", "fly")


# --- (b) pages ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("role_key", "path"), cases(PAGE_GRID, "200"))
def test_allowed_role_opens_page(page_client, role_key, path):
    response = page_client(role_key).get(path)

    assert response.status_code == 200


@pytest.mark.parametrize(("role_key", "path"), cases(PAGE_GRID, "403"))
def test_denied_role_gets_403_page_that_names_the_roles_that_may(page_client, role_key, path):
    response = page_client(role_key).get(path)

    assert response.status_code == 403
    assert response["Content-Type"] == "text/html; charset=utf-8"
    sentence = denial_sentence(role_key, DENIAL_REASON[path])
    assert f'<p data-testid="error-detail">{sentence}</p>' in response.content.decode()


# --- (b) API ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("role_key", "path"), cases(API_GET_GRID, "200"))
def test_allowed_role_reads_api_endpoint(api_client_for, role_key, path):
    response = api_client_for(role_key).get(path)

    assert response.status_code == 200


@pytest.mark.parametrize(("role_key", "path"), cases(API_GET_GRID, "403"))
def test_denied_role_gets_403_json_that_names_the_roles_that_may(api_client_for, role_key, path):
    response = api_client_for(role_key).get(path)

    assert response.status_code == 403
    assert response.json() == {
        "detail": denial_sentence(role_key, DENIAL_REASON[path]),
        "errors": {},
    }


@pytest.mark.parametrize(
    "role_key", [role for role, status in API_POST_WORKER_CHECK.items() if status == 201]
)
def test_allowed_role_starts_worker_check_through_api(user_for, queue_redis, role_key):
    from rest_framework.test import APIClient

    url, queue = queue_redis
    user = user_for(role_key)
    api = APIClient()
    api.force_authenticate(user)

    with broker_for_this_process(url):
        response = api.post(
            "/api/v1/worker-checks/", {"queue": "default", "steps": 2}, format="json"
        )

    assert response.status_code == 201
    job = WorkerCheck.objects.get()
    assert response.json()["id"] == job.pk
    assert (job.queue, job.steps, job.status, job.created_by_id) == (
        "default",
        2,
        "queued",
        user.pk,
    )
    assert queue.llen("default") == 1


@pytest.mark.parametrize(
    "role_key", [role for role, status in API_POST_WORKER_CHECK.items() if status == 403]
)
def test_denied_role_cannot_start_worker_check_through_api(api_client_for, role_key):
    api = api_client_for(role_key)

    response = api.post("/api/v1/worker-checks/", {"queue": "default"}, format="json")

    assert response.status_code == 403
    assert response.json() == {"detail": denial_sentence(role_key, POST_DENIAL), "errors": {}}
    assert not WorkerCheck.objects.exists()
