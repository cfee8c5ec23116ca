"""``strangler schema upgrade|status|partitions``: thin layer over :mod:`schema.runner`."""

from __future__ import annotations

import argparse
import asyncio
import sys

from schema.connect import connect, database_errors
from schema.partitions import (
    RetentionPlan,
    apply_retention,
    ensure_partitions,
    parse_retention,
    retention_plan,
)
from schema.runner import SchemaStatus, status, upgrade
from strangler.config import load_settings

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    group = subparsers.add_parser(
        "schema",
        help="create or upgrade the PostgreSQL target schema",
        description="Versioned SQL migrations of the target model (schema/migrations), "
        "applied to the database of DATABASE_URL.",
    )
    commands = group.add_subparsers(dest="schema_command", metavar="SCHEMA_COMMAND")
    up = commands.add_parser(
        "upgrade",
        help="apply pending migrations",
        description="Apply every pending migration in order, each in its own transaction, "
        "and create the monthly partitions ahead. Creates the database if it does not exist. "
        "Refuses to run when an applied migration's file was changed. Safe to run twice, "
        "or twice at once: a second runner waits, then finds nothing to do.",
    )
    up.add_argument(
        "--months-ahead",
        type=_months,
        default=3,
        help="monthly partitions to create ahead (3)",
    )
    up.set_defaults(handler=_upgrade)
    st = commands.add_parser(
        "status",
        help="show applied and pending migrations and partition coverage",
        description="List every migration as applied, pending, changed (file edited since it "
        "was applied) or missing (file gone); exits 1 when one is changed or missing.",
    )
    st.set_defaults(handler=_status)
    parts = commands.add_parser(
        "partitions",
        help="create monthly partitions ahead (for a periodic job)",
        description="Create the monthly partitions of job_runs and user_activity up to "
        "--months-ahead months after the current one; with --from-default also one for every "
        "month that has rows in the default partition, moving those rows into it. With "
        "--retain, list the partitions wholly older than the current month and the N months "
        "before it (a dry run); with --apply too, drop them: whole partitions, never row "
        "deletes. The horizon is recorded, so the sync and backfill do not bring the dropped "
        "rows back from MongoDB and verify leaves them out.",
    )
    parts.add_argument("--months-ahead", type=_months, default=3, help="months ahead (3)")
    parts.add_argument(
        "--from-default", action="store_true", help="carve months out of the default partition"
    )
    parts.add_argument(
        "--retain",
        type=_retention,
        metavar="N",
        help="months of history to keep besides the current one: 12mo, 18, 2y (a dry run "
        "listing unless --apply)",
    )
    parts.add_argument(
        "--apply", action="store_true", help="with --retain: drop the partitions listed"
    )
    parts.set_defaults(handler=_partitions)
    group.set_defaults(handler=lambda _args: group.print_help() or 2)


def _months(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of months (0 or more)")
    return value


def _retention(text: str) -> int:
    try:
        return parse_retention(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _upgrade(args: argparse.Namespace) -> int:
    settings = load_settings()
    asyncio.run(upgrade(settings.database_url, months_ahead=args.months_ahead))
    return 0


def render_status(report: SchemaStatus) -> list[str]:
    if not report.exists:
        lines = [f'database "{report.database}" does not exist yet; run: strangler schema upgrade']
    else:
        lines = [f'database "{report.database}"']
    width = max((len(m.name) for m in report.migrations), default=0)
    for m in report.migrations:
        when = f"  {m.applied_at:%Y-%m-%d %H:%M:%S %Z}" if m.applied_at else ""
        lines.append(f"  {m.name:<{width}}  {m.state:<8} sha256:{m.checksum[:12]}{when}")
    lines.extend(f"  {coverage.describe()}" for coverage in report.partitions)
    pending = len(report.pending)
    lines.append(f"{pending} pending migration(s)" if pending else "schema is up to date")
    for problem in report.problems:
        lines.append(
            f"{problem.name} is {problem.state}: restore it as it was applied "
            "(applied migrations never change; add a new one instead)"
        )
    return lines


def _status(_args: argparse.Namespace) -> int:
    settings = load_settings()
    report = asyncio.run(status(settings.database_url))
    for line in render_status(report):
        print(line)
    return 1 if report.problems else 0


def _partitions(args: argparse.Namespace) -> int:
    if args.apply and args.retain is None:
        print("--apply drops what --retain lists: give --retain N too", file=sys.stderr)
        return 2
    settings = load_settings()

    async def run() -> tuple[list[str], RetentionPlan | None, list[str]]:
        async with database_errors(settings.database_url):
            conn = await connect(settings.database_url)
            try:
                created = await ensure_partitions(
                    conn, args.months_ahead, from_default=args.from_default, progress=print
                )
                if args.retain is None:
                    return created, None, []
                plan = await retention_plan(conn, args.retain)
                dropped = await apply_retention(conn, plan) if args.apply else []
                return created, plan, dropped
            finally:
                await conn.close()

    created, plan, dropped = asyncio.run(run())
    print(f"{len(created)} partition(s) created" if created else "partitions already in place")
    if plan is not None:
        for line in plan.lines():
            print(line)
        if args.apply:
            print(f"dropped {len(dropped)} partition(s); rows before {plan.keep_from:%Y-%m-%d} "
                  "are no longer kept")  # fmt: skip
        elif plan.partitions:
            print("dry run: nothing dropped; add --apply to drop them")
    return 0
