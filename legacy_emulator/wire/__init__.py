"""A MongoDB wire-protocol server for tests and demos: ``strangler legacy mongod``.

A test double, never for production: MockupDB (MongoDB's own wire-protocol test library)
reads and writes the messages, mongomock answers the commands, and a bounded log of the
server's own writes serves change streams. It lets PyMongo's real client, and the
project's separate processes, talk to one shared legacy store on a machine where no
MongoDB server can be installed.
"""

from legacy_emulator.wire.engine import CommandEngine
from legacy_emulator.wire.server import WireServer

__all__ = ["CommandEngine", "WireServer"]
