"""The live-update channel: messages, and descriptors that arrive close-on-exec."""

from __future__ import annotations

import os
import socket

import pytest

from pyxenstored.server.channel import (
    FDS_PER_MESSAGE,
    ChannelClosed,
    receive_fds,
    receive_message,
    send_fds,
    send_message,
)


def test_messages_then_more_descriptors_than_one_message_holds() -> None:
    ours, theirs = socket.socketpair()
    pairs = [socket.socketpair() for _ in range(FDS_PER_MESSAGE + 7)]
    try:
        send_message(ours, {"image": b"x" * 50_000, "n": len(pairs)})
        send_fds(ours, [a.fileno() for a, _ in pairs])
        send_message(ours, {"after": True})
        assert receive_message(theirs) == {"image": b"x" * 50_000, "n": len(pairs)}
        fds = receive_fds(theirs, len(pairs))
        assert receive_message(theirs) == {"after": True}
        # Each descriptor is the socket sent, and none leaks into an exec'd child.
        for fd, (_, peer) in zip(fds, pairs, strict=True):
            assert not os.get_inheritable(fd)
            os.write(fd, b"!")
            assert peer.recv(1) == b"!"
            os.close(fd)
    finally:
        for a, b in pairs:
            a.close()
            b.close()
        ours.close()
        theirs.close()


def test_a_closed_channel_says_so() -> None:
    ours, theirs = socket.socketpair()
    ours.close()
    with pytest.raises(ChannelClosed):
        receive_message(theirs)
    with pytest.raises(ChannelClosed):
        receive_fds(theirs, 1)
    theirs.close()
