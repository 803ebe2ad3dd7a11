"""/healthz for load balancers and the dashboard's health tiles, against real services."""

from pathlib import Path

from django.db import connection, connections

DOWN_BROKER_URL = "redis://127.0.0.1:1/0"


def test_healthz_answers_an_anonymous_client_with_200_json(client, db):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"status", "database", "broker", "workers", "queues"}
    assert (body["database"]["ok"], body["database"]["vendor"], body["database"]["detail"]) == (
        True,
        connection.vendor,
        "Connected.",
    )
    assert (body["broker"]["ok"], body["broker"]["detail"]) == (True, "Connected.")
    assert body["workers"] == []
    assert body["queues"] == {"default": [], "gpu": []}
    # Reachable but with no worker on either queue: usable, yet not fully healthy.
    assert body["status"] == "degraded"


def test_healthz_is_never_cached(client, db):
    response = client.get("/healthz")

    assert "no-cache" in response["Cache-Control"]


def test_healthz_answers_503_when_the_database_is_unreachable(client, django_db_blocker, tmp_path):
    conn = connections["default"]
    saved = dict(conn.settings_dict)
    with django_db_blocker.unblock():
        conn.close()
        try:
            if conn.vendor == "sqlite":
                conn.settings_dict["NAME"] = str(tmp_path / "missing-dir" / "db.sqlite3")
            else:
                conn.settings_dict["PORT"] = 1
            response = client.get("/healthz")
        finally:
            conn.close()
            conn.settings_dict.clear()
            conn.settings_dict.update(saved)

    assert not Path(tmp_path / "missing-dir").exists()
    assert response.status_code == 503
    body = response.json()
    assert set(body) == {"status", "database"}
    assert body["status"] == "unavailable"
    assert (body["database"]["ok"], body["database"]["vendor"]) == (False, conn.vendor)
    assert body["database"]["detail"] == "Unreachable."  # no error text for anonymous callers


def test_healthz_gives_anonymous_callers_no_addresses_or_error_text(client, db):
    from tests.conftest import broker_for_this_process

    with broker_for_this_process(DOWN_BROKER_URL):
        body = client.get("/healthz").json()

    assert body["broker"] == {"ok": False, "detail": "Unreachable."}
    assert "127.0.0.1" not in str(body)


def test_healthz_gives_a_signed_in_user_the_reason_and_the_address(client_as):
    from tests.conftest import broker_for_this_process

    client = client_as("viewer")
    with broker_for_this_process(DOWN_BROKER_URL):
        body = client.get("/healthz").json()

    assert (body["broker"]["ok"], body["broker"]["url"]) == (False, DOWN_BROKER_URL)
    assert body["broker"]["detail"].startswith("Unreachable: ")


def test_dashboard_says_the_broker_is_down_when_it_is_unreachable(client_as):
    from tests.conftest import broker_for_this_process

    client = client_as("analyst")

    with broker_for_this_process(DOWN_BROKER_URL):
        content = client.get("/").content.decode()

    assert '<div class="health-item down" data-testid="health-broker">' in content
    assert "Down: jobs cannot start until it is back. Unreachable: " in content
    assert f'<span class="muted">{DOWN_BROKER_URL}</span>' in content


def test_dashboard_says_the_broker_is_connected_when_it_is_reachable(client_as):
    content = client_as("analyst").get("/").content.decode()

    assert '<div class="health-item ok" data-testid="health-broker">' in content
