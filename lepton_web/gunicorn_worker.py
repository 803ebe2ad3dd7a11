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
"""

from __future__ import annotations

import time

from gunicorn.workers.gthread import ThreadWorker

KEEP_READING_SECONDS = 0.05
_SLICE_SECONDS = 0.005


class ServingThreadWorker(ThreadWorker):
    def handle(self, conn):
        keep = super().handle(conn)
        deadline = time.monotonic() + KEEP_READING_SECONDS
        while keep is True and self.alive:
            read_ahead = conn.parser.unreader.buf.getvalue()
            if not read_ahead and not self._next_request_arrives(conn, deadline):
                return keep  # back to the poller, as the stock worker does
            keep = super().handle(conn)
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
        queue = getattr(self.tpool, "_work_queue", None)
        return bool(queue is not None and queue.qsize())
