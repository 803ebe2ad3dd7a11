"""Micro-batching: concurrent requests to one model are run together, grouped by length.

One background thread per model takes requests from a queue. When a request arrives alone it
runs at once (no added latency for a lone caller); when others are already waiting, the thread
waits up to `window_seconds` for more, up to `max_texts`, then runs them as length-sorted
batches (the predictor sorts by length and cuts batches under a token budget) and hands each
caller its own rows (Triton's dynamic batching, BentoML's adaptive batching and
text-embeddings-inference's token-budget batches work this way).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

DEFAULT_WINDOW_SECONDS = 0.002
DEFAULT_MAX_TEXTS = 256


@dataclass
class _Request:
    texts: Sequence[str]
    future: Future = field(default_factory=Future)


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
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._closed = False
        self._close_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="lepton-microbatch", daemon=True)
        self._thread.start()

    def submit(self, texts: Sequence[str], *, timeout: float | None = None) -> list[dict]:
        request = _Request(texts=list(texts))
        with self._close_lock:
            closed = self._closed
            if not closed:
                self._queue.put(request)
        if closed:
            # Unloaded (the endpoint moved on) after this caller picked it: finish here.
            return self.predictor.predict(request.texts)
        return request.future.result(timeout=timeout)

    def close(self) -> None:
        """Stop after the requests already queued (they still get their answers)."""
        with self._close_lock:
            if not self._closed:
                self._closed = True
                self._queue.put(None)

    def _collect(self, first: _Request) -> tuple[list[_Request], bool]:
        requests = [first]
        count = len(first.texts)
        busy = not self._queue.empty()
        deadline = time.monotonic() + (self.window_seconds if busy else 0.0)
        stop = False
        while count < self.max_texts:
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if item is None:
                stop = True
                break
            requests.append(item)
            count += len(item.texts)
        return requests, stop

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            requests, stop = self._collect(first)
            self._run(requests)
            if stop:
                # Answer whatever is still queued, then end.
                leftover = []
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        leftover.append(item)
                if leftover:
                    self._run(leftover)
                return

    def _run(self, requests: list[_Request]) -> None:
        texts = [text for request in requests for text in request.texts]
        try:
            results = self.predictor.predict(texts)
        except BaseException as error:  # every waiting caller must get an answer
            if len(requests) == 1:
                requests[0].future.set_exception(error)
                return
            # One bad request must not fail its neighbours: run each alone.
            for request in requests:
                self._run([request])
            return
        position = 0
        for request in requests:
            request.future.set_result(results[position : position + len(request.texts)])
            position += len(request.texts)
