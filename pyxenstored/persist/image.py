"""The engine's durable state as plain data, and back (issue 5).

Two shapes share one vocabulary of CBOR-ready lists and dicts:

- a **snapshot**: the whole state (every node with its ordered children,
  the generation counter, global quotas, every domain record with its ring
  connection's watches and open transaction ids);
- a **batch record**: what one batch of requests changed, written to the
  journal before the batch's replies leave (DESIGN.md invariant 1). Tree
  changes are a redo log (``Tree.changes``); domain records are rewritten
  whole, since they are small and change rarely.

Socket connections are not recorded: their clients see the socket close
and reconnect, as they must after any crash. A ring connection's state is
recorded as the shell reports it (``RingState``: the indices it will
publish, a partly received request, a partly sent message and the replies
still queued), so that no request is lost or answered twice and no reply
goes missing. Queued watch events are not recorded; instead every restored
watch fires once, so a guest re-reads what it watches and misses nothing
(docs/compatibility.md).
"""

from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from pyxenstored.effects import AttachRing
from pyxenstored.engine import Engine
from pyxenstored.engine.domains import Domain
from pyxenstored.store.node import Node, children_of, footprint
from pyxenstored.store.permissions import Perm, Perms, owner
from pyxenstored.store.tree import CREATE, DELETE, REPLACE, SET_PERMS, SET_VALUE, Change, Tree
from pyxenstored.watches import Watch

#: Bumped on any incompatible change of the shapes below.
SCHEMA = 1

Plain = dict[str, Any]
#: One ring's position, as ``Rings.take_states`` reports it: ``req_cons``,
#: ``rsp_prod`` (ints), ``partial`` (bytes of a request not complete yet),
#: ``outgoing`` (the unsent rest of a message begun in the ring) and
#: ``replies`` (whole replies still queued, a list of bytes).
RingState = dict[str, Any]


class ImageError(Exception):
    """A snapshot or record this version cannot read."""


# ------------------------------------------------------------------ nodes


def perms_out(perms: Perms) -> list[int]:
    return [number for perm in perms for number in perm]


def perms_in(flat: list[int]) -> Perms:
    return tuple(Perm(flat[i], flat[i + 1]) for i in range(0, len(flat), 2))


class PermsCache(dict[tuple[int, ...], Perms]):
    """Nodes with equal permissions share one tuple, as inheritance makes
    them do in a live tree: far fewer objects to build and to keep."""

    def __missing__(self, flat: tuple[int, ...]) -> Perms:
        perms = self[flat] = perms_in(list(flat))
        return perms


def node_out(node: Node) -> list[Any]:
    return [node.value, perms_out(node.perms), node.generation, list(node.children)]


def node_in(entry: list[Any], perms_cache: PermsCache | None = None) -> Node:
    value, flat, generation, children = entry
    perms = perms_in(flat) if perms_cache is None else perms_cache[tuple(flat)]
    childlen = sum(map(len, children)) + len(children)
    return Node(value, perms, generation, children_of(children), childlen)


def change_out(change: Change) -> Sequence[Any]:
    """CBOR-ready: the common changes (values set, nodes deleted) as they are."""
    kind = change[0]
    if kind == SET_VALUE or kind == DELETE:
        return change
    kind, before, path, *rest = change
    if kind in (CREATE, SET_PERMS):
        rest[-1] = perms_out(rest[-1])  # type: ignore[arg-type]
    else:
        rest[0] = None if rest[0] is None else node_out(rest[0])  # type: ignore[arg-type]
    return [kind, before, path, *rest]


def redo(tree: Tree, entry: list[Any]) -> None:
    """Repeat one journaled change; the same methods stamp the same generations."""
    kind, before, path, *rest = entry
    tree.generation = before
    if kind == CREATE:
        tree.create(path, rest[0], perms_in(rest[1]))
    elif kind == SET_VALUE:
        tree.set_value(path, rest[0])
    elif kind == SET_PERMS:
        tree.set_perms(path, perms_in(rest[0]))
    elif kind == DELETE:
        tree.delete(path)
    elif kind == REPLACE:
        tree.replace(path, None if rest[0] is None else node_in(rest[0]))
    else:
        raise ImageError(f"unknown change kind {kind!r}")


