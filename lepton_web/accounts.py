"""Account services: roles, users and API tokens (used by the admin commands and bootstrap)."""

from __future__ import annotations

import hashlib
import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction
from rest_framework.authtoken.models import Token

from lepton_web.access import ADMIN, ROLES


def roles_ensure() -> None:
    for role in ROLES:
        Group.objects.get_or_create(name=role)


def password_generate() -> str:
    return secrets.token_urlsafe(18)


def user_create(*, username: str, role: str, email: str = "", password: str | None = None):
    """Create a user in one role; returns (user, password). The password is never stored plain."""
    if role not in ROLES:
        raise ValidationError(f"Unknown role {role!r}. Choose one of: {', '.join(ROLES)}.")
    user_model = get_user_model()
    if user_model.objects.filter(username=username).exists():
        raise ValidationError(f"A user named {username!r} already exists.")
    password = password or password_generate()
    with transaction.atomic():
        roles_ensure()
        user = user_model.objects.create_user(
            username=username,
            email=email,
            password=password,
            is_staff=role == ADMIN,
            is_superuser=role == ADMIN,
        )
        user.groups.add(Group.objects.get(name=role))
    return user, password


def token_key_digest(key: str) -> str:
    """What is kept of a user's API token: the first 40 hex digits (160 bits) of its SHA-256,
    in the column DRF's Token keeps its key in. A copy of the database holds no usable key."""
    return hashlib.sha256(key.encode()).hexdigest()[:40]


def user_token_issue(*, user) -> str:
    """A new API token for ``user``; their previous one stops working. Returns the key, shown
    this once: only its digest is stored, so it cannot be shown again."""
    key = secrets.token_hex(20)
    with transaction.atomic():
        Token.objects.filter(user=user).delete()
        Token.objects.create(user=user, key=token_key_digest(key))
    return key


def user_token_rotate(*, username: str) -> str:
    """``user_token_issue`` for the user named ``username``."""
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise ValidationError(f"No user named {username!r}.")
    return user_token_issue(user=user)


def user_password_reset(*, username: str) -> str:
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise ValidationError(f"No user named {username!r}.")
    password = password_generate()
    user.set_password(password)
    user.save(update_fields=["password"])
    return password
