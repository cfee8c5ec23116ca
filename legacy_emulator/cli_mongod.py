"""``strangler legacy mongod``: the MongoDB wire-protocol test server
(:mod:`legacy_emulator.wire`). A test double for this machine and CI, never for production."""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from typing import Any

from legacy_emulator.wire.changes import DEFAULT_HISTORY
from strangler.errors import ConfigError, DataError

__all__ = ["register_mongod"]

DEFAULT_MONGOD_PORT = 27017


def register_mongod(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    parser = commands.add_parser(
        "mongod",
        help="a MongoDB wire-protocol test server (a test double, not for production)",
        description="Serve the MongoDB wire protocol on HOST:PORT until Ctrl-C, with an "
        "in-memory store (mongomock) behind it, so that every command can run with "
        "MONGO_URL=mongodb://HOST:PORT/uzo through PyMongo's real client, from separate "
        "processes. It keeps a bounded log of its own writes and serves change streams "
        "(watch()) from it; a resume token older than the log gets error 286 "
        "(ChangeStreamHistoryLost). A TEST DOUBLE: no durability, no authentication, no "
        "replication, a subset of the query language. Never point production at it.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_MONGOD_PORT,
        help=f"port to listen on (default {DEFAULT_MONGOD_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--with-data",
        metavar="SCALE|DIR",
        help="fill the store first: a generator scale (small, 6mo, 1y, 2y) or a directory of "
        "a production export",
    )
    parser.add_argument("--db", default="uzo", help="the database --with-data fills (default uzo)")
    parser.add_argument(
        "--history",
        type=int,
        default=DEFAULT_HISTORY,
        help=f"writes the change log keeps for change streams (default {DEFAULT_HISTORY})",
    )
    parser.set_defaults(handler=_mongod)


def _mongod(args: argparse.Namespace) -> int:
    from legacy_emulator.cli import bind_socket, data_source, fill_store
    from legacy_emulator.wire import CommandEngine, WireServer

    if args.history < 1:
        raise DataError(f"--history must be at least 1, got {args.history}")
    source = None if args.with_data is None else data_source(args.with_data)
    bind_socket(args.host, args.port).close()  # a clear error now if the port is taken
    engine = CommandEngine(history=args.history)
    if source is not None:
        from mongomock_motor import AsyncMongoMockClient

        store: Any = AsyncMongoMockClient(mock_mongo_client=engine.client)[args.db]
        for line in asyncio.run(fill_store(store, source)):
            print(line, flush=True)
    server = WireServer(engine, host=args.host, port=args.port)
    try:
        server.run()
    except OSError as exc:
        raise ConfigError(
            "--port",
            f"cannot listen on {args.host}:{args.port} ({exc.strerror})",
            "stop what listens there or pass another --port",
        ) from exc
    print(
        f"MongoDB wire-protocol test server on {args.host}:{server.port} (a test double): "
        f"MONGO_URL=mongodb://{args.host}:{server.port}/{args.db}; Ctrl-C stops it",
        flush=True,
    )
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    try:
        while not stopped.wait(1.0):
            pass
    finally:
        server.stop()
    print("mongod test server stopped; its data is gone", flush=True)
    return 0
