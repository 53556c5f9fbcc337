"""A minimal simulated guest: the domU side of a xenstore ring.

It plays what a guest kernel's xenbus driver does, with the stand-in
hypervisor's conventions (docs/testing.md): the ring page is the file
``$FAKEXEN_DIR/dom<N>/ring`` mapped shared, the guest's event channel is a
datagram socket bound at ``$FAKEXEN_DIR/evtchn/<N>-<port>.sock``, and a
notification is one datagram to the socket the ``<N>-<port>.peer`` symlink
names once the daemon has bound to the port.

Ring layout (xs_wire.h, struct xenstore_domain_interface): req[1024] at 0,
rsp[1024] at 1024, then u32 req_cons, req_prod, rsp_cons, rsp_prod,
server_features, connection, error at 2048.. (native endian). Indices are
free-running; byte k lives at buf[k % 1024].
"""

from __future__ import annotations

import mmap
import select
import struct
import time
from pathlib import Path

from fakexen_support import REPLY_TIMEOUT, allocate_unbound_port

RING_SIZE = 1024
REQ_OFF, RSP_OFF = 0, 1024
IDX = struct.Struct("=IIII")  # req_cons, req_prod, rsp_cons, rsp_prod
IDX_OFF = 2048
HEADER = struct.Struct("=IIII")  # type, req_id, tx_id, len
PAGE_SIZE = 4096


class Guest:
    """Domain ``domid`` with its ring page and an unbound event channel."""

    def __init__(self, fakexen_dir: Path | str, domid: int) -> None:
        self.root = Path(fakexen_dir)
        self.domid = domid
        ring = self.root / f"dom{domid}" / "ring"
        ring.parent.mkdir(parents=True, exist_ok=True)
        if not ring.exists():
            ring.write_bytes(bytes(PAGE_SIZE))
        with open(ring, "r+b") as f:
            self.page = mmap.mmap(f.fileno(), PAGE_SIZE, mmap.MAP_SHARED)
        self.sock, self.port = allocate_unbound_port(self.root / "evtchn", domid)
        self.req_id = 0

    def close(self) -> None:
        self.sock.close()
        (self.root / "evtchn" / f"{self.domid}-{self.port}.sock").unlink(missing_ok=True)
        self.page.close()

    # -- event channel ---------------------------------------------------

    def notify(self) -> bool:
        """Kick the daemon; False while nobody has bound to our port."""
        peer = self.root / "evtchn" / f"{self.domid}-{self.port}.peer"
        try:
            self.sock.sendto(b"kick", str(peer))
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        except BlockingIOError:
            pass  # peer's queue is full: it has a notification pending anyway
        return True

    def wait_event(self, timeout: float) -> bool:
        """Wait for a notification and consume all queued ones."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        while True:
            try:
                self.sock.recv(64)
            except BlockingIOError:
                break
        return bool(ready)

    # -- ring ------------------------------------------------------------

    def _indices(self) -> tuple[int, int, int, int]:
        return IDX.unpack_from(self.page, IDX_OFF)

    def write_req(self, data: bytes, timeout: float = REPLY_TIMEOUT) -> None:
        """Copy ``data`` into req[], publishing req_prod after the bytes."""
        deadline = time.monotonic() + timeout
        while data:
            cons, prod, _, _ = self._indices()
            space = RING_SIZE - ((prod - cons) & 0xFFFFFFFF)
            if space == 0:
                if time.monotonic() > deadline:
                    raise TimeoutError("request ring stays full")
                self.wait_event(0.05)
                continue
            off = prod % RING_SIZE
            n = min(space, RING_SIZE - off, len(data))
            self.page[REQ_OFF + off : REQ_OFF + off + n] = data[:n]
            struct.pack_into("=I", self.page, IDX_OFF + 4, (prod + n) & 0xFFFFFFFF)
            data = data[n:]
            self.notify()

    def read_rsp(self, n: int, timeout: float = REPLY_TIMEOUT) -> bytes:
        """Read exactly ``n`` bytes from rsp[], advancing rsp_cons."""
        deadline = time.monotonic() + timeout
        out = b""
        while len(out) < n:
            _, _, cons, prod = self._indices()
            avail = (prod - cons) & 0xFFFFFFFF
            if avail > RING_SIZE:
                raise RuntimeError(f"bad response indices cons={cons} prod={prod}")
            if avail == 0:
                if time.monotonic() > deadline:
                    raise TimeoutError("no reply from the daemon")
                self.wait_event(0.05)
                continue
            off = cons % RING_SIZE
            k = min(avail, RING_SIZE - off, n - len(out))
            out += bytes(self.page[RSP_OFF + off : RSP_OFF + off + k])
            struct.pack_into("=I", self.page, IDX_OFF + 8, (cons + k) & 0xFFFFFFFF)
            self.notify()
        return out

    def read_message(self, timeout: float = REPLY_TIMEOUT) -> tuple[int, int, bytes]:
        """The next message from the daemon: (type, req_id, payload)."""
        rtype, req_id, _, length = HEADER.unpack(self.read_rsp(HEADER.size, timeout))
        return rtype, req_id, self.read_rsp(length, timeout)

    def set_indices(self, **indices: int) -> None:
        """Misbehave: overwrite ring indices (req_cons, req_prod, rsp_cons, rsp_prod)."""
        names = ("req_cons", "req_prod", "rsp_cons", "rsp_prod")
        for name, value in indices.items():
            struct.pack_into("=I", self.page, IDX_OFF + 4 * names.index(name), value)

    def request(self, msg_type: int, payload: bytes, tx_id: int = 0) -> tuple[int, bytes]:
        """Send one message and return (reply type, reply payload)."""
        self.req_id += 1
        self.write_req(HEADER.pack(msg_type, self.req_id, tx_id, len(payload)) + payload)
        rtype, req_id, _, length = HEADER.unpack(self.read_rsp(HEADER.size))
        body = self.read_rsp(length)
        if req_id != self.req_id:
            raise RuntimeError(f"reply for request {req_id}, expected {self.req_id}")
        return rtype, body


if __name__ == "__main__":  # pragma: no cover - manual use
    import argparse
    import os

    ap = argparse.ArgumentParser(description="read one node as a simulated guest")
    ap.add_argument("domid", type=int)
    ap.add_argument("path")
    ns = ap.parse_args()
    g = Guest(os.environ["FAKEXEN_DIR"], ns.domid)
    print(f"dom{ns.domid} port {g.port}: INTRODUCE it, then press Enter")
    input()
    print(g.request(2, ns.path.encode() + b"\0"))
