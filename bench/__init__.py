"""Benchmarks that compare xenstore daemons in one run (``python -m bench``).

``targets`` says how to start each daemon; ``workloads`` measures one
running daemon over raw sockets; ``__main__`` runs every workload against
every selected target and prints a table (``--json`` for machines).
"""
