"""The boot storm: N virtual machines started and shut down all at once.

The shape is that of mirage/ocaml-xenstore-server's ``bench/bench.ml`` (the
benchmark of the OCaml xenstore server, written against its Lwt client):
what a toolstack (xapi) does in xenstore for every VM it starts and stops,
with all N lifecycles running in parallel. Every path lives under a prefix
(``/bench``), so that it runs against any daemon:

* set-up (not timed), one transaction: remove and re-create
  ``/bench/local/domain``, ``/bench/vm``, ``/bench/vss`` and ``/bench/xapi``
  (owner 0, no access for others); then domain 0's own start (as the
  original's ``initial_setup``);
* per VM, domain ids 1..N, each on its own connection with one request
  outstanding at a time (as the Lwt client does), **Domain.make**: one
  transaction removing any old ``/bench/local/domain/<d>``, creating it and
  setting its permissions, asking *outside the transaction* whether
  ``/bench/vm/uuid-<d>`` exists (the "immediate" read), creating that and
  ``/bench/vss/uuid-<d>`` with their permissions and values, and ten
  directories of the domain with read-only or read-write permissions; a
  second transaction with the domain's platform data and control keys;
* **Device.add** for three VBDs: one transaction each with the existence
  reads, removal of old front- and backend, creation of the frontend
  (``.../device/vbd/<n>``), backend (``/bench/local/domain/0/backend/vbd/<d>/<n>``),
  hotplug and private directories (``/bench/xapi/<d>/...``) with their
  permissions, and the links between them;
* **shutdown**: a transaction writing ``control/shutdown`` (after an
  immediate check that the domain still exists);
* **destroy**: list the frontends (directory of ``device``, of each kind,
  the ``backend`` link of each device), hard-shut each device (backend
  ``online`` = 0, frontend removed, device state removed), remove the VM's
  ``domains`` entry and, once empty, its vm and vss directories, the domain
  directory, and its backends of every type.

Every transaction is retried from the start when it fails with EAGAIN (at
its commit, or at any request inside it); the count of such retries is part
of the result. ``GET_DOMAIN_PATH`` is asked wherever the original asks it.
The original's backend-link parser does not know about the prefix, so its
destroy never finds a device to shut down; here it does, so that the
devices' removal is part of the load.

Each lifecycle is a plain generator that yields requests ``(op, tx_id,
payload)`` and receives replies ``(type, payload)``; one ``selectors`` loop
over raw sockets drives all of them, so the load generator costs little
next to the daemon. At the end the store must hold no VM under
``/bench/local/domain`` (nor under ``/bench/vm``, nor a VM's backend): a
daemon that answers errors cannot look fast.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

from bench.workloads import HEADER, BenchError, Wire, parse

# xs_wire.h
DIRECTORY, READ = 1, 2
TRANSACTION_START, TRANSACTION_END = 6, 7
GET_DOMAIN_PATH, WRITE, MKDIR, RM, SET_PERMS = 10, 11, 12, 13, 14
ERROR = 16

Request = tuple[int, int, bytes]
Reply = tuple[int, bytes]
#: A lifecycle: yields requests, is sent their replies, returns a value.
Steps = Generator[Request, Reply, object]

PREFIX = "/bench"
KINDS = ("vif", "vbd", "tap", "pci", "vfs", "vfb", "vkbd")
#: Seconds without any reply before the storm is declared stuck.
STALL_TIMEOUT = 120.0


class StormError(BenchError):
    """A daemon answered the storm with something it must not."""


class _Again(Exception):
    """EAGAIN inside a transaction: the wrapper starts it over."""


@dataclass
class Counters:
    requests: int = 0
    eagain: int = 0
    transactions: int = 0


@dataclass
class StormResult:
    vms: int
    seconds: float
    eagain: int
    requests: int
    transactions: int


# ------------------------------------------------------------ requests


def _error(payload: bytes) -> str:
    return payload.rstrip(b"\0").decode(errors="replace")


def call(op: int, tx: int, payload: bytes, allow: tuple[str, ...] = ()) -> Generator[
    Request, Reply, bytes | None
]:
    """One request; its reply payload, or None for an error in ``allow``.

    EAGAIN inside a transaction raises ``_Again``; any other error raises
    ``StormError``."""
    type_, reply = yield (op, tx, payload)
    if type_ == ERROR:
        name = _error(reply)
        if name == "EAGAIN" and tx:
            raise _Again
        if name in allow:
            return None
        raise StormError(f"op {op} {payload!r} (tx {tx}) failed: {name}")
    if type_ != op:
        raise StormError(f"op {op} {payload!r} answered with type {type_}")
    return reply


def _z(path: str) -> bytes:
    return path.encode() + b"\0"


def read_opt(tx: int, path: str) -> Generator[Request, Reply, bytes | None]:
    return (yield from call(READ, tx, _z(path), ("ENOENT",)))


def write(tx: int, path: str, value: str) -> Generator[Request, Reply, None]:
    yield from call(WRITE, tx, _z(path) + value.encode())


def mkdir(tx: int, path: str) -> Generator[Request, Reply, None]:
    yield from call(MKDIR, tx, _z(path))


def rm(tx: int, path: str, quiet: bool = False) -> Generator[Request, Reply, None]:
    """RM; ``quiet``: any error (ENOENT) ignored, as the original's ``catch``."""
    allow = ("ENOENT", "EINVAL", "EACCES", "EPERM") if quiet else ()
    yield from call(RM, tx, _z(path), allow)


