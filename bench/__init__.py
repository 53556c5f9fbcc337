"""Benchmarks that compare xenstore daemons in one run (``python -m bench``).

``targets`` starts each daemon on its own stand-in hypervisor (``standin``:
the tests' ``libfakexen.so`` with a longer domain list); ``suite`` runs
every workload against every daemon, interleaved over the repeats, takes
medians and ratios to C and evaluates the issue's targets; the workloads
are in ``workloads`` (raw-socket reads, writes, transactions, watch
fan-out, idle connections), ``xstest`` (Xen's ``test-xenstore``),
``bigstore`` (120,000 nodes), ``storm`` (the boot storm) and ``ringload``
(a guest's reads over its ring). ``rings`` (``--idle-guests``) measures
idle guests on rings, ``persist`` (``python -m bench persist``)
pyxenstored's journal: recovery time and write throughput per durability
mode; ``liveupdate`` (``python -m bench live-update``) the service pause
of a live update, beside C's. docs/benchmarks.md describes them.
"""
