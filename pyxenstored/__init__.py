"""pyxenstored: a fault-tolerant xenstore daemon in Python on trio."""

__version__ = "0.1.0"