def setperms(tx: int, path: str, perms: list[str]) -> Generator[Request, Reply, None]:
    yield from call(SET_PERMS, tx, _z(path) + b"".join(_z(p) for p in perms))


def readdir(path: str) -> Generator[Request, Reply, list[str]]:
    """DIRECTORY outside a transaction; [] if the node does not exist."""
    reply = yield from call(DIRECTORY, 0, _z(path), ("ENOENT",))
    if not reply:
        return []
    return [name.decode() for name in reply.split(b"\0") if name]


def getdomainpath(domid: int, prefix: str) -> Generator[Request, Reply, str]:
    reply = yield from call(GET_DOMAIN_PATH, 0, b"%d\0" % domid)
    assert reply is not None
    return prefix + reply.rstrip(b"\0").decode()


def transaction(body: Callable[[int], Steps], counters: Counters) -> Steps:
    """START, ``body(tx)``, END commit; all of it again on EAGAIN."""
    while True:
        type_, reply = yield (TRANSACTION_START, 0, b"\0")
        if type_ == ERROR:
            if _error(reply) == "EAGAIN":
                counters.eagain += 1
                continue
            raise StormError(f"TRANSACTION_START failed: {_error(reply)}")
        tx = int(reply.rstrip(b"\0"))
        try:
            result = yield from body(tx)
        except _Again:
            counters.eagain += 1
            yield (TRANSACTION_END, tx, b"F\0")  # whatever it answers
            continue
        type_, reply = yield (TRANSACTION_END, tx, b"T\0")
        if type_ == ERROR:
            if _error(reply) == "EAGAIN":
                counters.eagain += 1
                continue
            raise StormError(f"TRANSACTION_END failed: {_error(reply)}")
        counters.transactions += 1
        return result


# ------------------------------------------------------------ the lifecycle


@dataclass(frozen=True)
class Device:
    frontend: int
    backend: int
    kind: str
    devid: int


def _ro(domid: int) -> list[str]:
    """Owner 0, domain ``domid`` may read (the original's ``roperm``)."""
    return ["n0", f"r{domid}"]


def _rw(domid: int) -> list[str]:
    """Owned by ``domid`` (the original's ``rwperm``)."""
    return [f"n{domid}"]


