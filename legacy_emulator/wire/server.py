"""The wire server: MockupDB's socket handling, the engine's answers.

MockupDB parses OP_MSG (document sequences included) and OP_QUERY (the driver's first
handshake) and writes the replies. Its own request loop serves one request at a time across
the whole server (it holds one lock while a request is handled, for its scripted tests);
this server replaces that loop with one that hands each request straight to the
:class:`~legacy_emulator.wire.engine.CommandEngine`, so clients are served concurrently and
a change stream waiting for events does not stall the others.
"""

from __future__ import annotations

import errno
import socket
import sys
import threading
from typing import Any

from mockupdb import OP_MSG_FLAGS, MockupDB, OpMsg, mock_server_receive_request

from legacy_emulator.wire.engine import CommandEngine

__all__ = ["WireServer"]

_GONE = (errno.ECONNRESET, errno.EBADF, errno.ENOTSOCK, errno.EPIPE)


class WireServer(MockupDB):  # mockupdb has no type hints: its names are Any
    """Serve ``engine`` on ``host:port`` (port 0: any free port; :attr:`port` tells)."""

    def __init__(self, engine: CommandEngine, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(port=port)
        self._address = (host, port)
        self.engine = engine
        self.errors = 0
        self._errors_lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.address
        return f"mongodb://{host}:{port}/"

    def _server_loop(self, client: socket.socket, client_addr: Any) -> None:
        while not self._stopped:
            try:
                request = mock_server_receive_request(client, self)
            except OSError as error:
                if getattr(error, "errno", None) in _GONE or self._stopped:
                    break
                raise
            except (ValueError, NotImplementedError, KeyError) as error:
                self._count_error(f"unreadable message from {client_addr}: {error}")
                break
            database = request.namespace or "admin"
            try:
                reply = self.engine.handle(database, request.doc)
            except Exception as error:  # a bug of the double: answer, say it, keep serving
                self._count_error(f"{request.command_name}: {type(error).__name__}: {error}")
                reply = {
                    "ok": 0,
                    "errmsg": f"{type(error).__name__}: {error}",
                    "code": 1,
                    "codeName": "InternalError",
                }
            if isinstance(request, OpMsg) and request.flags & OP_MSG_FLAGS["moreToCome"]:
                continue  # an unacknowledged write: the client waits for no reply
            try:
                request.replies(reply)
            except OSError:
                break
        try:
            client.close()
        except OSError:
            pass

    def _count_error(self, message: str) -> None:
        with self._errors_lock:
            self.errors += 1
        print(f"strangler legacy mongod: {message}", file=sys.stderr, flush=True)
