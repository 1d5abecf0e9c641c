"""`mlstack local up --once` end to end: a local store, the corpus, tiny trained with two
processes, its bundle served on 127.0.0.1, one request answered, the server stopped."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.workloads.train.conftest import prepare_small_dataset

MLSTACK = Path(sys.executable).parent / "mlstack"


def test_local_up_once_trains_serves_and_answers(tmp_path: Path) -> None:
    store = tmp_path / "store"
    # The small corpus instead of the whole standard library, to keep the test short; an empty
    # store gets the standard library (tests/workloads/test_local.py covers ensure_dataset).
    prepare_small_dataset((store / "datasets" / "pystdlib").as_uri())
    proc = subprocess.run(
        [str(MLSTACK), "local", "up", "--once", "--store", str(store), "--steps", "20"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == f"== data: {(store / 'datasets' / 'pystdlib').as_uri()}"
    assert "== training tiny with 2 process(es) to step 20" in lines
    assert any(line.startswith("done: step=20") for line in lines)
    request = lines.index(next(line for line in lines if line.startswith("== request: POST")))
    served = next(line for line in lines if line.startswith("== serving model"))
    completion = "\n".join(lines[request + 1 : lines.index(served)])
    assert completion.startswith("def main(")
    assert len(completion) > len("def main(")
    assert re.fullmatch(
        r"== serving model step-00000020 at http://127\.0\.0\.1:\d+ \(POST /v1/completions, "
        r"GET /readyz, GET /metrics, GET /openapi\.json\)",
        served,
    ), served
    assert (store / "models/local/local-up/latest").is_file()
