"""The xenstore security advisories that concern rings and domains
(xenstore-spec.md section 10), plus permission, quota and relative-path
basics, each played by unprivileged guests over rings on the stand-in
hypervisor.

Every scenario runs against pyxenstored and, where Debian's 4.17 reference
daemons behave as the spec says, against C xenstored and oxenstored too, so
one scenario checks all three. Where a reference daemon differs (4.17
predates a fix or a feature), that parameter is skipped with the reason.
"""

from __future__ import annotations

import signal
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from advisory_support import (
    KINDS,
    XENSTORE_ERROR_NONE,
    XENSTORE_ERROR_RINGIDX,
    XS_DIRECTORY,
    XS_GET_PERMS,
    XS_GET_QUOTA,
    XS_IS_DOMAIN_INTRODUCED,
    XS_MKDIR,
    XS_READ,
    XS_RELEASE,
    XS_RM,
    XS_SET_PERMS,
    XS_SET_QUOTA,
    XS_TRANSACTION_END,
    XS_TRANSACTION_START,
    XS_UNWATCH,
    XS_WATCH,
    XS_WRITE,
    Harness,
    XsGuest,
    binary_missing,
    control_nodes,
    strings,
    wait_until,
)
from fakexen_support import HEADER

#: How long "nothing arrives" is watched for (seconds).
QUIET = 0.3


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest, fakexen_library: Path) -> str:
    missing = binary_missing(request.param)
    if missing:
        pytest.skip(missing)
    return request.param


