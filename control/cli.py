"""``strangler flags show|plan|set``: the routing flag table, its gates, the fenced switch."""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from control.flags import (
    Change,
    Gate,
    GateConfig,
    GatesFailed,
    SwitchSteps,
    edit_rules_text,
    evaluate_gates,
    gate_results_json,
    parse_table,
    plan_change,
    read_flags,
    switch_with_fence,
    wait_for_table_hash,
    write_rules_atomically,
)
from control.plan import WholePlan, plan_all_new
from migrators.crypto import SecretBox
from migrators.registry import UnknownEntity, default_registry
from migrators.retirement import refuse_if_retired
from migrators.reverse import pending_count
from migrators.stores import legacy_store
from migrators.sync_status import sync_status
from migrators.touched import CONSUMER_GROUP, stream_key
from migrators.verify import verify_entity
from proxy.errors import AdminUnreachable
from schema.connect import connect
from schema.tenancy import enter_sync
from shadow_compare.endpoints import load_entity_endpoints
from shadow_compare.report import Gates, build_report
from shadow_compare.store import ResultStore
from strangler.cli import run_async
from strangler.config import Settings, load_settings, redact_url
from strangler.errors import DataError, ServiceUnavailable

__all__ = [
    "LiveProbes",
    "drain_check",
    "proxy_fences",
    "register",
    "run_plan",
    "run_set",
    "show_lines",
]


class LiveProbes:
    """The gates' evidence from PostgreSQL, the shadow result store and MongoDB."""

    def __init__(self, conn: asyncpg.Connection, settings: Settings, rules_path: str) -> None:
        self._conn = conn
        self._settings = settings
        self._rules_path = rules_path
        self._registry = default_registry()

    async def backfill_pending(self, entity: str) -> list[str]:
        try:
            group = self._registry.select(entity)
        except UnknownEntity:
            return [f"{entity} (no mapping yet)"]
        wanted = list(
            dict.fromkeys(name for spec in group for name in (spec.name, *spec.depends_on))
        )
        done = await self._conn.fetch(
            "SELECT entity FROM migration_backfill_checkpoints "
            "WHERE entity = ANY($1::text[]) AND completed_at IS NOT NULL",
            wanted,
        )
        completed = {row["entity"] for row in done}
        return [name for name in wanted if name not in completed]

    async def sync_state(self, entity: str) -> tuple[bool, float | None]:
        """Running when every member of the entity's group is synced; the largest lag."""
        try:
            names = [spec.name for spec in self._registry.select(entity)]
        except UnknownEntity:
            names = [entity]
        statuses = [await sync_status(self._conn, name) for name in names]
        lags = [s.lag_seconds for s in statuses if s.lag_seconds is not None]
        lag = max(lags) if lags and len(lags) == len(statuses) else None
        return all(s.running for s in statuses), lag

    async def shadow_gates(self, entity: str, config: GateConfig) -> list[Gate]:
        since = datetime.now(UTC) - timedelta(seconds=config.window_seconds)
        store = ResultStore(self._settings.database_url)
        try:
            data = await store.read(since=since, entity=entity, runs=["live"])
        finally:
            await store.close()
        report = build_report(
            data,
            since=since,
            runs=["live"],
            gates=Gates(
                min_samples=config.min_samples, max_regression_rate=config.max_regression_rate
            ),
            entity_endpoints=load_entity_endpoints(Path(self._rules_path)),
            entity=entity,
        )
        [entity_report] = [r for r in report.entities if r.entity == entity]
        return [Gate(f"shadow-{g.name}", g.passed, g.message) for g in entity_report.gates]

    async def verify(self, entity: str, min_age: float = 5.0) -> tuple[bool, str]:
        """Verify's verdict; ``min_age`` skips what the sync may not have carried yet."""
        try:
            group = self._registry.select(entity)
        except UnknownEntity:
            return False, f"{entity} has no mapping: it cannot be verified"
        context = SecretBox(self._settings.connector_keys).context()
        async with legacy_store(self._settings) as db:
            reports = [
                await verify_entity(db, self._conn, spec, context, min_age=min_age)
                for spec in group
            ]
        unclean = [report for report in reports if not report.clean]
        return not unclean, "; ".join(report.lines()[0] for report in (unclean or reports))


