"""Micro-batching: concurrent requests to one model are run together, grouped by length.

No thread of its own: the caller that finds the model idle becomes the *leader* and runs in its
own thread, so a lone request pays no hand-off between threads (under the GIL a hand-off can
cost milliseconds on a busy machine). Callers that arrive while the model is busy queue up.
When the leader's batch is done it answers everyone in it and, if requests are waiting,
promotes the oldest waiting caller to lead the next batch. A leader that finds others already
waiting waits up to `window_seconds` for more, up to `max_texts`; the predictor then sorts the
texts by length and cuts batches under a token budget, and each caller gets its own rows
(Triton's dynamic batching, BentoML's adaptive batching and text-embeddings-inference's
token-budget batches group requests the same way).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence

DEFAULT_WINDOW_SECONDS = 0.002
DEFAULT_MAX_TEXTS = 256


class _Request:
    __slots__ = ("done", "error", "lead", "results", "texts")

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = texts
        self.results: list[dict] | None = None
        self.error: BaseException | None = None
        self.lead = False
        self.done = threading.Event()


class MicroBatcher:
    """`submit(texts)` from any thread returns that request's results, computed in batches."""

    def __init__(
        self,
        predictor,
        *,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        max_texts: int = DEFAULT_MAX_TEXTS,
    ) -> None:
        self.predictor = predictor
        self.window_seconds = window_seconds
        self.max_texts = max_texts
        self._pending: deque[_Request] = deque()
        self._busy = False
        self._closed = False
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)

    def submit(self, texts: Sequence[str], *, timeout: float | None = None) -> list[dict]:
        request = _Request(list(texts))
        with self._lock:
            if self._closed:
                closed = True
            else:
                closed = False
                self._pending.append(request)
                if not self._busy:
                    self._busy = True
                    request.lead = True
                else:
                    self._arrived.notify_all()
        if closed:
            # Unloaded (the endpoint moved on) after this caller picked it: run it here.
            return self.predictor.predict(request.texts)
        while True:
            if request.lead:
                self._lead(first=request)
                request.lead = False
            if request.done.is_set():
                break
            if not request.done.wait(timeout):
                raise TimeoutError("The model did not answer in time.")
        if request.error is not None:
            raise request.error
        return request.results

    def close(self) -> None:
        """Refuse new queueing (later callers run inline); queued requests still get answers."""
        with self._lock:
            self._closed = True

    def _take(self, first: _Request) -> list[_Request]:
        """Under the lock: the batch this leader runs, `first` (which may be queued) included."""
        batch: list[_Request] = []
        count = 0
        if self.window_seconds > 0 and len(self._pending) > 1:
            # Others are already waiting: the model is in demand, give more a moment to arrive.
            deadline = time.monotonic() + self.window_seconds
            while sum(len(r.texts) for r in self._pending) < self.max_texts:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.wait(remaining)
        while self._pending and (
            not batch or count + len(self._pending[0].texts) <= self.max_texts
        ):
            item = self._pending.popleft()
            batch.append(item)
            count += len(item.texts)
        if first not in batch:  # the leader's own request always runs in its own batch
            self._pending.remove(first)
            batch.insert(0, first)
        return batch

    def _lead(self, *, first: _Request) -> None:
        with self._lock:
            batch = self._take(first)
        try:
            self._run(batch)
        finally:
            with self._lock:
                if self._pending:
                    successor = self._pending[0]
                    successor.lead = True
                    successor.done.set()  # wakes it; it sees `lead` and runs the next batch
                else:
                    self._busy = False

    def _run(self, batch: list[_Request]) -> None:
        texts = [text for request in batch for text in request.texts]
        try:
            results = self.predictor.predict(texts)
        except BaseException as error:  # every waiting caller must get an answer
            if len(batch) == 1:
                batch[0].error = error
                batch[0].done.set()
                return
            # One bad request must not fail its neighbours: run each alone.
            for request in batch:
                self._run([request])
            return
        position = 0
        for request in batch:
            request.results = results[position : position + len(request.texts)]
            position += len(request.texts)
            request.done.set()
