"""The console in real headless Chromium: log in, see live workers, run a job, log out."""

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery staple"


def test_anonymous_visitor_is_sent_to_login(page, live_server, transactional_db):
    page.goto(f"{live_server.url}/models/")

    expect(page).to_have_url(re.compile(r"/login/\?next=/models/$"))
    expect(page.get_by_text("Please log in to continue.")).to_be_visible()


def test_wrong_password_shows_a_sentence_and_keeps_the_username(page, live_server, make_user):
    make_user("analyst", username="ana")
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill("ana")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()

    expect(page.get_by_role("alert")).to_contain_text(
        "Please enter a correct username and password"
    )
    expect(page.get_by_label("Username")).to_have_value("ana")


def test_too_many_wrong_passwords_lock_the_form_out_with_a_sentence(page, live_server, make_user):
    from django.conf import settings

    make_user("analyst", username="ana")
    page.goto(f"{live_server.url}/login/")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        page.get_by_label("Username").fill("ana")
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Log in").click()
    # Even the right password is refused now, and the page says why and for how long.
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()

    expect(page.get_by_test_id("login-locked")).to_contain_text(
        "Too many wrong passwords for this username from your address. Try again in 15 minutes"
    )
    expect(page.get_by_label("Username")).to_have_value("ana")
    expect(page).to_have_url(re.compile(r"/login/$"))


def test_log_in_see_worker_online_run_a_check_live_and_log_out(
    page, live_server, redis_worker, make_user
):
    worker = redis_worker()
    make_user("analyst", username="ana")

    page.goto(f"{live_server.url}/")
    page.get_by_label("Username").fill("ana")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()

    expect(page).to_have_url(f"{live_server.url}/")
    expect(page.get_by_test_id("current-user")).to_have_text("ana")
    expect(page.get_by_test_id("health-database")).to_contain_text("Connected")
    expect(page.get_by_test_id("health-queue-gpu")).to_contain_text("1 worker online")
    workers = page.get_by_test_id("workers")
    expect(workers).to_contain_text(worker.hostname)
    expect(workers).to_contain_text("online")

    page.get_by_role("button", name="Check workers").click()
    expect(page.get_by_role("status")).to_contain_text("Worker checks queued")
    jobs = page.locator(".job")
    expect(jobs).to_have_count(2)
    # The progress component polls with htmx; no reload happens from here on.
    for index in range(2):
        expect(jobs.nth(index)).to_have_attribute("data-status", "succeeded", timeout=30_000)
        expect(jobs.nth(index)).to_contain_text(f"{worker.hostname} answered")

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login/$"))
    page.goto(f"{live_server.url}/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))