def _load_nodes(entries: Iterable[list[Any]]) -> Tree:
    tree = Tree()
    nodes, charge = tree.nodes, tree.accounting.charge
    cache = PermsCache()
    for path, *entry in entries:
        node = node_in(entry, cache)
        nodes[path] = node
        charge(owner(node.perms), 1, footprint(path, node))
    return tree


# ---------------------------------------------------------------- domains


def domain_out(engine: Engine, domid: int) -> Plain | None:
    """The domain's record with its ring connection; None once it is gone."""
    domain = engine.domains.get(domid)
    if domain is None:
        return None
    record: Plain = {
        "domid": domid,
        "hard": dict(domain.hard_quotas),
        "soft": dict(domain.soft_quotas),
        "features": domain.features,
        "introduced": domain.introduced,
        "port": domain.port,
        "shutdown_reported": domain.shutdown_reported,
        "conn": None,
    }
    conn = engine.connections.get(domain.conn_id) if domain.conn_id is not None else None
    if conn is not None:
        watches = sorted(conn.watches.values(), key=lambda watch: watch.seq)
        record["conn"] = {
            "order": conn.conn_id,
            "privileged": conn.privileged,
            "target": conn.target,
            "ignored": conn.ignored,
            "last_tx_id": conn.last_tx_id,
            "transactions": sorted({*conn.transactions, *conn.lost_transactions}),
            "watches": [[w.path, w.token, w.depth, w.prefix_len] for w in watches],
        }
    return record


def _quotas_out(engine: Engine) -> list[dict[str, int]]:
    return [dict(engine.config.hard_quotas), dict(engine.config.soft_quotas)]


def _quotas_in(engine: Engine, quotas: list[dict[str, int]]) -> None:
    engine.config.hard_quotas.clear()
    engine.config.hard_quotas.update(quotas[0])
    engine.config.soft_quotas.clear()
    engine.config.soft_quotas.update(quotas[1])


# ------------------------------------------------------------- the whole


def snapshot(
    engine: Engine, rings: dict[int, RingState] | None = None, nodes: bool = True
) -> Plain:
    """The whole durable state, with the rings' last recorded states;
    without ``nodes``, everything but the tree (which a live update's new
    instance reads from the journal instead)."""
    domains = [domain_out(engine, domid) for domid in sorted(engine.domains.domains)]
    saved: Plain = {
        "schema": SCHEMA,
        "generation": engine.tree.generation,
        "quotas": _quotas_out(engine),
        "domains": domains,
        "rings": sorted((rings or {}).items()),
    }
    if nodes:
        saved["nodes"] = [[path, *node_out(node)] for path, node in engine.tree.nodes.items()]
    return saved


def take_batch(
    engine: Engine, since_generation: int, rings: list[tuple[int, RingState]] | None = None
) -> Plain | None:
    """What changed since the last call, or None if nothing durable did.

    ``since_generation`` is the generation of the previous record: a bare
    counter move (a transaction started) is recorded too, so that a replay
    ends with the live counter.
    """
    tree = engine.tree
    changes = tree.changes
    touched, globals_touched = engine.take_touched()
    if not (changes or touched or globals_touched or rings
            or tree.generation != since_generation):
        return None
    record: Plain = {"g": tree.generation}
    if changes:
        tree.changes = []
        record["t"] = [change_out(change) for change in changes]
    if touched:
        record["d"] = [[domid, domain_out(engine, domid)] for domid in sorted(touched)]
    if globals_touched:
        record["q"] = _quotas_out(engine)
    if rings:
        record["r"] = rings
    return record


@attrs.frozen
class Restored:
    #: Watches restored (each fired once).
    watches: int
    #: The last recorded state of each restored domain's ring, for the shell.
    rings: dict[int, RingState]


