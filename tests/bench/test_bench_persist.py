"""bench/persist.py: the store it builds, and one tiny end-to-end run."""

import json

import pytest

from bench import persist


def node_count(leaves: list[tuple[bytes, bytes]], base: set[str]) -> int:
    nodes = set(base)
    for path, _value in leaves:
        nodes.update(persist._prefixes(path.decode()))
    return len(nodes)


@pytest.mark.parametrize("total", [6, 7, 300, 5_003, 30_000])
def test_store_leaves_make_exactly_the_nodes_asked_for(total: int) -> None:
    base = persist.base_nodes()
    leaves = persist.store_leaves(total, base)
    assert node_count(leaves, base) == total
    assert all(10 <= len(value) <= 50 for _path, value in leaves)
    assert len({path for path, _value in leaves}) == len(leaves)


def test_store_leaves_look_like_guests() -> None:
    leaves = persist.store_leaves(120_000, persist.base_nodes())
    paths = [path.decode() for path, _value in leaves]
    domains = {p.split("/")[3] for p in paths if p.startswith("/local/domain/")}
    assert 200 <= len(domains) <= 1000
    assert any("/device/vif/" in p for p in paths)
    assert any(p.startswith("/local/domain/0/backend/vbd/") for p in paths)


def test_tiny_run_prints_both_measurements(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--nodes", "800", "--repeats", "1", "--rounds", "1", "--seconds", "0.2"]
    assert persist.main([*argv, "--json", "--quiet"]) == 0
    document = json.loads(capsys.readouterr().out)
    cases = {case["case"]: case for case in document["recovery"]["cases"]}
    assert set(cases) == {"fresh snapshot", "journal only", "as killed"}
    assert "and 0 journal records" in cases["fresh snapshot"]["restored"]
    assert cases["journal only"]["state_dir"]["snapshot.0000000000000000"] > 0
    for case in cases.values():
        assert case["restored"].startswith("restored 800 nodes")
        assert 0 < case["in_process_s"] < case["exec_to_read_s"]
    throughput = document["throughput"]
    assert set(throughput["median_ops_per_s"]) == {"none", "write", "fsync"}
    assert all(rate > 0 for rate in throughput["median_ops_per_s"].values())