class Lifecycles:
    """The storm's steps for one prefix; ``counters`` add up over all VMs."""

    def __init__(self, prefix: str = PREFIX, counters: Counters | None = None) -> None:
        self.prefix = prefix
        self.counters = counters if counters is not None else Counters()
        self.private = f"{prefix}/xapi"

    def tx(self, body: Callable[[int], Steps]) -> Steps:
        return transaction(body, self.counters)

    # -- paths

    def frontend_path(self, d: Device) -> Generator[Request, Reply, str]:
        dom = yield from getdomainpath(d.frontend, self.prefix)
        return f"{dom}/device/{d.kind}/{d.devid}"

    def backend_path(self, d: Device) -> Generator[Request, Reply, str]:
        dom = yield from getdomainpath(d.backend, self.prefix)
        return f"{dom}/backend/{d.kind}/{d.frontend}/{d.devid}"

    def parse_backend_link(self, link: str) -> tuple[int, str, int] | None:
        """``<prefix>/local/domain/<b>/backend/<kind>/<f>/<devid>`` -> (b, kind, devid)."""
        if not link.startswith(self.prefix + "/"):
            return None
        parts = link[len(self.prefix) :].split("/")
        if len(parts) != 8 or parts[1:3] != ["local", "domain"] or parts[4] != "backend":
            return None
        if parts[5] not in KINDS or not parts[3].isdigit() or not parts[7].isdigit():
            return None
        return int(parts[3]), parts[5], int(parts[7])

    # -- the steps of bench.ml

    def initial_setup(self) -> Steps:
        paths = [f"{self.prefix}/local/domain", f"{self.prefix}/vm", f"{self.prefix}/vss",
                 self.private]

        def body(tx: int) -> Steps:
            # The original removes the whole prefix; here only its own
            # subtrees, so that the other workloads' nodes stay.
            for path in paths:
                yield from rm(tx, path, quiet=True)
            for path in paths:
                yield from mkdir(tx, path)
                yield from setperms(tx, path, _rw(0))
            return None

        yield from self.tx(body)
        yield from self.vm_start(0)
        return None

    def domain_make(self, domid: int) -> Steps:
        dom = yield from getdomainpath(domid, self.prefix)
        uuid = f"uuid-{domid}"
        vm = f"{self.prefix}/vm/{uuid}"
        vss = f"{self.prefix}/vss/{uuid}"

        def first(tx: int) -> Steps:
            yield from rm(tx, dom, quiet=True)
            yield from mkdir(tx, dom)
            yield from setperms(tx, dom, _ro(domid))
            # "immediate": outside the transaction, while it is open.
            if (yield from read_opt(0, vm)) is None:
                yield from mkdir(tx, vm)
                yield from setperms(tx, vm, _ro(domid))
                yield from write(tx, f"{vm}/uuid", uuid)
                yield from write(tx, f"{vm}/name", "name")
            yield from write(tx, f"{vm}/domains/{domid}", dom)
            yield from mkdir(tx, vss)
            yield from setperms(tx, vss, _rw(domid))
            yield from write(tx, f"{dom}/vm", vm)
            yield from write(tx, f"{dom}/vss", vss)
            yield from write(tx, f"{dom}/name", "name")
            for sub in ("cpu", "memory"):
                yield from mkdir(tx, f"{dom}/{sub}")
                yield from setperms(tx, f"{dom}/{sub}", _ro(domid))
            for sub in ("device", "error", "drivers", "control", "attr", "data", "messages",
                        "vm-data"):
                yield from mkdir(tx, f"{dom}/{sub}")
                yield from setperms(tx, f"{dom}/{sub}", _rw(domid))
            return None

        def second(tx: int) -> Steps:
            yield from write(tx, f"{dom}/xsdata", "xsdata")
            yield from write(tx, f"{dom}/platform/platformdata", "platformdata")
            yield from write(tx, f"{dom}/bios-strings/bios_strings", "bios_strings")
            yield from write(tx, f"{dom}/action-request", "poweroff")
            yield from write(tx, f"{dom}/control/platform-feature-multiprocessor-suspend", "1")
            yield from write(tx, f"{dom}/unique-domain-id", uuid)
            return None

        yield from self.tx(first)
        yield from self.tx(second)
        return None

    def device_add(self, d: Device) -> Steps:
        front = yield from self.frontend_path(d)
        back = yield from self.backend_path(d)
        hotplug = f"{self.private}/{d.frontend}/hotplug/{d.kind}/{d.devid}"
        private = f"{self.private}/{d.frontend}/private/{d.kind}/{d.devid}"

        def body(tx: int) -> Steps:
            # As the original: this one is not under the prefix.
            yield from read_opt(tx, f"/local/domain/{d.backend}/vm")
            yield from read_opt(tx, front)
            yield from rm(tx, front, quiet=True)
            yield from rm(tx, back, quiet=True)
            yield from mkdir(tx, front)
            yield from setperms(tx, front, [f"n{d.frontend}", f"r{d.backend}"])
            yield from mkdir(tx, back)
            yield from setperms(tx, back, [f"n{d.backend}", f"r{d.frontend}"])
            yield from mkdir(tx, hotplug)
            yield from setperms(tx, hotplug, _rw(d.backend))
            yield from write(tx, f"{front}/backend", back)
            yield from write(tx, f"{back}/frontend", front)
            yield from mkdir(tx, private)
            yield from setperms(tx, private, _rw(d.backend))
            yield from write(tx, f"{private}/backend-kind", d.kind)
            yield from write(tx, f"{private}/backend-id", str(d.backend))
            return None

        yield from self.tx(body)
        return None

    def vm_start(self, domid: int) -> Steps:
        yield from self.domain_make(domid)
        for devid in range(3):
            yield from self.device_add(Device(domid, 0, "vbd", devid))
        return None

    def shutdown(self, domid: int) -> Steps:
        path = (yield from getdomainpath(domid, self.prefix)) + "/control/shutdown"
        dom = yield from getdomainpath(domid, self.prefix)

        def body(tx: int) -> Steps:
            if (yield from read_opt(0, dom)) is None:  # immediate
                return False
            yield from write(tx, path, "halt")
            return True

        yield from self.tx(body)
        return None

    def list_frontends(self, domid: int) -> Generator[Request, Reply, list[Device]]:
        dom = yield from getdomainpath(domid, self.prefix)
        devices = []
        for kind in (yield from readdir(f"{dom}/device")):
            if kind not in KINDS:
                continue
            directory = f"{dom}/device/{kind}"
            for name in (yield from readdir(directory)):
                if not name.isdigit():
                    continue
                link = yield from read_opt(0, f"{directory}/{name}/backend")
                parsed = self.parse_backend_link(link.decode()) if link is not None else None
                if parsed is not None:
                    backend, bkind, _bdevid = parsed
                    devices.append(Device(domid, backend, bkind, int(name)))
        return devices

    def hard_shutdown(self, d: Device) -> Steps:
        back = yield from self.backend_path(d)
        front = yield from self.frontend_path(d)
        yield from write(0, f"{back}/online", "0")
        yield from rm(0, front, quiet=True)
        # rm_device_state
        front = yield from self.frontend_path(d)
        back = yield from self.backend_path(d)
        backend_dom = yield from getdomainpath(d.backend, self.prefix)
        frontend_dom = yield from getdomainpath(d.frontend, self.prefix)
        for path in (
            front,
            back,
            f"{backend_dom}/error/backend/{d.kind}/{d.frontend}",
            f"{frontend_dom}/error/device/{d.kind}/{d.devid}",
        ):
            yield from rm(0, path, quiet=True)
        return None

    def destroy(self, domid: int) -> Steps:
        dom = yield from getdomainpath(domid, self.prefix)
        for device in (yield from self.list_frontends(domid)):
            yield from self.hard_shutdown(device)
        vm = yield from read_opt(0, f"{dom}/vm")
        vss = yield from read_opt(0, f"{dom}/vss")
        if vm is not None:
            vm_path = vm.decode()
            yield from rm(0, f"{vm_path}/domains/{domid}", quiet=True)
            if not (yield from readdir(f"{vm_path}/domains")):
                yield from rm(0, vm_path, quiet=True)
                if vss is not None:
                    yield from rm(0, vss.decode(), quiet=True)
        yield from rm(0, dom, quiet=True)
        backends = (yield from getdomainpath(0, self.prefix)) + "/backend"
        for kind in (yield from readdir(backends)):
            yield from rm(0, f"{backends}/{kind}/{domid}", quiet=True)
        return None

    def vm_cycle(self, domid: int) -> Steps:
        yield from self.vm_start(domid)
        yield from self.shutdown(domid)
        yield from self.destroy(domid)
        return None


