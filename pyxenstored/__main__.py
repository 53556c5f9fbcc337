"""Allow ``python -m pyxenstored``."""

from pyxenstored.cli import main

raise SystemExit(main())
