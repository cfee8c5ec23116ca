"""``strangler``: one console script, one subcommand group per package.

Each package contributes a ``register(subparsers)`` function in its own
``cli`` module; this layer only assembles them, loads the settings, and turns
the project's errors into one line a person can act on (exit code 2).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from strangler.errors import StranglerError

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

# The modules that contribute subcommands, in the order --help lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "strangler.commands",
    "legacy_emulator.cli",
    "schema.cli",
    "proxy.cli",
    "proxy.runs_cli",
    "shadow_compare.cli",
    "migrators.cli",
    "control.cli",
    "control.retire",
    "strangler.demo",
    "strangler.shadow_ci",
)

Handler = Callable[[argparse.Namespace], int | None]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="strangler",
        description="Move the UZO platform off MongoDB onto PostgreSQL and Redis, "
        "one entity at a time, behind the unchanged legacy API.",
        epilog="Settings come from the environment: LEGACY_URL, MONGO_URL, DATABASE_URL, "
        "REDIS_URL, JWT_SECRET, CONNECTOR_KEYS, CONNECTOR_KEY_ID (see README).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module: Any = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a package that does not ship its commands yet
        module.register(subparsers)
    return parser


def run_async(coro: Any) -> Any:
    """Run a command's coroutine; Ctrl-C ends it quietly."""
    return asyncio.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        result = handler(args)
    except StranglerError as exc:
        print(f"strangler {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
