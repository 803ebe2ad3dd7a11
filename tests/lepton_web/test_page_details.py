"""Small things on the pages (issue 9, item 19, dataset side): a favicon, a way back from the
API docs, integer ticks on the text-length chart, thousands separators, and what "Review" on a
fully labeled dataset offers."""

from __future__ import annotations

from pytest_django.asserts import assertContains


# --- favicon ----------------------------------------------------------------------------------
def test_favicon_is_served_without_login(client, db):
    response = client.get("/favicon.ico")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/x-icon"
    assert b"".join(response.streaming_content).startswith(b"\x00\x00\x01\x00")  # ICO header


def test_every_page_links_the_favicon(client_as):
    response = client_as("viewer").get("/")

    assertContains(
        response, '<link rel="icon" href="/static/favicon.ico" sizes="16x16 32x32 48x48 64x64">'
    )


# --- API docs ---------------------------------------------------------------------------------
def test_api_docs_have_a_bar_back_to_the_console(client_as):
    response = client_as("viewer").get("/api/docs/")

    assertContains(response, '<a href="/">← Back to Lepton Console</a>', html=True)
    assertContains(response, '<div id="swagger-ui"></div>', html=True)  # the docs themselves
