"""python -m bench: the comparison run, its pieces, and a quick run of it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench import bigstore, standin, storm, suite, xstest
from bench.targets import C_XENSTORED, OXENSTORED, TARGETS, Running, launch
from bench.workloads import Result
from drills.fakexen import FAKEXEN

SAMPLE = """\
read 1    : avg: 40268 ns (28823 ns .. 149281 ns)
read 2000 : avg: 47180 ns (30726 ns .. 368552 ns)
write 1   : avg: 172831 ns (113447 ns .. 517576 ns)
ta empty x: avg: 184993 ns (122807 ns .. 273432 ns)
ta err    : failed (ret = 61, stage run)
dir       : 91621 ns
Exhaustive transaction retries (100) occurrred 2 times.
"""


def test_test_xenstore_output_is_parsed() -> None:
    output = xstest.parse_output(SAMPLE)
    assert [t.name for t in output.times] == ["read 1", "read 2000", "write 1", "ta empty x",
                                              "dir"]
    assert output.times[0] == xstest.TestTime("read 1", 40268, 28823, 149281)
    assert output.times[-1] == xstest.TestTime("dir", 91621, 91621, 91621)
    assert output.failures == {"ta err": "(ret = 61, stage run)"}


def test_geometric_mean() -> None:
    assert xstest.geometric_mean([2.0, 8.0]) == pytest.approx(4.0)
    assert xstest.geometric_mean([]) == 0.0


# ------------------------------------------------------------- the summary


def _value(key: str, value: float, lower: bool = True, unit: str = "s") -> Result:
    return Result(key, unit, 1, 1.0, key=key, value=value, lower_is_better=lower)


def _rate(key: str, count: int) -> Result:
    return Result(key, "ops/s", count, 1.0, key=key)


def made_up() -> suite.Collected:
    collected = suite.Collected()
    figures = {
        # pyxenstored, c, ocaml
        "pipe-write": (120, 100, 80),
        "pipe-read": (90, 100, 80),
        "fanout-10": (200, 100, 50),
    }
    for index, target in enumerate(("pyxenstored", "c", "ocaml")):
        for repeat in range(3):
            rows = [_rate(key, values[index] + repeat) for key, values in figures.items()]
            rows += [
                _value("xstest.read 1", (10, 10, 20)[index]),
                _value("xstest.write 1", (40, 10, 20)[index]),
                _value("storm-300.seconds", (4 + repeat, 50, 10)[index]),
                _value("storm-300.eagain", (5, 60_000, 10)[index], unit="retries"),
                _value(f"big-{suite.Params().nodes}.rss", (30, 20, 25)[index], unit="MiB"),
            ]
            collected.add(target, rows)
    collected.errors["ocaml"] = {"idle": "boom"}
    return collected


def test_summary_medians_ratios_and_the_targets() -> None:
    names = ["pyxenstored", "c", "ocaml"]
    collected = made_up()
    rows = suite.summarise(collected, names)
    by_key = {r.key: r for r in rows}
    assert by_key["pipe-write"].summary("pyxenstored") == 121  # median of 120, 121, 122
    assert by_key["pipe-write"].ratio("pyxenstored") == pytest.approx(121 / 101)
    # The geometric mean of the tests' times; its ratio is that of the tests' ratios (1, 4).
    assert by_key["xstest.geomean"].summary("pyxenstored") == pytest.approx(20.0)
    assert by_key["xstest.geomean"].ratio("pyxenstored") == pytest.approx(2.0)
    assert [r.key for r in rows].index("xstest.geomean") < [r.key for r in rows].index(
        "xstest.read 1"
    )
    checks = {c.title.split(" >=")[0].split(" <=")[0]: c for c in suite.evaluate(rows,
                                                                                 suite.Params())}
    assert checks["pipelined writes"].verdict == "PASS"
    assert checks["pipelined reads"].verdict == "FAIL"
    assert checks["test-xenstore time per iteration"].verdict == "FAIL"
    assert checks["watch fan-out, 10 watchers"].verdict == "PASS"
    assert checks["watch fan-out, 100 watchers"].verdict == "-"  # not measured
    storm_check = next(c for t, c in checks.items() if t.startswith("boot storm, 300 VMs"))
    assert storm_check.verdict == "PASS" and "0.50x ocaml" in storm_check.detail
    assert checks["RSS with 120,000 nodes"].verdict == "PASS"

    table = suite.format_report(rows, suite.evaluate(rows, suite.Params()), names, collected,
                                {"other": "not here"}, 3)
    assert "pyxenstored x C" in table and "ocaml x C" in table
    assert "1.20x" in table  # pipelined writes
    assert "ocaml: idle failed: boom" in table and "other: unavailable (not here)" in table
    document = suite.as_json(rows, suite.evaluate(rows, suite.Params()), names, collected, {},
                             suite.Params(), 3)
    document = json.loads(json.dumps(document))
    row = next(r for r in document["rows"] if r["key"] == "pipe-write")
    assert row["summary"] == {"pyxenstored": 121, "c": 101, "ocaml": 81}
    assert row["x_c"]["ocaml"] == pytest.approx(81 / 101)
    assert {c["verdict"] for c in document["checks"]} == {"PASS", "FAIL", "-"}


def test_without_c_every_ratio_target_is_unmeasured() -> None:
    collected = suite.Collected()
    collected.add("pyxenstored", [_rate("pipe-write", 5), _value("xstest.read 1", 3)])
    rows = suite.summarise(collected, ["pyxenstored", "c", "ocaml"])
    assert all(c.verdict == "-" for c in suite.evaluate(rows, suite.Params()))
    assert "pyxenstored x C" not in suite.format_report(rows, [], ["pyxenstored", "c"],
                                                        collected, {}, 1)


# ------------------------------------------------------------- the pieces


def test_big_store_tree_has_exactly_the_nodes() -> None:
    leaves, names = bigstore.tree(500)
    assert len(names) == 500 == len(set(names))
    assert names[0] == b"/bench/big"
    assert all(name.startswith(b"/bench/big/") for name in names[1:])
    assert all(path.startswith(b"/bench/big/local/domain/") for path, _value in leaves)


def test_the_bench_stand_in_lists_more_domains() -> None:
    source = (FAKEXEN / "fakexen.c").read_text()
    patched = standin._patched_source(source)
    assert patched is not None, "fakexen.c changed: update bench/standin.py's _PATCHES"
    assert f"fx_read_domains(doms, {standin.MAX_DOMAINS})" in patched
    assert "256)" not in patched.replace("line[256]", "")


def _answers(request: storm.Request, eagain: list[int]) -> storm.Reply:
    """A daemon in miniature: everything succeeds, nothing but the domain's
    directory exists, and the first ``eagain[0]`` commits fail with EAGAIN."""
    op, _tx, payload = request
    if op == storm.TRANSACTION_START:
        return op, b"7\0"
    if op == storm.TRANSACTION_END and payload == b"T\0" and eagain[0] > 0:
        eagain[0] -= 1
        return storm.ERROR, b"EAGAIN\0"
    if op == storm.GET_DOMAIN_PATH:
        return op, b"/local/domain/" + payload.rstrip(b"\0") + b"\0"
    if op == storm.READ and payload == b"/bench/local/domain/4\0":
        return op, b""
    if op in (storm.READ, storm.DIRECTORY):
        return storm.ERROR, b"ENOENT\0"
    return op, b"OK\0"


def test_a_lifecycle_in_the_shape_of_bench_ml() -> None:
    life = storm.Lifecycles()
    eagain = [2]
    requests = list(storm.requests_of(life.vm_cycle(4), lambda r: _answers(r, eagain)))
    assert life.counters.eagain == 2
    # make (2) + three devices + shutdown, each committed once.
    assert life.counters.transactions == 6
    commits = [r for r in requests if r[0] == storm.TRANSACTION_END]
    assert len(commits) == 6 + 2 and all(r[1] == 7 for r in commits)
    payloads = {(op, payload.split(b"\0")[0]) for op, _tx, payload in requests}
    assert (storm.MKDIR, b"/bench/local/domain/4") in payloads
    assert (storm.MKDIR, b"/bench/vm/uuid-4") in payloads
    assert (storm.MKDIR, b"/bench/local/domain/0/backend/vbd/4/2") in payloads
    assert (storm.WRITE, b"/bench/local/domain/4/control/shutdown") in payloads
    assert (storm.RM, b"/bench/local/domain/4") in payloads
    # The immediate existence check inside the first transaction is outside it.
    assert (storm.READ, 0, b"/bench/vm/uuid-4\0") in requests
    perms = [r[2] for r in requests if r[0] == storm.SET_PERMS]
    assert b"/bench/vss/uuid-4\0n4\0" in perms and b"/bench/local/domain/4\0n0\0r4\0" in perms


def test_backend_links_are_parsed_under_the_prefix() -> None:
    life = storm.Lifecycles("/bench")
    assert life.parse_backend_link("/bench/local/domain/0/backend/vbd/4/2") == (0, "vbd", 2)
    assert life.parse_backend_link("/local/domain/0/backend/vbd/4/2") is None
    assert life.parse_backend_link("/bench/local/domain/0/backend/nope/4/2") is None


@pytest.fixture
def pyxenstored() -> Iterator[Running]:
    """pyxenstored on a temporary socket, without the stand-in."""
    with launch(TARGETS["pyxenstored"]) as running:
        yield running


def test_storm_of_three_vms_leaves_the_store_empty(pyxenstored: Running) -> None:
    result = storm.storm(pyxenstored.socket_path, 3)
    assert result.seconds > 0 and result.vms == 3
    assert result.transactions == 3 * 6 and result.eagain >= 0
    assert storm.leftovers(pyxenstored.socket_path) == []
    # Again, on the store the first one left.
    assert storm.storm(pyxenstored.socket_path, 3).seconds > 0


def test_rss_is_the_daemons_own(pyxenstored: Running) -> None:
    with open(f"/proc/{pyxenstored.pid}/cmdline", "rb") as file:
        assert b"pyxenstored" in file.read()
    assert pyxenstored.rss_kib() > 1000


def test_daemon_cpu_grows_with_the_work_it_is_given(pyxenstored: Running) -> None:
    before = pyxenstored.cpu_seconds()
    storm.storm(pyxenstored.socket_path, 5)
    assert pyxenstored.cpu_seconds() > before


# ------------------------------------------------------------- quick runs


def _quick(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert bench_main.main(["--quick", "--json", *argv]) == 0
    document: dict[str, object] = json.loads(capsys.readouterr().out)
    return document


def test_quick_run_of_pyxenstored(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    document = _quick(["--targets", "pyxenstored", "--json-out", str(out)], capsys)
    assert json.loads(out.read_text()) == document
    rows = {row["key"]: row for row in document["rows"]}  # type: ignore[attr-defined]
    for key in ("seq-write", "seq-write.p99", "seq-read", "pipe-write", "pipe-read", "tx",
                "fanout-3", "fanout-10", "fanout-10.cpu", "idle-20.rss", "big-500.rss",
                "storm-5.seconds", "storm-5.eagain", "storm-5.cpu"):
        assert key in rows, key
        assert rows[key]["summary"]["pyxenstored"] is not None
    assert rows["storm-5.seconds"]["summary"]["pyxenstored"] > 0
    assert rows["big-500.rss"]["summary"]["pyxenstored"] > 1
    assert rows["storm-5.cpu"]["summary"]["pyxenstored"] > 0
    if os.access(xstest.TEST_XENSTORE, os.X_OK):
        assert "xstest.geomean" in rows
    assert document["errors"] == {} and document["lost"] == {}
    assert all(c["verdict"] == "-" for c in document["checks"])  # type: ignore[attr-defined]


def test_quick_run_of_all_three(capsys: pytest.CaptureFixture[str]) -> None:
    if not (os.access(C_XENSTORED, os.X_OK) and os.access(OXENSTORED, os.X_OK)):
        pytest.skip("Debian's xen-utils-4.17 is not installed")
    try:
        standin.open_standin()
    except standin.Unavailable as exc:
        pytest.skip(f"the stand-in hypervisor cannot be built here: {exc}")
    document = _quick(["--only", "pipe-write,xstest,storm,big"], capsys)
    assert document["targets"] == ["pyxenstored", "c", "ocaml"]
    assert document["errors"] == {} and document["unavailable"] == {}
    rows = {row["key"]: row for row in document["rows"]}  # type: ignore[attr-defined]
    assert set(rows["pipe-write"]["x_c"]) == {"pyxenstored", "ocaml"}
    assert rows["storm-5.eagain"]["summary"]["c"] >= 0
    verdicts = {c["title"]: c["verdict"] for c in document["checks"]}  # type: ignore[attr-defined]
    assert verdicts["pipelined writes >= 1.0x C"] in ("PASS", "FAIL")
    assert verdicts["pipelined reads >= 1.0x C"] == "-"  # not selected


def test_quick_ring_reads_of_pyxenstored(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        standin.open_standin()
    except standin.Unavailable as exc:
        pytest.skip(f"the stand-in hypervisor cannot be built here: {exc}")
    document = _quick(["--only", "rings", "--targets", "pyxenstored"], capsys)
    rows = {row["key"]: row for row in document["rows"]}  # type: ignore[attr-defined]
    assert set(rows) == {"ring-seq-read", "ring-seq-read.p50", "ring-seq-read.p99",
                         "ring-pipe-read"}
    assert all(row["summary"]["pyxenstored"] > 0 for row in rows.values())


def test_rings_are_only_run_when_asked_for() -> None:
    assert "rings" not in [w.name for w in bench_main.parse_args([]).workloads]
    assert [w.name for w in bench_main.parse_args(["--only", "rings"]).workloads] == ["rings"]
    args = bench_main.parse_args(["--quick", "--storm", "7", "--nodes", "900"])
    assert args.repeats == 1 and args.params.storm_vms == (7,) and args.params.nodes == 900
