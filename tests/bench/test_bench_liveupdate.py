"""bench/liveupdate.py: the log parsing, and one tiny run of both daemons."""

import json
import shutil

import pytest

from bench import liveupdate
from drills.fakexen import XEN_HEADER

LOG = """\
2026-11-25 14:59:01,488 pyxenstored[28869] INFO domain 0: ring attached (port 3)
2026-11-25 14:59:01,610 pyxenstored[2] INFO live update: new instance (pid 7) ready; handing over
2026-11-25 14:59:01,612 pyxenstored[7] INFO live update: new instance (pid 9) ready; handing over
2026-11-25 14:59:01,640 pyxenstored[9] INFO live update: took over 3 connections
"""


def test_handover_time_reads_the_last_update() -> None:
    assert liveupdate.handover_time(LOG) == pytest.approx(0.028, abs=1e-4)
    assert liveupdate.handover_time("FATAL: something\n") is None


def test_tiny_run_of_both_daemons(capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("gcc") is None or not XEN_HEADER.exists():
        pytest.skip("the stand-in hypervisor cannot be built here")
    if not liveupdate.XENSTORE_CONTROL.exists():
        pytest.skip(f"{liveupdate.XENSTORE_CONTROL} is not installed")
    targets = "pyxenstored,c" if liveupdate.C_XENSTORED.exists() else "pyxenstored"
    argv = ["--nodes", "300", "--repeats", "1", "--targets", targets, "--json", "--quiet"]
    assert liveupdate.main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    cases = document["cases"]
    assert [c["target"] for c in cases] == targets.split(",")
    for case in cases:
        assert case["nodes"] == 300 and "error" not in case
        assert 0 < case["pause_s"] <= case["control_s"] + 0.1
        assert case["updates"][0]["pings_in_window"] >= 1
    assert cases[0]["handover_s"] is not None
