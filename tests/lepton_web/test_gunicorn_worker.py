"""The serving worker (gunicorn gthread reading a kept-alive connection's next request in the
same thread) answers every request: sequential calls on one connection, pipelined requests,
and more connections than threads."""

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
def app(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("echo")
    (folder / "echo_app.py").write_text(APP)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
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
        ],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
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
    yield port
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


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