def restore(engine: Engine, image: Plain | None, batches: Iterable[Plain]) -> Restored:
    """Load a snapshot and replay batch records into a newly made engine.

    Domain records and connections are rebuilt once, from their final
    versions; each restored watch fires once, after the replies its ring
    still owed; AttachRing effects for the restored rings are queued.
    """
    domains: dict[int, Plain | None] = {}
    rings: dict[int, RingState] = {}
    if image is not None:
        load_store(engine, image)
        domains.update((record["domid"], record) for record in image["domains"])
        rings.update((domid, state) for domid, state in image["rings"])
    tree = engine.tree
    for batch in batches:
        for entry in batch.get("t", ()):
            redo(tree, entry)
        tree.generation = batch["g"]
        domains.update((domid, record) for domid, record in batch.get("d", ()))
        rings.update((domid, state) for domid, state in batch.get("r", ()))
        if "q" in batch:
            _quotas_in(engine, batch["q"])
    watches = _rebuild_domains(engine, domains, rings)
    live = {domid: state for domid, state in rings.items() if domid in engine.domains.domains}
    return Restored(watches, live)


def load_store(engine: Engine, image: Plain) -> None:
    """The snapshot's tree, generation counter and global quotas. An image
    without nodes (``snapshot(..., nodes=False)``) keeps the engine's tree,
    which must then be at the image's generation."""
    if image.get("schema") != SCHEMA:
        raise ImageError(f"snapshot schema {image.get('schema')!r}, expected {SCHEMA}")
    if "nodes" in image:
        engine.tree = _load_nodes(image["nodes"])
        engine.tree.generation = image["generation"]
    elif engine.tree.generation != image["generation"]:
        raise ImageError(
            f"the store read from the journal is at generation {engine.tree.generation},"
            f" the image at {image['generation']}"
        )
    _quotas_in(engine, image["quotas"])


def replay(tree: Tree, batches: Iterable[Plain]) -> None:
    """Only the tree's part of batch records: their changes and generations."""
    for batch in batches:
        for entry in batch.get("t", ()):
            redo(tree, entry)
        tree.generation = batch["g"]
    tree.changes = []


def domain_in(record: Plain) -> Domain:
    """A domain record, without its connection."""
    return Domain(
        record["domid"],
        record["hard"],
        record["soft"],
        features=record["features"],
        introduced=record["introduced"],
        port=record["port"],
        shutdown_reported=record["shutdown_reported"],
    )


def _rebuild_domains(
    engine: Engine, records: dict[int, Plain | None], rings: dict[int, RingState]
) -> int:
    table = engine.domains.domains
    for domid, record in records.items():
        if record is None:
            table.pop(domid, None)
        else:
            table[domid] = domain_in(record)
    live = [record for record in records.values() if record is not None and record["conn"]]
    live.sort(key=lambda record: record["conn"]["order"])
    return sum(_rebuild_connection(engine, record, rings.get(record["domid"])) for record in live)


def _rebuild_connection(engine: Engine, record: Plain, ring: RingState | None) -> int:
    saved = record["conn"]
    domid = record["domid"]
    domain = engine.domains.domains[domid]
    conn_id = engine.restore_connection(domid, saved["privileged"])
    domain.conn_id = conn_id
    conn = engine.connections[conn_id]
    conn.target = saved["target"]
    conn.ignored = saved["ignored"]
    conn.last_tx_id = saved["last_tx_id"]
    conn.lost_transactions = set(saved["transactions"])
    for reply in ring["replies"] if ring is not None else ():
        conn.outbox.reply(reply)
    for path, token, depth, prefix_len in saved["watches"]:
        engine.restore_watch(conn, Watch(conn_id, path, token, depth, prefix_len))
    if domid != engine.config.priv_domid and domain.introduced and not conn.ignored:
        engine.emit(AttachRing(domid, conn_id, domain.port))
    return len(saved["watches"])
