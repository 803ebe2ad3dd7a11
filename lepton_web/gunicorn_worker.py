"""gunicorn's threaded worker, with the next request on a kept-alive connection read by the
thread that answered the previous one.

In the stock ``gthread`` worker every request on a kept-alive connection crosses threads twice
more: the main thread's poller sees the socket readable and hands it to a pool thread, and the
pool thread hands the finished connection back to the main thread, which registers it with the
poller again. On a busy machine each hand-off waits for the scheduler (and the GIL), which
costs more than the whole framework on a short predict call. Here a pool thread that has just
answered waits up to KEEP_READING_SECONDS for the client's next request and answers it
directly, so a client that calls in a loop over one connection (a connection pool, the usual
way to call an API) pays no hand-off at all. The thread gives the connection back to the
poller, as before, when nothing comes, when other connections wait for a thread, or when the
worker stops. Use it with ``--worker-class lepton_web.gunicorn_worker.ServingThreadWorker``.

It leans on gunicorn's internals (``TConn.wait_for_data`` and ``data_ready``, the parser's
read-ahead buffer, the thread pool's queue), which is why requirements.txt pins gunicorn
exactly. If an upgrade takes one of them away, each worker says so once in the log and serves
as the stock ``gthread`` worker: slower on kept-alive connections, never broken.
tests/lepton_web/test_gunicorn_worker.py checks in a real gunicorn process that the fast path
is taken, so such an upgrade fails CI rather than going quietly slow.
"""

from __future__ import annotations

import threading
import time

import gunicorn
from gunicorn.http.unreader import Unreader
from gunicorn.workers.gthread import TConn, ThreadWorker

KEEP_READING_SECONDS = 0.05
_SLICE_SECONDS = 0.005
_answering = threading.local()


def missing_internals(worker: ThreadWorker | None = None) -> list[str]:
    """The gunicorn internals this worker uses that the installed gunicorn lacks (empty when
    all are there); with `worker`, its thread pool's queue as well."""
    missing = []
    if not callable(getattr(TConn, "wait_for_data", None)):
        missing.append("TConn.wait_for_data")
    if "data_ready" not in TConn.__init__.__code__.co_names:
        missing.append("TConn.data_ready")
    if "buf" not in Unreader.__init__.__code__.co_names:
        missing.append("Unreader.buf")
    if not callable(getattr(ThreadWorker, "handle", None)):
        missing.append("ThreadWorker.handle")
    if worker is not None and not hasattr(getattr(worker, "tpool", None), "_work_queue"):
        missing.append("ThreadPoolExecutor._work_queue")
    return missing


def answering_a_kept_connection() -> bool:
    """True inside a request this worker read itself on a kept-alive connection (the fast
    path); for tests and diagnostics."""
    return getattr(_answering, "kept", False)


class ServingThreadWorker(ThreadWorker):
    keep_reading = True

    def get_thread_pool(self):
        pool = super().get_thread_pool()
        self.tpool = pool
        missing = missing_internals(self)
        if missing:
            self._fall_back(", ".join(missing))
        return pool

    def _fall_back(self, what: str) -> None:
        self.keep_reading = False
        self.log.warning(
            "lepton serving worker: gunicorn %s lacks %s; serving as the stock gthread worker "
            "(pin the gunicorn version of requirements.txt to get the faster path back)",
            gunicorn.__version__,
            what,
        )

    def handle(self, conn):
        keep = super().handle(conn)
        if not self.keep_reading:
            return keep
        deadline = time.monotonic() + KEEP_READING_SECONDS
        while keep is True and self.alive:
            try:
                read_ahead = conn.parser.unreader.buf.getvalue()
                if not read_ahead and not self._next_request_arrives(conn, deadline):
                    return keep  # back to the poller, as the stock worker does
            except AttributeError as error:  # an internal went away: the stock behaviour
                self._fall_back(str(error))
                return keep
            _answering.kept = True
            try:
                keep = super().handle(conn)
            finally:
                _answering.kept = False
            deadline = time.monotonic() + KEEP_READING_SECONDS
        return keep

    def _next_request_arrives(self, conn, deadline: float) -> bool:
        """Wait in short slices, giving up as soon as other connections queue for a thread."""
        while self.alive and not self._others_waiting():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            conn.data_ready = False
            if conn.wait_for_data(min(_SLICE_SECONDS, remaining)):
                return True
        return False

    def _others_waiting(self) -> bool:
        return bool(self.tpool._work_queue.qsize())
