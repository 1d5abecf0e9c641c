"""workloads.serve.batcher: whatever is queued when the worker is free runs as one batch (up
to max_batch), a full queue refuses, closing finishes what was queued."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future

import pytest

from workloads.serve.batcher import Batcher, Closed, QueueFull

WAIT_S = 30.0


class Gated:
    """A batch function that records each batch and waits for a gate before answering."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        self.entered.set()
        assert self.gate.wait(WAIT_S)
        if any(item < 0 for item in items):
            raise ValueError("negative item")
        return [item * 10 for item in items]


@pytest.fixture
def gated() -> Iterator[Gated]:
    fn = Gated()
    yield fn
    fn.gate.set()


def _start_first(batcher: Batcher[int, int], gated: Gated) -> Future[int]:
    """Submit one item and wait until the worker is busy with it."""
    first = batcher.submit(1)
    assert gated.entered.wait(WAIT_S)
    return first


def test_what_queues_during_a_batch_runs_as_the_next_batches_up_to_max_batch(
    gated: Gated,
) -> None:
    batcher: Batcher[int, int] = Batcher(gated, max_batch=3, max_queue=10)
    first = _start_first(batcher, gated)
    rest = [batcher.submit(n) for n in range(2, 7)]
    assert batcher.depth == 5
    gated.gate.set()
    assert [f.result(WAIT_S) for f in [first, *rest]] == [10, 20, 30, 40, 50, 60]
    assert gated.batches == [[1], [2, 3, 4], [5, 6]]
    assert batcher.close(WAIT_S)


def test_max_batch_one_runs_each_request_alone(gated: Gated) -> None:
    batcher: Batcher[int, int] = Batcher(gated, max_batch=1, max_queue=10)
    first = _start_first(batcher, gated)
    rest = [batcher.submit(n) for n in (2, 3)]
    gated.gate.set()
    assert [f.result(WAIT_S) for f in [first, *rest]] == [10, 20, 30]
    assert gated.batches == [[1], [2], [3]]
    assert batcher.close(WAIT_S)


def test_a_full_queue_refuses_until_it_has_room(gated: Gated) -> None:
    batcher: Batcher[int, int] = Batcher(gated, max_batch=2, max_queue=2)
    first = _start_first(batcher, gated)
    queued = [batcher.submit(2), batcher.submit(3)]
    with pytest.raises(QueueFull, match=r"the queue is full \(2 requests wait\)"):
        batcher.submit(4)
    gated.gate.set()
    assert [f.result(WAIT_S) for f in [first, *queued]] == [10, 20, 30]
    assert batcher.submit(4).result(WAIT_S) == 40
    assert batcher.close(WAIT_S)


def test_closing_finishes_the_queue_and_refuses_new_requests(gated: Gated) -> None:
    batcher: Batcher[int, int] = Batcher(gated, max_batch=1, max_queue=10)
    first = _start_first(batcher, gated)
    queued = [batcher.submit(n) for n in (2, 3)]
    closer = threading.Thread(target=batcher.close, args=(WAIT_S,))
    closer.start()
    # close() marks the batcher closed at once, then waits for the worker.
    while not batcher.closed:
        threading.Event().wait(0.001)
    with pytest.raises(Closed):
        batcher.submit(4)
    gated.gate.set()
    closer.join(WAIT_S)
    assert [f.result(0) for f in [first, *queued]] == [10, 20, 30]
    assert batcher.idle


def test_a_failing_batch_fails_its_own_requests_only(gated: Gated) -> None:
    batcher: Batcher[int, int] = Batcher(gated, max_batch=4, max_queue=10)
    first = _start_first(batcher, gated)
    bad = [batcher.submit(-1), batcher.submit(2)]
    gated.gate.set()
    assert first.result(WAIT_S) == 10
    for future in bad:
        with pytest.raises(ValueError, match="negative item"):
            future.result(WAIT_S)
    assert batcher.submit(3).result(WAIT_S) == 30
    assert batcher.close(WAIT_S)


def test_a_request_cancelled_while_queued_is_left_out(gated: Gated) -> None:
    batcher: Batcher[int, int] = Batcher(gated, max_batch=4, max_queue=10)
    first = _start_first(batcher, gated)
    gone, kept = batcher.submit(2), batcher.submit(3)
    assert gone.cancel()
    gated.gate.set()
    assert (first.result(WAIT_S), kept.result(WAIT_S)) == (10, 30)
    assert gated.batches == [[1], [3]]
    assert batcher.close(WAIT_S)
