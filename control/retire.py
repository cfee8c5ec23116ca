"""``strangler retire``: decommission MongoDB, the point of no return of the migration.

Checks, in this order (each printed with its evidence; the first failing ones refuse):

1. ``every-entity-new``: every entity of the flag table is in ``new``;
2. ``no-legacy-sampling``: no entity samples reads to the legacy side (``sample_rate`` 0),
   since in ``new`` a sampled read is also sent to legacy, which is about to be stopped;
3. ``outbox-drained``: every outbox row was applied to MongoDB (``strangler reverse-sync``);
4. ``proxies-serve-table`` (with ``--proxy-admin``): every proxy serves this flag table;
5. ``verify-clean``: a final verify of every registered entity finds both stores equal
   (run only when the checks above pass: it reads all of MongoDB).

Without ``--yes`` that is all (a dry run). With it, the point of no return is recorded in
``migration_retirement`` in one transaction (migrators/retirement.py), the outbox checked
again inside it; retiring again says when it happened and records nothing. After it the
reverse sync refuses to start (a running one stops at its next pass) and ``flags set``
refuses to move an entity out of ``new``. What rollback means then: docs/retire.md.
"""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from control.flags import Gate, parse_table
from migrators.crypto import SecretBox
from migrators.registry import default_registry
from migrators.retirement import (
    Retirement,
    read_retirement,
    record_retirement,
    retirement_recordable,
)
from migrators.reverse import pending_count
from migrators.stores import legacy_store, postgres
from migrators.verify import VerifyReport, verify_entity
from strangler.cli import run_async
from strangler.config import Settings, load_settings, redact_url
from strangler.errors import DataError, PermanentError

__all__ = ["RetireRefused", "RetireResult", "register", "run_retire"]

Say = Callable[[str], object]


class RetireRefused(PermanentError):
    def __init__(self, failed: Sequence[Gate]) -> None:
        self.failed = tuple(failed)
        listed = "; ".join(f"{g.name}: {g.detail}" for g in failed)
        super().__init__(f"refused, {len(failed)} check(s) failed ({listed}); nothing recorded")


@dataclass(frozen=True)
class RetireResult:
    """What a run found: the checks, and the retirement (None after a dry run)."""

    checks: list[Gate]
    retirement: Retirement | None
    recorded: bool = False  # this run wrote the record


def _flag_checks(rules_path: str) -> tuple[str, list[Gate]]:
    """The flag table's hash and the checks read from it alone."""
    try:
        text = Path(rules_path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"--rules {rules_path}: cannot read it ({exc.strerror})") from exc
    rules = parse_table(text, rules_path)
    entities = rules.entities
    not_new = [
        f"{name} ({spec.mode}{f' {spec.percent:g}%' if spec.mode == 'canary' else ''})"
        for name, spec in entities.items()
        if spec.mode != "new"
    ]
    sampling = [f"{name} ({spec.sample_rate:g})" for name, spec in entities.items()
                if spec.sample_rate > 0]  # fmt: skip
    return rules.canonical_hash(), [
        Gate(
            "every-entity-new",
            not not_new,
            f"all {len(entities)} entities are in new"
            if not not_new
            else f"not in new: {', '.join(not_new)} (move them with 'strangler flags set', "
            "or see 'strangler flags plan all new')",
        ),
        Gate(
            "no-legacy-sampling",
            not sampling,
            "no entity samples reads to legacy"
            if not sampling
            else f"sample_rate above 0: {', '.join(sampling)}; set it to 0 in {rules_path}: "
            "in new a sampled read is also sent to legacy, which is stopped after retiring",
        ),
    ]


async def _outbox_check(conn: asyncpg.Connection) -> Gate:
    pending = await pending_count(conn)
    return Gate(
        "outbox-drained",
        pending == 0,
        "every outbox row is applied to MongoDB"
        if pending == 0
        else f"{pending} outbox row(s) not yet applied: run 'strangler reverse-sync' (or let "
        "the running one drain them) first",
    )


async def _proxies_check(admin_urls: Sequence[str], table_hash: str) -> Gate:
    behind: list[str] = []
    async with httpx.AsyncClient(timeout=5.0) as client:
        for url in admin_urls:
            try:
                status = (await client.get(f"{url.rstrip('/')}/admin/status")).json()
            except (httpx.HTTPError, ValueError) as exc:
                behind.append(f"{url} unreachable ({type(exc).__name__})")
                continue
            if status.get("table_hash") != table_hash:
                behind.append(f"{url} serves table {status.get('table_hash')}")
    return Gate(
        "proxies-serve-table",
        not behind,
        f"{len(admin_urls)} proxy(ies) serve table {table_hash}"
        if not behind
        else "; ".join(behind) + f" (wanted {table_hash}: reload them, then retire again)",
    )


async def _final_verify(
    settings: Settings, conn: asyncpg.Connection, min_age: float, say: Say
) -> tuple[Gate, dict[str, Any]]:
    context = SecretBox(settings.connector_keys).context()
    reports: list[VerifyReport] = []
    async with legacy_store(settings) as db:
        for spec in default_registry():
            say(f"  verifying {spec.name} ...")
            report = await verify_entity(db, conn, spec, context, min_age=min_age)
            for line in report.lines() if not report.clean else report.lines()[:1]:
                say(f"    {line}")
            reports.append(report)
    differing = [r.entity for r in reports if not r.clean]
    summary = {
        "min_age": min_age,
        "entities": {
            r.entity: {
                "clean": r.clean,
                "mongo": r.mongo_count,
                "postgres": r.postgres_count,
                "quarantined": r.quarantined,
                "skipped_young": r.skipped_young,
                "differences": len(r.differences),
            }
            for r in reports
        },
    }
    skipped = sum(r.skipped_young for r in reports)
    if differing:
        detail = (
            "differing: "
            + ", ".join(f"{r.entity} ({len(r.differences)})" for r in reports if not r.clean)
            + "; see the lines above ('strangler verify ENTITY' shows them again)"
        )
    else:
        detail = f"{len(reports)} entities clean, " + (
            f"{skipped} too young to compare (--min-age {min_age:g})" if skipped
            else "nothing skipped"
        )  # fmt: skip
    return Gate("verify-clean", not differing, detail), summary


