"""``strangler verify ENTITY|all``: compare MongoDB and PostgreSQL, optionally repair."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import TextIO

from migrators.crypto import SecretBox
from migrators.registry import default_registry
from migrators.stores import legacy_store, postgres
from migrators.verify import DEFAULT_BUCKETS, VerifyReport, verify_entity
from strangler.cli import run_async
from strangler.config import Settings, load_settings
from strangler.errors import DataError

__all__ = ["register", "run_verify"]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    names = ", ".join(spec.name for spec in default_registry())
    parser = subparsers.add_parser(
        "verify",
        help="compare legacy documents with migrated rows; exit 1 when they differ",
        description="Count both sides, compare checksums over buckets of hashed legacy ids, "
        "narrow differing buckets down to ids and print exactly what differs (secrets "
        "redacted). Exits 0 when clean, 1 when not.",
    )
    parser.add_argument("entity", metavar="ENTITY", help=f"one of: {names}; or 'all'")
    parser.add_argument(
        "--repair", action="store_true", help="re-apply the differing ids from MongoDB"
    )
    parser.add_argument(
        "--min-age",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="skip documents changed and rows synced less than this long ago (the sync lag)",
    )
    parser.add_argument(
        "--buckets", type=int, default=DEFAULT_BUCKETS, help="checksum buckets (default 64)"
    )
    parser.add_argument(
        "--since",
        type=_moment,
        metavar="WHEN",
        help="time series (job_runs, activity): compare only entries created from WHEN "
        "(ISO date or time, UTC unless it says otherwise)",
    )
    parser.add_argument("--until", type=_moment, metavar="WHEN", help="... and created before WHEN")
    parser.set_defaults(handler=_handle)


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is no ISO date or time (e.g. 2026-01-01 or 2026-01-01T12:00)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def run_verify(
    settings: Settings,
    entity: str,
    *,
    repair: bool = False,
    min_age: float = 0.0,
    buckets: int = DEFAULT_BUCKETS,
    out: TextIO | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[VerifyReport]:
    if min_age < 0 or buckets <= 0:
        raise DataError("--min-age must not be negative and --buckets must be positive")
    if since is not None and until is not None and since >= until:
        raise DataError("--since must be before --until")
    specs = default_registry().select(entity)
    if since is not None or until is not None:  # 'all' with a window: the time series
        specs = [spec for spec in specs if spec.moment is not None] or specs
    ctx = SecretBox(settings.connector_keys).context()
    reports = []
    async with legacy_store(settings) as db, postgres(settings) as conn:
        for spec in specs:
            report = await verify_entity(
                db,
                conn,
                spec,
                ctx,
                min_age=min_age,
                repair=repair,
                buckets=buckets,
                since=since,
                until=until,
            )
            reports.append(report)
            for line in report.lines():
                print(line, file=out or sys.stdout, flush=True)
    return reports


def _handle(args: argparse.Namespace) -> int:
    settings = load_settings()
    reports = run_async(
        run_verify(
            settings,
            args.entity,
            repair=args.repair,
            min_age=args.min_age,
            buckets=args.buckets,
            since=args.since,
            until=args.until,
        )
    )
    return 0 if all(r.clean for r in reports) else 1
