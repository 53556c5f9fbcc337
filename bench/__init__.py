"""Benchmarks that compare xenstore daemons in one run (``python -m bench``).

``targets`` says how to start each daemon; ``workloads`` measures one
running daemon over raw sockets; ``__main__`` runs every workload against
every selected target and prints a table (``--json`` for machines).
``rings`` (``--idle-guests``) measures idle guests on rings, and
``persist`` (``python -m bench persist``) pyxenstored's journal: recovery
time and write throughput per durability mode; ``liveupdate`` (``python -m
bench live-update``) the service pause of a live update, beside C's.
"""
