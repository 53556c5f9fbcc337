"""``python -m bench`` still runs end to end (a very short run)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_bench_json_smoke() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--seconds", "0.2", "--watchers", "4", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    workloads = document["results"]["pyxenstored"]
    assert [w["workload"] for w in workloads] == [
        "read sequential",
        "read pipelined (depth 64)",
        "write sequential",
        "write pipelined (depth 64)",
        "watch fan-out (4 watchers)",
    ]
    assert all(w["rate"] > 0 for w in workloads)
