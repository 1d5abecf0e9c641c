"""Dynamic batching: concurrent requests share one batched generate call.

Requests wait in a bounded queue. One worker thread owns the device: whenever it is idle it
takes everything queued, up to `max_batch`, at once (no timer waits for more to arrive: a lone
request runs right away, and requests that arrive during a call form the next batch). A full
queue refuses new requests (the API answers 429) instead of letting latency grow without
bound. `max_batch=1` turns batching off.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class QueueFull(Exception):  # noqa: N818 - reads as `batcher.QueueFull`, like queue.Full.
    """The queue holds max_queue requests already."""


class Closed(Exception):  # noqa: N818 - reads as `batcher.Closed`.
    """The batcher drains or has stopped: it takes no new requests."""


@dataclass
class _Pending(Generic[Item, Result]):
    item: Item
    future: Future[Result]


class Batcher(Generic[Item, Result]):
    """A bounded queue and the worker thread that runs `complete` on batches of it.

    `complete(items)` returns one result per item, in order; an exception fails the whole
    batch's futures with it.
    """

    def __init__(
        self,
        complete: Callable[[Sequence[Item]], Sequence[Result]],
        *,
        max_batch: int,
        max_queue: int,
        name: str = "mlstack-batcher",
    ) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError(
                f"max_batch {max_batch} and max_queue {max_queue} must both be at least 1"
            )
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._complete = complete
        self._queue: deque[_Pending[Item, Result]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._running = 0
        self._worker = threading.Thread(target=self._work, name=name, daemon=True)
        self._worker.start()

    @property
    def depth(self) -> int:
        """Requests waiting for a batch."""
        return len(self._queue)

    @property
    def running(self) -> int:
        """Requests in the batch on the device now."""
        return self._running

    @property
    def closed(self) -> bool:
        """Whether `close` was called: no new requests are taken."""
        return self._closed

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch running."""
        with self._cond:
            return not self._queue and not self._running

    def submit(self, item: Item) -> Future[Result]:
        """Queue `item`; its future resolves when its batch has run. Raises QueueFull or
        Closed. Cancelling the future before its batch starts leaves it out of the batch."""
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

    def _take(self) -> list[_Pending[Item, Result]] | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            taken = []
            while self._queue and len(taken) < self.max_batch:
                pending = self._queue.popleft()
                # False: the caller gave up on it (its client went away) before it ran.
                if pending.future.set_running_or_notify_cancel():
                    taken.append(pending)
            self._running = len(taken)
            return taken

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            if not batch:
                continue
            try:
                results = self._complete([pending.item for pending in batch])
            except BaseException as err:  # Handed to every caller of the batch.
                for pending in batch:
                    pending.future.set_exception(err)
            else:
                for pending, result in zip(batch, results, strict=True):
                    pending.future.set_result(result)
            finally:
                with self._cond:
                    self._running = 0