async def touched_backlog(redis: aioredis.Redis, entity: str, *, prefix: str = "") -> int:
    """Touched ids not yet applied: delivered but unacknowledged, plus never delivered."""
    key = stream_key(entity, prefix)
    try:
        groups = await redis.xinfo_groups(key)
    except ResponseError:
        return 0  # no stream yet: nothing was ever touched
    except RedisError as exc:
        raise ServiceUnavailable("REDIS_URL", "Redis", type(exc).__name__) from exc
    for group in groups:
        name = group.get("name")
        if (name.decode() if isinstance(name, bytes) else name) == CONSUMER_GROUP:
            lag = group.get("lag")
            return int(group.get("pending") or 0) + int(lag or 0)
    return int(await redis.xlen(key))


APPEND_ONLY_VERIFY_AGE = 5.0  # seconds: above the polling feed's tail interval


async def _connect(url: str) -> asyncpg.Connection:
    """A connection to the flags' database; a database that does not exist is a clear error."""
    try:
        return await connect(url)
    except asyncpg.InvalidCatalogNameError as exc:
        raise DataError(
            f"DATABASE_URL {redact_url(url)}: the database does not exist; create it with "
            "'strangler schema upgrade' (the flags' changes and gates live there)"
        ) from exc


async def _runs_in_flight(conn: asyncpg.Connection) -> int:
    """Runs the new side started (run_dispatch) that are not final yet."""
    async with conn.transaction():
        await enter_sync(conn)
        count: int = await conn.fetchval(
            "SELECT count(*) FROM run_dispatch d JOIN job_runs r USING (job_run_id) "
            "WHERE r.status IN ('queued', 'running')"
        )
    return count


def drain_check(
    change: Change,
    conn: asyncpg.Connection,
    redis: aioredis.Redis | None,
    verify: Callable[[str, float], Awaitable[tuple[bool, str]]],
    *,
    prefix: str = "",
) -> Any:
    """The drain test of a switch, over every collection the flag entity moves with
    (``workspaces``: the workflows, the trees and their histories).

    Leaving ``new``: their reverse outbox is empty. Leaving legacy as the truth: each one's
    forward sync leads, beat after the fence with lag 0, no touched id waits, and verify
    (nothing skipped as young) finds MongoDB and PostgreSQL equal: with writes fenced that
    is the proof that nothing legacy took is still in flight, even a write the touched
    stream never saw (which the sweep alone would find only within its bound).
    """
    try:
        specs = default_registry().select(change.entity)
    except UnknownEntity:
        specs = []
    names = [spec.name for spec in specs] or [change.entity]
    appends_only = bool(specs) and all(spec.append_only for spec in specs)

    async def drained(fenced_at: float) -> tuple[bool, str]:
        if change.from_mode == "new":  # leaving new as the truth: the outbox must be empty
            running = await _runs_in_flight(conn) if "job_runs" in names else 0
            if running:  # the run worker would go on writing them once legacy is the truth
                return False, (
                    f"{running} run(s) started on the new side not final yet "
                    "('strangler runs work' drives them; runNow is fenced meanwhile)"
                )
            left = sum([await pending_count(conn, name) for name in names])
            return left == 0, f"{left} outbox row(s) still to apply ('strangler reverse-sync')"
        states = []
        for name in names:
            status = await sync_status(conn, name)
            # Touched ids feed only the polling feed: a change stream carries every write
            # itself, and nobody reads the touched stream then.
            polled = status.feed in (None, "polling")
            backlog = (
                await touched_backlog(redis, name, prefix=prefix)
                if polled and redis is not None
                else 0
            )
            beat = status.last_heartbeat
            fresh = beat is not None and beat.timestamp() > fenced_at
            caught_up = status.running and fresh and status.lag_seconds == 0.0 and backlog == 0
            state = (
                f"{name}: forward sync running={status.running}, lag={status.lag_seconds}, "
                f"beat after the fence={fresh}, touched ids waiting={backlog}"
            )
            if not caught_up:
                return False, state
            states.append(name)
        # An append-only entity's forward sync goes on in new (migrators.spec.EntitySpec):
        # entries legacy appends meanwhile (no fence holds them: they come with the other
        # entities' writes) still arrive, so only entries older than that lag must agree.
        age = APPEND_ONLY_VERIFY_AGE if appends_only else 0.0
        clean, summary = await verify(change.entity, age)
        return clean, f"forward syncs caught up ({', '.join(states)}); verify: {summary}"

    return drained


# --- commands -----------------------------------------------------------------------------


def _read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")  # a few KB: fine on the event loop


