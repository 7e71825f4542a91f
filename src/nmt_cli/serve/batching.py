"""The translation queue: requests from many connections, translated in batches by one thread.

One worker thread loads the engine and is the only one that ever calls it, so TensorFlow and
CTranslate2 see a single caller. Requests wait in a bounded queue; the worker takes the oldest,
then every other waiting request that searches the same way (beam size, n-best, attention), up
to `batch_lines` lines, waiting `BATCH_WAIT` after the oldest arrived for more to join. Lines of
many requests thus go to the engine as one batch, which is how it translates fastest.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nmt_cli.translation import Translation, Translator

BATCH_WAIT = 0.003  # seconds the oldest request waits for others to join its batch


class QueueFull(Exception):
    """As many lines as allowed are waiting: the client should retry a little later."""


class NotReady(Exception):
    """The model is still loading, failed to load, or the server is stopping."""


@dataclass(frozen=True)
class Search:
    """How a request's lines are searched; only requests alike share a batch."""

    beam_size: int = 5
    n_best: int = 1
    attention: bool = False


@dataclass
class _Request:
    lines: list[str]
    search: Search
    arrived: float = field(default_factory=time.monotonic)
    answer: Future = field(default_factory=Future)


class TranslationQueue:
    """`submit` lines from any thread; one worker thread translates them with the `Translator` that
    `load` returns (called on that thread)."""

    def __init__(
        self,
        load: Callable[[], Translator],
        batch_lines: int,
        queue_lines: int,
        on_ready: Callable[[Translator], None] | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
    ):
        self._load, self.batch_lines, self.queue_lines = load, batch_lines, queue_lines
        self._on_ready, self._on_failure = on_ready, on_failure
        self._waiting: list[_Request] = []
        self._changed = threading.Condition()
        self._stopping = False
        self._worker = threading.Thread(target=self._work, name="translation-worker", daemon=True)
        self.state = "loading"  # then "ready", or "failed" with `failure` set
        self.failure: BaseException | None = None
        self.translator: Translator | None = None
        self.translating = 0  # lines in the batch under way
        self.batches = self.translated = 0  # batches and lines translated so far

    @property
    def waiting_lines(self) -> int:
        return sum(len(request.lines) for request in self._waiting)

    def start(self) -> None:
        """Load the model on the worker thread, then translate as requests come."""
        self._worker.start()

    def submit(self, lines: list[str], search: Search) -> Future[list[Translation]]:
        """A future of the translations of `lines`, in order. Raises `NotReady` or `QueueFull`."""
        with self._changed:
            if self.state != "ready" or self._stopping:
                raise NotReady(self._not_ready_reason())
            if self.waiting_lines >= self.queue_lines:
                raise QueueFull(f"{self.waiting_lines} lines are waiting to be translated, as many as allowed")
            request = _Request(lines, search)
            self._waiting.append(request)
            self._changed.notify()
        return request.answer

    def _not_ready_reason(self) -> str:
        if self._stopping:
            return "the server is stopping"
        if self.state == "failed":
            return f"the model failed to load: {self.failure}"
        return "the model is loading"

    def stop(self) -> None:
        """Translate what is waiting, then end the worker."""
        with self._changed:
            self._stopping = True
            self._changed.notify()
        if self._worker.is_alive():
            self._worker.join()

    def _work(self) -> None:
        try:
            self.translator = self._load()
        except BaseException as error:  # noqa: BLE001 - whatever stops the load is reported, not lost in a thread
            self.failure, self.state = error, "failed"
            if self._on_failure is not None:
                self._on_failure(error)
            return
        self.state = "ready"
        if self._on_ready is not None:
            self._on_ready(self.translator)
        while (batch := self._next_batch()) is not None:
            self._translate(batch)

    def _next_batch(self) -> list[_Request] | None:
        free_since = time.monotonic()
        with self._changed:
            while not self._waiting:
                if self._stopping:
                    return None
                self._changed.wait()
            oldest = self._waiting[0]
            # Clients answered by the last batch are sending their next requests: wait for them too.
            deadline = max(oldest.arrived, free_since) + BATCH_WAIT
            while not self._stopping:
                alike = sum(len(r.lines) for r in self._waiting if r.search == oldest.search)
                left = deadline - time.monotonic()
                if alike >= self.batch_lines or left <= 0:
                    break
                self._changed.wait(left)
            batch, lines = [], 0
            for request in list(self._waiting):
                if request.search != oldest.search:
                    continue
                if batch and lines + len(request.lines) > self.batch_lines:
                    break
                batch.append(request)
                lines += len(request.lines)
                self._waiting.remove(request)
            self.translating = lines
            return batch

    def _translate(self, batch: list[_Request]) -> None:
        search = batch[0].search
        lines = [line for request in batch for line in request.lines]
        try:
            results = list(
                self.translator.translate(lines, search.beam_size, search.n_best, attention=search.attention)
            )
        except Exception as error:  # noqa: BLE001 - each request hears why its batch failed
            for request in batch:
                request.answer.set_exception(error)
        else:
            start = 0
            for request in batch:
                request.answer.set_result(results[start : start + len(request.lines)])
                start += len(request.lines)
        finally:
            self.translating = 0
            self.batches += 1
            self.translated += len(lines)
