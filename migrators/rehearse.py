"""Rehearse the migration of a production export on one machine, in one process.

Loads the export (``mongoexport`` files, as ``strangler legacy load`` reads
them) into an in-process store, upgrades the PostgreSQL schema, backfills and
verifies every entity that has a spec, and reports per collection: documents
read, rows written, quarantined by reason with a few (redacted) examples,
dangling references and other notes, verify's outcome, time. This is how an
operator learns, on a laptop, what production's data will do.
"""

from __future__ import annotations

import json
import pathlib
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from bson import json_util
from bson.json_util import RELAXED_JSON_OPTIONS

from legacy_emulator.export_load import LoadSummary, load_export
from migrators.backfill import BackfillSummary, backfill_entity
from migrators.crypto import SecretBox
from migrators.registry import SpecRegistry, default_registry
from migrators.verify import VerifyReport, verify_entity
from schema.connect import connect
from schema.runner import upgrade
from strangler.config import ConnectorKeys, redact_url
from strangler.errors import ConfigError
from strangler.mongo import Database, close_database, open_database, ping

__all__ = ["CollectionAccount", "RehearsalReport", "rehearse"]

EXAMPLES_PER_REASON = 3
Progress = Callable[[str], object]


@dataclass
class RehearsalReport:
    load: LoadSummary
    backfills: list[BackfillSummary] = field(default_factory=list)
    verifies: list[VerifyReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return (
            all(v.clean for v in self.verifies)
            and not self.load.problems
            and all(line.accounted for line in self.accounts())
        )

    def accounts(self) -> list[CollectionAccount]:
        """Every exported collection's documents, each migrated, quarantined or in a
        collection that has no migration spec yet (named, never silently skipped)."""
        verified = {v.entity: v for v in self.verifies}
        accounts: list[CollectionAccount] = []
        mapped: set[str] = set()
        for summary in self.backfills:
            mapped.add(summary.collection)
            report = verified.get(summary.entity)
            exported = self.load.counts.get(summary.collection, 0)
            if report is None:  # not verified: count what the backfill says it did
                quarantined = sum(summary.result.quarantined.values())
                migrated = summary.result.read - quarantined
            else:
                migrated, quarantined = report.postgres_count, report.quarantined
            accounts.append(CollectionAccount(summary.collection, exported, migrated, quarantined))
        for collection, exported in self.load.counts.items():
            if collection not in mapped:
                accounts.append(CollectionAccount(collection, exported, not_mapped=exported))
        return accounts

    def account_lines(self) -> list[str]:
        accounts = self.accounts()
        width = max([len(a.collection) for a in accounts] + [5])
        lines = ["every exported document (exported = migrated + quarantined):"]
        lines += [f"  {a.collection:<{width}}  {a.line()}" for a in accounts]
        total = CollectionAccount(
            "total",
            sum(a.exported for a in accounts),
            sum(a.migrated for a in accounts),
            sum(a.quarantined for a in accounts),
            sum(a.not_mapped for a in accounts),
        )
        unmapped = [a.collection for a in accounts if a.not_mapped]
        suffix = f" ({', '.join(unmapped)}: no migration spec yet)" if unmapped else ""
        lines.append(f"  {'total':<{width}}  {total.line(always_unmapped=True)}{suffix}")
        return lines

    def lines(self) -> list[str]:
        lines = ["migration rehearsal report", "=========================="]
        loaded = sum(self.load.counts.values())
        lines.append(f"export: {loaded:,} documents loaded, {len(self.load.problems)} problem(s)")
        for problem in self.load.problems[:10]:
            lines.append(f"  {problem.file}:{problem.line or '-'}: {problem.reason}")
        verified = {v.entity: v for v in self.verifies}
        for summary in self.backfills:
            r = summary.result
            lines.append("")
            lines.append(f"{summary.collection} -> {summary.entity}")
            lines.append(f"  documents read       {r.read:>10,}")
            lines.append(f"  rows written         {r.written:>10,}")
            lines.append(f"  rows unchanged       {r.unchanged:>10,}")
            lines.append(f"  quarantined          {sum(r.quarantined.values()):>10,}")
            lines.append(f"  time                 {summary.seconds:>10.2f} s")
            examples: dict[str, list[str]] = defaultdict(list)
            for legacy_id, reason, document in r.quarantine_examples:
                if len(examples[reason]) < EXAMPLES_PER_REASON:
                    examples[reason].append(f"{legacy_id}: {_brief(document)}")
            for reason, count in sorted(r.quarantined.items()):
                lines.append(f"    {reason}: {count:,}")
                lines += [f"      e.g. {example}" for example in examples[reason]]
            notes = Counter(note.kind for _, note in r.notes)
            ids: dict[str, list[str]] = defaultdict(list)
            for legacy_id, note in r.notes:
                if len(ids[note.kind]) < EXAMPLES_PER_REASON:
                    ids[note.kind].append(f"{legacy_id} ({note.detail})")
            for kind, count in sorted(notes.items()):
                lines.append(f"  reported {kind}: {count:,} (kept)")
                lines += [f"      e.g. {example}" for example in ids[kind]]
            if summary.not_read:
                lines.append(f"  NOT READ (odd _id types): {summary.not_read:,}")
            report = verified.get(summary.entity)
            if report is not None:
                lines += ["  verify: " + report.lines()[0]]
                lines += ["  " + line for line in report.lines()[1:]]
        lines.append("")
        lines.append(
            f"total time {self.seconds:.1f} s; "
            + ("everything mapped is migrated or quarantined with a reason, verify clean"
               if self.clean else "NOT CLEAN: see above")
        )  # fmt: skip
        lines.append("")
        lines += self.account_lines()
        return lines


@dataclass(frozen=True)
class CollectionAccount:
    """What became of one collection's exported documents."""

    collection: str
    exported: int
    migrated: int = 0
    quarantined: int = 0
    not_mapped: int = 0

    @property
    def accounted(self) -> bool:
        return self.exported == self.migrated + self.quarantined + self.not_mapped

    def line(self, *, always_unmapped: bool = False) -> str:
        if self.not_mapped and not self.migrated and not self.quarantined:
            parts = f"not yet mapped {self.not_mapped:,}"
        else:
            parts = f"migrated {self.migrated:,} + quarantined {self.quarantined:,}"
            if self.not_mapped or always_unmapped:
                parts += f" + not yet mapped {self.not_mapped:,}"
        if self.accounted:
            return f"exported {self.exported:,} = {parts}"
        missing = self.exported - self.migrated - self.quarantined - self.not_mapped
        return f"exported {self.exported:,} != {parts}: {missing:,} NOT ACCOUNTED FOR"


async def _empty_database(url: str) -> Database:
    db = open_database(url)
    try:
        await ping(db, url)
        held = await db.list_collection_names()
    except BaseException:
        await close_database(db)
        raise
    if held:
        await close_database(db)
        raise ConfigError(
            "--mongo-url",
            f"the database of {redact_url(url)} already holds {', '.join(sorted(held)[:5])}"
            + (" ..." if len(held) > 5 else ""),
            "rehearse loads an export into an empty database: name a new one",
        )
    return db


def _brief(document: dict[str, object]) -> str:
    text = json_util.dumps(document, json_options=RELAXED_JSON_OPTIONS)
    return text if len(text) <= 160 else text[:157] + "..."


async def rehearse(
    directory: pathlib.Path,
    database_url: str,
    keys: ConnectorKeys,
    *,
    batch_size: int = 1000,
    progress: Progress = print,
    registry: SpecRegistry | None = None,
    mongo_url: str | None = None,
) -> RehearsalReport:
    """Load the export into an in-process store (or into the empty MongoDB database of
    ``mongo_url``), then upgrade, backfill and verify every mapped entity."""
    started = time.perf_counter()
    if mongo_url is None:
        db = open_database(f"memory://rehearsal-{secrets.token_hex(4)}")
    else:
        db = await _empty_database(mongo_url)
    try:
        report = await _rehearse(db, directory, database_url, keys, batch_size, progress, registry)
    finally:
        await close_database(db)
    report.seconds = time.perf_counter() - started
    return report


async def _rehearse(
    db: Database,
    directory: pathlib.Path,
    database_url: str,
    keys: ConnectorKeys,
    batch_size: int,
    progress: Progress,
    registry: SpecRegistry | None,
) -> RehearsalReport:
    progress(f"loading the export in {directory} ...")
    load = await load_export(db, directory)
    report = RehearsalReport(load)
    progress(f"loaded {json.dumps(load.counts)}")
    await upgrade(database_url, progress=progress)
    box = SecretBox(keys)
    conn = await connect(database_url)
    try:
        for spec in registry or default_registry():
            summary = await backfill_entity(
                db, conn, spec, box.context(), batch_size=batch_size, progress=progress
            )
            report.backfills.append(summary)
            report.verifies.append(await verify_entity(db, conn, spec, box.context()))
    finally:
        await conn.close()
    return report
