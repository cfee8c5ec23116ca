"""``strangler dlq list|replay``: the forward sync's dead letters."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from migrators.crypto import SecretBox
from migrators.dlq import list_dead_letters, replay_dead_letters
from migrators.registry import default_registry
from migrators.stores import legacy_store, postgres
from strangler.cli import run_async
from strangler.config import Settings, load_settings
from strangler.errors import DataError

__all__ = ["register", "run_list", "run_replay"]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    parser = subparsers.add_parser(
        "dlq",
        help="inspect and replay sync events that kept failing",
        description="Events the forward sync could not apply after its retries are kept in "
        "migration_dead_letters; list them, fix the cause, then replay them.",
    )
    commands = parser.add_subparsers(dest="dlq_command", metavar="COMMAND", required=True)
    listing = commands.add_parser(
        "list",
        help="show dead letters waiting for a replay",
        description="One line per dead letter: id, entity, legacy id, attempts, error.",
    )
    listing.add_argument("--entity", help="only this entity")
    listing.add_argument(
        "--all", action="store_true", help="include letters already replayed successfully"
    )
    listing.set_defaults(handler=_list)
    replay = commands.add_parser(
        "replay",
        help="re-sync the documents of dead letters from MongoDB as they are now",
        description="For each waiting dead letter (or the ones named with --id), read the "
        "document as MongoDB holds it now and apply it through the writer; records the "
        "outcome (applied, skipped when already current, failed).",
    )
    replay.add_argument("--entity", help="only this entity")
    replay.add_argument("--id", type=int, action="append", default=[], help="only this id")
    replay.set_defaults(handler=_replay)


def _say(out: Any, line: str) -> None:
    print(line, file=out, flush=True)


async def run_list(
    settings: Settings, entity: str | None, include_replayed: bool, *, out: Any = sys.stdout
) -> int:
    if entity is not None:
        default_registry().get(entity)  # an unknown name fails with the known ones
    async with postgres(settings) as conn:
        letters = await list_dead_letters(conn, entity=entity, include_replayed=include_replayed)
    if not letters:
        _say(out, "no dead letters" + (f" for {entity}" if entity else ""))
        return 0
    for letter in letters:
        state = letter.replay_outcome or "waiting"
        _say(
            out,
            f"{letter.id:>6}  {letter.entity:<14} {letter.legacy_id or '?':<20} "
            f"{letter.feed:<13} attempts={letter.attempts} {state:<8} "
            f"{letter.last_failed_at:%Y-%m-%d %H:%M:%S}  {letter.error_class}: {letter.error}",
        )
    _say(out, f"{len(letters)} dead letter(s)")
    return len(letters)


async def run_replay(
    settings: Settings, entity: str | None, ids: list[int], *, out: Any = sys.stdout
) -> list[Any]:
    registry = default_registry()
    if entity is not None:
        registry.get(entity)
    specs = {spec.name: spec for spec in registry}
    box = SecretBox(settings.connector_keys)
    async with legacy_store(settings) as db, postgres(settings) as conn:
        letters = await list_dead_letters(conn, entity=entity, ids=ids)
        if ids and len(letters) < len(set(ids)):
            missing = sorted(set(ids) - {letter.id for letter in letters})
            raise DataError(
                f"no waiting dead letter with id {', '.join(map(str, missing))}"
                + (f" for {entity}" if entity else "")
                + "; see 'strangler dlq list --all'"
            )
        unknown = sorted({letter.entity for letter in letters} - set(specs))
        if unknown:
            raise DataError(f"dead letters of entities without a spec: {', '.join(unknown)}")
        outcomes = await replay_dead_letters(conn, db, specs, box.context(), letters)
    for outcome in outcomes:
        detail = f" ({outcome.detail})" if outcome.detail else ""
        _say(out, f"{outcome.id:>6}  {outcome.legacy_id or '?':<20} {outcome.outcome}{detail}")
    failed = sum(1 for o in outcomes if o.outcome == "failed")
    _say(out, f"replayed {len(outcomes)} dead letter(s), {failed} failed again")
    return outcomes


def _list(args: argparse.Namespace) -> int:
    run_async(run_list(load_settings(), args.entity, args.all))
    return 0


def _replay(args: argparse.Namespace) -> int:
    outcomes = run_async(run_replay(load_settings(), args.entity, args.id))
    return 1 if any(o.outcome == "failed" for o in outcomes) else 0
