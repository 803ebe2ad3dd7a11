"""Prediction-only tokens: an application's key that may call predict on chosen endpoints.

The key is sent like a user token (``Authorization: Token lpt_...``); only its SHA-256 is
stored. The request's user is then a principal with no role, so every other API answers 403.
"""

from __future__ import annotations

import hashlib
import time

from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from models_app.models import PredictionToken

KEY_PREFIX = "lpt_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class PredictionPrincipal:
    """The caller behind a prediction token: authenticated, but with no role at all."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_superuser = False
    is_staff = False
    _lepton_roles = frozenset()
    pk = None
    id = None

    def __init__(self, token: PredictionToken, slugs: frozenset[str] = frozenset()) -> None:
        self.token = token
        self.username = f"token:{token.name}"
        self.slugs = slugs  # the endpoints this token may call

    def __str__(self) -> str:
        return self.username

    def has_perm(self, *args, **kwargs) -> bool:
        return False


class PredictionTokenAuthentication(BaseAuthentication):
    """Prediction tokens, with the endpoints they may call, in one query."""

    keyword = "Token"

    def authenticate(self, request):
        key = _token_key(request)
        if key is None or not key.startswith(KEY_PREFIX):
            return None  # a user's token (or none): the next authenticator handles it
        token_table = PredictionToken._meta.db_table
        through = PredictionToken.deployments.through
        deployment_table = PredictionToken.deployments.field.related_model._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT t.id, t.name, d.slug FROM {token_table} t "  # noqa: S608 table names from the models
                f"LEFT JOIN {through._meta.db_table} td ON td.predictiontoken_id = t.id "
                f"LEFT JOIN {deployment_table} d ON d.id = td.deployment_id "
                "WHERE t.key_hash = %s",
                [hash_key(key)],
            )
            rows = cursor.fetchall()
        if not rows:
            raise exceptions.AuthenticationFailed("This prediction token is not valid.")
        token = PredictionToken(pk=rows[0][0], name=rows[0][1])
        _note_use(token.pk)
        slugs = frozenset(row[2] for row in rows if row[2])
        return PredictionPrincipal(token, slugs), token

    def authenticate_header(self, request) -> str:
        return self.keyword


class FastUserTokenAuthentication(BaseAuthentication):
    """A user's API token for the predict call: user and roles in one query.

    The same tokens and rules as DRF's TokenAuthentication and lepton_web.access, without the
    ORM's per-query compile cost (about a millisecond each here) on the hot path. The user is a
    partial row (id, username, flags) with its roles attached, enough for access checks."""

    keyword = "Token"

    def authenticate(self, request):
        key = _token_key(request)
        if key is None or key.startswith(KEY_PREFIX):
            return None
        from rest_framework.authtoken.models import Token

        from lepton_web.access import ROLES
        from lepton_web.accounts import token_key_digest

        user_model = get_user_model()
        groups = user_model.groups.through
        group_table = user_model.groups.field.related_model._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT u.id, u.username, u.is_active, u.is_superuser, g.name "  # noqa: S608 table names from the models
                f"FROM {Token._meta.db_table} t JOIN {user_model._meta.db_table} u ON u.id = t.user_id "
                f"LEFT JOIN {groups._meta.db_table} ug ON ug.user_id = u.id "
                f"LEFT JOIN {group_table} g ON g.id = ug.group_id "
                "WHERE t.key = %s",
                [token_key_digest(key)],
            )
            rows = cursor.fetchall()
        if not rows or not rows[0][2]:
            raise exceptions.AuthenticationFailed("Invalid token.")
        user_id, username, is_active, is_superuser, _ = rows[0]
        user = user_model(
            pk=user_id, username=username, is_active=is_active, is_superuser=is_superuser
        )
        user._lepton_roles = frozenset(row[4] for row in rows if row[4] in ROLES)
        return user, key

    def authenticate_header(self, request) -> str:
        return self.keyword


_last_noted: dict[int, float] = {}


def _note_use(token_id: int) -> None:
    """Write last_used_at at most once a minute per token and process (not on every call)."""
    now = time.monotonic()
    if now - _last_noted.get(token_id, -3600.0) >= 60:
        _last_noted[token_id] = now
        PredictionToken.objects.filter(pk=token_id).update(last_used_at=timezone.now())


def _token_key(request) -> str | None:
    parts = get_authorization_header(request).split()
    if len(parts) != 2 or parts[0].lower() != b"token":
        return None
    try:
        return parts[1].decode()
    except UnicodeError:
        return None


class PredictionTokenScheme(OpenApiAuthenticationExtension):
    """Names the prediction token in the OpenAPI schema."""

    target_class = "models_app.api.auth.PredictionTokenAuthentication"
    name = "predictionTokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'A prediction-only token: "Token lpt_..." (predict on chosen endpoints only).',
        }


class FastUserTokenScheme(OpenApiAuthenticationExtension):
    """The predict call's user-token authenticator is the usual user token."""

    target_class = "models_app.api.auth.FastUserTokenAuthentication"
    name = "userTokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'Token-based authentication with required prefix "Token"',
        }
