"""Drills: long fault-injection runs against a live daemon (``python -m drills``).

``crash`` (issue 5) kills pyxenstored with SIGKILL under load, over and
over, restarts it on the same state directory, and checks after every
restart that nothing acknowledged was lost, no transaction is half applied,
and the guests' restored watches fire. ``liveupdate`` (issue 6) drives
live updates with Xen's ``xenstore-control`` under load and checks that no
client notices beyond the pause, which it measures (``latency``) and can
plot (``timeline``). ``ledger`` is the client side's record of what it
asked for and the checks against it; ``daemon`` starts, kills and restarts
the daemon under the stand-in hypervisor (``fakexen``, which imports the
helpers kept in ``tests/fakexen``); ``actor``, ``scratch``, ``aborting`` and
``report`` are what both drills share; ``progress`` is the text progress bar.
"""
