"""The serving worker (gunicorn gthread reading a kept-alive connection's next request in the
same thread) answers every request: sequential calls on one connection, pipelined requests,
and more connections than threads. It relies on gunicorn internals: with the pinned gunicorn
the fast path is taken in a real gunicorn process (so an upgrade that breaks it fails here),
and without them the worker serves as the stock gthread worker."""

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

APP = """
from lepton_web.gunicorn_worker import answering_a_kept_connection

def app(environ, start_response):
    if environ["PATH_INFO"] == "/kept":
        body = b"kept" if answering_a_kept_connection() else b"handed"
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


# Renames an internal the worker uses before the workers start, as a gunicorn upgrade might:
# gunicorn's own code still reaches it (through instances), the class no longer has the name.
WITHOUT_INTERNALS = """
from gunicorn.workers.gthread import TConn

TConn.wait_for_readable = TConn.wait_for_data
del TConn.wait_for_data


def _renamed(self, name):
    if name == "wait_for_data":
        return self.wait_for_readable
    raise AttributeError(name)


TConn.__getattr__ = _renamed
"""


def _gunicorn(folder: Path, *extra: str):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (folder / "gunicorn.log").open("wb")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "echo_app:app",
            "--chdir",
            str(folder),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            "2",
            "--worker-class",
            "lepton_web.gunicorn_worker.ServingThreadWorker",
            *extra,
        ],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("gunicorn with the serving worker did not start")
            time.sleep(0.2)
    return process, port, log


def _stop(process, log) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("echo")
    (folder / "echo_app.py").write_text(APP)
    process, port, log = _gunicorn(folder)
    yield port
    _stop(process, log)


@pytest.fixture(scope="module")
def stock_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("echo-stock")
    (folder / "echo_app.py").write_text(APP)
    (folder / "without_internals.py").write_text(WITHOUT_INTERNALS)
    process, port, log = _gunicorn(folder, "--config", str(folder / "without_internals.py"))
    yield port, folder / "gunicorn.log"
    _stop(process, log)


def _kept_answers(port: int, calls: int = 20) -> list[bytes]:
    """Calls in a loop over one kept-alive connection: how each was read."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    answers = []
    for _ in range(calls):
        connection.request("GET", "/kept")
        response = connection.getresponse()
        assert response.status == 200
        answers.append(response.read())
    connection.close()
    return answers


def test_the_pinned_gunicorn_has_every_internal_the_worker_uses():
    import gunicorn

    from lepton_web.gunicorn_worker import missing_internals

    assert missing_internals() == []
    requirements = (Path(__file__).resolve().parents[2] / "requirements.txt").read_text()
    assert f"gunicorn=={gunicorn.__version__}" in requirements.splitlines()


def test_a_kept_alive_connections_next_requests_are_read_by_the_same_thread(server):
    answers = _kept_answers(server)

    assert answers[0] == b"handed"  # a new connection comes through the poller
    # Calls that follow at once are read by the thread that answered: the fast path works
    # with this gunicorn (a loaded machine may send a few back through the poller).
    assert answers.count(b"kept") >= 1, answers


def test_without_the_internals_it_serves_as_the_stock_gthread_worker(stock_server):
    port, log = stock_server

    answers = _kept_answers(port)

    assert answers == [b"handed"] * 20  # every request answered, none by the fast path
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("POST", "/echo", body=b"still answered")
    assert connection.getresponse().read() == b"still answered"
    connection.close()
    logged = log.read_text()
    assert "lacks TConn.wait_for_data; serving as the stock gthread worker" in logged


def test_sequential_calls_on_one_connection_are_all_answered(server):
    connection = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
    for index in range(30):
        connection.request("POST", "/echo", body=f"call {index}".encode())
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, f"call {index}".encode())
        if index % 10 == 9:
            time.sleep(0.12)  # longer than the thread keeps reading: back through the poller
    connection.close()


def test_pipelined_requests_are_both_answered(server):
    with socket.create_connection(("127.0.0.1", server), timeout=10) as sock:
        sock.sendall(
            b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        received = b""
        while received.count(b"HTTP/1.1 200") < 2 or not received.endswith(b"/second"):
            chunk = sock.recv(4096)
            assert chunk, received
            received += chunk
    assert received.index(b"/first") < received.index(b"/second")


def test_more_connections_than_threads_are_all_answered(server):
    answers, problems = [], []

    def caller(number):
        connection = http.client.HTTPConnection("127.0.0.1", server, timeout=20)
        for index in range(10):
            body = f"{number}-{index}".encode()
            try:
                connection.request("POST", "/echo", body=body)
                response = connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as error:
                problems.append(repr(error))
                return
            (answers if data == body else problems).append(data)
        connection.close()

    callers = [threading.Thread(target=caller, args=(n,)) for n in range(6)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join()

    assert problems == []
    assert len(answers) == 60
