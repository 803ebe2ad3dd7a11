"""The WSGI fast path answers token-authenticated predict calls exactly as the DRF view does,
and hands everything else to Django untouched."""

import io
import json

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from lepton_web.accounts import token_key_digest, user_token_issue
from models_app import runtime
from models_app.deploy import deployment_deploy, deployment_stop, prediction_token_create
from models_app.fastpath import PredictFastPath
from models_app.models import Deployment
from tests.models_app.serving_helpers import make_version

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    runtime.model_cache.clear()
    yield
    runtime.model_cache.clear()


# What every WSGI server sets.
WSGI_BASICS = {
    "SERVER_NAME": "testserver",
    "SERVER_PORT": "80",
    "HTTP_HOST": "testserver",
    "wsgi.url_scheme": "http",
}


class Fallback:
    """The wrapped Django application: records what reached it."""

    def __init__(self):
        self.calls = []

    def __call__(self, environ, start_response):
        self.calls.append((environ["PATH_INFO"], environ["wsgi.input"].read()))
        start_response("418 I'm a teapot", [])
        return [b"django"]


def call(app, *, key, body, path="/api/v1/deployments/reviews/predict/", query="", **extra_environ):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    environ = {
        **WSGI_BASICS,
        **extra_environ,
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(raw)),
        "HTTP_AUTHORIZATION": f"Token {key}",
        "wsgi.input": io.BytesIO(raw),
    }
    answer = {}

    def start_response(status, headers):
        answer["status"] = int(status.split()[0])
        answer["headers"] = dict(headers)

    content = b"".join(app(environ, start_response))
    return answer["status"], answer["headers"], content


@pytest.fixture
def setup(tmp_path_factory, analyst):
    version = make_version(tmp_path_factory)
    deployment_deploy(user=analyst, version=version, slug="reviews", runtime="pytorch")
    return analyst, user_token_issue(user=analyst)


def test_fast_answer_equals_the_django_answer(setup):
    _, key = setup
    fallback = Fallback()
    texts = {"texts": ["a good movie", "bad"]}

    status, headers, content = call(PredictFastPath(fallback), key=key, body=texts)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    slow = client.post("/api/v1/deployments/reviews/predict/", texts, format="json")

    assert fallback.calls == []
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(content) == slow.json()


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"texts": []}, 400, "texts is empty; send at least one text."),
        ({"texts": "x"}, 400, "texts must be a list of strings, even for one text."),
    ],
)
def test_fast_path_limits_match_the_view(setup, body, status, detail):
    _, key = setup

    code, _, content = call(PredictFastPath(Fallback()), key=key, body=body)

    assert code == status
    assert json.loads(content)["detail"] == detail


def test_fast_path_refuses_bad_tokens_and_stopped_endpoints(setup):
    analyst, key = setup
    app = PredictFastPath(Fallback())

    code, headers, content = call(app, key="not-a-token", body={"texts": ["good"]})
    assert (code, headers["WWW-Authenticate"]) == (401, "Token")
    assert json.loads(content) == {"detail": "Invalid token.", "errors": {}}

    deployment_stop(user=analyst, deployment=Deployment.objects.get())
    code, headers, content = call(app, key=key, body={"texts": ["good"]})
    assert (code, headers["Retry-After"]) == (503, "30")
    assert "is stopped" in json.loads(content)["detail"]


def test_prediction_token_limits_hold_on_the_fast_path(setup):
    analyst, _ = setup
    _, key = prediction_token_create(user=analyst, name="shop", slugs=["reviews"])
    app = PredictFastPath(Fallback())

    assert call(app, key=key, body={"texts": ["good"]})[0] == 200
    code, _, content = call(
        app, key=key, body={"texts": ["good"]}, path="/api/v1/deployments/other/predict/"
    )
    assert code == 403
    assert json.loads(content)["detail"] == "This prediction token may not call this endpoint."


@pytest.mark.parametrize(
    ("body", "query", "path"),
    [
        ({"texts": ["good"], "explain": True}, "", "/api/v1/deployments/reviews/predict/"),
        ({"texts": ["good"]}, "explain=true", "/api/v1/deployments/reviews/predict/"),
        (b'{"texts": ["nul \\u0000 here"]}', "", "/api/v1/deployments/reviews/predict/"),
        (b"not json", "", "/api/v1/deployments/reviews/predict/"),
        ({"texts": ["good"]}, "", "/api/v1/deployments/"),
    ],
)
def test_anything_unusual_goes_to_django_with_its_body(setup, body, query, path):
    _, key = setup
    fallback = Fallback()

    code, _, content = call(PredictFastPath(fallback), key=key, body=body, path=path, query=query)

    assert (code, content) == (418, b"django")
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    assert fallback.calls == [(path, raw)]


