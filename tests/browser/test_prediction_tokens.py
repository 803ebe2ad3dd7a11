"""Prediction tokens on the Deployments page in headless Chromium: create one, its key is shown
once and works, revoke it (Cancel keeps it; confirming revokes), and it is gone and its key refused."""

import pytest
from playwright.sync_api import expect

from models_app import runtime
from tests.browser.test_deployments import log_in
from tests.models_app.serving_helpers import make_version

pytestmark = pytest.mark.browser


def _predict(page, live_server, key: str) -> int:
    return page.request.post(
        f"{live_server.url}/api/v1/deployments/reviews/predict/",
        data={"texts": ["a good movie"]},
        headers={"Authorization": f"Token {key}"},
    ).status


def test_create_show_once_and_revoke_a_token(
    page, live_server, make_user, tmp_path_factory, transactional_db
):
    from models_app.deploy import deployment_deploy

    runtime.model_cache.clear()
    analyst = make_user("analyst", username="ana")
    version = make_version(tmp_path_factory, seed=0)
    deployment_deploy(user=analyst, version=version, slug="reviews", runtime="pytorch")
    log_in(page, live_server, "ana")

    page.goto(f"{live_server.url}/models/deployments/")
    tokens = page.get_by_test_id("prediction-tokens")
    expect(tokens.get_by_test_id("token-empty")).to_contain_text("No tokens yet")
    tokens.get_by_label("Name").fill("shop")
    tokens.get_by_label("reviews").check()
    tokens.get_by_role("button", name="Create token").click()

    key = page.get_by_test_id("new-token-key").inner_text()
    assert key.startswith("lpt_")
    expect(page.get_by_test_id("new-token")).to_contain_text("Copy it now")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_test_id("copy-key").click()
    expect(page.get_by_test_id("copy-key")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == key
    row = page.get_by_test_id("token-row")
    expect(row).to_have_count(1)
    expect(row.get_by_test_id("token-name")).to_have_text("shop")
    assert _predict(page, live_server, key) == 200

    page.goto(f"{live_server.url}/models/deployments/")  # shown once: not on the next visit
    expect(page.get_by_test_id("new-token")).to_have_count(0)
    assert key not in page.content()

    # The revoke button asks first; Cancel keeps the token and its key working.
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.get_by_test_id("token-revoke").click()
    expect(page.get_by_test_id("token-row")).to_have_count(1)
    assert asked == ["Revoke the token shop? Applications using its key will get 401 at once."]
    assert _predict(page, live_server, key) == 200

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("token-revoke").click()
    expect(page.get_by_test_id("token-result")).to_contain_text("revoked")
    expect(page.get_by_test_id("token-row")).to_have_count(0)
    assert _predict(page, live_server, key) == 401
    runtime.model_cache.clear()