# ------------------------------------------------------------ the driver


class _Conn:
    __slots__ = ("sock", "buffer", "steps", "op", "req_id", "done")

    def __init__(self, path: str, steps: Steps) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Blocking: oxenstored's listen backlog is short, and a connect with
        # a timeout fails (EAGAIN) instead of waiting for it to be accepted.
        self.sock.connect(path)
        self.sock.settimeout(STALL_TIMEOUT)
        self.buffer = bytearray()
        self.steps = steps
        self.op = 0
        self.req_id = 0
        self.done = False

    def send(self, request: Request) -> None:
        op, tx, payload = request
        self.op = op
        self.req_id += 1
        self.sock.sendall(HEADER.pack(op, self.req_id, tx, len(payload)) + payload)


def drive(path: str, lifecycles: list[Steps], counters: Counters) -> float:
    """Run every lifecycle on its own connection, all at once; seconds taken
    from the first request to the last reply."""
    conns = [_Conn(path, steps) for steps in lifecycles]
    selector = selectors.DefaultSelector()
    try:
        for conn in conns:
            selector.register(conn.sock, selectors.EVENT_READ, conn)
        start = time.perf_counter()
        running = 0
        for conn in conns:
            try:
                conn.send(next(conn.steps))
                running += 1
            except StopIteration:
                conn.done = True
        requests = running
        while running:
            ready = selector.select(timeout=STALL_TIMEOUT)
            if not ready:
                raise StormError(f"no reply for {STALL_TIMEOUT:g} s ({running} VMs unfinished)")
            for key, _mask in ready:
                conn = key.data
                chunk = conn.sock.recv(65536)
                if not chunk:
                    raise StormError("the daemon closed a connection")
                conn.buffer += chunk
                for type_, req_id, payload in parse(conn.buffer):
                    if req_id != conn.req_id:
                        raise StormError(f"reply #{req_id} to request #{conn.req_id}")
                    try:
                        request = conn.steps.send((type_, payload))
                    except StopIteration:
                        conn.done = True
                        running -= 1
                        selector.unregister(conn.sock)
                        break
                    conn.send(request)
                    requests += 1
        seconds = time.perf_counter() - start
        counters.requests += requests
        return seconds
    finally:
        selector.close()
        for conn in conns:
            conn.sock.close()


