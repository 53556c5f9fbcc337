"""The trio daemon: the Unix socket listener, connection tasks, the process.

``serve`` is the entry point for embedding (and tests); ``runner.run`` is
the whole daemon process behind the ``pyxenstored`` command.
"""

from pyxenstored.server.daemon import Connection as Connection
from pyxenstored.server.daemon import Server as Server
from pyxenstored.server.daemon import serve as serve
from pyxenstored.server.listener import open_unix_listener as open_unix_listener
from pyxenstored.server.options import DaemonOptions as DaemonOptions
from pyxenstored.server.trace import Tracer as Tracer
