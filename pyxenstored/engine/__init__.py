"""The engine: request in, effects out; pure and synchronous."""

from pyxenstored.engine.engine import Engine as Engine
