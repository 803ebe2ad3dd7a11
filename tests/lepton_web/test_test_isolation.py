"""Two test runs on one Redis and one PostgreSQL server do not meet (issue 9, item 25)."""

import os
import re

from django.db import connection

from tests.conftest import _redis_url
from tests.paths import ROOT


def test_queue_redis_is_the_database_given_in_test_redis_url(queue_redis):
    url, client = queue_redis

    assert url == _redis_url()
    assert client.connection_pool.connection_kwargs["db"] == int(_redis_url().rsplit("/", 1)[1])


def test_no_test_picks_a_redis_database_of_its_own():
    """Only ``TEST_REDIS_URL`` (and unreachable ports for broker-down tests) may appear."""
    offenders = []
    for path in (ROOT / "tests").rglob("*.py"):
        text = path.read_text()
        for match in re.finditer(r"_replace\(path=|redis://[\w.-]+:(\d+)/\d+|\bdb=\d+", text):
            if match.group(1) == "1":  # redis://127.0.0.1:1/0: nothing listens on port 1
                continue
            if (
                path.name == "conftest.py"
                and "TEST_REDIS_URL" in text[match.start() - 60 : match.start()]
            ):
                continue  # the documented default of TEST_REDIS_URL
            offenders.append(f"{path.relative_to(ROOT)}: {match.group(0)}")

    assert offenders == []


def test_tests_publish_to_the_test_redis_or_the_filesystem_broker():
    """Not to the console's broker in CELERY_BROKER_URL (CI sets redis://.../14)."""
    from lepton_web.celery import app as celery_app

    broker = celery_app.conf.broker_url

    assert broker == _redis_url() or broker.startswith("filesystem://")
    assert os.environ.get("CELERY_BROKER_URL", _redis_url()) in (_redis_url(), broker)


def test_test_database_is_named_for_this_run(db):
    name = connection.settings_dict["NAME"]

    assert name.removesuffix(".sqlite3").endswith(f"_run{os.getpid()}")
