"""The Content-Security-Policy in headless Chromium: the pages keep working with scripts from
this site's files only (the `page` fixture fails any test whose page the policy refused
something on), the API docs included, and an inline script injected into a page is refused."""

import time

import pytest
from playwright.sync_api import expect

from models_app import runtime
from tests.browser.test_deployments import log_in
from tests.models_app.serving_helpers import make_version

pytestmark = pytest.mark.browser


def test_api_docs_render_under_the_policy(page, live_server, make_user):
    make_user("viewer", username="vic")
    log_in(page, live_server, "vic")
    response = page.goto(f"{live_server.url}/api/docs/")
    policy = dict(
        part.strip().split(" ", 1)
        for part in response.headers["content-security-policy"].split(";")
    )
    assert policy["script-src"] == "'self'"
    # Swagger UI starts from its script file and fetches the schema: the operations appear.
    expect(page.locator(".opblock").first).to_be_visible()
    expect(page.get_by_test_id("console-bar")).to_contain_text("Back to Lepton Console")


def test_an_injected_inline_script_is_refused(chromium_path, live_server, make_user):
    """What the policy is for: markup that slipped into a page cannot run script. (Its own
    browser, since the `page` fixture fails on the very refusal this test expects.)"""
    from playwright.sync_api import sync_playwright

    from tests.browser.conftest import CHROMIUM_ARGS

    make_user("viewer", username="vic")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        page = browser.new_page()
        refused = []
        page.on("console", lambda message: refused.append(message.text))
        log_in(page, live_server, "vic")
        page.evaluate(
            """() => {
              const s = document.createElement("script");
              s.textContent = "window.injected = true";
              document.body.appendChild(s);
              const b = document.createElement("img");
              b.setAttribute("src", "data:,");
              b.setAttribute("onerror", "window.handler = true");
              document.body.appendChild(b);
            }"""
        )
        page.wait_for_timeout(200)
        assert page.evaluate("window.injected") is None
        assert page.evaluate("window.handler") is None
        assert any("Content Security Policy" in text for text in refused), refused
        browser.close()


def test_the_endpoint_list_does_not_refresh_while_its_history_is_open(
    page, live_server, make_user, tmp_path_factory, transactional_db
):
    """The list refreshes every 5 s, except while something in it is in use (here an open
    History): the swap would close it under the reader."""
    from models_app.deploy import deployment_deploy

    runtime.model_cache.clear()
    analyst = make_user("analyst", username="ana")
    version = make_version(tmp_path_factory, seed=0)
    deployment_deploy(user=analyst, version=version, slug="reviews", runtime="pytorch")
    log_in(page, live_server, "ana")
    refreshes: list[float] = []
    page.on(
        "request",
        lambda request: (
            refreshes.append(time.monotonic()) if "fragment=endpoints" in request.url else None
        ),
    )

    def refreshed():  # waits for the next refresh's answer (they come every 5 s)
        return page.expect_response(lambda r: "fragment=endpoints" in r.url, timeout=15_000)

    page.goto(f"{live_server.url}/models/deployments/")
    with refreshed():
        pass
    page.wait_for_timeout(300)  # its swap has settled; the next tick is ~5 s away

    history = page.locator("#endpoints-live details").first
    history.locator("summary").click()
    expect(history).to_have_attribute("open", "")
    opened = time.monotonic()
    page.wait_for_timeout(11_000)  # two refresh ticks
    assert [t for t in refreshes if t > opened] == []
    expect(history).to_have_attribute("open", "")  # still open: never swapped away

    history.locator("summary").click()  # closed: the refresh resumes
    with refreshed():
        pass
    runtime.model_cache.clear()


def test_the_admin_works_under_the_policy(page, live_server, make_user):
    """Django's admin keeps its scripts in files too: its pages, the user list's filters and the
    add form run with nothing refused (the fixture checks)."""
    make_user("admin", username="ada", is_staff=True, is_superuser=True)
    log_in(page, live_server, "ada")
    page.goto(f"{live_server.url}/admin/")
    expect(page.locator("#site-name")).to_be_visible()
    page.goto(f"{live_server.url}/admin/auth/user/")
    expect(page.locator("#result_list")).to_contain_text("ada")
    page.goto(f"{live_server.url}/admin/auth/user/add/")
    page.get_by_label("Username").fill("new-person")
    expect(page.locator("#user_form")).to_be_visible()
    page.wait_for_load_state("load")
