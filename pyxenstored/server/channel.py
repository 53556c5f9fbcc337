"""The live-update channel between the old and the new instance (issue 6).

A Unix stream socket pair: the old instance keeps one end, the new program
inherits the other (its number in ``PYXENSTORED_TAKEOVER_FD``). Messages
are CBOR values behind a 4-byte length; descriptors travel as
``SCM_RIGHTS`` on one-byte messages of their own, at most
``FDS_PER_MESSAGE`` at a time (the kernel takes 253). Everything here
blocks, with the socket's own timeout: both sides use it while nothing
else may run.
"""

from __future__ import annotations

import array
import socket
import struct
from typing import Any

import cbor2

#: The environment variable naming the new program's end of the channel.
CHANNEL_ENV = "PYXENSTORED_TAKEOVER_FD"
#: The environment variable naming the write end of the ``--no-fork``
#: anchor's pipe (``server/anchor.py``), passed from instance to instance.
ANCHOR_ENV = "PYXENSTORED_ANCHOR_FD"
FDS_PER_MESSAGE = 250
_LENGTH = struct.Struct("<I")
_FD = array.array("i")


class ChannelClosed(EOFError):
    """The other instance closed its end (it exited, or gave up)."""


def send_message(sock: socket.socket, value: Any) -> None:
    data = cbor2.dumps(value)
    sock.sendall(_LENGTH.pack(len(data)) + data)


def receive_message(sock: socket.socket) -> Any:
    (length,) = _LENGTH.unpack(_receive_exactly(sock, _LENGTH.size))
    return cbor2.loads(_receive_exactly(sock, length))


def _receive_exactly(sock: socket.socket, count: int) -> bytes:
    """Exactly ``count`` bytes: never more, so that a read does not reach
    into the descriptor messages that may follow."""
    parts = []
    while count:
        chunk = sock.recv(min(count, 1 << 20))
        if not chunk:
            raise ChannelClosed("the other instance closed the live-update channel")
        parts.append(chunk)
        count -= len(chunk)
    return b"".join(parts)


def send_fds(sock: socket.socket, fds: list[int]) -> None:
    for start in range(0, len(fds), FDS_PER_MESSAGE):
        socket.send_fds(sock, [b"F"], fds[start : start + FDS_PER_MESSAGE])


def receive_fds(sock: socket.socket, count: int) -> list[int]:
    """``count`` descriptors sent by ``send_fds``, close-on-exec, in order."""
    received: list[int] = []
    try:
        while len(received) < count:
            want = min(FDS_PER_MESSAGE, count - len(received))
            # Not socket.recv_fds: before Python 3.12 it drops its flags, and
            # descriptors that are not close-on-exec would pile up in every
            # later instance.
            data, ancillary, flags, _ = sock.recvmsg(
                1, socket.CMSG_LEN(want * _FD.itemsize), socket.MSG_CMSG_CLOEXEC)
            fds = array.array("i")
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
            received.extend(fds)
            if not data:
                raise ChannelClosed("the other instance closed the live-update channel")
            if len(fds) != want or flags & socket.MSG_CTRUNC:
                raise OSError(f"expected {want} descriptors in a message, got {len(fds)}")
    except BaseException:
        for fd in received:
            socket.close(fd)
        raise
    return received
