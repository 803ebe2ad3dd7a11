"""Every address of the console, walked from the URL resolver, for everyone who may call it.

The principals: anonymous, an analyst, an annotator assigned to the dataset ("ann_in"), an
annotator assigned elsewhere ("ann_out"), a viewer, and a prediction-only token that may call
predict on one endpoint. Each URL parameter names a real row of tests/lepton_web/access_world.py.

- GET: the status each one gets is written out by hand below (never derived from
  lepton_web.access.RULES), "L" being a redirect to the login form. A new address fails
  ``test_the_table_names_every_address`` until someone decides who may open it.
- POST, PUT, PATCH and DELETE with no body never answer 500, and need the CSRF token when the
  caller is authenticated by its session cookie.
- Rows of another dataset are not reachable through this dataset's addresses (IDOR), and an
  annotator not assigned to a dataset does not see its snapshots or job progress either.
"""

from __future__ import annotations

import re
from collections import defaultdict

import pytest
from django.db import transaction
from django.test import Client
from django.urls import URLResolver, get_resolver

from datasets_app.models import BulkLabel, LabelChange, Record, ReviewItem
from tests.lepton_web.access_world import TOKEN_KEY, build_world
from tests.lepton_web.test_access import parse_grid

PRINCIPALS = ("anon", "analyst", "ann_in", "ann_out", "viewer", "token")
WORLD_USERS = {
    "analyst": "analyst",
    "ann_in": "annotator_in",
    "ann_out": "annotator_out",
    "viewer": "viewer",
}

