"""What both drills' tests need: the stand-in built here (else they skip),
and a miniature run with its summary at hand for the assertions' messages."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from drills.fakexen import XEN_HEADER


@pytest.fixture
def need_fakexen() -> None:
    # As tests/fakexen/conftest.py: the drill builds the stand-in library
    # with the same Makefile (``fakexen_support.build_library``).
    if shutil.which("gcc") is None or shutil.which("make") is None:
        pytest.skip("gcc and make are needed to build tests/fakexen/libfakexen.so")
    if not XEN_HEADER.exists():
        pytest.skip("libxen-dev headers (xenevtchn.h) are not installed")


@pytest.fixture
def run_drill(tmp_path: Path) -> Callable[..., tuple[Any, str]]:
    """``run_drill(module.run, module.Options, **fields)``: the drill run quietly
    in ``tmp_path/drill`` (kept for a failure's logs); its summary and table,
    which every assertion shows. It must not have aborted."""

    def run(drill: Callable[[Any], Any], options: type, **fields: Any) -> tuple[Any, str]:
        summary = drill(options(workdir=tmp_path / "drill", progress=False, **fields))
        report = summary.table()
        assert summary.aborted is None, report
        return summary, report

    return run