def run_one(path: str, steps: Steps, counters: Counters) -> None:
    """One lifecycle alone (the set-up), on its own connection."""
    drive(path, [steps], counters)


def leftovers(path: str, prefix: str = PREFIX) -> list[str]:
    """What the storm must have removed but is still there."""
    wire = Wire(path)

    def listing(node: str) -> list[str]:
        return [n.decode() for n in wire.call(DIRECTORY, _z(node)).split(b"\0") if n]

    try:
        found = [f"{prefix}/local/domain/{d}" for d in listing(f"{prefix}/local/domain")
                 if d != "0"]
        found += [f"{prefix}/vm/{v}" for v in listing(f"{prefix}/vm") if v != "uuid-0"]
        found += [f"{prefix}/vss/{v}" for v in listing(f"{prefix}/vss") if v != "uuid-0"]
        backend = f"{prefix}/local/domain/0/backend"
        for kind in listing(backend):
            found += [f"{backend}/{kind}/{d}" for d in listing(f"{backend}/{kind}") if d != "0"]
    except BenchError as exc:
        raise StormError(f"reading the store after the storm: {exc}") from exc
    finally:
        wire.close()
    return found


def storm(path: str, vms: int, prefix: str = PREFIX) -> StormResult:
    """Set up, run ``vms`` parallel lifecycles (domains 1..vms), check the store."""
    setup = Lifecycles(prefix)
    run_one(path, setup.initial_setup(), setup.counters)
    life = Lifecycles(prefix)
    seconds = drive(path, [life.vm_cycle(d) for d in range(1, vms + 1)], life.counters)
    left = leftovers(path, prefix)
    if left:
        raise StormError(f"{len(left)} VMs' nodes left after the storm, e.g. {left[:3]}")
    return StormResult(vms, seconds, life.counters.eagain, life.counters.requests,
                       life.counters.transactions)


def requests_of(steps: Steps, replies: Callable[[Request], Reply]) -> Iterator[Request]:
    """Run a lifecycle against a reply function (for tests and inspection)."""
    try:
        request = next(steps)
        while True:
            yield request
            request = steps.send(replies(request))
    except StopIteration:
        return
