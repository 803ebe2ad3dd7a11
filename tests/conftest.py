"""Shared fixtures. Real services only: PostgreSQL when DATABASE_URL is set, real Redis, real
worker processes. Outside CI a missing service skips the tests that need it, saying how to
start it; with CI=true nothing skips."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection
from kombu import pools as kombu_pools

from lepton_web.celery import app as celery_app
from tests.factories import UserFactory
from tests.paths import ROOT, SHARED_DATA  # noqa: F401 - re-exported for tests

IN_CI = os.environ.get("CI", "").lower() == "true"
REDIS_START = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no'
)
POSTGRES_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"


def skip_or_fail(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: required services never skip)")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _test_settings(settings, tmp_path):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path / "media"},
        },
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix) -> None:
    """Name the test database after this process, so two test runs against one PostgreSQL
    server (or one var/ folder) never create, use or drop each other's database. Django drops
    it when the session ends, as usual."""
    suffix = f"run{os.getpid()}"
    for db_settings in django_settings.DATABASES.values():
        test_settings = db_settings.setdefault("TEST", {})
        name = test_settings.get("NAME")
        if db_settings["ENGINE"] == "django.db.backends.sqlite3":
            if name and name != ":memory:" and suffix not in name:
                path = Path(name)
                test_settings["NAME"] = str(path.with_name(f"{path.stem}_{suffix}{path.suffix}"))
        elif not (name or "").endswith(suffix):
            test_settings["NAME"] = f"{name or 'test_' + db_settings['NAME']}_{suffix}"


@pytest.fixture(scope="session", autouse=True)
def _empty_test_broker_folder():
    """Unit tests publish to the filesystem broker under var/test when no broker is set."""
    broker_dir = Path(django_settings.BROKER_DIR) / "queue"
    if broker_dir.is_dir():
        shutil.rmtree(broker_dir)
        broker_dir.mkdir(parents=True)


@pytest.fixture(scope="session", autouse=True)
def _publish_to_the_test_redis_only():
    """CELERY_BROKER_URL names the console's broker (CI sets one); tests that publish without
    choosing a broker use the Redis database in TEST_REDIS_URL instead, never another one."""
    url = os.environ.get("CELERY_BROKER_URL", "")
    if not url.startswith(("redis://", "rediss://")) or url == _redis_url():
        yield
        return
    with broker_for_this_process(_redis_url()):
        yield


# --- users ------------------------------------------------------------------------------------
@pytest.fixture
def make_user(db):
    def make(role: str | None = "analyst", **kwargs):
        return UserFactory(role=role, **kwargs)

    return make


@pytest.fixture
def analyst(make_user):
    return make_user("analyst")


@pytest.fixture
def client_as(client, make_user):
    """A Django test client logged in as a new user of ``role``."""

    def login(role: str | None):
        user = make_user(role)
        client.force_login(user)
        return client

    return login


@pytest.fixture
def api_client_as(make_user):
    from rest_framework.test import APIClient

    def login(role: str | None):
        api = APIClient()
        api.force_authenticate(make_user(role))
        return api

    return login


# --- real services --------------------------------------------------------------------------
def _redis_url() -> str:
    return os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    url = _redis_url()
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        skip_or_fail(f"Redis at {url} is not reachable ({exc}). Start it with: {REDIS_START}")
    return url


@pytest.fixture
def queue_redis(redis_url):
    """``(url, client)`` for tests that count published messages: the Redis database of
    ``TEST_REDIS_URL`` and no other, emptied before and after (tests run one at a time, and
    ``redis_worker`` stops its workers before the next test)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield redis_url, client
    client.flushdb()


@pytest.fixture
def on_postgres(db):
    if connection.vendor != "postgresql":
        skip_or_fail(
            "This test needs PostgreSQL: set DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres"
            f" (start the server with: {POSTGRES_START})"
        )


@contextmanager
def broker_for_this_process(url: str, transport_options: dict | None = None) -> Iterator[None]:
    """Point this process's Celery app at ``url`` (tests publish where their worker listens)."""
    saved = (celery_app.conf.broker_url, celery_app.conf.broker_transport_options)

    def reset_pools() -> None:
        kombu_pools.reset()  # celery's pools live in kombu's global registry
        celery_app._pool = None
        celery_app.amqp._producer_pool = None

    # Celery reads CELERY_BROKER_URL from the environment before its own configuration, so
    # both must change (CI sets that variable).
    saved_env = os.environ.get("CELERY_BROKER_URL")
    os.environ["CELERY_BROKER_URL"] = url
    celery_app.conf.broker_url = url
    celery_app.conf.broker_transport_options = transport_options or {
        "socket_connect_timeout": 2,
        "socket_timeout": 3,
    }
    reset_pools()
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = saved_env
        celery_app.conf.broker_url, celery_app.conf.broker_transport_options = saved
        reset_pools()


def database_url_of_test_session() -> str:
    """A URL for the database this test session uses (the test database, not the real one)."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class WorkerProcess:
    """A real ``celery worker`` subprocess; ``kill()`` is kill -9 of the whole worker."""

    def __init__(self, *, env: dict, queues: str, log_path: Path):
        self.hostname = f"test-{uuid.uuid4().hex[:8]}@localhost"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "lepton_web",
                "worker",
                "--queues",
                queues,
                "--concurrency",
                "1",
                "--prefetch-multiplier",
                "1",
                "--hostname",
                self.hostname,
                "--loglevel",
                "INFO",
                "--without-mingle",
                "--without-gossip",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_online(self, timeout: float = 60) -> None:
        from lepton_web.models import WorkerPresence

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"Worker exited early:\n{self.log()}")
            presence = WorkerPresence.objects.filter(hostname=self.hostname).first()
            if presence and presence.is_online:
                return
            time.sleep(0.2)
        raise AssertionError(f"Worker never came online:\n{self.log()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def worker_env(**overrides: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
    env.update(overrides)
    return env


@pytest.fixture
def redis_worker(redis_url, transactional_db, tmp_path) -> Iterator:
    """Start real workers on Redis against this session's test database."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    workers: list[WorkerProcess] = []

    def start(queues: str = "default,gpu", **env_overrides: str) -> WorkerProcess:
        env = worker_env(
            DATABASE_URL=database_url_of_test_session(),
            CELERY_BROKER_URL=redis_url,
            LEPTON_VAR_DIR=str(tmp_path / "worker-var"),
            MEDIA_ROOT=str(tmp_path / "media"),  # the test's storage (see _test_settings)
            **env_overrides,
        )
        worker = WorkerProcess(
            env=env, queues=queues, log_path=tmp_path / f"worker{len(workers)}.log"
        )
        workers.append(worker)
        worker.wait_online()
        return worker

    with broker_for_this_process(redis_url):
        yield start
    for worker in workers:
        worker.stop()