# The status of a GET with no parameters. L: a redirect to /login/?next=<the address>.
GET_GRID = parse_grid(
    """
    name                                  anon analyst ann_in ann_out viewer token
    dashboard                             L    200     200    200     200    L
    dashboard_health                      L    200     200    200     200    L
    worker_checks_start                   L    405     405    405     405    L
    job_progress                          L    200     200    200     200    L
    healthz                               200  200     200    200     200    200
    favicon                               200  200     200    200     200    200
    login                                 200  302     302    302     302    200
    logout                                L    405     405    405     405    L
    dataset_list                          L    200     200    200     200    L
    dataset_upload                        L    405     405    405     405    L
    dataset_demo                          L    405     405    405     405    L
    labeling                              L    200     200    200     200    L
    dataset_detail                        L    200     200    404     200    L
    dataset_detect                        L    405     405    405     405    L
    dataset_import                        L    405     405    405     405    L
    dataset_import_cancel                 L    405     405    405     405    L
    dataset_clean                         L    405     405    405     405    L
    dataset_clean_undo                    L    405     405    405     405    L
    dataset_split                         L    405     405    405     405    L
    snapshot_create                       L    405     405    405     405    L
    dataset_delete                        L    405     405    405     405    L
    dataset_records                       L    200     200    404     200    L
    records_label_bulk                    L    405     405    405     405    L
    records_label_bulk_undo               L    405     405    405     405    L
    dataset_export                        L    200     403    403     200    L
    labeling_queue                        L    200     200    404     403    L
    labeling_save                         L    405     405    405     405    L
    labeling_next_json                    L    200     200    404     403    L
    labeling_submit_json                  L    405     405    405     405    L
    labeling_undo_json                    L    405     405    405     405    L
    label_schema_edit                     L    405     405    405     405    L
    labeling_settings                     L    200     403    403     403    L
    labeling_assign                       L    405     405    405     405    L
    review_queue                          L    200     403    403     403    L
    review_decide                         L    405     405    405     405    L
    dataset_agreement                     L    200     403    403     403    L
    dataset_agreement_count               L    405     405    405     405    L
    run_list                              L    200     403    403     200    L
    run_compare                           L    302     403    403     302    L
    run_create                            L    200     403    403     403    L
    run_estimate                          L    405     405    405     405    L
    search_list                           L    200     403    403     200    L
    search_create                         L    200     403    403     403    L
    search_detail                         L    200     403    403     200    L
    search_live                           L    200     403    403     200    L
    search_cancel                         L    405     405    405     405    L
    retrain_loops_live                    L    200     403    403     200    L
    model_loop                            L    200     403    403     200    L
    model_loop_live                       L    200     403    403     200    L
    model_loop_prelabel                   L    405     405    405     405    L
    model_loop_retrain                    L    405     405    405     405    L
    run_detail                            L    200     403    403     200    L
    run_live                              L    200     403    403     200    L
    run_events                            L    200     403    403     200    L
    run_cancel                            L    405     405    405     405    L
    run_resume                            L    405     405    405     405    L
    version_evaluations                   L    200     403    403     200    L
    model_list                            L    200     403    403     200    L
    base_model_create                     L    405     405    405     405    L
    version_detail                        L    200     403    403     200    L
    version_download                      L    404     403    403     404    L
    version_deploy                        L    405     405    405     405    L
    version_alias                         L    405     405    405     405    L
    version_export                        L    405     405    405     405    L
    version_archive                       L    405     405    405     405    L
    version_delete                        L    405     405    405     405    L
    model_aliases                         L    200     403    403     200    L
    export_download                       L    404     403    403     404    L
    deployment_list                       L    200     403    403     200    L
    prediction_token_create               L    405     405    405     405    L
    prediction_token_revoke               L    405     405    405     405    L
    deployment_action                     L    405     405    405     405    L
    endpoint_playground                   L    200     403    403     200    L
    version_playground                    L    405     405    405     405    L
    version_batch_predictions             L    200     403    403     200    L
    version_batch_prediction_start        L    405     405    405     405    L
    batch_prediction_cancel               L    405     405    405     405    L
    batch_prediction_download             L    404     403    403     404    L
    dataset_mislabeled                    L    200     403    403     403    L
    dataset_mislabeled_start              L    405     405    405     405    L
    dataset_mislabeled_cancel             L    405     405    405     405    L
    api_root                              401  200     200    200     200    401
    api_me                                401  200     200    200     200    401
    api_health                            401  200     200    200     200    401
    api_worker_checks                     401  200     200    200     200    401
    api_worker_check                      401  200     200    200     200    401
    api_base_models                       401  200     403    403     200    401
    api_model_versions                    401  200     403    403     200    401
    api_model_version                     401  200     403    403     200    401
    api_model_version_download            401  404     403    403     404    401
    api_deployments                       401  200     403    403     200    401
    api_deployment                        401  200     403    403     200    401
    api_deployment_predict                401  405     403    403     405    405
    api_prediction_tokens                 401  200     403    403     403    401
    api_prediction_token                  401  405     405    405     405    401
    api_deployment_promote                401  405     405    405     405    401
    api_deployment_rollback               401  405     405    405     405    401
    api_deployment_stop                   401  405     405    405     405    401
    api_deployment_start                  401  405     405    405     405    401
    api_model_version_exports             401  200     403    403     200    401
    api_model_version_alias               401  405     405    405     405    401
    api_model_version_archive             401  405     405    405     405    401
    api_model_aliases                     401  200     403    403     200    401
    api_export                            401  200     403    403     200    401
    api_export_download                   401  404     403    403     404    401
    api_model_version_batch_predictions   401  200     403    403     200    401
    api_batch_prediction                  401  200     403    403     200    401
    api_batch_prediction_cancel           401  405     405    405     405    401
    api_batch_prediction_download         401  404     403    403     404    401
    api_mislabeled_scans                  401  200     403    403     403    401
    api_mislabeled_scan                   401  200     403    403     403    401
    api_mislabeled_scan_cancel            401  405     405    405     405    401
    api_datasets                          401  200     200    200     200    401
    api_dataset_demo                      401  405     405    405     405    401
    api_dataset                           401  200     200    404     200    401
    api_dataset_detect                    401  405     405    405     405    401
    api_dataset_import                    401  405     405    405     405    401
    api_dataset_import_cancel             401  405     405    405     405    401
    api_dataset_records                   401  200     200    404     200    401
    api_dataset_clean                     401  405     405    405     405    401
    api_dataset_clean_undo                401  405     405    405     405    401
    api_dataset_split                     401  405     405    405     405    401
    api_dataset_snapshots                 401  200     200    404     200    401
    api_dataset_export                    401  200     403    403     200    401
    api_snapshot                          401  200     200    404     200    401
    api_dataset_label_schema              401  200     200    404     200    401
    api_dataset_labeling_next             401  200     200    404     403    401
    api_dataset_labeling_undo             401  405     405    405     405    401
    api_records_label_bulk                401  405     405    405     405    401
    api_bulk_label_undo                   401  405     405    405     405    401
    api_record_label                      401  405     405    405     405    401
    api_dataset_labeling_settings         401  200     200    404     200    401
    api_dataset_annotators                401  200     403    403     403    401
    api_dataset_annotator                 401  405     405    405     405    401
    api_dataset_review                    401  200     403    403     403    401
    api_dataset_review_decision           401  405     405    405     405    401
    api_dataset_agreement                 401  200     403    403     403    401
    api_runs                              401  200     403    403     200    401
    api_run_estimate                      401  405     405    405     405    401
    api_run                               401  200     403    403     200    401
    api_run_metrics                       401  200     403    403     200    401
    api_run_cancel                        401  405     405    405     405    401
    api_run_resume                        401  405     405    405     405    401
    api_searches                          401  200     403    403     200    401
    api_search                            401  200     403    403     200    401
    api_search_cancel                     401  405     405    405     405    401
    api_dataset_pre_labels                401  200     403    403     200    401
    api_dataset_retrain                   401  200     403    403     200    401
    api_evaluations                       401  405     405    405     405    401
    api_evaluation                        401  200     403    403     200    401
    schema                                401  200     200    200     200    401
    api_docs                              L    200     200    200     200    401
    """
)

