"""Tree operations with C xenstored's permission and quota rules (spec 1.5, 3, 6).

``NodeOps`` applies one request to a ``NodeView`` (the committed tree or a
transaction) on behalf of a caller; it raises ``XenstoreError`` for every
refusal and reports watch events through ``notify`` so that the engine can
fire them now or queue them in the transaction.
"""

from collections.abc import Callable

import attrs

from pyxenstored.protocol.errors import XenstoreError
from pyxenstored.store.node import NODE_HEADER_SIZE, PERM_SIZE, Node
from pyxenstored.store.paths import parent_of
from pyxenstored.store.permissions import OWNER, READ, WRITE, Perms, access, owner, with_owner
from pyxenstored.store.tree import NodeView
from pyxenstored.transactions import EXACT, SUBTREE


@attrs.frozen
class Caller:
    """Who is asking, and the limits that apply to them (0 = unlimited)."""

    domid: int
    target: int | None
    privileged: bool
    node_limit: int = 0
    node_size_limit: int = 0
    memory_limit: int = 0
    nodes_used: int = 0
    memory_used: int = 0

    def can(self, perms: Perms) -> int:
        return access(perms, self.domid, self.target, self.privileged)


#: notify(path, mode, node or None, permissions that also qualify watchers)
Notify = Callable[[str, int, Node | None, Perms | None], None]


class RefusedBeforeWriting(XenstoreError):
    """A quota refusal that C makes before writing anything, so it does not
    fail an enclosing transaction (``create_node``'s check of its first node)."""


def errno_from_parents(view: NodeView, caller: Caller, path: str, error: str, perm: int) -> str:
    """Hide a missing or forbidden node behind the nearest ancestor's permissions.

    C answers ENOENT only if the caller holds ``perm`` on the nearest existing
    ancestor, and EACCES otherwise (spec 1.4). Walks up with a loop.
    """
    current = path
    node = None
    while node is None and current != "/":
        current = parent_of(current)
        node = view.get(current)
    if node is None:
        return "EACCES"
    return error if caller.can(node.perms) & perm else "EACCES"


def checked(view: NodeView, caller: Caller, path: str, perm: int) -> Node:
    """The node at ``path`` if the caller holds ``perm`` on it (C ``get_node``)."""
    node = view.get(path)
    if node is not None and caller.can(node.perms) & perm == perm:
        return node
    error = "ENOENT" if node is None else "EACCES"
    raise XenstoreError(errno_from_parents(view, caller, path, error, perm))


def _check_size(caller: Caller, size: int) -> None:
    if caller.node_size_limit and size >= caller.node_size_limit:
        raise XenstoreError("ENOSPC")


def _check_memory(caller: Caller, extra: int) -> None:
    if caller.memory_limit and caller.memory_used + extra >= caller.memory_limit:
        raise XenstoreError("ENOMEM")


def _create(view: NodeView, caller: Caller, path: str, value: bytes) -> Node:
    """Create ``path`` and any missing ancestors, all or nothing (XSA-414).

    Every check runs before the first node is created, so a refusal leaves
    no partial tree behind.
    """
    missing = [path]
    parent_path = parent_of(path)
    parent = view.get(parent_path)
    while parent is None:
        missing.append(parent_path)
        parent_path = parent_of(parent_path)
        parent = view.get(parent_path)
    missing.reverse()
    perms = parent.perms if caller.privileged else with_owner(parent.perms, caller.domid)
    if caller.node_limit and caller.nodes_used + len(missing) >= caller.node_limit:
        # C writes the deepest node first, then each parent: refused at once
        # only if even one more node is too many; else after partial work.
        first_fits = caller.nodes_used + 1 < caller.node_limit
        raise XenstoreError("ENOSPC") if first_fits else RefusedBeforeWriting("ENOSPC")
    first_name = missing[0][len(parent_path) + (parent_path != "/") :]
    _check_size(caller, parent.size() + len(first_name) + 1)
    record = NODE_HEADER_SIZE + PERM_SIZE * len(perms)
    memory = len(first_name) + 1
    for index, ancestor in enumerate(missing[:-1]):
        # An intermediate node holds one child name, NUL-terminated.
        child_entry = len(missing[index + 1]) - len(ancestor)
        _check_size(caller, record + child_entry)
        memory += record + child_entry + len(ancestor)
    _check_size(caller, record + len(value))
    _check_memory(caller, memory + record + len(value) + len(path))
    node = None
    for index, new_path in enumerate(missing):
        node = view.create(new_path, value if index == len(missing) - 1 else b"", perms)
    assert node is not None
    return node


def write(view: NodeView, caller: Caller, path: str, value: bytes, notify: Notify) -> None:
    node = view.get(path)
    if node is not None:
        node = checked(view, caller, path, WRITE)
        if caller.node_size_limit:
            _check_size(caller, node.size() - len(node.value) + len(value))
        if caller.memory_limit:
            _check_memory(caller, len(value) - len(node.value))
        node = view.set_value(path, value)
    else:
        error = errno_from_parents(view, caller, path, "ENOENT", WRITE)
        if error != "ENOENT":
            raise XenstoreError(error)
        node = _create(view, caller, path, value)
    notify(path, SUBTREE, node, None)


def mkdir(view: NodeView, caller: Caller, path: str, notify: Notify) -> None:
    node = view.get(path)
    if node is not None:
        checked(view, caller, path, WRITE)
        return
    error = errno_from_parents(view, caller, path, "ENOENT", WRITE)
    if error != "ENOENT":
        raise XenstoreError(error)
    notify(path, SUBTREE, _create(view, caller, path, b""), None)


def remove_subtree(view: NodeView, path: str, notify: Notify) -> None:
    """Delete ``path`` and its descendants children-first, firing as C does.

    Each descendant fires EXACT and the root SUBTREE, while the node and its
    parent are still visible for the permission filter (spec 5.2).
    """
    order: list[str] = []
    stack = [path]
    while stack:
        current = stack.pop()
        node = view.get(current)
        if node is None:
            continue
        order.append(current)
        prefix = current if current != "/" else ""
        stack.extend(f"{prefix}/{name}" for name in node.children)
    for current in reversed(order):
        node = view.get(current)
        assert node is not None
        notify(current, SUBTREE if current == path else EXACT, node, node.perms)
        view.delete(current)


def rm(view: NodeView, caller: Caller, path: str, notify: Notify) -> None:
    node = view.get(path)
    if node is None or caller.can(node.perms) & WRITE != WRITE:
        error = "ENOENT" if node is None else "EACCES"
        error = errno_from_parents(view, caller, path, error, WRITE)
        if error == "ENOENT" and view.get(parent_of(path)) is not None:
            return
        raise XenstoreError(error)
    if path == "/":
        raise XenstoreError("EINVAL")
    if view.get(parent_of(path)) is None:
        # Only in a transaction that first found the parent missing and then
        # the node, created since (no snapshot isolation, spec 4.2): C ``_rm``
        # answers EINVAL before firing or deleting anything.
        raise XenstoreError("EINVAL")
    remove_subtree(view, path, notify)


def set_perms(view: NodeView, caller: Caller, path: str, perms: Perms, notify: Notify) -> None:
    node = checked(view, caller, path, WRITE | OWNER)
    if not caller.privileged and owner(perms) != owner(node.perms):
        raise XenstoreError("EPERM")
    _check_size(caller, node.size() + PERM_SIZE * (len(perms) - len(node.perms)))
    old = node.perms
    node = view.set_perms(path, perms)
    notify(path, SUBTREE, node, old)


def read(view: NodeView, caller: Caller, path: str) -> bytes:
    return checked(view, caller, path, READ).value

