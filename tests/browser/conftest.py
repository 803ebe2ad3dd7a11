import os
import shutil

import pytest

from tests.conftest import skip_or_fail

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium")
    if not path:
        skip_or_fail("Chromium is not installed. Install it with: apt-get install chromium")
    return path


@pytest.fixture
def page(chromium_path, settings):
    # Playwright's sync API runs an event loop in this thread; Django's ORM refuses that
    # unless told it is safe (the test drives one request at a time).
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1360, "height": 860})
        page = context.new_page()
        page.set_default_timeout(20_000)
        # Every browser test also checks the Content-Security-Policy: a page that needs an
        # inline script, an inline handler, eval or anything from elsewhere fails its test
        # (Chromium reports each refusal on the console).
        refused: list[str] = []
        page.on(
            "console",
            lambda message: (
                refused.append(message.text) if "Content Security Policy" in message.text else None
            ),
        )
        yield page
        context.close()
        browser.close()
        assert not refused, f"The page broke its Content-Security-Policy: {refused}"
        # Playwright runs an event loop in this thread, so the ORM calls made meanwhile got
        # database connections of their own (asgiref's context-local): close them here, or
        # they would still hold the test database when it is dropped.
        from django.db import connections

        connections.close_all()