UNSAFE_METHODS = ("post", "put", "patch", "delete")
CSRF_SENTENCE = "Your form expired or was sent from another site, so it was not accepted."


def walk(resolver=None, prefix: str = ""):
    """(route, name) of every URL pattern, Django's admin (staff only, its own login) aside."""
    for pattern in (resolver or get_resolver()).url_patterns:
        if isinstance(pattern, URLResolver):
            if str(pattern.pattern) == "admin/":
                continue
            yield from walk(pattern, prefix + str(pattern.pattern))
        else:
            yield prefix + str(pattern.pattern), pattern.name


ROUTES = list(walk())
HANDLERS = ("get", "post", "put", "patch", "delete")


# Any value each converter accepts, to resolve a route without a database.
GENERIC_IDS = defaultdict(lambda: 1, slug="any-slug", label="x.y", action="stop")


def address(route: str, ids: dict) -> str:
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda match: str(ids[match.group(1)]), route)


def clients_for(world, *, enforce_csrf: bool = False) -> dict[str, Client]:
    # A view that raises answers 500 here, as in production, and the sweep goes on.
    options = {"enforce_csrf_checks": enforce_csrf, "raise_request_exception": False}
    clients = {"anon": Client(**options)}
    for principal, key in WORLD_USERS.items():
        client = Client(**options)
        client.force_login(world.users[key])
        clients[principal] = client
    clients["token"] = Client(**options, HTTP_AUTHORIZATION=f"Token {TOKEN_KEY}")
    return clients


def assert_still_signed_in(client: Client, world, principal: str) -> None:
    """The sweep ran as ``principal`` to its end (no request in it signed the client out)."""
    me = client.get("/api/v1/me/")
    assert (me.status_code, me.json()["username"]) == (
        200,
        world.users[WORLD_USERS[principal]].username,
    )


def undone(client: Client, method: str, path: str, **kwargs):
    """The response to one request whose database changes are rolled back afterwards."""
    savepoint = transaction.savepoint()
    try:
        return getattr(client, method)(path, **kwargs)
    finally:
        transaction.savepoint_rollback(savepoint)


@pytest.fixture
def world(db, redis_url):
    return build_world()