def show_lines(rules_path: str, admin_fences: dict[str, list[str]] | None = None) -> list[str]:
    """The table; ``admin_fences``: entity -> the proxies fencing it now (from their status)."""
    flags = read_flags(rules_path)
    lines = [f"{'entity':<12} {'mode':<8} {'percent':>7} {'sample':>6}  fence"]
    for row in flags.values():
        percent = f"{row.percent:g}%" if row.mode == "canary" else "-"
        fences = (["rules file"] if row.fenced else []) + (admin_fences or {}).get(row.entity, [])
        fence = "fenced by " + ", ".join(fences) if fences else "-"
        lines.append(f"{row.entity:<12} {row.mode:<8} {percent:>7} {row.sample_rate:>6g}  {fence}")
    return lines


async def proxy_fences(admin_urls: list[str]) -> dict[str, list[str]]:
    """Which proxies hold an admin fence on which entity, from their /admin/status."""
    fenced: dict[str, list[str]] = {}
    async with httpx.AsyncClient(timeout=5.0) as client:
        for url in admin_urls:
            try:
                status = (await client.get(f"{url.rstrip('/')}/admin/status")).json()
            except (httpx.HTTPError, ValueError) as exc:
                raise AdminUnreachable([(url, type(exc).__name__)]) from exc
            for entity, left in status.get("admin_fences", {}).items():
                fenced.setdefault(entity, []).append(f"{url} ({left:.0f} s left)")
    return fenced


def _config(args: argparse.Namespace) -> GateConfig:
    return GateConfig(
        max_lag_seconds=args.max_lag,
        min_samples=args.min_samples,
        max_regression_rate=args.max_regression_rate,
        window_seconds=args.window_hours * 3600,
    )


def _gate_lines(change: Change, gates: list[Gate]) -> list[str]:
    lines = [f"change: {change.describe()}"]
    if change.switches_truth:
        lines.append("  switches the source of truth: fence, drain, flip, unfence")
    if not gates:
        lines.append("  gates: none (a step back is always allowed)")
    for gate in gates:
        lines.append(f"  [{'pass' if gate.passed else 'FAIL'}] {gate.name}: {gate.detail}")
    return lines


async def run_plan(settings: Settings, args: argparse.Namespace) -> tuple[Change, list[Gate]]:
    change = plan_change(read_flags(args.rules), args.entity, args.mode, args.percent)
    conn = await _connect(settings.database_url)
    try:
        if change.from_mode == "new":  # no gate and no --force past the point of no return
            await refuse_if_retired(conn, f"{change.describe()} refused, no entity leaves new")
        gates = await evaluate_gates(change, LiveProbes(conn, settings, args.rules), _config(args))
    finally:
        await conn.close()
    return change, gates


