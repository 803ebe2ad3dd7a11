"""Deploy, switch and roll back through the pages in headless Chromium; each step is checked
with a real predict call over HTTP that names the version which answered."""

import pytest
from playwright.sync_api import expect

from models_app import runtime
from tests.models_app.serving_helpers import make_version

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery staple"


def log_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_test_id("current-user")).to_have_text(username)


def predicted_version(page, live_server, key: str) -> int:
    response = page.request.post(
        f"{live_server.url}/api/v1/deployments/reviews/predict/",
        data={"texts": ["a good movie"]},
        headers={"Authorization": f"Token {key}"},
    )
    assert response.status == 200, response.text()
    body = response.json()
    assert body["predictions"][0]["label"] in ("negative", "positive")
    return body["version"]


def test_deploy_promote_and_roll_back_through_the_pages(
    page, live_server, make_user, tmp_path_factory, transactional_db
):
    from lepton_web.accounts import user_token_issue

    runtime.model_cache.clear()
    analyst = make_user("analyst", username="ana")
    key = user_token_issue(user=analyst)
    first = make_version(tmp_path_factory, seed=0)
    make_version(tmp_path_factory, seed=1)
    log_in(page, live_server, "ana")

    page.goto(f"{live_server.url}/models/")
    page.get_by_test_id("deploy-link").last.click()  # v1 (versions list newest first)
    expect(page).to_have_url(f"{live_server.url}/models/versions/{first.pk}/#deploy")
    page.get_by_label("Endpoint").fill("reviews")
    page.get_by_label("Runtime").select_option("pytorch")
    page.get_by_test_id("deploy").click()

    expect(page.get_by_role("status").first).to_contain_text("is live at reviews")
    endpoint = page.get_by_test_id("endpoint")
    expect(endpoint.get_by_test_id("endpoint-status")).to_have_text("Live")
    expect(endpoint.get_by_test_id("endpoint-version")).to_have_text("reviews v1")
    assert predicted_version(page, live_server, key) == 1

    endpoint.get_by_label("Version to promote").select_option(label="v2")
    endpoint.get_by_role("button", name="Promote").click()
    expect(page.get_by_role("status").first).to_contain_text("reviews now serves reviews v2")
    expect(page.get_by_test_id("endpoint-version")).to_have_text("reviews v2")
    assert predicted_version(page, live_server, key) == 2

    page.get_by_test_id("rollback").click()
    expect(page.get_by_role("status").first).to_contain_text("rolled back to reviews v1")
    expect(page.get_by_test_id("endpoint-version")).to_have_text("reviews v1")
    assert predicted_version(page, live_server, key) == 1

    page.get_by_test_id("stop").click()
    expect(page.get_by_test_id("endpoint-status")).to_have_text("Stopped")
    stopped = page.request.post(
        f"{live_server.url}/api/v1/deployments/reviews/predict/",
        data={"texts": ["good"]},
        headers={"Authorization": f"Token {key}"},
    )
    assert stopped.status == 503
    page.get_by_text("History").click()
    history = page.get_by_test_id("endpoint-history")
    expect(history).to_contain_text("Rolled back v2 → v1 on PyTorch")
    expect(history).to_contain_text("Promoted v1 → v2 on PyTorch")
    runtime.model_cache.clear()