def test_the_table_names_every_address():
    names = [name for _, name in ROUTES]

    assert len(names) == len(set(names)), "two URL patterns share a name"
    missing = sorted(set(names) - set(GET_GRID))
    stale = sorted(set(GET_GRID) - set(names))
    assert (missing, stale) == ([], []), (
        "Add a row for each new address to GET_GRID in tests/lepton_web/test_access_matrix.py "
        "(who may open it), and remove rows of addresses that are gone."
    )


def test_the_openapi_schema_documents_exactly_the_api_endpoints_and_methods_served():
    from drf_spectacular.generators import SchemaGenerator

    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]
    documented = {(path, method) for path, ops in paths.items() for method in ops}
    served = set()
    for route, _name in ROUTES:
        if not route.startswith("api/v1/"):
            continue
        view = get_resolver().resolve(address(route, GENERIC_IDS)).func.view_class
        path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
        served |= {(path, method) for method in HANDLERS if hasattr(view, method)}

    assert served - documented == set(), "served but not in /api/schema/"
    assert documented - served == set(), "in /api/schema/ but not served"


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_get_of_every_address_answers_as_the_table_says(world, principal):
    client = clients_for(world)[principal]
    wrong = {}
    for route, name in ROUTES:
        path = address(route, world.ids)
        response = client.get(path)
        expected = GET_GRID[name][principal]
        if expected == "L":
            location = response.get("Location", "")
            if response.status_code != 302 or not location.startswith("/login/?next="):
                wrong[name] = f"{response.status_code} {location}"
        elif str(response.status_code) != expected:
            wrong[name] = str(response.status_code)

    assert wrong == {}, f"{principal}: address -> what it answered instead of the table"


def test_a_user_without_a_role_opens_nothing_but_who_am_i_and_the_api_description(world):
    from tests.factories import UserFactory

    client = Client(raise_request_exception=False)
    client.force_login(UserFactory(username="mx-no-role", role=None))
    opens = {"healthz", "favicon", "api_root", "api_me", "schema", "api_docs"}
    answered = {}
    for route, name in ROUTES:
        code = client.get(address(route, world.ids)).status_code
        if name in opens:
            expected = {200}
        elif name == "login":
            expected = {302}  # already logged in: on to the console
        else:
            expected = {403, 405}
        if code not in expected:
            answered[name] = code

    assert answered == {}


@pytest.mark.parametrize("principal", ["analyst", "ann_in", "viewer"])
def test_unsafe_methods_without_a_body_never_answer_500(world, principal):
    client = clients_for(world)[principal]
    failed = {}
    for route, name in ROUTES:
        if name == "logout":
            continue  # it would sign the sweep out (Django's own view)
        path = address(route, world.ids)
        for method in UNSAFE_METHODS:
            response = undone(client, method, path)
            if response.status_code >= 500:
                failed[f"{method.upper()} {name}"] = response.status_code

    assert failed == {}
    assert_still_signed_in(client, world, principal)


HOSTILE_QUERIES = (
    "page=-1&after=99999999999999999999999&record=abc&snapshot=1e99&format=xlsx&q=%27%22%3C"
    "&limit=-5&offset=x&keep=1,,2&reload=1&fragment=x",
    "search=%22open&label=%25&split=zzz&flag=nope&order=-id&runs=1,x,99999999999999999999"
    "&version=abc&endpoint=..%2F..&metric=__class__&split=" + "x" * 3000,
)
HOSTILE_FORM = {
    "label": "x" * 5000,
    "overlap": "abc",
    "version": "99999999999999999999",
    "snapshot": "-1",
    "next": "//evil.example/",
    "runtime": "nope",
    "slug": "../../x",
    "split": "zzz",
    "steps": "-4",
    "epochs": "1e9",
    "learning_rate": "nan",
    "base_model": "99999999999999999999",
    "dismiss": "1",
    "labels": "a\nb\n" * 50,
    "encoding": "rot13",
    "delimiter": "\n",
    "record_id": "abc",
    "user": "99999999999999999999",
    "texts": "hi",
    "format": "zzz",
    "deployments": ["x", "y"],
}
HOSTILE_JSON = (
    '{"label": 5, "texts": [1, null], "record_id": "x", "key": 3, "overlap": "a", '
    '"version": "x", "snapshot": [], "params": {"epochs": "x"}, "labels": "a"}'
)