async def run_set(
    settings: Settings, args: argparse.Namespace, say: Any = print
) -> tuple[Change, list[Gate]]:
    change, gates = await run_plan(settings, args)
    for line in _gate_lines(change, gates):
        say(line)
    failed = [gate for gate in gates if not gate.passed]
    if failed and not args.force:
        raise GatesFailed(change, failed)
    if change.switches_truth and not args.proxy_admin:
        raise DataError(
            f"{change.describe()} switches the source of truth: give every proxy's admin URL "
            "(--proxy-admin URL, once per proxy) so their writes can be fenced"
        )
    edited = edit_rules_text(_read(args.rules), change)
    expected_hash = parse_table(edited, args.rules).canonical_hash()

    def flip() -> str:
        write_rules_atomically(args.rules, edited)
        return expected_hash

    conn = await _connect(settings.database_url)
    redis = aioredis.from_url(settings.redis_url) if change.switches_truth else None
    probes = LiveProbes(conn, settings, args.rules)
    steps = SwitchSteps(
        admin_urls=args.proxy_admin or [],
        drained=drain_check(change, conn, redis, probes.verify),
        fence_seconds=args.fence_seconds,
        settle_seconds=args.settle,
        drain_timeout=args.drain_timeout,
        log=lambda line: say(f"  {line}"),
    )
    try:
        if change.switches_truth:
            await switch_with_fence(change, flip, steps)
        else:
            flip()
            steps.say(f"flag set: {change.describe()} (table {expected_hash})")
            if args.proxy_admin:
                await wait_for_table_hash(args.proxy_admin, expected_hash, steps.hash_timeout)
                steps.say("every proxy serves the new table")
        await conn.execute(
            "INSERT INTO routing_flag_changes (who, entity, from_mode, to_mode, percent, "
            "gate_results, forced, reason) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)",
            args.who or getpass.getuser(),
            change.entity,
            change.from_mode,
            change.to_mode,
            round(change.to_percent) if change.to_mode == "canary" else None,
            gate_results_json(gates),
            bool(failed) and args.force,
            "; ".join([*([args.reason] if args.reason else []), *steps.events]),
        )
    finally:
        await conn.close()
        if redis is not None:
            await redis.aclose()
    return change, gates


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    flags = subparsers.add_parser(
        "flags",
        help="show and change the routing flag table, with gates and a fenced switch",
        description="Each entity's routing mode (legacy, shadow, canary N%, new) lives in "
        "routing_rules.yaml, which every proxy hot-reloads. 'plan' shows a change and its "
        "gates; 'set' applies it when the gates pass (or --force), fencing writes across a "
        "switch of the source of truth, and logs it in routing_flag_changes.",
    )
    sub = flags.add_subparsers(dest="flags_command", metavar="COMMAND", required=True)
    show = sub.add_parser("show", help="the flag table", description="Print the flag table.")
    show.add_argument("--rules", default="routing_rules.yaml", help="the flag table file")
    show.add_argument(
        "--proxy-admin",
        action="append",
        metavar="URL",
        help="also show the write fences these proxies hold now (repeatable)",
    )
    show.set_defaults(handler=_show)
    for name, text in (
        ("plan", "show a change of an entity's mode and evaluate its gates (changes nothing)"),
        ("set", "change an entity's mode: gates, then the (fenced) switch, then the log"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument(
            "entity",
            metavar="ENTITY",
            help="e.g. connectors" + ("; 'all new' plans every entity" if name == "plan" else ""),
        )
        p.add_argument("mode", metavar="MODE", help="legacy | shadow | canary | new")
        p.add_argument("percent", metavar="PERCENT", nargs="?", type=float, help="canary only")
        p.add_argument("--rules", default="routing_rules.yaml", help="the flag table file")
        p.add_argument("--max-lag", type=float, default=5.0, help="into new: sync lag, s (5)")
        p.add_argument("--min-samples", type=int, default=30, help="into canary: compared (30)")
        p.add_argument("--max-regression-rate", type=float, default=0.01, help="into canary (0.01)")
        p.add_argument("--window-hours", type=float, default=24.0, help="shadow report window (24)")
        if name == "plan":
            p.add_argument(
                "--canary",
                default="50",
                metavar="PERCENTS",
                help="with 'all new': the canary steps of each entity's path (default 50)",
            )
        if name == "set":
            p.add_argument("--force", action="store_true", help="apply even if gates fail")
            p.add_argument("--who", help="who makes the change (default: the OS user)")
            p.add_argument("--reason", help="why, for the change log")
            p.add_argument(
                "--proxy-admin",
                action="append",
                metavar="URL",
                help="a proxy's admin URL (repeat for every proxy); required for a switch",
            )
            p.add_argument("--fence-seconds", type=float, default=60.0, help="fence TTL (60)")
            p.add_argument("--settle", type=float, default=1.0, help="wait after fencing (1)")
            p.add_argument("--drain-timeout", type=float, default=60.0, help="drain wait (60)")
        p.set_defaults(handler=_plan if name == "plan" else _set)


def _show(args: argparse.Namespace) -> int:
    fences = run_async(proxy_fences(args.proxy_admin)) if args.proxy_admin else None
    for line in show_lines(args.rules, fences):
        print(line)
    return 0


async def run_plan_all(settings: Settings, args: argparse.Namespace) -> WholePlan:
    """``flags plan all new``: every entity's path into new, in reference order."""
    if args.mode != "new" or args.percent is not None:
        raise DataError("'all' plans every entity into new: use 'strangler flags plan all new'")
    try:
        percents = [float(p) for p in args.canary.split(",") if p.strip()]
    except ValueError as exc:
        raise DataError(f"--canary {args.canary!r}: give percents like 10,50") from exc
    conn = await _connect(settings.database_url)
    try:
        return await plan_all_new(
            read_flags(args.rules),
            default_registry(),
            LiveProbes(conn, settings, args.rules),
            _config(args),
            canary_percents=percents,
        )
    finally:
        await conn.close()


def _plan(args: argparse.Namespace) -> int:
    if args.entity == "all":
        plan = run_async(run_plan_all(load_settings(), args))
        for line in plan.lines():
            print(line)
        return 0 if not plan.failed else 1
    change, gates = run_async(run_plan(load_settings(), args))
    for line in _gate_lines(change, gates):
        print(line)
    return 0 if all(gate.passed for gate in gates) else 1


def _set(args: argparse.Namespace) -> int:
    run_async(run_set(load_settings(), args))
    return 0
