"""``strangler rehearse DIR``: migrate a production export end to end, locally, and report."""

from __future__ import annotations

import argparse
import pathlib

from migrators.rehearse import rehearse
from strangler.cli import run_async
from strangler.config import load_settings
from strangler.errors import ConfigError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    parser = subparsers.add_parser(
        "rehearse",
        help="load a production export, migrate and verify it locally, print the report",
        description="In one process: load the mongoexport files of DIR into an in-process "
        "store (or, with --mongo-url, into an empty MongoDB database), upgrade the schema of the "
        "database, backfill and verify every entity that has "
        "a mapping, and print the migration report (per collection: read, written, "
        "quarantined by reason with examples, dangling references, time). Use a scratch "
        "database. Exits 1 when verify is not clean or the export had problems.",
    )
    parser.add_argument("directory", metavar="DIR", type=pathlib.Path, help="the export")
    parser.add_argument("--database-url", help="PostgreSQL to migrate into (default: DATABASE_URL)")
    parser.add_argument("--batch-size", type=int, default=1000, help="documents per batch")
    parser.add_argument(
        "--mongo-url",
        help="load the export into this MongoDB database (mongodb://HOST:PORT/NAME; it must be "
        "empty) instead of an in-process store, so the rehearsal reads through PyMongo",
    )
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    settings = load_settings()
    url = settings.database_url
    if args.database_url:
        if not args.database_url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                "--database-url", "is not a postgresql:// URL", "pass a scratch database URL"
            )
        url = args.database_url
    if args.mongo_url and not args.mongo_url.startswith(("mongodb://", "mongodb+srv://")):
        raise ConfigError("--mongo-url", "is not a mongodb:// URL", "pass an empty database's URL")
    report = run_async(
        rehearse(
            args.directory,
            url,
            settings.connector_keys,
            batch_size=args.batch_size,
            mongo_url=args.mongo_url,
        )
    )
    for line in report.lines():
        print(line)
    return 0 if report.clean else 1
