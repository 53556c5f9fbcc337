"""The ``check`` control command's verifier: tree links and accounting (spec 1.6).

Iterative, so a tree 1,000 levels deep is checked without recursion (XSA-418).
Accounting is recounted from the nodes and repaired, as C's ``check_store`` does.
"""

from collections import Counter

from pyxenstored.store.node import footprint
from pyxenstored.store.paths import basename, parent_of
from pyxenstored.store.permissions import owner
from pyxenstored.store.tree import Tree


def check_tree(tree: Tree) -> list[str]:
    """Problems found (and accounting repaired); an empty list for a sound tree."""
    problems: list[str] = []
    nodes = tree.nodes
    for path, node in nodes.items():
        prefix = path if path != "/" else ""
        for name in node.children:
            if f"{prefix}/{name}" not in nodes:
                problems.append(f"{path} lists missing child {name}")
        if path[0] == "/" and path != "/":
            parent = nodes.get(parent_of(path))
            if parent is None or basename(path) not in parent.children:
                problems.append(f"{path} is an orphan")
    counts: Counter[int] = Counter()
    memory: Counter[int] = Counter()
    for path, node in nodes.items():
        counts[owner(node.perms)] += 1
        memory[owner(node.perms)] += footprint(path, node)
    for domid in set(counts) | set(tree.accounting.usage):
        usage = tree.accounting.of(domid)
        if usage.nodes != counts[domid] or usage.memory != memory[domid]:
            problems.append(
                f"domain {domid}: accounted {usage.nodes} nodes, found {counts[domid]}"
            )
            usage.nodes = counts[domid]
            usage.memory = memory[domid]
    return problems