@pytest.mark.parametrize("length", ["abc", "1e3", " "])
def test_a_content_length_that_is_not_a_number_goes_to_django(setup, length):
    _, key = setup
    fallback = Fallback()
    raw = json.dumps({"texts": ["good"]}).encode()
    environ = {
        **WSGI_BASICS,
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/v1/deployments/reviews/predict/",
        "QUERY_STRING": "",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": length,
        "HTTP_AUTHORIZATION": f"Token {key}",
        "wsgi.input": io.BytesIO(raw),
    }
    answer = []

    content = b"".join(PredictFastPath(fallback)(environ, lambda status, _: answer.append(status)))

    assert (answer, content) == (["418 I'm a teapot"], b"django")
    assert len(fallback.calls) == 1


def test_a_host_django_refuses_goes_to_django(setup):
    """Not in ALLOWED_HOSTS: Django answers it (CommonMiddleware's 400), not the fast path."""
    _, key = setup
    fallback = Fallback()

    code, _, content = call(
        PredictFastPath(fallback), key=key, body={"texts": ["good"]}, HTTP_HOST="evil.example"
    )

    assert (code, content) == (418, b"django")
    assert len(fallback.calls) == 1


def test_plain_http_under_ssl_redirect_goes_to_django_and_https_gets_hsts(setup, settings):
    """SECURE_SSL_REDIRECT: a plain-HTTP call is Django's (its redirect); over HTTPS the fast
    answer carries SecurityMiddleware's Strict-Transport-Security header."""
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_HSTS_PRELOAD = False
    _, key = setup
    fallback = Fallback()
    app = PredictFastPath(fallback)

    plain = call(app, key=key, body={"texts": ["good"]})
    secure = call(app, key=key, body={"texts": ["good"]}, **{"wsgi.url_scheme": "https"})

    assert plain[0] == 418
    assert len(fallback.calls) == 1
    assert secure[0] == 200
    assert secure[1]["Strict-Transport-Security"] == "max-age=3600; includeSubDomains"


@pytest.fixture
def short_memory(monkeypatch):
    """Serving memoises endpoints and callers for this long (changes made elsewhere)."""
    from models_app import serving

    for memo in (serving.live_deployments, serving.predict_callers):
        monkeypatch.setattr(memo, "ttl_seconds", 0.5)
        memo.clear()
    yield 0.5
    for memo in (serving.live_deployments, serving.predict_callers):
        memo.clear()


def test_a_repeated_call_asks_the_database_nothing(setup, short_memory):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    _, key = setup
    app = PredictFastPath(Fallback())
    assert call(app, key=key, body={"texts": ["good"]})[0] == 200

    with CaptureQueriesContext(connection) as queries:
        code, _, content = call(app, key=key, body={"texts": ["bad"]})

    assert code == 200
    assert json.loads(content)["version"] == 1
    assert len(queries) == 0


def test_changes_made_by_another_process_take_effect_within_the_memo_time(setup, short_memory):
    """A stop or a revoked token written straight to the database (as another process would,
    with no signal here) is seen once the memo expires."""
    import time

    from django.db import connection

    _, key = setup
    app = PredictFastPath(Fallback())
    assert call(app, key=key, body={"texts": ["good"]})[0] == 200

    Deployment.objects.filter(slug="reviews").update(status=Deployment.Status.STOPPED)
    time.sleep(short_memory + 0.05)
    code, _, content = call(app, key=key, body={"texts": ["good"]})
    assert code == 503
    assert "is stopped" in json.loads(content)["detail"]

    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {Token._meta.db_table} WHERE key = %s",  # noqa: S608
            [token_key_digest(key)],
        )
    time.sleep(short_memory + 0.05)
    code, _, content = call(app, key=key, body={"texts": ["good"]})
    assert code == 401
    assert json.loads(content)["detail"] == "Invalid token."


def test_changes_made_in_this_process_take_effect_at_once(setup):
    analyst, key = setup
    app = PredictFastPath(Fallback())
    _, token_key = prediction_token_create(user=analyst, name="shop", slugs=["reviews"])
    assert call(app, key=key, body={"texts": ["good"]})[0] == 200
    assert call(app, key=token_key, body={"texts": ["good"]})[0] == 200

    from models_app.models import PredictionToken

    PredictionToken.objects.get(name="shop").delete()
    Token.objects.filter(key=token_key_digest(key)).delete()

    assert call(app, key=token_key, body={"texts": ["good"]})[0] == 401
    assert call(app, key=key, body={"texts": ["good"]})[0] == 401
