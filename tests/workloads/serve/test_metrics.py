"""The event log: a stream whose reader went away is dropped, never raised from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mlstack.workloads.serve.metrics import EventLog


def test_a_broken_output_pipe_stops_the_echo_and_never_raises() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # The reader (`grep`, a closed terminal) is gone.
    events: list[dict[str, Any]] = []
    with os.fdopen(write_end, "w") as stream:
        log = EventLog(stream, on_event=events.append)
        log("draining", queued=0)  # EPIPE: it used to raise BrokenPipeError here.
        log("drained", finished=True)
        assert log.stream is None
        # Its descriptor now writes to /dev/null, so the final flush and close do not fail.
        assert str(Path(f"/proc/self/fd/{write_end}").readlink()) == os.devnull
    assert [e["event"] for e in events] == ["draining", "drained"]
