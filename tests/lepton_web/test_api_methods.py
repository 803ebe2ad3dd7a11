"""Every API route answers every HTTP method without a server error (issue 9, item 6).

The routes come from the URL resolver, so an endpoint added later is covered without editing
this file. A method a view does not declare gets 405 with ``Allow``; a declared one has a rule.
"""

from __future__ import annotations

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient
from rest_framework.views import APIView

from lepton_web.access import RULES, RolePermission

METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "TRACE")


def _api_routes() -> list[tuple[str, type[APIView]]]:
    """``(example path, view class)`` for every DRF view under /api/."""
    routes = []

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern):
                view_class = getattr(pattern.callback, "cls", None)
                if route.startswith("api/") and view_class and issubclass(view_class, APIView):
                    # Every path parameter is an id or a name: 1 fits both; the row need not
                    # exist, a 405 comes before any lookup.
                    path = "/" + re.sub(r"<(?:\w+:)?\w+>", "1", route)
                    routes.append((path, view_class))

    walk(get_resolver().url_patterns, "")
    return routes


ROUTES = _api_routes()


def _declared(view_class: type[APIView]) -> set[str]:
    declared = {m.upper() for m in view_class.http_method_names if hasattr(view_class, m)}
    if "GET" in declared:
        declared.add("HEAD")  # Django's View.setup answers HEAD with get
    return declared


UNDECLARED = [
    (path, method, view_class)
    for path, view_class in ROUTES
    for method in METHODS
    if method not in _declared(view_class)
]


def test_the_resolver_finds_the_api_routes():
    paths = {path for path, _ in ROUTES}

    assert {"/api/v1/runs/", "/api/v1/health/", "/api/v1/datasets/1/records/"} <= paths


@pytest.fixture
def analyst_api(make_user):
    api = APIClient()
    api.force_authenticate(make_user("analyst"))
    return api


@pytest.mark.parametrize(
    ("path", "method", "view_class"),
    UNDECLARED,
    ids=[f"{method} {path}" for path, method, _ in UNDECLARED],
)
def test_undeclared_method_answers_405_with_allow(analyst_api, path, method, view_class):
    response = analyst_api.generic(method, path)

    assert response.status_code == 405, response.content[:300]
    allowed = {m.strip() for m in response["Allow"].split(",")}
    assert allowed == _declared(view_class)
    if path.startswith("/api/v1/") and method != "HEAD":
        assert response.json() == {
            "detail": f'Method "{method}" not allowed.',
            "errors": {},
        }


def test_put_on_runs_list_is_405_for_an_analyst_token(make_user):
    from lepton_web.accounts import user_token_issue

    key = user_token_issue(user=make_user("analyst"))
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")

    response = api.put("/api/v1/runs/", {}, format="json")

    assert response.status_code == 405
    assert response["Allow"] == "GET, POST, HEAD, OPTIONS"


def test_undeclared_method_without_credentials_still_asks_for_them():
    response = APIClient().put("/api/v1/runs/")

    assert response.status_code == 401


@pytest.mark.parametrize(("path", "view_class"), ROUTES, ids=[path for path, _ in ROUTES])
def test_every_declared_method_has_an_access_rule(path, view_class):
    if RolePermission not in view_class.permission_classes:
        return  # checked by its own permission class, not by the rule table
    actions = {**RolePermission.default_actions, **getattr(view_class, "access_actions", {})}
    missing = [
        f"{method} -> {view_class.access_resource}.{actions.get(method)}"
        for method in sorted(_declared(view_class))
        if actions.get(method) not in RULES[view_class.access_resource]
    ]

    assert missing == []


def test_a_handler_without_a_rule_is_refused_not_a_server_error(rf, make_user):
    from rest_framework.response import Response

    class NoRuleApi(APIView):
        access_resource = "training_run"
        permission_classes = [RolePermission]

        def put(self, request):  # training_run.change has no rule
            return Response({})

    request = rf.put("/api/v1/nowhere/")
    request.user = make_user("admin")
    from rest_framework.test import force_authenticate

    force_authenticate(request, user=request.user)
    response = NoRuleApi.as_view()(request)

    assert response.status_code == 403
    assert response.data == {
        "detail": "This action has no access rule yet, so nobody may use it.",
        "errors": {},
    }