def test_hostile_parameters_and_bodies_never_answer_500(world):
    client = clients_for(world)["analyst"]
    failed = {}
    for route, name in ROUTES:
        if name == "logout":
            continue
        path = address(route, world.ids)
        for query in HOSTILE_QUERIES:
            if client.get(f"{path}?{query}").status_code >= 500:
                failed[f"GET {name}?{query[:20]}"] = 500
        answers = {
            "form": undone(client, "post", path, data=HOSTILE_FORM),
            "json": undone(
                client, "post", path, data=HOSTILE_JSON, content_type="application/json"
            ),
        }
        failed |= {
            f"POST {name} ({kind})": 500 for kind, a in answers.items() if a.status_code >= 500
        }

    assert failed == {}
    assert_still_signed_in(client, world, "analyst")


# What a role may send (POST/PUT/PATCH/DELETE) besides logging in and out; everything else
# must be refused with 403 (or 405 where the address has no such method).
MAY_SEND = {
    "viewer": {"api_deployment_predict", "endpoint_playground", "version_playground"},
    "ann_in": {
        "labeling_save",
        "labeling_submit_json",
        "labeling_undo_json",
        "api_record_label",
        "api_dataset_labeling_undo",
    },
}


@pytest.mark.parametrize("principal", sorted(MAY_SEND))
def test_read_only_and_labeling_roles_are_refused_every_other_change(world, principal):
    client = clients_for(world)[principal]
    let_through = {}
    for route, name in ROUTES:
        if name in MAY_SEND[principal] | {"login", "logout"}:
            continue
        path = address(route, world.ids)
        for method in UNSAFE_METHODS:
            code = undone(client, method, path).status_code
            if code not in (403, 405):
                let_through[f"{method.upper()} {name}"] = code

    assert let_through == {}
    assert_still_signed_in(client, world, principal)


def test_annotator_not_assigned_changes_nothing_through_the_datasets_addresses(world):
    client = clients_for(world)["ann_out"]
    let_through = {}
    for route, name in ROUTES:
        if "<id:dataset_id>" not in route:
            continue
        path = address(route, world.ids)
        for method in UNSAFE_METHODS:
            code = undone(client, method, path).status_code
            if code not in (403, 404, 405):
                let_through[f"{method.upper()} {name}"] = code

    assert let_through == {}
    assert_still_signed_in(client, world, "ann_out")


@pytest.mark.parametrize("principal", ["anon", "token"])
def test_unsafe_methods_without_a_login_go_to_the_login_form_or_answer_401(world, principal):
    client = clients_for(world)[principal]
    open_to_all = {"healthz", "favicon", "login"}
    wrong = {}
    for route, name in ROUTES:
        if name in open_to_all:
            continue
        path = address(route, world.ids)
        for method in UNSAFE_METHODS:
            response = undone(client, method, path)
            code = response.status_code
            if path.startswith("/api/"):
                # The token may call predict on its endpoint (a 400 for the missing texts).
                allowed = (
                    {400, 405}
                    if (principal, name) == ("token", "api_deployment_predict")
                    else {401}
                )
            else:
                allowed = {302} if response.get("Location", "").startswith("/login/") else set()
            if code not in allowed:
                wrong[f"{method.upper()} {name}"] = code

    assert wrong == {}


@pytest.mark.parametrize("principal", ["analyst", "ann_in"])
def test_every_unsafe_method_needs_the_csrf_token_with_a_session(world, principal):
    client = clients_for(world, enforce_csrf=True)[principal]
    accepted = {}
    for route, name in ROUTES:
        path = address(route, world.ids)
        for method in UNSAFE_METHODS:
            response = undone(client, method, path)
            body = response.content.decode(errors="replace")
            if response.status_code != 403 or not (CSRF_SENTENCE in body or "CSRF Failed" in body):
                accepted[f"{method.upper()} {name}"] = response.status_code

    assert accepted == {}
    assert_still_signed_in(client, world, principal)