@pytest.fixture
def start(kind: str, tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """``start(nodes_quota=None, skip={kind: reason})`` → a running Harness;
    stopped at teardown, which also fails the test if the daemon crashed."""
    harnesses: list[Harness] = []

    def _start(nodes_quota: int | None = None, skip: dict[str, str] | None = None) -> Harness:
        if skip and kind in skip:
            pytest.skip(skip[kind])
        h = Harness(kind, tmp_path / f"h{len(harnesses)}", nodes_quota)
        harnesses.append(h)
        return h

    yield _start
    for h in harnesses:
        status = h.close()
        assert status is not None, f"the {kind} daemon crashed during the test"
        assert status in (0, -signal.SIGTERM), f"{h.daemon.argv[0]} exited with {status}"


# -- permission, quota and relative-path basics --------------------------------


def test_guest_relative_paths(start: Callable[..., Harness]) -> None:
    """Spec 2: a ring connection's relative paths resolve under
    /local/domain/<domid>/, for every operation and for watch events."""
    h = start()
    g = h.guest(5)
    g.write("data/x", "one")
    assert g.read("/local/domain/5/data/x") == b"one"
    assert h.dom0.read("/local/domain/5/data/x") == b"one"
    g.mkdir("device/vif")
    assert g.directory("device") == ["vif"]
    assert g.get_perms("data/x") == ["n5"]
    g.watch("data", "tok")
    assert g.next_event() == ("data", "tok")  # the initial event, relative
    h.dom0.write("/local/domain/5/data/y", "two")
    assert g.next_event() == ("data/y", "tok")
    g.rm("data/x")
    assert g.next_event() == ("data/x", "tok")
    assert h.dom0.directory("/local/domain/5/data") == ["y"]


def test_guest_eacces_on_dom0_nodes(start: Callable[..., Harness]) -> None:
    """Spec 3.2/3.4: dom0's nodes (owner 0, others n) are closed to a guest;
    a guest cannot give its node away (XSA-352: C EPERM, O EACCES)."""
    h = start()
    h.dom0.write("/local/domain/0/secret", "s")
    g = h.guest(5)
    for op, payload in (
        (XS_READ, strings("/local/domain/0/secret")),
        (XS_WRITE, b"/local/domain/0/secret\0x"),
        (XS_WRITE, b"/local/domain/0/new\0x"),
        (XS_DIRECTORY, strings("/local/domain/0")),
        (XS_GET_PERMS, strings("/local/domain/0/secret")),
        (XS_SET_PERMS, strings("/local/domain/0/secret", "b5")),
        (XS_RM, strings("/local/domain/0/secret")),
        (XS_MKDIR, strings("/tool/mine")),
    ):
        assert g.error(op, payload) == "EACCES", (op, payload)
    assert h.dom0.read("/local/domain/0/secret") == b"s"
    g.write("mine", "m")
    h.fx.set_domain(6, "running")  # else C answers ENOENT (unknown new owner)
    expected = "EACCES" if h.kind == "ocaml" else "EPERM"
    assert g.error(XS_SET_PERMS, strings("mine", "n6")) == expected
    assert g.get_perms("mine") == ["n5"]
    # A guest may grant access on what it owns.
    g.set_perms("mine", "n5", "r6")
    assert h.dom0.get_perms("/local/domain/5/mine") == ["n5", "r6"]


def _fill(g: XsGuest, prefix: str, limit: int = 50) -> int:
    """Create nodes ``<prefix><i>`` until the daemon refuses; how many fitted."""
    for i in range(limit):
        err = g.error(XS_WRITE, f"{prefix}{i}\0v".encode())
        if err is not None:
            assert err in ("ENOSPC", "EQUOTA"), err
            return i
    raise AssertionError(f"{limit} nodes created without hitting the nodes quota")


def test_guest_nodes_quota(start: Callable[..., Harness]) -> None:
    """Spec 6.1: the ``nodes`` quota (-E 10; oxenstored quota-maxentity)
    counts the nodes a guest owns (its home included); creating one more is
    refused with ENOSPC (O: EQUOTA), writes to existing nodes still work, and
    removing nodes makes room again. Implicit parents count too (XSA-272)."""
    h = start(nodes_quota=10)
    g = h.guest(5)
    created = _fill(g, "n")
    # pyxenstored, like current C (domain_quota_add_exceeds), refuses when
    # the new count would be >= quota: home + 8 = 9 nodes. C 4.17 compares
    # the count before adding (domain_nbentry >= quota) and oxenstored lets
    # the owner reach quota-maxentity: home + 9 = 10.
    assert created == (8 if h.kind == "py" else 9)
    g.write("n0", "overwrite")  # no new node
    assert g.error(XS_WRITE, b"deep/a/b\0v") in ("ENOSPC", "EQUOTA")
    assert g.error(XS_READ, strings("deep")) == "ENOENT"  # no partial tree (XSA-414)
    g.rm("n0")
    g.rm("n1")
    g.write("deep/a", "v")  # implicit parent + node: exactly the 2 freed
    assert g.error(XS_WRITE, b"more\0v") in ("ENOSPC", "EQUOTA")
    # dom0 is never limited.
    for i in range(15):
        h.dom0.write(f"/local/domain/0/n{i}", "v")


def test_guest_nodes_quota_via_set_quota(start: Callable[..., Harness]) -> None:
    """Spec 6.1 (C 4.22+): SET_QUOTA lowers one domain's ``nodes`` quota; the
    guest then gets ENOSPC, and GET_QUOTA reports the new value; another
    domain keeps the global default. Lowering below usage evicts nothing."""
    h = start(
        skip={
            "c": "C xenstored 4.17 has no GET_QUOTA/SET_QUOTA (ENOSYS; added in 4.22)",
            "ocaml": "oxenstored has no GET_QUOTA/SET_QUOTA",
        }
    )
    g = h.guest(5)
    other = h.guest(6)
    for i in range(4):
        g.write(f"n{i}", "v")  # 5 nodes with the home
    h.dom0.do(XS_SET_QUOTA, strings("5", "nodes", "3"))
    assert h.dom0.do(XS_GET_QUOTA, strings("5", "nodes")) == b"3\0"
    assert g.error(XS_WRITE, b"n9\0v") == "ENOSPC"
    assert g.read("n3") == b"v"  # nothing evicted
    assert g.error(XS_SET_QUOTA, strings("5", "nodes", "1000")) == "EACCES"
    for i in range(8):
        other.write(f"n{i}", "v")
    h.dom0.do(XS_SET_QUOTA, strings("5", "nodes", "7"))
    g.write("n4", "v")  # 6 < 7
    assert g.error(XS_WRITE, b"n5\0v") == "ENOSPC"


# -- XSA-38 -------------------------------------------------------------------

#: (ring, indices to set, description): hostile index pairs of spec 7.2.
HOSTILE = {
    "req-prod-too-far": ("req", {"req_cons": 0, "req_prod": 1025}),
    "req-prod-behind-cons": ("req", {"req_cons": 100, "req_prod": 99}),
    "req-huge": ("req", {"req_cons": 0x8000_0000, "req_prod": 0x7FFF_FFFF}),
    "rsp-cons-past-prod": ("rsp", {"rsp_cons": 0x10}),
    "rsp-prod-too-far": ("rsp", {"rsp_cons": 0xFFFF_F000}),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_xsa38_hostile_ring_indices(start: Callable[..., Harness], case: str) -> None:
    """XSA-38 (spec 7.2, 7.5, section 10): indices with prod - cons > 1024 in
    either ring (too far ahead, behind, huge) are never trusted. That ring is
    dropped and flagged RINGIDX (C, pyxenstored; O marks the domain bad), the
    daemon does not hang, and dom0 and other guests are still served."""
    h = start(
        skip={
            "ocaml": "oxenstored 4.17 neither drops nor flags a ring whose rsp_cons is "
            "past rsp_prod (or > 1024 behind): it resumes service once the indices are sane"
        }
        if case.startswith("rsp")
        else None
    )
    bad = h.guest(5)
    good = h.guest(6)
    bad.write("before", "1")
    ring, indices = HOSTILE[case]
    if ring == "req":
        bad.set_indices(**indices)
        bad.notify()
    else:
        # Our side of the response ring goes bad, then a request makes the
        # daemon write a reply into it.
        _, _, _, rsp_prod = struct.unpack_from("=IIII", bad.page, 2048)
        bad.set_indices(rsp_cons=(rsp_prod + indices["rsp_cons"]) & 0xFFFF_FFFF)
        bad.req_id += 1
        bad.write_req(HEADER.pack(XS_READ, bad.req_id, 0, 7) + b"before\0")
    if h.kind != "ocaml":  # oxenstored 4.17 does not write the error field
        wait_until(lambda: bad.ring_error != XENSTORE_ERROR_NONE, "the ring is flagged")
        assert bad.ring_error == XENSTORE_ERROR_RINGIDX
    else:
        time.sleep(0.1)
    # Nobody else notices, and nothing hangs.
    good.write("data", "fine")
    assert good.read("data") == b"fine"
    assert h.dom0.read("/local/domain/5/before") == b"1"
    assert h.dom0.read("/local/domain/6/data") == b"fine"
    # The bad ring gets no more service (even if its indices are repaired).
    cons, prod, rcons, rprod = struct.unpack_from("=IIII", bad.page, 2048)
    bad.req_id += 1
    msg = HEADER.pack(XS_WRITE, bad.req_id, 0, 9) + b"after\0 no"
    bad.set_indices(req_cons=cons, req_prod=cons, rsp_cons=rprod)
    for i, byte in enumerate(msg):
        bad.page[(cons + i) % 1024] = byte
    bad.set_indices(req_prod=cons + len(msg))
    bad.notify()
    time.sleep(0.1)
    assert h.dom0.error(XS_READ, strings("/local/domain/5/after")) == "ENOENT"
    h.assert_alive()


def test_xsa38_indices_wrap_legitimately(start: Callable[..., Harness]) -> None:
    """XSA-38 / spec 7.2: indices are free-running u32s and need not start at
    0; a well-behaved guest whose indices wrap past 2^32 is served."""
    h = start()
    h.fx.set_domain(5, "running")
    start_idx = 0xFFFF_FF00
    ring = h.fx.ring_path(5)
    ring.parent.mkdir(exist_ok=True)
    page = bytearray(4096)
    struct.pack_into("=IIII", page, 2048, start_idx, start_idx, start_idx, start_idx)
    ring.write_bytes(bytes(page))
    h.dom0.mkdir("/local/domain/5")
    h.dom0.set_perms("/local/domain/5", "n5")
    g = XsGuest(h.fx.root, 5)
    h.guests.append(g)
    h.introduce(5, g.port)
    for i in range(20):
        g.write(f"k{i}", "x" * 100)
        assert g.read(f"k{i}") == b"x" * 100
    req_cons, req_prod, rsp_cons, rsp_prod = struct.unpack_from("=IIII", g.page, 2048)
    assert req_cons == req_prod < start_idx  # wrapped
    assert rsp_cons == rsp_prod < start_idx
    assert g.ring_error == XENSTORE_ERROR_NONE


# -- XSA-115 ------------------------------------------------------------------


def test_xsa115_watch_on_root_sees_only_readable_nodes(start: Callable[..., Harness]) -> None:
    """XSA-115 (spec 5.4): a guest watching ``/`` receives events only for
    nodes it can read, or whose parent it can read."""
    h = start()
    g = h.guest(5)
    h.dom0.mkdir("/local/domain/0")
    g.watch("/", "root")
    assert g.next_event() == ("/", "root")  # the initial event is not filtered
    h.dom0.write("/local/domain/0/secret", "s")  # neither node nor parent readable
    h.dom0.write("/local/domain/5/hidden", "h")  # readable (inherits n5): seen
    h.dom0.set_perms("/local/domain/5/hidden", "n0")  # readable before: seen
    h.dom0.write("/local/domain/5/hidden", "h2")  # only its parent is readable: seen
    h.dom0.write("/local/domain/0/shared", "x")  # n0 under n0: not seen
    h.dom0.set_perms("/local/domain/0/shared", "n0", "r5")  # readable now: seen
    h.dom0.write("/local/domain/0/shared", "y")  # node readable, parent not: seen
    h.dom0.rm("/local/domain/0/secret")  # not seen
    h.dom0.write("/local/domain/5/marker", "m")
    seen = []
    while (event := g.next_event()) is not None:
        seen.append(event[0])
        if event[0] == "/local/domain/5/marker":
            break
    hidden, shared = "/local/domain/5/hidden", "/local/domain/0/shared"
    assert seen == [hidden, hidden, hidden, shared, shared, "/local/domain/5/marker"]
    assert g.next_event(QUIET) is None


def test_xsa115_introduce_domain_not_sent_to_guests(start: Callable[..., Harness]) -> None:
    """XSA-115 (spec 3.7, 5.6): ``@introduceDomain`` goes only to watchers
    that can read the special node (dom0), never to an unprivileged guest."""
    h = start()
    g = h.guest(5)
    g.watch("@introduceDomain", "intro")
    assert g.next_event() == ("@introduceDomain", "intro")  # initial event
    g.watch("/local/domain/5/marker", "mark")
    assert g.next_event() == ("/local/domain/5/marker", "mark")
    h.dom0.watch("@introduceDomain", "d0")
    assert h.dom0.next_event() == ("@introduceDomain", "d0")
    h.guest(6)
    assert h.dom0.next_event() == ("@introduceDomain", "d0")  # it did fire
    h.dom0.write("/local/domain/5/marker", "m")
    assert g.next_event() == ("/local/domain/5/marker", "mark")
    assert g.next_event(QUIET) is None


def test_xsa115_is_domain_introduced_is_privileged(start: Callable[..., Harness]) -> None:
    """XSA-115 (spec 1.5, section 10): IS_DOMAIN_INTRODUCED from a guest is
    EACCES, about itself as about others."""
    h = start()
    g = h.guest(5)
    assert g.error(XS_IS_DOMAIN_INTRODUCED, strings("5")) == "EACCES"
    assert g.error(XS_IS_DOMAIN_INTRODUCED, strings("0")) == "EACCES"
    assert h.dom0.is_introduced(5)


def test_xsa115_watch_ignores_tx_id(start: Callable[..., Harness]) -> None:
    """XSA-115 (section 10): the header's tx_id is ignored on WATCH and
    UNWATCH: an unknown one is no error, and a watch set "in" a transaction
    is an ordinary watch that outlives the transaction's end."""
    h = start()
    g = h.guest(5)
    assert g.call(XS_WATCH, strings("a", "bogus"), tx_id=0xDEAD) == (XS_WATCH, b"OK\0")
    assert g.next_event() == ("a", "bogus")
    tx = int(g.do(XS_TRANSACTION_START, b"\0").rstrip(b"\0"))
    assert g.call(XS_WATCH, strings("b", "intx"), tx_id=tx) == (XS_WATCH, b"OK\0")
    assert g.next_event() == ("b", "intx")
    assert g.error(XS_TRANSACTION_END, b"F\0", tx_id=tx) is None  # abort
    h.dom0.write("/local/domain/5/b", "1")
    assert g.next_event() == ("b", "intx")
    assert g.call(XS_UNWATCH, strings("a", "bogus"), tx_id=0xBEEF) == (XS_UNWATCH, b"OK\0")
    h.dom0.write("/local/domain/5/a", "1")
    h.dom0.write("/local/domain/5/b", "2")
    assert g.next_event() == ("b", "intx")  # and none for the unwatched a
    assert g.next_event(QUIET) is None


# -- XSA-322 / XSA-417 -----------------------------------------------------------


@pytest.mark.parametrize("death", ["dying", "vanished"])
def test_xsa322_stale_acl_not_inherited(start: Callable[..., Harness], death: str) -> None:
    """XSA-322 (spec 3.5, 3.6): dom0 grants domain 7 read (and write) on its
    nodes; 7 dies (seen ``dying``, or gone at once); a new domain 7 is
    introduced: it must have no access through the dead domain's entries."""
    h = start()
    old = h.guest(7)
    h.dom0.write("/local/domain/0/acl-r", "secret")
    h.dom0.set_perms("/local/domain/0/acl-r", "n0", "r7")
    h.dom0.write("/local/domain/0/acl-b", "secret")
    h.dom0.set_perms("/local/domain/0/acl-b", "n0", "b7")
    assert old.read("/local/domain/0/acl-r") == b"secret"
    old.write("/local/domain/0/acl-b", "by-old-7")
    h.kill(7, state="dying" if death == "dying" else None)
    h.drop(old)
    new = h.guest(7)
    assert new.error(XS_READ, strings("/local/domain/0/acl-r")) == "EACCES"
    assert new.error(XS_READ, strings("/local/domain/0/acl-b")) == "EACCES"
    assert new.error(XS_WRITE, b"/local/domain/0/acl-b\0x") == "EACCES"
    assert h.dom0.read("/local/domain/0/acl-b") == b"by-old-7"
    # A grant made after the new domain exists works.
    h.dom0.set_perms("/local/domain/0/acl-r", "n0", "r7")
    assert new.read("/local/domain/0/acl-r") == b"secret"


def test_xsa322_grant_to_absent_domid_not_inherited(start: Callable[..., Harness]) -> None:
    """XSA-322 (spec 3.5): an ACL entry naming a domid the hypervisor does
    not know when the permissions are set is flagged IGNORE, so a domain
    created later under that domid gets no access through it."""
    h = start(skip={"ocaml": "oxenstored keeps ACL entries for domids Xen does not know"})
    h.dom0.write("/local/domain/0/early", "secret")
    h.dom0.set_perms("/local/domain/0/early", "n0", "r7")  # no domain 7 yet
    g = h.guest(7)
    assert g.error(XS_READ, strings("/local/domain/0/early")) == "EACCES"


def test_xsa417_stale_acl_after_third_party_write(start: Callable[..., Harness]) -> None:
    """XSA-417 (spec 3.5): as XSA-322, but the node is written by third
    parties (the owning guest 8, and dom0) after 7 died and again after the
    new 7 exists: the write must not revive the stale entry."""
    h = start()
    owner = h.guest(8)
    old = h.guest(7)
    owner.write("shared", "v1")
    owner.set_perms("shared", "n8", "r7")
    h.dom0.write("/local/domain/0/acl", "v1")
    h.dom0.set_perms("/local/domain/0/acl", "n0", "r7")
    assert old.read("/local/domain/8/shared") == b"v1"
    assert old.read("/local/domain/0/acl") == b"v1"
    h.kill(7)
    h.drop(old)
    owner.write("shared", "v2")  # third-party writes while 7 does not exist
    h.dom0.write("/local/domain/0/acl", "v2")
    new = h.guest(7)
    owner.write("shared", "v3")  # and after the new 7 exists
    h.dom0.write("/local/domain/0/acl", "v3")
    assert new.error(XS_READ, strings("/local/domain/8/shared")) == "EACCES"
    assert new.error(XS_READ, strings("/local/domain/0/acl")) == "EACCES"
    assert owner.read("shared") == b"v3"


# -- XSA-323 ------------------------------------------------------------------

#: The longest relative path a guest may use with the default path-max of
#: 2048: C >= 4.22 (and pyxenstored) refuse at length >= quota, so 2047;
#: C 4.17 (domain_max_chk: val > quota) and oxenstored 4.17 refuse above it.
REL_MAX = {"py": 2047, "c": 2048, "ocaml": 2048}


def _long_rel(length: int) -> str:
    """A relative path of exactly ``length`` bytes, in components of <= 200."""
    parts = []
    while length > 200:
        parts.append("p" * 199)
        length -= 200
    return "/".join([*parts, "q" * length])


@pytest.mark.parametrize("domid", [3, 42, 123, 1234, 12345])
def test_xsa323_relative_path_limit(start: Callable[..., Harness], domid: int) -> None:
    """XSA-323 (spec 2): path-max is measured on the path relative to
    /local/domain/<N>/ whatever N's digit count, so a guest's path at the
    limit (2047 bytes relative; 2048 for the 4.17 daemons) is valid in both
    forms and stays accessible to dom0 by its absolute form; one byte more
    is EINVAL for the guest."""
    h = start()
    g = h.guest(domid)
    home = f"/local/domain/{domid}/"
    rel = _long_rel(REL_MAX[h.kind])
    assert len(rel) == REL_MAX[h.kind]
    g.write(rel, "edge")
    assert g.read(home + rel) == b"edge"
    assert h.dom0.read(home + rel) == b"edge"
    h.dom0.write(home + rel, "dom0")
    assert g.read(rel) == b"dom0"
    too_long = rel + "x"
    assert g.error(XS_WRITE, too_long.encode() + b"\0v") == "EINVAL"
    assert g.error(XS_WRITE, (home + too_long).encode() + b"\0v") == "EINVAL"
    assert g.error(XS_READ, strings(too_long)) == "EINVAL"
    if h.kind == "py":
        # Spec 2 (C 4.22): privileged callers are limited only by the
        # payload size. The 4.17 daemons apply path-max to dom0 as well.
        h.dom0.write(home + too_long, "priv")
        assert h.dom0.read(home + too_long) == b"priv"
    else:
        assert h.dom0.error(XS_WRITE, (home + too_long).encode() + b"\0v") == "EINVAL"


# -- XSA-325 ------------------------------------------------------------------


def test_xsa325_release_domain_only_on_real_death(start: Callable[..., Harness]) -> None:
    """XSA-325 (spec 5.6, 7.5): a guest that corrupts its ring is ignored,
    but its domain stays; dom0 watching @releaseDomain sees nothing until the
    domain really dies, and then exactly one event."""
    h = start()
    h.dom0.watch("@releaseDomain", "rel")
    assert h.dom0.next_event() == ("@releaseDomain", "rel")
    g = h.guest(5)
    g.write("data", "1")
    g.set_indices(req_cons=0, req_prod=5000)
    g.notify()
    if h.kind != "ocaml":
        wait_until(lambda: g.ring_error == XENSTORE_ERROR_RINGIDX, "the ring is flagged")
    assert h.dom0.next_event(QUIET) is None, "@releaseDomain fired for a live domain"
    assert h.dom0.is_introduced(5)
    assert h.dom0.read("/local/domain/5/data") == b"1"
    h.fx.set_domain(5, "dying")
    h.fx.raise_virq()
    assert h.dom0.next_event() == ("@releaseDomain", "rel")
    h.fx.set_domain(5, None)
    h.fx.raise_virq()
    assert h.dom0.next_event(QUIET) is None, "a second @releaseDomain"
    assert not h.dom0.is_introduced(5)


# -- XSA-419 ------------------------------------------------------------------


def test_xsa419_nodes_of_dead_domain_deleted(start: Callable[..., Harness]) -> None:
    """XSA-419 (spec 3.6): guest A lets guest B write into A's tree; B
    creates nodes there and dies: B's nodes are deleted with their subtrees
    (not handed to dom0), A's own nodes stay, and a new B finds nothing."""
    h = start(
        skip={
            "ocaml": "oxenstored gives a new node its parent's permissions unchanged "
            "(spec 3.3), so the nodes B creates in A's tree are owned by A, not B"
        }
    )
    a = h.guest(5)
    b = h.guest(6)
    a.write("shared/a-own", "a")
    a.set_perms("shared", "n5", "b6")
    b.write("/local/domain/5/shared/from-b/deep/er", "b")
    b.write("/local/domain/5/shared/b-leaf", "b")
    assert h.dom0.get_perms("/local/domain/5/shared/from-b")[0] == "n6"
    assert sorted(a.directory("shared")) == ["a-own", "b-leaf", "from-b"]
    h.kill(6)
    h.drop(b)
    wait_until(
        lambda: h.dom0.directory("/local/domain/5/shared") == ["a-own"],
        "B's nodes are deleted",
    )
    assert h.dom0.error(XS_READ, strings("/local/domain/5/shared/from-b/deep")) == "ENOENT"
    assert a.read("shared/a-own") == b"a"
    assert h.dom0.error(XS_READ, strings("/local/domain/6")) == "ENOENT"  # 6 owned its home
    h.guest(6)
    assert h.dom0.directory("/local/domain/5/shared") == ["a-own"]


# -- XSA-425 ------------------------------------------------------------------


@pytest.mark.parametrize("queued", ["full-rings", "partial-request", "watch-events"])
def test_xsa425_release_with_queued_io(start: Callable[..., Harness], queued: str) -> None:
    """XSA-425 (section 10): RELEASE of a domain while it has queued I/O
    (replies it never consumes and requests left in its ring, half a request,
    or pending watch events) frees it cleanly: the daemon stays up, others are
    served, and the domid can be introduced again (soft reset / kexec)."""
    h = start()
    g = h.guest(5)
    other = h.guest(6)
    g.write("v", "x" * 400)
    if queued == "watch-events":
        g.watch("v", "tok")
        assert g.next_event() == ("v", "tok")
        for i in range(30):
            h.dom0.write("/local/domain/5/v", str(i) * 300)
    else:
        if queued == "full-rings":
            # Fill the request ring with READs and never read a reply: the
            # daemon answers until the response ring and its queue are
            # full, then leaves the rest of the requests in the ring.
            msgs = b""
            while len(msgs) < 1000:
                g.req_id += 1
                msgs += HEADER.pack(XS_READ, g.req_id, 0, 2) + b"v\0"
        else:  # a header announcing 100 bytes, and only half of them
            msgs = HEADER.pack(XS_WRITE, 99, 0, 100) + b"w\0" + b"z" * 48
        cons, prod, _, _ = struct.unpack_from("=IIII", g.page, 2048)
        for i, byte in enumerate(msgs):
            g.page[(prod + i) % 1024] = byte
        g.set_indices(req_prod=(prod + len(msgs)) & 0xFFFF_FFFF)
        g.notify()
    time.sleep(0.1)
    _, _, rsp_cons, rsp_prod = struct.unpack_from("=IIII", g.page, 2048)
    if queued != "partial-request":
        assert rsp_prod != rsp_cons, "nothing is queued for the guest"
    h.dom0.do(XS_RELEASE, strings("5"))
    # The guest keeps kicking and scribbling after its release.
    g.set_indices(req_prod=struct.unpack_from("=I", g.page, 2052)[0] + 3)
    for _ in range(5):
        g.notify()
    assert not h.dom0.is_introduced(5)
    other.write("alive", "yes")
    assert h.dom0.read("/local/domain/6/alive") == b"yes"
    h.drop(g)
    # RELEASE counts as the domain's end: its own nodes (its home) are gone
    # (spec 3.6); the toolstack sets the domid up again.
    again = h.guest(5)
    again.write("v", "new")
    assert h.dom0.read("/local/domain/5/v") == b"new"
    h.assert_alive()


# -- XSA-483 ------------------------------------------------------------------


def test_xsa483_node_count_reset_on_domid_reuse(start: Callable[..., Harness]) -> None:
    """XSA-483 (spec 3.6, 6): after a domain dies and a new one gets its
    domid, the node count starts from scratch (CONTROL ``quota <domid>``),
    and the new domain can create exactly as many nodes as the old one."""
    h = start(nodes_quota=10)
    g = h.guest(5)
    first = _fill(g, "n")
    assert control_nodes(h.dom0, 5) >= first
    h.kill(5)
    h.drop(g)
    h.guest(5)  # dom0 re-creates the home, owned by 5: one node
    assert control_nodes(h.dom0, 5) == 1
    again = h.guests[-1]
    assert _fill(again, "m") == first
