"""Continuous batching: requests join the running batch between decode calls.

Requests wait in a bounded queue. One worker thread owns the device. Before each decode call
it moves whatever is queued into the batch's free slots (up to `max_batch` rows running: no
timer waits for more to arrive, so a lone request starts right away), then decodes a few
tokens for every running row and answers the rows that ended, whose slots take the next
requests at the following call. A full queue refuses new requests (the API answers 429)
instead of letting latency grow without bound. `max_batch=1` turns batching off.

The batch belongs to one model (`Session`). When a newer one is loaded, the worker stops
admitting, lets the running rows finish on the model they started with, then opens a session
on the new model for what is queued.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
Item_contra = TypeVar("Item_contra", contravariant=True)


class QueueFull(Exception):  # noqa: N818 - reads as `batcher.QueueFull`, like queue.Full.
    """The queue holds max_queue requests already."""


class Closed(Exception):  # noqa: N818 - reads as `batcher.Closed`.
    """The batcher drains or has stopped: it takes no new requests."""


class Session(Protocol[Item_contra, Result]):
    """Rows decoding together on one model."""

    @property
    def current(self) -> bool:
        """Whether new rows may join (False once a newer model is served)."""
        ...

    def admit(self, items: Sequence[tuple[int, Item_contra]]) -> dict[int, Result]:
        """Start the keyed items; those answered at once (they do not fit this model), by
        key. The rest run until `step` returns them."""
        ...

    def step(self) -> dict[int, Result]:
        """Decode a few tokens for every running row; the rows that ended, by key."""
        ...


@dataclass
class _Pending(Generic[Item, Result]):
    item: Item
    future: Future[Result]


class Batcher(Generic[Item, Result]):
    """A bounded queue and the worker thread that runs its requests in a continuous batch.

    `open_session()` gives a session on the model served now. An exception from it fails the
    queued requests; one from `admit` or `step` fails every running request (the batch on the
    device may be half-updated), and the next requests get a new session.
    """

    def __init__(
        self,
        open_session: Callable[[], Session[Item, Result]],
        *,
        max_batch: int,
        max_queue: int,
        on_step: Callable[[int], None] | None = None,
        name: str = "mlstack-batcher",
    ) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError(
                f"max_batch {max_batch} and max_queue {max_queue} must both be at least 1"
            )
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._open_session = open_session
        self._on_step = on_step
        self._queue: deque[_Pending[Item, Result]] = deque()
        self._running: dict[int, _Pending[Item, Result]] = {}
        self._keys = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._work, name=name, daemon=True)
        self._worker.start()

    @property
    def depth(self) -> int:
        """Requests waiting for a slot."""
        return len(self._queue)

    @property
    def running(self) -> int:
        """Requests decoding on the device now."""
        return len(self._running)

    @property
    def closed(self) -> bool:
        """Whether `close` was called: no new requests are taken."""
        return self._closed

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing running."""
        with self._cond:
            return not self._queue and not self._running

    def submit(self, item: Item) -> Future[Result]:
        """Queue `item`; its future resolves when its row ends. Raises QueueFull or Closed.
        Cancelling the future before its row starts leaves it out."""
        future: Future[Result] = Future()
        with self._cond:
            if self._closed:
                raise Closed("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"the queue is full ({self.max_queue} requests wait)")
            self._queue.append(_Pending(item, future))
            self._cond.notify()
        return future

    def close(self, timeout_s: float | None = None) -> bool:
        """Take no new requests, finish the queued and running ones, stop the worker;
        whether it finished within `timeout_s`."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join(timeout_s)
        return not self._worker.is_alive()

    def _take(self, session: Session[Item, Result] | None) -> list[tuple[int, Item]] | None:
        """Wait for work; move what fits from the queue to the running rows (none while the
        session is stale). None when closed and nothing is left."""
        with self._cond:
            while not self._queue and not self._running and not self._closed:
                self._cond.wait()
            if not self._queue and not self._running:
                return None
            taken = []
            if session is not None and session.current:
                while self._queue and len(self._running) < self.max_batch:
                    pending = self._queue.popleft()
                    # False: the caller gave up on it (its client went away) before it ran.
                    if pending.future.set_running_or_notify_cancel():
                        key = next(self._keys)
                        self._running[key] = pending
                        taken.append((key, pending.item))
            return taken

    def _finish(self, results: dict[int, Result]) -> None:
        with self._cond:
            done = [(self._running.pop(key), result) for key, result in results.items()]
        for pending, result in done:
            pending.future.set_result(result)

    def _fail(self, keys: Sequence[int], err: BaseException) -> None:
        with self._cond:
            failed = [self._running.pop(key) for key in keys if key in self._running]
        for pending in failed:
            pending.future.set_exception(err)

    def _work(self) -> None:
        session: Session[Item, Result] | None = None
        while True:
            # At the start, after a failure, or between models: nothing runs (a failure failed
            # the running rows), so a new session loses no row.
            if self._queue and (session is None or (not session.current and not self._running)):
                try:
                    session = self._open_session()
                except BaseException as err:  # Handed to every queued caller.
                    self._fail_queued(err)
                    session = None
                    continue
            taken = self._take(session)
            if taken is None:
                return
            if session is None:
                continue
            try:
                if taken:
                    self._finish(session.admit(taken))
                if self._running:
                    if self._on_step is not None:
                        self._on_step(len(self._running))
                    self._finish(session.step())
            except BaseException as err:  # Handed to every running caller; a new session next.
                self._fail(list(self._running), err)
                session = None

    def _fail_queued(self, err: BaseException) -> None:
        with self._cond:
            queued = list(self._queue)
            self._queue.clear()
        for pending in queued:
            if pending.future.set_running_or_notify_cancel():
                pending.future.set_exception(err)
