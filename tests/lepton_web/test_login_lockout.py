"""Password guessing on the login page (django-axes): after LOGIN_FAILURE_LIMIT wrong passwords
for one username from one address that pair is refused, with a plain sentence and a 429, even
with the right password; other people and other addresses are not; the lockout ends after
LOGIN_LOCKOUT_MINUTES, and a successful login resets the count."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from lepton_web.views import login_client_address

PASSWORD = "correct horse battery staple"  # tests/factories.py


def attempt(client: Client, username: str, password: str, address: str = "10.0.0.7"):
    return client.post(
        reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address
    )


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


@pytest.mark.django_db
def test_wrong_passwords_lock_out_that_username_from_that_address(make_user):
    alice, bob = make_user("analyst"), make_user("analyst")
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        answer = attempt(client, alice.username, "wrong")
        assert answer.status_code == 200
        assert "login-locked" not in answer.content.decode()
    # The limit reached: this attempt and any after it are refused, the right password too.
    assert attempt(client, alice.username, "wrong").status_code == 429
    answer = attempt(client, alice.username, PASSWORD)
    assert answer.status_code == 429
    page = answer.content.decode()
    assert "Too many wrong passwords for this username from your address." in page
    assert f"Try again in {settings.AXES_COOLOFF_TIME.seconds // 60} minutes" in page
    assert f'value="{alice.username}"' in page  # the form keeps what was typed
    assert not logged_in(client)

    # Someone else from the same address, and Alice from another address, still log in.
    other = Client()
    assert attempt(other, bob.username, PASSWORD).status_code == 302
    assert logged_in(other)
    elsewhere = Client()
    assert attempt(elsewhere, alice.username, PASSWORD, address="10.0.0.8").status_code == 302
    assert logged_in(elsewhere)


@pytest.mark.django_db
def test_the_lockout_ends_after_its_cool_off(make_user):
    alice = make_user("analyst")
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        attempt(client, alice.username, "wrong")
    assert attempt(client, alice.username, PASSWORD).status_code == 429
    AccessAttempt.objects.update(
        attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    )
    assert attempt(client, alice.username, PASSWORD).status_code == 302
    assert logged_in(client)


@pytest.mark.django_db
def test_a_successful_login_resets_the_count(make_user):
    alice = make_user("analyst")
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        attempt(client, alice.username, "wrong")
    assert attempt(client, alice.username, PASSWORD).status_code == 302
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert attempt(client, alice.username, "wrong").status_code == 200
    assert attempt(client, alice.username, PASSWORD).status_code == 302


def test_the_counted_address_behind_trusted_proxies(rf, settings):
    request = rf.post(
        "/login/", REMOTE_ADDR="10.1.1.1", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9"
    )
    settings.LOGIN_TRUSTED_PROXIES = 0
    assert login_client_address(request) == "10.1.1.1"  # a header anyone can send is ignored
    settings.LOGIN_TRUSTED_PROXIES = 1
    assert login_client_address(request) == "203.0.113.9"  # what our one proxy saw
    settings.LOGIN_TRUSTED_PROXIES = 3  # more proxies than entries: the connection's address
    assert login_client_address(request) == "10.1.1.1"
