"""Who may do what: the one table of access rules, per resource, for pages and API alike.

Roles are Django groups. A superuser counts as admin. A user may hold several roles; any one
that allows an action is enough. Views use ``access_required``; API views use
``RolePermission``; templates read ``can.<resource>.<action>``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps

from django.core.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission

ADMIN = "admin"
ANALYST = "analyst"
ANNOTATOR = "annotator"
VIEWER = "viewer"
ROLES = (ADMIN, ANALYST, ANNOTATOR, VIEWER)
ROLE_DESCRIPTIONS = {
    ADMIN: "Everything, including users and tokens.",
    ANALYST: "Datasets, labeling, training and deploying.",
    ANNOTATOR: "Labeling only.",
    VIEWER: "Read only.",
}

logger = logging.getLogger(__name__)

_EVERYONE = frozenset(ROLES)
_BUILDERS = frozenset({ADMIN, ANALYST})
_READERS_OF_DATA = frozenset({ADMIN, ANALYST, ANNOTATOR, VIEWER})
_READERS_OF_MODELS = frozenset({ADMIN, ANALYST, VIEWER})

# resource -> action -> roles allowed. The only place these rules are written down.
RULES: dict[str, dict[str, frozenset[str]]] = {
    "dashboard": {"view": _EVERYONE},
    "worker_check": {"view": _EVERYONE, "create": _BUILDERS},
    "dataset": {
        "view": _READERS_OF_DATA,
        # A copy of every record: annotators label (the records they are shown), they do not
        # take the data away.
        "export": _READERS_OF_MODELS,
        "create": _BUILDERS,
        "change": _BUILDERS,
        "delete": _BUILDERS,
    },
    "labeling": {"view": _READERS_OF_DATA, "label": frozenset({ADMIN, ANALYST, ANNOTATOR})},
    "base_model": {"view": _READERS_OF_MODELS, "create": _BUILDERS},
    "training_run": {"view": _READERS_OF_MODELS, "create": _BUILDERS, "cancel": _BUILDERS},
    "model_version": {"view": _READERS_OF_MODELS, "create": _BUILDERS, "delete": _BUILDERS},
    "deployment": {
        "view": _READERS_OF_MODELS,
        "deploy": _BUILDERS,
        "predict": _BUILDERS | {VIEWER},
    },
    "user": {"view": frozenset({ADMIN}), "manage": frozenset({ADMIN})},
}


def user_roles(user) -> frozenset[str]:
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return frozenset()
    if user.is_superuser:
        return frozenset({ADMIN})
    cached = getattr(user, "_lepton_roles", None)
    if cached is None:
        cached = frozenset(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
        user._lepton_roles = cached
    return cached


def can(user, resource: str, action: str) -> bool:
    try:
        allowed = RULES[resource][action]
    except KeyError:
        raise ValueError(f"No access rule for {resource}.{action}") from None
    roles = user_roles(user)
    return ADMIN in roles or bool(roles & allowed)


NOUNS = {
    "dashboard": "the dashboard",
    "labeling": "the labeling queue",
    "worker_check": "worker checks",
    "dataset": "datasets",
    "base_model": "base models",
    "training_run": "training runs",
    "model_version": "model versions",
    "deployment": "deployments",
    "user": "users",
}
PHRASES = {
    ("labeling", "label"): "label records",
    ("deployment", "predict"): "call deployed models",
}


def denial_message(user, resource: str, action: str) -> str:
    roles = sorted(user_roles(user))
    who = f"Your role ({', '.join(roles)})" if roles else "Your account has no role yet and"
    what = PHRASES.get((resource, action)) or f"{action} {NOUNS.get(resource, resource)}"
    allowed = sorted(RULES[resource][action])
    return f"{who} cannot {what} here. Ask an admin for one of these roles: {', '.join(allowed)}."


def access_check(user, resource: str, action: str) -> None:
    """Raise PermissionDenied with a readable reason unless the user may act."""
    if not can(user, resource, action):
        raise PermissionDenied(denial_message(user, resource, action))


def access_required(resource: str, action: str) -> Callable:
    """View decorator: the user must be allowed ``action`` on ``resource``."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            access_check(request.user, resource, action)
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


class RolePermission(BasePermission):
    """DRF permission reading ``access_resource`` and ``access_actions`` (method -> action)."""

    default_actions = {
        "GET": "view",
        "HEAD": "view",
        "OPTIONS": "view",
        "POST": "create",
        "PUT": "change",
        "PATCH": "change",
        "DELETE": "delete",
    }

    def has_permission(self, request, view) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        method = request.method.lower()
        if method not in view.http_method_names or not hasattr(view, method):
            # DRF checks permissions before it looks for the handler: let it answer 405 with
            # ``Allow`` instead of asking for a rule no one wrote (PUT on a list, TRACE, ...).
            return True
        actions = {**self.default_actions, **getattr(view, "access_actions", {})}
        action = actions.get(request.method)
        resource = view.access_resource
        if action is None or action not in RULES.get(resource, {}):
            # A handler without a rule is a bug (tests/lepton_web/test_api_methods.py looks for
            # one); refuse rather than crash.
            logger.error("No access rule for %s %s on %s", request.method, resource, view)
            self.message = "This action has no access rule yet, so nobody may use it."
            return False
        if not can(request.user, resource, action):
            self.message = denial_message(request.user, resource, action)
            return False
        return True


class _ResourceCan:
    def __init__(self, user, resource: str):
        self._user, self._resource = user, resource

    def __getattr__(self, action: str) -> bool:
        if action.startswith("_"):
            raise AttributeError(action)
        return can(self._user, self._resource, action)


class _Can:
    def __init__(self, user):
        self._user = user

    def __getattr__(self, resource: str) -> _ResourceCan:
        if resource.startswith("_") or resource not in RULES:
            raise AttributeError(resource)
        return _ResourceCan(self._user, resource)


def roles_context(request) -> dict:
    user = getattr(request, "user", None)
    return {"can": _Can(user), "user_roles": sorted(user_roles(user)) if user else []}
