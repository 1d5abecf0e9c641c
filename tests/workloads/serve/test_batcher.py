"""workloads.serve.batcher: queued requests join the running batch between decode steps (up to
max_batch), rows leave it as they end, a full queue refuses, closing finishes what was queued
and running, a newer model takes the queue once the old one's rows end, failures fail only the
requests they concern."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future

import pytest

from mlstack.workloads.serve.batcher import Batcher, Closed, QueueFull

WAIT_S = 30.0
#: An item of this many steps makes the step fail.
UNLUCKY = 13
#: An item of this many steps makes its admission fail.
UNFIT = 99


class Model:
    """A fake model: item n runs n decode steps, then answers 10 n plus 1000 x the model's
    version; an item over `fits` is refused at admission with -1. The first step of every
    session waits for `gate`; `steps` records the items running in each step."""

    def __init__(self) -> None:
        self.version = 0
        self.fits = 100
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.steps: list[list[int]] = []
        self.sessions = 0

    def open(self) -> Session:
        self.sessions += 1
        return Session(self)


class Session:
    def __init__(self, model: Model) -> None:
        self.model = model
        self.version = model.version
        self.rows: dict[int, list[int]] = {}

    @property
    def current(self) -> bool:
        return self.model.version == self.version

    def admit(self, items: Sequence[tuple[int, int]]) -> dict[int, int]:
        refused = {}
        for key, item in items:
            if item == UNFIT:
                raise RuntimeError("prefill failed")
            if item > self.model.fits:
                refused[key] = -1
            else:
                self.rows[key] = [item, item]
        return refused

    def step(self) -> dict[int, int]:
        self.model.entered.set()
        assert self.model.gate.wait(WAIT_S)
        self.model.steps.append(sorted(item for item, _ in self.rows.values()))
        if any(item == UNLUCKY for item, _ in self.rows.values()):
            raise ValueError("unlucky item")
        ended = {}
        for key, row in list(self.rows.items()):
            row[1] -= 1
            if row[1] <= 0:
                ended[key] = 10 * row[0] + 1000 * self.version
                del self.rows[key]
        return ended


@pytest.fixture
def model() -> Iterator[Model]:
    fake = Model()
    yield fake
    fake.gate.set()


def _batcher(model: Model, max_batch: int, max_queue: int = 10) -> Batcher[int, int]:
    return Batcher(model.open, max_batch=max_batch, max_queue=max_queue)


def _start_first(batcher: Batcher[int, int], model: Model, item: int) -> Future[int]:
    """Submit one item and wait until its first step holds at the gate."""
    first = batcher.submit(item)
    assert model.entered.wait(WAIT_S)
    return first


def test_queued_requests_join_the_running_batch_and_leave_as_they_end(model: Model) -> None:
    batcher = _batcher(model, max_batch=4)
    long = _start_first(batcher, model, 5)
    short = [batcher.submit(1), batcher.submit(2)]
    assert batcher.depth == 2 and batcher.running == 1
    model.gate.set()
    assert [f.result(WAIT_S) for f in [long, *short]] == [50, 10, 20]
    # The short ones ran beside the long one from its second step and ended before it.
    assert model.steps == [[5], [1, 2, 5], [2, 5], [5], [5]]
    assert batcher.close(WAIT_S)


def test_at_most_max_batch_rows_run_and_a_freed_slot_takes_the_next(model: Model) -> None:
    batcher = _batcher(model, max_batch=2)
    first = _start_first(batcher, model, 3)
    rest = [batcher.submit(1) for _ in range(3)]
    model.gate.set()
    assert [f.result(WAIT_S) for f in [first, *rest]] == [30, 10, 10, 10]
    assert model.steps == [[3], [1, 3], [1, 3], [1]]
    assert batcher.close(WAIT_S)


def test_max_batch_one_runs_each_request_alone(model: Model) -> None:
    batcher = _batcher(model, max_batch=1)
    first = _start_first(batcher, model, 2)
    rest = [batcher.submit(n) for n in (1, 2)]
    model.gate.set()
    assert [f.result(WAIT_S) for f in [first, *rest]] == [20, 10, 20]
    assert model.steps == [[2], [2], [1], [2], [2]]
    assert batcher.close(WAIT_S)


def test_a_full_queue_refuses_until_it_has_room(model: Model) -> None:
    batcher = _batcher(model, max_batch=1, max_queue=2)
    first = _start_first(batcher, model, 1)
    queued = [batcher.submit(2), batcher.submit(3)]
    with pytest.raises(QueueFull, match=r"the queue is full \(2 requests wait\)"):
        batcher.submit(4)
    model.gate.set()
    assert [f.result(WAIT_S) for f in [first, *queued]] == [10, 20, 30]
    assert batcher.submit(4).result(WAIT_S) == 40
    assert batcher.close(WAIT_S)


def test_closing_finishes_the_running_and_queued_requests_and_refuses_new_ones(
    model: Model,
) -> None:
    batcher = _batcher(model, max_batch=1)
    first = _start_first(batcher, model, 2)
    queued = [batcher.submit(n) for n in (2, 3)]
    closer = threading.Thread(target=batcher.close, args=(WAIT_S,))
    closer.start()
    # close() marks the batcher closed at once, then waits for the worker.
    while not batcher.closed:
        threading.Event().wait(0.001)
    with pytest.raises(Closed):
        batcher.submit(4)
    model.gate.set()
    closer.join(WAIT_S)
    assert [f.result(0) for f in [first, *queued]] == [20, 20, 30]
    assert batcher.idle


def test_a_request_that_does_not_fit_is_answered_at_admission(model: Model) -> None:
    model.fits = 5
    model.gate.set()
    batcher = _batcher(model, max_batch=4)
    assert batcher.submit(6).result(WAIT_S) == -1
    assert batcher.submit(5).result(WAIT_S) == 50
    assert model.steps == [[5]] * 5
    assert batcher.close(WAIT_S)


@pytest.mark.parametrize(
    ("bad", "error", "reason"),
    [(UNLUCKY, ValueError, "unlucky item"), (UNFIT, RuntimeError, "prefill failed")],
    ids=["step", "admission"],
)
def test_a_failure_fails_the_running_requests_and_a_new_session_serves_on(
    model: Model, bad: int, error: type[Exception], reason: str
) -> None:
    batcher = _batcher(model, max_batch=4)
    first = _start_first(batcher, model, 3)
    failing = batcher.submit(bad)
    model.gate.set()
    for future in (first, failing):
        with pytest.raises(error, match=reason):
            future.result(WAIT_S)
    assert batcher.submit(2).result(WAIT_S) == 20
    assert model.sessions == 2 and batcher.idle
    assert batcher.close(WAIT_S)


def test_a_newer_model_takes_the_queue_once_the_old_ones_rows_end(model: Model) -> None:
    batcher = _batcher(model, max_batch=4)
    old = _start_first(batcher, model, 3)
    model.version = 1
    queued = batcher.submit(1)
    model.gate.set()
    assert (old.result(WAIT_S), queued.result(WAIT_S)) == (30, 1010)
    # The queued request waited for the old model's row instead of joining its batch.
    assert model.steps == [[3], [3], [3], [1]]
    assert model.sessions == 2
    assert batcher.close(WAIT_S)


def test_a_request_cancelled_while_queued_is_left_out(model: Model) -> None:
    batcher = _batcher(model, max_batch=4)
    first = _start_first(batcher, model, 1)
    gone, kept = batcher.submit(2), batcher.submit(3)
    assert gone.cancel()
    model.gate.set()
    assert (first.result(WAIT_S), kept.result(WAIT_S)) == (10, 30)
    assert model.steps == [[1], [3], [3], [3]]
    assert batcher.close(WAIT_S)
