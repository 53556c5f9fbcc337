"""The live-update image: the whole state, every connection included (issue 6).

Beyond a snapshot (``image.snapshot``) it carries what only a running
daemon has: every connection under its own id (sockets too, by the file
descriptor the new program inherits), its watches in registration order,
its open transactions with their private changes, its queued output with
each message's age, and what the shell holds for it (``shell``: a socket's
unhandled input and unsent bytes, a ring's state). Nothing is lost, so
nothing needs to fire again: the new instance goes on where the old one
stopped.
"""

from typing import Any

from pyxenstored.effects import AttachRing
from pyxenstored.engine import Engine
from pyxenstored.engine.connection import Connection
from pyxenstored.persist import image
from pyxenstored.persist.image import ImageError, Plain, node_in, node_out
from pyxenstored.transactions import TransactionView
from pyxenstored.transactions.transaction import Record
from pyxenstored.watches import Watch

SCHEMA = 1


def transaction_out(tx: TransactionView) -> Plain:
    return {
        "id": tx.tx_id,
        "limit": tx.node_limit,
        "accessed": list(tx.accessed.items()),
        "nodes": [[path, None if node is None else node_out(node)]
                  for path, node in tx.nodes.items()],
        "dirty": list(tx.dirty),
        "events": list(tx.events.items()),
        "deltas": list(tx.node_deltas.items()),
        "created": tx.created_node,
        "failed": tx.failed,
        "replay_limit": tx.replay_limit,
        "recording": _recording_out(tx.recording),
    }


def _recording_out(recording: list[Record] | None) -> list[list[Any]] | None:
    """``[op, payload, reply]`` per request, or None (not replayable). CBOR
    keeps bytes (a payload sent) apart from text (an error name)."""
    if recording is None:
        return None
    return [list(record) for record in recording]


def _recording_in(saved: list[list[Any]] | None) -> list[Record] | None:
    """An image without one (from a version before replay) is not replayable."""
    if saved is None:
        return None
    return [(op, payload, reply) for op, payload, reply in saved]


def transaction_in(engine: Engine, saved: Plain) -> TransactionView:
    tx = TransactionView(engine.tree, saved["id"], saved["limit"])
    tx.accessed.update((path, generation) for path, generation in saved["accessed"])
    tx.nodes.update((path, None if entry is None else node_in(entry))
                    for path, entry in saved["nodes"])
    tx.dirty.update(dict.fromkeys(saved["dirty"]))
    tx.events.update((path, mode) for path, mode in saved["events"])
    tx.node_deltas.update((domid, delta) for domid, delta in saved["deltas"])
    tx.created_node = saved["created"]
    tx.failed = saved["failed"]
    tx.replay_limit = saved.get("replay_limit", 0)
    tx.recording = _recording_in(saved.get("recording"))
    return tx


def connection_out(conn: Connection, now: float, shell: Plain, queued: list[bytes]) -> Plain:
    """One connection; ``queued`` are replies to add after its own output
    (the ``OK`` the new instance owes the live-update requester)."""
    watches = sorted(conn.watches.values(), key=lambda watch: watch.seq)
    output: list[Any] = list(conn.outbox.saved(now))
    output.extend([reply, None, 0.0] for reply in queued)
    return {
        "conn_id": conn.conn_id,
        "domid": conn.domid,
        "socket": conn.is_socket,
        "privileged": conn.privileged,
        "target": conn.target,
        "ignored": conn.ignored,
        "last_tx_id": conn.last_tx_id,
        "lost": sorted(conn.lost_transactions),
        "watches": [[w.path, w.token, w.depth, w.prefix_len] for w in watches],
        "transactions": [transaction_out(tx) for tx in conn.transactions.values()],
        "output": output,
        "shell": shell,
    }


def handover_out(
    engine: Engine,
    now: float,
    shells: dict[int, Plain],
    rings: dict[int, image.RingState],
    queued: dict[int, list[bytes]],
    shell: Plain,
    nodes: bool = True,
) -> Plain:
    """The image; ``shells`` per connection id, ``shell`` for the daemon as a
    whole (its listening socket's descriptor, say). Without ``nodes`` the
    tree is left out: the new instance has read it from the journal."""
    connections = sorted(engine.connections.values(), key=lambda conn: conn.conn_id)
    return {
        "schema": SCHEMA,
        "store": image.snapshot(engine, rings, nodes),
        "connections": [
            connection_out(conn, now, shells.get(conn.conn_id, {}), queued.get(conn.conn_id, []))
            for conn in connections
        ],
        "shell": shell,
    }


def handover_in(engine: Engine, saved: Plain, now: float) -> dict[int, Plain]:
    """Rebuild the state in a newly made engine (or one holding the tree an
    image without nodes expects); returns each connection's ``shell`` part
    by connection id, for the shell to take over."""
    if saved.get("schema") != SCHEMA:
        raise ImageError(f"live-update image schema {saved.get('schema')!r}, expected {SCHEMA}")
    store = saved["store"]
    image.load_store(engine, store)
    domains = engine.domains.domains
    domains.clear()
    for record in store["domains"]:
        domains[record["domid"]] = image.domain_in(record)
    ring_conns = {
        record["conn"]["order"]: record["domid"]
        for record in store["domains"]
        if record["conn"] is not None
    }
    shells: dict[int, Plain] = {}
    for entry in saved["connections"]:
        conn_id = entry["conn_id"]
        conn = engine.adopt_connection(conn_id, entry["domid"], entry["socket"],
                                       entry["privileged"])
        conn.target = entry["target"]
        conn.ignored = entry["ignored"]
        conn.last_tx_id = entry["last_tx_id"]
        conn.lost_transactions = set(entry["lost"])
        for path, token, depth, prefix_len in entry["watches"]:
            engine.adopt_watch(conn, Watch(conn_id, path, token, depth, prefix_len))
        for tx in entry["transactions"]:
            engine.adopt_transaction(conn, transaction_in(engine, tx))
        conn.outbox.load(entry["output"], now)
        if conn_id in ring_conns:
            domain = domains[ring_conns[conn_id]]
            domain.conn_id = conn_id
            if domain.domid != engine.config.priv_domid and domain.introduced and not conn.ignored:
                engine.emit(AttachRing(domain.domid, conn_id, domain.port))
        shells[conn_id] = entry["shell"]
    return shells