def _line(gate: Gate) -> str:
    return f"  [{'pass' if gate.passed else 'FAIL'}] {gate.name}: {gate.detail}"


async def run_retire(
    settings: Settings, args: argparse.Namespace, say: Say = print
) -> RetireResult:
    if args.min_age < 0:
        raise DataError("--min-age must not be negative")
    async with postgres(settings) as conn:
        retired = await read_retirement(conn)
        if retired is not None:  # MongoDB may be gone already: no check needs it
            say(f"{retired.describe()} (flag table {retired.flag_table_hash}): nothing to do")
            return RetireResult([], retired)
        if not await retirement_recordable(conn):
            raise DataError(
                f"DATABASE_URL {redact_url(settings.database_url)} has no migration_retirement "
                "table yet: run 'strangler schema upgrade' (migration 0043) first"
            )
        say("retire MongoDB: the point of no return (docs/retire.md)")
        say(f"  DATABASE_URL {redact_url(settings.database_url)}")
        say(f"  MONGO_URL    {redact_url(settings.mongo_url)}")
        table_hash, checks = _flag_checks(args.rules)
        say(f"  flag table   {args.rules} (table {table_hash})")
        say("checks:")
        for gate in checks:
            say(_line(gate))
        checks.append(await _outbox_check(conn))
        say(_line(checks[-1]))
        if args.proxy_admin:
            checks.append(await _proxies_check(args.proxy_admin, table_hash))
            say(_line(checks[-1]))
        else:
            say("  [skip] proxies-serve-table: no --proxy-admin given; make sure every proxy "
                "serves this table before you stop legacy")  # fmt: skip
        failed = [gate for gate in checks if not gate.passed]
        if failed:
            say("  [skip] verify-clean: runs once the checks above pass")
            raise RetireRefused(failed)
        verify_gate, summary = await _final_verify(settings, conn, args.min_age, say)
        checks.append(verify_gate)
        say(_line(verify_gate))
        if not verify_gate.passed:
            raise RetireRefused([verify_gate])
        if not args.yes:
            say("dry run: every check passes, nothing recorded; run again with --yes to retire")
            return RetireResult(checks, None)
        if _flag_checks(args.rules)[0] != table_hash:
            raise DataError(f"{args.rules} changed while retire ran: nothing recorded; run again")
        retirement, recorded = await record_retirement(
            conn,
            who=args.who or getpass.getuser(),
            flag_table_hash=table_hash,
            mongo_url=redact_url(settings.mongo_url),
            verify_summary=summary,
            reason=args.reason,
        )
    if not recorded:  # a concurrent retire was first
        say(f"{retirement.describe()} (flag table {retirement.flag_table_hash}): nothing to do")
        return RetireResult(checks, retirement)
    up_to = retirement.outbox_applied_up_to
    say(f"recorded: {retirement.describe()}; the point of no return is passed")
    say(f"  MongoDB has every write the new side committed up to outbox row {up_to}"
        if up_to is not None else "  the new side never wrote to the outbox")  # fmt: skip
    say("  from now on 'strangler reverse-sync' refuses to start (running ones stop at their "
        "next pass) and 'strangler flags set' refuses to move an entity out of new")  # fmt: skip
    say("  next: stop and disable the reverse-sync and sync units, the legacy backend and "
        "MongoDB; the proxies go on serving every request from PostgreSQL")  # fmt: skip
    return RetireResult(checks, retirement, recorded=True)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    parser = subparsers.add_parser(
        "retire",
        help="decommission MongoDB: check, then record the point of no return (--yes)",
        description="With every entity of the flag table in new, the outbox drained and a "
        "final verify clean, record that MongoDB is retired: from then on nothing is "
        "carried back to it (reverse-sync refuses to run) and no entity can leave new "
        "(flags set refuses). Before it, rolling back is a flag change; after it, going back "
        "would need an export of PostgreSQL into MongoDB, which this toolkit does not do "
        "(docs/retire.md). Without --yes it only prints the checks (a dry run).",
    )
    parser.add_argument("--rules", default="routing_rules.yaml", help="the flag table file")
    act = parser.add_mutually_exclusive_group()
    act.add_argument(
        "--dry-run",
        action="store_true",
        help="only print the plan and the checks (the default without --yes)",
    )
    act.add_argument("--yes", action="store_true", help="record the point of no return")
    parser.add_argument("--who", help="who retires MongoDB (default: the OS user)")
    parser.add_argument("--reason", help="why, kept with the record")
    parser.add_argument(
        "--proxy-admin",
        action="append",
        metavar="URL",
        help="a proxy's admin URL (repeat for every proxy): check each serves the table",
    )
    parser.add_argument(
        "--min-age",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="final verify: skip what changed less than this long ago (default 0: nothing)",
    )
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    run_async(run_retire(load_settings(), args))
    return 0
