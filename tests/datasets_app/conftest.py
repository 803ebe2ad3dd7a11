"""Fixtures shared by the dataset tests."""

import pytest

from tests.conftest import broker_for_this_process


@pytest.fixture
def redis_broker(redis_url):
    """Services publish jobs to the Redis test broker; tests run them here."""
    with broker_for_this_process(redis_url):
        yield


@pytest.fixture
def analyst_client(client, analyst):
    client.force_login(analyst)
    return client
