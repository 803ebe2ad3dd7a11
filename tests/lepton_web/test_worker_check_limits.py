"""A user has at most one worker check waiting or running per queue (issue 9, item 24).

A schema fuzz once queued 125 checks for one analyst, delaying real imports by a minute.
"""

import pytest
from django.core.exceptions import ValidationError

from lepton_web.models import WorkerCheck
from lepton_web.services import worker_check_start
from tests.conftest import broker_for_this_process


@pytest.fixture
def broker(queue_redis):
    url, client = queue_redis
    with broker_for_this_process(url):
        yield client


def test_second_check_on_the_same_queue_is_refused_while_the_first_waits(make_user, broker):
    user = make_user("analyst")
    first = worker_check_start(user=user, queue="default")

    with pytest.raises(ValidationError) as caught:
        worker_check_start(user=user, queue="default")

    assert caught.value.messages == [
        f"Your worker check #{first.pk} on the default queue is still queued. "
        "Wait for it to finish before starting another one there."
    ]
    assert list(WorkerCheck.objects.values_list("pk", flat=True)) == [first.pk]
    assert broker.llen("default") == 1


def test_second_check_is_refused_while_the_first_runs(make_user, broker):
    user = make_user("analyst")
    first = worker_check_start(user=user, queue="gpu")
    assert first.claim()

    with pytest.raises(ValidationError, match=r"is still running\."):
        worker_check_start(user=user, queue="gpu")

    assert WorkerCheck.objects.count() == 1


def test_a_new_check_may_start_once_the_last_one_finished(make_user, broker):
    user = make_user("analyst")
    first = worker_check_start(user=user, queue="default")
    assert first.claim()
    assert first.succeed()

    second = worker_check_start(user=user, queue="default")

    assert second.pk != first.pk
    assert WorkerCheck.objects.filter(status="queued").count() == 1


def test_other_users_and_other_queues_are_not_held_up(make_user, broker):
    user, colleague = make_user("analyst"), make_user("analyst")
    worker_check_start(user=user, queue="default")

    worker_check_start(user=colleague, queue="default")
    worker_check_start(user=user, queue="gpu")

    assert WorkerCheck.objects.count() == 3


def test_api_refuses_a_second_pending_check_with_a_plain_400(api_client_as, broker):
    api = api_client_as("analyst")
    first = api.post("/api/v1/worker-checks/", {"queue": "default"}, format="json")
    assert first.status_code == 201

    response = api.post("/api/v1/worker-checks/", {"queue": "default"}, format="json")

    assert response.status_code == 400
    message = (
        f"Your worker check #{first.json()['id']} on the default queue is still queued. "
        "Wait for it to finish before starting another one there."
    )
    assert response.json() == {"detail": message, "errors": {"non_field_errors": [message]}}
    assert WorkerCheck.objects.count() == 1


def test_check_workers_button_twice_flashes_why_and_queues_nothing_more(client_as, broker):
    client = client_as("analyst")
    client.post("/worker-checks/")
    assert WorkerCheck.objects.count() == 2  # one per queue

    response = client.post("/worker-checks/", follow=True)

    assert response.status_code == 200
    assert (
        "Your worker checks on every queue are still waiting or running. "
        "Wait for them to finish before starting more."
    ) in response.content.decode()
    assert WorkerCheck.objects.count() == 2