# --- rows of another dataset (IDOR) ----------------------------------------------------------
def _logged_in(world, key: str) -> Client:
    client = Client()
    client.force_login(world.users[key])
    return client


def test_annotator_not_assigned_sees_the_dataset_in_no_list(world):
    client = _logged_in(world, "annotator_out")

    api_names = [row["name"] for row in client.get("/api/v1/datasets/").json()]
    pages = [client.get(path).content.decode() for path in ("/datasets/", "/datasets/labeling/")]

    assert "Matrix" not in api_names
    assert all("Matrix" not in page for page in pages)


@pytest.mark.parametrize(
    ("key", "expected"), [("annotator_out", 404), ("annotator_in", 200), ("analyst", 200)]
)
def test_job_progress_of_a_dataset_is_hidden_like_the_dataset(world, key, expected):
    client = _logged_in(world, key)
    dataset_job = f"/jobs/datasets_app.datasetjob/{world.ids['dataset_job_id']}/progress/"
    scan = f"/jobs/models_app.mislabeledscan/{world.ids['scan_id']}/progress/"

    assert (client.get(dataset_job).status_code, client.get(scan).status_code) == (
        expected,
        expected,
    )


def test_a_pages_404_says_why_and_an_unknown_address_says_it_does_not_exist(world):
    client = _logged_in(world, "annotator_out")

    hidden = client.get(f"/datasets/{world.ids['dataset_id']}/")
    unknown = client.get("/no/such/page/")

    assert (
        '<p data-testid="error-detail">This dataset is not assigned to you. Ask an analyst to '
        "assign you to it.</p>" in hidden.content.decode()
    )
    assert (
        '<p data-testid="error-detail">This page does not exist. It may have been deleted, or '
        "the address is mistyped.</p>" in unknown.content.decode()
    )


def test_a_page_address_asked_with_the_wrong_method_says_so_in_a_sentence(world):
    client = _logged_in(world, "analyst")

    page = client.get("/datasets/upload/")
    api = client.get("/api/v1/datasets/demo/")

    assert (page.status_code, page["Allow"]) == (405, "POST")
    assert (
        '<p data-testid="error-detail">This address does not take GET requests (only POST): '
        "it is the target of a button on a page. Go back to the page and use the button.</p>"
        in page.content.decode()
    )
    assert (api.status_code, api.json()) == (
        405,
        {"detail": 'Method "GET" not allowed.', "errors": {}},
    )


def test_snapshot_of_a_dataset_not_assigned_is_a_404(world):
    client = _logged_in(world, "annotator_out")

    response = client.get(f"/api/v1/snapshots/{world.ids['snapshot_id']}/")

    assert response.status_code == 404
    assert response.json() == {"detail": "This snapshot does not exist.", "errors": {}}


def test_annotator_cannot_label_a_record_of_another_dataset_through_this_one(world):
    client = _logged_in(world, "annotator_in")
    other_record = Record.objects.get(pk=world.other["record_id"])
    before = other_record.label
    d1 = world.ids["dataset_id"]
    rid = other_record.pk

    page = client.post(f"/datasets/{d1}/label/{rid}/", {"label": "negative"})
    page_json = client.post(
        f"/datasets/{d1}/label/submit/",
        {"record_id": rid, "label": "negative", "key": "k-1"},
        content_type="application/json",
    )
    api = client.post(
        f"/api/v1/datasets/{d1}/records/{rid}/label/",
        {"label": "negative"},
        content_type="application/json",
    )

    other_record.refresh_from_db()
    assert (other_record.label, other_record.pk) == (before, rid)
    assert not LabelChange.objects.filter(record_id=rid).exists()
    assert page.status_code in (302, 400, 404)
    assert (page_json.status_code, api.status_code) in ((400, 400), (404, 404), (400, 404))


