"""`mlstack --help`, a command's `--help` and a typo in a stack file answer without loading
Pulumi, the provider SDKs, the object-store SDKs or JAX (seconds of imports: the times are in
benchmarks/RESULTS.md). Checked by the modules loaded, not by a clock."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

#: Top-level packages that each take from a fraction of a second to seconds to import.
HEAVY = ("pulumi", "pulumi_aws", "pulumi_gcp", "pulumi_kubernetes", "pulumi_policy", "jax")
HEAVY += ("orbax", "flax", "boto3", "botocore", "google")

#: Runs the command in-process (as the console script does) and prints what it loaded.
PROBE = """
import json, sys
from mlstack.stacks.cli import app
try:
    app(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({"code": code, "loaded": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def _loaded(*args: str) -> tuple[object, set[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    result = json.loads(proc.stdout.splitlines()[-1])
    return result["code"], set(result["loaded"])


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["plan", "--help"],
        ["check", "--help"],
        ["local", "train", "--help"],
        ["models", "promote", "--help"],
    ],
)
def test_help_loads_no_sdk(args: list[str]) -> None:
    code, loaded = _loaded(*args)
    assert code == 0
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_a_typo_in_a_stack_file_is_reported_before_the_sdks_load(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    data = yaml.safe_load((repo / "stacks" / "Pulumi.aws-dev.yaml").read_text())
    data["config"]["mlstack:platform"]["clodu"] = "aws"
    path = tmp_path / "Pulumi.typo.yaml"
    path.write_text(yaml.safe_dump(data))
    code, loaded = _loaded("plan", str(path))
    assert code == 2
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
