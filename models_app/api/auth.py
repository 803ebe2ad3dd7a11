"""Prediction-only tokens: an application's key that may call predict on chosen endpoints.

The key is sent like a user token (``Authorization: Token lpt_...``); only its SHA-256 is
stored. The request's user is then a principal with no role, so every other API answers 403.
"""

from __future__ import annotations

import hashlib

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

    def __init__(self, token: PredictionToken) -> None:
        self.token = token
        self.username = f"token:{token.name}"

    def __str__(self) -> str:
        return self.username

    def has_perm(self, *args, **kwargs) -> bool:
        return False


class PredictionTokenAuthentication(BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if len(parts) != 2 or parts[0].lower() != b"token":
            return None
        try:
            key = parts[1].decode()
        except UnicodeError:
            return None
        if not key.startswith(KEY_PREFIX):
            return None  # a user's token: TokenAuthentication handles it
        token = PredictionToken.objects.filter(key_hash=hash_key(key)).first()
        if token is None:
            raise exceptions.AuthenticationFailed("This prediction token is not valid.")
        now = timezone.now()
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            PredictionToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return PredictionPrincipal(token), token

    def authenticate_header(self, request) -> str:
        return self.keyword


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
