"""``strangler shadow report|replay|prune|work``: the gates CI runs, retention, and the
comparator as a process of its own (shadow_compare.work_cli).

Exit codes: 0 every gate passed, 1 a gate failed (the report says which), 2 the
command could not run (strangler.cli prints the one-line reason).
"""

from __future__ import annotations

import argparse
import logging
import re
import secrets
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shadow_compare.aggregate import as_report_data, tally
from shadow_compare.corpus import load_corpora
from shadow_compare.endpoints import ENTITIES, load_entity_endpoints
from shadow_compare.errors import StoreUnavailable
from shadow_compare.render import FORMATS, render
from shadow_compare.replay import ReplayOptions, replay
from shadow_compare.report import Gates, Report, build_report
from shadow_compare.rules import RuleSet, load_rules
from shadow_compare.store import ResultStore
from shadow_compare.work_cli import add_work_parser
from strangler.cli import run_async
from strangler.config import load_settings
from strangler.errors import DataError

__all__ = ["register"]

DEFAULT_RULES = Path("shadow_rules.yaml")
DEFAULT_FLAG_TABLE = Path("routing_rules.yaml")
_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``30m``, ``24h``, ``7d`` (ago) or an ISO 8601 time (UTC when no zone is given)."""
    moment = now or datetime.now(UTC)
    relative = _RELATIVE.match(text.strip())
    if relative:
        return moment - timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise DataError(
            f"--since {text!r} is neither a duration (30m, 24h, 7d) nor an ISO 8601 time"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("a rate between 0 and 1, e.g. 0.01")
    return value


def _gate_arguments(parser: argparse.ArgumentParser, *, rate: float, samples: int, on: str) -> None:
    group = parser.add_argument_group("gates (exit code 1 when one fails)")
    group.add_argument(
        "--max-regression-rate",
        type=_rate,
        default=rate,
        metavar="R",
        help=f"highest regression rate allowed per entity (default {rate:g})",
    )
    group.add_argument(
        "--min-samples",
        type=int,
        default=samples,
        metavar="N",
        help=f"fewest compared exchanges per entity; fewer fails: no traffic never passes "
        f"(default {samples})",
    )
    group.add_argument(
        "--gate-on",
        choices=("upper", "observed"),
        default=on,
        help="gate the rate's upper confidence bound (sampled traffic) or the observed rate "
        f"(an exhaustive corpus) (default {on})",
    )
    group.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="confidence of the upper bound (default 0.95)",
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="text", help="output format (default text)"
    )
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    parser.add_argument(
        "--junit", type=Path, help="also write the report as JUnit XML to this file (for CI)"
    )
    parser.add_argument(
        "--flag-table",
        type=Path,
        default=DEFAULT_FLAG_TABLE,
        help="routing_rules.yaml, for the endpoints each entity owns (coverage)",
    )
    parser.add_argument(
        "--samples", type=int, default=10, help="samples shown per entity (default 10)"
    )


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    shadow = subparsers.add_parser(
        "shadow",
        help="shadow comparison reports and corpus replays (the cut-over gates)",
        description="Compare the legacy and new sides: report on proxied traffic, or replay a "
        "corpus against both sides. Exit code 1 when a gate fails.",
    )
    commands = shadow.add_subparsers(dest="shadow_command", metavar="SUBCOMMAND", required=True)

    report = commands.add_parser(
        "report",
        help="report on stored comparisons, with gates for CI",
        description="Per entity and endpoint: exchanges compared, regression rate and its upper "
        "confidence bound, expected divergences, noise, lag, coverage (endpoints and status codes "
        "exercised), top paths and samples. Reads DATABASE_URL.",
    )
    report.add_argument(
        "--entity", choices=ENTITIES, help="only this entity (and fail if it had no traffic)"
    )
    report.add_argument(
        "--since", default="24h", help="30m, 24h, 7d or an ISO 8601 time (default 24h)"
    )
    report.add_argument(
        "--run",
        default="live",
        help="'live' (proxied traffic, default), a replay run id, or 'all'",
    )
    _gate_arguments(report, rate=0.01, samples=30, on="upper")
    report.set_defaults(handler=_report)

    replay_parser = commands.add_parser(
        "replay",
        help="send a corpus of requests to both sides, compare, report (what CI runs)",
        description="Send every case of the corpus files in --cases (YAML or JSON) to legacy "
        "and new concurrently, with tokens minted for the corpus's tenants (JWT_SECRET), "
        "compare, store the outcomes (DATABASE_URL, unless --no-store) and print the report.",
    )
    replay_parser.add_argument(
        "--cases", type=Path, required=True, help="directory of corpus files"
    )
    replay_parser.add_argument("--legacy", help="legacy base URL (default: LEGACY_URL)")
    replay_parser.add_argument(
        "--new", required=True, help="new side base URL, e.g. http://127.0.0.1:8002"
    )
    replay_parser.add_argument(
        "--rules",
        type=Path,
        default=DEFAULT_RULES,
        help="comparison rules (default shadow_rules.yaml)",
    )
    replay_parser.add_argument(
        "--concurrency", type=int, default=8, help="cases in flight (default 8)"
    )
    replay_parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per case (default 10)"
    )
    replay_parser.add_argument("--no-store", action="store_true", help="do not write to PostgreSQL")
    _gate_arguments(replay_parser, rate=0.0, samples=1, on="observed")
    replay_parser.set_defaults(handler=_replay)

    prune = commands.add_parser(
        "prune",
        help="delete stored comparisons older than a duration",
        description="Delete counts and samples recorded before --older-than (live traffic and "
        "replay runs alike) from DATABASE_URL, in one transaction.",
    )
    prune.add_argument(
        "--older-than", required=True, help="a duration (30d, 12h) or an ISO 8601 time"
    )
    prune.set_defaults(handler=_prune)
    add_work_parser(commands)


def _gates(args: argparse.Namespace) -> Gates:
    if args.min_samples < 1:
        raise DataError("--min-samples must be at least 1: no traffic must never pass")
    if not 0.5 < args.confidence < 1:
        raise DataError("--confidence must be between 0.5 and 1, e.g. 0.95")
    return Gates(args.min_samples, args.max_regression_rate, args.confidence, args.gate_on)


def _emit(report: Report, args: argparse.Namespace) -> int:
    text = render(report, args.format)
    sys.stdout.write(text)
    for option, path, content in (
        ("--output", args.output, text),
        ("--junit", args.junit, render(report, "junit") if args.junit is not None else ""),
    ):
        if path is None:
            continue
        try:
            path.write_text(content, encoding="utf-8")
        except OSError as exc:
            raise DataError(f"{option} {path}: cannot write ({exc.strerror})") from exc
    return 0 if report.passed else 1


def _report(args: argparse.Namespace) -> int:
    settings = load_settings()
    gates = _gates(args)
    since = parse_since(args.since)
    runs = None if args.run == "all" else [args.run]
    endpoints = load_entity_endpoints(args.flag_table)

    async def read() -> Report:
        store = ResultStore(settings.database_url)
        try:
            data = await store.read(
                since=since, entity=args.entity, runs=runs, samples_per_cause=args.samples
            )
        finally:
            await store.close()
        return build_report(
            data,
            since=since,
            runs=runs,
            gates=gates,
            entity_endpoints=endpoints,
            entity=args.entity,
            samples_per_entity=args.samples,
        )

    return _emit(run_async(read()), args)


def _replay(args: argparse.Namespace) -> int:
    settings = load_settings()
    if not getattr(args, "verbose", False):  # one line per request would bury the progress
        logging.getLogger("httpx").setLevel(logging.WARNING)
    gates = _gates(args)
    if args.concurrency < 1 or args.timeout <= 0:
        raise DataError("--concurrency must be at least 1 and --timeout above 0")
    endpoints = load_entity_endpoints(args.flag_table)
    rules = (
        load_rules(args.rules)
        if args.rules.exists() or args.rules != DEFAULT_RULES
        else RuleSet.empty()
    )
    corpora = load_corpora(args.cases, endpoints)
    run_id = f"replay-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    options = ReplayOptions(
        legacy_url=args.legacy or settings.legacy_url,
        new_url=args.new,
        jwt_secret=settings.jwt_secret,
        run_id=run_id,
        concurrency=args.concurrency,
        timeout_seconds=args.timeout,
    )
    started = datetime.now(UTC).replace(second=0, microsecond=0)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    async def run() -> Report:
        progress(
            f"replay {run_id}: {sum(len(c.cases) for c in corpora)} cases from {len(corpora)} files"
        )
        summary = await replay(
            corpora, options=options, rules=rules, entity_endpoints=endpoints, progress=progress
        )
        counted = tally(summary.outcomes)
        if args.no_store:
            data = as_report_data(counted, per_cause=args.samples)
        else:
            store = ResultStore(settings.database_url)
            try:
                await store.write(counted)
                data = await store.read(
                    since=started, runs=[run_id], samples_per_cause=args.samples
                )
            except StoreUnavailable as exc:
                raise StoreUnavailable(
                    exc.setting, exc.target, f"{exc.detail}; or pass --no-store"
                ) from exc
            finally:
                await store.close()
            progress(f"stored as run {run_id}: strangler shadow report --run {run_id}")
        report = build_report(
            data,
            since=started,
            runs=[run_id],
            gates=gates,
            entity_endpoints=endpoints,
            samples_per_entity=args.samples,
        )
        report.checks.extend(summary.checks())
        return report

    return _emit(run_async(run()), args)


def _prune(args: argparse.Namespace) -> int:
    settings = load_settings()
    before = parse_since(args.older_than)

    async def run() -> dict[str, int]:
        store = ResultStore(settings.database_url)
        try:
            return await store.prune(before=before)
        finally:
            await store.close()

    deleted = run_async(run())
    print(
        f"deleted rows older than {before.isoformat()}: "
        + ", ".join(f"{table} {n}" for table, n in deleted.items())
    )
    return 0
