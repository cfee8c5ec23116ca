"""``strangler backfill ENTITY|all``: copy legacy collections into PostgreSQL, resumably."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from migrators.backfill import DEFAULT_BATCH_SIZE, BackfillSummary, backfill_entity
from migrators.crypto import SecretBox
from migrators.registry import default_registry
from migrators.stores import legacy_store, postgres
from strangler.cli import run_async
from strangler.config import Settings, load_settings
from strangler.errors import DataError

__all__ = ["register", "run_backfill"]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    names = ", ".join(spec.name for spec in default_registry())
    parser = subparsers.add_parser(
        "backfill",
        help="copy legacy documents into PostgreSQL (batched, resumable, idempotent)",
        description="Stream an entity's legacy collection into PostgreSQL in batches, one "
        "transaction and one checkpoint per batch. An interrupted run resumes after the last "
        "committed batch; a finished one run again changes nothing. Documents that cannot be "
        "mapped are quarantined with their reason (migration_quarantine).",
    )
    parser.add_argument("entity", metavar="ENTITY", help=f"one of: {names}; or 'all'")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"documents per batch and transaction (default {DEFAULT_BATCH_SIZE})",
    )
    parser.set_defaults(handler=_handle)


async def run_backfill(
    settings: Settings, entity: str, batch_size: int, *, out: TextIO | None = None
) -> list[BackfillSummary]:
    if batch_size <= 0:
        raise DataError(f"--batch-size must be a positive integer, got {batch_size}")
    specs = default_registry().select(entity)
    box = SecretBox(settings.connector_keys)

    def say(line: str) -> None:
        print(line, file=out or sys.stdout, flush=True)

    summaries = []
    async with legacy_store(settings) as db, postgres(settings) as conn:
        for spec in specs:
            summary = await backfill_entity(
                db, conn, spec, box.context(), batch_size=batch_size, progress=say
            )
            summaries.append(summary)
    say("backfill summary:")
    for summary in summaries:
        for line in summary.lines():
            say("  " + line)
    return summaries


def _handle(args: argparse.Namespace) -> int:
    settings = load_settings()
    summaries = run_async(run_backfill(settings, args.entity, args.batch_size))
    return 1 if any(s.not_read for s in summaries) else 0
