"""``strangler legacy serve|seed|load|indexes|mongod``: the stand-in legacy backend and its store.

The store is the one ``MONGO_URL`` names. With ``memory://`` it lives only in
the process that opened it, which is why ``serve --with-data`` fills it in the
same process before serving.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import pathlib
import socket
import sys
import time
from typing import Any

from strangler.config import Settings, load_settings, redact_url
from strangler.errors import ConfigError, DataError
from strangler.mongo import Database, open_database, ping

__all__ = ["ProgressPrinter", "bind_socket", "data_source", "fill_store", "register"]

SCALE_NAMES = ("small", "6mo", "1y", "2y")
DEFAULT_PORT = 8001


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    legacy = subparsers.add_parser(
        "legacy",
        help="run the stand-in legacy backend and fill its store",
        description="The legacy emulator: the legacy UZO API (LEGACY.md) over the Mongo store "
        "that MONGO_URL names, and the tools that fill that store.",
    )
    commands = legacy.add_subparsers(dest="legacy_command", metavar="COMMAND")
    legacy.set_defaults(handler=lambda _args: _usage(legacy))

    serve = commands.add_parser(
        "serve",
        help="serve the legacy API",
        description="Serve the legacy API on HOST:PORT until Ctrl-C. With an in-process store "
        "(MONGO_URL=memory://...) use --with-data, since nothing else can fill it.",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})"
    )
    serve.add_argument(
        "--with-data",
        metavar="SCALE|DIR",
        help=f"fill the store first: a generator scale ({', '.join(SCALE_NAMES)}) "
        "or a directory of a production export",
    )
    serve.add_argument(
        "--run-step-seconds",
        type=float,
        default=None,
        help="pause between a runNow run's status changes (default 1.0)",
    )
    serve.set_defaults(handler=_serve)

    seed = commands.add_parser(
        "seed",
        help="fill the store with generated legacy data",
        description="Write a generated legacy data set, dirt included, into the MONGO_URL store.",
    )
    seed.add_argument("--scale", required=True, choices=SCALE_NAMES, help="how much data")
    seed.add_argument("--days", type=int, help="days of runs and activity (scale's default)")
    seed.add_argument(
        "--dirty", type=float, default=0.0, help="rate of each kind of dirt, 0 to 1 (default 0)"
    )
    seed.add_argument("--seed", type=int, default=1, help="random seed (same seed, same data)")
    seed.add_argument(
        "--replace", action="store_true", help="drop the legacy collections first if they exist"
    )
    seed.set_defaults(handler=_seed)

    load = commands.add_parser(
        "load",
        help="fill the store from a production export",
        description="Load a directory of exported legacy collections into the MONGO_URL store.",
    )
    load.add_argument("directory", type=pathlib.Path, help="the export directory")
    load.add_argument(
        "--replace", action="store_true", help="drop the collections it loads first if they exist"
    )
    load.set_defaults(handler=_load)

    from legacy_emulator.cli_indexes import register_indexes

    register_indexes(commands)

    from legacy_emulator.cli_mongod import register_mongod

    register_mongod(commands)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


class ProgressPrinter:
    """Progress of long fills on stderr: a line per collection, redrawn at most 5 times a second."""

    def __init__(self, stream: Any = None) -> None:
        self._stream = stream or sys.stderr
        self._last = 0.0
        self._current: str | None = None

    def __call__(self, collection: str, done: int, total: int) -> None:
        now = time.monotonic()
        finished = done >= total
        if collection == self._current and not finished and now - self._last < 0.2:
            return
        if self._current not in (None, collection):
            print(file=self._stream)
        self._current, self._last = collection, now
        print(f"\r  {collection}: {done}/{total}", end="", file=self._stream, flush=True)

    def end(self) -> None:
        if self._current is not None:
            print(file=self._stream, flush=True)
            self._current = None


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or a :class:`ConfigError` saying what to change."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # says TCP, and without it a kept-alive client waits ~40 ms (Nagle against delayed ACK)
    # for every response after its first.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OverflowError as exc:
        sock.close()
        raise ConfigError("--port", f"{port} is not a port", "pass 1-65535") from exc
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                "--port",
                f"{host}:{port} is already in use",
                "stop what listens there or pass another --port",
            ) from exc
        raise ConfigError(
            "--host", f"cannot listen on {host}:{port} ({exc.strerror})", "pass a local address"
        ) from exc
    return sock


async def _open_store(settings: Settings) -> Database:
    db = open_database(settings.mongo_url)
    await ping(db, settings.mongo_url)
    return db


def data_source(value: str) -> str | pathlib.Path:
    """What ``--with-data`` names: a scale (str) or an export directory (Path)."""
    if value in SCALE_NAMES:
        return value
    if pathlib.Path(value).is_dir():
        return pathlib.Path(value)
    raise DataError(
        f"--with-data {value!r} is neither a scale ({', '.join(SCALE_NAMES)}) "
        "nor an existing directory"
    )


async def fill_store(db: Database, source: str | pathlib.Path) -> list[str]:
    """Seed (a scale name) or load (an export directory) the store; the summary lines."""
    progress = ProgressPrinter()
    try:
        if isinstance(source, str):
            from legacy_emulator.generator import seed_store

            summary: Any = await seed_store(db, scale=source, progress=progress)
        else:
            from legacy_emulator.export_load import load_export

            summary = await load_export(db, source, progress=progress)
    finally:
        progress.end()
    lines: list[str] = list(summary.lines())
    tenants = getattr(summary, "tenants", None)
    if tenants:
        subscription_id, user_id = tenants[0]
        lines.append(
            f"  a token to try it: strangler token --user {user_id} "
            f"--subscription {subscription_id}"
        )
    return lines


def _serve(args: argparse.Namespace) -> int:
    settings = load_settings()
    source = None if args.with_data is None else data_source(args.with_data)
    if args.run_step_seconds is not None and args.run_step_seconds < 0:
        raise DataError(f"--run-step-seconds must not be negative, got {args.run_step_seconds}")
    sock = bind_socket(args.host, args.port)
    try:
        asyncio.run(_serve_async(settings, args, source, sock))
    finally:
        sock.close()
    return 0


async def _serve_async(
    settings: Settings,
    args: argparse.Namespace,
    source: str | pathlib.Path | None,
    sock: socket.socket,
) -> None:
    import uvicorn

    from legacy_emulator.app import DEFAULT_RUN_STEP_SECONDS, create_app

    db = await _open_store(settings)
    if source is not None:
        for line in await fill_store(db, source):
            print(line, flush=True)
    step = DEFAULT_RUN_STEP_SECONDS if args.run_step_seconds is None else args.run_step_seconds
    app = create_app(
        db,
        jwt_secret=settings.jwt_secret,
        run_step_seconds=step,
        password_rounds=settings.password_rounds,
    )
    host, port = sock.getsockname()[:2]
    print(
        f"legacy emulator on http://{host}:{port} over {redact_url(settings.mongo_url)}; "
        "Ctrl-C stops it",
        flush=True,
    )
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="info", lifespan="on")
    await uvicorn.Server(config).serve(sockets=[sock])


def _seed(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.dirty < 0 or args.dirty > 1:
        raise DataError(f"--dirty must be between 0 and 1, got {args.dirty}")
    if args.days is not None and args.days < 0:
        raise DataError(f"--days must not be negative, got {args.days}")
    if settings.mongo_in_process:
        print(
            "note: MONGO_URL is an in-process store; the data is gone when this command ends "
            "(use 'strangler legacy serve --with-data SCALE' to serve generated data)",
            file=sys.stderr,
        )

    async def run() -> list[str]:
        from legacy_emulator.generator import seed_store

        db = await _open_store(settings)
        progress = ProgressPrinter()
        try:
            summary = await seed_store(
                db,
                scale=args.scale,
                days=args.days,
                dirty=args.dirty,
                seed=args.seed,
                progress=progress,
                replace=args.replace,
            )
        finally:
            progress.end()
        return summary.lines()

    for line in asyncio.run(run()):
        print(line)
    return 0


def _load(args: argparse.Namespace) -> int:
    settings = load_settings()
    directory: pathlib.Path = args.directory
    if not directory.is_dir():
        raise DataError(f"{directory} is not a directory; pass the folder of an export")

    async def run() -> tuple[list[str], bool]:
        from legacy_emulator.export_load import load_export

        db = await _open_store(settings)
        progress = ProgressPrinter()
        try:
            summary = await load_export(db, directory, progress=progress, replace=args.replace)
        finally:
            progress.end()
        return list(summary.lines()), summary.ok

    lines, ok = asyncio.run(run())
    for line in lines:
        print(line)
    # Every good document is loaded either way; a problem (a bad line, an unknown file) is
    # listed above and makes the exit code say so, for scripts that check it.
    return 0 if ok else 1