def test_annotator_asking_this_queue_for_a_record_of_another_dataset_never_sees_it(world):
    client = _logged_in(world, "annotator_in")
    d1, rid = world.ids["dataset_id"], world.other["record_id"]

    answers = [
        client.get(f"/api/v1/datasets/{d1}/labeling/next/?record={rid}"),
        client.get(f"/datasets/{d1}/label/next/?record={rid}"),
        client.get(f"/datasets/{d1}/label/?record={rid}"),
        client.get(f"/datasets/{d1}/records/?record={rid}"),
    ]

    assert all(answer.status_code < 500 for answer in answers)
    assert [a for a in answers if "Elsewhere" in a.content.decode()] == []
    assert Record.objects.get(pk=rid).text.startswith("Elsewhere: ")


def test_analyst_cannot_decide_or_undo_rows_of_another_dataset_through_this_one(world):
    client = _logged_in(world, "analyst")
    d1 = world.ids["dataset_id"]
    item, bulk = world.other["item_id"], world.other["bulk_label_id"]

    responses = [
        client.post(f"/datasets/{d1}/review/{item}/", {"label": "negative"}),
        client.post(
            f"/api/v1/datasets/{d1}/review/{item}/",
            {"label": "negative"},
            content_type="application/json",
        ),
        client.post(f"/datasets/{d1}/records/label/{bulk}/undo/"),
        client.post(f"/api/v1/datasets/{d1}/bulk-labels/{bulk}/undo/"),
        client.get(f"/api/v1/datasets/{d1}/mislabeled-scans/{world.other['scan_id']}/"),
        client.post(f"/api/v1/datasets/{d1}/mislabeled-scans/{world.other['scan_id']}/cancel/"),
    ]

    assert ReviewItem.objects.get(pk=item).status == ReviewItem.Status.OPEN
    assert BulkLabel.objects.get(pk=bulk).undone_at is None
    assert [r.status_code for r in responses[4:]] == [404, 404]
    assert all(r.status_code in (302, 400, 404) for r in responses[:4])


def test_prediction_token_calls_only_its_endpoint_and_nothing_else(world):
    client = Client(HTTP_AUTHORIZATION=f"Token {TOKEN_KEY}")
    body = {"texts": ["hello"]}

    own = client.post("/api/v1/deployments/mx-live/predict/", body, content_type="application/json")
    other = client.post(
        "/api/v1/deployments/mx-other/predict/", body, content_type="application/json"
    )
    revoke = client.delete(f"/api/v1/prediction-tokens/{world.ids['token_id']}/")

    assert own.status_code not in (401, 403, 404)  # the model files are missing: a 503 here
    assert other.status_code == 403
    assert revoke.status_code == 401


# --- downloads of a version whose files are gone ---------------------------------------------
def test_download_of_a_version_whose_files_are_missing_is_a_404_that_says_so(world):
    client = _logged_in(world, "analyst")
    version_id = world.ids["version_id"]

    page = client.get(f"/models/versions/{version_id}/download/")
    api = client.get(f"/api/v1/model-versions/{version_id}/download/")

    assert page.status_code == 404
    assert (
        '<p data-testid="error-detail">A file of this version is missing from storage, so it '
        "cannot be downloaded.</p>" in page.content.decode()
    )
    assert (api.status_code, api.json()) == (
        404,
        {
            "detail": "A file of this version is missing from storage, so it cannot be downloaded.",
            "errors": {},
        },
    )


def test_download_of_a_version_that_is_not_ready_is_a_404(world):
    from models_app.models import ModelVersion

    ModelVersion.objects.filter(pk=world.ids["version_id"]).update(status="pending")
    client = _logged_in(world, "analyst")

    response = client.get(f"/api/v1/model-versions/{world.ids['version_id']}/download/")

    assert response.status_code == 404
    assert response.json()["detail"] == "This version has no files to download: it is not ready."


def test_labeling_json_endpoints_answer_a_form_post_with_a_400_sentence(world):
    client = _logged_in(world, "annotator_in")
    d1 = world.ids["dataset_id"]

    answers = [
        client.post(f"/datasets/{d1}/label/{name}/", {"record_id": world.ids["record_id"]})
        for name in ("submit", "undo")
    ]

    assert [(a.status_code, a.json()) for a in answers] == [
        (400, {"error": "The request must be JSON (Content-Type: application/json), not a form."})
    ] * 2
