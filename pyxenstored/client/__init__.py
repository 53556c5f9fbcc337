"""An async (trio) xenstore client.

::

    async with open_client("/var/run/xenstored/socket") as client:
        await client.write("/a", b"1")
        async with client.watch("/a") as events:
            async for event in events:
                ...
        await client.run_transaction(lambda tx: tx.write("/b", b"2"))

Modules, one job each: ``connection`` (framing and the req_id multiplexer),
``payloads`` (request and reply wire formats), ``nodeops`` (the node ops a
transaction shares), ``transaction`` (transactions and EAGAIN retry),
``watch`` (event routing and the per-watch queues), ``client`` (the op set
and the ways to connect), ``ring`` (a simulated guest's transport over a
shared ring page).
"""

from pyxenstored.client.client import DEFAULT_SOCKET_PATH as DEFAULT_SOCKET_PATH
from pyxenstored.client.client import Client as Client
from pyxenstored.client.client import default_socket_path as default_socket_path
from pyxenstored.client.client import open_client as open_client
from pyxenstored.client.client import open_stream_client as open_stream_client
from pyxenstored.client.connection import Connection as Connection
from pyxenstored.client.connection import PendingReply as PendingReply
from pyxenstored.client.errors import ConnectionClosed as ConnectionClosed
from pyxenstored.client.errors import MalformedReply as MalformedReply
from pyxenstored.client.nodeops import NodeOperations as NodeOperations
from pyxenstored.client.ring import Doorbell as Doorbell
from pyxenstored.client.ring import RingStream as RingStream
from pyxenstored.client.ring import open_ring_client as open_ring_client
from pyxenstored.client.transaction import DEFAULT_RETRY_POLICY as DEFAULT_RETRY_POLICY
from pyxenstored.client.transaction import RetryPolicy as RetryPolicy
from pyxenstored.client.transaction import Transaction as Transaction
from pyxenstored.client.watch import DEFAULT_MAX_QUEUED as DEFAULT_MAX_QUEUED
from pyxenstored.client.watch import WatchEvent as WatchEvent
from pyxenstored.client.watch import WatchRouter as WatchRouter
from pyxenstored.client.watch import WatchStream as WatchStream
from pyxenstored.protocol.errors import XenstoreError as XenstoreError
from pyxenstored.protocol.ops import Op as Op
